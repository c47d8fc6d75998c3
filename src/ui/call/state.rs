//! The call screen's model: everything the screen shows, fed with engine events (`apply`) and
//! the user's shortcuts, with no drawing. Pure: the UI clock is passed in (`set_now`), so the
//! tests below drive it with made-up events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::layout::{self, Quality, Shortcut};
use super::video::TileToken;
use crate::engine::api::{
    CallState, Command, Event, RemoteVideo, StatsSnapshot, StreamRole, VideoChoice, display_name,
};
use crate::engine::api::{PeerConnectionState, ReceiveStats, SourceChoice};

use super::CallAction;

/// Levels below this are silence (noise floor of the synthetic tone's pauses, room noise).
pub(super) const SPEAKING_LEVEL: f32 = 0.02;
/// The active speaker keeps the highlight this long after going quiet, so the border does not
/// flicker between words.
pub(super) const SPEAKER_HOLD_S: f64 = 1.0;
/// RMS of the local microphone that counts as speech for the "You are muted" notice (about
/// −34 dBFS: a voice at a laptop microphone, well above room noise).
pub(super) const MUTED_SPEECH_LEVEL: f32 = 0.02;

/// Non-fatal notices disappear after this long.
pub(super) const NOTICE_TTL_S: f64 = 10.0;
/// Chat lines kept (older ones scroll away for good).
pub(super) const CHAT_KEEP: usize = 500;

/// One remote participant.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub name: String,
    pub connection: PeerConnectionState,
    pub mic_muted: bool,
    pub camera_off: bool,
    pub level: f32,
}

impl PeerInfo {
    pub(super) fn new(name: String) -> PeerInfo {
        PeerInfo {
            name,
            connection: PeerConnectionState::Connecting,
            mic_muted: false,
            camera_off: false,
            level: 0.0,
        }
    }

    /// Whether this peer's tiles show the spinner overlay.
    pub fn busy(&self) -> bool {
        matches!(
            self.connection,
            PeerConnectionState::Connecting | PeerConnectionState::Reconnecting
        )
    }
}

/// One tile: a remote stream, or a placeholder for a peer that sends nothing (so everyone in
/// the call is visible).
pub struct Tile {
    pub peer: String,
    /// `None` for a peer's placeholder tile.
    pub stream_id: Option<String>,
    pub role: StreamRole,
    /// The name from the stream's own metadata, when it has one.
    pub stream_name: Option<String>,
    pub video: Option<RemoteVideo>,
    /// GPU texture identity; replaced when the video is re-bound.
    pub(super) token: Arc<TileToken>,
}

/// Per-stream numbers for the stats overlay, from the last two `Stats` events.
#[derive(Debug, Clone, Default)]
pub struct TileStats {
    pub now: ReceiveStats,
    /// Loss fraction over the last interval (not since the start: old loss is not news).
    pub loss: f64,
}

/// A line in the chat panel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatLine {
    pub name: String,
    pub text: String,
    pub mine: bool,
}

/// The local participant's own controls.
#[derive(Debug, Clone, Default)]
pub struct LocalState {
    pub mic_muted: bool,
    pub camera_off: bool,
    /// A screen share was started (the engine reports one that fails or ends with
    /// `LocalMedia { sharing: false }`).
    pub sharing: bool,
}

/// The call screen's model.
pub struct CallView {
    pub room: String,
    pub self_name: String,
    pub state: CallState,
    /// UI time (`InputState::time`) of the join, for the call clock.
    pub(super) joined_at: Option<f64>,
    /// UI time the signalling outage started.
    pub(super) reconnecting_since: Option<f64>,
    /// Peers in join order.
    pub peers: Vec<(String, PeerInfo)>,
    pub tiles: Vec<Tile>,
    pub local_preview: Option<RemoteVideo>,
    pub(super) local_token: Arc<TileToken>,
    pub local: LocalState,
    pub local_level: f32,
    /// Since when the (muted) microphone has been hearing speech.
    pub(super) talking_while_muted_since: Option<f64>,
    /// Show "You are muted" until then.
    pub(super) muted_hint_until: Option<f64>,
    pub chat: Vec<ChatLine>,
    pub unread: usize,
    pub notices: Vec<(f64, String)>,
    pub stats: HashMap<(String, String), TileStats>,
    pub send_rtt_ms: Option<f64>,
    pub(super) speaker: Option<(String, f64)>,
    pub show_stats: bool,
    /// The screen/window picker is open (S, or the toolbar's "Share screen").
    pub share_picker_open: bool,
    /// Per-participant playback volume (1.0 = 100 %), by peer id, for the whole session.
    pub volumes: HashMap<String, f32>,
    /// Volume slider moves of this frame, turned into commands after drawing.
    pub(super) volume_changes: Vec<(String, f32)>,
    pub show_chat: bool,
    pub(super) chat_input: String,
    /// Troubleshoot: how long "blackhole media" lasts, in seconds.
    pub(super) blackhole_secs: u32,
    /// Screens and windows the share picker offers (from the app's device scan).
    pub screens: Vec<SourceChoice>,
    /// Events seen with no UI time yet (applied before the first frame).
    pub(super) now: f64,
}

impl CallView {
    pub fn new(room: &str, self_name: &str) -> CallView {
        CallView {
            room: room.to_string(),
            self_name: self_name.to_string(),
            state: CallState::Joining,
            joined_at: None,
            reconnecting_since: None,
            peers: Vec::new(),
            tiles: Vec::new(),
            local_preview: None,
            local_token: TileToken::new(),
            local: LocalState::default(),
            local_level: 0.0,
            talking_while_muted_since: None,
            muted_hint_until: None,
            chat: Vec::new(),
            unread: 0,
            notices: Vec::new(),
            stats: HashMap::new(),
            send_rtt_ms: None,
            speaker: None,
            show_stats: false,
            share_picker_open: false,
            volumes: HashMap::new(),
            volume_changes: Vec::new(),
            show_chat: false,
            chat_input: String::new(),
            blackhole_secs: 10,
            screens: Vec::new(),
            now: 0.0,
        }
    }

    /// Sets the UI clock (seconds, `InputState::time`); events applied afterwards are stamped
    /// with it.
    pub fn set_now(&mut self, now: f64) {
        self.now = now;
    }

    pub fn peer(&self, id: &str) -> Option<&PeerInfo> {
        self.peers.iter().find(|(p, _)| p == id).map(|(_, i)| i)
    }

    pub(super) fn peer_mut(&mut self, id: &str) -> &mut PeerInfo {
        if let Some(i) = self.peers.iter().position(|(p, _)| p == id) {
            return &mut self.peers[i].1;
        }
        self.peers
            .push((id.to_string(), PeerInfo::new("Anonymous".to_string())));
        let last = self.peers.len() - 1;
        &mut self.peers[last].1
    }

    /// How long signalling has been down, if it is.
    pub fn reconnecting_for(&self) -> Option<Duration> {
        let since = self.reconnecting_since?;
        (self.state == CallState::Reconnecting)
            .then(|| Duration::from_secs_f64((self.now - since).max(0.0)))
    }

    /// The name shown on a tile: the stream's own name, else the peer's, else "Anonymous".
    pub fn tile_name(&self, t: &Tile) -> String {
        t.stream_name
            .clone()
            .or_else(|| self.peer(&t.peer).map(|p| p.name.clone()))
            .unwrap_or_else(|| "Anonymous".to_string())
    }

    /// The tiles to draw: every stream, plus a placeholder for peers without one.
    pub fn visible_tiles(&self) -> Vec<&Tile> {
        self.tiles
            .iter()
            .filter(|t| {
                t.stream_id.is_some()
                    || !self
                        .tiles
                        .iter()
                        .any(|o| o.peer == t.peer && o.stream_id.is_some())
            })
            .collect()
    }

    /// The current active speaker (peer id).
    pub fn active_speaker(&self) -> Option<&str> {
        self.speaker.as_ref().map(|(p, _)| p.as_str())
    }

    /// Folds one engine event into the model.
    pub fn apply(&mut self, ev: Event) {
        match ev {
            Event::CallState { state, since } => {
                if state == CallState::Reconnecting {
                    let since = since.unwrap_or_default().as_secs_f64();
                    self.reconnecting_since = Some(self.now - since);
                } else {
                    self.reconnecting_since = None;
                }
                if state == CallState::Joined && self.joined_at.is_none() {
                    self.joined_at = Some(self.now);
                }
                self.state = state;
            }
            Event::Joined { room, .. } => {
                self.room = room;
                self.joined_at.get_or_insert(self.now);
            }
            Event::PeerJoined { id, name, .. } => {
                self.peer_mut(&id).name = name;
                if !self.tiles.iter().any(|t| t.peer == id) {
                    self.tiles.push(Tile {
                        peer: id,
                        stream_id: None,
                        role: StreamRole::Camera,
                        stream_name: None,
                        video: None,
                        token: TileToken::new(),
                    });
                }
            }
            Event::PeerLeft { id } => {
                self.peers.retain(|(p, _)| *p != id);
                self.tiles.retain(|t| t.peer != id);
                self.stats.retain(|(p, _), _| *p != id);
                if self.active_speaker() == Some(id.as_str()) {
                    self.speaker = None;
                }
            }
            Event::LocalPreview(v) => self.local_preview = v,
            Event::PeerConnection { id, state } => {
                self.peer_mut(&id).connection = state;
            }
            Event::StreamAdded {
                peer,
                stream_id,
                role,
                metadata,
                video,
                ..
            } => {
                self.peer_mut(&peer);
                let stream_name = stream_name(metadata.as_ref());
                // A re-bind (`rebound`) replaces the tile's feed; a tile is also re-bound if
                // the same stream id arrives without the flag (the feed is new either way), so
                // a tile can never keep a feed that no longer delivers.
                if let Some(t) = self
                    .tiles
                    .iter_mut()
                    .find(|t| t.peer == peer && t.stream_id.as_deref() == Some(&stream_id))
                {
                    t.role = role;
                    t.stream_name = stream_name;
                    t.video = video;
                    t.token = TileToken::new();
                } else {
                    self.tiles.push(Tile {
                        peer,
                        stream_id: Some(stream_id),
                        role,
                        stream_name,
                        video,
                        token: TileToken::new(),
                    });
                }
            }
            Event::StreamRemoved { peer, stream_id } => {
                self.tiles
                    .retain(|t| !(t.peer == peer && t.stream_id.as_deref() == Some(&stream_id)));
                self.stats.remove(&(peer, stream_id));
            }
            Event::FirstFrame { .. } => {}
            Event::RemoteStatus {
                peer,
                mic_muted,
                camera_off,
            } => {
                let p = self.peer_mut(&peer);
                p.mic_muted = mic_muted;
                p.camera_off = camera_off;
            }
            Event::Chat { name, text, .. } => {
                self.push_chat(ChatLine {
                    name,
                    text,
                    mine: false,
                });
                if !self.show_chat {
                    self.unread += 1;
                }
            }
            Event::Stats(s) => self.apply_stats(*s),
            Event::Levels { local, peers } => self.apply_levels(local, &peers),
            Event::LocalMedia {
                camera_off,
                sharing,
            } => {
                self.local.camera_off = camera_off;
                self.local.sharing = sharing;
            }
            Event::Error { message, .. } => {
                self.notices.push((self.now, message));
                if self.notices.len() > 3 {
                    self.notices.remove(0);
                }
            }
            Event::Left => self.state = CallState::Left,
        }
    }

    pub(super) fn push_chat(&mut self, line: ChatLine) {
        self.chat.push(line);
        if self.chat.len() > CHAT_KEEP {
            let extra = self.chat.len() - CHAT_KEEP;
            self.chat.drain(..extra);
        }
    }

    pub(super) fn apply_stats(&mut self, s: StatsSnapshot) {
        self.send_rtt_ms = s.local_video.as_ref().and_then(|v| v.rtt_ms);
        let mut next = HashMap::new();
        for (peer, stream, now) in s.remote_video {
            let key = (peer, stream);
            let loss = match self.stats.get(&key) {
                Some(prev) => interval_loss(&prev.now, &now),
                None => interval_loss(&ReceiveStats::default(), &now),
            };
            next.insert(key, TileStats { now, loss });
        }
        self.stats = next;
    }

    pub(super) fn apply_levels(&mut self, local: f32, peers: &[(String, f32)]) {
        self.local_level = local;
        // Speech on a muted microphone for half a second: the user is probably talking to the
        // call without knowing it is muted. The level is measured before the mute.
        if self.local.mic_muted && local >= MUTED_SPEECH_LEVEL {
            let since = *self.talking_while_muted_since.get_or_insert(self.now);
            if self.now - since >= 0.5 {
                self.muted_hint_until = Some(self.now + 4.0);
            }
        } else {
            self.talking_while_muted_since = None;
        }
        if !self.local.mic_muted {
            self.muted_hint_until = None;
        }
        for (id, l) in peers {
            if let Some((_, p)) = self.peers.iter_mut().find(|(p, _)| p == id) {
                p.level = *l;
            }
        }
        self.speaker = next_speaker(self.speaker.take(), peers, self.now);
    }

    /// Whether the "You are muted" notice is showing.
    pub fn muted_hint(&self) -> bool {
        self.local.mic_muted && self.muted_hint_until.is_some_and(|t| self.now < t)
    }

    /// Quality badge of a stream, when stats exist for it.
    pub fn quality_of(&self, peer: &str, stream: &str) -> Option<Quality> {
        let s = self.stats.get(&(peer.to_string(), stream.to_string()))?;
        Some(layout::quality(
            s.loss,
            self.send_rtt_ms,
            s.now.jitter_ms,
            s.now.fps,
        ))
    }

    /// Starts sharing what the picker offered (`Screen(id)`, or `Synthetic` for the test pattern)
    /// and closes the picker.
    pub fn choose_share(&mut self, what: VideoChoice) -> Vec<CallAction> {
        self.share_picker_open = false;
        self.local.sharing = true;
        vec![CallAction::Send(Command::StartScreenShare(what))]
    }

    /// Applies a shortcut; returns the actions it causes.
    pub fn shortcut(&mut self, s: Shortcut) -> Vec<CallAction> {
        match s {
            Shortcut::ToggleMic => {
                self.local.mic_muted = !self.local.mic_muted;
                vec![CallAction::Send(Command::SetMicMuted(self.local.mic_muted))]
            }
            Shortcut::ToggleCamera => {
                self.local.camera_off = !self.local.camera_off;
                vec![CallAction::Send(Command::SetCameraEnabled(
                    !self.local.camera_off,
                ))]
            }
            Shortcut::ToggleScreenShare => {
                if self.local.sharing {
                    self.local.sharing = false;
                    vec![CallAction::Send(Command::StopScreenShare)]
                } else {
                    // S opens the screen/window picker (the test pattern is one of its entries).
                    self.share_picker_open = true;
                    Vec::new()
                }
            }
            Shortcut::ToggleStats => {
                self.show_stats = !self.show_stats;
                Vec::new()
            }
            Shortcut::Leave => vec![CallAction::Leave],
        }
    }
}

/// The display name in a stream's own metadata, if it carries one.
pub(super) fn stream_name(m: Option<&Value>) -> Option<String> {
    let has = |k: &str| {
        m.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty())
    };
    (has("username") || has("name")).then(|| display_name(m))
}

/// Loss over the interval between two cumulative snapshots.
pub(super) fn interval_loss(prev: &ReceiveStats, now: &ReceiveStats) -> f64 {
    let lost = now.packets_lost.saturating_sub(prev.packets_lost);
    let got = now.packets.saturating_sub(prev.packets);
    if lost + got == 0 {
        0.0
    } else {
        lost as f64 / (lost + got) as f64
    }
}

/// The next active speaker: the loudest peer above the speaking level; the current one keeps
/// the highlight for [`SPEAKER_HOLD_S`] after going quiet, and a newcomer must be clearly louder
/// to take it over.
pub(super) fn next_speaker(
    current: Option<(String, f64)>,
    levels: &[(String, f32)],
    now: f64,
) -> Option<(String, f64)> {
    let loudest = levels
        .iter()
        .filter(|(_, l)| *l >= SPEAKING_LEVEL)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let level_of = |id: &str| {
        levels
            .iter()
            .find(|(p, _)| p == id)
            .map_or(0.0, |(_, l)| *l)
    };
    match (current, loudest) {
        (Some((cur, _)), Some((id, l))) if *id != cur => {
            let cur_level = level_of(&cur);
            if cur_level < SPEAKING_LEVEL || *l > cur_level * 1.5 {
                Some((id.clone(), now))
            } else {
                Some((cur, now))
            }
        }
        (Some((cur, since)), _) => {
            if level_of(&cur) >= SPEAKING_LEVEL {
                Some((cur, now))
            } else if now - since < SPEAKER_HOLD_S {
                Some((cur, since))
            } else {
                None
            }
        }
        (None, Some((id, _))) => Some((id.clone(), now)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn added(peer: &str, stream: &str, role: StreamRole) -> Event {
        Event::StreamAdded {
            peer: peer.into(),
            stream_id: stream.into(),
            role,
            metadata: None,
            video: None,
            has_audio: true,
            rebound: false,
        }
    }

    #[test]
    fn speaking_into_a_muted_microphone_shows_a_notice_and_unmuting_clears_it() {
        let mut v = CallView::new("r", "me");
        let levels = |v: &mut CallView, t: f64, l: f32| {
            v.set_now(t);
            v.apply(Event::Levels {
                local: l,
                peers: Vec::new(),
            });
        };
        // Unmuted talk: nothing to say.
        levels(&mut v, 0.0, 0.1);
        levels(&mut v, 1.0, 0.1);
        assert!(!v.muted_hint());
        v.shortcut(Shortcut::ToggleMic);
        assert!(v.local.mic_muted);
        // A cough (one 100 ms burst) is not speech.
        levels(&mut v, 2.0, 0.1);
        levels(&mut v, 2.1, 0.001);
        levels(&mut v, 2.2, 0.001);
        assert!(!v.muted_hint());
        // Half a second of speech is.
        for k in 0..6 {
            levels(&mut v, 3.0 + f64::from(k) * 0.1, 0.05);
        }
        assert!(v.muted_hint());
        // It fades a few seconds after the talking stops…
        levels(&mut v, 4.0, 0.0);
        assert!(v.muted_hint());
        levels(&mut v, 9.0, 0.0);
        assert!(!v.muted_hint());
        // …and unmuting clears it at once.
        for k in 0..6 {
            levels(&mut v, 10.0 + f64::from(k) * 0.1, 0.05);
        }
        assert!(v.muted_hint());
        v.shortcut(Shortcut::ToggleMic);
        assert!(!v.muted_hint());
    }

    #[test]
    fn stream_added_again_rebinds_the_same_tile() {
        let mut v = CallView::new("r", "me");
        v.apply(Event::PeerJoined {
            id: "a".into(),
            name: "Ada".into(),
            metadata: None,
        });
        v.apply(added("a", "s1", StreamRole::Camera));
        let token = v.tiles[1].token.clone();
        v.apply(added("a", "s1", StreamRole::Camera));
        assert_eq!(
            v.visible_tiles().len(),
            1,
            "placeholder hidden, one stream tile"
        );
        assert!(!Arc::ptr_eq(&token, &v.tiles[1].token), "textures re-bound");
        v.apply(Event::StreamRemoved {
            peer: "a".into(),
            stream_id: "s1".into(),
        });
        assert_eq!(v.visible_tiles().len(), 1, "the placeholder is back");
        assert!(v.visible_tiles()[0].stream_id.is_none());
        v.apply(Event::PeerLeft { id: "a".into() });
        assert!(v.visible_tiles().is_empty());
        assert!(v.peers.is_empty());
    }

    #[test]
    fn names_prefer_stream_metadata_then_peer_then_anonymous() {
        let mut v = CallView::new("r", "me");
        v.apply(added("x", "s", StreamRole::Camera));
        assert_eq!(v.tile_name(&v.tiles[0]), "Anonymous");
        v.apply(Event::PeerJoined {
            id: "x".into(),
            name: "Xu".into(),
            metadata: None,
        });
        assert_eq!(v.tile_name(&v.tiles[0]), "Xu");
        v.apply(Event::StreamAdded {
            peer: "x".into(),
            stream_id: "s".into(),
            role: StreamRole::Screen,
            metadata: Some(json!({"role":"screen","username":"Xu's slides"})),
            video: None,
            has_audio: false,
            rebound: false,
        });
        assert_eq!(v.tile_name(&v.tiles[0]), "Xu's slides");
        assert_eq!(v.tiles[0].role, StreamRole::Screen);
    }

    #[test]
    fn reconnect_banner_time_follows_the_ui_clock() {
        let mut v = CallView::new("r", "me");
        v.set_now(100.0);
        v.apply(Event::CallState {
            state: CallState::Reconnecting,
            since: Some(Duration::from_secs(2)),
        });
        v.set_now(110.0);
        assert_eq!(v.reconnecting_for(), Some(Duration::from_secs(12)));
        v.apply(Event::CallState {
            state: CallState::Joined,
            since: None,
        });
        assert_eq!(v.reconnecting_for(), None);
    }

    #[test]
    fn shortcuts_toggle_and_emit_commands() {
        let mut v = CallView::new("r", "me");
        assert_eq!(
            v.shortcut(Shortcut::ToggleMic),
            vec![CallAction::Send(Command::SetMicMuted(true))]
        );
        assert_eq!(
            v.shortcut(Shortcut::ToggleCamera),
            vec![CallAction::Send(Command::SetCameraEnabled(false))]
        );
        // S opens the picker; choosing from it starts the share.
        assert!(v.shortcut(Shortcut::ToggleScreenShare).is_empty());
        assert!(v.share_picker_open);
        assert_eq!(
            v.choose_share(VideoChoice::Synthetic),
            vec![CallAction::Send(Command::StartScreenShare(
                VideoChoice::Synthetic
            ))]
        );
        assert!(!v.share_picker_open && v.local.sharing);
        // A failed or ended share clears the state so S starts it again.
        v.apply(Event::LocalMedia {
            camera_off: false,
            sharing: false,
        });
        assert!(!v.local.sharing);
        assert!(v.shortcut(Shortcut::ToggleStats).is_empty());
        assert!(v.show_stats);
        assert_eq!(v.shortcut(Shortcut::Leave), vec![CallAction::Leave]);
    }

    #[test]
    fn active_speaker_holds_then_hands_over() {
        let l = |v: &[(&str, f32)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), *b))
                .collect::<Vec<_>>()
        };
        let s = next_speaker(None, &l(&[("a", 0.1), ("b", 0.05)]), 0.0);
        assert_eq!(s.as_ref().map(|x| x.0.as_str()), Some("a"));
        // b slightly louder: a keeps it.
        let s = next_speaker(s, &l(&[("a", 0.1), ("b", 0.12)]), 0.1);
        assert_eq!(s.as_ref().map(|x| x.0.as_str()), Some("a"));
        // a silent: held for a second, then b (if speaking) takes over.
        let s = next_speaker(s, &l(&[("a", 0.0), ("b", 0.0)]), 0.5);
        assert_eq!(s.as_ref().map(|x| x.0.as_str()), Some("a"));
        let s = next_speaker(s, &l(&[("a", 0.0), ("b", 0.0)]), 1.2);
        assert_eq!(s, None);
        let s = next_speaker(None, &l(&[("a", 0.0), ("b", 0.3)]), 2.0);
        let s = next_speaker(s, &l(&[("a", 0.6), ("b", 0.3)]), 2.1);
        assert_eq!(
            s.as_ref().map(|x| x.0.as_str()),
            Some("a"),
            "clearly louder takes over"
        );
    }

    #[test]
    fn loss_is_per_interval() {
        let mut v = CallView::new("r", "me");
        let snap = |packets, lost| StatsSnapshot {
            remote_video: vec![(
                "p".into(),
                "s".into(),
                ReceiveStats {
                    packets,
                    packets_lost: lost,
                    fps: 30.0,
                    ..ReceiveStats::default()
                },
            )],
            ..StatsSnapshot::default()
        };
        v.apply(Event::Stats(Box::new(snap(1000, 100))));
        assert!((v.stats[&("p".into(), "s".into())].loss - 100.0 / 1100.0).abs() < 1e-9);
        v.apply(Event::Stats(Box::new(snap(2000, 100))));
        assert_eq!(v.stats[&("p".into(), "s".into())].loss, 0.0);
        assert_eq!(v.quality_of("p", "s"), Some(Quality::Good));
    }

    #[test]
    fn chat_counts_unread_while_closed() {
        let mut v = CallView::new("r", "me");
        v.apply(Event::Chat {
            from: "a".into(),
            name: "Ada".into(),
            text: "hi".into(),
        });
        assert_eq!(v.unread, 1);
        assert_eq!(v.chat[0].name, "Ada");
    }
}
