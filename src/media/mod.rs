//! Media (issue 4, in progress): frames, the synthetic sources, and the codecs.
//!
//! | module | what | IO? |
//! |---|---|---|
//! | [`frame`] | I420 video frames, PSNR | pure |
//! | [`stamp`] | a machine-readable frame stamp drawn into the picture (frame number + capture time) | pure |
//! | [`synthetic`] | the moving test pattern (video) and tone with beeps (audio) | pure |
//! | [`h264`] | openh264 constrained-baseline encoder / decoder | CPU only |
//! | [`audio`] | Opus 48 kHz mono 20 ms encoder / decoder, pitch measurement | CPU only |
//! | [`devices`] | cameras (nokhwa), microphones and speakers (cpal), X11 screens (x11rb), pickers | yes |
//!
//! Capture devices, the send/receive pipelines and playout are still to come.

pub mod audio;
pub mod devices;
pub mod frame;
pub mod h264;
pub mod source;
pub mod stamp;
pub mod synthetic;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MediaError {
    #[error("invalid frame geometry {width}x{height} (even, non-zero sizes required)")]
    Geometry { width: usize, height: usize },
    #[error("H.264 codec: {0}")]
    H264(String),
    #[error("Opus codec: {0}")]
    Opus(String),
    /// No such device, or none at all (these machines have no camera or sound card). The app
    /// offers the synthetic sources instead.
    #[error("{kind} not available: {detail}")]
    NoDevice { kind: &'static str, detail: String },
    /// The device stopped delivering (unplugged, no frame for 2 s).
    #[error("{kind} stopped delivering: {detail}")]
    DeviceLost { kind: &'static str, detail: String },
    /// The device exists but failed (busy, unsupported format, backend error).
    #[error("{kind} failed: {detail}")]
    Device { kind: &'static str, detail: String },
    /// The pipeline or source was stopped.
    #[error("media pipeline stopped")]
    Stopped,
}
