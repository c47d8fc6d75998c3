//! Capture and playout devices: cameras, microphones, speakers and X11 screens, behind the
//! [`VideoSource`](super::source::VideoSource) / [`AudioSource`](super::source::AudioSource) /
//! [`AudioSink`](super::source::AudioSink) traits, plus the listings the UI offers.
//!
//! | module | device | backend |
//! |---|---|---|
//! | [`camera`] | cameras | nokhwa (V4L2 / AVFoundation / Media Foundation) |
//! | [`microphone`] | microphones | cpal (PulseAudio or ALSA on Linux) |
//! | [`speaker`] | speakers, and [`speaker::NullSink`] for machines without output | cpal |
//! | [`screen`] | X11 screens and windows | x11rb, MIT-SHM |
//!
//! Most machines this project runs on have no camera, sound card or display, so "no
//! device" is an ordinary outcome: opening one is [`MediaError::NoDevice`] with a message that
//! points at the synthetic source, and every listing here always contains
//! [`SourceChoice::Synthetic`] — first, with a label saying why, when no real device exists.
//! The synthetic sources themselves live with the media pipeline; this module only names them.
//!
//! Every source that reads from hardware waits at most [`FRAME_TIMEOUT`] for data and then
//! reports [`MediaError::DeviceLost`], so an unplugged device never hangs a pipeline.

pub mod camera;
mod convert;
mod cpal_util;
pub mod microphone;
mod resample;
mod ring;
pub mod screen;
pub mod speaker;

use std::time::Duration;

use super::MediaError;
use super::source::DeviceInfo;

pub use camera::{CameraMode, CameraSource, list_cameras};
pub use microphone::{MicrophoneSource, list_microphones};
pub use screen::{ScreenOptions, ScreenSource, list_screens, list_screens_on};
pub use speaker::{NullSink, SpeakerSink, list_speakers};

/// How long a source waits for its device before reporting [`MediaError::DeviceLost`].
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(2);

/// `NoDevice` with the fallback spelled out, so an error shown to a user says what to do.
pub(crate) fn no_device(kind: &'static str, detail: String) -> MediaError {
    let fallback = match kind {
        "microphone" => "choose the synthetic tone instead",
        "speaker" => "audio can be discarded instead (NullSink)",
        _ => "choose the synthetic test pattern instead",
    };
    MediaError::NoDevice {
        kind,
        detail: format!("{detail} — {fallback}"),
    }
}

/// One entry of a source picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceChoice {
    /// The synthetic source of the media pipeline (moving test pattern for video, tone with
    /// beeps for audio). `label` is what the picker shows, and says why when it stands in for a
    /// missing device ("No camera found — using the synthetic test pattern").
    Synthetic {
        label: String,
    },
    Camera(DeviceInfo),
    Screen(DeviceInfo),
    Microphone(DeviceInfo),
}

impl SourceChoice {
    /// What the picker shows.
    pub fn label(&self) -> &str {
        match self {
            SourceChoice::Synthetic { label } => label,
            SourceChoice::Camera(d) | SourceChoice::Screen(d) | SourceChoice::Microphone(d) => {
                &d.name
            }
        }
    }
}

/// One entry of a playout picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkChoice {
    Speaker(DeviceInfo),
    /// [`NullSink`]: audio is decoded and counted but not played.
    Discard {
        label: String,
    },
}

impl SinkChoice {
    pub fn label(&self) -> &str {
        match self {
            SinkChoice::Speaker(d) => &d.name,
            SinkChoice::Discard { label } => label,
        }
    }
}

/// Devices first and the synthetic source last, or the synthetic source first (the default
/// pick) with a label saying why when there is no device or the listing failed.
fn with_synthetic(
    devices: Result<Vec<DeviceInfo>, MediaError>,
    wrap: fn(DeviceInfo) -> SourceChoice,
    missing: &str,
    synthetic: &str,
) -> Vec<SourceChoice> {
    match devices {
        Ok(list) if !list.is_empty() => {
            let mut out: Vec<SourceChoice> = list.into_iter().map(wrap).collect();
            out.push(SourceChoice::Synthetic {
                label: capitalize(synthetic),
            });
            out
        }
        Ok(_) => vec![SourceChoice::Synthetic {
            label: format!("{missing} — using the {synthetic}"),
        }],
        Err(e) => {
            tracing::debug!(error = %e, "device listing failed");
            vec![SourceChoice::Synthetic {
                label: format!("{missing} ({e}) — using the {synthetic}"),
            }]
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn video_choices(cameras: Result<Vec<DeviceInfo>, MediaError>) -> Vec<SourceChoice> {
    with_synthetic(
        cameras,
        SourceChoice::Camera,
        "No camera found",
        "synthetic test pattern",
    )
}

fn screen_choices(screens: Result<Vec<DeviceInfo>, MediaError>) -> Vec<SourceChoice> {
    let screens = match screens {
        // No display is the normal headless case, not worth the error text.
        Err(MediaError::NoDevice { .. }) => Ok(Vec::new()),
        other => other,
    };
    with_synthetic(
        screens,
        SourceChoice::Screen,
        "No screen to share (no X display)",
        "synthetic test pattern",
    )
}

fn audio_choices(mics: Result<Vec<DeviceInfo>, MediaError>) -> Vec<SourceChoice> {
    with_synthetic(
        mics,
        SourceChoice::Microphone,
        "No microphone found",
        "synthetic tone",
    )
}

fn sink_choices(speakers: Result<Vec<DeviceInfo>, MediaError>) -> Vec<SinkChoice> {
    match speakers {
        Ok(list) if !list.is_empty() => {
            let mut out: Vec<SinkChoice> = list.into_iter().map(SinkChoice::Speaker).collect();
            out.push(SinkChoice::Discard {
                label: "No sound (discard audio)".into(),
            });
            out
        }
        Ok(_) => vec![SinkChoice::Discard {
            label: "No speaker found — audio is discarded".into(),
        }],
        Err(e) => vec![SinkChoice::Discard {
            label: format!("No speaker found ({e}) — audio is discarded"),
        }],
    }
}

/// Camera picker: the cameras, then the synthetic pattern; or only the synthetic pattern,
/// labelled "No camera found — using the synthetic test pattern". The first entry is the
/// default.
pub fn video_sources() -> Vec<SourceChoice> {
    video_choices(list_cameras())
}

/// Screen-share picker: screens and windows of `$DISPLAY`, then the synthetic pattern (first,
/// with the reason, when there is no display).
pub fn screen_sources() -> Vec<SourceChoice> {
    screen_choices(list_screens())
}

/// Microphone picker: the microphones, then the synthetic tone; or only the tone, labelled
/// "No microphone found — using the synthetic tone". The first entry is the default.
pub fn audio_sources() -> Vec<SourceChoice> {
    audio_choices(list_microphones())
}

/// Playout picker: the speakers, then "discard"; or only "discard" when there is no speaker.
pub fn audio_sinks() -> Vec<SinkChoice> {
    sink_choices(list_speakers())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::source::{AudioSink, AudioSource, VideoSource};

    fn dev(id: &str, name: &str) -> DeviceInfo {
        DeviceInfo {
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn listings_always_offer_the_synthetic_source_and_say_why() {
        let none = video_choices(Ok(vec![]));
        assert_eq!(
            none,
            vec![SourceChoice::Synthetic {
                label: "No camera found — using the synthetic test pattern".into()
            }]
        );
        let some = video_choices(Ok(vec![dev("0", "Integrated Camera")]));
        assert_eq!(some[0].label(), "Integrated Camera");
        assert_eq!(some[1].label(), "Synthetic test pattern");
        let failed = audio_choices(Err(MediaError::Device {
            kind: "microphone",
            detail: "backend down".into(),
        }));
        assert_eq!(failed.len(), 1);
        assert!(failed[0].label().starts_with("No microphone found ("));
        assert!(failed[0].label().ends_with("using the synthetic tone"));
        let no_display = screen_choices(Err(no_device("screen", "no X display".into())));
        assert_eq!(
            no_display[0].label(),
            "No screen to share (no X display) — using the synthetic test pattern"
        );
        assert_eq!(
            sink_choices(Ok(vec![]))[0].label(),
            "No speaker found — audio is discarded"
        );
        let speakers = sink_choices(Ok(vec![dev("pulseaudio:s", "Null Output")]));
        assert!(matches!(speakers[0], SinkChoice::Speaker(_)));
        assert!(matches!(speakers[1], SinkChoice::Discard { .. }));
    }

    /// This machine kind has no camera and no sound card. Where one does
    /// exist, the check flips to "the listing shows it".
    #[test]
    fn missing_camera_is_no_device_and_the_listing_offers_the_pattern() {
        let cameras = list_cameras().expect("an empty list is Ok");
        let choices = video_sources();
        assert!(
            choices
                .iter()
                .any(|c| matches!(c, SourceChoice::Synthetic { .. }))
        );
        if !cameras.is_empty() {
            eprintln!("this machine has a camera: {cameras:?}; skipping the no-device check");
            assert!(matches!(choices[0], SourceChoice::Camera(_)));
            return;
        }
        assert_eq!(
            choices[0].label(),
            "No camera found — using the synthetic test pattern"
        );
        match CameraSource::open("0", 1280, 720, 30) {
            Err(MediaError::NoDevice { kind, detail }) => {
                assert_eq!(kind, "camera");
                assert!(detail.contains("synthetic test pattern"), "{detail}");
            }
            Err(other) => panic!("expected NoDevice, got {other:?}"),
            Ok(_) => panic!("expected NoDevice, got a camera"),
        }
        assert!(matches!(
            CameraSource::open("Integrated Camera", 640, 480, 30),
            Err(MediaError::NoDevice { kind: "camera", .. })
        ));
    }

    /// Without a sound card and without a PulseAudio server (PULSE_SERVER unset, no socket in
    /// XDG_RUNTIME_DIR), the default microphone is NoDevice, not a silent stream.
    #[test]
    fn missing_microphone_is_no_device_and_the_listing_offers_the_tone() {
        let has_pulse = std::env::var_os("PULSE_SERVER").is_some()
            || std::env::var_os("XDG_RUNTIME_DIR")
                .map(|d| std::path::Path::new(&d).join("pulse/native").exists())
                .unwrap_or(false);
        let has_card = std::path::Path::new("/dev/snd").exists();
        if has_pulse || has_card {
            eprintln!("this machine has audio (pulse {has_pulse}, /dev/snd {has_card}); skipping");
            return;
        }
        assert_eq!(list_microphones().expect("empty list is Ok"), vec![]);
        assert_eq!(
            audio_sources(),
            vec![SourceChoice::Synthetic {
                label: "No microphone found — using the synthetic tone".into()
            }]
        );
        match MicrophoneSource::open(None) {
            Err(MediaError::NoDevice { kind, detail }) => {
                assert_eq!(kind, "microphone");
                assert!(detail.contains("synthetic tone"), "{detail}");
            }
            Err(other) => panic!("expected NoDevice, got {other:?}"),
            Ok(m) => panic!("expected NoDevice, got microphone {:?}", m.name()),
        }
        assert!(matches!(
            MicrophoneSource::open(Some("pulseaudio:nullsink.monitor")),
            Err(MediaError::NoDevice {
                kind: "microphone",
                ..
            })
        ));
        assert!(matches!(
            SpeakerSink::open(None),
            Err(MediaError::NoDevice {
                kind: "speaker",
                ..
            })
        ));
        assert!(matches!(audio_sinks()[0], SinkChoice::Discard { .. }));
    }

    #[test]
    fn null_sink_counts_what_it_discards() {
        let mut sink = NullSink::new();
        assert_eq!(sink.play(&[0.5; 960]).expect("play"), 960);
        assert_eq!(sink.play(&[]).expect("play"), 0);
        assert_eq!(sink.samples(), 960);
        assert!(sink.name().contains("discarded"));
    }

    /// The pipeline moves sources and sinks onto its own threads.
    #[test]
    fn sources_and_sinks_are_send() {
        fn send<T: Send>() {}
        send::<CameraSource>();
        send::<MicrophoneSource>();
        send::<SpeakerSink>();
        send::<ScreenSource>();
        let _: Option<Box<dyn VideoSource>> = None::<Box<ScreenSource>>.map(|b| b as _);
        let _: Option<Box<dyn AudioSource>> = None::<Box<MicrophoneSource>>.map(|b| b as _);
    }
}
