//! The hub: every connection, channel, presence count and routing decision, as a pure state
//! machine. Inputs are calls with the current time; outputs are frames and closes appended to a
//! caller-supplied `Vec<Output>`. The network shell (`server::ws`) owns the sockets and delivers
//! the outputs in order while it still holds the hub's lock, which is what makes the ordering
//! guarantees below hold across connections:
//!
//! * `welcome` is the first frame of every connection;
//! * a subscriber gets `ack`, then its presence snapshot, before any diff for that channel;
//! * a newcomer's join diff is queued to existing members before anything the newcomer sends
//!   next (its first `direct` included);
//! * whenever the hub emits `Close` for a connection it has already forgotten that connection,
//!   so presence `left` diffs go out at once and later input for it is ignored.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::auth::{Action, Principal};
use crate::protocol::frames::{ClientFrame, FrameError, FrameKind, PresenceEntry, ServerFrame};
use crate::protocol::validate::{check_channel, check_not_reserved, check_peer_id};
use crate::protocol::{CloseCode, ErrorCode, parse_client_frame};

use super::limits::TokenBucket;

/// Server-local connection number, never reused within one hub.
pub type ConnId = u64;

/// Limits and policy switches; every limit is configurable.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Largest inbound frame in bytes; also advertised as `welcome.maxMessageSize`.
    pub max_frame_bytes: usize,
    pub max_channels_per_connection: usize,
    /// Sustained inbound frames per second per connection; 0 disables the bucket.
    pub rate_per_sec: f64,
    pub rate_burst: f64,
    /// Concurrent connections; 0 = unlimited. Over the cap a connection is closed with 4010.
    pub max_connections: usize,
    /// publish + send attempts allowed in this server's lifetime; `None` = unlimited.
    pub message_quota: Option<u64>,
    /// Close with 4003 instead of answering `channel_not_authorized` on subscribe. Off by default:
    /// an unauthorised subscribe normally gets an error frame and the connection stays open.
    pub close_on_unauthorized_subscribe: bool,
    /// `send` only reaches peers that share a subscribed channel with the sender. Off by default:
    /// `send` is not scoped by channel and needs only the `send` permission.
    pub send_requires_shared_channel: bool,
    /// Largest presence snapshot in bytes. Members beyond it (in peer-id order) are left out of
    /// `joined` and counted in an extra `omitted` field; their later diffs still arrive.
    pub max_snapshot_bytes: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_frame_bytes: 65_536,
            max_channels_per_connection: 100,
            rate_per_sec: 100.0,
            rate_burst: 200.0,
            max_connections: 0,
            message_quota: None,
            close_on_unauthorized_subscribe: false,
            send_requires_shared_channel: false,
            // Under the 1 MiB frame limit of the SDKs, with room for the frame around it.
            max_snapshot_bytes: 512 * 1024,
        }
    }
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this text frame on that connection (the same `Arc` is shared by every recipient of
    /// a fan-out, so a publish is serialised once per variant, not once per subscriber).
    Frame {
        conn: ConnId,
        kind: FrameKind,
        text: Arc<str>,
    },
    /// Send a close frame with this code, then drop the socket.
    Close { conn: ConnId, code: CloseCode },
}

/// Counters for `/metrics` and `/v1/usage`.
#[derive(Debug, Default, Clone)]
pub struct HubStats {
    pub frames_in: BTreeMap<FrameKind, u64>,
    pub frames_out: BTreeMap<FrameKind, u64>,
    pub errors: BTreeMap<ErrorCode, u64>,
    pub closes: BTreeMap<CloseCode, u64>,
    /// publish + send attempts, including refused ones (as Metered counts them).
    pub messages_used: u64,
    pub peak_connections: usize,
    pub connections_total: u64,
    /// Times a channel's member list was serialised for snapshots (once per membership change,
    /// however often clients subscribe).
    pub snapshots_built: u64,
}

/// One application's usage (what `GET /v1/usage` reports to that application's keys). The
/// message quota is counted per application, so one tenant cannot spend another's.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppUsage {
    pub connections: usize,
    pub peak_connections: usize,
    /// publish + send attempts, including refused ones.
    pub messages_used: u64,
}

struct Conn {
    principal: Principal,
    /// Cheap copies of the sender identity for the publish/send hot path.
    peer_id: Arc<str>,
    peer_metadata: Option<Arc<Value>>,
    /// channel → includeSenderMetadata
    subs: HashMap<String, bool>,
    bucket: TokenBucket,
}

#[derive(Default)]
struct Channel {
    /// connection → includeSenderMetadata. Ordered so fan-out order is deterministic.
    subscribers: BTreeMap<ConnId, bool>,
    /// peer id → presence entry, reference-counted over that peer's connections:
    /// `joined` goes out for the first one, `left` after the last.
    members: BTreeMap<String, Member>,
    /// Every member's serialised presence entry, in peer-id order; dropped whenever the
    /// membership changes.
    snapshot_cache: Option<SnapshotEntries>,
}

/// The hub-internal name of a peer id or channel within an application. Apps share nothing
/// (two keys configured as separate apps may both have an "alice" and a "room"), so the maps of
/// peers and channels are keyed by app and name; the default app (empty) keeps names as they
/// are. NUL cannot occur in peer ids or channel names, so the two parts never blur.
fn scoped<'a>(app: &str, name: &'a str) -> Cow<'a, str> {
    if app.is_empty() {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{app}\u{0}{name}"))
    }
}

/// A channel's members as (peer id, serialised presence entry), in peer-id order.
type SnapshotEntries = Arc<[(String, Box<str>)]>;

struct Member {
    refs: usize,
    metadata: Option<Value>,
}

/// Why a REST publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestPublishError {
    OverQuota,
}

pub struct Hub {
    cfg: HubConfig,
    next_id: ConnId,
    conns: HashMap<ConnId, Conn>,
    channels: HashMap<String, Channel>,
    peers: HashMap<String, BTreeSet<ConnId>>,
    stats: HubStats,
    /// Usage per application (keys are the configured app names, so the map stays small).
    apps: HashMap<String, AppUsage>,
    /// After `going_away`: connections end because the server is leaving, not because their
    /// peers left the call, so no presence `left` goes out (the remaining members would tear
    /// down working P2P calls seconds before everyone reconnects and reconciles).
    draining: bool,
    /// The `going_away` frame sent when draining began: a connection admitted later gets it too.
    going_away: Option<Arc<str>>,
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Self {
        Hub {
            cfg,
            next_id: 1,
            conns: HashMap::new(),
            channels: HashMap::new(),
            peers: HashMap::new(),
            stats: HubStats::default(),
            apps: HashMap::new(),
            draining: false,
            going_away: None,
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &HubStats {
        &self.stats
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// One application's usage (zeros for an application never seen).
    pub fn app_usage(&self, app: &str) -> AppUsage {
        self.apps.get(app).cloned().unwrap_or_default()
    }

    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    pub fn is_connected(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Peer id of a live connection (for logs).
    pub fn peer_of(&self, conn: ConnId) -> Option<&str> {
        self.conns.get(&conn).map(|c| c.principal.peer_id.as_str())
    }

    /// Admits an authenticated connection and queues its `welcome`. Over the concurrent cap the
    /// caller must close the socket with the returned code (4010) before any welcome.
    pub fn connect(
        &mut self,
        principal: Principal,
        now: Instant,
        unix_now: u64,
        out: &mut Vec<Output>,
    ) -> Result<ConnId, CloseCode> {
        if self.cfg.max_connections > 0 && self.conns.len() >= self.cfg.max_connections {
            *self
                .stats
                .closes
                .entry(CloseCode::OverConcurrentLimit)
                .or_default() += 1;
            return Err(CloseCode::OverConcurrentLimit);
        }
        let id = self.next_id;
        self.next_id += 1;
        let welcome = ServerFrame::Welcome {
            peer_id: &principal.peer_id,
            expires_at: principal.expires_at,
            server_time: unix_now,
            max_message_size: self.cfg.max_frame_bytes,
            metadata: principal.metadata.as_ref(),
        }
        .to_json();
        self.peers
            .entry(scoped(&principal.app, &principal.peer_id).into_owned())
            .or_default()
            .insert(id);
        self.conns.insert(
            id,
            Conn {
                peer_id: principal.peer_id.as_str().into(),
                peer_metadata: principal.peer_metadata.clone().map(Arc::new),
                principal,
                subs: HashMap::new(),
                bucket: TokenBucket::new(self.cfg.rate_per_sec, self.cfg.rate_burst, now),
            },
        );
        self.stats.connections_total += 1;
        self.stats.peak_connections = self.stats.peak_connections.max(self.conns.len());
        if let Some(c) = self.conns.get(&id) {
            let usage = self.apps.entry(c.principal.app.clone()).or_default();
            usage.connections += 1;
            usage.peak_connections = usage.peak_connections.max(usage.connections);
        }
        self.emit(out, id, FrameKind::Welcome, welcome.into());
        if let Some(text) = self.going_away.clone() {
            self.emit(out, id, FrameKind::GoingAway, text);
        }
        Ok(id)
    }

    /// The socket went away (client close, error, keepalive timeout). Idempotent.
    pub fn disconnect(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(usage) = self.apps.get_mut(&c.principal.app) {
            usage.connections = usage.connections.saturating_sub(1);
        }
        let peer_key = scoped(&c.principal.app, &c.principal.peer_id);
        if let Some(set) = self.peers.get_mut(&*peer_key) {
            set.remove(&conn);
            if set.is_empty() {
                self.peers.remove(&*peer_key);
            }
        }
        let mut channels: Vec<&String> = c.subs.keys().collect();
        channels.sort();
        for channel in channels {
            self.leave_channel(conn, &c.principal.app, &c.principal.peer_id, channel, out);
        }
    }

    /// Closes a connection with `code`: forgets it (presence `left` goes out now) and tells the
    /// shell to send the close frame.
    pub fn close(&mut self, conn: ConnId, code: CloseCode, out: &mut Vec<Output>) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        *self.stats.closes.entry(code).or_default() += 1;
        out.push(Output::Close { conn, code });
        self.disconnect(conn, out);
    }

    /// The token's `exp − 250 ms` was reached.
    pub fn token_expired(&mut self, conn: ConnId, out: &mut Vec<Output>) {
        self.close(conn, CloseCode::TokenExpired, out);
    }

    /// `DELETE /v1/peers/:id`: closes every connection of the peer in `app` with 4020.
    pub fn kick(&mut self, app: &str, peer_id: &str, out: &mut Vec<Output>) -> usize {
        let conns: Vec<ConnId> = self
            .peers
            .get(&*scoped(app, peer_id))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for conn in &conns {
            self.close(*conn, CloseCode::AdminDisconnect, out);
        }
        conns.len()
    }

    /// Graceful shutdown, step one: tell everybody when to come back.
    pub fn going_away(&mut self, retry_after_ms: u64, out: &mut Vec<Output>) {
        self.draining = true;
        let text: Arc<str> = ServerFrame::GoingAway { retry_after_ms }.to_json().into();
        self.going_away = Some(text.clone());
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.emit(out, id, FrameKind::GoingAway, text.clone());
        }
    }

    /// Graceful shutdown, step two: close everybody with `code`.
    pub fn close_all(&mut self, code: CloseCode, out: &mut Vec<Output>) {
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.close(id, code, out);
        }
    }

    /// A binary frame arrived: counted against the bucket, answered with `malformed_message`.
    pub fn handle_binary(&mut self, conn: ConnId, len: usize, now: Instant, out: &mut Vec<Output>) {
        if !self.admit_frame(conn, len, now, out) {
            return;
        }
        *self.stats.frames_in.entry(FrameKind::Invalid).or_default() += 1;
        self.error(
            conn,
            None,
            ErrorCode::MalformedMessage,
            "binary frames are not supported",
            out,
        );
    }

    /// One inbound text frame.
    pub fn handle_text(&mut self, conn: ConnId, text: &str, now: Instant, out: &mut Vec<Output>) {
        self.handle_parsed(conn, text.len(), parse_client_frame(text), now, out);
    }

    /// A text frame of `len` bytes that the caller already parsed (the shell parses outside the
    /// hub's lock: parsing is the most expensive part of handling a frame and needs no state).
    /// Size and rate checks still come first, as for [`Hub::handle_text`].
    pub fn handle_parsed(
        &mut self,
        conn: ConnId,
        len: usize,
        parsed: Result<ClientFrame, FrameError>,
        now: Instant,
        out: &mut Vec<Output>,
    ) {
        if !self.admit_frame(conn, len, now, out) {
            return;
        }
        let frame = match parsed {
            Ok(f) => f,
            Err(e) => {
                *self.stats.frames_in.entry(FrameKind::Invalid).or_default() += 1;
                self.error(conn, e.request_id.as_deref(), e.code, e.message, out);
                return;
            }
        };
        *self.stats.frames_in.entry(frame.kind()).or_default() += 1;
        match frame {
            ClientFrame::Subscribe {
                channel,
                request_id,
                include_sender_metadata,
            } => self.subscribe(
                conn,
                &channel,
                request_id.as_deref(),
                include_sender_metadata,
                out,
            ),
            ClientFrame::Unsubscribe {
                channel,
                request_id,
            } => self.unsubscribe(conn, &channel, request_id.as_deref(), out),
            ClientFrame::Publish {
                channel,
                data,
                request_id,
            } => self.publish(conn, &channel, data.as_deref(), request_id.as_deref(), out),
            ClientFrame::Send {
                to,
                data,
                request_id,
            } => self.send(conn, &to, data.as_deref(), request_id.as_deref(), out),
            ClientFrame::Ping { request_id } => {
                let text = ServerFrame::Pong {
                    request_id: request_id.as_deref(),
                }
                .to_json();
                self.emit(out, conn, FrameKind::Pong, text.into());
            }
        }
    }

    /// Size and rate checks shared by text and binary frames; false when the frame must be
    /// dropped (unknown connection, or the connection was closed).
    fn admit_frame(
        &mut self,
        conn: ConnId,
        len: usize,
        now: Instant,
        out: &mut Vec<Output>,
    ) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if len > self.cfg.max_frame_bytes {
            self.close(conn, CloseCode::MessageTooBig, out);
            return false;
        }
        if !c.bucket.try_take(now) {
            self.close(conn, CloseCode::OverMessageRate, out);
            return false;
        }
        true
    }

    /// Channel checks shared by subscribe, unsubscribe and publish, in precedence order.
    fn check_channel_for(
        &self,
        channel: &str,
        action: Action,
        principal: &Principal,
    ) -> Result<(), (ErrorCode, &'static str)> {
        if check_channel(channel).is_err() {
            return Err((
                ErrorCode::InvalidChannel,
                "channel must be 1-256 bytes without control characters",
            ));
        }
        if channel.contains('*') {
            // Pattern subscriptions are not supported yet; refuse rather than guess at semantics.
            return Err((
                ErrorCode::InvalidChannel,
                "wildcard channels are not supported",
            ));
        }
        if check_not_reserved(channel).is_err() {
            return Err((ErrorCode::ChannelReserved, "channel prefix is reserved"));
        }
        if !principal.can(action) {
            return Err((
                ErrorCode::ActionNotPermitted,
                match action {
                    Action::Subscribe => "credential lacks the subscribe action",
                    Action::Publish => "credential lacks the publish action",
                    Action::Presence => "credential lacks the presence action",
                    Action::Send => "credential lacks the send action",
                },
            ));
        }
        if !principal.may_use_channel(channel) {
            return Err((
                ErrorCode::ChannelNotAuthorized,
                "channel not authorized for this credential",
            ));
        }
        Ok(())
    }

    fn subscribe(
        &mut self,
        conn: ConnId,
        channel: &str,
        rid: Option<&str>,
        include_meta: bool,
        out: &mut Vec<Output>,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if let Err((code, msg)) = self.check_channel_for(channel, Action::Subscribe, &c.principal) {
            if code == ErrorCode::ChannelNotAuthorized && self.cfg.close_on_unauthorized_subscribe {
                self.close(conn, CloseCode::ChannelNotAuthorized, out);
            } else {
                self.error(conn, rid, code, msg, out);
            }
            return;
        }
        let already = c.subs.contains_key(channel);
        if !already && c.subs.len() >= self.cfg.max_channels_per_connection {
            self.error(
                conn,
                rid,
                ErrorCode::ChannelLimitExceeded,
                "connection already holds the maximum number of channels",
                out,
            );
            return;
        }
        let peer_id = c.principal.peer_id.clone();
        let app = c.principal.app.clone();
        let metadata = c.principal.peer_metadata.clone();
        let sees_presence = c.principal.can(Action::Presence);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.subs.insert(channel.to_string(), include_meta);
        }
        let key = scoped(&app, channel);
        let ch = self.channels.entry(key.to_string()).or_default();
        ch.subscribers.insert(conn, include_meta);
        let mut newly_joined = false;
        if !already {
            let m = ch
                .members
                .entry(peer_id.clone())
                .or_insert(Member { refs: 0, metadata });
            m.refs += 1;
            newly_joined = m.refs == 1;
            if newly_joined {
                ch.snapshot_cache = None;
            }
        }
        // ack, then the snapshot, also on a re-subscribe: always sent, even when empty, because the
        // official SDKs wait for it.
        if let Some(rid) = rid {
            let ack = ServerFrame::Ack { request_id: rid }.to_json();
            self.emit(out, conn, FrameKind::Ack, ack.into());
        }
        if sees_presence {
            let snap = self.snapshot(&app, channel, &peer_id);
            self.emit(out, conn, FrameKind::Presence, snap.into());
        }
        if newly_joined {
            let entry = [PresenceEntry {
                peer_id: peer_id.clone(),
                metadata: self
                    .channels
                    .get(&*key)
                    .and_then(|ch| ch.members.get(&peer_id))
                    .and_then(|m| m.metadata.clone()),
            }];
            let diff: Arc<str> = ServerFrame::Presence {
                channel,
                joined: &entry,
                left: &[],
            }
            .to_json()
            .into();
            self.presence_to_others(&app, channel, &peer_id, diff, out);
        }
    }

    fn unsubscribe(
        &mut self,
        conn: ConnId,
        channel: &str,
        rid: Option<&str>,
        out: &mut Vec<Output>,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if check_channel(channel).is_err() {
            self.error(
                conn,
                rid,
                ErrorCode::InvalidChannel,
                "channel must be 1-256 bytes without control characters",
                out,
            );
            return;
        }
        let peer_id = c.principal.peer_id.clone();
        let app = c.principal.app.clone();
        let held = self
            .conns
            .get_mut(&conn)
            .is_some_and(|c| c.subs.remove(channel).is_some());
        if let Some(rid) = rid {
            let ack = ServerFrame::Ack { request_id: rid }.to_json();
            self.emit(out, conn, FrameKind::Ack, ack.into());
        }
        if held {
            self.leave_channel(conn, &app, &peer_id, channel, out);
        }
    }

    fn publish(
        &mut self,
        conn: ConnId,
        channel: &str,
        data: Option<&RawValue>,
        rid: Option<&str>,
        out: &mut Vec<Output>,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if let Err((code, msg)) = self.check_channel_for(channel, Action::Publish, &c.principal) {
            self.error(conn, rid, code, msg, out);
            return;
        }
        let Some(data) = data else {
            self.error(conn, rid, ErrorCode::MissingData, "data is required", out);
            return;
        };
        let from = c.peer_id.clone();
        let meta = c.peer_metadata.clone();
        let app = c.principal.app.clone();
        if !self.take_quota(&app) {
            self.error(
                conn,
                rid,
                ErrorCode::OverMessageQuota,
                "message quota exhausted",
                out,
            );
            return;
        }
        if let Some(rid) = rid {
            let ack = ServerFrame::Ack { request_id: rid }.to_json();
            self.emit(out, conn, FrameKind::Ack, ack.into());
        }
        self.fan_out(&app, channel, &from, meta.as_deref(), data, Some(conn), out);
    }

    /// Delivers a channel message to every subscriber except `exclude`; returns how many got it.
    #[allow(clippy::too_many_arguments)]
    fn fan_out(
        &mut self,
        app: &str,
        channel: &str,
        from: &str,
        meta: Option<&Value>,
        data: &RawValue,
        exclude: Option<ConnId>,
        out: &mut Vec<Output>,
    ) -> usize {
        let Some(ch) = self.channels.get(&*scoped(app, channel)) else {
            return 0;
        };
        let mut plain: Option<Arc<str>> = None;
        let mut with_meta: Option<Arc<str>> = None;
        let mut delivered = 0;
        let mut frames = Vec::with_capacity(ch.subscribers.len());
        for (&sub, &wants_meta) in &ch.subscribers {
            if Some(sub) == exclude {
                continue;
            }
            let text = if wants_meta && meta.is_some() {
                with_meta
                    .get_or_insert_with(|| {
                        ServerFrame::Message {
                            channel,
                            from,
                            data,
                            from_metadata: meta,
                        }
                        .to_json()
                        .into()
                    })
                    .clone()
            } else {
                plain
                    .get_or_insert_with(|| {
                        ServerFrame::Message {
                            channel,
                            from,
                            data,
                            from_metadata: None,
                        }
                        .to_json()
                        .into()
                    })
                    .clone()
            };
            frames.push((sub, text));
            delivered += 1;
        }
        for (sub, text) in frames {
            self.emit(out, sub, FrameKind::Message, text);
        }
        delivered
    }

    fn send(
        &mut self,
        conn: ConnId,
        to: &str,
        data: Option<&RawValue>,
        rid: Option<&str>,
        out: &mut Vec<Output>,
    ) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if check_peer_id(to).is_err() {
            self.error(
                conn,
                rid,
                ErrorCode::InvalidPeerId,
                "to must be 1-128 printable ASCII characters",
                out,
            );
            return;
        }
        if !c.principal.can(Action::Send) {
            self.error(
                conn,
                rid,
                ErrorCode::ActionNotPermitted,
                "credential lacks the send action",
                out,
            );
            return;
        }
        let Some(data) = data else {
            self.error(conn, rid, ErrorCode::MissingData, "data is required", out);
            return;
        };
        let from = c.peer_id.clone();
        let meta = c.peer_metadata.clone();
        let app = c.principal.app.clone();
        let shares_channel = !self.cfg.send_requires_shared_channel
            || c.subs.keys().any(|ch| {
                self.channels
                    .get(&*scoped(&app, ch))
                    .is_some_and(|ch| ch.members.contains_key(to))
            });
        if !self.take_quota(&app) {
            self.error(
                conn,
                rid,
                ErrorCode::OverMessageQuota,
                "message quota exhausted",
                out,
            );
            return;
        }
        let targets: Vec<ConnId> = if shares_channel {
            self.peers
                .get(&*scoped(&app, to))
                .map(|s| s.iter().copied().filter(|&t| t != conn).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        if targets.is_empty() {
            self.error(
                conn,
                rid,
                ErrorCode::PeerNotFound,
                "peer is not online",
                out,
            );
            return;
        }
        if let Some(rid) = rid {
            let ack = ServerFrame::Ack { request_id: rid }.to_json();
            self.emit(out, conn, FrameKind::Ack, ack.into());
        }
        let text: Arc<str> = ServerFrame::Direct {
            from: &from,
            data,
            from_metadata: meta.as_deref(),
        }
        .to_json()
        .into();
        for t in targets {
            self.emit(out, t, FrameKind::Direct, text.clone());
        }
    }

    /// `GET /v1/channels/:id/peers`: unique peers with their metadata.
    pub fn channel_peers(&self, app: &str, channel: &str) -> Vec<PresenceEntry> {
        self.members_except(app, channel, "")
    }

    /// `POST /v1/channels/:id/publish`: a server-side publish; every subscriber receives it.
    pub fn rest_publish(
        &mut self,
        app: &str,
        channel: &str,
        from: &str,
        from_metadata: Option<&Value>,
        data: &RawValue,
        out: &mut Vec<Output>,
    ) -> Result<usize, RestPublishError> {
        if !self.take_quota(app) {
            return Err(RestPublishError::OverQuota);
        }
        Ok(self.fan_out(app, channel, from, from_metadata, data, None, out))
    }

    /// Counts one publish or send against its application's quota.
    fn take_quota(&mut self, app: &str) -> bool {
        self.stats.messages_used += 1;
        let used = match self.apps.get_mut(app) {
            Some(u) => {
                u.messages_used += 1;
                u.messages_used
            }
            None => {
                self.apps.insert(
                    app.to_string(),
                    AppUsage {
                        messages_used: 1,
                        ..AppUsage::default()
                    },
                );
                1
            }
        };
        self.cfg.message_quota.is_none_or(|q| used <= q)
    }

    fn members_except(&self, app: &str, channel: &str, except: &str) -> Vec<PresenceEntry> {
        self.channels
            .get(&*scoped(app, channel))
            .map(|ch| {
                ch.members
                    .iter()
                    .filter(|(id, _)| id.as_str() != except)
                    .map(|(id, m)| PresenceEntry {
                        peer_id: id.clone(),
                        metadata: m.metadata.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The presence snapshot of `channel` for a subscriber who is `except`: the same frame
    /// as `ServerFrame::Presence` with every other member in `joined`, up to
    /// `max_snapshot_bytes`, plus `"omitted": n` when some did not fit. Built from the channel's
    /// cached entries, so a client re-subscribing in a loop costs a copy, not a serialisation.
    fn snapshot(&mut self, app: &str, channel: &str, except: &str) -> String {
        let entries = match self.channels.get_mut(&*scoped(app, channel)) {
            None => Arc::from(Vec::new()),
            Some(ch) => match &ch.snapshot_cache {
                Some(c) => c.clone(),
                None => {
                    let built: SnapshotEntries = ch
                        .members
                        .iter()
                        .map(|(id, m)| {
                            let entry = PresenceEntry {
                                peer_id: id.clone(),
                                metadata: m.metadata.clone(),
                            };
                            let json = serde_json::to_string(&entry).unwrap_or_else(|_| {
                                serde_json::json!({ "peerId": id }).to_string()
                            });
                            (id.clone(), json.into_boxed_str())
                        })
                        .collect();
                    ch.snapshot_cache = Some(built.clone());
                    self.stats.snapshots_built += 1;
                    built
                }
            },
        };
        let channel_json = serde_json::Value::from(channel).to_string();
        let head = format!(r#"{{"type":"presence","channel":{channel_json},"joined":["#);
        // `],"left":[],"omitted":` + up to 20 digits + `}`
        let tail_room = 45;
        let mut text = head;
        let mut omitted = 0u64;
        let mut first = true;
        for (id, json) in entries.iter() {
            if id == except {
                continue;
            }
            if omitted > 0 || text.len() + json.len() + 1 + tail_room > self.cfg.max_snapshot_bytes
            {
                omitted += 1;
                continue;
            }
            if !first {
                text.push(',');
            }
            first = false;
            text.push_str(json);
        }
        text.push_str(r#"],"left":[]"#);
        if omitted > 0 {
            text.push_str(&format!(r#","omitted":{omitted}"#));
        }
        text.push('}');
        text
    }

    /// Removes `conn` from `channel`; when it was the peer's last connection there, the others
    /// get a `left` diff. Empty channels are dropped.
    fn leave_channel(
        &mut self,
        conn: ConnId,
        app: &str,
        peer_id: &str,
        channel: &str,
        out: &mut Vec<Output>,
    ) {
        let key = scoped(app, channel);
        let Some(ch) = self.channels.get_mut(&*key) else {
            return;
        };
        ch.subscribers.remove(&conn);
        let mut left = false;
        if let Some(m) = ch.members.get_mut(peer_id) {
            m.refs = m.refs.saturating_sub(1);
            if m.refs == 0 {
                ch.members.remove(peer_id);
                ch.snapshot_cache = None;
                left = true;
            }
        }
        if ch.subscribers.is_empty() {
            self.channels.remove(&*key);
            return;
        }
        if left && !self.draining {
            let entry = [PresenceEntry {
                peer_id: peer_id.to_string(),
                metadata: None,
            }];
            let diff: Arc<str> = ServerFrame::Presence {
                channel,
                joined: &[],
                left: &entry,
            }
            .to_json()
            .into();
            self.presence_to_others(app, channel, peer_id, diff, out);
        }
    }

    /// A presence diff about `peer_id` to every other peer's connections that may see presence.
    fn presence_to_others(
        &mut self,
        app: &str,
        channel: &str,
        peer_id: &str,
        diff: Arc<str>,
        out: &mut Vec<Output>,
    ) {
        let Some(ch) = self.channels.get(&*scoped(app, channel)) else {
            return;
        };
        let targets: Vec<ConnId> = ch
            .subscribers
            .keys()
            .copied()
            .filter(|id| {
                self.conns.get(id).is_some_and(|c| {
                    c.principal.peer_id != peer_id && c.principal.can(Action::Presence)
                })
            })
            .collect();
        for t in targets {
            self.emit(out, t, FrameKind::Presence, diff.clone());
        }
    }

    fn error(
        &mut self,
        conn: ConnId,
        rid: Option<&str>,
        code: ErrorCode,
        message: &str,
        out: &mut Vec<Output>,
    ) {
        *self.stats.errors.entry(code).or_default() += 1;
        let text = ServerFrame::Error {
            request_id: rid,
            code: code.as_str(),
            message: Some(message),
        }
        .to_json();
        self.emit(out, conn, FrameKind::Error, text.into());
    }

    fn emit(&mut self, out: &mut Vec<Output>, conn: ConnId, kind: FrameKind, text: Arc<str>) {
        *self.stats.frames_out.entry(kind).or_default() += 1;
        out.push(Output::Frame { conn, kind, text });
    }
}
