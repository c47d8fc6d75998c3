//! Device listings for the pickers (settings, screen share), gathered off the UI thread:
//! enumerating cameras (V4L2) and sound devices (PulseAudio/ALSA through cpal) can take from a
//! few to a few hundred milliseconds, and the UI thread never blocks.

use std::sync::mpsc;

use crate::media::devices::{
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
}

impl DeviceLists {
    /// Lists everything (blocking; call from a worker thread).
    pub fn scan() -> DeviceLists {
        DeviceLists {
            cameras: video_sources(),
            microphones: audio_sources(),
            speakers: audio_sinks(),
            screens: screen_sources(),
        }
    }
}

/// The latest listing plus a scan in flight, polled every UI frame.
#[derive(Default)]
pub struct DeviceScan {
    pub lists: Option<DeviceLists>,
    pending: Option<mpsc::Receiver<DeviceLists>>,
}

impl DeviceScan {
    /// Starts a scan unless one is running; `repaint` is called when it finishes.
    pub fn refresh(&mut self, repaint: impl Fn() + Send + 'static) {
        if self.pending.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("meshcall-device-scan".into())
            .spawn(move || {
                let _ = tx.send(DeviceLists::scan());
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
                self.lists = Some(lists);
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

    /// Test and snapshot hook: use these listings.
    pub fn set(&mut self, lists: DeviceLists) {
        self.lists = Some(lists);
        self.pending = None;
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
