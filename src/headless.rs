//! `meshcall join --headless`: a scriptable peer. It joins a room, opens a data channel to every
//! peer, sends a data message every second (server-routed and P2P), and prints one JSON object
//! per line for every event. Outside harnesses rely on this contract (README): every line has an
//! `"event"` field (`joined`, `peer-joined`, `peer-left`, `state-change`, `stream-added`,
//! `stream-removed`, `data`, `first-frame`, `error`, `left`) and a `"peer"` field where one applies.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thiserror::Error;
use tokio::sync::mpsc;

use crate::auth::{Actions, MintRequest, PatternSet, Secret, SecretKey, mint};
use crate::client::{ClientOptions, Credential};
use crate::peer::{
    DcEvent, DcMessage, MeteredPeer, PeerError, PeerEventError, PeerSettings, RemotePeer,
};

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
}

#[derive(Debug, Error)]
pub enum HeadlessError {
    #[error("invalid --secret: {0}")]
    Secret(String),
    #[error("{0}")]
    Peer(#[from] PeerError),
    #[error("fatal: {0}")]
    Fatal(String),
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A peer id derived from a display name: lowercase ASCII letters/digits, plus a random suffix
/// so that two "Alice" bots do not collide.
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

fn credential(opts: &HeadlessOptions) -> Result<Credential, HeadlessError> {
    Ok(match &opts.auth {
        HeadlessAuth::Token(t) => {
            let t = t.clone();
            Credential::token_provider(move || {
                let t = t.clone();
                async move { Ok::<String, String>(t) }
            })
        }
        HeadlessAuth::Key(k) => Credential::api_key(k.clone()),
        HeadlessAuth::Secret { kid, secret } => {
            if secret.len() < 16 {
                return Err(HeadlessError::Secret(
                    "the secret must be at least 16 bytes".into(),
                ));
            }
            let key = Arc::new(SecretKey {
                kid: kid.clone(),
                secret: Secret::new(secret.as_bytes().to_vec()),
                channel_patterns: PatternSet::any(),
                actions: Actions::all(),
            });
            let sub = opts
                .peer_id
                .clone()
                .unwrap_or_else(|| peer_id_from_name(&opts.name));
            let name = opts.name.clone();
            let room = opts.room.clone();
            // A fresh token on every (re)connect, as the official SDKs expect of a provider.
            Credential::token_provider(move || {
                let req = MintRequest {
                    sub: sub.clone(),
                    channels: Some(vec![crate::auth::glob::escape(&room)]),
                    ttl_secs: 3600,
                    peer_metadata: Some(json!({"username": name})),
                    ..MintRequest::default()
                };
                let r = mint(&key, &req, now_unix())
                    .map(|(t, _)| t)
                    .map_err(|e| e.to_string());
                async move { r }
            })
        }
    })
}

/// Runs until `duration` passes, Ctrl-C, or a fatal error. Lines go to stdout.
pub async fn run(opts: HeadlessOptions) -> Result<(), HeadlessError> {
    let (out_tx, mut out_rx) = mpsc::channel::<Value>(1024);
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let printer = tokio::spawn(async move {
        let stdout = std::io::stdout();
        let print = |v: Value| {
            let mut lock = stdout.lock();
            let _ = writeln!(lock, "{v}");
            let _ = lock.flush();
        };
        loop {
            tokio::select! {
                v = out_rx.recv() => match v {
                    Some(v) => print(v),
                    None => break,
                },
                _ = &mut done_rx => {
                    // Watcher tasks may still hold senders: print what is queued and stop.
                    while let Ok(v) = out_rx.try_recv() {
                        print(v);
                    }
                    break;
                }
            }
        }
    });
    let result = run_inner(opts, out_tx).await;
    let _ = done_tx.send(());
    let _ = printer.await;
    result
}

async fn run_inner(opts: HeadlessOptions, out: mpsc::Sender<Value>) -> Result<(), HeadlessError> {
    let settings = if opts.loopback_only {
        PeerSettings::loopback_only()
    } else {
        PeerSettings::default()
    };
    let peer = MeteredPeer::new(
        ClientOptions::new(opts.server.clone(), credential(&opts)?),
        settings,
    )?;
    let started = Instant::now();
    let ms = move || (started.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0;

    // Watchers first, so nothing is missed.
    {
        let mut joined = peer.on_peer_joined();
        let out = out.clone();
        let me = peer.clone();
        tokio::spawn(async move {
            while let Some(remote) = joined.next_item().await {
                let _ = out
                    .send(json!({"event":"peer-joined","peer":remote.id(),"metadata":remote.metadata(),"t_ms":ms()}))
                    .await;
                tokio::spawn(watch_remote(me.clone(), remote, out.clone(), started));
            }
        });
    }
    {
        let mut left = peer.on_peer_left();
        let out = out.clone();
        tokio::spawn(async move {
            while let Some(remote) = left.next_item().await {
                let _ = out
                    .send(json!({"event":"peer-left","peer":remote.id(),"t_ms":ms()}))
                    .await;
            }
        });
    }
    {
        let mut data = peer.on_data();
        let out = out.clone();
        tokio::spawn(async move {
            while let Some(d) = data.next_item().await {
                let _ = out
                    .send(json!({"event":"data","peer":d.from,"via":"server","kind":d.kind,"data":d.data,"t_ms":ms()}))
                    .await;
            }
        });
    }
    {
        let mut states = peer.state_changes();
        let out = out.clone();
        tokio::spawn(async move {
            while let Some(c) = states.next_item().await {
                let _ = out
                    .send(json!({"event":"state-change","from":c.from.as_str(),"to":c.to.as_str(),"t_ms":ms()}))
                    .await;
            }
        });
    }
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<String>(4);
    {
        let mut errors = peer.errors();
        let out = out.clone();
        tokio::spawn(async move {
            while let Some(e) = errors.next_item().await {
                let (line, fatal) = match &e {
                    PeerEventError::Fatal { code, message } => (
                        json!({"event":"error","fatal":true,"code":code,"message":message}),
                        true,
                    ),
                    PeerEventError::ReconcileTimeout => (
                        json!({"event":"error","fatal":true,"message":"reconcile timed out"}),
                        true,
                    ),
                    PeerEventError::IceRecoveryExhausted { peer, attempts } => (
                        json!({"event":"error","peer":peer,"fatal":false,"message":format!("ICE recovery exhausted after {attempts} attempts")}),
                        false,
                    ),
                    PeerEventError::TokenProvider { message, .. } => (
                        json!({"event":"error","fatal":false,"message":message}),
                        false,
                    ),
                };
                let _ = out.send(line).await;
                if fatal {
                    let _ = fatal_tx.send(format!("{e:?}")).await;
                }
            }
        });
    }

    if let Err(e) = peer.join(&opts.room, true).await {
        let _ = out
            .send(json!({"event":"error","fatal":true,"message":e.to_string()}))
            .await;
        return Err(e.into());
    }
    let _ = out
        .send(json!({"event":"joined","peer":peer.peer_id(),"room":opts.room,"t_ms":ms()}))
        .await;

    let mut tick = tokio::time::interval(opts.data_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let result = loop {
        tokio::select! {
            _ = tick.tick() => {
                seq += 1;
                let _ = peer.send(json!({"seq": seq, "from_name": opts.name})).await;
            }
            Some(reason) = fatal_rx.recv() => break Err(HeadlessError::Fatal(reason)),
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break Ok(()),
        }
    };
    peer.close().await;
    let _ = out.send(json!({"event":"left","t_ms":ms()})).await;
    result
}

/// Per remote peer: state changes, streams, and a data channel that pings every second.
async fn watch_remote(
    me: MeteredPeer,
    remote: RemotePeer,
    out: mpsc::Sender<Value>,
    started: Instant,
) {
    let ms = move || (started.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    let id = remote.id().to_string();
    {
        let mut added = remote.on_stream_added();
        let (out, id) = (out.clone(), id.clone());
        tokio::spawn(async move {
            while let Some(s) = added.next_item().await {
                let kinds: Vec<String> = s.tracks.iter().map(|t| t.kind.clone()).collect();
                let _ = out
                    .send(json!({"event":"stream-added","peer":id,"stream":s.stream_id,"metadata":s.metadata,"kinds":kinds,"t_ms":ms()}))
                    .await;
                // Until the media layer decodes, the first RTP packet stands for the first frame.
                for t in s.tracks {
                    if let Some(mut rtp) = t.take_rtp() {
                        let (out, id, stream) = (out.clone(), id.clone(), s.stream_id.clone());
                        tokio::spawn(async move {
                            if rtp.recv().await.is_some() {
                                let _ = out
                                    .send(json!({"event":"first-frame","peer":id,"stream":stream,"kind":t.kind,"t_ms":ms(),"note":"first RTP packet (no decoder yet)"}))
                                    .await;
                            }
                            while rtp.recv().await.is_some() {}
                        });
                    }
                }
            }
        });
    }
    {
        let mut removed = remote.on_stream_removed();
        let (out, id) = (out.clone(), id.clone());
        tokio::spawn(async move {
            while let Some(s) = removed.next_item().await {
                let _ = out.send(json!({"event":"stream-removed","peer":id,"stream":s.stream_id,"t_ms":ms()})).await;
            }
        });
    }
    {
        let mut incoming = remote.on_data_channel();
        let (out, id) = (out.clone(), id.clone());
        tokio::spawn(async move {
            while let Some(dc) = incoming.next_item().await {
                tokio::spawn(pump_channel(dc, id.clone(), out.clone(), started, false));
            }
        });
    }
    let mut states = remote.state_changes();
    // The lower id opens the channel (the other side gets it through on_data_channel).
    let opener = me.peer_id().is_some_and(|mine| mine.as_str() < id.as_str());
    if opener {
        match remote.create_data_channel("meshcall", None).await {
            Ok(dc) => {
                tokio::spawn(pump_channel(dc, id.clone(), out.clone(), started, true));
            }
            Err(e) => {
                let _ = out
                    .send(json!({"event":"error","peer":id,"fatal":false,"message":e.to_string()}))
                    .await;
            }
        }
    }
    while let Some(c) = states.next_item().await {
        let _ = out
            .send(json!({"event":"state-change","peer":id,"from":c.from.as_str(),"to":c.to.as_str(),"t_ms":ms()}))
            .await;
        // Channels die with the connection: re-open after a reconcile swap.
        if c.to == crate::peer::PeerConnectionState::Connected
            && c.from == crate::peer::PeerConnectionState::Reconnecting
            && opener
            && let Ok(dc) = remote.create_data_channel("meshcall", None).await
        {
            tokio::spawn(pump_channel(dc, id.clone(), out.clone(), started, true));
        }
        if c.to == crate::peer::PeerConnectionState::Closed {
            break;
        }
    }
}

async fn pump_channel(
    dc: crate::peer::DataChannel,
    peer: String,
    out: mpsc::Sender<Value>,
    started: Instant,
    _opener: bool,
) {
    let ms = move || (started.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    let mut events = dc.events();
    if dc.wait_open().await.is_err() {
        return;
    }
    let _ = out
        .send(json!({"event":"dc-open","peer":peer,"label":dc.label(),"t_ms":ms()}))
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
                let _ = out
                    .send(json!({"event":"data","peer":peer,"via":"p2p","data":data,"t_ms":ms()}))
                    .await;
            }
            DcEvent::Message(DcMessage::Binary(b)) => {
                let _ = out
                    .send(
                        json!({"event":"data","peer":peer,"via":"p2p","bytes":b.len(),"t_ms":ms()}),
                    )
                    .await;
            }
            DcEvent::Close => break,
            _ => {}
        }
    }
    ticker.abort();
}
