//! The join screen: where to connect, as whom, and with which sources. [`JoinForm`] is what the
//! app remembers between runs (eframe persistence); [`JoinForm::to_request`] validates it before
//! anything is sent, so a typo in the URL is explained here instead of failing inside the SDK.

use eframe::egui::{self, Color32, RichText, Ui};
use serde::{Deserialize, Serialize};

use super::devices::DeviceLists;
use crate::engine::api::{AudioChoice, Auth, ErrorKind, JoinRequest, SpeakerChoice, VideoChoice};
use crate::engine::api::{ProcessingSettings, SinkChoice, SourceChoice};

/// How the user authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AuthMode {
    /// The embedded server on this machine (no account needed).
    #[default]
    ThisComputer,
    Token,
    PublishableKey,
}

/// Which picture to send, as stored (a device id stays a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum VideoSource {
    #[default]
    TestPattern,
    Camera,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AudioSource {
    #[default]
    TestTone,
    Microphone,
    None,
}

/// Where remote audio plays, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SpeakerOut {
    /// The system's default output.
    #[default]
    System,
    /// `speaker_id`.
    Device,
    /// Discard (no sound).
    Off,
}

/// Which device picker the user just changed (in a call it applies at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChange {
    Camera,
    Microphone,
    Speaker,
    /// Echo cancellation / noise suppression / gain toggled.
    AudioProcessing,
    /// Join and leave sounds toggled.
    Sounds,
}

/// Send sizes offered in settings (all 16:9 or 4:3, even, within the encoder's range).
pub const RESOLUTIONS: [(usize, usize); 4] = [(640, 360), (640, 480), (1280, 720), (1920, 1080)];

/// Everything the join screen holds; persisted except the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JoinForm {
    pub server: String,
    pub room: String,
    pub name: String,
    pub mode: AuthMode,
    /// A JWT is a credential that expires: it is not written to disk (see `save`).
    #[serde(skip)]
    pub token: String,
    /// Publishable keys are public by design (they ship in web pages), so they are remembered.
    pub key: String,
    pub video: VideoSource,
    pub camera_id: String,
    pub audio: AudioSource,
    /// The microphone's id; empty = the system default.
    pub mic_id: String,
    pub speaker: SpeakerOut,
    pub speaker_id: String,
    /// Processing of a real microphone (all on by default, as in a browser). The test tone is
    /// always sent unprocessed.
    pub audio_processing: ProcessingSettings,
    /// A short sound when somebody joins or leaves.
    pub sounds: bool,
    pub width: usize,
    pub height: usize,
    pub fps: f32,
    /// A `--secret KID=SECRET` from the command line (never shown, never saved).
    #[serde(skip)]
    pub secret: Option<(String, String)>,
    /// `--loopback-only` from the command line (not remembered).
    #[serde(skip)]
    pub loopback_only: bool,
    /// Camera and microphone were chosen (by the first device scan or by the user); a new
    /// user's form waits for the scan to pick the system's devices.
    pub devices_chosen: bool,
    /// What the first scan decided, shown under the pickers ("No camera found: …").
    #[serde(skip)]
    pub device_note: Option<String>,
}

impl Default for JoinForm {
    fn default() -> Self {
        JoinForm {
            server: "ws://127.0.0.1:9292".to_string(),
            room: "lobby".to_string(),
            name: String::new(),
            mode: AuthMode::ThisComputer,
            token: String::new(),
            key: String::new(),
            video: VideoSource::TestPattern,
            camera_id: "0".to_string(),
            audio: AudioSource::TestTone,
            mic_id: String::new(),
            speaker: SpeakerOut::System,
            speaker_id: String::new(),
            audio_processing: ProcessingSettings::ON,
            sounds: true,
            width: 1280,
            height: 720,
            fps: 30.0,
            secret: None,
            loopback_only: false,
            // The defaults keep the synthetic sources; a new user's form (see
            // `MeshcallApp::load_form`) clears this so the first scan picks real devices.
            devices_chosen: true,
            device_note: None,
        }
    }
}

/// Why the form cannot be sent yet; shown under the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    Server(String),
    Room(String),
    Name(String),
    Credential(String),
}

impl FormError {
    pub fn message(&self) -> &str {
        match self {
            FormError::Server(m)
            | FormError::Room(m)
            | FormError::Name(m)
            | FormError::Credential(m) => m,
        }
    }
}

/// Checks a signalling URL: `ws://` or `wss://`, a host, no spaces. Returns the URL trimmed
/// (and without a trailing slash, which the SDK would otherwise double before `/v1`).
pub fn validate_server_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("Enter the server address, e.g. ws://127.0.0.1:9292".into());
    }
    let rest = if let Some(r) = s.strip_prefix("ws://") {
        r
    } else if let Some(r) = s.strip_prefix("wss://") {
        r
    } else if let Some(r) = s.strip_prefix("https://") {
        return Err(format!("Use wss://{r} (signalling is a WebSocket)"));
    } else if let Some(r) = s.strip_prefix("http://") {
        return Err(format!("Use ws://{r} (signalling is a WebSocket)"));
    } else {
        return Err(format!(
            "The address must start with ws:// or wss://, e.g. ws://{s}"
        ));
    };
    if s.chars().any(char::is_whitespace) {
        return Err("The address cannot contain spaces".into());
    }
    let host_port = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match host_port.rsplit_once(':') {
        // An IPv6 literal keeps its colons inside brackets.
        Some((h, port)) if !host_port.ends_with(']') => {
            if port.parse::<u16>().is_err() {
                return Err(format!("{port:?} is not a port number (1–65535)"));
            }
            h
        }
        _ => host_port,
    };
    if host.is_empty() {
        return Err("The address has no host name".into());
    }
    Ok(s.trim_end_matches('/').to_string())
}

impl JoinForm {
    /// The engine request for this form, or the first problem with it.
    pub fn to_request(&self) -> Result<JoinRequest, FormError> {
        let room = self.room.trim();
        if room.is_empty() {
            return Err(FormError::Room("Enter a room name".into()));
        }
        if room.len() > 128 {
            return Err(FormError::Room(
                "The room name is too long (128 at most)".into(),
            ));
        }
        let name = self.name.trim();
        if name.is_empty() {
            return Err(FormError::Name(
                "Enter your name so others know who you are".into(),
            ));
        }
        let (server, auth) = match self.mode {
            AuthMode::ThisComputer => (String::new(), Auth::ThisComputer),
            // A `--secret` from the command line: mint locally for the given server.
            _ if self.secret.is_some() => {
                let server = validate_server_url(&self.server).map_err(FormError::Server)?;
                let (kid, secret) = self.secret.clone().unwrap_or_default();
                (server, Auth::Secret { kid, secret })
            }
            AuthMode::Token => {
                let server = validate_server_url(&self.server).map_err(FormError::Server)?;
                let t = self.token.trim();
                if t.is_empty() {
                    return Err(FormError::Credential("Paste a token".into()));
                }
                if t.split('.').count() != 3 {
                    return Err(FormError::Credential(
                        "That does not look like a token (a JWT has three parts separated by dots)"
                            .into(),
                    ));
                }
                (server, Auth::Token(t.to_string()))
            }
            AuthMode::PublishableKey => {
                let server = validate_server_url(&self.server).map_err(FormError::Server)?;
                let k = self.key.trim();
                if k.is_empty() {
                    return Err(FormError::Credential("Paste a publishable key".into()));
                }
                (server, Auth::Key(k.to_string()))
            }
        };
        let mut req = JoinRequest::new(&server, room, name, auth);
        req.video = self.video_choice();
        req.audio = self.audio_choice();
        req.speaker = self.speaker_choice();
        req.audio_processing = Some(self.processing_for_source());
        req.sounds = self.sounds;
        if (16..=3840).contains(&self.width)
            && (16..=2160).contains(&self.height)
            && self.width.is_multiple_of(2)
            && self.height.is_multiple_of(2)
        {
            req.width = self.width;
            req.height = self.height;
        }
        if self.fps.is_finite() && (1.0..=60.0).contains(&self.fps) {
            req.fps = self.fps;
        }
        req.loopback_only = self.loopback_only;
        Ok(req)
    }

    /// The join screen. Returns a request when the user pressed Join and the form is valid;
    /// `error` is the last problem (from validation or from the engine) shown above the button.
    pub fn ui(
        &mut self,
        ui: &mut Ui,
        error: &mut Option<String>,
        busy: bool,
    ) -> Option<JoinRequest> {
        let mut submit = false;
        ui.vertical_centered(|ui| {
            ui.add_space(32.0);
            ui.heading(RichText::new("meshcall").size(28.0));
            ui.label("Join a video call");
            ui.add_space(16.0);
        });
        let width = 420.0f32.min(ui.available_width() - 32.0);
        let margin = ((ui.available_width() - width) / 2.0).max(0.0);
        ui.horizontal(|ui| {
            ui.add_space(margin);
            ui.vertical(|ui| {
                ui.set_width(width);
                egui::Grid::new("join_form")
                    .num_columns(2)
                    .spacing([12.0, 10.0])
                    .show(ui, |ui| {
                        let l = ui.label("Your name");
                        let r = ui
                            .add(
                                egui::TextEdit::singleline(&mut self.name)
                                    .hint_text("e.g. Ada")
                                    .desired_width(280.0),
                            )
                            .labelled_by(l.id);
                        submit |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                        ui.end_row();

                        let l = ui.label("Room");
                        let r = ui
                            .add(egui::TextEdit::singleline(&mut self.room).desired_width(280.0))
                            .labelled_by(l.id);
                        submit |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                        ui.end_row();

                        ui.label("Connect with");
                        ui.horizontal(|ui| {
                            ui.selectable_value(&mut self.mode, AuthMode::ThisComputer, "This computer");
                            ui.selectable_value(&mut self.mode, AuthMode::Token, "Token");
                            ui.selectable_value(&mut self.mode, AuthMode::PublishableKey, "Publishable key");
                        });
                        ui.end_row();

                        if self.mode == AuthMode::ThisComputer {
                            ui.label("");
                            ui.weak("Uses the server built into meshcall on this machine\n(started if it is not running). Others on this machine can join.");
                            ui.end_row();
                        } else {
                            let l = ui.label("Server");
                            ui.add(egui::TextEdit::singleline(&mut self.server).desired_width(280.0))
                                .labelled_by(l.id);
                            ui.end_row();
                            if self.mode == AuthMode::Token {
                                let l = ui.label("Access token");
                                ui.add(
                                    egui::TextEdit::singleline(&mut self.token)
                                        .password(true)
                                        .hint_text("eyJ…")
                                        .desired_width(280.0),
                                )
                                .labelled_by(l.id);
                            } else {
                                let l = ui.label("Key");
                                ui.add(
                                    egui::TextEdit::singleline(&mut self.key)
                                        .hint_text("pk_…")
                                        .desired_width(280.0),
                                )
                                .labelled_by(l.id);
                            }
                            ui.end_row();
                        }

                        let l = ui.label("Camera");
                        egui::ComboBox::from_id_salt("join_video")
                            .selected_text(video_label(self.video))
                            .show_ui(ui, |ui| {
                                for v in [VideoSource::TestPattern, VideoSource::Camera, VideoSource::None] {
                                    ui.selectable_value(&mut self.video, v, video_label(v));
                                }
                            })
.response
.labelled_by(l.id);
                        ui.end_row();

                        let l = ui.label("Microphone");
                        egui::ComboBox::from_id_salt("join_audio")
                            .selected_text(audio_label(self.audio))
                            .show_ui(ui, |ui| {
                                for a in [AudioSource::TestTone, AudioSource::Microphone, AudioSource::None] {
                                    ui.selectable_value(&mut self.audio, a, audio_label(a));
                                }
                            })
.response
.labelled_by(l.id);
                        ui.end_row();
                    });
                if !self.devices_chosen {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.weak("Looking for a camera and a microphone…");
                    });
                } else if let Some(note) = &self.device_note {
                    ui.weak(note.as_str());
                }
                ui.add_space(12.0);
                if let Some(e) = error.as_deref() {
                    ui.colored_label(Color32::from_rgb(255, 120, 110), e);
                    ui.add_space(8.0);
                }
                let join = ui.add_enabled(
                    !busy,
                    egui::Button::new(RichText::new(if busy { "Joining…" } else { "Join" }).size(16.0))
                        .min_size(egui::vec2(width, 32.0)),
                );
                submit |= join.clicked();
            });
        });
        if submit && !busy {
            match self.to_request() {
                Ok(req) => {
                    *error = None;
                    return Some(req);
                }
                Err(e) => *error = Some(e.message().to_string()),
            }
        }
        None
    }

    /// A new user's defaults from the first device scan: the system's first camera and the
    /// default microphone when there are any, else the test pattern and tone, saying so.
    pub fn choose_default_devices(&mut self, lists: &DeviceLists) {
        if self.devices_chosen {
            return;
        }
        self.devices_chosen = true;
        let mut notes = Vec::new();
        match lists.cameras.iter().find_map(|c| match c {
            SourceChoice::Camera(d) => Some(d),
            _ => None,
        }) {
            Some(cam) => {
                self.video = VideoSource::Camera;
                self.camera_id = cam.id.clone();
            }
            None => {
                self.video = VideoSource::TestPattern;
                notes.push("No camera found: sending a test pattern.");
            }
        }
        if lists
            .microphones
            .iter()
            .any(|m| matches!(m, SourceChoice::Microphone(_)))
        {
            self.audio = AudioSource::Microphone;
            self.mic_id.clear(); // the system default
        } else {
            self.audio = AudioSource::TestTone;
            notes.push("No microphone found: sending a test tone.");
        }
        self.device_note = (!notes.is_empty()).then(|| notes.join(" "));
    }

    /// The settings that apply to the next join (sources, send size and rate).
    pub fn video_choice(&self) -> VideoChoice {
        match self.video {
            VideoSource::TestPattern => VideoChoice::Synthetic,
            VideoSource::Camera => VideoChoice::Camera(self.camera_id.clone()),
            VideoSource::None => VideoChoice::None,
        }
    }

    pub fn audio_choice(&self) -> AudioChoice {
        match self.audio {
            AudioSource::TestTone => AudioChoice::Synthetic,
            AudioSource::Microphone if self.mic_id.trim().is_empty() => {
                AudioChoice::Microphone(None)
            }
            AudioSource::Microphone => AudioChoice::Microphone(Some(self.mic_id.clone())),
            AudioSource::None => AudioChoice::None,
        }
    }

    pub fn speaker_choice(&self) -> SpeakerChoice {
        match self.speaker {
            SpeakerOut::System => SpeakerChoice::Speaker(None),
            SpeakerOut::Device => SpeakerChoice::Speaker(Some(self.speaker_id.clone())),
            SpeakerOut::Off => SpeakerChoice::None,
        }
    }

    /// The sources and the output. `lists` are the machine's devices (None while the first scan
    /// runs: the pickers then offer what is remembered). Returns which device the user changed.
    /// The processing for the chosen source: the user's choice for a microphone, off for the
    /// test tone (its measurements must stay comparable).
    pub fn processing_for_source(&self) -> ProcessingSettings {
        match self.audio {
            AudioSource::Microphone => self.audio_processing,
            _ => ProcessingSettings::OFF,
        }
    }

    pub fn settings_ui(
        &mut self,
        ui: &mut Ui,
        lists: Option<&DeviceLists>,
    ) -> Option<DeviceChange> {
        let mut changed = None;
        egui::Grid::new("settings")
            .num_columns(2)
            .spacing([12.0, 8.0])
            .show(ui, |ui| {
                // Camera: the devices found, the test pattern, or nothing.
                let mut cams: Vec<Entry<VideoSource>> = match lists {
                    Some(l) => l
                        .cameras
                        .iter()
                        .map(|c| match c {
                            SourceChoice::Camera(d) | SourceChoice::Screen(d) => {
                                entry(VideoSource::Camera, &d.id, &d.name)
                            }
                            other => entry(VideoSource::TestPattern, "", other.label()),
                        })
                        .collect(),
                    None => vec![entry(
                        VideoSource::TestPattern,
                        "",
                        video_label(VideoSource::TestPattern),
                    )],
                };
                cams.push(entry(VideoSource::None, "", video_label(VideoSource::None)));
                let picker = DevicePicker {
                    salt: "set_video",
                    label: "Camera",
                    device: VideoSource::Camera,
                    unlisted_at: 0,
                };
                if picker.show(ui, cams, &mut self.video, &mut self.camera_id) {
                    changed = Some(DeviceChange::Camera);
                }
                ui.end_row();

                // Microphone: the system default, the devices found, the test tone, or nothing.
                let mut mics = vec![entry(AudioSource::Microphone, "", "Default microphone")];
                match lists {
                    Some(l) => mics.extend(l.microphones.iter().map(|m| match m {
                        SourceChoice::Microphone(d) => {
                            entry(AudioSource::Microphone, &d.id, &d.name)
                        }
                        other => entry(AudioSource::TestTone, "", other.label()),
                    })),
                    None => mics.push(entry(
                        AudioSource::TestTone,
                        "",
                        audio_label(AudioSource::TestTone),
                    )),
                }
                mics.push(entry(AudioSource::None, "", audio_label(AudioSource::None)));
                let picker = DevicePicker {
                    salt: "set_audio",
                    label: "Microphone",
                    device: AudioSource::Microphone,
                    unlisted_at: 1,
                };
                if picker.show(ui, mics, &mut self.audio, &mut self.mic_id) {
                    changed = Some(DeviceChange::Microphone);
                }
                ui.end_row();

                // Speaker: the system default, the devices found, or no sound.
                let mut outs = vec![entry(SpeakerOut::System, "", "System default")];
                if let Some(l) = lists {
                    outs.extend(l.speakers.iter().map(|s| match s {
                        SinkChoice::Speaker(d) => entry(SpeakerOut::Device, &d.id, &d.name),
                        SinkChoice::Discard { label } => entry(SpeakerOut::Off, "", label),
                    }));
                }
                if !outs.iter().any(|e| e.kind == SpeakerOut::Off) {
                    outs.push(entry(SpeakerOut::Off, "", "No sound"));
                }
                let picker = DevicePicker {
                    salt: "set_speaker",
                    label: "Speaker",
                    device: SpeakerOut::Device,
                    unlisted_at: 1,
                };
                if picker.show(ui, outs, &mut self.speaker, &mut self.speaker_id) {
                    changed = Some(DeviceChange::Speaker);
                }
                ui.end_row();

                // Microphone processing, switchable during a call.
                ui.label("Microphone processing");
                ui.vertical(|ui| {
                    let p = &mut self.audio_processing;
                    let mut toggled = ui
                        .checkbox(&mut p.echo_cancellation, "Echo cancellation")
                        .changed();
                    toggled |= ui
                        .checkbox(&mut p.noise_suppression, "Noise suppression")
                        .changed();
                    toggled |= ui.checkbox(&mut p.auto_gain, "Automatic gain").changed();
                    if toggled {
                        changed = Some(DeviceChange::AudioProcessing);
                    }
                });
                ui.end_row();
                ui.label("Sounds");
                if ui
                    .checkbox(
                        &mut self.sounds,
                        "Play a sound when someone joins or leaves",
                    )
                    .changed()
                {
                    changed = Some(DeviceChange::Sounds);
                }
                ui.end_row();
                let l = ui.label("Resolution");
                egui::ComboBox::from_id_salt("set_res")
                    .selected_text(format!("{}×{}", self.width, self.height))
                    .show_ui(ui, |ui| {
                        for (w, h) in RESOLUTIONS {
                            if ui
                                .selectable_label(
                                    (self.width, self.height) == (w, h),
                                    format!("{w}×{h}"),
                                )
                                .clicked()
                            {
                                self.width = w;
                                self.height = h;
                            }
                        }
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("Frame rate");
                egui::ComboBox::from_id_salt("set_fps")
                    .selected_text(format!("{} fps", self.fps))
                    .show_ui(ui, |ui| {
                        for f in [15.0, 24.0, 30.0] {
                            ui.selectable_value(&mut self.fps, f, format!("{f} fps"));
                        }
                    })
                    .response
                    .labelled_by(l.id);
                ui.end_row();
            });
        changed
    }
}

/// One line of a device picker: what kind of choice, the device id (device kinds only), and
/// what the user reads.
struct Entry<K> {
    kind: K,
    id: String,
    label: String,
}

fn entry<K>(kind: K, id: &str, label: &str) -> Entry<K> {
    Entry {
        kind,
        id: id.to_string(),
        label: label.to_string(),
    }
}

/// A labelled combo box over [`Entry`]s, where entries of kind `device` are told apart by id.
struct DevicePicker<K> {
    salt: &'static str,
    label: &'static str,
    device: K,
    /// Where a remembered device the scan did not list (unplugged, or no scan yet) is shown.
    unlisted_at: usize,
}

impl<K: Copy + PartialEq> DevicePicker<K> {
    /// Draws the picker; updates `kind`/`id` and returns true when the user picks another entry.
    fn show(&self, ui: &mut Ui, mut entries: Vec<Entry<K>>, kind: &mut K, id: &mut String) -> bool {
        let is_current = |e: &Entry<K>, kind: K, id: &str| {
            e.kind == kind && (e.kind != self.device || e.id == id)
        };
        if *kind == self.device && !entries.iter().any(|e| is_current(e, *kind, id)) {
            let at = self.unlisted_at.min(entries.len());
            entries.insert(at, entry(self.device, id, &format!("{} {id}", self.label)));
        }
        let current = entries
            .iter()
            .find(|e| is_current(e, *kind, id))
            .map_or_else(String::new, |e| e.label.clone());
        let mut changed = false;
        let l = ui.label(self.label);
        egui::ComboBox::from_id_salt(self.salt)
            .selected_text(current)
            .width(260.0)
            .show_ui(ui, |ui| {
                for e in &entries {
                    let on = is_current(e, *kind, id);
                    if ui.selectable_label(on, &e.label).clicked() && !on {
                        *kind = e.kind;
                        if e.kind == self.device {
                            id.clone_from(&e.id);
                        }
                        changed = true;
                    }
                }
            })
            .response
            .labelled_by(l.id);
        changed
    }
}

fn video_label(v: VideoSource) -> &'static str {
    match v {
        VideoSource::TestPattern => "Test pattern (synthetic)",
        VideoSource::Camera => "Camera",
        VideoSource::None => "No video",
    }
}

fn audio_label(a: AudioSource) -> &'static str {
    match a {
        AudioSource::TestTone => "Test tone (synthetic)",
        AudioSource::Microphone => "Default microphone",
        AudioSource::None => "No audio",
    }
}

/// An engine error in words for the join screen's banner: a refusal explained by its close
/// code, an unreachable server, or the engine's own message.
pub fn explain_error(kind: ErrorKind, close_code: Option<u16>, message: &str) -> String {
    match (kind, close_code) {
        (ErrorKind::JoinFailed, Some(code)) => {
            let why = crate::engine::explain_close_code(code);
            format!("Could not join{why}.")
        }
        (ErrorKind::Unreachable, _) => {
            "Could not reach the server. Check the address and that the server is running."
                .to_string()
        }
        _ => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form() -> JoinForm {
        JoinForm {
            name: "Ada".into(),
            ..JoinForm::default()
        }
    }

    #[test]
    fn urls_are_checked_before_sending() {
        assert_eq!(
            validate_server_url(" ws://h:9292/ "),
            Ok("ws://h:9292".into())
        );
        assert!(validate_server_url("wss://calls.example.org").is_ok());
        assert!(validate_server_url("ws://[::1]:9292").is_ok());
        assert!(
            validate_server_url("http://h:1")
                .unwrap_err()
                .contains("ws://h:1")
        );
        assert!(
            validate_server_url("https://h")
                .unwrap_err()
                .contains("wss://h")
        );
        assert!(validate_server_url("h:9292").unwrap_err().contains("ws://"));
        assert!(validate_server_url("ws://").unwrap_err().contains("host"));
        assert!(
            validate_server_url("ws://h:99999")
                .unwrap_err()
                .contains("port")
        );
        assert!(
            validate_server_url("ws://a b")
                .unwrap_err()
                .contains("spaces")
        );
        assert!(validate_server_url("").is_err());
    }

    #[test]
    fn form_to_request() {
        let r = form().to_request().expect("valid");
        assert_eq!(r.auth, Auth::ThisComputer);
        assert_eq!(r.room, "lobby");
        assert_eq!(r.video, VideoChoice::Synthetic);
        let mut f = form();
        f.mode = AuthMode::Token;
        f.server = "localhost:9292".into();
        assert!(matches!(f.to_request(), Err(FormError::Server(_))));
        f.server = "ws://localhost:9292".into();
        assert!(matches!(f.to_request(), Err(FormError::Credential(_))));
        f.token = "not-a-jwt".into();
        assert!(matches!(f.to_request(), Err(FormError::Credential(_))));
        f.token = "a.b.c".into();
        assert_eq!(
            f.to_request().expect("ok").auth,
            Auth::Token("a.b.c".into())
        );
        let mut f = form();
        f.name = "  ".into();
        assert!(matches!(f.to_request(), Err(FormError::Name(_))));
        let mut f = form();
        f.room = String::new();
        assert!(matches!(f.to_request(), Err(FormError::Room(_))));
    }

    #[test]
    fn token_is_not_persisted() {
        let mut f = form();
        f.token = "a.b.c".into();
        f.key = "pk_1".into();
        let s = serde_json::to_string(&f).expect("ser");
        assert!(!s.contains("a.b.c"));
        let back: JoinForm = serde_json::from_str(&s).expect("de");
        assert_eq!(back.key, "pk_1");
        assert_eq!(back.token, "");
        // Older or partial saved state fills in defaults.
        let partial: JoinForm = serde_json::from_str(r#"{"room":"x"}"#).expect("de");
        assert_eq!(partial.room, "x");
        assert_eq!(partial.server, "ws://127.0.0.1:9292");
    }

    #[test]
    fn join_errors_in_words() {
        let m = explain_error(
            ErrorKind::JoinFailed,
            Some(4001),
            "could not join \"r\": connect failed (close code Some(4001))",
        );
        assert!(m.contains("token was refused"), "{m}");
        let m = explain_error(
            ErrorKind::Unreachable,
            None,
            "could not join \"r\": connect failed (close code None)",
        );
        assert!(m.contains("Could not reach the server"), "{m}");
        assert_eq!(explain_error(ErrorKind::Notice, None, "other"), "other");
        // A call that ended with a code keeps the engine's own words (they already explain it).
        assert_eq!(
            explain_error(
                ErrorKind::CallEnded,
                Some(4020),
                "removed (you were removed)"
            ),
            "removed (you were removed)"
        );
    }
}
