//! The WebSocket shell around the hub: upgrade, authenticate, admit, then one reader loop and
//! one writer task per connection. All policy lives in the hub; this file only moves bytes,
//! keeps time (keepalive, token expiry) and reports what happened.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::hub::Output;
use super::outbox::{Outbound, Outbox, OutboxReceiver};
use super::{Shared, lock};
use crate::auth::Principal;
use crate::protocol::CloseCode;
use crate::protocol::frames::{FrameError, FrameKind};
use crate::protocol::parse_client_frame;

/// `?token=…` or `?key=…` (token wins when both are given).
#[derive(Debug, Deserialize)]
pub(crate) struct ConnectQuery {
    token: Option<String>,
    key: Option<String>,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unix_now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Delivers hub outputs to connection queues. Called with the hub lock held, which is what keeps
/// per-connection order identical to the hub's decision order. A queue that is full (in frames
/// or bytes) means the client is not reading: that connection is closed with 1008 rather than
/// letting memory grow. A `going_away` that does not fit is simply not sent: the 1001 close
/// that follows says the same, and turning it into a 1008 would tell the client it misbehaved.
pub(crate) fn dispatch(
    core: &mut super::Core,
    out: &mut Vec<Output>,
    cause: Option<Instant>,
    shared: &Shared,
) {
    let mut i = 0;
    while i < out.len() {
        match &out[i] {
            Output::Frame { conn, kind, text } => {
                let full = core
                    .outboxes
                    .get(conn)
                    .is_some_and(|o| o.push_text(text.clone(), *kind, cause).is_err());
                if full && *kind != FrameKind::GoingAway {
                    let conn = *conn;
                    shared
                        .metrics
                        .slow_consumers
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(conn, "outbound queue full; closing slow consumer with 1008");
                    let mut more = Vec::new();
                    core.hub.close(conn, CloseCode::PolicyViolation, &mut more);
                    out.extend(more);
                }
            }
            Output::Close { conn, code } => {
                if let Some(o) = core.outboxes.remove(conn) {
                    o.close(*code);
                }
            }
        }
        i += 1;
    }
    out.clear();
}

/// `GET /v1`: per-IP connect limit (HTTP 429), then the upgrade. Authentication happens after
/// the upgrade so that browsers can see the 4xxx close code: a browser cannot
/// see the status of a refused HTTP upgrade.
pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if shared.shutting_down.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let source = shared.settings.trusted_proxies.client_ip(
        addr.ip(),
        header("x-forwarded-for"),
        header("forwarded"),
    );
    let allowed = lock(&shared.connect_limiter).allow(source, Instant::now());
    if !allowed {
        shared
            .metrics
            .connects_rate_limited
            .fetch_add(1, Ordering::Relaxed);
        debug!(ip = %source, "connect rate limit hit");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many connection attempts",
        )
            .into_response();
    }
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let max = shared.settings.max_inbound_message_bytes;
    // Small read buffer keeps idle sockets cheap; a write buffer lets the writer coalesce a burst
    // of queued frames into one syscall (it always flushes once the queue is empty).
    ws.read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| connection(shared, socket, query, origin, addr))
}

fn authenticate(
    shared: &Shared,
    query: &ConnectQuery,
    origin: Option<&str>,
) -> Result<Principal, CloseCode> {
    let result = match (&query.token, &query.key) {
        (Some(token), _) => shared.keys.verify_token(token, unix_now()),
        (None, Some(key)) => shared.keys.authenticate_publishable(key, origin),
        (None, None) => return Err(CloseCode::InvalidToken),
    };
    result.map_err(|e| {
        // The error's Display never contains the credential.
        debug!(reason = %e, "authentication refused");
        CloseCode::from_code(e.close_code()).unwrap_or(CloseCode::InvalidToken)
    })
}

async fn close_before_welcome(mut socket: WebSocket, code: CloseCode) {
    let frame = CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from_static(code.reason()),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
    // Give the client a moment to answer the close handshake, then drop.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(msg)) = socket.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn connection(
    shared: Arc<Shared>,
    socket: WebSocket,
    query: ConnectQuery,
    origin: Option<String>,
    addr: SocketAddr,
) {
    let principal = match authenticate(&shared, &query, origin.as_deref()) {
        Ok(p) => p,
        Err(code) => {
            shared.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
            close_before_welcome(socket, code).await;
            return;
        }
    };
    drop(query);
    let peer_id = principal.peer_id.clone();
    let expires_at = principal.expires_at;
    let (outbox, rx, closing) = Outbox::new(
        shared.settings.outbox_capacity,
        shared.settings.outbox_bytes,
    );
    let admitted = {
        let mut core = lock(&shared.core);
        let mut out = Vec::new();
        let result = core
            .hub
            .connect(principal, Instant::now(), unix_now(), &mut out);
        if let Ok(conn) = result {
            core.outboxes.insert(conn, outbox);
            dispatch(&mut core, &mut out, None, &shared);
        }
        result
    };
    let conn = match admitted {
        Ok(conn) => conn,
        Err(code) => {
            info!(peer = %peer_id, code = code.code(), "connection refused");
            close_before_welcome(socket, code).await;
            return;
        }
    };
    shared.live_connections.fetch_add(1, Ordering::SeqCst);
    debug!(conn, peer = %peer_id, ip = %addr.ip(), "connected");

    let (sink, mut stream) = socket.split();
    let mut writer = tokio::spawn(writer(sink, rx, shared.clone()));

    // Token expiry: close with 4002 (token expired) at exp − 250 ms.
    let expiry = expires_at.map(|exp| {
        let deadline_ms = u128::from(exp) * 1000;
        let left = deadline_ms
            .saturating_sub(unix_now_ms())
            .saturating_sub(250);
        tokio::time::Instant::now()
            + Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX / 4))
    });
    let keepalive = shared.settings.keepalive_interval;
    let grace = shared.settings.keepalive_grace;
    let mut last_inbound = tokio::time::Instant::now();
    let mut ping_sent: Option<tokio::time::Instant> = None;
    let mut expired = false;
    let mut reason = "client closed";
    // Set once the server has closed the connection: the client then has `close_timeout` to
    // complete the handshake before the socket is dropped, however much it keeps sending.
    let mut close_deadline: Option<tokio::time::Instant> = None;

    loop {
        let keepalive_at = match ping_sent {
            Some(at) => at + grace,
            None => last_inbound + keepalive,
        };
        let expiry_at = expiry.filter(|_| !expired);
        tokio::select! {
            _ = closing.notified(), if close_deadline.is_none() => {
                close_deadline = Some(tokio::time::Instant::now() + shared.settings.close_timeout);
            }
            _ = async { match close_deadline { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                reason = "close handshake timed out";
                break;
            }
            msg = stream.next() => {
                let now = Instant::now();
                last_inbound = tokio::time::Instant::now();
                ping_sent = None;
                match msg {
                    Some(Ok(Message::Text(text))) => {
                        // Parse before taking the hub lock (a frame over the size limit is not
                        // parsed at all: the hub closes the connection with 1009).
                        let parsed = if text.len() <= shared.max_frame_bytes {
                            parse_client_frame(text.as_str())
                        } else {
                            Err(FrameError::oversize())
                        };
                        let mut core = lock(&shared.core);
                        let mut out = Vec::new();
                        core.hub.handle_parsed(conn, text.len(), parsed, now, &mut out);
                        dispatch(&mut core, &mut out, Some(now), &shared);
                    }
                    Some(Ok(Message::Binary(bin))) => {
                        let mut core = lock(&shared.core);
                        let mut out = Vec::new();
                        core.hub.handle_binary(conn, bin.len(), now, &mut out);
                        dispatch(&mut core, &mut out, Some(now), &shared);
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        debug!(conn, error = %e, "read error");
                        reason = "read error";
                        // A broken frame is answered with the code that says what was wrong; a
                        // connection that simply died gets no close (there is nobody to tell).
                        let inner = std::error::Error::source(&e)
                            .and_then(|s| s.downcast_ref::<tokio_tungstenite::tungstenite::Error>());
                        if let Some(code) = inner.map_or(Some(CloseCode::ProtocolError), read_error_close_code) {
                            let mut core = lock(&shared.core);
                            let mut out = Vec::new();
                            core.hub.close(conn, code, &mut out);
                            dispatch(&mut core, &mut out, None, &shared);
                        }
                        break;
                    }
                }
            }
            _ = tokio::time::sleep_until(keepalive_at) => {
                if ping_sent.is_some() {
                    reason = "keepalive timeout";
                    break;
                }
                ping_sent = Some(tokio::time::Instant::now());
                let core = lock(&shared.core);
                if let Some(o) = core.outboxes.get(&conn) {
                    o.push_ping();
                }
            }
            _ = async { match expiry_at { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                expired = true;
                let mut core = lock(&shared.core);
                let mut out = Vec::new();
                core.hub.token_expired(conn, &mut out);
                dispatch(&mut core, &mut out, None, &shared);
            }
            _ = &mut writer => {
                reason = "closed by server";
                break;
            }
        }
    }

    // What is left of the close timeout (the full timeout when the client ended it itself).
    let close_left = close_deadline
        .map(|at| at.saturating_duration_since(tokio::time::Instant::now()))
        .unwrap_or(shared.settings.close_timeout);
    if writer.is_finished() {
        // We sent a close frame: finish the handshake (RFC 6455 §7.1.1) by reading, and
        // discarding, until the client's close arrives — at most one second. Dropping the TCP
        // connection at once would make a client that is still writing see a reset (1006)
        // instead of our close code, and reconnect when it should not (4020).
        let _ = tokio::time::timeout(close_left.min(Duration::from_secs(1)), async {
            while let Some(Ok(msg)) = stream.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    {
        let mut core = lock(&shared.core);
        let mut out = Vec::new();
        core.hub.disconnect(conn, &mut out);
        core.outboxes.remove(&conn);
        dispatch(&mut core, &mut out, None, &shared);
    }
    // Let the writer flush a pending close frame, but never wait on a stuck peer for long.
    if !writer.is_finished() {
        let _ = tokio::time::timeout(close_left.min(Duration::from_secs(2)), &mut writer).await;
        writer.abort();
    }
    // Both halves end here: the writer task is gone and `stream` is dropped with this task.
    drop(stream);
    debug!(conn, peer = %peer_id, reason, "disconnected");
    if shared.live_connections.fetch_sub(1, Ordering::SeqCst) == 1 {
        shared.all_closed.notify_waiters();
    }
}

/// Shares one `Arc<str>` between the hub's fan-out and the socket without copying.
struct ArcText(Arc<str>);

impl AsRef<[u8]> for ArcText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

async fn writer(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: OutboxReceiver,
    shared: Arc<Shared>,
) {
    let mut pending_latency: Vec<Instant> = Vec::new();
    let mut written = 0usize;
    while let Some(first) = rx.recv().await {
        // Feed everything already queued, then flush once: one syscall for a burst.
        let mut item = Some(first);
        while let Some(next) = item.take() {
            match next {
                Outbound::Text { text, kind, cause } => {
                    // Released to the outbox's byte count in steps (an atomic per frame would
                    // bounce between cores at fan-out rates).
                    written += text.len();
                    let Ok(bytes) = Utf8Bytes::try_from(Bytes::from_owner(ArcText(text))) else {
                        continue;
                    };
                    if sink.feed(Message::Text(bytes)).await.is_err() {
                        return;
                    }
                    if written >= 64 * 1024 {
                        rx.written(std::mem::take(&mut written));
                    }
                    if let (Some(at), FrameKind::Message | FrameKind::Direct) = (cause, kind) {
                        pending_latency.push(at);
                    }
                }
                Outbound::Ping => {
                    if sink.feed(Message::Ping(Bytes::new())).await.is_err() {
                        return;
                    }
                }
                Outbound::Close(code) => {
                    let frame = CloseFrame {
                        code: code.code(),
                        reason: Utf8Bytes::from_static(code.reason()),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    return;
                }
            }
            item = rx.try_recv();
        }
        rx.written(std::mem::take(&mut written));
        if sink.flush().await.is_err() {
            return;
        }
        for at in pending_latency.drain(..) {
            shared.metrics.fanout_latency.observe(at.elapsed());
        }
    }
    // The connection ended without a server close (client close, keepalive timeout): flush,
    // which also writes tungstenite's reply to a client's close frame, then close the sink.
    let _ = sink.flush().await;
    let _ = sink.close().await;
}

/// The close code for a read error (RFC 6455 §7.4.1), or `None` when the connection is simply
/// gone (reset, end of stream): then nobody is left to read a close frame.
fn read_error_close_code(e: &tokio_tungstenite::tungstenite::Error) -> Option<CloseCode> {
    use tokio_tungstenite::tungstenite::Error as E;
    use tokio_tungstenite::tungstenite::error::ProtocolError as P;
    match e {
        E::Capacity(_) => Some(CloseCode::MessageTooBig),
        E::Utf8(_) => Some(CloseCode::InvalidPayload),
        E::Protocol(P::ResetWithoutClosingHandshake) => None,
        E::Protocol(_) => Some(CloseCode::ProtocolError),
        E::ConnectionClosed | E::AlreadyClosed | E::Io(_) => None,
        _ => Some(CloseCode::ProtocolError),
    }
}
