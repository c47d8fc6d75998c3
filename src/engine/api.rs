//! The engine's typed command and event vocabulary: the only things the UI (and the headless
//! peer) exchange with the call engine. Nothing here exposes webrtc or tokio types; remote video
//! is a handle to a latest-frame slot that the renderer reads.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::media::stats::SendStats;

// The media and peer types the UI works with, re-exported here so that `ui` depends on the
// engine's vocabulary only (`layering_tests` in lib.rs fails if it imports `media` or `peer`).
pub use crate::media::devices::{
    SinkChoice, SourceChoice, audio_sinks, audio_sources, screen_sources, video_sources,
};
pub use crate::media::processing::ProcessingSettings;
pub use crate::media::receive::DecodedFrame;
pub use crate::media::stats::ReceiveStats;
pub use crate::peer::PeerConnectionState;

/// How to authenticate to the signalling server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A JWT minted elsewhere.
    Token(String),
    /// A publishable key (`pk_…`).
    Key(String),
    /// Mint a fresh token locally on every connect from a (kid, secret) pair.
    Secret { kid: String, secret: String },
    /// "This computer": use (or start) the embedded server on 127.0.0.1:9292 with a local
    /// secret, and mint locally.
    ThisComputer,
}

/// Which picture to send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VideoChoice {
    None,
    /// The moving test pattern with the machine-readable stamp.
    #[default]
    Synthetic,
    /// A camera by id (see `media::devices`).
    Camera(String),
    /// A screen or window by id (screen share uses this with `role: "screen"`).
    Screen(String),
}

/// Which sound to send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AudioChoice {
    None,
    /// The 440 Hz tone with a beep each second.
    #[default]
    Synthetic,
    /// A microphone by id; `None` = the system default.
    Microphone(Option<String>),
    /// A WAV file, looped (scripts and tests).
    File(std::path::PathBuf),
}

/// Where remote audio goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SpeakerChoice {
    /// Discard (headless, machines without output).
    #[default]
    None,
    /// A speaker by id; `None` = the system default.
    Speaker(Option<String>),
}

/// What an [`Event::Error`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The join could not start, or the server refused it (`close_code` says why when known).
    JoinFailed,
    /// The server could not be reached at all.
    Unreachable,
    /// The call ended on the server's or the SDK's decision (a terminal close, a call that
    /// could not be restored after a reconnect).
    CallEnded,
    /// A camera, microphone or speaker failed, was lost or appeared; the call goes on.
    Device,
    /// A screen share could not start or ended by itself.
    ScreenShare,
    /// A connection to one participant could not be recovered.
    Connection,
    /// Anything else worth telling (a chat line not sent, a command that does not apply now).
    Notice,
}

/// A source or speaker named on the command line that does not parse; the message lists the
/// accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ChoiceError(&'static str);

/// `synthetic`, `camera[:ID]`, `screen[:ID]` or `none` (the forms `meshcall join --video` takes).
impl std::str::FromStr for VideoChoice {
    type Err = ChoiceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.split_once(':') {
            None if s == "none" => VideoChoice::None,
            None if s == "synthetic" => VideoChoice::Synthetic,
            None if s == "camera" => VideoChoice::Camera("0".into()),
            None if s == "screen" => VideoChoice::Screen(String::new()),
            Some(("camera", id)) => VideoChoice::Camera(id.into()),
            Some(("screen", id)) => VideoChoice::Screen(id.into()),
            _ => {
                return Err(ChoiceError(
                    "--video must be synthetic, camera[:ID], screen[:ID] or none",
                ));
            }
        })
    }
}

/// `synthetic`, `mic[:ID]`, `file:PATH.wav` or `none` (the forms `meshcall join --audio` takes).
impl std::str::FromStr for AudioChoice {
    type Err = ChoiceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.split_once(':') {
            None if s == "none" => AudioChoice::None,
            None if s == "synthetic" => AudioChoice::Synthetic,
            None if s == "mic" => AudioChoice::Microphone(None),
            Some(("mic", id)) => AudioChoice::Microphone(Some(id.into())),
            Some(("file", path)) if !path.is_empty() => AudioChoice::File(path.into()),
            _ => {
                return Err(ChoiceError(
                    "--audio must be synthetic, mic[:ID], file:PATH.wav or none",
                ));
            }
        })
    }
}

/// `default`, `pulse:NAME`, a listed speaker id or `none` (the forms `meshcall join --speaker`
/// takes).
impl std::str::FromStr for SpeakerChoice {
    type Err = ChoiceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.split_once(':') {
            None if s == "none" => SpeakerChoice::None,
            None if s == "default" => SpeakerChoice::Speaker(None),
            // cpal names PulseAudio sinks `pulseaudio:NAME`.
            Some(("pulse", name)) if !name.is_empty() => {
                SpeakerChoice::Speaker(Some(format!("pulseaudio:{name}")))
            }
            Some((_, id)) if !id.is_empty() => SpeakerChoice::Speaker(Some(s.to_string())),
            _ => {
                return Err(ChoiceError(
                    "--speaker must be default, pulse:NAME, a speaker id or none",
                ));
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinRequest {
    /// Signalling origin, e.g. `ws://127.0.0.1:9292` (ignored for [`Auth::ThisComputer`]).
    pub server: String,
    pub room: String,
    pub name: String,
    pub auth: Auth,
    pub video: VideoChoice,
    pub audio: AudioChoice,
    pub speaker: SpeakerChoice,
    /// Video send size and rate.
    pub width: usize,
    pub height: usize,
    pub fps: f32,
    pub bitrate_bps: u32,
    /// Restrict ICE to 127.0.0.1 (tests, demos on one machine).
    pub loopback_only: bool,
    /// Peer id to mint with (secret / this computer) [default: from the name + random suffix].
    pub peer_id: Option<String>,
    /// Decode remote video (false for send-only bots and load generators).
    pub receive_video: bool,
    /// Echo cancellation / noise suppression / gain; `None`: on for a microphone, off for the
    /// synthetic tone and files.
    pub audio_processing: Option<crate::media::processing::ProcessingSettings>,
    /// Play a short sound when somebody joins or leaves.
    pub sounds: bool,
}

impl JoinRequest {
    pub fn new(server: &str, room: &str, name: &str, auth: Auth) -> JoinRequest {
        JoinRequest {
            server: server.to_string(),
            room: room.to_string(),
            name: name.to_string(),
            auth,
            video: VideoChoice::Synthetic,
            audio: AudioChoice::Synthetic,
            speaker: SpeakerChoice::None,
            width: 1280,
            height: 720,
            fps: 30.0,
            bitrate_bps: 1_500_000,
            loopback_only: false,
            peer_id: None,
            receive_video: true,
            audio_processing: None,
            sounds: true,
        }
    }
}

/// Reconnect scenarios a user or QA can trigger by hand (Troubleshoot menu, `--simulate`).
#[derive(Debug, Clone, PartialEq)]
pub enum Simulation {
    /// Drop the signalling WebSocket (the SDK reconnects and reconciles).
    DropSignalling,
    /// Force an ICE restart on one peer.
    RestartIce { peer: String },
    /// Drop every packet to and from one peer for a while (its connection goes
    /// `reconnecting`, then recovers through the ICE-restart ladder).
    BlackholeMedia { peer: String, duration: Duration },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Join(Box<JoinRequest>),
    Leave,
    SetMicMuted(bool),
    SetCameraEnabled(bool),
    /// Switch the camera mid-call (same track: nobody renegotiates, tiles stay). `None` turns
    /// the camera off, like `SetCameraEnabled(false)`.
    SetCamera(VideoChoice),
    /// Switch the microphone mid-call (same track). `None` mutes.
    SetMicrophone(AudioChoice),
    /// Play remote audio on another speaker from the next 20 ms on.
    SetSpeaker(SpeakerChoice),
    /// Join and leave sounds on or off.
    SetSounds(bool),
    /// One participant's playback volume (1.0 = 100 %, 0–2), remembered for the session and
    /// applied in the mixer (so the echo canceller hears it too).
    SetPeerVolume {
        peer: String,
        volume: f32,
    },
    /// Turn echo cancellation / noise suppression / gain on or off from the next 10 ms on (no
    /// renegotiation).
    SetAudioProcessing(crate::media::processing::ProcessingSettings),
    /// Start sharing (`VideoChoice::Screen(id)` or `Synthetic` for a test share).
    StartScreenShare(VideoChoice),
    StopScreenShare,
    /// A server-routed chat message to everyone in the room.
    SendChat(String),
    Simulate(Simulation),
    /// While [`CallState::Reconnecting`]: try the server again now instead of waiting out the
    /// back-off (the banner's "retry now"). Ignored otherwise.
    RetryNow,
    /// Start an in-process synthetic participant (moving pattern + tone) in the same room.
    InviteTestParticipant,
}

/// The call as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    Idle,
    Joining,
    Joined,
    /// The signalling connection is down and being retried; media may still flow.
    Reconnecting,
    Left,
}

/// What a stream is for (from its `role` metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRole {
    Camera,
    Screen,
    Other,
}

impl StreamRole {
    pub fn from_metadata(m: Option<&Value>) -> StreamRole {
        match m.and_then(|m| m.get("role")).and_then(Value::as_str) {
            Some("screen") => StreamRole::Screen,
            Some("camera") | None => StreamRole::Camera,
            Some(_) => StreamRole::Other,
        }
    }
}

/// A remote video the renderer can read (latest frame wins; `seq` says whether it changed).
pub trait VideoFeed: Send + Sync {
    fn latest(&self) -> Option<Arc<DecodedFrame>>;
    fn stats(&self) -> ReceiveStats;
}

#[derive(Clone)]
pub struct RemoteVideo(pub Arc<dyn VideoFeed>);

impl std::fmt::Debug for RemoteVideo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteVideo")
    }
}

/// The name shown on a tile: `username`, else `name`, else "Anonymous".
pub fn display_name(metadata: Option<&Value>) -> String {
    let pick = |k: &str| {
        metadata
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.chars().take(64).collect::<String>())
    };
    pick("username")
        .or_else(|| pick("name"))
        .unwrap_or_else(|| "Anonymous".to_string())
}

#[derive(Debug, Clone)]
pub enum Event {
    CallState {
        state: CallState,
        /// For `Reconnecting`: how long it has been down.
        since: Option<Duration>,
    },
    Joined {
        self_id: String,
        room: String,
    },
    PeerJoined {
        id: String,
        name: String,
        metadata: Option<Value>,
    },
    PeerLeft {
        id: String,
    },
    /// The local camera preview (None when the camera is off or absent).
    LocalPreview(Option<RemoteVideo>),
    PeerConnection {
        id: String,
        state: PeerConnectionState,
    },
    /// A remote stream arrived. Sent again (same `stream_id`, new `video`, `rebound` true)
    /// when the connection to that peer was replaced after a reconnect: the old feed never
    /// delivers again, so the tile must be re-bound to the new one.
    StreamAdded {
        peer: String,
        stream_id: String,
        role: StreamRole,
        metadata: Option<Value>,
        video: Option<RemoteVideo>,
        has_audio: bool,
        /// The engine was already showing this stream: a re-bind, not a new stream.
        rebound: bool,
    },
    StreamRemoved {
        peer: String,
        stream_id: String,
    },
    /// The first decoded picture of a stream.
    FirstFrame {
        peer: String,
        stream_id: String,
        /// Since the local join started.
        since_join: Duration,
        /// Capture → decode, when the sender stamps its pictures and shares the clock.
        latency_us: Option<u64>,
    },
    /// A peer's mic/camera status (the `meshcall-status` data message).
    RemoteStatus {
        peer: String,
        mic_muted: bool,
        camera_off: bool,
    },
    Chat {
        from: String,
        name: String,
        text: String,
    },
    /// About once a second (boxed: it is much larger than the other events).
    Stats(Box<StatsSnapshot>),
    /// Audio levels (RMS 0..1) per peer, about 10× a second, for rings and the active speaker.
    Levels {
        local: f32,
        peers: Vec<(String, f32)>,
    },
    /// Something went wrong. `kind` says what, so that the UI can word it without reading
    /// `message`; `close_code` is the server's close code when one explains it.
    Error {
        kind: ErrorKind,
        message: String,
        close_code: Option<u16>,
        /// The call ended (or never started) because of it.
        fatal: bool,
    },
    /// The engine changed the local media itself: the camera turned off because it was lost
    /// with no other to switch to, or a screen share ended or could not start.
    LocalMedia {
        camera_off: bool,
        sharing: bool,
    },
    Left,
}

#[derive(Debug, Clone, Default)]
pub struct StatsSnapshot {
    pub local_video: Option<SendStats>,
    pub local_audio: Option<SendStats>,
    /// What the microphone sends, over the last stats interval.
    pub audio_out: Option<AudioOutStats>,
    /// (peer, stream id, stats)
    pub remote_video: Vec<(String, String, ReceiveStats)>,
    /// (peer, stream id, decoded level in dBFS over the last stats interval)
    pub remote_audio: Vec<(String, String, f64)>,
    /// Join/leave sounds played so far in this call.
    pub cues_played: u64,
}

/// The microphone path over the last stats interval.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioOutStats {
    /// RMS of what was sent (after processing; silence while muted), dBFS.
    pub level_dbfs: f64,
    /// The processing stages on ("aec+ns+agc", "off").
    pub processing: String,
    /// The echo canceller's delay estimate.
    pub delay_ms: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn source_choices_parse_from_the_command_line_forms() {
        let video: &[(&str, Option<VideoChoice>)] = &[
            ("none", Some(VideoChoice::None)),
            ("synthetic", Some(VideoChoice::Synthetic)),
            ("camera", Some(VideoChoice::Camera("0".into()))),
            (
                "camera:/dev/video2",
                Some(VideoChoice::Camera("/dev/video2".into())),
            ),
            ("screen", Some(VideoChoice::Screen(String::new()))),
            ("screen:x11:0", Some(VideoChoice::Screen("x11:0".into()))),
            ("webcam", None),
            ("", None),
        ];
        for (text, want) in video {
            assert_eq!(text.parse::<VideoChoice>().ok(), *want, "{text:?}");
        }
        let audio: &[(&str, Option<AudioChoice>)] = &[
            ("none", Some(AudioChoice::None)),
            ("synthetic", Some(AudioChoice::Synthetic)),
            ("mic", Some(AudioChoice::Microphone(None))),
            (
                "mic:pulse:in",
                Some(AudioChoice::Microphone(Some("pulse:in".into()))),
            ),
            ("file:a.wav", Some(AudioChoice::File("a.wav".into()))),
            ("file:", None),
            ("tone", None),
        ];
        for (text, want) in audio {
            assert_eq!(text.parse::<AudioChoice>().ok(), *want, "{text:?}");
        }
        let speaker: &[(&str, Option<SpeakerChoice>)] = &[
            ("none", Some(SpeakerChoice::None)),
            ("default", Some(SpeakerChoice::Speaker(None))),
            (
                "pulse:out",
                Some(SpeakerChoice::Speaker(Some("pulseaudio:out".into()))),
            ),
            (
                "alsa:hw0",
                Some(SpeakerChoice::Speaker(Some("alsa:hw0".into()))),
            ),
            ("pulse:", None),
            ("loud", None),
        ];
        for (text, want) in speaker {
            assert_eq!(text.parse::<SpeakerChoice>().ok(), *want, "{text:?}");
        }
        let err = "webcam".parse::<VideoChoice>().unwrap_err().to_string();
        assert!(err.contains("camera[:ID]"), "{err}");
    }

    #[test]
    fn names_fall_back_in_order() {
        assert_eq!(
            display_name(Some(&json!({"username":"Ana","name":"x"}))),
            "Ana"
        );
        assert_eq!(display_name(Some(&json!({"name":"Bo"}))), "Bo");
        assert_eq!(display_name(Some(&json!({"username":"  "}))), "Anonymous");
        assert_eq!(display_name(Some(&json!({"username": 5}))), "Anonymous");
        assert_eq!(display_name(None), "Anonymous");
        assert_eq!(
            display_name(Some(&json!({"username": "x".repeat(500)}))).len(),
            64
        );
    }

    #[test]
    fn roles_from_metadata() {
        assert_eq!(
            StreamRole::from_metadata(Some(&json!({"role":"screen"}))),
            StreamRole::Screen
        );
        assert_eq!(StreamRole::from_metadata(None), StreamRole::Camera);
        assert_eq!(
            StreamRole::from_metadata(Some(&json!({"role":"x"}))),
            StreamRole::Other
        );
    }
}
