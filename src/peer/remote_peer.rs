//! RemotePeer: a stable per-member object whose connection can be swapped
//! underneath it (reconcile), with its own state machine (flicker filter), stream accounting
//! per connection generation, and inbound track-metadata resolution.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
use webrtc::data_channel::RTCDataChannelInit;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::PeerConnection;

use super::connection::{Command, ConnEvent, ConnectionHandle, InboundSignal};
use super::data_channel::DataChannel;
use super::error::{PeerError, PeerEventError};
use super::events::{Emitter, EventStream};
use super::runtime::NetworkGate;
use super::signals::{MsidEntry, TrackMeta};
use super::state::{PeerConnectionState, StateChange, next_state};
use crate::client::SignallingClient;

/// Inbound track-metadata cache size per peer (FIFO).
const META_CACHE_CAP: usize = 512;
/// RTP packets buffered per remote track for a consumer that has not taken them yet.
const RTP_BUFFER: usize = 512;

/// An inbound media track.
pub struct RemoteTrack {
    /// The track id as this connection reports it; usually the sender's id, but some senders
    /// (Firefox) put generated ids here.
    pub track_id: String,
    /// `"audio"` or `"video"`.
    pub kind: String,
    /// The sender's msid stream id; `None` for a track sent without a stream.
    pub stream_id: Option<String>,
    /// The sender's track metadata (e.g. `{"role":"screen"}`) as resolved when the track
    /// arrived; `None` if none had been received for it. Not updated later. Untrusted.
    pub metadata: Option<Value>,
    /// The webrtc-rs track (for RTCP writes). Its events are read by the SDK, which forwards RTP
    /// packets to [`RemoteTrack::take_rtp`].
    pub raw: Arc<dyn TrackRemote>,
    rtp: Mutex<Option<mpsc::Receiver<rtc::rtp::Packet>>>,
}

impl RemoteTrack {
    /// The RTP packets of this track (once; later calls get `None`). Packets arriving while the
    /// buffer is full are dropped (the media layer asks for a keyframe on loss).
    pub fn take_rtp(&self) -> Option<mpsc::Receiver<rtc::rtp::Packet>> {
        self.rtp.lock().ok().and_then(|mut g| g.take())
    }
}

impl std::fmt::Debug for RemoteTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTrack")
            .field("track_id", &self.track_id)
            .field("kind", &self.kind)
            .field("stream_id", &self.stream_id)
            .finish()
    }
}

/// A remote track arrived on the current connection.
#[derive(Debug, Clone)]
pub struct RemoteTrackEvent {
    /// The track; take its RTP with [`RemoteTrack::take_rtp`].
    pub track: Arc<RemoteTrack>,
    /// Stream ids the track belongs to (empty for a track without a stream).
    pub streams: Vec<String>,
    /// Same as `track.metadata`.
    pub metadata: Option<Value>,
}

/// A remote stream. The object is new after every reconnect; `id` is stable.
#[derive(Debug, Clone)]
pub struct RemoteStreamEvent {
    /// The sender's msid stream id.
    pub stream_id: String,
    /// The stream's metadata: the revealing track's in `on_stream_added`, the first track's
    /// that has some in `current_streams`, always `None` in `on_stream_removed`.
    pub metadata: Option<Value>,
    /// In `on_stream_added`, only the track that revealed the stream (later ones arrive
    /// through `on_track`); in `on_stream_removed` and `current_streams`, all of them.
    pub tracks: Vec<Arc<RemoteTrack>>,
}

#[derive(Default)]
struct StreamAccounting {
    generation: u64,
    /// stream id → live track ids
    live: HashMap<String, HashSet<String>>,
    tracks: HashMap<String, Vec<Arc<RemoteTrack>>>,
}

struct MetaCache {
    order: VecDeque<String>,
    map: HashMap<String, TrackMeta>,
}

impl MetaCache {
    fn put(&mut self, m: TrackMeta) {
        if m.metadata.is_none() {
            self.map.remove(&m.track_id);
            self.order.retain(|t| t != &m.track_id);
            return;
        }
        if !self.map.contains_key(&m.track_id) {
            self.order.push_back(m.track_id.clone());
            if self.order.len() > META_CACHE_CAP
                && let Some(old) = self.order.pop_front()
            {
                self.map.remove(&old);
            }
        }
        self.map.insert(m.track_id.clone(), m);
    }

    /// Resolution order (the Python SDK's): msid track id of this m-section (by mid) → the track's
    /// own id → stream id + kind among entries not claimed by another m-section.
    fn resolve(
        &self,
        mid: Option<&str>,
        own_track_id: &str,
        stream_id: Option<&str>,
        kind: &str,
        msid: &[MsidEntry],
    ) -> Option<Value> {
        if let Some(mid) = mid
            && let Some(e) = msid.iter().find(|e| e.mid.as_deref() == Some(mid))
            && let Some(m) = self.map.get(&e.track_id)
        {
            return m.metadata.clone();
        }
        if let Some(m) = self.map.get(own_track_id) {
            return m.metadata.clone();
        }
        let stream_id = stream_id?;
        let signalled: HashSet<&str> = msid.iter().map(|e| e.track_id.as_str()).collect();
        let mut candidates = self.map.values().filter(|m| {
            m.stream_id.as_deref() == Some(stream_id)
                && m.kind.as_deref() == Some(kind)
                && !signalled.contains(m.track_id.as_str())
        });
        let first = candidates.next()?.metadata.clone();
        if candidates.all(|m| m.metadata == first) {
            first
        } else {
            None
        }
    }
}

pub(crate) struct Emitters {
    pub(crate) state: Emitter<StateChange<PeerConnectionState>>,
    pub(crate) tracks: Emitter<RemoteTrackEvent>,
    pub(crate) stream_added: Emitter<RemoteStreamEvent>,
    pub(crate) stream_removed: Emitter<RemoteStreamEvent>,
    pub(crate) data_channels: Emitter<DataChannel>,
    pub(crate) negotiation_errors: Emitter<String>,
    pub(crate) ice_candidate_errors: Emitter<String>,
    pub(crate) connection_reset: Emitter<()>,
    pub(crate) errors: Emitter<PeerEventError>,
}

/// Remote tracks accepted per peer connection: a camera, a screen share and their audio leave
/// plenty of room. Each accepted video track costs a decoder and a thread in the app, so a peer
/// offering hundreds must not get them; the excess is refused with a negotiation error.
pub const MAX_REMOTE_TRACKS: usize = 16;
/// Data channels a remote peer may open towards us per connection (each costs two tasks).
pub const MAX_REMOTE_DATA_CHANNELS: usize = 32;

pub(crate) struct RemoteInner {
    id: String,
    polite: AtomicBool,
    metadata: RwLock<Option<Value>>,
    state: Mutex<PeerConnectionState>,
    conn: Mutex<Option<ConnectionHandle>>,
    generation: AtomicU64,
    client: SignallingClient,
    closed: AtomicBool,
    meta: Mutex<MetaCache>,
    streams: Mutex<StreamAccounting>,
    /// Data channels the remote opened on the current connection (cleared on swap and close).
    channels: Mutex<Vec<DataChannel>>,
    /// Remote tracks accepted and still running (see [`MAX_REMOTE_TRACKS`]).
    live_tracks: std::sync::atomic::AtomicUsize,
    /// Drops this peer's UDP traffic while closed (troubleshooting), across generations.
    pub(crate) gate: Arc<NetworkGate>,
    pub(crate) ev: Emitters,
    /// Every connection generation reports here.
    pub(crate) conn_events: mpsc::Sender<(u64, ConnEvent)>,
}

/// A member of the channel. Cheap to clone; clones are the same peer (`==` compares identity).
#[derive(Clone)]
pub struct RemotePeer {
    pub(crate) inner: Arc<RemoteInner>,
}

impl PartialEq for RemotePeer {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl std::fmt::Debug for RemotePeer {
    /// Safe to log: id and state only (metadata is PII, pc is noise).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RemotePeer(id={}, state={})",
            self.id(),
            self.state().as_str()
        )
    }
}

impl RemotePeer {
    pub(crate) fn new(
        id: String,
        metadata: Option<Value>,
        polite: bool,
        client: SignallingClient,
        capacity: usize,
    ) -> (RemotePeer, mpsc::Receiver<(u64, ConnEvent)>) {
        let (tx, rx) = mpsc::channel(1024);
        let inner = Arc::new(RemoteInner {
            id,
            polite: AtomicBool::new(polite),
            metadata: RwLock::new(metadata),
            state: Mutex::new(PeerConnectionState::Idle),
            conn: Mutex::new(None),
            generation: AtomicU64::new(0),
            client,
            closed: AtomicBool::new(false),
            meta: Mutex::new(MetaCache {
                order: VecDeque::new(),
                map: HashMap::new(),
            }),
            streams: Mutex::new(StreamAccounting::default()),
            channels: Mutex::new(Vec::new()),
            live_tracks: std::sync::atomic::AtomicUsize::new(0),
            gate: Arc::new(NetworkGate::default()),
            ev: Emitters {
                state: Emitter::new(capacity),
                tracks: Emitter::new(capacity),
                stream_added: Emitter::new(capacity),
                stream_removed: Emitter::new(capacity),
                data_channels: Emitter::new(capacity),
                negotiation_errors: Emitter::new(capacity),
                ice_candidate_errors: Emitter::new(capacity),
                connection_reset: Emitter::new(capacity),
                errors: Emitter::new(capacity),
            },
            conn_events: tx,
        });
        (RemotePeer { inner }, rx)
    }

    /// The member's peer id, fixed for this object's life.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The peer's `peerMetadata` from presence. Untrusted; may be refreshed by a reconcile.
    pub fn metadata(&self) -> Option<Value> {
        self.inner.metadata.read().ok().and_then(|m| m.clone())
    }

    /// The current state, after the flicker filter.
    pub fn state(&self) -> PeerConnectionState {
        self.inner
            .state
            .lock()
            .map(|s| *s)
            .unwrap_or(PeerConnectionState::Closed)
    }

    /// Whether we are the polite side of perfect negotiation towards this peer (our peer id
    /// sorts first, bytewise): the polite side yields when both offer at once.
    pub fn polite(&self) -> bool {
        self.inner.polite.load(Ordering::SeqCst)
    }

    /// The current PeerConnection (escape hatch). It is replaced by a reconcile: re-read it
    /// after every `connected`, never cache it.
    pub fn pc(&self) -> Option<Arc<dyn PeerConnection>> {
        self.handle().map(|h| h.pc)
    }

    /// `{id, state}` only.
    pub fn to_json(&self) -> Value {
        json!({"id": self.id(), "state": self.state().as_str()})
    }

    /// Server-routed direct message to this peer (`send_to(id, data)`).
    pub async fn send(&self, data: Value) -> Result<(), PeerError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(PeerError::RemoteClosed(self.inner.id.clone()));
        }
        self.inner.client.send(&self.inner.id, data).await?;
        Ok(())
    }

    /// Opens a data channel on the current connection (negotiating if needed). Channels die
    /// with the connection: re-open them on every `connected`.
    pub async fn create_data_channel(
        &self,
        label: &str,
        init: Option<RTCDataChannelInit>,
    ) -> Result<DataChannel, PeerError> {
        let handle = self
            .handle()
            .ok_or_else(|| PeerError::RemoteClosed(self.inner.id.clone()))?;
        let (reply, rx) = oneshot::channel();
        if !handle.command(Command::CreateDataChannel {
            label: label.to_string(),
            init,
            reply,
        }) {
            return Err(PeerError::RemoteClosed(self.inner.id.clone()));
        }
        let raw = rx
            .await
            .map_err(|_| PeerError::RemoteClosed(self.inner.id.clone()))??;
        Ok(DataChannel::wrap(raw).await)
    }

    /// Forces an in-place ICE restart (troubleshooting).
    pub fn restart_ice(&self) {
        if let Some(h) = self.handle() {
            h.command(Command::RestartIce);
        }
    }

    /// Troubleshooting: silently drops every datagram to and from this peer for `duration`
    /// (media, data channels and ICE consent alike), as if the path went dark. ICE notices after
    /// `PeerSettings::ice_disconnected`, the state goes `reconnecting`, and the ICE-restart ladder
    /// recovers the call once the blackhole ends. Signalling is untouched. Zero ends it early.
    pub fn blackhole_media(&self, duration: Duration) {
        self.inner.gate.close_for(Instant::now(), duration);
    }

    /// Whether [`Self::blackhole_media`] is dropping this peer's traffic right now.
    pub fn media_blackholed(&self) -> bool {
        self.inner.gate.is_closed(Instant::now())
    }

    /// The streams live right now (this connection generation), for a subscriber that came late
    /// (e.g. a UI re-binding tiles): `on_stream_added` only reports what happens after it.
    pub fn current_streams(&self) -> Vec<RemoteStreamEvent> {
        let Ok(acc) = self.inner.streams.lock() else {
            return Vec::new();
        };
        acc.tracks
            .iter()
            .map(|(sid, tracks)| RemoteStreamEvent {
                stream_id: sid.clone(),
                metadata: tracks.iter().find_map(|t| t.metadata.clone()),
                tracks: tracks.clone(),
            })
            .collect()
    }

    /// Data channels the remote opened on the current connection, for a subscriber that came
    /// late: `on_data_channel` only reports what happens after it.
    pub fn current_data_channels(&self) -> Vec<DataChannel> {
        self.inner
            .channels
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Every state transition, in order, as filtered by the flicker filter.
    pub fn state_changes(&self) -> EventStream<StateChange<PeerConnectionState>> {
        self.inner.ev.state.subscribe()
    }
    /// Every remote track accepted on the current connection, with or without a stream. Tracks
    /// beyond [`MAX_REMOTE_TRACKS`] are refused and reported on `on_negotiation_error`.
    pub fn on_track(&self) -> EventStream<RemoteTrackEvent> {
        self.inner.ev.tracks.subscribe()
    }
    /// The first track of a stream arrived on the current connection. After a connection
    /// swap the same stream id is added again.
    pub fn on_stream_added(&self) -> EventStream<RemoteStreamEvent> {
        self.inner.ev.stream_added.subscribe()
    }
    /// The last live track of a stream ended. Not emitted when a connection swap or `closed`
    /// ends streams: those end silently.
    pub fn on_stream_removed(&self) -> EventStream<RemoteStreamEvent> {
        self.inner.ev.stream_removed.subscribe()
    }
    /// A data channel the remote opened (ours from `create_data_channel` are not reported).
    /// Beyond [`MAX_REMOTE_DATA_CHANNELS`] they are refused and reported on
    /// `on_negotiation_error`.
    pub fn on_data_channel(&self) -> EventStream<DataChannel> {
        self.inner.ev.data_channels.subscribe()
    }
    /// A failed offer/answer step (`"create_offer: …"`) or a refused track or data channel,
    /// as text for logs. The connection is not closed because of it.
    pub fn on_negotiation_error(&self) -> EventStream<String> {
        self.inner.ev.negotiation_errors.subscribe()
    }
    /// A remote candidate that webrtc-rs refused to add (scrubbed text). Usually harmless:
    /// other candidates may still connect.
    pub fn on_ice_candidate_error(&self) -> EventStream<String> {
        self.inner.ev.ice_candidate_errors.subscribe()
    }
    /// Fires after a reconcile swapped in a fresh connection (JS 1.2.0 `connection-reset`).
    pub fn on_connection_reset(&self) -> EventStream<()> {
        self.inner.ev.connection_reset.subscribe()
    }
    /// Per-peer errors such as [`PeerEventError::IceRecoveryExhausted`].
    pub fn errors(&self) -> EventStream<PeerEventError> {
        self.inner.ev.errors.subscribe()
    }

    // ---- crate-internal ----

    pub(crate) fn handle(&self) -> Option<ConnectionHandle> {
        self.inner.conn.lock().ok().and_then(|c| c.clone())
    }

    /// What a send leg with `ssrc` on the current connection reads its receiver's reports
    /// through (`None` when there is no connection).
    pub fn loss_feedback(&self, ssrc: u32) -> Option<super::feedback::LegFeedback> {
        self.handle().map(|h| h.feedback.for_leg(ssrc))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn set_metadata(&self, m: Option<Value>) {
        if let Ok(mut g) = self.inner.metadata.write() {
            *g = m;
        }
    }

    pub(crate) fn set_polite(&self, p: bool) {
        self.inner.polite.store(p, Ordering::SeqCst);
    }

    pub(crate) fn next_generation(&self) -> u64 {
        self.inner.generation.load(Ordering::SeqCst) + 1
    }

    /// Installs a connection; returns the one it replaced (to close in the background).
    /// Stream accounting is reset: the old generation's tracks end silently.
    pub(crate) fn install(&self, handle: ConnectionHandle) -> Option<ConnectionHandle> {
        if self.is_closed() {
            let h = handle.clone();
            tokio::spawn(async move { h.close().await });
            return None;
        }
        self.inner
            .generation
            .store(handle.generation, Ordering::SeqCst);
        if let Ok(mut c) = self.inner.channels.lock() {
            c.clear();
        }
        if let Ok(mut s) = self.inner.streams.lock() {
            *s = StreamAccounting {
                generation: handle.generation,
                ..StreamAccounting::default()
            };
        }
        self.inner
            .conn
            .lock()
            .ok()
            .and_then(|mut c| c.replace(handle))
    }

    pub(crate) fn signal(&self, s: InboundSignal) {
        if let Some(h) = self.handle() {
            h.command(Command::Signal(s));
        }
    }

    pub(crate) fn store_track_meta(&self, m: TrackMeta) {
        if let Ok(mut c) = self.inner.meta.lock() {
            c.put(m);
        }
    }

    /// Applies a proposed state through the flicker filter and emits the change.
    pub(crate) fn set_state(&self, proposed: PeerConnectionState) {
        let change = {
            let Ok(mut s) = self.inner.state.lock() else {
                return;
            };
            let Some(next) = next_state(*s, proposed) else {
                return;
            };
            let from = *s;
            *s = next;
            StateChange { from, to: next }
        };
        self.inner.ev.state.emit(change);
    }

    /// Closes the peer: state `closed`, stream accounting and metadata cache cleared, sends
    /// refused from now on; the connection closes in the background after `linger`.
    ///
    /// A peer that *left* keeps its PeerConnection for a few seconds: when its WebSocket merely
    /// dropped, its SDK is about to reconcile and swap connections itself, and an immediate
    /// DTLS close would tear down the connection it is about to replace (observed with the
    /// Python SDK, which then never recovers the pair).
    pub(crate) fn close(&self, linger: std::time::Duration) {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Ok(mut s) = self.inner.streams.lock() {
            *s = StreamAccounting {
                generation: u64::MAX,
                ..StreamAccounting::default()
            };
        }
        if let Ok(mut m) = self.inner.meta.lock() {
            m.map.clear();
            m.order.clear();
        }
        if let Ok(mut c) = self.inner.channels.lock() {
            c.clear();
        }
        self.set_state(PeerConnectionState::Closed);
        if let Some(h) = self.inner.conn.lock().ok().and_then(|mut c| c.take()) {
            tokio::spawn(async move {
                tokio::time::sleep(linger).await;
                h.close().await
            });
        }
    }

    /// Processes connection events until every sender is gone. Late events from replaced
    /// generations are dropped.
    pub(crate) async fn pump(self, mut rx: mpsc::Receiver<(u64, ConnEvent)>) {
        while let Some((generation, ev)) = rx.recv().await {
            if generation != self.inner.generation.load(Ordering::SeqCst) || self.is_closed() {
                continue;
            }
            match ev {
                ConnEvent::State(s) => {
                    // A connection closing under us (swap, close) is not the peer closing.
                    if s != PeerConnectionState::Closed {
                        self.set_state(s);
                    }
                }
                ConnEvent::DataChannel(raw) => {
                    // Only channels still open count: a peer that closes channels and opens
                    // new ones must not run into the cap.
                    let open = self.inner.channels.lock().map_or(0, |mut c| {
                        c.retain(|dc| !dc.is_closed());
                        c.len()
                    });
                    if open >= MAX_REMOTE_DATA_CHANNELS {
                        let label = raw.label().await.unwrap_or_default();
                        warn!(peer = %self.inner.id, "refusing data channel beyond the cap of {MAX_REMOTE_DATA_CHANNELS}");
                        let _ = raw.close().await;
                        self.inner.ev.negotiation_errors.emit(format!(
                            "data channel {label:?} refused: the peer already has {MAX_REMOTE_DATA_CHANNELS} open"
                        ));
                        continue;
                    }
                    let dc = DataChannel::wrap(raw).await;
                    if let Ok(mut c) = self.inner.channels.lock() {
                        c.push(dc.clone());
                    }
                    self.inner.ev.data_channels.emit(dc);
                }
                ConnEvent::Track { track, msid, mid } => {
                    self.track_arrived(generation, track, msid, mid).await
                }
                ConnEvent::NegotiationError(e) => self.inner.ev.negotiation_errors.emit(e),
                ConnEvent::IceCandidateError(e) => self.inner.ev.ice_candidate_errors.emit(e),
                ConnEvent::TrackEnded { track_id } => {
                    let stream = self.inner.streams.lock().ok().and_then(|acc| {
                        acc.live
                            .iter()
                            .find(|(_, tracks)| tracks.contains(&track_id))
                            .map(|(sid, _)| sid.clone())
                    });
                    self.track_ended(generation, stream, &track_id);
                }
                ConnEvent::IceRecoveryExhausted { attempts } => {
                    self.inner
                        .ev
                        .errors
                        .emit(PeerEventError::IceRecoveryExhausted {
                            peer: self.inner.id.clone(),
                            attempts,
                        })
                }
            }
        }
    }

    async fn track_arrived(
        &self,
        generation: u64,
        raw: Arc<dyn TrackRemote>,
        msid: Vec<MsidEntry>,
        mid: Option<String>,
    ) {
        let track_id = raw.track_id().await.to_string();
        let live = &self.inner.live_tracks;
        if live.load(Ordering::Relaxed) >= MAX_REMOTE_TRACKS {
            warn!(peer = %self.inner.id, "refusing a remote track beyond the cap of {MAX_REMOTE_TRACKS}");
            self.inner.ev.negotiation_errors.emit(format!(
                "track {track_id:?} refused: the peer already sends {MAX_REMOTE_TRACKS}"
            ));
            // Drain it without a consumer, so the connection's buffers never back up.
            tokio::spawn(async move {
                while let Some(ev) = raw.poll().await {
                    if matches!(ev, TrackRemoteEvent::OnEnded) {
                        break;
                    }
                }
            });
            return;
        }
        live.fetch_add(1, Ordering::Relaxed);
        let stream_id = {
            let s = raw.stream_id().await.to_string();
            (!s.is_empty() && s != "-").then_some(s)
        };
        let kind = raw.kind().await.to_string().to_lowercase();
        let metadata = self.inner.meta.lock().ok().and_then(|c| {
            c.resolve(
                mid.as_deref(),
                &track_id,
                stream_id.as_deref(),
                &kind,
                &msid,
            )
        });
        let (tx, rx) = mpsc::channel(RTP_BUFFER);
        let track = Arc::new(RemoteTrack {
            track_id: track_id.clone(),
            kind,
            stream_id: stream_id.clone(),
            metadata: metadata.clone(),
            raw: raw.clone(),
            rtp: Mutex::new(Some(rx)),
        });
        self.inner.ev.tracks.emit(RemoteTrackEvent {
            track: track.clone(),
            streams: stream_id.iter().cloned().collect(),
            metadata: metadata.clone(),
        });
        if let Some(sid) = &stream_id {
            let first_sight = {
                let Ok(mut acc) = self.inner.streams.lock() else {
                    return;
                };
                if acc.generation != generation {
                    return;
                }
                let live = acc.live.entry(sid.clone()).or_default();
                let first = live.is_empty();
                live.insert(track_id.clone());
                acc.tracks
                    .entry(sid.clone())
                    .or_default()
                    .push(track.clone());
                first
            };
            if first_sight {
                self.inner.ev.stream_added.emit(RemoteStreamEvent {
                    stream_id: sid.clone(),
                    metadata: metadata.clone(),
                    tracks: vec![track.clone()],
                });
            }
        }
        // Read the track's events: RTP to the consumer, end → stream accounting.
        let me = self.clone();
        tokio::spawn(async move {
            let mut dropped = 0u64;
            while let Some(ev) = raw.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        // Full buffer: nobody is consuming; count and drop.
                        dropped += u64::from(tx.try_send(p).is_err());
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
            if dropped > 0 {
                debug!(peer = %me.inner.id, dropped, "RTP packets dropped for lack of a consumer");
            }
            me.inner.live_tracks.fetch_sub(1, Ordering::Relaxed);
            me.track_ended(generation, stream_id, &track_id);
        });
    }

    fn track_ended(&self, generation: u64, stream_id: Option<String>, track_id: &str) {
        let Some(sid) = stream_id else { return };
        let removed = {
            let Ok(mut acc) = self.inner.streams.lock() else {
                return;
            };
            if acc.generation != generation {
                return; // accounting was reset (swap, close): end silently
            }
            let Some(live) = acc.live.get_mut(&sid) else {
                return;
            };
            live.remove(track_id);
            if live.is_empty() {
                acc.live.remove(&sid);
                acc.tracks.remove(&sid)
            } else {
                None
            }
        };
        if let Some(tracks) = removed {
            self.inner.ev.stream_removed.emit(RemoteStreamEvent {
                stream_id: sid,
                metadata: None,
                tracks,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(track: &str, stream: Option<&str>, kind: &str, role: &str) -> TrackMeta {
        TrackMeta {
            track_id: track.into(),
            metadata: Some(json!({"role": role})),
            kind: Some(kind.into()),
            stream_id: stream.map(str::to_string),
        }
    }

    fn cache() -> MetaCache {
        MetaCache {
            order: VecDeque::new(),
            map: HashMap::new(),
        }
    }

    #[test]
    fn metadata_resolution_order() {
        let mut c = cache();
        c.put(meta("cam-track", Some("s1"), "video", "camera"));
        c.put(meta("screen-track", Some("s2"), "video", "screen"));
        let msid = vec![
            MsidEntry {
                mid: Some("0".into()),
                stream_id: Some("s1".into()),
                track_id: "cam-track".into(),
            },
            MsidEntry {
                mid: Some("1".into()),
                stream_id: Some("s2".into()),
                track_id: "screen-track".into(),
            },
        ];
        // 1. by mid → msid track id (the receiver's own track id is unrelated).
        assert_eq!(
            c.resolve(Some("1"), "recv-xyz", Some("s2"), "video", &msid),
            Some(json!({"role":"screen"}))
        );
        // 2. own track id.
        assert_eq!(
            c.resolve(None, "cam-track", None, "video", &[]),
            Some(json!({"role":"camera"}))
        );
        // 3. Firefox fallback: msid carries generated ids, stream + kind decide.
        let ff_msid = vec![MsidEntry {
            mid: Some("0".into()),
            stream_id: Some("s1".into()),
            track_id: "{gen-1}".into(),
        }];
        assert_eq!(
            c.resolve(Some("0"), "{gen-1}", Some("s1"), "video", &ff_msid),
            Some(json!({"role":"camera"}))
        );
        // …but not for a kind that has no entry, nor without a stream.
        assert_eq!(
            c.resolve(Some("0"), "{gen-1}", Some("s1"), "audio", &ff_msid),
            None
        );
        assert_eq!(c.resolve(None, "{gen-2}", None, "video", &ff_msid), None);
        // Ambiguous fallback (two different bags in one stream+kind) → none.
        c.put(meta("other", Some("s1"), "video", "file"));
        assert_eq!(
            c.resolve(Some("0"), "{gen-1}", Some("s1"), "video", &ff_msid),
            None
        );
        // Clear removes.
        c.put(TrackMeta {
            track_id: "cam-track".into(),
            metadata: None,
            kind: None,
            stream_id: None,
        });
        assert_eq!(c.resolve(None, "cam-track", None, "video", &[]), None);
    }

    #[test]
    fn metadata_cache_is_fifo_capped() {
        let mut c = cache();
        for i in 0..(META_CACHE_CAP + 10) {
            c.put(meta(&format!("t{i}"), None, "video", "x"));
        }
        assert_eq!(c.map.len(), META_CACHE_CAP);
        assert!(!c.map.contains_key("t0"));
        assert!(c.map.contains_key(&format!("t{}", META_CACHE_CAP + 9)));
        // Updating in place does not evict.
        c.put(meta("t20", None, "video", "y"));
        assert_eq!(c.map.len(), META_CACHE_CAP);
    }
}
