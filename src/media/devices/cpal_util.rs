//! What the microphone and the speaker share: finding a cpal device, choosing its stream
//! configuration, mapping cpal's errors to [`MediaError`], and keeping the stream alive on a
//! thread of its own.
//!
//! Why a thread per stream: `cpal::Stream` is `!Send` on some platforms (macOS, Android), while
//! our sources and sinks must be `Send` (pipelines move them onto their own threads). The stream
//! is therefore built, started, held and dropped on one dedicated thread; the source or sink only
//! holds a handle that ends that thread when dropped.
//!
//! No-device detection has a trap: on Linux, ALSA's `default_input_device()`
//! returns `Some("default")` even with no sound card, so the device only counts once
//! `default_*_config()` succeeds. ALSA's `null` device is hidden: it accepts streams but is not
//! paced (it "plays" millions of samples per second), so it is useless as a clock.

use std::sync::mpsc;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{BufferSize, ErrorKind, SampleFormat, StreamConfig, SupportedBufferSize};

use super::no_device;
use crate::media::MediaError;
use crate::media::source::{AUDIO_FRAME, AUDIO_RATE, DeviceInfo};

/// How long opening waits for the stream thread (cpal's PulseAudio client can block on a hung
/// server).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Input,
    Output,
}

impl Direction {
    pub(crate) fn kind(self) -> &'static str {
        match self {
            Direction::Input => "microphone",
            Direction::Output => "speaker",
        }
    }
}

fn device_error(kind: &'static str, context: &str, e: &cpal::Error) -> MediaError {
    MediaError::Device {
        kind,
        detail: format!("{context}: {e}"),
    }
}

fn default_config(
    dir: Direction,
    device: &cpal::Device,
) -> Result<cpal::SupportedStreamConfig, cpal::Error> {
    match dir {
        Direction::Input => device.default_input_config(),
        Direction::Output => device.default_output_config(),
    }
}

fn device_id(device: &cpal::Device) -> Option<String> {
    device.id().ok().map(|id| id.to_string())
}

fn device_name(device: &cpal::Device) -> String {
    match device.description() {
        Ok(d) => d.name().to_string(),
        Err(_) => device_id(device).unwrap_or_else(|| "audio device".into()),
    }
}

/// ALSA's `null` PCM: listed and openable, but unpaced.
fn is_unpaced_null(device: &cpal::Device) -> bool {
    device_id(device).as_deref() == Some("alsa:null")
}

/// Every usable device of the default host (PulseAudio when a server is reachable, else ALSA on
/// Linux). Devices whose default configuration cannot be read are left out: on Linux that is
/// how a card-less machine's placeholder PCMs show up.
pub(crate) fn list(dir: Direction) -> Result<Vec<DeviceInfo>, MediaError> {
    let host = cpal::default_host();
    let devices: Vec<cpal::Device> = match dir {
        Direction::Input => host.input_devices().map(|d| d.collect()),
        Direction::Output => host.output_devices().map(|d| d.collect()),
    }
    .map_err(|e| device_error(dir.kind(), "listing devices", &e))?;
    Ok(devices
        .iter()
        .filter(|d| !is_unpaced_null(d) && default_config(dir, d).is_ok())
        .filter_map(|d| {
            Some(DeviceInfo {
                id: device_id(d)?,
                name: device_name(d),
            })
        })
        .collect())
}

/// The device for `id` (a listed id such as `pulseaudio:nullsink.monitor`, or a listed name),
/// or the system default for `None`, with its default configuration.
fn resolve(
    dir: Direction,
    id: Option<&str>,
) -> Result<(cpal::Device, cpal::SupportedStreamConfig), MediaError> {
    let kind = dir.kind();
    let host = cpal::default_host();
    let device = match id {
        None => {
            let d = match dir {
                Direction::Input => host.default_input_device(),
                Direction::Output => host.default_output_device(),
            };
            d.ok_or_else(|| no_device(kind, format!("no default {kind} ({})", host.id())))?
        }
        Some(wanted) => {
            let by_id = wanted
                .parse::<cpal::DeviceId>()
                .ok()
                .and_then(|did| cpal::host_from_id(did.host()).ok()?.device_by_id(&did));
            let found = match by_id {
                Some(d) => Some(d),
                None => {
                    let all: Vec<cpal::Device> = match dir {
                        Direction::Input => host.input_devices().map(|d| d.collect()),
                        Direction::Output => host.output_devices().map(|d| d.collect()),
                    }
                    .map_err(|e| device_error(kind, "listing devices", &e))?;
                    all.into_iter().find(|d| {
                        device_name(d) == wanted || device_id(d).as_deref() == Some(wanted)
                    })
                }
            };
            found.ok_or_else(|| no_device(kind, format!("no {kind} {wanted:?}")))?
        }
    };
    if is_unpaced_null(&device) {
        return Err(no_device(
            kind,
            "ALSA's null device is not paced and cannot be used".into(),
        ));
    }
    let config = default_config(dir, &device).map_err(|e| {
        // Gotcha 11: "default" exists even without a card; its configuration is what fails.
        if id.is_none()
            || matches!(
                e.kind(),
                ErrorKind::DeviceNotAvailable | ErrorKind::HostUnavailable
            )
        {
            no_device(kind, format!("{} is not usable: {e}", device_name(&device)))
        } else {
            device_error(kind, &device_name(&device), &e)
        }
    })?;
    Ok((device, config))
}

/// The stream configuration to ask for: 48 kHz mono f32 when the device supports it (no
/// conversion at all; PulseAudio always does), else the default channel count and format at
/// 48 kHz if possible, else the device default. The buffer is one 20 ms frame when allowed,
/// because PulseAudio's default buffering is up to 2 s.
fn choose_config(
    dir: Direction,
    device: &cpal::Device,
    default: &cpal::SupportedStreamConfig,
) -> (StreamConfig, SampleFormat) {
    let ranges: Vec<cpal::SupportedStreamConfigRange> = match dir {
        Direction::Input => device.supported_input_configs().map(|r| r.collect()),
        Direction::Output => device.supported_output_configs().map(|r| r.collect()),
    }
    .unwrap_or_default();
    let fits = |r: &cpal::SupportedStreamConfigRange, ch: u16, fmt: SampleFormat| {
        r.channels() == ch
            && r.sample_format() == fmt
            && r.min_sample_rate() <= AUDIO_RATE
            && AUDIO_RATE <= r.max_sample_rate()
    };
    let chosen = ranges
        .iter()
        .find(|r| fits(r, 1, SampleFormat::F32))
        .or_else(|| {
            ranges
                .iter()
                .find(|r| fits(r, default.channels(), default.sample_format()))
        })
        .map(|r| {
            (
                r.channels(),
                AUDIO_RATE,
                r.sample_format(),
                *r.buffer_size(),
            )
        });
    let (channels, rate, format, buffers) = chosen.unwrap_or((
        default.channels(),
        default.sample_rate(),
        default.sample_format(),
        *default.buffer_size(),
    ));
    let period = (rate as usize * AUDIO_FRAME / AUDIO_RATE as usize) as u32;
    let buffer_size = match buffers {
        SupportedBufferSize::Range { min, max } if (min..=max).contains(&period) => {
            BufferSize::Fixed(period)
        }
        _ => BufferSize::Default,
    };
    (
        StreamConfig {
            channels,
            sample_rate: rate,
            buffer_size,
        },
        format,
    )
}

/// Opened device facts reported back from the stream thread.
pub(crate) struct Opened {
    pub name: String,
    pub rate: u32,
    pub channels: u16,
}

/// Owns the stream thread; dropping it stops and drops the stream.
pub(crate) struct StreamKeeper {
    _stop: mpsc::Sender<()>,
}

/// Resolves the device, builds and starts its stream on a dedicated thread, and returns once it
/// plays (or with the typed error). `build` is called once with a fixed 20 ms buffer and, if the
/// device refuses that, once more with the default buffer.
pub(crate) fn start_stream<B>(
    dir: Direction,
    id: Option<&str>,
    mut build: B,
) -> Result<(StreamKeeper, Opened), MediaError>
where
    B: FnMut(&cpal::Device, StreamConfig, SampleFormat) -> Result<cpal::Stream, cpal::Error>
        + Send
        + 'static,
{
    let kind = dir.kind();
    let id = id.map(str::to_owned);
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<Opened, MediaError>>(1);
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("meshcall-{kind}"))
        .spawn(move || {
            let opened = (|| {
                let (device, default) = resolve(dir, id.as_deref())?;
                let name = device_name(&device);
                let (config, format) = choose_config(dir, &device, &default);
                let stream = match build(&device, config, format) {
                    Err(e)
                        if config.buffer_size != BufferSize::Default
                            && e.kind() == ErrorKind::UnsupportedConfig =>
                    {
                        let config = StreamConfig {
                            buffer_size: BufferSize::Default,
                            ..config
                        };
                        build(&device, config, format)
                    }
                    other => other,
                }
                .map_err(|e| match e.kind() {
                    ErrorKind::DeviceNotAvailable => no_device(kind, format!("{name}: {e}")),
                    _ => device_error(kind, &format!("opening {name}"), &e),
                })?;
                stream
                    .play()
                    .map_err(|e| device_error(kind, &format!("starting {name}"), &e))?;
                Ok((
                    stream,
                    Opened {
                        name,
                        rate: config.sample_rate,
                        channels: config.channels,
                    },
                ))
            })();
            match opened {
                Ok((stream, info)) => {
                    let _ = ready_tx.send(Ok(info));
                    // Blocks until the keeper (and so its sender) is dropped.
                    let _ = stop_rx.recv();
                    drop(stream);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
    if let Err(e) = thread {
        return Err(MediaError::Device {
            kind,
            detail: format!("starting the stream thread: {e}"),
        });
    }
    match ready_rx.recv_timeout(OPEN_TIMEOUT) {
        Ok(Ok(opened)) => Ok((StreamKeeper { _stop: stop_tx }, opened)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(MediaError::Device {
            kind,
            detail: format!(
                "the audio backend did not open the {kind} within {} s",
                OPEN_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// Whether a stream error means the device is gone (as opposed to a glitch the stream
/// survives, such as an xrun).
pub(crate) fn is_fatal(e: &cpal::Error) -> bool {
    !matches!(
        e.kind(),
        ErrorKind::Xrun | ErrorKind::RealtimeDenied | ErrorKind::DeviceChanged
    )
}
