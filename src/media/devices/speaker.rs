//! Speakers through cpal as an [`AudioSink`] of 48 kHz mono f32, and [`NullSink`] for machines
//! without audio output.
//!
//! `play` never blocks: it resamples (only if the device cannot run at 48 kHz) and appends to a
//! 250 ms ring, taking only what fits and returning that count, so the caller sees back-pressure
//! instead of latency silently growing. The cpal output callback drains the ring, copies the mono
//! signal to every channel, and plays silence on underrun.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cpal::traits::DeviceTrait;
use cpal::{FromSample, SampleFormat, SizedSample, StreamConfig};

use super::cpal_util::{self, Direction, StreamKeeper};
use super::resample::{Fixed, MonoResampler};
use super::ring::Ring;
use crate::media::MediaError;
use crate::media::source::{AUDIO_FRAME, AUDIO_RATE, AudioSink, DeviceInfo};

const KIND: &str = "speaker";
/// Playout queue length in milliseconds: enough to ride out a late 20 ms frame or two, short
/// enough to keep mouth-to-ear latency down.
const QUEUE_MS: usize = 250;

/// The speakers of the default audio host. Empty (not an error) on a machine without one.
pub fn list_speakers() -> Result<Vec<DeviceInfo>, MediaError> {
    cpal_util::list(Direction::Output)
}

/// A speaker as an [`AudioSink`].
pub struct SpeakerSink {
    name: String,
    device_rate: u32,
    device_channels: u16,
    ring: Arc<Ring<f32>>,
    underruns: Arc<AtomicU64>,
    resampler: Option<MonoResampler>,
    /// 48 kHz samples accepted but not yet resampled (less than one resampler chunk).
    pending: Vec<f32>,
    _keeper: StreamKeeper,
}

struct Shared {
    ring: Arc<Ring<f32>>,
    underruns: Arc<AtomicU64>,
}

impl SpeakerSink {
    /// Opens a speaker by listed id or name; `None` opens the system's default output.
    pub fn open(id: Option<&str>) -> Result<SpeakerSink, MediaError> {
        let slot: Arc<std::sync::OnceLock<Shared>> = Arc::default();
        let init = Arc::clone(&slot);
        let (keeper, opened) =
            cpal_util::start_stream(Direction::Output, id, move |device, config, format| {
                let shared = init.get_or_init(|| Shared {
                    ring: Arc::new(Ring::new(config.sample_rate as usize * QUEUE_MS / 1000)),
                    underruns: Arc::default(),
                });
                build_output(
                    device,
                    config,
                    format,
                    Arc::clone(&shared.ring),
                    Arc::clone(&shared.underruns),
                )
            })?;
        let Some(shared) = slot.get() else {
            return Err(MediaError::Device {
                kind: KIND,
                detail: "the stream opened without a buffer".into(),
            });
        };
        let resampler = if opened.rate == AUDIO_RATE {
            None
        } else {
            Some(MonoResampler::new(
                KIND,
                AUDIO_RATE,
                opened.rate,
                AUDIO_FRAME,
                Fixed::Input,
            )?)
        };
        Ok(SpeakerSink {
            name: opened.name,
            device_rate: opened.rate,
            device_channels: opened.channels,
            ring: Arc::clone(&shared.ring),
            underruns: Arc::clone(&shared.underruns),
            resampler,
            pending: Vec::with_capacity(AUDIO_FRAME),
            _keeper: keeper,
        })
    }

    /// The rate and channel count the device runs at.
    pub fn device_format(&self) -> (u32, u16) {
        (self.device_rate, self.device_channels)
    }

    /// Samples queued for playout (at the device rate).
    pub fn queued(&self) -> usize {
        self.ring.len()
    }
}

impl AudioSink for SpeakerSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn play(&mut self, samples: &[f32]) -> Result<usize, MediaError> {
        if let Some(reason) = self.ring.closed() {
            return Err(MediaError::DeviceLost {
                kind: KIND,
                detail: format!("{}: {reason}", self.name),
            });
        }
        let Some(rs) = &mut self.resampler else {
            return Ok(self.ring.push_bounded(samples.iter().copied()));
        };
        // Free space in 48 kHz terms, minus what is already waiting for the resampler.
        let free_48k = (self.ring.free() as u64 * u64::from(AUDIO_RATE)
            / u64::from(self.device_rate.max(1))) as usize;
        let accept = samples
            .len()
            .min(free_48k.saturating_sub(self.pending.len()));
        self.pending.extend_from_slice(&samples[..accept]);
        while self.pending.len() >= rs.input_needed() {
            let n = rs.input_needed();
            let out = rs.process(&self.pending[..n])?;
            // Rounding can leave the ring a few samples short; those are dropped, not queued.
            self.ring.push_bounded(out.iter().copied());
            self.pending.drain(..n);
        }
        Ok(accept)
    }

    fn queued_ms(&mut self) -> Option<u32> {
        // A closed stream plays nothing: no clock to follow (the next `play` reports why).
        if self.ring.closed().is_some() {
            return None;
        }
        let ring_ms = self.ring.len() as u64 * 1000 / u64::from(self.device_rate.max(1));
        let pending_ms = self.pending.len() as u64 * 1000 / u64::from(AUDIO_RATE);
        Some((ring_ms + pending_ms).min(u64::from(u32::MAX)) as u32)
    }

    /// Output callbacks that ran out of queued audio and played (partly) silence.
    fn underruns(&self) -> u64 {
        self.underruns.load(Ordering::Relaxed)
    }
}

fn build_output(
    device: &cpal::Device,
    config: StreamConfig,
    format: SampleFormat,
    ring: Arc<Ring<f32>>,
    underruns: Arc<AtomicU64>,
) -> Result<cpal::Stream, cpal::Error> {
    match format {
        SampleFormat::F32 => typed_output::<f32>(device, config, ring, underruns),
        SampleFormat::I16 => typed_output::<i16>(device, config, ring, underruns),
        SampleFormat::U16 => typed_output::<u16>(device, config, ring, underruns),
        SampleFormat::I32 => typed_output::<i32>(device, config, ring, underruns),
        SampleFormat::U8 => typed_output::<u8>(device, config, ring, underruns),
        SampleFormat::I8 => typed_output::<i8>(device, config, ring, underruns),
        SampleFormat::F64 => typed_output::<f64>(device, config, ring, underruns),
        other => Err(cpal::Error::with_message(
            cpal::ErrorKind::UnsupportedConfig,
            format!("sample format {other} is not handled"),
        )),
    }
}

fn typed_output<T>(
    device: &cpal::Device,
    config: StreamConfig,
    ring: Arc<Ring<f32>>,
    underruns: Arc<AtomicU64>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = usize::from(config.channels.max(1));
    let errors = Arc::clone(&ring);
    // Reused across callbacks; grows only if the backend asks for a bigger buffer.
    let mut mono: Vec<f32> = Vec::new();
    device.build_output_stream::<T, _, _>(
        config,
        move |data: &mut [T], _| {
            let frames = data.len() / channels;
            if mono.len() < frames {
                mono.resize(frames, 0.0);
            }
            let got = ring.pop_into(&mut mono[..frames]);
            if got < frames {
                mono[got..frames].fill(0.0);
                underruns.fetch_add(1, Ordering::Relaxed);
            }
            for (frame, s) in data.chunks_exact_mut(channels).zip(&mono[..frames]) {
                frame.fill(T::from_sample(*s));
            }
        },
        move |e| {
            if cpal_util::is_fatal(&e) {
                errors.close(format!("stream error: {e}"));
            } else {
                tracing::debug!(error = %e, "speaker glitch");
            }
        },
        None,
    )
}

/// A sink that discards audio (machines without output, headless peers) but counts it, so
/// tests and stats can still see that playout happened.
#[derive(Debug, Default)]
pub struct NullSink {
    samples: u64,
}

impl NullSink {
    pub fn new() -> NullSink {
        NullSink::default()
    }

    /// Samples discarded so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }
}

impl AudioSink for NullSink {
    fn name(&self) -> &str {
        "No speaker (audio discarded)"
    }

    fn play(&mut self, samples: &[f32]) -> Result<usize, MediaError> {
        self.samples += samples.len() as u64;
        Ok(samples.len())
    }
}
