//! Microphones through cpal (PulseAudio when a server is reachable, else ALSA on Linux; the
//! platform API elsewhere) as an [`AudioSource`] of 48 kHz mono f32, 20 ms frames.
//!
//! The cpal callback only downmixes to mono and appends to a ring holding one second (the
//! oldest samples are dropped if the consumer stalls, so latency cannot grow without bound).
//! Resampling, when the device cannot run at 48 kHz, happens in `next_frame` on the consumer's
//! thread. `next_frame` waits at most [`FRAME_TIMEOUT`] and then reports
//! [`MediaError::DeviceLost`]; a fatal stream error reports it at once.

use std::sync::Arc;

use cpal::traits::DeviceTrait;
use cpal::{FromSample, SampleFormat, SizedSample, StreamConfig};

use super::FRAME_TIMEOUT;
use super::cpal_util::{self, Direction, StreamKeeper};
use super::resample::{Fixed, MonoResampler};
use super::ring::{Ring, RingWait};
use crate::media::MediaError;
use crate::media::source::{AUDIO_FRAME, AUDIO_RATE, AudioSource, DeviceInfo};

const KIND: &str = "microphone";

/// The microphones of the default audio host. Empty (not an error) on a machine without one.
pub fn list_microphones() -> Result<Vec<DeviceInfo>, MediaError> {
    cpal_util::list(Direction::Input)
}

/// A microphone as an [`AudioSource`].
pub struct MicrophoneSource {
    name: String,
    device_rate: u32,
    device_channels: u16,
    ring: Arc<Ring<f32>>,
    resampler: Option<MonoResampler>,
    _keeper: StreamKeeper,
}

impl MicrophoneSource {
    /// Opens a microphone by listed id or name; `None` opens the system's default input (which
    /// is [`MediaError::NoDevice`] on a machine without one).
    pub fn open(id: Option<&str>) -> Result<MicrophoneSource, MediaError> {
        // Sized on the stream thread once the device rate is known; shared with the callback.
        let ring_slot: Arc<std::sync::OnceLock<Arc<Ring<f32>>>> = Arc::default();
        let slot = Arc::clone(&ring_slot);
        let (keeper, opened) =
            cpal_util::start_stream(Direction::Input, id, move |device, config, format| {
                // One second at the device rate.
                let ring = Arc::clone(
                    slot.get_or_init(|| Arc::new(Ring::new(config.sample_rate as usize))),
                );
                build_input(device, config, format, ring)
            })?;
        let Some(ring) = ring_slot.get().cloned() else {
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
                opened.rate,
                AUDIO_RATE,
                AUDIO_FRAME,
                Fixed::Output,
            )?)
        };
        Ok(MicrophoneSource {
            name: opened.name,
            device_rate: opened.rate,
            device_channels: opened.channels,
            ring,
            resampler,
            _keeper: keeper,
        })
    }

    /// The rate and channel count the device runs at (before downmix and resampling).
    pub fn device_format(&self) -> (u32, u16) {
        (self.device_rate, self.device_channels)
    }

    fn lost(&self, w: RingWait) -> MediaError {
        MediaError::DeviceLost {
            kind: KIND,
            detail: match w {
                RingWait::TimedOut => {
                    format!("{}: no audio for {} s", self.name, FRAME_TIMEOUT.as_secs())
                }
                RingWait::Closed(reason) => format!("{}: {reason}", self.name),
            },
        }
    }
}

impl AudioSource for MicrophoneSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_frame(&mut self) -> Result<Vec<f32>, MediaError> {
        let needed = match &self.resampler {
            None => AUDIO_FRAME,
            Some(rs) => rs.input_needed(),
        };
        let input = self
            .ring
            .pop_exact_wait(needed, FRAME_TIMEOUT)
            .map_err(|w| self.lost(w))?;
        match &mut self.resampler {
            None => Ok(input),
            Some(rs) => Ok(rs.process(&input)?.to_vec()),
        }
    }
}

/// Builds the input stream for the device's sample format. The callback downmixes by averaging
/// the channels and never blocks beyond the ring's short lock.
fn build_input(
    device: &cpal::Device,
    config: StreamConfig,
    format: SampleFormat,
    ring: Arc<Ring<f32>>,
) -> Result<cpal::Stream, cpal::Error> {
    match format {
        SampleFormat::F32 => typed_input::<f32>(device, config, ring),
        SampleFormat::I16 => typed_input::<i16>(device, config, ring),
        SampleFormat::U16 => typed_input::<u16>(device, config, ring),
        SampleFormat::I32 => typed_input::<i32>(device, config, ring),
        SampleFormat::U8 => typed_input::<u8>(device, config, ring),
        SampleFormat::I8 => typed_input::<i8>(device, config, ring),
        SampleFormat::F64 => typed_input::<f64>(device, config, ring),
        other => Err(cpal::Error::with_message(
            cpal::ErrorKind::UnsupportedConfig,
            format!("sample format {other} is not handled"),
        )),
    }
}

fn typed_input<T>(
    device: &cpal::Device,
    config: StreamConfig,
    ring: Arc<Ring<f32>>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels.max(1));
    let errors = Arc::clone(&ring);
    device.build_input_stream::<T, _, _>(
        config,
        move |data: &[T], _| {
            let scale = 1.0 / channels as f32;
            ring.push_overwrite(
                data.chunks_exact(channels)
                    .map(|frame| frame.iter().map(|s| s.to_sample::<f32>()).sum::<f32>() * scale),
            );
        },
        move |e| {
            if cpal_util::is_fatal(&e) {
                errors.close(format!("stream error: {e}"));
            } else {
                tracing::debug!(error = %e, "microphone glitch");
            }
        },
        None,
    )
}
