//! MeteredPeer: one signalling connection, one channel, one RemotePeer
//! per other member (full mesh), local media fanned out to current and future peers, and the
//! identity-preserving reconcile after a signalling drop.
//!
//! All client events are handled by one task, in order; the public methods only touch shared
//! state under short locks and never wait on that task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use webrtc::media_stream::track_local::TrackLocal;

use super::connection::{self, Command, ConnectionParams, InboundSignal};
use super::error::{PeerError, PeerEventError, scrub};
use super::events::{Emitter, EventStream};
use super::local_media::{FixedTrack, LocalMedia};
use super::negotiation::is_polite;
use super::reconcile::{self, AfterReconnect, Overdue, Reconciler};
use super::remote_peer::RemotePeer;
use super::settings::PeerSettings;
use super::signals::{DirectPayload, TrackMeta, classify_direct, track_meta_json};
use super::state::{PeerConnectionState, StateChange};
use crate::client::{
    ClientError, ClientEvent, ClientOptions, ClientState, IceServer, PresencePeer, SignallingClient,
};
use crate::protocol::validate::check_not_reserved;

/// A MeteredPeer's lifecycle, as [`MeteredPeer::state_changes`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MeteredPeerState {
    /// Built, or back here after a failed `join`; `join` is only accepted in this state.
    Idle,
    /// `join` is connecting and subscribing.
    Joining,
    /// In the channel: `send`/`send_to` work and peers come and go with presence.
    Joined,
    /// Signalling dropped and is coming back; remote peers show `reconnecting` until the
    /// reconcile after the reconnect, then this returns to `Joined`.
    Reconnecting,
    /// Tearing down after `close()` or a terminal disconnect; `Closed` follows.
    Leaving,
    /// Final; `on_left` follows. A new call needs a new MeteredPeer.
    Closed,
}

impl MeteredPeerState {
    /// The lower-case name, the same as the serialised form (`"joined"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            MeteredPeerState::Idle => "idle",
            MeteredPeerState::Joining => "joining",
            MeteredPeerState::Joined => "joined",
            MeteredPeerState::Reconnecting => "reconnecting",
            MeteredPeerState::Leaving => "leaving",
            MeteredPeerState::Closed => "closed",
        }
    }
}

/// How a [`DataEvent`] was addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    /// Published to the whole channel (the sender's `send`).
    Broadcast,
    /// Sent to us alone (the sender's `send_to` or `RemotePeer::send`).
    Direct,
}

/// App data received through the server (`send` broadcasts and `send_to` directs).
#[derive(Debug, Clone, PartialEq)]
pub struct DataEvent {
    /// Server-stamped sender: trust this, never a field inside `data`.
    pub from: String,
    /// The payload as the sender passed it. Untrusted peer input.
    pub data: Value,
    /// Broadcast or direct.
    pub kind: DataKind,
    /// The sender's `peerMetadata`, if it has one: on broadcasts only when we joined with
    /// `include_sender_metadata`, on directs always. Untrusted.
    pub from_metadata: Option<Value>,
}

/// `Left{peer_id, channel, reason}`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftEvent {
    /// Our own peer id at the end; `None` if no welcome ever arrived.
    pub peer_id: Option<String>,
    /// The channel we were in; `None` if `join` was never called or failed.
    pub channel: Option<String>,
    /// Why, for display and logs: `closed by the application` or `disconnected (code N)`.
    pub reason: String,
}

/// Uncorrelated server error codes that are fatal for a MeteredPeer, as in the official SDKs.
const FATAL_ERROR_CODES: [&str; 5] = [
    "account_suspended",
    "channel_not_authorized",
    "action_not_permitted",
    "invalid_token",
    "token_expired",
];
/// Terminal close codes reported as fatal before teardown.
const FATAL_CLOSE_CODES: [u16; 5] = [4001, 4002, 4003, 4012, 4020];

struct LocalTrack {
    media: Arc<dyn LocalMedia>,
    track_id: String,
    kind: String,
    stream_id: Option<String>,
    metadata: Option<Value>,
}

struct Emitters {
    state: Emitter<StateChange<MeteredPeerState>>,
    peer_joined: Emitter<RemotePeer>,
    peer_left: Emitter<RemotePeer>,
    data: Emitter<DataEvent>,
    errors: Emitter<PeerEventError>,
    left: Emitter<LeftEvent>,
}

struct Inner {
    client: SignallingClient,
    client_events: Mutex<Option<mpsc::Receiver<ClientEvent>>>,
    settings: Arc<PeerSettings>,
    state: Mutex<MeteredPeerState>,
    channel: Mutex<Option<String>>,
    include_sender_metadata: AtomicBool,
    peers: Mutex<Vec<RemotePeer>>,
    local_id: Mutex<Option<String>>,
    ice_servers: Mutex<Vec<IceServer>>,
    local_tracks: Mutex<Vec<LocalTrack>>,
    reconcile: Mutex<Reconciler>,
    ev: Emitters,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

/// The local participant. Cheap to clone.
#[derive(Clone)]
pub struct MeteredPeer {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MeteredPeer {
    /// Validates the options; does not connect (`join` does).
    pub fn new(options: ClientOptions, settings: PeerSettings) -> Result<MeteredPeer, PeerError> {
        let (client, events) = SignallingClient::new(options)?;
        let cap = settings.event_capacity;
        let reconciler = Reconciler::new(
            settings.reconcile_deadline,
            settings.max_forced_resubscribes,
        );
        Ok(MeteredPeer {
            inner: Arc::new(Inner {
                client,
                client_events: Mutex::new(Some(events)),
                settings: Arc::new(settings),
                state: Mutex::new(MeteredPeerState::Idle),
                channel: Mutex::new(None),
                include_sender_metadata: AtomicBool::new(false),
                peers: Mutex::new(Vec::new()),
                local_id: Mutex::new(None),
                ice_servers: Mutex::new(Vec::new()),
                local_tracks: Mutex::new(Vec::new()),
                reconcile: Mutex::new(reconciler),
                ev: Emitters {
                    state: Emitter::new(cap),
                    peer_joined: Emitter::new(cap),
                    peer_left: Emitter::new(cap),
                    data: Emitter::new(cap.max(1024)),
                    errors: Emitter::new(cap),
                    left: Emitter::new(cap),
                },
                stop: Mutex::new(None),
            }),
        })
    }

    /// The current state, read now. Subscribe to [`Self::state_changes`] to follow it.
    pub fn state(&self) -> MeteredPeerState {
        *lock(&self.inner.state)
    }

    /// Our peer id (from the latest `welcome`).
    pub fn peer_id(&self) -> Option<String> {
        lock(&self.inner.local_id).clone()
    }

    /// The channel passed to `join`: set when `join` starts, cleared if it fails and at the end.
    pub fn channel(&self) -> Option<String> {
        lock(&self.inner.channel).clone()
    }

    /// Current remote peers, in the order they appeared.
    pub fn remote_peers(&self) -> Vec<RemotePeer> {
        lock(&self.inner.peers).clone()
    }

    /// The current remote peer with this id; `None` once it has left.
    pub fn remote_peer(&self, id: &str) -> Option<RemotePeer> {
        lock(&self.inner.peers)
            .iter()
            .find(|p| p.id() == id)
            .cloned()
    }

    /// Every state transition, in order.
    pub fn state_changes(&self) -> EventStream<StateChange<MeteredPeerState>> {
        self.inner.ev.state.subscribe()
    }
    /// A new member. Its connection is created before this fires (unless that failed, which
    /// is logged), so `create_data_channel` can be called at once.
    /// Members that survive a reconcile are not announced again; a member who left and came
    /// back is a new RemotePeer.
    pub fn on_peer_joined(&self) -> EventStream<RemotePeer> {
        self.inner.ev.peer_joined.subscribe()
    }
    /// A member that left (presence, or missing after a reconcile), already `closed`; on
    /// `close()` every remaining peer is reported here too.
    pub fn on_peer_left(&self) -> EventStream<RemotePeer> {
        self.inner.ev.peer_left.subscribe()
    }
    /// App data from other members: broadcasts on our channel (never our own) and directs
    /// from current members (directs from non-members are dropped). WebRTC signals and track
    /// metadata never show up here.
    pub fn on_data(&self) -> EventStream<DataEvent> {
        self.inner.ev.data.subscribe()
    }
    /// Fatal errors and reconcile timeouts.
    pub fn errors(&self) -> EventStream<PeerEventError> {
        self.inner.ev.errors.subscribe()
    }
    /// Fires once, when the MeteredPeer has reached `closed` (by `close()` or on its own).
    pub fn on_left(&self) -> EventStream<LeftEvent> {
        self.inner.ev.left.subscribe()
    }

    /// Troubleshooting: drops the signalling connection as a network failure would; the normal
    /// reconnect and reconcile follow (peers go `reconnecting`, then back with fresh pcs).
    pub fn simulate_signalling_drop(&self) {
        self.inner.client.simulate_drop();
    }

    /// "Retry now": while signalling is reconnecting, make the next attempt immediately instead
    /// of after the back-off delay. No-op otherwise.
    pub fn retry_signalling_now(&self) {
        self.inner.client.retry_now();
    }

    /// The signalling client underneath (troubleshooting; do not subscribe through it).
    pub fn signalling(&self) -> &SignallingClient {
        &self.inner.client
    }

    fn set_state(&self, to: MeteredPeerState) {
        let change = {
            let mut s = lock(&self.inner.state);
            if *s == to {
                return;
            }
            let from = *s;
            *s = to;
            StateChange { from, to }
        };
        debug!(
            from = change.from.as_str(),
            to = change.to.as_str(),
            "metered peer state"
        );
        self.inner.ev.state.emit(change);
    }

    /// Connects (if needed) and subscribes to `channel`. Peers already there appear through
    /// `on_peer_joined`, possibly before this returns.
    pub async fn join(
        &self,
        channel: &str,
        include_sender_metadata: bool,
    ) -> Result<(), PeerError> {
        if self.state() != MeteredPeerState::Idle {
            return Err(PeerError::InvalidState("join needs an idle MeteredPeer"));
        }
        if check_not_reserved(channel).is_err() {
            return Err(PeerError::ReservedChannel);
        }
        self.set_state(MeteredPeerState::Joining);
        *lock(&self.inner.channel) = Some(channel.to_string());
        self.inner
            .include_sender_metadata
            .store(include_sender_metadata, Ordering::SeqCst);
        self.start_event_loop();
        let result = async {
            if matches!(
                self.inner.client.state(),
                ClientState::Idle | ClientState::Closed
            ) {
                let info = self.inner.client.connect().await?;
                *lock(&self.inner.local_id) = Some(info.peer_id.clone());
                if let Some(ice) = info.ice_servers {
                    *lock(&self.inner.ice_servers) = ice;
                }
            }
            self.inner
                .client
                .subscribe(channel, include_sender_metadata)
                .await?;
            Ok::<(), ClientError>(())
        }
        .await;
        match result {
            Ok(()) => {
                if self.state() == MeteredPeerState::Joining {
                    self.set_state(MeteredPeerState::Joined);
                }
                info!(channel, "joined");
                Ok(())
            }
            Err(e) => {
                if self.state() == MeteredPeerState::Joining {
                    *lock(&self.inner.channel) = None;
                    self.set_state(MeteredPeerState::Idle);
                }
                Err(e.into())
            }
        }
    }

    /// Terminal and idempotent: every peer leaves, the socket closes, state `closed`.
    pub async fn close(&self) {
        let state = self.state();
        if matches!(state, MeteredPeerState::Closed | MeteredPeerState::Leaving) {
            return;
        }
        self.set_state(MeteredPeerState::Leaving);
        self.teardown("closed by the application".to_string()).await;
    }

    async fn teardown(&self, reason: String) {
        lock(&self.inner.reconcile).cancel();
        let peers: Vec<RemotePeer> = std::mem::take(&mut *lock(&self.inner.peers));
        for p in &peers {
            p.close(std::time::Duration::ZERO);
            self.inner.ev.peer_left.emit(p.clone());
        }
        lock(&self.inner.local_tracks).clear();
        self.inner.client.close().await;
        if let Some(stop) = lock(&self.inner.stop).take() {
            let _ = stop.send(());
        }
        let channel = lock(&self.inner.channel).take();
        self.set_state(MeteredPeerState::Closed);
        self.inner.ev.left.emit(LeftEvent {
            peer_id: self.peer_id(),
            channel,
            reason,
        });
    }

    /// Broadcast to the channel through the server (not echoed locally).
    pub async fn send(&self, data: Value) -> Result<(), PeerError> {
        if self.state() != MeteredPeerState::Joined {
            return Err(PeerError::NotJoined);
        }
        let channel = self.channel().ok_or(PeerError::NotJoined)?;
        self.inner.client.publish(&channel, data).await?;
        Ok(())
    }

    /// Direct message to one peer through the server.
    pub async fn send_to(&self, peer_id: &str, data: Value) -> Result<(), PeerError> {
        if self.state() != MeteredPeerState::Joined {
            return Err(PeerError::NotJoined);
        }
        if peer_id.is_empty() {
            return Err(PeerError::InvalidArgs("peer id is empty"));
        }
        if Some(peer_id) == self.peer_id().as_deref() {
            return Err(PeerError::SelfSend);
        }
        self.inner.client.send(peer_id, data).await?;
        Ok(())
    }

    /// Adds a local track for every current and future peer. `metadata` (e.g. `{"role":"screen"}`)
    /// is sent to each peer before the track's media, so the receiver can label it. A raw
    /// `TrackLocal` binds to one connection at a time; for a mesh use [`Self::add_media`] with the
    /// media layer's senders.
    pub async fn add_track(
        &self,
        track: Arc<dyn TrackLocal>,
        metadata: Option<Value>,
    ) -> Result<(), PeerError> {
        self.add_media(Arc::new(FixedTrack::new(track).await), metadata)
            .await
    }

    /// Adds a local track that hands out one leg per connection (one encoder for all peers).
    pub async fn add_media(
        &self,
        media: Arc<dyn LocalMedia>,
        metadata: Option<Value>,
    ) -> Result<(), PeerError> {
        if matches!(
            self.state(),
            MeteredPeerState::Leaving | MeteredPeerState::Closed
        ) {
            return Err(PeerError::InvalidState("the MeteredPeer is closed"));
        }
        if metadata.as_ref().is_some_and(|m| !m.is_object()) {
            return Err(PeerError::InvalidArgs(
                "track metadata must be a JSON object",
            ));
        }
        let track_id = media.track_id();
        {
            let tracks = lock(&self.inner.local_tracks);
            if tracks.iter().any(|t| t.track_id == track_id) {
                return Ok(()); // idempotent
            }
        }
        let entry = LocalTrack {
            media: media.clone(),
            track_id,
            kind: media.kind(),
            stream_id: media.stream_id(),
            metadata,
        };
        let meta_msg = entry.metadata.as_ref().map(|_| self.meta_message(&entry));
        if let Some(m) = &meta_msg {
            let size = m.to_string().len();
            let max = self.inner.client.max_message_size();
            if size > max {
                return Err(PeerError::Oversized { size, max });
            }
        }
        lock(&self.inner.local_tracks).push(entry);
        if self.state() == MeteredPeerState::Joined {
            for p in self.remote_peers() {
                if let Some(m) = &meta_msg {
                    let _ = self.inner.client.send(p.id(), m.clone()).await;
                }
                attach(&p, &media).await;
            }
        }
        Ok(())
    }

    /// Adds every track of a stream with one metadata bag (e.g. camera video + microphone).
    pub async fn add_stream(
        &self,
        tracks: Vec<Arc<dyn TrackLocal>>,
        metadata: Option<Value>,
    ) -> Result<(), PeerError> {
        for t in tracks {
            self.add_track(t, metadata.clone()).await?;
        }
        Ok(())
    }

    /// Swaps `old_track_id` for `track` on every peer (e.g. switching cameras). Unlike the JS
    /// SDK this renegotiates once: webrtc-rs 0.21 cannot rebind a sender to a new track.
    /// Receivers key metadata by track id, so a clear for the old id and a set for the new one
    /// go out first. Partial failure → [`PeerError::ReplaceTrack`] listing both sides; the
    /// tracking map moves to the new track unless every peer failed.
    pub async fn replace_track(
        &self,
        old_track_id: &str,
        track: Arc<dyn TrackLocal>,
    ) -> Result<(), PeerError> {
        self.replace_media(old_track_id, Arc::new(FixedTrack::new(track).await))
            .await
    }

    /// [`Self::replace_track`] for a [`LocalMedia`] (one leg per connection).
    pub async fn replace_media(
        &self,
        old_track_id: &str,
        media: Arc<dyn LocalMedia>,
    ) -> Result<(), PeerError> {
        if matches!(
            self.state(),
            MeteredPeerState::Reconnecting | MeteredPeerState::Leaving | MeteredPeerState::Closed
        ) {
            return Err(PeerError::InvalidState(
                "replace_track needs a joined or idle MeteredPeer",
            ));
        }
        let Some(idx) = lock(&self.inner.local_tracks)
            .iter()
            .position(|t| t.track_id == old_track_id)
        else {
            return Err(PeerError::InvalidArgs("unknown track"));
        };
        let new_id = media.track_id();
        let (meta, kind, stream_id) = {
            let tracks = lock(&self.inner.local_tracks);
            let Some(e) = tracks.get(idx) else {
                return Err(PeerError::InvalidArgs("unknown track"));
            };
            (e.metadata.clone(), e.kind.clone(), e.stream_id.clone())
        };
        let (mut succeeded, mut failed) = (Vec::new(), Vec::new());
        for p in self.remote_peers() {
            let Some(h) = p.handle() else { continue };
            // The new id's metadata goes before its media; the old id is cleared after.
            if let Some(m) = &meta {
                let set = track_meta_json(&TrackMeta {
                    track_id: new_id.clone(),
                    metadata: Some(m.clone()),
                    kind: Some(kind.clone()),
                    stream_id: stream_id.clone(),
                });
                let _ = self.inner.client.send(p.id(), set).await;
            }
            let leg = match media.new_leg(&p) {
                Ok(leg) => leg,
                Err(e) => {
                    failed.push((p.id().to_string(), e.to_string()));
                    continue;
                }
            };
            let (reply, rx) = oneshot::channel();
            let sent = h.command(Command::ReplaceTrack {
                old_track_id: old_track_id.to_string(),
                track: leg.track,
                reply,
            });
            match (sent, rx.await) {
                (true, Ok(Ok(sender))) => {
                    (leg.on_attached)(sender, p.clone());
                    succeeded.push(p.id().to_string());
                    if meta.is_some() {
                        let clear = track_meta_json(&TrackMeta {
                            track_id: old_track_id.to_string(),
                            metadata: None,
                            kind: None,
                            stream_id: None,
                        });
                        let _ = self.inner.client.send(p.id(), clear).await;
                    }
                }
                (_, Ok(Err(e))) => failed.push((p.id().to_string(), e.to_string())),
                _ => failed.push((p.id().to_string(), "peer closed".to_string())),
            }
        }
        if succeeded.len() + failed.len() == 0 || !succeeded.is_empty() {
            let mut tracks = lock(&self.inner.local_tracks);
            if let Some(entry) = tracks.get_mut(idx) {
                entry.media = media.clone();
                entry.track_id = new_id.clone();
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(PeerError::ReplaceTrack { succeeded, failed })
        }
    }

    /// Stops sending a track to every peer (a metadata clear goes first).
    pub async fn remove_track(&self, track_id: &str) -> Result<(), PeerError> {
        let removed = {
            let mut tracks = lock(&self.inner.local_tracks);
            let idx = tracks.iter().position(|t| t.track_id == track_id);
            idx.map(|i| tracks.remove(i))
        };
        let Some(entry) = removed else { return Ok(()) };
        if self.state() == MeteredPeerState::Joined {
            for p in self.remote_peers() {
                if entry.metadata.is_some() {
                    let clear = track_meta_json(&TrackMeta {
                        track_id: entry.track_id.clone(),
                        metadata: None,
                        kind: None,
                        stream_id: None,
                    });
                    let _ = self.inner.client.send(p.id(), clear).await;
                }
                if let Some(h) = p.handle() {
                    let (reply, rx) = oneshot::channel();
                    if h.command(Command::RemoveTrack {
                        track_id: entry.track_id.clone(),
                        reply,
                    }) {
                        let _ = rx.await;
                    }
                }
            }
        }
        Ok(())
    }

    fn meta_message(&self, t: &LocalTrack) -> Value {
        track_meta_json(&TrackMeta {
            track_id: t.track_id.clone(),
            metadata: t.metadata.clone(),
            kind: Some(t.kind.clone()),
            stream_id: t.stream_id.clone(),
        })
    }

    fn start_event_loop(&self) {
        let Some(events) = lock(&self.inner.client_events).take() else {
            return;
        };
        let (stop_tx, stop_rx) = oneshot::channel();
        *lock(&self.inner.stop) = Some(stop_tx);
        let me = self.clone();
        tokio::spawn(async move { me.event_loop(events, stop_rx).await });
    }

    async fn event_loop(
        self,
        mut events: mpsc::Receiver<ClientEvent>,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            let deadline = lock(&self.inner.reconcile).poll_timeout();
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.client_event(ev).await,
                    None => break,
                },
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                        None => std::future::pending().await,
                    }
                } => self.reconcile_deadline().await,
                _ = &mut stop => break,
            }
        }
    }

    async fn client_event(&self, ev: ClientEvent) {
        match ev {
            ClientEvent::Connected(info) => {
                *lock(&self.inner.local_id) = Some(info.peer_id.clone());
                // A welcome without iceServers keeps the previous list (a TURN-less rebuild
                // would strand peers behind symmetric NATs).
                if let Some(ice) = info.ice_servers {
                    *lock(&self.inner.ice_servers) = ice;
                }
                if info.is_reconnect {
                    let have_peers = !lock(&self.inner.peers).is_empty();
                    let after =
                        lock(&self.inner.reconcile).on_reconnected(Instant::now(), have_peers);
                    if after == AfterReconnect::Done
                        && self.state() == MeteredPeerState::Reconnecting
                    {
                        self.set_state(MeteredPeerState::Joined);
                    }
                }
            }
            ClientEvent::Disconnected {
                code,
                reason,
                will_reconnect,
            } => {
                let state = self.state();
                if will_reconnect
                    && matches!(
                        state,
                        MeteredPeerState::Joined | MeteredPeerState::Reconnecting
                    )
                {
                    lock(&self.inner.reconcile).on_drop();
                    for p in self.remote_peers() {
                        p.set_state(PeerConnectionState::Reconnecting);
                    }
                    self.set_state(MeteredPeerState::Reconnecting);
                } else if !matches!(state, MeteredPeerState::Leaving | MeteredPeerState::Closed) {
                    if FATAL_CLOSE_CODES.contains(&code) {
                        self.inner.ev.errors.emit(PeerEventError::Fatal {
                            code: Some(code),
                            message: format!(
                                "connection closed terminally (code {code}: {})",
                                scrub(&reason)
                            ),
                        });
                    }
                    self.set_state(MeteredPeerState::Leaving);
                    self.teardown(format!("disconnected (code {code})")).await;
                }
            }
            ClientEvent::Presence {
                channel,
                joined,
                left,
            } => {
                if Some(&channel) != lock(&self.inner.channel).as_ref() {
                    return;
                }
                let reconcile = lock(&self.inner.reconcile).take_snapshot();
                if reconcile {
                    self.reconcile_from_snapshot(&joined).await;
                } else {
                    for p in joined {
                        self.add_peer(p.peer_id, p.metadata).await;
                    }
                    for p in left {
                        self.remove_peer(&p.peer_id);
                    }
                }
            }
            ClientEvent::Direct {
                from,
                data,
                from_metadata,
            } => self.direct(from, data, from_metadata),
            ClientEvent::Message {
                channel,
                from,
                data,
                from_metadata,
            } => {
                if Some(&channel) == lock(&self.inner.channel).as_ref()
                    && Some(&from) != self.peer_id().as_ref()
                {
                    self.inner.ev.data.emit(DataEvent {
                        from,
                        data,
                        kind: DataKind::Broadcast,
                        from_metadata,
                    });
                }
            }
            ClientEvent::ServerError { code, message } => {
                if FATAL_ERROR_CODES.contains(&code.as_str()) {
                    self.inner.ev.errors.emit(PeerEventError::Fatal {
                        code: None,
                        message: format!(
                            "server error {code}: {}",
                            scrub(message.as_deref().unwrap_or(""))
                        ),
                    });
                }
            }
            ClientEvent::TokenProviderError {
                consecutive_failures,
                message,
            } => self.inner.ev.errors.emit(PeerEventError::TokenProvider {
                consecutive_failures,
                message: scrub(&message),
            }),
            ClientEvent::GoingAway { .. } | ClientEvent::StateChanged { .. } => {}
        }
    }

    fn direct(&self, from: String, data: Value, from_metadata: Option<Value>) {
        let peer = self.remote_peer(&from);
        match classify_direct(&data) {
            DirectPayload::Description { kind, sdp } => match peer {
                Some(p) => p.signal(InboundSignal::Description { kind, sdp }),
                None => debug!(from = %from, "signal from an unknown peer dropped"),
            },
            DirectPayload::Candidate(c) => {
                if let Some(p) = peer {
                    p.signal(InboundSignal::Candidate(c));
                }
            }
            DirectPayload::TrackMeta(m) => {
                if let Some(p) = peer {
                    p.store_track_meta(m);
                }
            }
            DirectPayload::App(data) => {
                if peer.is_some() {
                    self.inner.ev.data.emit(DataEvent {
                        from,
                        data,
                        kind: DataKind::Direct,
                        from_metadata,
                    });
                } else {
                    debug!(from = %from, "direct data from a non-member dropped");
                }
            }
        }
    }

    /// Builds a connection for `peer` (generation = peer's next), installs it, sends track
    /// metadata and attaches local tracks.
    async fn connect_peer(&self, peer: &RemotePeer) -> Result<(), PeerError> {
        let local_id = self.peer_id().unwrap_or_default();
        let polite = is_polite(&local_id, peer.id());
        peer.set_polite(polite);
        let (sig_tx, mut sig_rx) = mpsc::channel::<Value>(1024);
        let client = self.inner.client.clone();
        let to = peer.id().to_string();
        // Signals go out in order, one at a time (each waits for its ack).
        tokio::spawn(async move {
            while let Some(v) = sig_rx.recv().await {
                if let Err(e) = client.send(&to, v).await {
                    debug!(to = %to, error = %e, "signal not delivered");
                }
            }
        });
        let ice_servers = lock(&self.inner.ice_servers).clone();
        let sig_meta = sig_tx.clone();
        let handle = connection::spawn(ConnectionParams {
            remote_id: peer.id().to_string(),
            polite,
            generation: peer.next_generation(),
            ice_servers,
            settings: self.inner.settings.clone(),
            gate: peer.inner.gate.clone(),
            signals: sig_tx,
            events: peer.inner.conn_events.clone(),
        })
        .await?;
        if let Some(old) = peer.install(handle) {
            tokio::spawn(async move { old.close().await });
        }
        let tracks: Vec<(Arc<dyn LocalMedia>, Option<Value>)> = lock(&self.inner.local_tracks)
            .iter()
            .map(|t| {
                (
                    t.media.clone(),
                    t.metadata.as_ref().map(|_| self.meta_message(t)),
                )
            })
            .collect();
        for (track, meta) in tracks {
            // Through the peer's ordered signal queue, never awaited here: the event loop must
            // keep draining client events (acks arrive on the same socket).
            if let Some(m) = meta {
                let _ = sig_meta.send(m).await;
            }
            attach(peer, &track).await;
        }
        if polite && let Some(h) = peer.handle() {
            // After the tracks, so that a side with something to send offers it instead.
            let _ = h.command(Command::OfferToReceiveIfIdle);
        }
        Ok(())
    }

    async fn add_peer(&self, id: String, metadata: Option<Value>) {
        let Some(local) = self.peer_id() else { return };
        if id == local || self.remote_peer(&id).is_some() {
            return;
        }
        if lock(&self.inner.peers).len() >= self.inner.settings.max_remote_peers {
            warn!("remote peer cap reached; ignoring a join");
            return;
        }
        let (peer, rx) = RemotePeer::new(
            id.clone(),
            metadata,
            is_polite(&local, &id),
            self.inner.client.clone(),
            self.inner.settings.event_capacity,
        );
        tokio::spawn(peer.clone().pump(rx));
        // The connection exists before anyone can see the peer (remote_peers, PeerJoined), so
        // `create_data_channel` on a fresh RemotePeer always has a connection to use.
        if let Err(e) = self.connect_peer(&peer).await {
            warn!(peer = %id, error = %e, "cannot create a peer connection");
        }
        lock(&self.inner.peers).push(peer.clone());
        self.inner.ev.peer_joined.emit(peer);
    }

    fn remove_peer(&self, id: &str) {
        let removed = {
            let mut peers = lock(&self.inner.peers);
            peers
                .iter()
                .position(|p| p.id() == id)
                .map(|i| peers.remove(i))
        };
        match removed {
            Some(p) => {
                p.close(self.inner.settings.left_linger);
                self.inner.ev.peer_left.emit(p);
            }
            None => debug!(peer = %id, "left for an unknown peer ignored"),
        }
    }

    async fn reconcile_from_snapshot(&self, joined: &[PresencePeer]) {
        let local = self.peer_id().unwrap_or_default();
        let known: Vec<String> = self
            .remote_peers()
            .iter()
            .map(|p| p.id().to_string())
            .collect();
        let snapshot: Vec<(String, Option<Value>)> = joined
            .iter()
            .map(|p| (p.peer_id.clone(), p.metadata.clone()))
            .collect();
        let plan = reconcile::plan(&known, &snapshot, &local);
        for id in &plan.departures {
            self.remove_peer(id);
        }
        for (id, meta) in plan.survivors {
            if self.state() != MeteredPeerState::Reconnecting {
                return; // closed by a handler meanwhile
            }
            let Some(peer) = self.remote_peer(&id) else {
                continue;
            };
            if peer.is_closed() {
                continue;
            }
            peer.set_metadata(meta);
            peer.set_state(PeerConnectionState::Reconnecting);
            match self.connect_peer(&peer).await {
                Ok(()) => peer.inner.ev.connection_reset.emit(()),
                Err(e) => warn!(peer = %id, error = %e, "reconcile: connection swap failed"),
            }
        }
        for (id, meta) in plan.newcomers {
            self.add_peer(id, meta).await;
        }
        if self.state() == MeteredPeerState::Reconnecting {
            self.set_state(MeteredPeerState::Joined);
        }
    }

    async fn reconcile_deadline(&self) {
        let can_ask = self.state() == MeteredPeerState::Reconnecting
            && self.inner.client.state() == ClientState::Connected;
        let overdue = lock(&self.inner.reconcile).handle_timeout(Instant::now(), can_ask);
        match overdue {
            None => {}
            Some(Overdue::Resubscribe { attempt }) => {
                let Some(channel) = self.channel() else {
                    return;
                };
                debug!(attempt, "reconcile snapshot overdue: resubscribing");
                let client = self.inner.client.clone();
                let include = self.inner.include_sender_metadata.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = client.subscribe(&channel, include).await;
                });
            }
            Some(Overdue::GiveUp) => {
                warn!("reconcile timed out");
                self.inner.ev.errors.emit(PeerEventError::ReconcileTimeout);
            }
        }
    }
}

async fn attach(peer: &RemotePeer, media: &Arc<dyn LocalMedia>) {
    let Some(h) = peer.handle() else { return };
    let leg = match media.new_leg(peer) {
        Ok(leg) => leg,
        Err(e) => {
            warn!(peer = %peer.id(), error = %e, "no leg for a local track");
            return;
        }
    };
    let (reply, rx) = oneshot::channel();
    if !h.command(Command::AddTrack {
        track: leg.track,
        reply,
    }) {
        return;
    }
    match rx.await {
        Ok(Ok(sender)) => (leg.on_attached)(sender, peer.clone()),
        Ok(Err(e)) => debug!(peer = %peer.id(), error = %e, "attaching a local track failed"),
        Err(_) => {}
    }
}
