//! The app shell: which screen is up, the engine link, persistence and the settings window.
//!
//! The shell drains *every* pending engine event at the start of each frame (they are cheap to
//! fold) and never blocks: the engine runs on its own tokio runtime and wakes the UI through its
//! `notify` hook. Screens change only on engine facts: a failed join (fatal error, then `Idle`)
//! or the end of a call (`Left`) return to the join screen.

use std::sync::Arc;

use eframe::egui::{self, Ui};

use super::RepaintPacer;
use super::call::{CallAction, CallView};
use super::devices::DeviceScan;
use super::join::{DeviceChange, JoinForm, explain_error};
use crate::engine::api::{CallState, Command, Event, JoinRequest};
use crate::engine::{EngineEvent, EngineHandle};

/// The storage key of the remembered join form.
pub const FORM_KEY: &str = "meshcall.join_form";

/// How long to wait for the engine to confirm a leave before giving up on it (an engine that
/// died must not leave the join button disabled forever).
const LEAVE_TIMEOUT_S: f64 = 5.0;

/// What the UI needs from the engine: send commands, poll events. [`EngineHandle`] is the real
/// one; tests use a fake that records commands.
pub trait EngineLink {
    /// Queues a command; false if the engine is gone or flooded.
    fn send(&self, c: Command) -> bool;
    /// The next UI event without blocking.
    fn try_recv(&self) -> Option<Event>;
}

impl EngineLink for EngineHandle {
    fn send(&self, c: Command) -> bool {
        EngineHandle::send(self, c)
    }

    fn try_recv(&self) -> Option<Event> {
        // Data/DataChannelOpen are the headless peer's; the UI only wants call events.
        loop {
            match EngineHandle::try_recv(self)? {
                EngineEvent::Call(e) => return Some(e),
                EngineEvent::Data { .. } | EngineEvent::DataChannelOpen { .. } => {}
            }
        }
    }
}

enum Screen {
    Join,
    Call(Box<CallView>),
}

/// The desktop app.
pub struct MeshcallApp {
    engine: Box<dyn EngineLink>,
    pub form: JoinForm,
    screen: Screen,
    /// The last problem, shown on the join screen.
    pub error: Option<String>,
    /// A leave was sent; events of that call are ignored until the engine confirms (UI time).
    leaving_since: Option<f64>,
    /// A join to send once the previous call has ended (rejoin).
    queued_join: Option<JoinRequest>,
    last_request: Option<JoinRequest>,
    show_settings: bool,
    /// The machine's cameras, microphones, speakers and screens (scanned off-thread when the
    /// settings open or a call starts).
    pub devices: DeviceScan,
    /// A scan was started for the current opening of the settings.
    scanned_for_settings: bool,
    /// Told about every frame drawn, so video wake-ups are paced (see [`RepaintPacer`]).
    pacer: Option<Arc<RepaintPacer>>,
    now: f64,
    /// Keeps the engine's runtime alive for as long as the app lives (dropped last).
    _runtime: Option<tokio::runtime::Runtime>,
}

impl MeshcallApp {
    pub fn new(engine: Box<dyn EngineLink>, form: JoinForm) -> MeshcallApp {
        MeshcallApp {
            engine,
            form,
            screen: Screen::Join,
            error: None,
            leaving_since: None,
            queued_join: None,
            last_request: None,
            show_settings: false,
            devices: DeviceScan::default(),
            scanned_for_settings: false,
            pacer: None,
            now: 0.0,
            _runtime: None,
        }
    }

    pub fn with_pacer(mut self, pacer: Arc<RepaintPacer>) -> MeshcallApp {
        self.pacer = Some(pacer);
        self
    }

    /// Hands the app the runtime the engine runs on, so both live exactly as long as the window.
    pub fn with_runtime(mut self, rt: tokio::runtime::Runtime) -> MeshcallApp {
        self._runtime = Some(rt);
        self
    }

    /// The remembered form, or the defaults.
    pub fn load_form(storage: Option<&dyn eframe::Storage>) -> JoinForm {
        match storage.and_then(|s| eframe::get_value::<JoinForm>(s, FORM_KEY)) {
            // A remembered form keeps its sources, whatever version saved it.
            Some(form) => JoinForm {
                devices_chosen: true,
                ..form
            },
            // A new user: the first device scan picks the camera and microphone.
            None => JoinForm {
                devices_chosen: false,
                ..JoinForm::default()
            },
        }
    }

    pub fn save_form(storage: &mut dyn eframe::Storage, form: &JoinForm) {
        eframe::set_value(storage, FORM_KEY, form);
    }

    /// The call screen, when in a call (tests).
    pub fn call(&self) -> Option<&CallView> {
        match &self.screen {
            Screen::Call(v) => Some(v),
            Screen::Join => None,
        }
    }

    pub fn call_mut(&mut self) -> Option<&mut CallView> {
        match &mut self.screen {
            Screen::Call(v) => Some(v),
            Screen::Join => None,
        }
    }

    /// Starts a join (from the join screen or the command line).
    pub fn join(&mut self, req: JoinRequest) {
        if self.leaving_since.is_some() {
            self.queued_join = Some(req);
            return;
        }
        let mut view = CallView::new(&req.room, &req.name);
        view.set_now(self.now);
        view.local.camera_off = matches!(req.video, crate::engine::api::VideoChoice::None);
        self.error = None;
        if self.engine.send(Command::Join(Box::new(req.clone()))) {
            self.last_request = Some(req);
            self.screen = Screen::Call(Box::new(view));
        } else {
            self.error = Some("The call engine is not running; restart meshcall.".into());
        }
    }

    /// Joins with the form as it is (the command line's "straight into the call").
    pub fn join_from_form(&mut self) {
        match self.form.to_request() {
            Ok(req) => self.join(req),
            Err(e) => self.error = Some(e.message().to_string()),
        }
    }

    fn leave(&mut self) {
        if matches!(self.screen, Screen::Call(_)) {
            self.engine.send(Command::Leave);
            self.leaving_since = Some(self.now);
        }
        self.screen = Screen::Join;
    }

    fn on_event(&mut self, ev: Event) {
        if self.leaving_since.is_some() {
            // The previous call's tail: wait for its end, then run a queued rejoin.
            let ended = matches!(
                ev,
                Event::Left
                    | Event::CallState {
                        state: CallState::Idle,
                        ..
                    }
            );
            if ended {
                self.leaving_since = None;
                if let Some(req) = self.queued_join.take() {
                    self.join(req);
                }
            }
            return;
        }
        match &mut self.screen {
            Screen::Call(view) => match ev {
                Event::Error {
                    kind,
                    message,
                    close_code,
                    fatal: true,
                } => {
                    self.error = Some(explain_error(kind, close_code, &message));
                    view.apply(Event::Error {
                        kind,
                        message,
                        close_code,
                        fatal: true,
                    });
                }
                // The join failed (after its fatal error) or the call ended.
                Event::CallState {
                    state: CallState::Idle,
                    ..
                }
                | Event::Left => self.screen = Screen::Join,
                other => view.apply(other),
            },
            Screen::Join => {
                if let Event::Error {
                    kind,
                    message,
                    close_code,
                    ..
                } = ev
                {
                    self.error = Some(explain_error(kind, close_code, &message));
                }
            }
        }
    }

    /// Draws one frame (eframe's `App::ui` calls this; tests call it directly).
    pub fn show(&mut self, ui: &mut Ui) {
        if let Some(p) = &self.pacer {
            p.painted();
        }
        self.now = ui.input(|i| i.time);
        while let Some(ev) = self.engine.try_recv() {
            self.on_event(ev);
        }
        if let Some(t) = self.leaving_since
            && self.now - t > LEAVE_TIMEOUT_S
        {
            self.leaving_since = None;
            if let Some(req) = self.queued_join.take() {
                self.join(req);
            }
        }
        if self.leaving_since.is_some() {
            // Poll for the engine's confirmation even if it forgets to notify.
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(250));
        }
        let scanning = self.devices.poll();
        if !self.form.devices_chosen
            && let Some(l) = self.devices.lists.as_ref().filter(|l| l.complete)
        {
            self.form.choose_default_devices(l);
        }
        if !scanning {
            let ctx = ui.ctx().clone();
            if !self.form.devices_chosen
                && matches!(self.screen, Screen::Join)
                && self.devices.lists.as_ref().is_none_or(|l| !l.complete)
            {
                // A new user: find the system's camera and microphone (off the UI thread).
                self.devices.refresh(move || ctx.request_repaint());
            } else if self.show_settings && !self.scanned_for_settings {
                self.devices.refresh(move || ctx.request_repaint());
                self.scanned_for_settings = true;
            } else if matches!(self.screen, Screen::Call(_)) && self.devices.lists.is_none() {
                // The share picker's screens and windows, ready before anyone asks.
                self.devices.refresh_screens(move || ctx.request_repaint());
            }
        }
        let mut actions = Vec::new();
        if let Screen::Call(view) = &mut self.screen {
            if let Some(l) = &self.devices.lists
                && view.screens != l.screens
            {
                view.screens = l.screens.clone();
            }
            actions = view.ui(ui);
        } else {
            let busy = self.queued_join.is_some();
            let mut req = None;
            egui::CentralPanel::default().show(ui, |ui| {
                req = self.form.ui(ui, &mut self.error, busy);
            });
            if let Some(req) = req {
                self.join(req);
            }
        }
        for a in actions {
            match a {
                CallAction::Send(c) => {
                    self.engine.send(c);
                }
                CallAction::Leave => self.leave(),
                CallAction::Rejoin => {
                    let req = self.last_request.clone();
                    self.leave();
                    self.queued_join = req;
                }
                CallAction::Settings => self.show_settings = true,
            }
        }
        if self.show_settings {
            let mut open = true;
            let mut rejoin = false;
            let mut change = None;
            let in_call = matches!(self.screen, Screen::Call(_));
            egui::Window::new("Settings")
                .open(&mut open)
                .collapsible(false)
                .resizable(false)
                .show(ui.ctx(), |ui| {
                    let lists = self.devices.lists.as_ref().filter(|l| l.complete);
                    change = self.form.settings_ui(ui, lists);
                    ui.add_space(8.0);
                    ui.horizontal(|ui| {
                        if lists.is_none() {
                            ui.spinner();
                            ui.weak("looking for devices…");
                        } else if ui.button("Look for devices again").clicked() {
                            self.scanned_for_settings = false;
                        }
                    });
                    if in_call {
                        ui.weak(
                            "Camera, microphone and speaker switch at once; resolution and \
                             frame rate apply when you join.",
                        );
                        rejoin = ui.button("Rejoin with these settings").clicked();
                    }
                });
            self.show_settings = open && !rejoin;
            if !self.show_settings {
                self.scanned_for_settings = false;
            }
            if in_call && let Some(change) = change {
                let cmd = match change {
                    DeviceChange::Camera => Command::SetCamera(self.form.video_choice()),
                    DeviceChange::Microphone => Command::SetMicrophone(self.form.audio_choice()),
                    DeviceChange::Speaker => Command::SetSpeaker(self.form.speaker_choice()),
                    DeviceChange::AudioProcessing => {
                        Command::SetAudioProcessing(self.form.processing_for_source())
                    }
                    DeviceChange::Sounds => Command::SetSounds(self.form.sounds),
                };
                let mic_switched = matches!(cmd, Command::SetMicrophone(_));
                if let Screen::Call(view) = &mut self.screen {
                    match &cmd {
                        Command::SetCamera(v) => {
                            view.local.camera_off = *v == crate::engine::api::VideoChoice::None
                        }
                        Command::SetMicrophone(a) => {
                            view.local.mic_muted = *a == crate::engine::api::AudioChoice::None
                        }
                        _ => {}
                    }
                }
                self.engine.send(cmd);
                if mic_switched {
                    // A microphone gets the user's processing; the tone none.
                    self.engine.send(Command::SetAudioProcessing(
                        self.form.processing_for_source(),
                    ));
                }
            }
            if rejoin {
                self.leave();
                match self.form.to_request() {
                    Ok(req) => self.queued_join = Some(req),
                    Err(e) => self.error = Some(e.message().to_string()),
                }
            }
        }
    }

    /// Leaves a running call when the window closes, waiting briefly for the engine so peers
    /// see a clean departure instead of a timeout.
    fn leave_on_exit(&mut self) {
        if !matches!(self.screen, Screen::Call(_)) {
            return;
        }
        self.engine.send(Command::Leave);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while std::time::Instant::now() < deadline {
            match self.engine.try_recv() {
                Some(Event::Left) => break,
                Some(_) => {}
                None => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }
}

impl eframe::App for MeshcallApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        MeshcallApp::save_form(storage, &self.form);
    }

    fn on_exit(&mut self) {
        self.leave_on_exit();
    }
}
