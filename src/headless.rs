//! `meshcall join --headless`: a scriptable peer on the call engine. It joins a room, sends and
//! receives media (`--video`, `--audio`), opens a data channel to every peer, sends a data
//! message every second (server-routed and P2P), and prints one JSON object per line for every
//! event. Outside harnesses rely on this contract (README): every line has an `"event"` field
//! (`joined`, `peer-joined`, `peer-left`, `state-change`, `stream-added`, `stream-removed`,
//! `data`, `dc-open`, `first-frame`, `stats`, `simulate`, `error`, `left`), a `"t_ms"` field
//! (since start), and a `"peer"` field where one applies.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thiserror::Error;

use crate::engine::api::{
    AudioChoice, Auth, CallState, Command, Event, JoinRequest, Simulation, SpeakerChoice,
    VideoChoice,
};
use crate::engine::{EngineEvent, EngineOptions};

pub use crate::engine::peer_id_from_name;

/// How the headless peer authenticates.
#[derive(Debug, Clone)]
pub enum HeadlessAuth {
    Token(String),
    Key(String),
    /// Mint locally: (kid, secret).
    Secret {
        kid: String,
        secret: String,
    },
}

/// A troubleshooting action at a time after joining (`--simulate drop-signalling@10s`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledSimulation {
    pub at: Duration,
    pub action: SimulationAction,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SimulationAction {
    DropSignalling,
    /// ICE restart on one peer, or on every peer when `None`.
    RestartIce(Option<String>),
    /// Drop all traffic to and from one peer (every peer when `None`) for a while.
    BlackholeMedia {
        peer: Option<String>,
        duration: Duration,
    },
}

/// How long `blackhole-media@T` lasts when no `/SECONDS` is given.
pub const DEFAULT_BLACKHOLE: Duration = Duration::from_secs(10);

fn parse_seconds(s: &str, what: &str) -> Result<Duration, String> {
    let secs: f64 = what
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{s:?}: {what:?} is not a number of seconds"))?;
    if !(secs.is_finite() && (0.0..=86_400.0).contains(&secs)) {
        return Err(format!("{s:?}: times must be between 0 and 86400 s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `drop-signalling@10s`, `restart-ice@5s`, `restart-ice:bob-1a2b@2.5s`,
/// `blackhole-media@10s` (for [`DEFAULT_BLACKHOLE`]) and `blackhole-media:bob-1a2b@10s/8s`
/// (at 10 s, for 8 s).
pub fn parse_simulation(s: &str) -> Result<ScheduledSimulation, String> {
    let (what, when) = s
        .split_once('@')
        .ok_or_else(|| format!("{s:?}: expected ACTION@SECONDS, e.g. drop-signalling@10s"))?;
    let (at, length) = match when.split_once('/') {
        Some((at, length)) => (at, Some(parse_seconds(s, length)?)),
        None => (when, None),
    };
    let at = parse_seconds(s, at)?;
    let blackhole = |peer: Option<&str>| SimulationAction::BlackholeMedia {
        peer: peer.map(str::to_string),
        duration: length.unwrap_or(DEFAULT_BLACKHOLE),
    };
    if length.is_some() && !what.starts_with("blackhole-media") {
        return Err(format!(
            "{s:?}: only blackhole-media takes a /SECONDS length"
        ));
    }
    if length.is_some_and(|l| l.is_zero()) {
        return Err(format!("{s:?}: a blackhole needs a length above 0 s"));
    }
    let action = match what.split_once(':') {
        None if what == "blackhole-media" => blackhole(None),
        Some(("blackhole-media", peer)) if !peer.is_empty() => blackhole(Some(peer)),
        None if what == "drop-signalling" => SimulationAction::DropSignalling,
        None if what == "restart-ice" => SimulationAction::RestartIce(None),
        Some(("restart-ice", peer)) if !peer.is_empty() => {
            SimulationAction::RestartIce(Some(peer.to_string()))
        }
        _ => {
            return Err(format!(
                "{s:?}: unknown action (drop-signalling, restart-ice[:PEER], \
                 blackhole-media[:PEER][/SECONDS])"
            ));
        }
    };
    Ok(ScheduledSimulation { at, action })
}

#[derive(Debug, Clone)]
pub struct HeadlessOptions {
    pub server: String,
    pub room: String,
    pub name: String,
    /// Peer id used when minting locally (default: derived from the name).
    pub peer_id: Option<String>,
    pub auth: HeadlessAuth,
    pub duration: Option<Duration>,
    pub data_interval: Duration,
    /// Restrict ICE to 127.0.0.1 (tests, demos on one machine).
    pub loopback_only: bool,
    pub video: VideoChoice,
    pub audio: AudioChoice,
    /// Where remote audio is played (`--speaker`; default: discarded).
    pub speaker: SpeakerChoice,
    pub width: usize,
    pub height: usize,
    pub fps: f32,
    pub simulate: Vec<ScheduledSimulation>,
    /// Print a `stats` line every this often.
    pub stats_interval: Option<Duration>,
    /// Decode remote video (off for send-only load generators).
    pub receive_video: bool,
    /// `--audio-processing` (`None`: the default for the source).
    pub audio_processing: Option<crate::media::processing::ProcessingSettings>,
}

impl HeadlessOptions {
    /// Defaults for everything but the essentials (no media, data every second).
    pub fn new(server: &str, room: &str, name: &str, auth: HeadlessAuth) -> HeadlessOptions {
        HeadlessOptions {
            server: server.into(),
            room: room.into(),
            name: name.into(),
            peer_id: None,
            auth,
            duration: None,
            data_interval: Duration::from_secs(1),
            loopback_only: false,
            video: VideoChoice::None,
            audio: AudioChoice::None,
            speaker: SpeakerChoice::None,
            width: 640,
            height: 480,
            fps: 30.0,
            simulate: Vec::new(),
            stats_interval: None,
            receive_video: true,
            audio_processing: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum HeadlessError {
    #[error("fatal: {0}")]
    Fatal(String),
    #[error("the engine stopped unexpectedly")]
    EngineGone,
}

fn state_name(s: CallState) -> &'static str {
    match s {
        CallState::Idle => "idle",
        CallState::Joining => "joining",
        CallState::Joined => "joined",
        CallState::Reconnecting => "reconnecting",
        CallState::Left => "closed",
    }
}

/// Runs until `duration` passes, Ctrl-C, or a fatal error. Lines go to stdout.
pub async fn run(opts: HeadlessOptions) -> Result<(), HeadlessError> {
    let started = Instant::now();
    let ms = move || (started.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    let stdout = std::io::stdout();
    let print = |mut v: Value| {
        if let Some(o) = v.as_object_mut() {
            o.insert("t_ms".into(), json!(ms()));
        }
        let mut lock = stdout.lock();
        let _ = writeln!(lock, "{v}");
        let _ = lock.flush();
    };
    let engine = crate::engine::spawn(
        &tokio::runtime::Handle::current(),
        EngineOptions {
            notify: None,
            keepalive_data: Some(opts.data_interval),
            local: Default::default(),
            device_scan_every: None,
        },
    );
    let (cmd, mut events) = engine.into_parts();
    let auth = match &opts.auth {
        HeadlessAuth::Token(t) => Auth::Token(t.clone()),
        HeadlessAuth::Key(k) => Auth::Key(k.clone()),
        HeadlessAuth::Secret { kid, secret } => Auth::Secret {
            kid: kid.clone(),
            secret: secret.clone(),
        },
    };
    let mut req = JoinRequest::new(&opts.server, &opts.room, &opts.name, auth);
    req.video = opts.video.clone();
    req.audio = opts.audio.clone();
    req.speaker = opts.speaker.clone();
    req.width = opts.width;
    req.height = opts.height;
    req.fps = opts.fps;
    req.loopback_only = opts.loopback_only;
    req.peer_id = opts.peer_id.clone();
    req.audio_processing = opts.audio_processing;
    // A bot does not chime when people come and go.
    req.sounds = false;
    req.receive_video = opts.receive_video;
    if cmd.send(Command::Join(Box::new(req))).await.is_err() {
        return Err(HeadlessError::EngineGone);
    }

    let mut call_state = CallState::Idle;
    let mut peer_states: HashMap<String, &'static str> = HashMap::new();
    let mut fatal: Option<String> = None;
    let mut joined_at: Option<tokio::time::Instant> = None;
    let mut pending_sims = opts.simulate.clone();
    pending_sims.sort_by_key(|s| s.at);
    let mut sim_tick = tokio::time::interval(Duration::from_millis(50));
    let stats_every = opts.stats_interval.unwrap_or(Duration::from_secs(3600));
    let mut last_stats = Instant::now();
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut leaving = false;
    let mut leave_deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    EngineEvent::Data { peer, via, kind, data } => {
                        let mut line = json!({"event":"data","peer":peer,"via":via,"data":data});
                        if let Some(k) = kind {
                            line["kind"] = json!(k);
                        }
                        print(line);
                    }
                    EngineEvent::DataChannelOpen { peer, label } => {
                        print(json!({"event":"dc-open","peer":peer,"label":label}));
                    }
                    EngineEvent::Call(e) => match e {
                        Event::Joined { self_id, room } => {
                            joined_at = Some(tokio::time::Instant::now());
                            print(json!({"event":"joined","peer":self_id,"room":room}));
                        }
                        Event::CallState { state, .. } => {
                            if state != call_state {
                                print(json!({"event":"state-change","from":state_name(call_state),"to":state_name(state)}));
                                call_state = state;
                            }
                        }
                        Event::PeerJoined { id, metadata, name } => {
                            print(json!({"event":"peer-joined","peer":id,"name":name,"metadata":metadata}));
                        }
                        Event::PeerLeft { id } => {
                            peer_states.remove(&id);
                            print(json!({"event":"peer-left","peer":id}));
                        }
                        Event::PeerConnection { id, state } => {
                            let to = state.as_str();
                            let from = peer_states.insert(id.clone(), to).unwrap_or("new");
                            if from != to {
                                print(json!({"event":"state-change","peer":id,"from":from,"to":to}));
                            }
                        }
                        Event::StreamAdded { peer, stream_id, metadata, video, has_audio, .. } => {
                            let mut kinds = Vec::new();
                            if video.is_some() {
                                kinds.push("video");
                            }
                            if has_audio || video.is_none() {
                                kinds.push("audio");
                            }
                            print(json!({"event":"stream-added","peer":peer,"stream":stream_id,"metadata":metadata,"kinds":kinds}));
                        }
                        Event::StreamRemoved { peer, stream_id } => {
                            print(json!({"event":"stream-removed","peer":peer,"stream":stream_id}));
                        }
                        Event::FirstFrame { peer, stream_id, since_join, latency_us } => {
                            print(json!({
                                "event":"first-frame","peer":peer,"stream":stream_id,"kind":"video",
                                "since_join_ms": (since_join.as_secs_f64() * 10_000.0).round() / 10.0,
                                "latency_ms": latency_us.map(|l| (l as f64 / 100.0).round() / 10.0),
                            }));
                        }
                        Event::Stats(s) => {
                            if opts.stats_interval.is_some() && last_stats.elapsed() >= stats_every {
                                last_stats = Instant::now();
                                let remote: Vec<Value> = s.remote_video.iter().map(|(p, st, r)| json!({
                                    "peer": p, "stream": st, "fps": (r.fps * 10.0).round() / 10.0,
                                    "kbps": r.bitrate_bps / 1000, "width": r.width, "height": r.height,
                                    "frames_decoded": r.frames_decoded, "packets_lost": r.packets_lost,
                                    "decode_ms": (r.avg_decode_ms() * 100.0).round() / 100.0,
                                    "latency_ms": r.last_latency_us.map(|l| (l as f64 / 100.0).round() / 10.0),
                                })).collect();
                                let local = s.local_video.as_ref().map(|v| json!({
                                    "fps": (v.fps * 10.0).round() / 10.0, "kbps": v.bitrate_bps / 1000,
                                    "target_kbps": v.target_bitrate_bps / 1000, "peers": v.peers,
                                    "encode_ms": (v.avg_encode_ms() * 100.0).round() / 100.0,
                                    "loss": v.loss_fraction, "rtt_ms": v.rtt_ms,
                                }));
                                let audio_out = s.audio_out.as_ref().map(|a| json!({
                                    "level_dbfs": (a.level_dbfs * 10.0).round() / 10.0,
                                    "processing": a.processing, "delay_ms": a.delay_ms,
                                }));
                                let audio_in: Vec<Value> = s.remote_audio.iter().map(|(p, st, l)| json!({
                                    "peer": p, "stream": st, "level_dbfs": (l * 10.0).round() / 10.0,
                                })).collect();
                                print(json!({"event":"stats","video_out":local,"video_in":remote,
                                    "audio_out":audio_out,"audio_in":audio_in}));
                            }
                        }
                        Event::Error { message, fatal: is_fatal, .. } => {
                            print(json!({"event":"error","fatal":is_fatal,"message":message}));
                            if is_fatal {
                                fatal = Some(message);
                            }
                        }
                        Event::Left => {
                            print(json!({"event":"left"}));
                            break;
                        }
                        Event::RemoteStatus { peer, mic_muted, camera_off } => {
                            print(json!({"event":"status","peer":peer,"mic_muted":mic_muted,"camera_off":camera_off}));
                        }
                        Event::Chat { from, name, text } => {
                            print(json!({"event":"chat","peer":from,"name":name,"text":text}));
                        }
                        Event::LocalMedia { camera_off, sharing } => {
                            print(json!({"event":"local_media","camera_off":camera_off,"sharing":sharing}));
                        }
                        Event::Levels { .. } | Event::LocalPreview(_) => {}
                    },
                }
                if fatal.is_some() && call_state == CallState::Idle {
                    break; // the join itself failed
                }
            }
            _ = sim_tick.tick(), if joined_at.is_some() && !pending_sims.is_empty() => {
                let since = joined_at.map(|j| j.elapsed()).unwrap_or_default();
                while pending_sims.first().is_some_and(|s| s.at <= since) {
                    let s = pending_sims.remove(0);
                    match &s.action {
                        SimulationAction::DropSignalling => {
                            print(json!({"event":"simulate","action":"drop-signalling"}));
                            let _ = cmd.send(Command::Simulate(Simulation::DropSignalling)).await;
                        }
                        SimulationAction::RestartIce(peer) => {
                            let targets: Vec<String> = match peer {
                                Some(p) => vec![p.clone()],
                                None => peer_states.keys().cloned().collect(),
                            };
                            for p in targets {
                                print(json!({"event":"simulate","action":"restart-ice","peer":p}));
                                let _ = cmd.send(Command::Simulate(Simulation::RestartIce { peer: p })).await;
                            }
                        }
                        SimulationAction::BlackholeMedia { peer, duration } => {
                            let targets: Vec<String> = match peer {
                                Some(p) => vec![p.clone()],
                                None => peer_states.keys().cloned().collect(),
                            };
                            for p in targets {
                                print(json!({"event":"simulate","action":"blackhole-media","peer":p,"seconds":duration.as_secs_f64()}));
                                let _ = cmd.send(Command::Simulate(Simulation::BlackholeMedia { peer: p, duration: *duration })).await;
                            }
                        }
                    }
                }
            }
            _ = tokio::signal::ctrl_c(), if !leaving => {
                leaving = true;
                leave_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                let _ = cmd.send(Command::Leave).await;
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } }, if !leaving => {
                leaving = true;
                leave_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                let _ = cmd.send(Command::Leave).await;
            }
            _ = async { match leave_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                print(json!({"event":"left","note":"leave timed out"}));
                break;
            }
        }
    }
    match fatal {
        Some(f) => Err(HeadlessError::Fatal(f)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulation_flags_parse_and_refuse_nonsense() {
        assert_eq!(
            parse_simulation("drop-signalling@10s"),
            Ok(ScheduledSimulation {
                at: Duration::from_secs(10),
                action: SimulationAction::DropSignalling
            })
        );
        assert_eq!(
            parse_simulation("restart-ice:bob-12@2.5").map(|s| s.action),
            Ok(SimulationAction::RestartIce(Some("bob-12".into())))
        );
        assert_eq!(
            parse_simulation("restart-ice@0s").map(|s| s.action),
            Ok(SimulationAction::RestartIce(None))
        );
        assert_eq!(
            parse_simulation("blackhole-media@10s").map(|s| s.action),
            Ok(SimulationAction::BlackholeMedia {
                peer: None,
                duration: DEFAULT_BLACKHOLE
            })
        );
        assert_eq!(
            parse_simulation("blackhole-media:bob-12@3s/8.5s"),
            Ok(ScheduledSimulation {
                at: Duration::from_secs(3),
                action: SimulationAction::BlackholeMedia {
                    peer: Some("bob-12".into()),
                    duration: Duration::from_millis(8500)
                }
            })
        );
        for bad in [
            "blackhole-media@1s/0",
            "blackhole-media@1s/x",
            "drop-signalling@1s/5s",
            "blackhole-media:@1s",
            "drop-signalling",
            "x@1s",
            "restart-ice:@1",
            "drop-signalling@-1",
            "drop-signalling@nan",
            "drop-signalling@1e9",
        ] {
            assert!(parse_simulation(bad).is_err(), "{bad}");
        }
    }
}
