//! From SDK events to engine events: the call-level MeteredPeer streams and, per remote peer,
//! its tracks, connection state and data channels.

use std::sync::atomic::{AtomicBool, Ordering};
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
use super::messages::{AppMessage, Received};
use super::{MAX_CHAT_CHARS, lock, sounds};
use crate::media::mixer::{AudioReceiver, Mixer};
use crate::media::receive::VideoReceiver;
use crate::peer::{
    DataEvent, DataKind, DcEvent, DcMessage, MeteredPeer, MeteredPeerState, PeerConnectionState,
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

/// How long a status from a sender our SDK does not list yet is kept waiting for it to appear
/// (a newcomer greets as soon as it sees us, which can overtake our own record of it).
const EARLY_STATUS_WAIT: Duration = Duration::from_secs(1);

/// Why the SDK ended the call, for the engine task (which leaves and reports it).
pub(super) struct CallEnded {
    pub(super) message: String,
    pub(super) close_code: Option<u16>,
}

/// Turns MeteredPeer events into engine events: one task per call, one `select!` over the
/// call's event streams, so the order in which the UI hears of them is the order they are
/// handled here. Per remote peer, `watch_remote` does the same for its own streams.
pub(super) fn watch_peer(c: &Call, out: Out, fatal: mpsc::Sender<CallEnded>, headless: bool) {
    let departures = Arc::new(Mutex::new(Departures::new(REJOIN_GRACE)));
    let ctx = PeerCtx {
        me: c.peer.clone(),
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
    let watcher = CallWatcher {
        ctx,
        fatal,
        down_since: None,
        early_statuses: Vec::new(),
        lingering_until: Vec::new(),
        pasted_token: matches!(c.req.auth, Auth::Token(_)),
    };
    tokio::spawn(watcher.run());
}

/// The call-level watcher's state.
struct CallWatcher {
    ctx: PeerCtx,
    fatal: mpsc::Sender<CallEnded>,
    /// When the signalling outage began (for the "reconnecting for …" clock).
    down_since: Option<Instant>,
    /// Statuses from senders not listed yet: (sender, status, give up at).
    early_statuses: Vec<(String, AppMessage, Instant)>,
    /// When peers that left without a goodbye stop being waited for.
    lingering_until: Vec<Instant>,
    /// The call runs on a token the user pasted (it cannot be refreshed).
    pasted_token: bool,
}

impl CallWatcher {
    async fn run(mut self) {
        let peer = self.ctx.me.clone();
        let mut states = peer.state_changes();
        let mut errors = peer.errors();
        let mut data = peer.on_data();
        let mut left = peer.on_peer_left();
        let mut joined = peer.on_peer_joined();
        let mut early_check = tokio::time::interval(Duration::from_millis(100));
        loop {
            let linger_at = self.lingering_until.iter().min().copied();
            tokio::select! {
                s = states.next_item() => match s {
                    Some(s) => self.on_state(s.to).await,
                    None => break,
                },
                Some(e) = errors.next_item() => self.on_error(e).await,
                Some(d) = data.next_item() => self.on_data(d).await,
                Some(r) = left.next_item() => self.on_left(r).await,
                Some(r) = joined.next_item() => self.on_joined(r).await,
                _ = early_check.tick(), if !self.early_statuses.is_empty() => {
                    self.deliver_early_statuses(None).await;
                }
                _ = sleep_until(linger_at), if linger_at.is_some() => self.expire_lingering().await,
            }
        }
    }

    async fn on_state(&mut self, to: MeteredPeerState) {
        let state = match to {
            MeteredPeerState::Reconnecting => {
                self.down_since.get_or_insert_with(Instant::now);
                CallState::Reconnecting
            }
            MeteredPeerState::Joined => {
                self.down_since = None;
                CallState::Joined
            }
            MeteredPeerState::Joining => CallState::Joining,
            MeteredPeerState::Leaving | MeteredPeerState::Closed => CallState::Left,
            _ => return,
        };
        self.ctx
            .out
            .call(Event::CallState {
                state,
                since: self.down_since.map(|t| t.elapsed()),
            })
            .await;
    }

    async fn on_error(&mut self, e: PeerEventError) {
        let out = &self.ctx.out;
        match e {
            PeerEventError::Fatal { code, message } => {
                let words = code.map(explain_close_code).unwrap_or_default();
                let _ = self
                    .fatal
                    .send(CallEnded {
                        message: format!("{message}{words}"),
                        close_code: code,
                    })
                    .await;
            }
            PeerEventError::ReconcileTimeout => {
                let _ = self
                    .fatal
                    .send(CallEnded {
                        message: "the call could not be restored after the server came back (reconcile timed out)".into(),
                        close_code: None,
                    })
                    .await;
            }
            PeerEventError::IceRecoveryExhausted { peer, attempts } => {
                out.notice(
                    ErrorKind::Connection,
                    format!("connection to {peer} not recovered after {attempts} ICE restarts"),
                )
                .await;
            }
            PeerEventError::TokenProvider { message, .. } => {
                if self.pasted_token {
                    // Nothing will ever give a pasted token a new expiry: the call is over.
                    let _ = self
                        .fatal
                        .send(CallEnded {
                            message: format!("The call ended: {message}."),
                            close_code: Some(4002),
                        })
                        .await;
                } else {
                    out.notice(ErrorKind::Notice, format!("token: {message}"))
                        .await;
                }
            }
        }
    }

    async fn on_data(&mut self, d: DataEvent) {
        let ctx = &self.ctx;
        let received = AppMessage::read(&d.data);
        let direct = d.kind == DataKind::Direct;
        // meshcall's own messages count only as directs from a participant (or, for a bye, one
        // we are still keeping as reconnecting); anything else is ignored.
        let member = ctx.me.remote_peer(&d.from);
        if let Received::Ours(status @ AppMessage::Status { .. }) = &received
            && direct
            && member.is_none()
        {
            // Wait for the sender to appear (bounded), rather than drop its status.
            if self.early_statuses.len() < MAX_EARLY_STATUSES {
                self.early_statuses.push((
                    d.from.clone(),
                    status.clone(),
                    Instant::now() + EARLY_STATUS_WAIT,
                ));
            }
            return;
        }
        let trusted = direct && (member.is_some() || lock(&ctx.departures).is_lingering(&d.from));
        let message = match received {
            Received::Ours(m) if trusted => Some(m),
            Received::Ours(AppMessage::Bye) if direct => {
                // A bye whose sender the SDK already dropped (its `left` overtook the bye): a
                // direct's sender is authenticated by the server, so it still says this peer
                // left on purpose.
                let gone = lock(&ctx.departures).saw_late_bye(&d.from);
                if gone {
                    peer_gone(&ctx.remote, &ctx.sounds, &ctx.out, d.from.clone()).await;
                }
                return;
            }
            Received::Ours(_) | Received::Malformed => {
                debug!(from = %d.from, "untrusted or malformed meshcall message ignored");
                None
            }
            Received::Foreign => None,
        };
        match message {
            Some(AppMessage::Bye) => {
                // Usually before its presence `left`; if that was handled first, the peer is
                // lingering and goes now.
                let lingering = lock(&ctx.departures).saw_bye(&d.from);
                if lingering {
                    peer_gone(&ctx.remote, &ctx.sounds, &ctx.out, d.from.clone()).await;
                }
            }
            Some(AppMessage::Status {
                mic_muted,
                camera_off,
            }) if member.is_some() => {
                status_seen(ctx, d.from.clone(), mic_muted, camera_off).await;
            }
            Some(AppMessage::Chat { text }) => {
                if let Some(m) = &member {
                    // The name from the member's own presence, not from the message.
                    let name = display_name(m.metadata().as_ref());
                    let text: String = text.chars().take(MAX_CHAT_CHARS).collect();
                    ctx.out
                        .call(Event::Chat {
                            from: d.from.clone(),
                            name,
                            text,
                        })
                        .await;
                }
            }
            _ => {}
        }
        if ctx.headless {
            let kind = serde_json::to_value(d.kind)
                .ok()
                .and_then(|k| k.as_str().map(str::to_string));
            ctx.out
                .send(EngineEvent::Data {
                    peer: d.from,
                    via: "server",
                    kind,
                    data: d.data,
                })
                .await;
        }
    }

    /// Delivers waiting statuses whose sender is now listed (`joined`: the peer that just
    /// joined, checked first), and drops those that waited too long.
    async fn deliver_early_statuses(&mut self, joined: Option<&str>) {
        let now = Instant::now();
        let me = self.ctx.me.clone();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.early_statuses)
            .into_iter()
            .partition(|(from, _, _)| {
                Some(from.as_str()) == joined || me.remote_peer(from).is_some()
            });
        self.early_statuses = waiting
            .into_iter()
            .filter(|(_, _, until)| *until > now)
            .collect();
        for (from, status, _) in ready {
            if let AppMessage::Status {
                mic_muted,
                camera_off,
            } = status
            {
                status_seen(&self.ctx, from, mic_muted, camera_off).await;
            }
        }
    }

    async fn on_left(&mut self, r: RemotePeer) {
        let ctx = &self.ctx;
        let id = r.id().to_string();
        let decision = lock(&ctx.departures).left(&id, Instant::now());
        match decision {
            LeftDecision::Gone => peer_gone(&ctx.remote, &ctx.sounds, &ctx.out, id).await,
            LeftDecision::Linger { until } => {
                info!(peer = %id, "peer left without a goodbye; waiting for it to come back");
                ctx.out
                    .call(Event::PeerConnection {
                        id,
                        state: PeerConnectionState::Reconnecting,
                    })
                    .await;
                self.lingering_until.push(until);
            }
        }
    }

    async fn expire_lingering(&mut self) {
        let now = Instant::now();
        self.lingering_until.retain(|t| *t > now);
        let gone = lock(&self.ctx.departures).expire(now);
        for id in gone {
            info!(peer = %id, "peer did not come back");
            peer_gone(&self.ctx.remote, &self.ctx.sounds, &self.ctx.out, id).await;
        }
    }

    async fn on_joined(&mut self, r: RemotePeer) {
        let ctx = &self.ctx;
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
        let id = r.id().to_string();
        tokio::spawn(watch_remote(ctx.clone(), r));
        self.deliver_early_statuses(Some(&id)).await;
    }
}

/// A member's microphone/camera status: it speaks meshcall (so it will say bye when it leaves on
/// purpose), and the UI shows the status.
async fn status_seen(ctx: &PeerCtx, from: String, mic_muted: bool, camera_off: bool) {
    lock(&ctx.departures).saw_status(&from);
    ctx.out
        .call(Event::RemoteStatus {
            peer: from,
            mic_muted,
            camera_off,
        })
        .await;
}

fn sleep_until(at: Option<Instant>) -> tokio::time::Sleep {
    // A disabled branch still builds its future; a far deadline keeps it inert.
    let at = at.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
    tokio::time::sleep_until(tokio::time::Instant::from_std(at))
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
    // Subscribed before anything is awaited, so nothing the peer does meanwhile is missed.
    let mut states = remote.state_changes();
    let mut tracks = remote.on_track();
    let mut removed = remote.on_stream_removed();
    let mut incoming = remote.on_data_channel();
    let existing: Vec<Arc<RemoteTrack>> = remote
        .current_streams()
        .into_iter()
        .flat_map(|s| s.tracks)
        .collect();
    // Tell the newcomer our mic/camera state.
    let _ = ctx
        .me
        .send_to(
            &id,
            AppMessage::Status {
                mic_muted: ctx.status.0.load(Ordering::Relaxed),
                camera_off: ctx.status.1.load(Ordering::Relaxed),
            }
            .to_value(),
        )
        .await;
    ctx.out
        .call(Event::PeerConnection {
            id: id.clone(),
            state: remote.state(),
        })
        .await;
    for t in existing {
        start_track(&ctx, &id, t).await;
    }
    let opener = ctx.headless
        && ctx
            .me
            .peer_id()
            .is_some_and(|mine| mine.as_str() < id.as_str());
    // The headless peer's own data channel to this peer (the opener side's), so that a
    // recovery that keeps the connection (an ICE restart) does not open a second one beside it.
    let mut own_channel: Option<crate::peer::DataChannel> = None;
    if opener {
        match remote.create_data_channel("meshcall", None).await {
            Ok(dc) => {
                own_channel = Some(dc.clone());
                tokio::spawn(pump_channel(dc, id.clone(), ctx.out.clone()));
            }
            Err(e) => {
                ctx.out
                    .notice(ErrorKind::Notice, format!("{id}: {e}"))
                    .await
            }
        }
    }
    // One loop over this peer's streams: its events reach the UI in the order handled here.
    loop {
        tokio::select! {
            c = states.next_item() => {
                let Some(c) = c else { break };
                // A peer waiting to come back stays "reconnecting", not "closed".
                let quiet =
                    c.to == PeerConnectionState::Closed && lock(&ctx.departures).is_lingering(&id);
                if !quiet {
                    ctx.out
                        .call(Event::PeerConnection {
                            id: id.clone(),
                            state: c.to,
                        })
                        .await;
                }
                // Back from reconnecting: a new channel only if the old one did not survive
                // (a replaced connection closes its channels; an ICE restart keeps them).
                if c.to == PeerConnectionState::Connected
                    && c.from == PeerConnectionState::Reconnecting
                    && opener
                    && own_channel.as_ref().is_none_or(|dc| dc.is_closed())
                    && let Ok(dc) = remote.create_data_channel("meshcall", None).await
                {
                    own_channel = Some(dc.clone());
                    tokio::spawn(pump_channel(dc, id.clone(), ctx.out.clone()));
                }
                if c.to == PeerConnectionState::Closed {
                    break;
                }
            }
            Some(t) = tracks.next_item() => start_track(&ctx, &id, t.track).await,
            Some(s) = removed.next_item() => {
                {
                    let mut m = lock(&ctx.remote);
                    m.video.remove(&(id.clone(), s.stream_id.clone()));
                    m.audio.remove(&(id.clone(), s.stream_id.clone()));
                }
                ctx.out
                    .call(Event::StreamRemoved {
                        peer: id.clone(),
                        stream_id: s.stream_id,
                    })
                    .await;
            }
            Some(dc) = incoming.next_item(), if ctx.headless => {
                tokio::spawn(pump_channel(dc, id.clone(), ctx.out.clone()));
            }
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
            let (has_audio, rebound) = {
                let mut m = lock(&ctx.remote);
                (
                    m.audio.contains_key(&key),
                    m.video.insert(key, rx.clone()).is_some(),
                )
            };
            ctx.out
                .call(Event::StreamAdded {
                    peer: peer.to_string(),
                    stream_id,
                    role,
                    metadata: t.metadata.clone(),
                    video: Some(RemoteVideo(Arc::new(Feed(rx)))),
                    has_audio,
                    rebound,
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
                        rebound: false,
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
