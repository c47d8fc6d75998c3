//! Media: frames, sources, codecs, audio processing, send and receive pipelines, playout.
//!
//! | module | what | IO? |
//! |---|---|---|
//! | [`source`] | source/sink traits, the media clock | no |
//! | [`frame`] | I420 video frames, PSNR | pure |
//! | [`stamp`] | a machine-readable frame stamp drawn into the picture (frame number + capture time) | pure |
//! | [`synthetic`] | the moving test pattern (video) and tone with beeps (audio) | pure |
//! | [`h264`] | openh264 constrained-baseline encoder / decoder | CPU only |
//! | [`cues`] | the join and leave sounds, generated | pure |
//! | [`audio`] | Opus 48 kHz mono 20 ms encoder / decoder, pitch measurement | CPU only |
//! | [`devices`] | cameras (nokhwa), microphones and speakers (cpal), X11 screens (x11rb), pickers | yes |
//! | [`capture`] | opening the device a user picked, by id (engine seam) | yes |
//! | [`assembler`] | RTP → H.264 access units on the marker bit; holes wait for NACK repair, then keyframe wait | pure |
//! | [`keyframes`] | when the shared encoder answers keyframe requests (coalesced, ≤ 2 per second) | pure |
//! | [`rate`] | bitrate adaptation from loss, RTT and keyframe requests | pure |
//! | [`rungs`] | two encodings for a mesh: which peers get the full picture, which a half-size one | pure |
//! | [`send`] | capture + encode thread per local track, replaceable sources | yes |
//! | [`fanout`] | encoded samples to one leg per peer connection, each from a keyframe | yes |
//! | [`receive`] | video: assembler task, decode thread, latest-frame-wins slot | yes |
//! | [`mixer`] | audio: jitter buffer per stream, mixer, playout paced by the speaker, echo canceller's far-end tap | yes |
//! | [`processing`] | echo cancellation, noise suppression, gain (WebRTC's module via sonora) | CPU only |
//! | [`wav`] | WAV files as a looped microphone | yes |
//! | [`stats`] | per-track send/receive statistics | no |
//! | [`supervise`] | catching a media stage's panic and reporting it instead of dying silently | no |

pub mod assembler;
pub mod audio;
pub mod capture;
pub mod cues;
pub mod devices;
pub mod fanout;
pub mod frame;
pub mod h264;
pub mod keyframes;
pub mod mixer;
pub mod processing;
pub mod rate;
pub mod receive;
pub mod rungs;
pub mod send;
pub mod source;
pub mod stamp;
pub mod stats;
pub mod supervise;
pub mod synthetic;
pub mod wav;

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
