//! From SDK events to engine events: the call-level MeteredPeer streams and, per remote peer,
//! its tracks, connection state and data channels.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::api::*;
use super::call::*;
use super::call_media::*;
use super::departures::{Departures, LeftDecision, REJOIN_GRACE};
use super::handle::*;
use super::{MAX_CHAT_CHARS, lock, sounds};
use crate::media::mixer::{AudioReceiver, Mixer};
use crate::media::receive::VideoReceiver;
use crate::peer::{
    DataKind, DcEvent, DcMessage, MeteredPeer, MeteredPeerState, PeerConnectionState,
    PeerEventError, RemotePeer, RemoteTrack,
};

/// Status messages from not-yet-listed senders waiting at once (see the data loop); beyond it
/// they are dropped like any message from a stranger.
pub(super) const MAX_EARLY_STATUSES: usize = 8;

/// A peer is gone for good: drop everything received from it, play the leave sound, tell the
/// UI.
pub(super) async fn peer_gone(
    remote: &Mutex<RemoteMedia>,
    sounds: &sounds::Sounds,
    out: &Out,
    id: String,
) {
    {
        let mut m = lock(remote);
        m.video.retain(|(p, _), _| *p != id);
        m.audio.retain(|(p, _), _| *p != id);
    }
    sounds.peer_left();
    out.call(Event::PeerLeft { id }).await;
}

/// Turns MeteredPeer events into engine events.
pub(super) fn watch_peer(c: &Call, out: Out, fatal: mpsc::Sender<String>, headless: bool) {
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
pub(super) struct PeerCtx {
    pub(super) me: MeteredPeer,
    pub(super) out: Out,
    pub(super) remote: Arc<Mutex<RemoteMedia>>,
    pub(super) mixer: Arc<Mixer>,
    pub(super) started: Instant,
    pub(super) status: (Arc<AtomicBool>, Arc<AtomicBool>),
    pub(super) headless: bool,
    pub(super) receive_video: bool,
    pub(super) departures: Arc<Mutex<Departures>>,
    pub(super) sounds: Arc<sounds::Sounds>,
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

pub(super) async fn watch_remote(ctx: PeerCtx, remote: RemotePeer) {
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
pub(super) async fn start_track(ctx: &PeerCtx, peer: &str, t: Arc<RemoteTrack>) {
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

pub(super) async fn pump_channel(dc: crate::peer::DataChannel, peer: String, out: Out) {
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
