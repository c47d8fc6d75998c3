//! The call screen. [`CallView`] is a plain model fed with engine [`Event`]s (`apply`) and drawn
//! by `ui`, which returns what the user asked for as [`CallAction`]s; it never talks to the
//! engine itself. That split lets the tests drive the whole screen with made-up events and
//! synthetic video feeds, exactly as the engine would.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use eframe::egui::{
    self, Align2, Color32, CornerRadius, FontId, Key, Pos2, Rect, RichText, Sense, Stroke,
    StrokeKind, Ui, Vec2, pos2, vec2,
};
use serde_json::Value;

use super::layout::{self, Quality, Shortcut};
use super::video::{self, TileToken};
use crate::engine::api::{
    CallState, Command, Event, RemoteVideo, Simulation, StatsSnapshot, StreamRole, VideoChoice,
    display_name,
};
use crate::engine::api::{PeerConnectionState, ReceiveStats, SourceChoice};

/// What the user asked for on the call screen. Most are engine commands; the rest change which
/// screen is shown, so the app handles them.
#[derive(Debug, Clone, PartialEq)]
pub enum CallAction {
    Send(Command),
    /// Leave and go back to the join screen.
    Leave,
    /// Leave and join the same room again with the same settings.
    Rejoin,
    /// Open the settings (sources, resolution) that apply to the next join.
    Settings,
}

/// Levels below this are silence (noise floor of the synthetic tone's pauses, room noise).
const SPEAKING_LEVEL: f32 = 0.02;
/// The active speaker keeps the highlight this long after going quiet, so the border does not
/// flicker between words.
const SPEAKER_HOLD_S: f64 = 1.0;
/// RMS of the local microphone that counts as speech for the "You are muted" notice (about
/// −34 dBFS: a voice at a laptop microphone, well above room noise).
const MUTED_SPEECH_LEVEL: f32 = 0.02;

/// Non-fatal notices disappear after this long.
const NOTICE_TTL_S: f64 = 10.0;
/// Chat lines kept (older ones scroll away for good).
const CHAT_KEEP: usize = 500;

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
    fn new(name: String) -> PeerInfo {
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
    token: Arc<TileToken>,
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
    joined_at: Option<f64>,
    /// UI time the signalling outage started.
    reconnecting_since: Option<f64>,
    /// Peers in join order.
    pub peers: Vec<(String, PeerInfo)>,
    pub tiles: Vec<Tile>,
    pub local_preview: Option<RemoteVideo>,
    local_token: Arc<TileToken>,
    pub local: LocalState,
    pub local_level: f32,
    /// Since when the (muted) microphone has been hearing speech.
    talking_while_muted_since: Option<f64>,
    /// Show "You are muted" until then.
    muted_hint_until: Option<f64>,
    pub chat: Vec<ChatLine>,
    pub unread: usize,
    pub notices: Vec<(f64, String)>,
    pub stats: HashMap<(String, String), TileStats>,
    pub send_rtt_ms: Option<f64>,
    speaker: Option<(String, f64)>,
    pub show_stats: bool,
    /// The screen/window picker is open (S, or the toolbar's "Share screen").
    pub share_picker_open: bool,
    /// Per-participant playback volume (1.0 = 100 %), by peer id, for the whole session.
    pub volumes: HashMap<String, f32>,
    /// Volume slider moves of this frame, turned into commands after drawing.
    volume_changes: Vec<(String, f32)>,
    pub show_chat: bool,
    chat_input: String,
    /// Troubleshoot: how long "blackhole media" lasts, in seconds.
    blackhole_secs: u32,
    /// Screens and windows the share picker offers (from the app's device scan).
    pub screens: Vec<SourceChoice>,
    /// Events seen with no UI time yet (applied before the first frame).
    now: f64,
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

    fn peer_mut(&mut self, id: &str) -> &mut PeerInfo {
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
                // Re-bound on every StreamAdded: after a reconnect the same stream id comes
                // with a new receiver, and the old one never delivers again.
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

    fn push_chat(&mut self, line: ChatLine) {
        self.chat.push(line);
        if self.chat.len() > CHAT_KEEP {
            let extra = self.chat.len() - CHAT_KEEP;
            self.chat.drain(..extra);
        }
    }

    fn apply_stats(&mut self, s: StatsSnapshot) {
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

    fn apply_levels(&mut self, local: f32, peers: &[(String, f32)]) {
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

    /// The screen/window picker, while open.
    fn share_picker(&mut self, ctx: &egui::Context, actions: &mut Vec<CallAction>) {
        let mut open = self.share_picker_open;
        let mut chosen = None;
        egui::Window::new("Share your screen")
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                let devices: Vec<(String, String)> = self
                    .screens
                    .iter()
                    .filter_map(|c| match c {
                        SourceChoice::Screen(d) => Some((d.id.clone(), d.name.clone())),
                        _ => None,
                    })
                    .collect();
                if devices.is_empty() {
                    if ui.button("Entire screen").clicked() {
                        chosen = Some(VideoChoice::Screen(String::new()));
                    }
                } else {
                    egui::ScrollArea::vertical()
                        .max_height(320.0)
                        .show(ui, |ui| {
                            for (id, name) in devices {
                                if ui.button(name).clicked() {
                                    chosen = Some(VideoChoice::Screen(id));
                                }
                            }
                        });
                }
                ui.separator();
                if ui
                    .button("Test pattern (synthetic share)")
                    .on_hover_text("Works without a display; good for trying things out")
                    .clicked()
                {
                    chosen = Some(VideoChoice::Synthetic);
                }
            });
        self.share_picker_open = open;
        if let Some(what) = chosen {
            actions.extend(self.choose_share(what));
        }
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

    /// Draws the call screen into `ui` and returns the user's actions.
    pub fn ui(&mut self, ui: &mut Ui) -> Vec<CallAction> {
        let now = ui.input(|i| i.time);
        self.set_now(now);
        self.notices.retain(|(t, _)| now - t < NOTICE_TTL_S);
        if let Some(&(t, _)) = self.notices.first() {
            ui.ctx()
                .request_repaint_after(Duration::from_secs_f64((t + NOTICE_TTL_S - now).max(0.1)));
        }
        let mut actions = Vec::new();
        if !ui.ctx().egui_wants_keyboard_input() {
            let keys: Vec<Shortcut> = ui.input(|i| {
                i.events
                    .iter()
                    .filter_map(|e| match e {
                        egui::Event::Key {
                            key,
                            pressed: true,
                            repeat: false,
                            modifiers,
                            ..
                        } => layout::shortcut(*key, *modifiers),
                        _ => None,
                    })
                    .collect()
            });
            for k in keys {
                actions.extend(self.shortcut(k));
            }
        }
        egui::Panel::top("call_top").show(ui, |ui| self.top_bar(ui, &mut actions));
        if let Some(elapsed) = self.reconnecting_for() {
            egui::Panel::top("call_banner")
                .frame(
                    egui::Frame::new()
                        .fill(Color32::from_rgb(120, 84, 0))
                        .inner_margin(8.0),
                )
                .show(ui, |ui| banner(ui, elapsed, &mut actions));
            // The elapsed counter ticks once a second, not every frame.
            ui.ctx().request_repaint_after(Duration::from_secs(1));
        }
        if self.muted_hint() {
            egui::Panel::top("muted_hint")
                .frame(
                    egui::Frame::new()
                        .fill(Color32::from_rgb(150, 40, 40))
                        .inner_margin(8.0),
                )
                .show(ui, |ui| {
                    ui.colored_label(Color32::WHITE, "You are muted — press M to talk");
                });
            ui.ctx().request_repaint_after(Duration::from_millis(500));
        }
        if !self.notices.is_empty() {
            egui::Panel::top("call_notices").show(ui, |ui| {
                let mut dismiss = None;
                for (i, (_, text)) in self.notices.iter().enumerate() {
                    ui.horizontal(|ui| {
                        ui.colored_label(Color32::from_rgb(255, 190, 90), text.as_str());
                        if ui.small_button("Dismiss").clicked() {
                            dismiss = Some(i);
                        }
                    });
                }
                if let Some(i) = dismiss {
                    self.notices.remove(i);
                }
            });
        }
        egui::Panel::bottom("call_controls").show(ui, |ui| self.controls(ui, &mut actions));
        for (peer, volume) in std::mem::take(&mut self.volume_changes) {
            self.volumes.insert(peer.clone(), volume);
            actions.push(CallAction::Send(Command::SetPeerVolume { peer, volume }));
        }
        if self.share_picker_open {
            let ctx = ui.ctx().clone();
            self.share_picker(&ctx, &mut actions);
        }
        if self.show_chat {
            egui::Panel::right("call_chat")
                .default_size(280.0)
                .show(ui, |ui| self.chat_panel(ui, &mut actions));
        }
        egui::CentralPanel::default()
            .frame(
                egui::Frame::new()
                    .fill(Color32::from_gray(18))
                    .inner_margin(8.0),
            )
            .show(ui, |ui| self.stage(ui));
        actions
    }

    fn top_bar(&mut self, ui: &mut Ui, actions: &mut Vec<CallAction>) {
        ui.horizontal(|ui| {
            ui.strong(&self.room);
            if let Some(t) = self.joined_at {
                let d = Duration::from_secs_f64((self.now - t).max(0.0));
                ui.label(layout::format_clock(d));
                // The clock shows seconds: repaint once a second while in the call.
                ui.ctx().request_repaint_after(Duration::from_secs(1));
            }
            let n = self.peers.len() + 1;
            ui.label(if n == 1 {
                "just you".to_string()
            } else {
                format!("{n} people")
            });
            let (text, colour) = match self.state {
                CallState::Joined => ("connected", Color32::from_rgb(80, 200, 120)),
                CallState::Joining => ("joining…", Color32::LIGHT_GRAY),
                CallState::Reconnecting => ("reconnecting…", Color32::from_rgb(255, 190, 90)),
                CallState::Idle | CallState::Left => ("not connected", Color32::GRAY),
            };
            ui.colored_label(colour, text);
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.menu_button("Troubleshoot", |ui| {
                    if ui
                        .button("Drop the signalling connection")
                        .on_hover_text("Simulates a network drop; the call should reconnect")
                        .clicked()
                    {
                        actions.push(CallAction::Send(Command::Simulate(
                            Simulation::DropSignalling,
                        )));
                        ui.close();
                    }
                    ui.separator();
                    ui.label("ICE restart on:");
                    if self.peers.is_empty() {
                        ui.weak("(nobody else is here)");
                    }
                    for (id, p) in &self.peers {
                        let label = format!("{} ({})", p.name, p.connection.as_str());
                        if ui.button(label).clicked() {
                            actions.push(CallAction::Send(Command::Simulate(
                                Simulation::RestartIce { peer: id.clone() },
                            )));
                            ui.close();
                        }
                    }
                    ui.separator();
                    ui.horizontal(|ui| {
                        ui.label("Blackhole media for");
                        ui.add(
                            egui::DragValue::new(&mut self.blackhole_secs)
                                .range(1..=120)
                                .suffix(" s"),
                        );
                        ui.label("on:");
                    });
                    if self.peers.is_empty() {
                        ui.weak("(nobody else is here)");
                    }
                    for (id, p) in &self.peers {
                        if ui
                            .button(format!("{} ", p.name))
                            .on_hover_text(
                                "Drops every packet to and from this peer; its tile should show \
                                 the reconnecting spinner, then recover",
                            )
                            .clicked()
                        {
                            actions.push(CallAction::Send(Command::Simulate(
                                Simulation::BlackholeMedia {
                                    peer: id.clone(),
                                    duration: Duration::from_secs(u64::from(self.blackhole_secs)),
                                },
                            )));
                            ui.close();
                        }
                    }
                });
            });
        });
    }

    fn controls(&mut self, ui: &mut Ui, actions: &mut Vec<CallAction>) {
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            let mic = if self.local.mic_muted {
                "Unmute (M)"
            } else {
                "Mute (M)"
            };
            if ui
                .add(egui::Button::new(mic).selected(self.local.mic_muted))
                .clicked()
            {
                actions.extend(self.shortcut(Shortcut::ToggleMic));
            }
            let cam = if self.local.camera_off {
                "Start video (V)"
            } else {
                "Stop video (V)"
            };
            if ui
                .add(egui::Button::new(cam).selected(self.local.camera_off))
                .clicked()
            {
                actions.extend(self.shortcut(Shortcut::ToggleCamera));
            }
            if self.local.sharing {
                if ui
                    .add(egui::Button::new("Stop sharing (S)").selected(true))
                    .clicked()
                {
                    actions.extend(self.shortcut(Shortcut::ToggleScreenShare));
                }
            } else {
                let open = self.share_picker_open;
                if ui
                    .add(egui::Button::new("Share screen (S)").selected(open))
                    .clicked()
                {
                    self.share_picker_open = !open;
                }
            }
            let chat = if self.unread > 0 {
                format!("Chat ({})", self.unread)
            } else {
                "Chat".to_string()
            };
            if ui
                .add(egui::Button::new(chat).selected(self.show_chat))
                .clicked()
            {
                self.show_chat = !self.show_chat;
                self.unread = 0;
            }
            if ui
                .add(egui::Button::new("Stats (I)").selected(self.show_stats))
                .clicked()
            {
                self.show_stats = !self.show_stats;
            }
            if ui.button("Settings").clicked() {
                actions.push(CallAction::Settings);
            }
            if ui
                .button("Invite a test participant")
                .on_hover_text(
                    "Adds a synthetic participant (moving pattern and tone) to this room",
                )
                .clicked()
            {
                actions.push(CallAction::Send(Command::InviteTestParticipant));
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                let leave =
                    egui::Button::new(RichText::new("Leave (Ctrl+W)").color(Color32::WHITE))
                        .fill(Color32::from_rgb(190, 40, 40));
                if ui.add(leave).clicked() {
                    actions.push(CallAction::Leave);
                }
            });
        });
        ui.add_space(4.0);
    }

    fn chat_panel(&mut self, ui: &mut Ui, actions: &mut Vec<CallAction>) {
        ui.heading("Chat");
        let input_h = 36.0;
        egui::ScrollArea::vertical()
            .max_height((ui.available_height() - input_h).max(40.0))
            .stick_to_bottom(true)
            .show(ui, |ui| {
                if self.chat.is_empty() {
                    ui.weak("No messages yet.");
                }
                for line in &self.chat {
                    let who = if line.mine { "You" } else { line.name.as_str() };
                    ui.label(RichText::new(who).strong());
                    ui.label(&line.text);
                    ui.add_space(4.0);
                }
            });
        ui.separator();
        ui.horizontal(|ui| {
            let label = ui.label("Message");
            let edit = ui
                .add(
                    egui::TextEdit::singleline(&mut self.chat_input)
                        .hint_text("Say something")
                        .desired_width(ui.available_width() - 60.0),
                )
                .labelled_by(label.id);
            let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
            if (ui.button("Send").clicked() || enter) && !self.chat_input.trim().is_empty() {
                let text: String = self
                    .chat_input
                    .trim()
                    .chars()
                    .take(crate::engine::MAX_CHAT_CHARS)
                    .collect();
                self.chat_input.clear();
                actions.push(CallAction::Send(Command::SendChat(text.clone())));
                self.push_chat(ChatLine {
                    name: self.self_name.clone(),
                    text,
                    mine: true,
                });
                edit.request_focus();
            }
        });
    }

    /// The video area: grid or spotlight, plus the self-view.
    fn stage(&mut self, ui: &mut Ui) {
        let area = ui.available_rect_before_wrap();
        ui.allocate_rect(area, Sense::hover());
        let mut spinning = false;
        let tiles = self.visible_tiles();
        let screen = tiles.iter().position(|t| t.role == StreamRole::Screen);
        let mut placed: Vec<(usize, Rect, bool)> = Vec::new();
        if tiles.is_empty() {
            // Alone: the self-view is the stage, with a hint.
            let r = layout::fit_rect(area.shrink(24.0), layout::TILE_ASPECT);
            let painter = ui.painter_at(area);
            self.draw_self(ui, &painter, r);
            painter.text(
                pos2(r.center().x, r.top() - 4.0),
                Align2::CENTER_BOTTOM,
                "Waiting for others to join… (or invite a test participant)",
                FontId::proportional(15.0),
                Color32::LIGHT_GRAY,
            );
            return;
        }
        // Where the self-view goes: a strip slot beside a screen share, a spare grid cell,
        // or floating in the corner.
        let self_rect;
        match screen {
            Some(s) => {
                let spot = layout::spotlight(tiles.len(), area);
                placed.push((s, spot.main, true));
                let mut strip = spot.strip.into_iter();
                for i in (0..tiles.len()).filter(|i| *i != s) {
                    if let Some(r) = strip.next() {
                        placed.push((i, r, false));
                    }
                }
                self_rect = strip.next().unwrap_or_else(|| layout::self_view_rect(area));
            }
            None => {
                let n = tiles.len();
                let in_grid = layout::self_in_grid(n, area.size());
                let mut rects = layout::grid_rects(n + usize::from(in_grid), area);
                // Floating: in the corner of the tiles themselves, not of the (taller or
                // wider) stage, so it never hangs off a tile's edge.
                let bbox = rects.iter().copied().reduce(Rect::union).unwrap_or(area);
                self_rect = match rects.pop() {
                    Some(r) if in_grid => r,
                    Some(r) => {
                        rects.push(r);
                        layout::self_view_rect(bbox)
                    }
                    None => layout::self_view_rect(area),
                };
                placed.extend(rects.into_iter().enumerate().map(|(i, r)| (i, r, false)));
            }
        }
        let painter = ui.painter_at(area);
        let mut volume_changes = Vec::new();
        for (i, rect, big) in placed {
            let t = tiles[i];
            spinning |= self.draw_tile(ui, &painter, t, rect, big, &mut volume_changes);
        }
        self.draw_self(ui, &painter, self_rect);
        self.volume_changes.extend(volume_changes);
        if spinning {
            // ~20 fps for the spinner only while something is connecting; idle calls do not
            // repaint at all between frames and events.
            ui.ctx().request_repaint_after(Duration::from_millis(50));
        }
    }

    fn draw_self(&self, ui: &Ui, painter: &egui::Painter, rect: Rect) {
        painter.rect_filled(rect, CornerRadius::same(8), Color32::from_gray(40));
        let frame = (!self.local.camera_off)
            .then(|| self.local_preview.as_ref().and_then(|v| v.0.latest()))
            .flatten();
        match frame {
            Some(f) => {
                // No polling: the engine pokes the UI for every captured picture too.
                let aspect = f.frame.width as f32 / f.frame.height.max(1) as f32;
                video::paint_video(
                    painter,
                    layout::fit_rect(rect, aspect),
                    &self.local_token,
                    f,
                );
            }
            None => {
                avatar(painter, rect, &self.self_name, self.local_level);
            }
        }
        let tag = format!("{} (you)", self.self_name);
        name_tag(painter, rect, &tag, false, self.local.mic_muted);
        painter.rect_stroke(
            rect,
            CornerRadius::same(8),
            Stroke::new(1.0, Color32::from_gray(90)),
            StrokeKind::Inside,
        );
        let r = ui.interact(rect, egui::Id::unique("meshcall_self_view"), Sense::hover());
        let label = format!("{} (you)", self.self_name);
        r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Group, true, &label));
    }

    /// Draws one tile; returns whether it shows a spinner.
    fn draw_tile(
        &self,
        ui: &Ui,
        painter: &egui::Painter,
        t: &Tile,
        rect: Rect,
        big: bool,
        volume_changes: &mut Vec<(String, f32)>,
    ) -> bool {
        let peer = self.peer(&t.peer);
        let name = self.tile_name(t);
        painter.rect_filled(rect, CornerRadius::same(8), Color32::from_gray(34));
        let camera_off = peer.is_some_and(|p| p.camera_off) && t.role == StreamRole::Camera;
        let frame = (!camera_off)
            .then(|| t.video.as_ref().and_then(|v| v.0.latest()))
            .flatten();
        match frame {
            Some(f) => {
                let aspect = f.frame.width as f32 / f.frame.height.max(1) as f32;
                video::paint_video(painter, layout::fit_rect(rect, aspect), &t.token, f);
            }
            None => avatar(painter, rect, &name, peer.map_or(0.0, |p| p.level)),
        }
        // Badges along the top.
        let mut x = rect.left() + 8.0;
        if t.role == StreamRole::Screen {
            x = badge(
                painter,
                pos2(x, rect.top() + 8.0),
                "Screen",
                Color32::from_rgb(40, 90, 200),
            ) + 6.0;
        }
        if camera_off {
            x = badge(
                painter,
                pos2(x, rect.top() + 8.0),
                "Camera off",
                Color32::from_gray(70),
            ) + 6.0;
        }
        // A receive pipeline that failed (a bug) says so rather than freezing silently.
        let video_failed = t
            .video
            .as_ref()
            .is_some_and(|v| v.0.stats().failed.is_some());
        if video_failed {
            x = badge(
                painter,
                pos2(x, rect.top() + 8.0),
                "Video stopped (error)",
                Color32::from_rgb(170, 50, 40),
            ) + 6.0;
        }
        let quality = t
            .stream_id
            .as_deref()
            .and_then(|s| self.quality_of(&t.peer, s));
        if quality == Some(Quality::Poor) && !self.show_stats {
            badge(
                painter,
                pos2(x, rect.top() + 8.0),
                "Poor connection",
                Color32::from_rgb(170, 50, 40),
            );
        }
        name_tag(painter, rect, &name, big, peer.is_some_and(|p| p.mic_muted));
        if self.show_stats
            && let Some(s) = t.stream_id.as_deref()
        {
            self.stats_overlay(painter, rect, &t.peer, s, quality);
        }
        // Active speaker: a green border.
        let speaking = self.active_speaker() == Some(t.peer.as_str());
        let border = if speaking {
            Stroke::new(3.0, Color32::from_rgb(60, 200, 110))
        } else {
            Stroke::new(1.0, Color32::from_gray(60))
        };
        painter.rect_stroke(rect, CornerRadius::same(8), border, StrokeKind::Inside);
        let busy = peer.is_some_and(PeerInfo::busy);
        if busy {
            painter.rect_filled(rect, CornerRadius::same(8), Color32::from_black_alpha(140));
            let what = match peer.map(|p| p.connection) {
                Some(PeerConnectionState::Reconnecting) => "Reconnecting…",
                _ => "Connecting…",
            };
            spinner(painter, rect.center(), 18.0, self.now);
            painter.text(
                rect.center() + vec2(0.0, 32.0),
                Align2::CENTER_TOP,
                what,
                FontId::proportional(14.0),
                Color32::WHITE,
            );
        }
        // An accessible description of the tile (screen readers and the UI tests).
        let mut label = name;
        if t.role == StreamRole::Screen {
            label.push_str(", screen");
        }
        if peer.is_some_and(|p| p.mic_muted) {
            label.push_str(", muted");
        }
        if camera_off {
            label.push_str(", camera off");
        }
        if video_failed {
            label.push_str(", video stopped");
        }
        if busy {
            label.push_str(", connecting");
        }
        if speaking {
            label.push_str(", speaking");
        }
        let id = egui::Id::unique((
            "meshcall_tile",
            &t.peer,
            t.stream_id.as_deref().unwrap_or(""),
        ));
        let r = ui.interact(rect, id, Sense::click());
        r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Group, true, &label));
        // Right-click: this participant's volume (applied in the mixer, for this session).
        r.context_menu(|ui| {
            let mut percent = self.volumes.get(&t.peer).copied().unwrap_or(1.0) * 100.0;
            let slider = egui::Slider::new(&mut percent, 0.0..=200.0)
                .suffix(" %")
                .step_by(5.0)
                .text("Volume");
            if ui.add(slider).changed() {
                volume_changes.push((t.peer.clone(), percent / 100.0));
            }
        });
        busy
    }

    fn stats_overlay(
        &self,
        painter: &egui::Painter,
        rect: Rect,
        peer: &str,
        stream: &str,
        quality: Option<Quality>,
    ) {
        let Some(s) = self.stats.get(&(peer.to_string(), stream.to_string())) else {
            return;
        };
        let rtt = self
            .send_rtt_ms
            .map_or_else(|| "–".to_string(), |r| format!("{r:.0} ms"));
        let text = format!(
            "{}×{}  {:.0} fps\n{}\nRTT {}  loss {:.1} %\njitter {:.0} ms",
            s.now.width,
            s.now.height,
            s.now.fps,
            layout::format_bitrate(s.now.bitrate_bps),
            rtt,
            s.loss * 100.0,
            s.now.jitter_ms
        );
        let font = FontId::monospace(11.0);
        let galley = painter.layout_no_wrap(text, font, Color32::WHITE);
        let pos = pos2(rect.right() - galley.size().x - 14.0, rect.top() + 8.0);
        let bg = Rect::from_min_size(pos - vec2(6.0, 4.0), galley.size() + vec2(12.0, 26.0));
        painter.rect_filled(bg, CornerRadius::same(6), Color32::from_black_alpha(170));
        painter.galley(pos, galley, Color32::WHITE);
        if let Some(q) = quality {
            let colour = match q {
                Quality::Good => Color32::from_rgb(50, 150, 80),
                Quality::Fair => Color32::from_rgb(180, 130, 20),
                Quality::Poor => Color32::from_rgb(170, 50, 40),
            };
            badge(
                painter,
                pos2(bg.left() + 6.0, bg.bottom() - 20.0),
                q.label(),
                colour,
            );
        }
    }
}

/// The display name in a stream's own metadata, if it carries one.
fn stream_name(m: Option<&Value>) -> Option<String> {
    let has = |k: &str| {
        m.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.trim().is_empty())
    };
    (has("username") || has("name")).then(|| display_name(m))
}

/// Loss over the interval between two cumulative snapshots.
fn interval_loss(prev: &ReceiveStats, now: &ReceiveStats) -> f64 {
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
fn next_speaker(
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

fn banner(ui: &mut Ui, elapsed: Duration, actions: &mut Vec<CallAction>) {
    ui.horizontal(|ui| {
        ui.label(RichText::new(layout::banner_text(elapsed)).color(Color32::WHITE));
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if layout::offer_rejoin(elapsed) && ui.button("Leave and rejoin").clicked() {
                actions.push(CallAction::Rejoin);
            }
            if ui
                .button("Retry now")
                .on_hover_text("Try the server again now instead of waiting for the next attempt")
                .clicked()
            {
                actions.push(CallAction::Send(Command::RetryNow));
            }
        });
    });
}

/// A circle with initials, ringed by the audio level.
fn avatar(painter: &egui::Painter, rect: Rect, name: &str, level: f32) {
    let r = (rect.height().min(rect.width()) * 0.18).clamp(14.0, 64.0);
    let c = rect.center();
    let level = level.clamp(0.0, 1.0);
    if level >= SPEAKING_LEVEL {
        // Ring width follows loudness (RMS ×4, so normal speech fills most of it).
        let w = 2.0 + (level * 4.0).min(1.0) * r * 0.35;
        painter.circle_stroke(
            c,
            r + 4.0 + w / 2.0,
            Stroke::new(w, Color32::from_rgb(60, 200, 110)),
        );
    }
    painter.circle_filled(c, r, avatar_colour(name));
    painter.text(
        c,
        Align2::CENTER_CENTER,
        layout::initials(name),
        FontId::proportional(r * 0.8),
        Color32::WHITE,
    );
}

/// A stable colour per name, so people keep "their" colour across calls.
fn avatar_colour(name: &str) -> Color32 {
    let h = name.bytes().fold(2166136261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    });
    let palette = [
        Color32::from_rgb(92, 107, 192),
        Color32::from_rgb(0, 137, 123),
        Color32::from_rgb(194, 24, 91),
        Color32::from_rgb(245, 124, 0),
        Color32::from_rgb(123, 31, 162),
        Color32::from_rgb(56, 142, 60),
    ];
    palette[(h as usize) % palette.len()]
}

/// The name pill in a tile's bottom-left corner, with a red "muted" pill after it when the
/// person's microphone is off (text rather than an emoji: egui's default fonts carry none).
fn name_tag(painter: &egui::Painter, rect: Rect, text: &str, big: bool, muted: bool) {
    let font = FontId::proportional(if big { 15.0 } else { 13.0 });
    let galley = painter.layout_no_wrap(text.to_string(), font, Color32::WHITE);
    let pad = vec2(8.0, 4.0);
    let max_w = (rect.width() - if muted { 76.0 } else { 16.0 }).max(20.0);
    let size = vec2(
        (galley.size().x + pad.x * 2.0).min(max_w),
        galley.size().y + pad.y * 2.0,
    );
    let bg = Rect::from_min_size(pos2(rect.left() + 8.0, rect.bottom() - 8.0 - size.y), size);
    painter.rect_filled(bg, CornerRadius::same(6), Color32::from_black_alpha(160));
    painter
        .with_clip_rect(bg.intersect(painter.clip_rect()))
        .galley(bg.min + pad, galley, Color32::WHITE);
    if muted {
        let g = painter.layout_no_wrap(
            "muted".to_string(),
            FontId::proportional(12.0),
            Color32::WHITE,
        );
        let r = Rect::from_min_size(
            pos2(bg.right() + 4.0, bg.center().y - (g.size().y + 6.0) / 2.0),
            g.size() + vec2(12.0, 6.0),
        );
        painter.rect_filled(r, CornerRadius::same(6), Color32::from_rgb(190, 40, 40));
        painter.galley(r.min + vec2(6.0, 3.0), g, Color32::WHITE);
    }
}

/// A coloured pill; returns its right edge.
fn badge(painter: &egui::Painter, at: Pos2, text: &str, fill: Color32) -> f32 {
    let galley =
        painter.layout_no_wrap(text.to_string(), FontId::proportional(12.0), Color32::WHITE);
    let rect = Rect::from_min_size(at, galley.size() + vec2(12.0, 6.0));
    painter.rect_filled(rect, CornerRadius::same(5), fill);
    painter.galley(at + vec2(6.0, 3.0), galley, Color32::WHITE);
    rect.right()
}

/// A spinner drawn from the UI clock. Unlike `egui::Spinner` it does not ask for a repaint
/// itself: the caller asks for ~20 fps only while something is connecting.
fn spinner(painter: &egui::Painter, c: Pos2, r: f32, time: f64) {
    let start = (time * 4.0) as f32;
    let points: Vec<Pos2> = (0..=24)
        .map(|i| {
            let a = start + i as f32 / 24.0 * std::f32::consts::TAU * 0.7;
            c + Vec2::angled(a) * r
        })
        .collect();
    painter.line(points, Stroke::new(3.0, Color32::WHITE));
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
