//! Devices that come and go during a call. A camera, microphone or speaker in use that stops
//! (unplugged, its sound server gone) is replaced by the system default, so the call is not
//! left silent or blank, and the user is told; when there is no other device the microphone
//! sends the test tone, the camera turns off and remote audio is discarded. A device that
//! appears mid-call is announced so the user knows it can be chosen in Settings.
//!
//! [`DeviceWatch`] is the pure part (what changed between two scans); the recoveries are
//! called from the engine's once-a-second tick.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::api::{AudioChoice, ErrorKind, Event, SpeakerChoice, VideoChoice};
use super::call::{Call, handle_set_camera_enabled, set_camera_source};
use super::call_media::{open_audio, open_speaker, open_video, processing_for};
use super::handle::Out;
use super::lock;

use crate::media::source::{AudioSource, DeviceInfo};
use crate::media::synthetic::SyntheticAudioSource;

/// A default device that fails again this soon after being chosen is not retried (so a
/// broken default does not flap every second).
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The devices present at one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Inventory {
    pub cameras: Vec<DeviceInfo>,
    pub microphones: Vec<DeviceInfo>,
    pub speakers: Vec<DeviceInfo>,
}

impl Inventory {
    /// Lists every device (blocking: run it off the async workers). A kind that cannot be
    /// listed counts as none, which never announces anything.
    pub(super) fn scan() -> Inventory {
        use crate::media::devices::{list_cameras, list_microphones, list_speakers};
        Inventory {
            cameras: list_cameras().unwrap_or_default(),
            microphones: list_microphones().unwrap_or_default(),
            speakers: list_speakers().unwrap_or_default(),
        }
    }
}

/// Remembers the last scan and says what appeared since.
#[derive(Debug, Default)]
pub(super) struct DeviceWatch {
    known: Option<Inventory>,
}

impl DeviceWatch {
    /// The notices for devices new since the previous scan (none for the first scan).
    pub(super) fn update(&mut self, now: Inventory) -> Vec<String> {
        let Some(before) = self.known.replace(now) else {
            return Vec::new();
        };
        let Some(now) = &self.known else {
            return Vec::new();
        };
        let mut notices = Vec::new();
        for (kind, old, new) in [
            ("camera", &before.cameras, &now.cameras),
            ("microphone", &before.microphones, &now.microphones),
            ("speaker", &before.speakers, &now.speakers),
        ] {
            for d in new.iter().filter(|d| !old.iter().any(|o| o.id == d.id)) {
                notices.push(format!(
                    "New {kind} available: {}. Choose it in Settings.",
                    d.name
                ));
            }
        }
        notices
    }
}

/// Runs the scan every `every` (off the async workers, one at a time) and announces what
/// appeared. Called from the once-a-second tick.
pub(super) async fn watch_devices(c: &mut Call, out: &Out, every: Duration) {
    if let Some(scan) = c.device_scan.take_if(|s| s.is_finished()) {
        match scan.await {
            Ok(inventory) => {
                for notice in c.device_watch.update(inventory) {
                    info!(%notice, "device appeared");
                    out.notice(ErrorKind::Device, notice).await;
                }
            }
            Err(e) => warn!(error = %e, "device scan failed"),
        }
    }
    if c.device_scan.is_none() && c.last_device_scan.is_none_or(|t| t.elapsed() >= every) {
        c.last_device_scan = Some(Instant::now());
        c.device_scan = Some(tokio::task::spawn_blocking(Inventory::scan));
    }
}

/// A microphone that stopped is replaced on the same track: by the system default
/// microphone, or, when there is none (or it failed right after being chosen), by the test
/// tone. The track and every connection stay as they are.
pub(super) async fn recover_lost_microphone(c: &mut Call, out: &Out) {
    let Some(mic) = c.media.mic.clone() else {
        return;
    };
    let Some(error) = mic.stats().source_error else {
        return;
    };
    let default_failed_just_now = c
        .mic_recovered_at
        .is_some_and(|t| t.elapsed() < RETRY_AFTER);
    let default = AudioChoice::Microphone(None);
    let opened = if default_failed_just_now {
        None
    } else {
        open_audio(&default).ok().flatten()
    };
    let (source, choice, message): (Box<dyn AudioSource>, AudioChoice, String) = match opened {
        Some(src) => (
            src,
            default,
            format!("Microphone lost ({error}). Switched to the system default microphone."),
        ),
        None => (
            Box::new(SyntheticAudioSource::default()),
            AudioChoice::Synthetic,
            format!("Microphone lost ({error}). No other microphone found: sending a test tone."),
        ),
    };
    warn!(%message, "microphone lost");
    mic.replace_source(source);
    {
        let mut p = lock(&c.media.processor);
        p.set_settings(processing_for(&choice, None));
        p.reset();
    }
    c.req.audio = choice;
    c.mic_recovered_at = Some(Instant::now());
    out.notice(ErrorKind::Device, message).await;
}

/// A camera that stopped is replaced by the first camera the system lists; with none (or one
/// that failed right after being chosen) the camera turns off, which the other participants
/// see as "camera off" rather than a frozen picture.
pub(super) async fn recover_lost_camera(c: &mut Call, out: &Out) {
    let Some(cam) = c.media.camera.clone() else {
        return;
    };
    if c.req.video == VideoChoice::None {
        return;
    }
    let Some(error) = cam.stats().source_error else {
        return;
    };
    let retried_just_now = c
        .camera_recovered_at
        .is_some_and(|t| t.elapsed() < RETRY_AFTER);
    c.camera_recovered_at = Some(Instant::now());
    let (w, h, fps) = (c.req.width, c.req.height, c.req.fps);
    let lost = c.req.video.clone();
    let replacement = if retried_just_now {
        None
    } else {
        tokio::task::spawn_blocking(move || {
            let cameras = crate::media::devices::list_cameras().unwrap_or_default();
            cameras
                .into_iter()
                .map(|d| VideoChoice::Camera(d.id))
                .filter(|choice| *choice != lost)
                .find_map(|choice| match open_video(&choice, w, h, fps) {
                    Ok(Some(src)) => Some((choice, src)),
                    _ => None,
                })
        })
        .await
        .ok()
        .flatten()
    };
    match replacement {
        Some((choice, src)) => {
            let message = format!("Camera lost ({error}). Switched to another camera.");
            warn!(%message, ?choice, "camera lost");
            set_camera_source(c, choice, src);
            out.notice(ErrorKind::Device, message).await;
        }
        None => {
            let message = format!("Camera lost ({error}). No other camera found: camera off.");
            warn!(%message, "camera lost");
            c.req.video = VideoChoice::None;
            handle_set_camera_enabled(c, false).await;
            out.call(Event::LocalMedia {
                camera_off: true,
                sharing: c.media.screen.is_some(),
            })
            .await;
            out.notice(ErrorKind::Device, message).await;
        }
    }
}

/// A shared screen or window that went away (the window was closed, the display ended)
/// ends the share: the others see the stream removed, the call goes on.
pub(super) async fn end_lost_screen_share(c: &mut Call, out: &Out) {
    let Some(error) = c.media.screen.as_ref().and_then(|s| s.stats().source_error) else {
        return;
    };
    if let Some(s) = c.media.screen.take() {
        let _ = c.peer.remove_track(s.track_id()).await;
    }
    warn!(%error, "screen share source lost");
    out.call(Event::LocalMedia {
        camera_off: c.camera_off.load(std::sync::atomic::Ordering::Relaxed),
        sharing: false,
    })
    .await;
    out.notice(
        ErrorKind::ScreenShare,
        format!("Screen share ended ({error})."),
    )
    .await;
}

/// A speaker that stopped is replaced by the system default speaker; with none (or one that
/// failed right after being chosen) remote audio is discarded and the user is told.
pub(super) async fn recover_lost_speaker(c: &mut Call, out: &Out) {
    let Some(error) = c.media.mixer.sink_error() else {
        return;
    };
    let retried_just_now = c
        .speaker_recovered_at
        .is_some_and(|t| t.elapsed() < RETRY_AFTER);
    c.speaker_recovered_at = Some(Instant::now());
    let default = SpeakerChoice::Speaker(None);
    let opened = if retried_just_now {
        None
    } else {
        open_speaker(&default).ok()
    };
    let (sink, choice, message) = match opened {
        Some(sink) => (
            sink,
            default,
            format!("Speaker lost ({error}). Switched to the system default speaker."),
        ),
        None => (
            open_speaker(&SpeakerChoice::None)
                .unwrap_or_else(|_| Box::new(crate::media::devices::NullSink::new())),
            SpeakerChoice::None,
            format!("Speaker lost ({error}). No other speaker found: the call is not played."),
        ),
    };
    warn!(%message, "speaker lost");
    c.media.mixer.replace_sink(sink);
    lock(&c.media.processor).reset(); // another echo path
    c.req.speaker = choice;
    out.notice(ErrorKind::Device, message).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, name: &str) -> DeviceInfo {
        DeviceInfo {
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn only_devices_new_since_the_last_scan_are_announced() {
        let mut w = DeviceWatch::default();
        let first = Inventory {
            cameras: vec![dev("0", "Integrated Camera")],
            microphones: vec![dev("pulse:a", "Built-in Microphone")],
            speakers: vec![dev("pulse:b", "Built-in Speakers")],
        };
        assert!(
            w.update(first.clone()).is_empty(),
            "the first scan is the baseline"
        );
        assert!(w.update(first.clone()).is_empty(), "nothing changed");
        let mut second = first.clone();
        second.microphones.push(dev("pulse:usb", "USB Headset"));
        second.speakers.push(dev("pulse:usb-out", "USB Headset"));
        second.cameras.clear(); // unplugged: handled by the recovery, not announced here
        assert_eq!(
            w.update(second.clone()),
            vec![
                "New microphone available: USB Headset. Choose it in Settings.".to_string(),
                "New speaker available: USB Headset. Choose it in Settings.".to_string(),
            ]
        );
        assert!(w.update(second).is_empty());
        // Plugged back in: announced again.
        assert_eq!(w.update(first).len(), 1);
    }
}
