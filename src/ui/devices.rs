//! Device listings for the pickers (settings, screen share), gathered off the UI thread:
//! enumerating cameras (V4L2) and sound devices (PulseAudio/ALSA through cpal) can take from a
//! few to a few hundred milliseconds, and the UI thread never blocks.

use std::sync::mpsc;

use crate::engine::api::{
    SinkChoice, SourceChoice, audio_sinks, audio_sources, screen_sources, video_sources,
};

/// What the machine has, as the pickers show it (synthetic entries included, see
/// `media::devices`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceLists {
    pub cameras: Vec<SourceChoice>,
    pub microphones: Vec<SourceChoice>,
    pub speakers: Vec<SinkChoice>,
    pub screens: Vec<SourceChoice>,
    /// Cameras and sound devices were listed too (not only screens).
    pub complete: bool,
}

impl DeviceLists {
    /// Lists everything (blocking; call from a worker thread).
    pub fn scan() -> DeviceLists {
        DeviceLists {
            cameras: video_sources(),
            microphones: audio_sources(),
            speakers: audio_sinks(),
            screens: screen_sources(),
            complete: true,
        }
    }

    /// Screens and windows only, for the share picker: cheap, and unlike the sound-device
    /// probe it prints nothing (ALSA and JACK write their probing errors to stderr).
    pub fn scan_screens() -> DeviceLists {
        DeviceLists {
            screens: screen_sources(),
            ..DeviceLists::default()
        }
    }
}

/// The latest listing plus a scan in flight, polled every UI frame.
#[derive(Default)]
pub struct DeviceScan {
    pub lists: Option<DeviceLists>,
    pending: Option<mpsc::Receiver<DeviceLists>>,
    /// Set by [`Self::set`]: listings given, never rescanned.
    fixed: bool,
}

impl DeviceScan {
    /// Starts a full scan unless one is running; `repaint` is called when it finishes.
    pub fn refresh(&mut self, repaint: impl Fn() + Send + 'static) {
        self.refresh_with(DeviceLists::scan, repaint);
    }

    /// Starts a scan of screens only (see [`DeviceLists::scan_screens`]).
    pub fn refresh_screens(&mut self, repaint: impl Fn() + Send + 'static) {
        self.refresh_with(DeviceLists::scan_screens, repaint);
    }

    fn refresh_with(&mut self, scan: fn() -> DeviceLists, repaint: impl Fn() + Send + 'static) {
        if self.pending.is_some() || self.fixed {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("meshcall-device-scan".into())
            .spawn(move || {
                let _ = tx.send(scan());
                repaint();
            });
        if spawned.is_ok() {
            self.pending = Some(rx);
        }
    }

    /// Takes a finished scan's result. True while a scan is still running.
    pub fn poll(&mut self) -> bool {
        let Some(rx) = &self.pending else {
            return false;
        };
        match rx.try_recv() {
            Ok(lists) => {
                self.lists = Some(match self.lists.take() {
                    // A screens-only scan refreshes the screens of a complete listing.
                    Some(old) if old.complete && !lists.complete => DeviceLists {
                        screens: lists.screens,
                        ..old
                    },
                    _ => lists,
                });
                self.pending = None;
                false
            }
            Err(mpsc::TryRecvError::Empty) => true,
            Err(mpsc::TryRecvError::Disconnected) => {
                self.pending = None;
                false
            }
        }
    }

    /// Test and snapshot hook: use these listings, and never scan.
    pub fn set(&mut self, lists: DeviceLists) {
        self.lists = Some(lists);
        self.pending = None;
        self.fixed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_arrives_off_thread_and_always_offers_the_synthetic_sources() {
        let mut scan = DeviceScan::default();
        let (tx, rx) = mpsc::channel();
        scan.refresh(move || {
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("scan finished");
        assert!(!scan.poll());
        let lists = scan.lists.expect("lists");
        // No camera or sound card on CI machines; the synthetic entries are always there.
        assert!(
            lists
                .cameras
                .iter()
                .any(|c| matches!(c, SourceChoice::Synthetic { .. }))
        );
        assert!(
            lists
                .microphones
                .iter()
                .any(|c| matches!(c, SourceChoice::Synthetic { .. }))
        );
        assert!(
            lists
                .speakers
                .iter()
                .any(|c| matches!(c, SinkChoice::Discard { .. }))
        );
    }
}
