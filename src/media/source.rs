//! The source and sink traits every capture device and synthetic generator implements, and the
//! one media clock all capture timestamps are taken from.
//!
//! Sources are *blocking* pull interfaces: each runs on its own capture thread owned by a
//! pipeline, so a slow or missing device can never stall the UI or a network task. A device that
//! stops delivering returns [`MediaError::DeviceLost`] instead of hanging.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::MediaError;
use super::frame::I420Frame;

/// Audio is 48 kHz mono everywhere inside the app (Opus' native rate).
pub const AUDIO_RATE: u32 = 48_000;
/// One audio frame: 20 ms at 48 kHz.
pub const AUDIO_FRAME: usize = 960;

/// Microseconds since the process' media epoch (monotonic; shared by every source and sink, so a
/// stamp written by a sender in this process and read by a receiver in it compare directly).
pub fn media_clock_us() -> u64 {
    let epoch = *MEDIA_EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_micros() as u64
}

/// The `Instant` of a media-clock time (for RTP sample timestamps).
pub fn media_instant(us: u64) -> Instant {
    let epoch = *MEDIA_EPOCH.get_or_init(Instant::now);
    epoch + Duration::from_micros(us)
}

static MEDIA_EPOCH: OnceLock<Instant> = OnceLock::new();

/// What a user picks from: a device or generator with a human-readable name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Stable id to reopen the device with (index or backend id).
    pub id: String,
    /// Human-readable name ("Integrated Camera", "Null Output", "Screen 0 (1280×720)").
    pub name: String,
}

/// A source of video frames (camera, screen, synthetic pattern).
pub trait VideoSource: Send {
    fn name(&self) -> &str;
    /// Blocks until the next frame (the source paces itself at its frame rate). The frame's
    /// `capture_us` is on [`media_clock_us`]. Returns [`MediaError::DeviceLost`] when the device
    /// went away (no frame for 2 s), after which the pipeline waits for a replacement
    /// (`VideoSender::replace_source`).
    fn next_frame(&mut self) -> Result<I420Frame, MediaError>;
}

/// A source of 48 kHz mono audio (microphone, synthetic tone).
pub trait AudioSource: Send {
    fn name(&self) -> &str;
    /// Blocks until the next [`AUDIO_FRAME`] samples are available (real-time paced).
    fn next_frame(&mut self) -> Result<Vec<f32>, MediaError>;
}

/// Where decoded, mixed 48 kHz mono audio goes (speaker, or a discarding sink).
pub trait AudioSink: Send {
    fn name(&self) -> &str;
    /// Queues samples for playout without blocking; returns how many were accepted (the sink
    /// drops the excess rather than growing without bound).
    fn play(&mut self, samples: &[f32]) -> Result<usize, MediaError>;
    /// How much audio is queued and not yet played, for sinks with their own clock (a sound
    /// card): the mixer then produces a block whenever the queue runs low instead of on its
    /// own timer. `None` (the default) means "no clock": the mixer paces itself.
    fn queued_ms(&mut self) -> Option<u32> {
        None
    }
    /// How many times the device found the queue empty and played silence, since it opened.
    fn underruns(&self) -> u64 {
        0
    }
}
