//! The call engine: owns the MeteredPeer, the local sources and send pipelines, the
//! remote receive pipelines and the audio mixer. The UI and `meshcall join --headless` drive it
//! only through [`api::Command`]s and read [`api::Event`]s; neither touches webrtc or tokio.
//!
//! The engine is one tokio task per call. Per remote peer it runs small watcher tasks that turn
//! SDK events into engine events; every media object lives in `CallMedia` and is dropped
//! (threads joined) on leave.
//!
//! App-level data messages (documented in the README, sent server-routed so they also reach
//! peers whose P2P connection is down, always as directs to each participant and accepted only
//! as directs from a participant — a REST publish can forge the `from` of a broadcast):
//! - `{"type":"meshcall-status","mic_muted":bool,"camera_off":bool}` — on change and to each
//!   newcomer;
//! - `{"type":"meshcall-chat","text":"…"}` — chat, at most 2 000 characters;
//! - `{"type":"meshcall-bye"}` — before leaving on purpose.

pub mod api;
pub mod departures;
mod devices;
pub mod local;
mod sounds;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::auth::{Actions, MintRequest, PatternSet, Secret, SecretKey, mint};
use crate::client::{ClientOptions, Credential};
use crate::media::MediaError;
use crate::media::mixer::{AudioReceiver, Mixer};
use crate::media::processing::{ProcessingSettings, SharedProcessor, WebRtcProcessor, shared};
use crate::media::receive::{DecodedFrame, VideoReceiver};
use crate::media::send::{AudioSender, TrackSpec, VideoSendSettings, VideoSender};
use crate::media::source::{AudioSink, AudioSource, VideoSource};
use crate::media::stats::ReceiveStats;
use crate::media::synthetic::{SyntheticAudioSource, SyntheticVideoSource};
use crate::peer::{
    DataKind, DcEvent, DcMessage, MeteredPeer, MeteredPeerState, PeerConnectionState,
    PeerEventError, PeerSettings, RemotePeer, RemoteTrack,
};
use api::*;
use departures::{Departures, LeftDecision, REJOIN_GRACE};

/// Longest chat message accepted (characters).
pub const MAX_CHAT_CHARS: usize = 2_000;
/// Events buffered towards the UI.
const EVENT_QUEUE: usize = 4_096;

/// Engine-wide options (not per call).
#[derive(Clone, Default)]
pub struct EngineOptions {
    /// Called after every event and every new remote frame (the UI's `request_repaint`).
    pub notify: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Headless: send a server data message and a P2P data-channel ping this often, and report
    /// every message received as [`EngineEvent::Data`].
    pub keepalive_data: Option<Duration>,
    /// Where "this computer" looks for / starts the embedded server.
    pub local: local::LocalServerOptions,
    /// During a call, list the devices this often and announce new ones (the app: every few
    /// seconds; `None`: never, for bots and tests that do not want the scans).
    pub device_scan_every: Option<Duration>,
}

/// Everything the engine reports: the UI vocabulary plus the headless peer's extras.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    Call(Event),
    /// A data message (headless contract): via `server` or `p2p`.
    Data {
        peer: String,
        via: &'static str,
        /// Server messages: `broadcast` or `direct`.
        kind: Option<String>,
        data: Value,
    },
    DataChannelOpen {
        peer: String,
        label: String,
    },
}

/// The UI's end of the engine.
pub struct EngineHandle {
    cmd: mpsc::Sender<Command>,
    events: Mutex<mpsc::Receiver<EngineEvent>>,
}

impl EngineHandle {
    /// Queues a command; false if the engine is gone or flooded.
    pub fn send(&self, c: Command) -> bool {
        self.cmd.try_send(c).is_ok()
    }

    /// The next event, without blocking (call every UI frame until `None`).
    pub fn try_recv(&self) -> Option<EngineEvent> {
        self.events.lock().ok()?.try_recv().ok()
    }

    /// The command sender and event receiver, for async drivers (the headless peer).
    pub fn into_parts(self) -> (mpsc::Sender<Command>, mpsc::Receiver<EngineEvent>) {
        let rx = match self.events.into_inner() {
            Ok(rx) => rx,
            Err(p) => p.into_inner(),
        };
        (self.cmd, rx)
    }
}

/// Starts an engine on `rt`.
pub fn spawn(rt: &tokio::runtime::Handle, options: EngineOptions) -> EngineHandle {
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let out = Out {
        tx: ev_tx,
        notify: options.notify.clone(),
    };
    rt.spawn(run(cmd_rx, out, options));
    EngineHandle {
        cmd: cmd_tx,
        events: Mutex::new(ev_rx),
    }
}

/// Event output: a bounded queue plus the repaint hook.
#[derive(Clone)]
struct Out {
    tx: mpsc::Sender<EngineEvent>,
    notify: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Out {
    async fn call(&self, e: Event) {
        self.send(EngineEvent::Call(e)).await;
    }
    async fn send(&self, e: EngineEvent) {
        let _ = self.tx.send(e).await;
        self.poke();
    }
    /// From non-async contexts (decoder thread callbacks): drop rather than block.
    /// A problem worth telling the user that does not end the call.
    async fn notice(&self, message: String) {
        self.call(Event::Error {
            message,
            fatal: false,
        })
        .await;
    }

    fn try_call(&self, e: Event) {
        let _ = self.tx.try_send(EngineEvent::Call(e));
        self.poke();
    }
    fn poke(&self) {
        if let Some(n) = &self.notify {
            n();
        }
    }
}

/// A remote video feed for the UI.
struct Feed(Arc<VideoReceiver>);

impl VideoFeed for Feed {
    fn latest(&self) -> Option<Arc<DecodedFrame>> {
        self.0.latest()
    }
    fn stats(&self) -> ReceiveStats {
        self.0.stats()
    }
}

/// The local camera preview as a feed.
struct PreviewFeed(Arc<VideoSender>);

impl VideoFeed for PreviewFeed {
    fn latest(&self) -> Option<Arc<DecodedFrame>> {
        self.0.preview()
    }
    fn stats(&self) -> ReceiveStats {
        ReceiveStats::default()
    }
}

#[derive(Default)]
struct RemoteMedia {
    /// (peer, stream) → receivers
    video: HashMap<(String, String), Arc<VideoReceiver>>,
    audio: HashMap<(String, String), Vec<AudioReceiver>>,
    /// Per-participant playback volume set by the user (session-long, by peer id).
    volumes: HashMap<String, f32>,
}

/// Everything media for one call; dropping it stops every thread.
struct CallMedia {
    camera: Option<Arc<VideoSender>>,
    mic: Option<Arc<AudioSender>>,
    screen: Option<Arc<VideoSender>>,
    mixer: Arc<Mixer>,
    playout: Option<std::thread::JoinHandle<()>>,
    remote: Arc<Mutex<RemoteMedia>>,
    /// Echo cancellation, noise suppression and gain: fed by the mixer (far end) and the
    /// microphone's send thread (near end). See `docs/audio-processing.md`.
    processor: SharedProcessor,
}

/// Audio processing is on for a real microphone (as a browser's getUserMedia does) and off for
/// the synthetic tone, whose measurements must stay bit-comparable.
fn processing_for(choice: &AudioChoice, forced: Option<ProcessingSettings>) -> ProcessingSettings {
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A peer id from a display name: lowercase ASCII letters/digits plus a random suffix, so that
/// two "Alice" bots do not collide.
pub fn peer_id_from_name(name: &str) -> String {
    let base: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(32)
        .collect();
    let base = if base.is_empty() {
        "peer".to_string()
    } else {
        base
    };
    format!("{base}-{:04x}", rand::random::<u16>())
}

/// Why a join could not start.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the secret must be at least 16 bytes")]
    ShortSecret,
    #[error("the server URL must start with ws:// or wss:// (got {0:?})")]
    BadUrl(String),
    #[error("the room name is empty")]
    EmptyRoom,
    #[error("could not start or reach the local server: {0}")]
    Local(String),
}

/// A credential that mints a fresh token on every connect.
fn minting_credential(
    kid: &str,
    secret: &str,
    name: &str,
    room: &str,
    peer_id: Option<&str>,
) -> Credential {
    let key = Arc::new(SecretKey {
        kid: kid.to_string(),
        secret: Secret::new(secret.as_bytes().to_vec()),
        channel_patterns: PatternSet::any(),
        actions: Actions::all(),
        app: String::new(),
    });
    let sub = peer_id.map_or_else(|| peer_id_from_name(name), str::to_string);
    let (name, room) = (name.to_string(), room.to_string());
    Credential::token_provider(move || {
        let req = MintRequest {
            sub: sub.clone(),
            channels: Some(vec![crate::auth::glob::escape(&room)]),
            ttl_secs: 3600,
            peer_metadata: Some(json!({ "username": name })),
            ..MintRequest::default()
        };
        let r = mint(&key, &req, now_unix())
            .map(|(t, _)| t)
            .map_err(|e| e.to_string());
        async move { r }
    })
}

/// Resolves the request's auth into (origin, credential); may start the embedded server.
async fn credential_for(
    req: &JoinRequest,
    local: &local::LocalServerOptions,
    keep: &mut Option<local::LocalServer>,
) -> Result<(String, Credential), JoinError> {
    if req.room.trim().is_empty() {
        return Err(JoinError::EmptyRoom);
    }
    let url_ok = |s: &str| s.starts_with("ws://") || s.starts_with("wss://");
    match &req.auth {
        Auth::Token(t) => {
            if !url_ok(&req.server) {
                return Err(JoinError::BadUrl(req.server.clone()));
            }
            let t = t.clone();
            Ok((
                req.server.clone(),
                Credential::token_provider(move || {
                    let t = t.clone();
                    async move { Ok::<String, String>(t) }
                }),
            ))
        }
        Auth::Key(k) => {
            if !url_ok(&req.server) {
                return Err(JoinError::BadUrl(req.server.clone()));
            }
            Ok((req.server.clone(), Credential::api_key(k.clone())))
        }
        Auth::Secret { kid, secret } => {
            if !url_ok(&req.server) {
                return Err(JoinError::BadUrl(req.server.clone()));
            }
            if secret.len() < 16 {
                return Err(JoinError::ShortSecret);
            }
            Ok((
                req.server.clone(),
                minting_credential(kid, secret, &req.name, &req.room, req.peer_id.as_deref()),
            ))
        }
        Auth::ThisComputer => {
            let server = local::ensure(local)
                .await
                .map_err(|e| JoinError::Local(e.to_string()))?;
            let origin = server.origin.clone();
            let cred = minting_credential(
                &server.kid,
                &server.secret,
                &req.name,
                &req.room,
                req.peer_id.as_deref(),
            );
            *keep = Some(server);
            Ok((origin, cred))
        }
    }
}

/// Per-call state owned by the engine task.
struct Call {
    peer: MeteredPeer,
    media: CallMedia,
    started: Instant,
    mic_muted: Arc<AtomicBool>,
    camera_off: Arc<AtomicBool>,
    req: JoinRequest,
    /// The stream id of the camera and microphone tracks (one "camera" stream per participant).
    stream_id: String,
    /// In-process test participants (their own engines).
    guests: Vec<EngineHandle>,
    _local_server: Option<local::LocalServer>,
    /// When the microphone was last replaced after it failed (so a default that fails at once
    /// falls back to the tone instead of being retried every second).
    mic_recovered_at: Option<Instant>,
    camera_recovered_at: Option<Instant>,
    speaker_recovered_at: Option<Instant>,
    /// Devices present at the last scan, to announce new ones.
    device_watch: devices::DeviceWatch,
    device_scan: Option<tokio::task::JoinHandle<devices::Inventory>>,
    last_device_scan: Option<Instant>,
    sounds: Arc<sounds::Sounds>,
}

async fn run(mut cmds: mpsc::Receiver<Command>, out: Out, options: EngineOptions) {
    let mut call: Option<Call> = None;
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<String>(8);
    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    let mut level_tick = tokio::time::interval(Duration::from_millis(100));
    let keepalive = options.keepalive_data.unwrap_or(Duration::from_secs(3600));
    let mut keepalive_tick = tokio::time::interval(keepalive);
    let mut keepalive_seq = 0u64;
    loop {
        tokio::select! {
            c = cmds.recv() => {
                let Some(c) = c else { break };
                match c {
                    Command::Join(req) => {
                        if call.is_some() {
                            out.notice("already in a call; leave first".into()).await;
                            continue;
                        }
                        out.call(Event::CallState { state: CallState::Joining, since: None }).await;
                        match join(*req, &out, &options, fatal_tx.clone()).await {
                            Ok(c) => call = Some(c),
                            Err(message) => {
                                out.call(Event::Error { message, fatal: true }).await;
                                out.call(Event::CallState { state: CallState::Idle, since: None }).await;
                            }
                        }
                    }
                    Command::Leave => {
                        if let Some(c) = call.take() {
                            leave(c, &out).await;
                        }
                    }
                    other => {
                        if let Some(c) = call.as_mut() {
                            handle(c, other, &out, &options).await;
                        } else {
                            out.notice("not in a call".into()).await;
                        }
                    }
                }
            }
            Some(reason) = fatal_rx.recv() => {
                out.call(Event::Error { message: reason, fatal: true }).await;
                if let Some(c) = call.take() {
                    leave(c, &out).await;
                }
            }
            _ = stats_tick.tick(), if call.is_some() => {
                if let Some(c) = call.as_mut() {
                    devices::recover_lost_microphone(c, &out).await;
                    devices::recover_lost_camera(c, &out).await;
                    devices::recover_lost_speaker(c, &out).await;
                    devices::end_lost_screen_share(c, &out).await;
                    if let Some(every) = options.device_scan_every {
                        devices::watch_devices(c, &out, every).await;
                    }
                    out.call(Event::Stats(Box::new(stats(c)))).await;
                }
            }
            _ = level_tick.tick(), if call.is_some() => {
                if let Some(c) = &call {
                    let local = c.media.mic.as_ref().map_or(0.0, |m| m.level());
                    let peers = {
                        let remote = lock(&c.media.remote);
                        let mut v: HashMap<String, f32> = HashMap::new();
                        for ((peer, _), rxs) in &remote.audio {
                            let l = rxs.iter().map(AudioReceiver::level).fold(0.0, f32::max);
                            let e = v.entry(peer.clone()).or_default();
                            *e = e.max(l);
                        }
                        v.into_iter().collect()
                    };
                    // Not every 100 ms into a headless log: only the UI wants levels.
                    if options.keepalive_data.is_none() {
                        out.send(EngineEvent::Call(Event::Levels { local, peers })).await;
                    }
                }
            }
            _ = keepalive_tick.tick(), if call.is_some() && options.keepalive_data.is_some() => {
                if let Some(c) = &call {
                    keepalive_seq += 1;
                    let _ = c.peer.send(json!({"seq": keepalive_seq, "from_name": c.req.name})).await;
                }
            }
        }
    }
    if let Some(c) = call.take() {
        leave(c, &out).await;
    }
}

/// Status messages from not-yet-listed senders waiting at once (see the data loop); beyond it
/// they are dropped like any message from a stranger.
const MAX_EARLY_STATUSES: usize = 8;

fn stats(c: &Call) -> StatsSnapshot {
    let remote = lock(&c.media.remote);
    StatsSnapshot {
        local_video: c.media.camera.as_ref().map(|v| v.stats()),
        local_audio: c.media.mic.as_ref().map(|a| a.stats()),
        audio_out: c.media.mic.as_ref().map(|a| {
            let p = lock(&c.media.processor);
            AudioOutStats {
                level_dbfs: a.take_sent_level_dbfs(),
                processing: p.settings().describe(),
                delay_ms: p
                    .settings()
                    .echo_cancellation
                    .then(|| p.stats().delay_ms)
                    .flatten(),
            }
        }),
        remote_audio: remote
            .audio
            .iter()
            .flat_map(|((p, s), rs)| {
                rs.iter()
                    .map(move |r| (p.clone(), s.clone(), r.take_level_dbfs()))
            })
            .collect(),
        remote_video: remote
            .video
            .iter()
            .map(|((p, s), r)| (p.clone(), s.clone(), r.stats()))
            .collect(),
        cues_played: c.media.mixer.cues_played(),
    }
}

async fn join(
    req: JoinRequest,
    out: &Out,
    options: &EngineOptions,
    fatal: mpsc::Sender<String>,
) -> Result<Call, String> {
    let mut local_server = None;
    let (origin, credential) = credential_for(&req, &options.local, &mut local_server)
        .await
        .map_err(|e| e.to_string())?;
    let settings = if req.loopback_only {
        PeerSettings::loopback_only()
    } else {
        PeerSettings::default()
    };
    let peer = MeteredPeer::new(ClientOptions::new(origin, credential), settings)
        .map_err(|e| e.to_string())?;
    // Sources first: a missing device is reported and the call goes on without it.
    let spec_stream = format!("camera-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let camera = open_video(&req.video, req.width, req.height, req.fps).and_then(|src| {
        src.map(|src| {
            VideoSender::start(
                src,
                TrackSpec::unique("camera-video", &spec_stream),
                camera_settings(&req),
            )
            .map(Arc::new)
        })
        .transpose()
    });
    let camera = report_device_error(out, "camera", camera).await;
    let mic = open_audio(&req.audio).and_then(|src| {
        src.map(|src| {
            AudioSender::start(src, TrackSpec::unique("camera-audio", &spec_stream), 32_000)
                .map(Arc::new)
        })
        .transpose()
    });
    let mic = report_device_error(out, "microphone", mic).await;
    let sink = match open_speaker(&req.speaker) {
        Ok(s) => s,
        Err(e) => {
            out.notice(format!("speaker: {e}; remote audio is not played"))
                .await;
            Box::new(crate::media::devices::NullSink::new())
        }
    };
    let (mixer, playout) = Mixer::start(sink).map_err(|e| e.to_string())?;
    let processor = shared(WebRtcProcessor::new(processing_for(
        &req.audio,
        req.audio_processing,
    )));
    mixer.set_render_tap(Some(processor.clone()));
    if let Some(a) = &mic {
        a.set_processor(Some(processor.clone()));
    }
    let meta = Some(json!({"role": "camera"}));
    if let Some(v) = &camera {
        peer.add_media(v.media(), meta.clone())
            .await
            .map_err(|e| e.to_string())?;
        announce_preview(out, v).await;
    }
    if let Some(a) = &mic {
        peer.add_media(a.media(), meta.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    let media = CallMedia {
        camera,
        mic,
        screen: None,
        mixer,
        playout: Some(playout),
        remote: Arc::new(Mutex::new(RemoteMedia::default())),
        processor,
    };
    let started = Instant::now();
    let media_mixer = media.mixer.clone();
    let call = Call {
        peer: peer.clone(),
        media,
        started,
        mic_muted: Arc::new(AtomicBool::new(false)),
        camera_off: Arc::new(AtomicBool::new(false)),
        req: req.clone(),
        stream_id: spec_stream,
        guests: Vec::new(),
        _local_server: local_server,
        mic_recovered_at: None,
        camera_recovered_at: None,
        speaker_recovered_at: None,
        device_watch: devices::DeviceWatch::default(),
        device_scan: None,
        last_device_scan: None,
        sounds: sounds::Sounds::new(media_mixer, req.sounds, started),
    };
    watch_peer(&call, out.clone(), fatal, options.keepalive_data.is_some());
    if let Err(e) = peer.join(&req.room, true).await {
        peer.close().await;
        return Err(format!("could not join {:?}: {e}", req.room));
    }
    out.call(Event::Joined {
        self_id: peer.peer_id().unwrap_or_default(),
        room: req.room.clone(),
    })
    .await;
    out.call(Event::CallState {
        state: CallState::Joined,
        since: None,
    })
    .await;
    info!(room = %req.room, "joined");
    Ok(call)
}

/// Hands the UI the self-view, which then repaints on each captured picture (paced by the UI).
async fn announce_preview(out: &Out, v: &Arc<VideoSender>) {
    let poke = out.clone();
    v.set_on_frame(Box::new(move || poke.poke()));
    out.call(Event::LocalPreview(Some(RemoteVideo(Arc::new(
        PreviewFeed(v.clone()),
    )))))
    .await;
}

/// A device that fails is reported (not fatal) and the call goes on without it.
async fn report_device_error<T>(
    out: &Out,
    what: &str,
    r: Result<Option<T>, MediaError>,
) -> Option<T> {
    match r {
        Ok(v) => v,
        Err(e) => {
            out.notice(format!("{what}: {e}")).await;
            None
        }
    }
}

/// Sends a meshcall control or chat message to every other participant as *direct* messages.
/// Receivers accept these only as directs from a member: a server-side publish (REST) can put
/// any `from` on a broadcast, so a broadcast could be forged.
async fn send_to_all(peer: &MeteredPeer, data: Value) -> Result<(), String> {
    let mut first_error = None;
    for r in peer.remote_peers() {
        if let Err(e) = peer.send_to(r.id(), data.clone()).await {
            first_error.get_or_insert(e.to_string());
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn status_message(c: &Call) -> Value {
    json!({
        "type": "meshcall-status",
        "mic_muted": c.mic_muted.load(Ordering::Relaxed),
        "camera_off": c.camera_off.load(Ordering::Relaxed),
    })
}

async fn handle(c: &mut Call, cmd: Command, out: &Out, options: &EngineOptions) {
    match cmd {
        Command::SetMicMuted(m) => {
            c.mic_muted.store(m, Ordering::Relaxed);
            if let Some(a) = &c.media.mic {
                a.set_muted(m);
            }
            let _ = send_to_all(&c.peer, status_message(c)).await;
        }
        Command::SetCameraEnabled(on) => handle_set_camera_enabled(c, on).await,
        Command::SetCamera(choice) => set_camera(c, choice, out).await,
        Command::SetMicrophone(choice) => set_microphone(c, choice, out).await,
        Command::SetPeerVolume { peer, volume } => {
            let volume = if volume.is_finite() {
                volume.clamp(0.0, 2.0)
            } else {
                1.0
            };
            let mut m = lock(&c.media.remote);
            for ((p, _), receivers) in &m.audio {
                if *p == peer {
                    receivers.iter().for_each(|r| r.set_gain(volume));
                }
            }
            m.volumes.insert(peer, volume);
        }
        Command::SetAudioProcessing(settings) => {
            info!(processing = %settings.describe(), "audio processing changed");
            c.req.audio_processing = Some(settings);
            lock(&c.media.processor).set_settings(settings);
        }
        Command::SetSounds(on) => {
            c.req.sounds = on;
            c.sounds.set_enabled(on);
        }
        Command::SetSpeaker(choice) => match open_speaker(&choice) {
            Ok(sink) => {
                info!(?choice, "speaker switched");
                c.req.speaker = choice;
                c.media.mixer.replace_sink(sink);
                // Another speaker is another echo path.
                lock(&c.media.processor).reset();
            }
            Err(e) => {
                out.notice(format!("speaker: {e}; still playing on the previous one"))
                    .await
            }
        },
        Command::StartScreenShare(choice) => {
            if c.media.screen.is_some() {
                return;
            }
            if let Err(e) = start_screen_share(c, choice).await {
                out.call(Event::LocalMedia {
                    camera_off: c.camera_off.load(Ordering::Relaxed),
                    sharing: false,
                })
                .await;
                out.notice(format!("screen share: {e}")).await;
            }
        }
        Command::StopScreenShare => {
            if let Some(s) = c.media.screen.take() {
                let _ = c.peer.remove_track(s.track_id()).await;
            }
        }
        Command::SendChat(text) => {
            let text: String = text.trim().chars().take(MAX_CHAT_CHARS).collect();
            if text.is_empty() {
                return;
            }
            if let Err(e) =
                send_to_all(&c.peer, json!({"type": "meshcall-chat", "text": text})).await
            {
                out.notice(format!("chat not sent: {e}")).await;
            }
        }
        Command::Simulate(Simulation::DropSignalling) => c.peer.simulate_signalling_drop(),
        Command::RetryNow => c.peer.retry_signalling_now(),
        Command::Simulate(Simulation::RestartIce { peer }) => {
            if let Some(p) = c.peer.remote_peer(&peer) {
                p.restart_ice();
            }
        }
        Command::Simulate(Simulation::BlackholeMedia { peer, duration }) => {
            match c.peer.remote_peer(&peer) {
                Some(p) => {
                    info!(peer = %peer, secs = duration.as_secs_f64(), "blackholing media (troubleshooting)");
                    p.blackhole_media(duration);
                }
                None => {
                    out.notice(format!("blackhole: nobody called {peer:?} is in the call"))
                        .await
                }
            }
        }
        Command::InviteTestParticipant => {
            let mut req = c.req.clone();
            req.name = format!("Test participant {}", c.guests.len() + 1);
            req.video = VideoChoice::Synthetic;
            req.audio = AudioChoice::Synthetic;
            req.speaker = SpeakerChoice::None;
            req.width = req.width.min(640);
            req.height = req.height.min(480);
            req.bitrate_bps = 800_000;
            if matches!(req.auth, Auth::Token(_)) {
                out.notice("a test participant needs a secret, a publishable key or \"this computer\" (a token names one peer)".into()).await;
                return;
            }
            let guest = spawn(
                &tokio::runtime::Handle::current(),
                EngineOptions {
                    notify: None,
                    keepalive_data: None,
                    local: options.local.clone(),
                    device_scan_every: None,
                },
            );
            guest.send(Command::Join(Box::new(req)));
            c.guests.push(guest);
        }
        Command::Join(_) | Command::Leave => {}
    }
}

async fn handle_set_camera_enabled(c: &mut Call, on: bool) {
    c.camera_off.store(!on, Ordering::Relaxed);
    if let Some(v) = &c.media.camera {
        v.set_paused(!on);
    }
    let _ = send_to_all(&c.peer, status_message(c)).await;
}

fn camera_settings(req: &JoinRequest) -> VideoSendSettings {
    VideoSendSettings {
        encoder: crate::media::h264::EncoderSettings {
            bitrate_bps: req.bitrate_bps,
            fps: req.fps,
        },
        ..VideoSendSettings::default()
    }
}

/// Switches the camera in place, or starts sending video if the call had none.
async fn set_camera(c: &mut Call, choice: VideoChoice, out: &Out) {
    if choice == VideoChoice::None {
        handle_set_camera_enabled(c, false).await;
        c.req.video = choice;
        return;
    }
    let src = match open_video(&choice, c.req.width, c.req.height, c.req.fps) {
        Ok(Some(src)) => src,
        Ok(None) => return,
        Err(e) => {
            out.notice(format!("camera: {e}; keeping the previous one"))
                .await;
            return;
        }
    };
    if c.media.camera.is_some() {
        set_camera_source(c, choice, src);
    } else {
        c.req.video = choice;
        {
            let stream = c.stream_id.clone();
            let started = VideoSender::start(
                src,
                TrackSpec::unique("camera-video", &stream),
                camera_settings(&c.req),
            )
            .map(Arc::new);
            let v = match started {
                Ok(v) => v,
                Err(e) => {
                    out.notice(format!("camera: {e}")).await;
                    return;
                }
            };
            if let Err(e) = c
                .peer
                .add_media(v.media(), Some(json!({"role": "camera"})))
                .await
            {
                out.notice(format!("camera: {e}")).await;
                return;
            }
            announce_preview(out, &v).await;
            c.media.camera = Some(v);
        }
    }
    if c.camera_off.load(Ordering::Relaxed) {
        handle_set_camera_enabled(c, true).await;
    }
}

/// Starts sending a screen or window (`Screen(id)`; anything else shares the test pattern) as
/// a second video stream with `role: "screen"`.
async fn start_screen_share(c: &mut Call, choice: VideoChoice) -> Result<(), String> {
    let src = match choice {
        VideoChoice::Screen(_) => open_video(&choice, 1920, 1080, 15.0),
        _ => open_video(&VideoChoice::Synthetic, 1280, 720, 15.0),
    };
    let Some(src) = src.map_err(|e| e.to_string())? else {
        return Err("nothing to share".into());
    };
    let spec = TrackSpec::unique(
        "screen-video",
        &format!("screen-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
    );
    let s = Arc::new(
        VideoSender::start(src, spec, VideoSendSettings::default()).map_err(|e| e.to_string())?,
    );
    c.peer
        .add_media(s.media(), Some(json!({"role": "screen"})))
        .await
        .map_err(|e| e.to_string())?;
    c.media.screen = Some(s);
    Ok(())
}

/// Feeds the running camera track from another source (nobody renegotiates).
fn set_camera_source(c: &mut Call, choice: VideoChoice, src: Box<dyn VideoSource>) {
    info!(?choice, "camera switched");
    c.req.video = choice;
    if let Some(v) = &c.media.camera {
        v.replace_source(src);
    }
}

/// Switches the microphone in place, or starts sending audio if the call had none.
async fn set_microphone(c: &mut Call, choice: AudioChoice, out: &Out) {
    if choice == AudioChoice::None {
        if let Some(a) = &c.media.mic {
            a.set_muted(true);
        }
        c.mic_muted.store(true, Ordering::Relaxed);
        let _ = send_to_all(&c.peer, status_message(c)).await;
        c.req.audio = choice;
        return;
    }
    let src = match open_audio(&choice) {
        Ok(Some(src)) => src,
        Ok(None) => return,
        Err(e) => {
            out.notice(format!("microphone: {e}; keeping the previous one"))
                .await;
            return;
        }
    };
    info!(?choice, "microphone switched");
    {
        let mut p = lock(&c.media.processor);
        p.set_settings(processing_for(&choice, c.req.audio_processing));
        p.reset(); // another microphone hears the room differently
    }
    c.req.audio = choice;
    match &c.media.mic {
        Some(a) => a.replace_source(src),
        None => {
            let started =
                AudioSender::start(src, TrackSpec::unique("camera-audio", &c.stream_id), 32_000)
                    .map(Arc::new);
            let a = match started {
                Ok(a) => a,
                Err(e) => {
                    out.notice(format!("microphone: {e}")).await;
                    return;
                }
            };
            a.set_muted(c.mic_muted.load(Ordering::Relaxed));
            a.set_processor(Some(c.media.processor.clone()));
            if let Err(e) = c
                .peer
                .add_media(a.media(), Some(json!({"role": "camera"})))
                .await
            {
                out.notice(format!("microphone: {e}")).await;
                return;
            }
            c.media.mic = Some(a);
        }
    }
}

async fn leave(c: Call, out: &Out) {
    for g in &c.guests {
        g.send(Command::Leave);
    }
    // Say goodbye first, so the others remove us at once instead of waiting for us to come
    // back (see `departures`). Server-routed and acknowledged, so it arrives before our
    // presence `left`; bounded, because a dead server must not hold up leaving.
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        send_to_all(&c.peer, json!({"type": "meshcall-bye"})),
    )
    .await;
    c.peer.close().await;
    if let Some(v) = &c.media.camera {
        v.stop_shared();
    }
    if let Some(v) = &c.media.screen {
        v.stop_shared();
    }
    if let Some(a) = &c.media.mic {
        a.stop_shared();
    }
    lock(&c.media.remote).video.clear();
    lock(&c.media.remote).audio.clear();
    drop(c);
    out.call(Event::CallState {
        state: CallState::Left,
        since: None,
    })
    .await;
    out.call(Event::Left).await;
}

/// A peer is gone for good: drop everything received from it, play the leave sound, tell the
/// UI.
async fn peer_gone(remote: &Mutex<RemoteMedia>, sounds: &sounds::Sounds, out: &Out, id: String) {
    {
        let mut m = lock(remote);
        m.video.retain(|(p, _), _| *p != id);
        m.audio.retain(|(p, _), _| *p != id);
    }
    sounds.peer_left();
    out.call(Event::PeerLeft { id }).await;
}

/// Turns MeteredPeer events into engine events.
fn watch_peer(c: &Call, out: Out, fatal: mpsc::Sender<String>, headless: bool) {
    let peer = c.peer.clone();
    let departures = Arc::new(Mutex::new(Departures::new(REJOIN_GRACE)));
    {
        let mut states = peer.state_changes();
        let out = out.clone();
        tokio::spawn(async move {
            let mut down_since: Option<Instant> = None;
            while let Some(s) = states.next_item().await {
                let state = match s.to {
                    MeteredPeerState::Reconnecting => {
                        down_since.get_or_insert_with(Instant::now);
                        CallState::Reconnecting
                    }
                    MeteredPeerState::Joined => {
                        down_since = None;
                        CallState::Joined
                    }
                    MeteredPeerState::Joining => CallState::Joining,
                    MeteredPeerState::Leaving | MeteredPeerState::Closed => CallState::Left,
                    _ => continue,
                };
                out.call(Event::CallState {
                    state,
                    since: down_since.map(|t| t.elapsed()),
                })
                .await;
            }
        });
    }
    {
        let mut errors = peer.errors();
        let out = out.clone();
        tokio::spawn(async move {
            while let Some(e) = errors.next_item().await {
                match e {
                    PeerEventError::Fatal { code, message } => {
                        let words = code.map(explain_close_code).unwrap_or_default();
                        let _ = fatal.send(format!("{message}{words}")).await;
                    }
                    PeerEventError::ReconcileTimeout => {
                        let _ = fatal.send("the call could not be restored after the server came back (reconcile timed out)".into()).await;
                    }
                    PeerEventError::IceRecoveryExhausted { peer, attempts } => {
                        out.notice(format!(
                            "connection to {peer} not recovered after {attempts} ICE restarts"
                        ))
                        .await;
                    }
                    PeerEventError::TokenProvider { message, .. } => {
                        out.notice(format!("token: {message}")).await;
                    }
                }
            }
        });
    }
    {
        let mut data = peer.on_data();
        let peer_for_data = peer.clone();
        let out = out.clone();
        let departures = departures.clone();
        let remote_media = c.media.remote.clone();
        let sounds = c.sounds.clone();
        // Status messages from a sender the SDK does not list yet, waiting in side tasks.
        let early_statuses = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Some(d) = data.next_item().await {
                let kind = d.data.get("type").and_then(Value::as_str);
                // meshcall's own messages count only as directs from a participant (or, for a
                // bye, one we are still keeping as reconnecting); anything else is ignored.
                let member = peer_for_data.remote_peer(&d.from);
                // A newcomer greets with its status as soon as it sees us, which can overtake
                // our SDK's record of it (presence and data arrive separately). Give it a
                // second to appear, in a bounded side task, rather than drop the status.
                if kind == Some("meshcall-status")
                    && d.kind == DataKind::Direct
                    && member.is_none()
                    && early_statuses.load(Ordering::Relaxed) < MAX_EARLY_STATUSES
                {
                    early_statuses.fetch_add(1, Ordering::Relaxed);
                    let (me, out, departures, pending) = (
                        peer_for_data.clone(),
                        out.clone(),
                        departures.clone(),
                        early_statuses.clone(),
                    );
                    tokio::spawn(async move {
                        for _ in 0..10 {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            if me.remote_peer(&d.from).is_some() {
                                lock(&departures).saw_status(&d.from);
                                let b = |k: &str| {
                                    d.data.get(k).and_then(Value::as_bool).unwrap_or(false)
                                };
                                out.call(Event::RemoteStatus {
                                    peer: d.from.clone(),
                                    mic_muted: b("mic_muted"),
                                    camera_off: b("camera_off"),
                                })
                                .await;
                                break;
                            }
                        }
                        pending.fetch_sub(1, Ordering::Relaxed);
                    });
                    continue;
                }
                let trusted = d.kind == DataKind::Direct
                    && (member.is_some() || lock(&departures).is_lingering(&d.from));
                // A bye whose sender the SDK already dropped (its `left` overtook the bye): a
                // direct's sender is authenticated by the server, so it still says this peer
                // left on purpose.
                if kind == Some("meshcall-bye") && d.kind == DataKind::Direct && !trusted {
                    let gone = lock(&departures).saw_late_bye(&d.from);
                    if gone {
                        peer_gone(&remote_media, &sounds, &out, d.from.clone()).await;
                    }
                    continue;
                }
                let kind = match kind {
                    Some(k) if k.starts_with("meshcall-") && !trusted => {
                        debug!(from = %d.from, kind = k, "untrusted meshcall message ignored");
                        None
                    }
                    k => k,
                };
                match kind {
                    Some("meshcall-bye") => {
                        // Usually before its presence `left`; if that was handled first, the
                        // peer is lingering and goes now.
                        let lingering = lock(&departures).saw_bye(&d.from);
                        if lingering {
                            peer_gone(&remote_media, &sounds, &out, d.from.clone()).await;
                        }
                    }
                    Some("meshcall-status") if member.is_some() => {
                        lock(&departures).saw_status(&d.from);
                        let b = |k: &str| d.data.get(k).and_then(Value::as_bool).unwrap_or(false);
                        out.call(Event::RemoteStatus {
                            peer: d.from.clone(),
                            mic_muted: b("mic_muted"),
                            camera_off: b("camera_off"),
                        })
                        .await;
                    }
                    Some("meshcall-chat") => {
                        if let Some(text) = d.data.get("text").and_then(Value::as_str)
                            && let Some(m) = &member
                        {
                            // The name from the member's own presence, not from the message.
                            let name = display_name(m.metadata().as_ref());
                            let text: String = text.chars().take(MAX_CHAT_CHARS).collect();
                            out.call(Event::Chat {
                                from: d.from.clone(),
                                name,
                                text,
                            })
                            .await;
                        }
                    }
                    _ => {}
                }
                if headless {
                    let kind = serde_json::to_value(d.kind)
                        .ok()
                        .and_then(|k| k.as_str().map(str::to_string));
                    out.send(EngineEvent::Data {
                        peer: d.from,
                        via: "server",
                        kind,
                        data: d.data,
                    })
                    .await;
                }
            }
        });
    }
    {
        let mut left = peer.on_peer_left();
        let out = out.clone();
        let remote_media = c.media.remote.clone();
        let sounds = c.sounds.clone();
        let departures = departures.clone();
        tokio::spawn(async move {
            while let Some(r) = left.next_item().await {
                let id = r.id().to_string();
                let decision = lock(&departures).left(&id, Instant::now());
                match decision {
                    LeftDecision::Gone => {
                        peer_gone(&remote_media, &sounds, &out, id).await;
                    }
                    LeftDecision::Linger { until } => {
                        info!(peer = %id, "peer left without a goodbye; waiting for it to come back");
                        out.call(Event::PeerConnection {
                            id,
                            state: PeerConnectionState::Reconnecting,
                        })
                        .await;
                        let (out, remote_media, departures, sounds) = (
                            out.clone(),
                            remote_media.clone(),
                            departures.clone(),
                            sounds.clone(),
                        );
                        tokio::spawn(async move {
                            tokio::time::sleep(until.saturating_duration_since(Instant::now()))
                                .await;
                            let gone = lock(&departures).expire(Instant::now());
                            for id in gone {
                                info!(peer = %id, "peer did not come back");
                                peer_gone(&remote_media, &sounds, &out, id).await;
                            }
                        });
                    }
                }
            }
        });
    }
    let mut joined = peer.on_peer_joined();
    let ctx = PeerCtx {
        me: peer.clone(),
        out,
        remote: c.media.remote.clone(),
        mixer: c.media.mixer.clone(),
        started: c.started,
        status: (c.mic_muted.clone(), c.camera_off.clone()),
        headless,
        receive_video: c.req.receive_video,
        departures,
        sounds: c.sounds.clone(),
    };
    tokio::spawn(async move {
        while let Some(r) = joined.next_item().await {
            if lock(&ctx.departures).joined(r.id()) {
                info!(peer = %r.id(), "peer came back");
            } else {
                ctx.sounds.peer_joined();
            }
            ctx.out
                .call(Event::PeerJoined {
                    id: r.id().to_string(),
                    name: display_name(r.metadata().as_ref()),
                    metadata: r.metadata(),
                })
                .await;
            tokio::spawn(watch_remote(ctx.clone(), r));
        }
    });
}

#[derive(Clone)]
struct PeerCtx {
    me: MeteredPeer,
    out: Out,
    remote: Arc<Mutex<RemoteMedia>>,
    mixer: Arc<Mixer>,
    started: Instant,
    status: (Arc<AtomicBool>, Arc<AtomicBool>),
    headless: bool,
    receive_video: bool,
    departures: Arc<Mutex<Departures>>,
    sounds: Arc<sounds::Sounds>,
}

/// A close code in words, for the error banner.
pub fn explain_close_code(code: u16) -> String {
    let why = match code {
        4001 => "the token was refused (invalid, wrong key, or not allowed here)",
        4002 => "the token expired",
        4003 => "this identity joined from somewhere else",
        4010 => "the server is over its connection limit",
        4011 => "the server refused the connection rate",
        4012 => "the account is suspended",
        4020 => "you were removed from the call",
        1008 => "the connection could not keep up",
        1009 => "a message was too large",
        _ => return format!(" (close code {code})"),
    };
    format!(" ({why}; close code {code})")
}

async fn watch_remote(ctx: PeerCtx, remote: RemotePeer) {
    let id = remote.id().to_string();
    // Tell the newcomer our mic/camera state.
    let _ = ctx
        .me
        .send_to(&id, json!({"type":"meshcall-status","mic_muted":ctx.status.0.load(Ordering::Relaxed),"camera_off":ctx.status.1.load(Ordering::Relaxed)}))
        .await;
    {
        let mut tracks = remote.on_track();
        let ctx2 = ctx.clone();
        let id2 = id.clone();
        let existing: Vec<Arc<RemoteTrack>> = remote
            .current_streams()
            .into_iter()
            .flat_map(|s| s.tracks)
            .collect();
        tokio::spawn(async move {
            for t in existing {
                start_track(&ctx2, &id2, t).await;
            }
            while let Some(t) = tracks.next_item().await {
                start_track(&ctx2, &id2, t.track).await;
            }
        });
    }
    {
        let mut removed = remote.on_stream_removed();
        let ctx2 = ctx.clone();
        let id2 = id.clone();
        tokio::spawn(async move {
            while let Some(s) = removed.next_item().await {
                {
                    let mut m = lock(&ctx2.remote);
                    m.video.remove(&(id2.clone(), s.stream_id.clone()));
                    m.audio.remove(&(id2.clone(), s.stream_id.clone()));
                }
                ctx2.out
                    .call(Event::StreamRemoved {
                        peer: id2.clone(),
                        stream_id: s.stream_id,
                    })
                    .await;
            }
        });
    }
    if ctx.headless {
        let mut incoming = remote.on_data_channel();
        let out = ctx.out.clone();
        let id2 = id.clone();
        tokio::spawn(async move {
            while let Some(dc) = incoming.next_item().await {
                tokio::spawn(pump_channel(dc, id2.clone(), out.clone()));
            }
        });
    }
    let opener = ctx.headless
        && ctx
            .me
            .peer_id()
            .is_some_and(|mine| mine.as_str() < id.as_str());
    if opener {
        match remote.create_data_channel("meshcall", None).await {
            Ok(dc) => {
                tokio::spawn(pump_channel(dc, id.clone(), ctx.out.clone()));
            }
            Err(e) => ctx.out.notice(format!("{id}: {e}")).await,
        }
    }
    let mut states = remote.state_changes();
    ctx.out
        .call(Event::PeerConnection {
            id: id.clone(),
            state: remote.state(),
        })
        .await;
    while let Some(c) = states.next_item().await {
        // A peer waiting to come back stays "reconnecting", not "closed".
        let quiet = c.to == PeerConnectionState::Closed && lock(&ctx.departures).is_lingering(&id);
        if !quiet {
            ctx.out
                .call(Event::PeerConnection {
                    id: id.clone(),
                    state: c.to,
                })
                .await;
        }
        if c.to == PeerConnectionState::Connected
            && c.from == PeerConnectionState::Reconnecting
            && opener
            && let Ok(dc) = remote.create_data_channel("meshcall", None).await
        {
            tokio::spawn(pump_channel(dc, id.clone(), ctx.out.clone()));
        }
        if c.to == PeerConnectionState::Closed {
            break;
        }
    }
}

/// Starts the receive pipeline of one remote track and announces its stream.
async fn start_track(ctx: &PeerCtx, peer: &str, t: Arc<RemoteTrack>) {
    let stream_id = t.stream_id.clone().unwrap_or_else(|| t.track_id.clone());
    let role = StreamRole::from_metadata(t.metadata.as_ref());
    let key = (peer.to_string(), stream_id.clone());
    match t.kind.as_str() {
        "video" if !ctx.receive_video => {
            // Send-only: the SDK drops the packets nobody takes.
        }
        "video" => {
            let rx = match VideoReceiver::start(&t) {
                Ok(rx) => Arc::new(rx),
                Err(e) => {
                    debug!(error = %e, "video track not started");
                    return;
                }
            };
            let out = ctx.out.clone();
            let first = Arc::new(AtomicBool::new(false));
            let (p, s, started) = (peer.to_string(), stream_id.clone(), ctx.started);
            let weak = Arc::downgrade(&rx);
            rx.set_on_frame(Box::new(move || {
                if !first.swap(true, Ordering::Relaxed) {
                    let latency_us = weak.upgrade().and_then(|r| r.stats().last_latency_us);
                    out.try_call(Event::FirstFrame {
                        peer: p.clone(),
                        stream_id: s.clone(),
                        since_join: started.elapsed(),
                        latency_us,
                    });
                } else {
                    out.poke();
                }
            }));
            let has_audio = lock(&ctx.remote).audio.contains_key(&key);
            lock(&ctx.remote).video.insert(key, rx.clone());
            ctx.out
                .call(Event::StreamAdded {
                    peer: peer.to_string(),
                    stream_id,
                    role,
                    metadata: t.metadata.clone(),
                    video: Some(RemoteVideo(Arc::new(Feed(rx)))),
                    has_audio,
                })
                .await;
        }
        "audio" => {
            let rx = match AudioReceiver::start(&t, ctx.mixer.clone()) {
                Ok(rx) => rx,
                Err(e) => {
                    debug!(error = %e, "audio track not started");
                    return;
                }
            };
            let announce = {
                let mut m = lock(&ctx.remote);
                if let Some(&v) = m.volumes.get(peer) {
                    rx.set_gain(v);
                }
                let fresh = !m.audio.contains_key(&key);
                // a reconnect brings a new track object: replace, do not accumulate
                m.audio.insert(key.clone(), vec![rx]);
                fresh && !m.video.contains_key(&key)
            };
            if announce {
                ctx.out
                    .call(Event::StreamAdded {
                        peer: peer.to_string(),
                        stream_id,
                        role,
                        metadata: t.metadata.clone(),
                        video: None,
                        has_audio: true,
                    })
                    .await;
            }
        }
        other => warn!(kind = other, "ignoring a track of unknown kind"),
    }
}

async fn pump_channel(dc: crate::peer::DataChannel, peer: String, out: Out) {
    let mut events = dc.events();
    if dc.wait_open().await.is_err() {
        return;
    }
    out.send(EngineEvent::DataChannelOpen {
        peer: peer.clone(),
        label: dc.label().to_string(),
    })
    .await;
    let sender = dc.clone();
    let ticker = tokio::spawn(async move {
        let mut seq = 0u64;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            seq += 1;
            if sender
                .send_text(json!({"p2p_seq": seq}).to_string())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    while let Some(ev) = events.next_item().await {
        match ev {
            DcEvent::Message(DcMessage::Text(t)) => {
                let data = serde_json::from_str::<Value>(&t).unwrap_or(Value::String(t));
                out.send(EngineEvent::Data {
                    peer: peer.clone(),
                    via: "p2p",
                    kind: None,
                    data,
                })
                .await;
            }
            DcEvent::Message(DcMessage::Binary(b)) => {
                out.send(EngineEvent::Data {
                    peer: peer.clone(),
                    via: "p2p",
                    kind: None,
                    data: json!({"bytes": b.len()}),
                })
                .await;
            }
            DcEvent::Close => break,
            _ => {}
        }
    }
    ticker.abort();
}
