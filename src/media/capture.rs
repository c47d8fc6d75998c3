//! Opening capture and playout devices by the ids the user picked: the seam between the engine
//! and the device backends in [`super::devices`]. Every failure is a typed
//! [`MediaError::NoDevice`] / [`MediaError::Device`]; the caller offers the synthetic sources.

use super::MediaError;
use super::devices::{CameraSource, MicrophoneSource, ScreenSource, SpeakerSink};
use super::source::{AudioSink, AudioSource, VideoSource};

pub fn open_camera(
    id: &str,
    width: usize,
    height: usize,
    fps: f32,
) -> Result<Box<dyn VideoSource>, MediaError> {
    let cam = CameraSource::open(
        id,
        u32::try_from(width).unwrap_or(1280),
        u32::try_from(height).unwrap_or(720),
        fps.round().clamp(1.0, 60.0) as u32,
    )?;
    Ok(Box::new(cam))
}

/// A screen (`screen:N`), a window (`window:0x…`), or the first screen for an empty id.
pub fn open_screen(id: &str, fps: f32) -> Result<Box<dyn VideoSource>, MediaError> {
    let id = if id.is_empty() { "screen:0" } else { id };
    Ok(Box::new(ScreenSource::open(
        id,
        fps.round().clamp(1.0, 15.0) as u32,
    )?))
}

pub fn open_microphone(id: Option<&str>) -> Result<Box<dyn AudioSource>, MediaError> {
    Ok(Box::new(MicrophoneSource::open(id)?))
}

pub fn open_speaker(id: Option<&str>) -> Result<Box<dyn AudioSink>, MediaError> {
    Ok(Box::new(SpeakerSink::open(id)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These machines have no camera: opening one is a typed error that names the fallback.
    #[test]
    fn a_missing_camera_is_a_typed_error_not_a_hang() {
        match open_camera("0", 640, 480, 30.0) {
            Err(MediaError::NoDevice { kind, detail }) => {
                assert_eq!(kind, "camera");
                assert!(detail.to_lowercase().contains("synthetic"), "{detail}");
            }
            Err(other) => panic!("expected NoDevice, got {other}"),
            Ok(_) => {} // a machine with a camera
        }
    }
}
