//! Everything media for one call (senders, receivers, mixer, audio processing) and opening the
//! chosen sources and speaker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::api::*;
use crate::media::MediaError;
use crate::media::mixer::{AudioReceiver, Mixer};
use crate::media::processing::{ProcessingSettings, SharedProcessor};
use crate::media::receive::{DecodedFrame, VideoReceiver};
use crate::media::send::{AudioSender, VideoSender};
use crate::media::source::{AudioSink, AudioSource, VideoSource};
use crate::media::stats::ReceiveStats;
use crate::media::synthetic::{SyntheticAudioSource, SyntheticVideoSource};

/// A remote video feed for the UI.
pub(super) struct Feed(pub(super) Arc<VideoReceiver>);

impl VideoFeed for Feed {
    fn latest(&self) -> Option<Arc<DecodedFrame>> {
        self.0.latest()
    }
    fn stats(&self) -> ReceiveStats {
        self.0.stats()
    }
}

/// The local camera preview as a feed.
pub(super) struct PreviewFeed(pub(super) Arc<VideoSender>);

impl VideoFeed for PreviewFeed {
    fn latest(&self) -> Option<Arc<DecodedFrame>> {
        self.0.preview()
    }
    fn stats(&self) -> ReceiveStats {
        ReceiveStats::default()
    }
}

#[derive(Default)]
pub(super) struct RemoteMedia {
    /// (peer, stream) → receivers
    pub(super) video: HashMap<(String, String), Arc<VideoReceiver>>,
    pub(super) audio: HashMap<(String, String), Vec<AudioReceiver>>,
    /// Per-participant playback volume set by the user (session-long, by peer id).
    pub(super) volumes: HashMap<String, f32>,
}

/// Everything media for one call; dropping it stops every thread.
pub(super) struct CallMedia {
    pub(super) camera: Option<Arc<VideoSender>>,
    pub(super) mic: Option<Arc<AudioSender>>,
    pub(super) screen: Option<Arc<VideoSender>>,
    pub(super) mixer: Arc<Mixer>,
    pub(super) playout: Option<std::thread::JoinHandle<()>>,
    pub(super) remote: Arc<Mutex<RemoteMedia>>,
    /// Echo cancellation, noise suppression and gain: fed by the mixer (far end) and the
    /// microphone's send thread (near end). See `docs/audio-processing.md`.
    pub(super) processor: SharedProcessor,
}

/// Audio processing is on for a real microphone (as a browser's getUserMedia does) and off for
/// the synthetic tone, whose measurements must stay bit-comparable.
pub(super) fn processing_for(
    choice: &AudioChoice,
    forced: Option<ProcessingSettings>,
) -> ProcessingSettings {
    forced.unwrap_or(match choice {
        AudioChoice::Microphone(_) => ProcessingSettings::ON,
        AudioChoice::Synthetic | AudioChoice::File(_) | AudioChoice::None => {
            ProcessingSettings::OFF
        }
    })
}

impl Drop for CallMedia {
    fn drop(&mut self) {
        self.mixer.stop();
        if let Some(t) = self.playout.take() {
            let _ = t.join();
        }
    }
}

/// Opens the chosen video source.
pub fn open_video(
    choice: &VideoChoice,
    width: usize,
    height: usize,
    fps: f32,
) -> Result<Option<Box<dyn VideoSource>>, MediaError> {
    Ok(match choice {
        VideoChoice::None => None,
        VideoChoice::Synthetic => Some(Box::new(SyntheticVideoSource::new(width, height, fps)?)),
        VideoChoice::Camera(id) => {
            Some(crate::media::capture::open_camera(id, width, height, fps)?)
        }
        VideoChoice::Screen(id) => Some(crate::media::capture::open_screen(id, fps.min(15.0))?),
    })
}

/// Opens the chosen audio source.
pub fn open_audio(choice: &AudioChoice) -> Result<Option<Box<dyn AudioSource>>, MediaError> {
    Ok(match choice {
        AudioChoice::None => None,
        AudioChoice::Synthetic => Some(Box::new(SyntheticAudioSource::default())),
        AudioChoice::Microphone(id) => Some(crate::media::capture::open_microphone(id.as_deref())?),
        AudioChoice::File(path) => Some(Box::new(crate::media::wav::WavFileSource::open(path)?)),
    })
}

/// Opens the chosen speaker (a discarding sink for `None`).
pub fn open_speaker(choice: &SpeakerChoice) -> Result<Box<dyn AudioSink>, MediaError> {
    match choice {
        SpeakerChoice::None => Ok(Box::new(crate::media::devices::NullSink::new())),
        SpeakerChoice::Speaker(id) => crate::media::capture::open_speaker(id.as_deref()),
    }
}
