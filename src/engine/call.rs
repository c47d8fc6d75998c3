//! One call's life in the engine task: join, the command loop (mute, switch devices, share,
//! chat, troubleshooting), the periodic stats and levels, and leave.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::info;

use super::api::*;
use super::call_media::*;
use super::credentials::*;
use super::handle::*;
use super::messages::AppMessage;
use super::watch::*;
use super::{MAX_CHAT_CHARS, devices, local, lock, sounds};
use crate::client::ClientOptions;
use crate::media::MediaError;
use crate::media::mixer::{AudioReceiver, Mixer};
use crate::media::processing::{WebRtcProcessor, shared};
use crate::media::send::{AudioSender, TrackSpec, VideoSendSettings, VideoSender};
use crate::media::source::VideoSource;
use crate::peer::{MeteredPeer, PeerSettings};

/// Per-call state owned by the engine task.
pub(super) struct Call {
    pub(super) peer: MeteredPeer,
    pub(super) media: CallMedia,
    pub(super) started: Instant,
    pub(super) mic_muted: Arc<AtomicBool>,
    pub(super) camera_off: Arc<AtomicBool>,
    pub(super) req: JoinRequest,
    /// The stream id of the camera and microphone tracks (one "camera" stream per participant).
    pub(super) stream_id: String,
    /// In-process test participants (their own engines).
    pub(super) guests: Vec<EngineHandle>,
    pub(super) _local_server: Option<local::LocalServer>,
    /// When the microphone was last replaced after it failed (so a default that fails at once
    /// falls back to the tone instead of being retried every second).
    pub(super) mic_recovered_at: Option<Instant>,
    pub(super) camera_recovered_at: Option<Instant>,
    pub(super) speaker_recovered_at: Option<Instant>,
    /// Media stages that died (a panic) and were reported to the user, so each is told once.
    pub(super) reported_failures: std::collections::HashSet<String>,
    /// Devices present at the last scan, to announce new ones.
    pub(super) device_watch: devices::DeviceWatch,
    pub(super) device_scan: Option<tokio::task::JoinHandle<devices::Inventory>>,
    pub(super) last_device_scan: Option<Instant>,
    pub(super) sounds: Arc<sounds::Sounds>,
}

pub(super) async fn run(mut cmds: mpsc::Receiver<Command>, out: Out, options: EngineOptions) {
    let mut call: Option<Call> = None;
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<CallEnded>(8);
    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    let mut level_tick = tokio::time::interval(Duration::from_millis(100));
    let mut levels_gate = LevelsGate::default();
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
                            out.notice(ErrorKind::Notice, "already in a call; leave first".into()).await;
                            continue;
                        }
                        out.call(Event::CallState { state: CallState::Joining, since: None }).await;
                        match join(*req, &out, &options, fatal_tx.clone()).await {
                            Ok(c) => call = Some(c),
                            Err(e) => {
                                out.fatal(e.kind(), e.to_string(), e.close_code()).await;
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
                            out.notice(ErrorKind::Notice, "not in a call".into()).await;
                        }
                    }
                }
            }
            Some(ended) = fatal_rx.recv() => {
                out.fatal(ErrorKind::CallEnded, ended.message, ended.close_code).await;
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
                    report_media_failures(c, &out).await;
                    if let Some(every) = options.device_scan_every {
                        devices::watch_devices(c, &out, every).await;
                    }
                    out.call(Event::Stats(Box::new(stats(c)))).await;
                }
            }
            _ = level_tick.tick(), if call.is_some() => {
                if let Some(c) = &call {
                    let local = c.media.mic.as_ref().map_or(0.0, |m| m.level());
                    let peers: Vec<(String, f32)> = {
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
                    if options.keepalive_data.is_none()
                        && levels_gate.should_send(local, &peers, Instant::now())
                    {
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

/// Below this RMS nobody makes a sound worth showing (half the UI's speaking threshold).
const AUDIBLE_LEVEL: f32 = 0.01;
/// In silence, levels still go out this often (so the UI's view never goes stale).
const SILENT_LEVELS_EVERY: Duration = Duration::from_secs(1);

/// Decides which level readings go to the UI: every one (ten a second) while anybody makes a
/// sound, since the speaking highlight and the "you are muted" notice follow them; in silence
/// only the first and then one a second. Each event wakes the UI for a repaint, and a quiet
/// call should not cost ten repaints a second.
#[derive(Debug, Default)]
pub(super) struct LevelsGate {
    /// When the last reading was sent, and whether it was silent.
    last_sent: Option<(Instant, bool)>,
}

impl LevelsGate {
    pub(super) fn should_send(
        &mut self,
        local: f32,
        peers: &[(String, f32)],
        now: Instant,
    ) -> bool {
        let silent = local < AUDIBLE_LEVEL && peers.iter().all(|(_, l)| *l < AUDIBLE_LEVEL);
        let send = match self.last_sent {
            None => true,
            Some((at, was_silent)) => {
                !(silent && was_silent) || now.saturating_duration_since(at) >= SILENT_LEVELS_EVERY
            }
        };
        if send {
            self.last_sent = Some((now, silent));
        }
        send
    }
}

/// A media stage that panicked (a bug) stops its part of the call: say so once, in words,
/// rather than leave a track that silently sends or plays nothing.
pub(super) async fn report_media_failures(c: &mut Call, out: &Out) {
    let mut failures = Vec::new();
    if let Some(why) = c.media.camera.as_ref().and_then(|v| v.stats().failed) {
        failures.push(("Your video stopped", why));
    }
    if let Some(why) = c.media.screen.as_ref().and_then(|v| v.stats().failed) {
        failures.push(("Your screen share stopped", why));
    }
    if let Some(why) = c.media.mic.as_ref().and_then(|a| a.stats().failed) {
        failures.push(("Your microphone stopped", why));
    }
    if let Some(why) = c.media.mixer.failure() {
        failures.push(("Remote audio stopped", why));
    }
    for (what, why) in failures {
        if c.reported_failures.insert(why.clone()) {
            out.notice(
                ErrorKind::Device,
                format!("{what} because of an internal error ({why}); rejoin to restore it."),
            )
            .await;
        }
    }
}

pub(super) fn stats(c: &Call) -> StatsSnapshot {
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

pub(super) async fn join(
    req: JoinRequest,
    out: &Out,
    options: &EngineOptions,
    fatal: mpsc::Sender<CallEnded>,
) -> Result<Call, JoinError> {
    let mut local_server = None;
    let (origin, credential) = credential_for(&req, &options.local, &mut local_server).await?;
    let settings = if req.loopback_only {
        PeerSettings::loopback_only()
    } else {
        PeerSettings::default()
    };
    let peer = MeteredPeer::new(ClientOptions::new(origin, credential), settings)
        .map_err(|e| JoinError::Setup(e.to_string()))?;
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
            out.notice(
                ErrorKind::Device,
                format!("speaker: {e}; remote audio is not played"),
            )
            .await;
            Box::new(crate::media::devices::NullSink::new())
        }
    };
    let (mixer, playout) = Mixer::start(sink).map_err(|e| JoinError::Setup(e.to_string()))?;
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
            .map_err(|e| JoinError::Setup(e.to_string()))?;
        announce_preview(out, v).await;
    }
    if let Some(a) = &mic {
        peer.add_media(a.media(), meta.clone())
            .await
            .map_err(|e| JoinError::Setup(e.to_string()))?;
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
        reported_failures: std::collections::HashSet::new(),
        device_watch: devices::DeviceWatch::default(),
        device_scan: None,
        last_device_scan: None,
        sounds: sounds::Sounds::new(media_mixer, req.sounds, started),
    };
    watch_peer(&call, out.clone(), fatal, options.keepalive_data.is_some());
    if let Err(e) = peer.join(&req.room, true).await {
        peer.close().await;
        return Err(JoinError::refused(&req.room, &e));
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
pub(super) async fn announce_preview(out: &Out, v: &Arc<VideoSender>) {
    let poke = out.clone();
    v.set_on_frame(Box::new(move || poke.poke()));
    out.call(Event::LocalPreview(Some(RemoteVideo(Arc::new(
        PreviewFeed(v.clone()),
    )))))
    .await;
}

/// A device that fails is reported (not fatal) and the call goes on without it.
pub(super) async fn report_device_error<T>(
    out: &Out,
    what: &str,
    r: Result<Option<T>, MediaError>,
) -> Option<T> {
    match r {
        Ok(v) => v,
        Err(e) => {
            out.notice(ErrorKind::Device, format!("{what}: {e}")).await;
            None
        }
    }
}

/// Sends a meshcall control or chat message to every other participant as *direct* messages.
/// Receivers accept these only as directs from a member: a server-side publish (REST) can put
/// any `from` on a broadcast, so a broadcast could be forged.
pub(super) async fn send_to_all(peer: &MeteredPeer, data: Value) -> Result<(), String> {
    let mut first_error = None;
    for r in peer.remote_peers() {
        if let Err(e) = peer.send_to(r.id(), data.clone()).await {
            first_error.get_or_insert(e.to_string());
        }
    }
    first_error.map_or(Ok(()), Err)
}

pub(super) fn status_message(c: &Call) -> Value {
    AppMessage::Status {
        mic_muted: c.mic_muted.load(Ordering::Relaxed),
        camera_off: c.camera_off.load(Ordering::Relaxed),
    }
    .to_value()
}

pub(super) async fn handle(c: &mut Call, cmd: Command, out: &Out, options: &EngineOptions) {
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
                out.notice(
                    ErrorKind::Device,
                    format!("speaker: {e}; still playing on the previous one"),
                )
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
                out.notice(ErrorKind::ScreenShare, format!("screen share: {e}"))
                    .await;
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
            if let Err(e) = send_to_all(&c.peer, AppMessage::Chat { text }.to_value()).await {
                out.notice(ErrorKind::Notice, format!("chat not sent: {e}"))
                    .await;
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
                    out.notice(
                        ErrorKind::Notice,
                        format!("blackhole: nobody called {peer:?} is in the call"),
                    )
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
                out.notice(ErrorKind::Notice, "a test participant needs a secret, a publishable key or \"this computer\" (a token names one peer)".into()).await;
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

pub(super) async fn handle_set_camera_enabled(c: &mut Call, on: bool) {
    c.camera_off.store(!on, Ordering::Relaxed);
    if let Some(v) = &c.media.camera {
        v.set_paused(!on);
    }
    let _ = send_to_all(&c.peer, status_message(c)).await;
}

pub(super) fn camera_settings(req: &JoinRequest) -> VideoSendSettings {
    VideoSendSettings {
        encoder: crate::media::h264::EncoderSettings {
            bitrate_bps: req.bitrate_bps,
            fps: req.fps,
        },
        ..VideoSendSettings::default()
    }
}

/// Switches the camera in place, or starts sending video if the call had none.
pub(super) async fn set_camera(c: &mut Call, choice: VideoChoice, out: &Out) {
    if choice == VideoChoice::None {
        handle_set_camera_enabled(c, false).await;
        c.req.video = choice;
        return;
    }
    let src = match open_video(&choice, c.req.width, c.req.height, c.req.fps) {
        Ok(Some(src)) => src,
        Ok(None) => return,
        Err(e) => {
            out.notice(
                ErrorKind::Device,
                format!("camera: {e}; keeping the previous one"),
            )
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
                    out.notice(ErrorKind::Device, format!("camera: {e}")).await;
                    return;
                }
            };
            if let Err(e) = c
                .peer
                .add_media(v.media(), Some(json!({"role": "camera"})))
                .await
            {
                out.notice(ErrorKind::Device, format!("camera: {e}")).await;
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
pub(super) async fn start_screen_share(c: &mut Call, choice: VideoChoice) -> Result<(), String> {
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
pub(super) fn set_camera_source(c: &mut Call, choice: VideoChoice, src: Box<dyn VideoSource>) {
    info!(?choice, "camera switched");
    c.req.video = choice;
    if let Some(v) = &c.media.camera {
        v.replace_source(src);
    }
}

/// Switches the microphone in place, or starts sending audio if the call had none.
pub(super) async fn set_microphone(c: &mut Call, choice: AudioChoice, out: &Out) {
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
            out.notice(
                ErrorKind::Device,
                format!("microphone: {e}; keeping the previous one"),
            )
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
                    out.notice(ErrorKind::Device, format!("microphone: {e}"))
                        .await;
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
                out.notice(ErrorKind::Device, format!("microphone: {e}"))
                    .await;
                return;
            }
            c.media.mic = Some(a);
        }
    }
}

pub(super) async fn leave(c: Call, out: &Out) {
    for g in &c.guests {
        g.send(Command::Leave);
    }
    // Say goodbye first, so the others remove us at once instead of waiting for us to come
    // back (see `departures`). Server-routed and acknowledged, so it arrives before our
    // presence `left`; bounded, because a dead server must not hold up leaving.
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        send_to_all(&c.peer, AppMessage::Bye.to_value()),
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

#[cfg(test)]
mod levels_gate_tests {
    use super::*;

    #[test]
    fn levels_flow_while_anyone_is_audible_and_trickle_in_silence() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut g = LevelsGate::default();
        let quiet = vec![("bob".to_string(), 0.001)];
        let talking = vec![("bob".to_string(), 0.2)];
        assert!(
            g.should_send(0.0, &quiet, at(0)),
            "the first reading goes out"
        );
        let sent: usize = (1..10)
            .filter(|i| g.should_send(0.0, &quiet, at(i * 100)))
            .count();
        assert_eq!(sent, 0, "silence is not repeated within a second");
        assert!(g.should_send(0.0, &quiet, at(1000)), "but once a second");
        for i in 11..20 {
            assert!(
                g.should_send(0.0, &talking, at(i * 100)),
                "speech goes out every tick"
            );
        }
        assert!(
            g.should_send(0.0, &quiet, at(2000)),
            "the first silent reading after speech clears the UI's highlight"
        );
        assert!(!g.should_send(0.0, &quiet, at(2100)));
        assert!(
            g.should_send(0.05, &quiet, at(2200)),
            "the local microphone counts too (the muted notice)"
        );
    }
}
