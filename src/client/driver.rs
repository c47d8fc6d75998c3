//! The driver task: one per session, from `connect()` to `Closed`. It owns the socket, the
//! connect attempts and the backoff between them, and runs the protocol core
//! ([`super::session::Session`]) against the real socket and the real clock: it feeds the core
//! every inbound frame, API call and due timer, then carries out what the core asks for.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use super::backoff::{Backoff, CloseAction, classify_close};
use super::credential::{ResolvedCredential, scrub};
use super::error::ClientError;
use super::events::{
    ClientEvent, ClientState, ConnectedInfo, extract_ice_servers, sanitize_reason,
};
use super::handle::{Command, Inner, lock};
use super::session::{INACTIVITY_CLOSE, Output, Session, SessionConfig};
use super::url::{Origin, Scheme};
use crate::protocol::server_frames::{ServerFrameIn, parse_server_frame};

/// Largest inbound message accepted; above it the client closes with 1009 and reconnects. Big
/// enough for a presence snapshot of a crowded channel, small enough to bound memory.
pub const MAX_INBOUND_BYTES: usize = 1 << 20;
/// API calls queued to the driver before callers wait.
const COMMAND_CAPACITY: usize = 256;
/// How long a close frame may take to flush, as in the official SDKs.
pub(super) const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// Close code when a live socket ends without a close frame.
const ABNORMAL_CLOSE: u16 = 1006;

/// Starts the session's driver. It first waits for `previous` (the last session's driver, which
/// may still be delivering its final events) so that events of two sessions never interleave.
pub(super) fn spawn(
    inner: Arc<Inner>,
    stop: watch::Receiver<bool>,
    done: watch::Sender<bool>,
    from: ClientState,
    first: oneshot::Sender<Result<ConnectedInfo, ClientError>>,
    previous: Option<JoinHandle<()>>,
) -> JoinHandle<()> {
    let driver = Driver {
        emitter: Emitter {
            tx: inner.events.clone(),
            pending: VecDeque::new(),
        },
        inner,
        stop,
        done,
        backoff: Backoff::default(),
        token_failures: 0,
        ever_connected: false,
        last_close: (ABNORMAL_CLOSE, String::new()),
    };
    tokio::spawn(async move {
        if let Some(p) = previous {
            let _ = p.await;
        }
        driver.run(from, first).await;
    })
}

/// Event queue with an overflow buffer: `push` never blocks; whatever does not fit waits in
/// `pending`, and while anything waits the driver does not read the socket.
struct Emitter {
    tx: mpsc::Sender<ClientEvent>,
    pending: VecDeque<ClientEvent>,
}

impl Emitter {
    fn push(&mut self, ev: ClientEvent) {
        if !self.pending.is_empty() {
            self.pending.push_back(ev);
            return;
        }
        match self.tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(ev)) => self.pending.push_back(ev),
            // Nobody listens any more: events have nowhere to go, the client keeps working.
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Delivers everything, waiting for room (used once the session is over).
    async fn flush_all(&mut self) {
        while let Some(ev) = self.pending.pop_front() {
            if self.tx.send(ev).await.is_err() {
                self.pending.clear();
            }
        }
    }
}

/// Resolves when `close()` was called or every client handle was dropped.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Drives `fut` to completion while delivering queued events; `None` if stopped first.
async fn run_until<F: Future>(
    emitter: &mut Emitter,
    stop: &mut watch::Receiver<bool>,
    fut: F,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            biased;
            _ = stopped(stop) => return None,
            permit = emitter.tx.reserve(), if !emitter.pending.is_empty() => match permit {
                Ok(p) => {
                    if let Some(ev) = emitter.pending.pop_front() {
                        p.send(ev);
                    }
                }
                Err(_) => emitter.pending.clear(),
            },
            out = &mut fut => return Some(out),
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One connect attempt that did not produce a welcome.
struct AttemptFailure {
    close_code: Option<u16>,
    reason: String,
}

/// How one connect attempt ended.
enum Attempt {
    /// `close()` or drop of the last handle.
    Stopped,
    /// The token provider failed (scrubbed message).
    ProviderFailed(String),
    /// No welcome.
    Failed(AttemptFailure),
    /// Had a welcome, then the socket ended.
    Ended { code: u16, reason: String },
}

/// How a live (welcomed) connection ended.
enum ConnEnd {
    Stopped,
    Lost { code: u16, reason: String },
}

/// How the session ended.
enum SessionEnd {
    /// `close()`: no `Disconnected` event.
    UserClosed,
    /// The first connect failed; `connect()` has its error.
    FirstFailed,
    /// Terminal code, reconnect disabled or budget spent: terminal `Disconnected`.
    GaveUp,
}

/// Everything the `select!` in the connected loop can wake up for (handled after the select
/// so that the handlers may borrow the driver freely).
enum Wake {
    Stop,
    SimulatedDrop,
    Delivered,
    Command(Command),
    /// The session's next deadline (ack, replay, ping or watchdog).
    Timer,
    Inbound(Option<Result<Message, tungstenite::Error>>),
}

/// Owns one session: from `connect()` to `Closed`.
struct Driver {
    inner: Arc<Inner>,
    stop: watch::Receiver<bool>,
    done: watch::Sender<bool>,
    emitter: Emitter,
    backoff: Backoff,
    token_failures: u32,
    ever_connected: bool,
    /// Code and reason of the most recent close, for the terminal `Disconnected`.
    last_close: (u16, String),
}

impl Driver {
    fn set_state(&mut self, to: ClientState) {
        let from = {
            let mut s = lock(&self.inner.shared);
            std::mem::replace(&mut s.state, to)
        };
        if from != to {
            self.emitter.push(ClientEvent::StateChanged { from, to });
        }
    }

    async fn run(
        mut self,
        from: ClientState,
        first: oneshot::Sender<Result<ConnectedInfo, ClientError>>,
    ) {
        let origin = self.inner.origin.to_string();
        info!(%origin, "signalling connect");
        self.emitter.push(ClientEvent::StateChanged {
            from,
            to: ClientState::Connecting,
        });
        let mut first = Some(first);
        let end = loop {
            let timeout = self.inner.opts.token_provider_timeout;
            let credential = self.inner.opts.credential.clone();
            let Some(resolved) = run_until(
                &mut self.emitter,
                &mut self.stop,
                credential.resolve(timeout),
            )
            .await
            else {
                break SessionEnd::UserClosed;
            };
            let attempt = match resolved {
                Ok(c) => {
                    self.token_failures = 0;
                    self.attempt(c, &mut first).await
                }
                Err(msg) => {
                    self.token_failures = self.token_failures.saturating_add(1);
                    Attempt::ProviderFailed(msg)
                }
            };
            match attempt {
                Attempt::Stopped => break SessionEnd::UserClosed,
                Attempt::ProviderFailed(msg) => {
                    warn!(failures = self.token_failures, error = %msg, "token provider failed");
                    if let Some(f) = first.take() {
                        let _ = f.send(Err(ClientError::TokenProvider(msg)));
                        break SessionEnd::FirstFailed;
                    }
                    if self.token_failures >= 3 {
                        self.emitter.push(ClientEvent::TokenProviderError {
                            consecutive_failures: self.token_failures,
                            message: msg.clone(),
                        });
                    }
                    self.last_close.1 = format!("token provider failed: {msg}");
                }
                Attempt::Failed(f) => {
                    debug!(close_code = ?f.close_code, reason = %f.reason, "connect attempt failed");
                    if let Some(tx) = first.take() {
                        let _ = tx.send(Err(ClientError::ConnectFailed {
                            close_code: f.close_code,
                            reason: f.reason,
                        }));
                        break SessionEnd::FirstFailed;
                    }
                    self.last_close = (f.close_code.unwrap_or(ABNORMAL_CLOSE), f.reason);
                    match f.close_code.map(classify_close) {
                        Some(CloseAction::Terminal) => break SessionEnd::GaveUp,
                        Some(CloseAction::ReconnectAfterFloor(d)) => self.backoff.raise_floor(d),
                        _ => {}
                    }
                }
                Attempt::Ended { code, reason } => {
                    info!(code, reason = %reason, "signalling connection lost");
                    self.last_close = (code, reason.clone());
                    let action = classify_close(code);
                    if let CloseAction::ReconnectAfterFloor(d) = action {
                        self.backoff.raise_floor(d);
                    }
                    let budget = self
                        .inner
                        .opts
                        .reconnect
                        .as_ref()
                        .is_some_and(|p| p.max_attempts > 0);
                    if action == CloseAction::Terminal || !budget {
                        break SessionEnd::GaveUp;
                    }
                    self.emitter.push(ClientEvent::Disconnected {
                        code,
                        reason,
                        will_reconnect: true,
                    });
                    self.set_state(ClientState::Reconnecting);
                }
            }
            let Some(policy) = self.inner.opts.reconnect.clone() else {
                break SessionEnd::GaveUp;
            };
            let unit = rand::rng().random_range(-1.0..=1.0);
            let Some(delay) = self.backoff.next_delay(&policy, unit) else {
                break SessionEnd::GaveUp;
            };
            debug!(
                attempt = self.backoff.attempts(),
                ?delay,
                "reconnect scheduled"
            );
            let inner = self.inner.clone();
            let wait = async move {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = inner.retry_now.notified() => debug!("reconnect now (user asked)"),
                }
            };
            if run_until(&mut self.emitter, &mut self.stop, wait)
                .await
                .is_none()
            {
                break SessionEnd::UserClosed;
            }
        };
        self.finish(end).await;
    }

    /// Records `Closed`, tells `close()` waiters, then delivers the last events (waiting for
    /// room: after the end nothing else competes for the queue).
    async fn finish(mut self, end: SessionEnd) {
        match end {
            SessionEnd::GaveUp => {
                let (code, reason) = std::mem::take(&mut self.last_close);
                info!(code, "signalling gave up");
                self.emitter.push(ClientEvent::Disconnected {
                    code,
                    reason,
                    will_reconnect: false,
                });
            }
            SessionEnd::UserClosed => info!("signalling closed by the application"),
            SessionEnd::FirstFailed => {}
        }
        lock(&self.inner.shared).conn = None;
        self.set_state(ClientState::Closed);
        self.done.send_replace(true);
        self.emitter.flush_all().await;
    }

    /// One attempt: open, wait for the welcome, then run the connection until it ends.
    async fn attempt(
        &mut self,
        credential: ResolvedCredential,
        first: &mut Option<oneshot::Sender<Result<ConnectedInfo, ClientError>>>,
    ) -> Attempt {
        let opts = &self.inner.opts;
        let welcome_timeout = opts.welcome_timeout;
        let open = open_socket(
            &self.inner.origin,
            self.inner.origin.connect_url(credential.query()),
            opts.tls.clone(),
        );
        drop(credential);
        let opened = run_until(
            &mut self.emitter,
            &mut self.stop,
            tokio::time::timeout(welcome_timeout, open),
        )
        .await;
        let mut ws = match opened {
            None => return Attempt::Stopped,
            Some(Err(_)) => {
                return Attempt::Failed(AttemptFailure {
                    close_code: None,
                    reason: "WebSocket open timed out".into(),
                });
            }
            Some(Ok(Err(f))) => return Attempt::Failed(f),
            Some(Ok(Ok(ws))) => ws,
        };
        let waited = run_until(
            &mut self.emitter,
            &mut self.stop,
            tokio::time::timeout(welcome_timeout, wait_welcome(&mut ws)),
        )
        .await;
        let welcome = match waited {
            None => {
                close_socket(&mut ws, 1000, "client closed").await;
                return Attempt::Stopped;
            }
            Some(Err(_)) => {
                warn!(?welcome_timeout, "no welcome; closing");
                close_socket(&mut ws, 1000, "no welcome").await;
                return Attempt::Failed(AttemptFailure {
                    close_code: None,
                    reason: "no welcome".into(),
                });
            }
            Some(Ok(Err(f))) => return Attempt::Failed(f),
            Some(Ok(Ok(w))) => w,
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
        let info = self.on_welcome(welcome, cmd_tx);
        let is_reconnect = info.is_reconnect;
        if let Some(f) = first.take() {
            let _ = f.send(Ok(info));
        }
        match self.connected(ws, cmd_rx, is_reconnect).await {
            ConnEnd::Stopped => Attempt::Stopped,
            ConnEnd::Lost { code, reason } => Attempt::Ended { code, reason },
        }
    }

    /// Applies a welcome: state, ids, limits, ICE servers; emits `StateChanged` + `Connected`.
    fn on_welcome(&mut self, w: Welcome, conn: mpsc::Sender<Command>) -> ConnectedInfo {
        let ice_servers = match extract_ice_servers(w.metadata.as_ref()) {
            Ok(list) => list,
            Err(why) => {
                warn!(
                    reason = why,
                    "welcome iceServers refused; using none from this welcome"
                );
                None
            }
        };
        let is_reconnect = self.ever_connected;
        self.ever_connected = true;
        self.backoff.reset();
        {
            let mut s = lock(&self.inner.shared);
            s.peer_id = Some(w.peer_id.clone());
            s.max_message_size = w.max_message_size;
            if let Some(list) = &ice_servers {
                s.ice_servers = Some(list.clone());
            }
            s.conn = Some(conn);
        }
        info!(peer_id = %w.peer_id, is_reconnect, "signalling connected");
        self.set_state(ClientState::Connected);
        let info = ConnectedInfo {
            peer_id: w.peer_id,
            server_time: w.server_time,
            expires_at: w.expires_at,
            is_reconnect,
            max_message_size: w.max_message_size,
            ice_servers,
            metadata: w.metadata,
        };
        self.emitter.push(ClientEvent::Connected(info.clone()));
        info
    }

    /// The connected loop: waits for whatever comes first (stop, a simulated drop, room in the
    /// event queue, an API call, the session's next timer, an inbound frame), hands it to the
    /// session, then carries out the session's outputs.
    async fn connected(
        &mut self,
        ws: Ws,
        mut cmd_rx: mpsc::Receiver<Command>,
        is_reconnect: bool,
    ) -> ConnEnd {
        let (mut sink, mut stream) = ws.split();
        let opts = &self.inner.opts;
        let config = SessionConfig {
            ack_timeout: opts.ack_timeout,
            inactivity_timeout: opts.inactivity_timeout,
            resubscribe_retry_interval: opts.resubscribe_retry_interval,
        };
        // `Connected` is already queued; the replay follows it, so MeteredPeer reconciles on the
        // presence snapshots the replay produces.
        let replay: Vec<String> = if is_reconnect && opts.auto_resubscribe {
            lock(&self.inner.shared)
                .tracked
                .iter()
                .map(|(channel, _)| channel.clone())
                .collect()
        } else {
            Vec::new()
        };
        let mut session: Session<oneshot::Sender<Result<(), ClientError>>> =
            Session::new(config, Instant::now(), replay);

        let end = loop {
            if let Some(end) = self.carry_out(&mut session, &mut sink).await {
                break end;
            }
            let reading = self.emitter.pending.is_empty();
            session.set_reading(reading, Instant::now());
            let timer = session.poll_timeout();
            let inner = self.inner.clone();
            let wake = tokio::select! {
                biased;
                _ = stopped(&mut self.stop) => Wake::Stop,
                _ = inner.drop_now.notified() => Wake::SimulatedDrop,
                permit = self.emitter.tx.reserve(), if !reading => {
                    match permit {
                        Ok(p) => {
                            if let Some(ev) = self.emitter.pending.pop_front() {
                                p.send(ev);
                            }
                        }
                        Err(_) => self.emitter.pending.clear(),
                    }
                    Wake::Delivered
                }
                Some(cmd) = cmd_rx.recv() => Wake::Command(cmd),
                _ = sleep_until(timer), if timer.is_some() => Wake::Timer,
                msg = stream.next(), if reading => Wake::Inbound(msg),
            };
            let now = Instant::now();
            match wake {
                Wake::Stop => {
                    close_sink(&mut sink, 1000, "client closed").await;
                    break ConnEnd::Stopped;
                }
                Wake::SimulatedDrop => {
                    warn!("dropping the signalling connection on request (troubleshooting)");
                    close_sink(&mut sink, INACTIVITY_CLOSE, "simulated drop").await;
                    break ConnEnd::Lost {
                        code: INACTIVITY_CLOSE,
                        reason: "simulated drop".into(),
                    };
                }
                Wake::Delivered => {}
                Wake::Command(Command {
                    request_id,
                    text,
                    reply,
                }) => session.handle_request(request_id, text, reply, now),
                Wake::Timer => {
                    let shared = &self.inner.shared;
                    session.handle_timeout(now, |channel| {
                        // Unsubscribed meanwhile: nothing to restore.
                        lock(shared)
                            .tracked
                            .iter()
                            .find(|(c, _)| c == channel)
                            .map(|t| t.1)
                    });
                }
                Wake::Inbound(msg) => match msg {
                    Some(Ok(Message::Text(text))) => session.handle_frame(text.as_str(), now),
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = close_parts(frame.as_ref());
                        // Completes the closing handshake (our reply is already queued).
                        let _ = tokio::time::timeout(CLOSE_FLUSH, sink.close()).await;
                        break ConnEnd::Lost { code, reason };
                    }
                    // Binary, ping, pong: liveness only.
                    Some(Ok(_)) => session.handle_liveness(now),
                    Some(Err(tungstenite::Error::Capacity(_))) => {
                        warn!(
                            limit = MAX_INBOUND_BYTES,
                            "inbound frame too large; closing 1009"
                        );
                        close_sink(&mut sink, 1009, "message too big").await;
                        break ConnEnd::Lost {
                            code: 1009,
                            reason: "inbound message too big".into(),
                        };
                    }
                    Some(Err(e)) => {
                        break ConnEnd::Lost {
                            code: ABNORMAL_CLOSE,
                            reason: sanitize_reason(&scrub(&e.to_string())),
                        };
                    }
                    None => {
                        break ConnEnd::Lost {
                            code: ABNORMAL_CLOSE,
                            reason: "connection lost".into(),
                        };
                    }
                },
            }
        };

        // Tear down: no new commands, queued ones were never sent, in-flight ones may have been.
        lock(&self.inner.shared).conn = None;
        cmd_rx.close();
        while let Ok(cmd) = cmd_rx.try_recv() {
            let _ = cmd.reply.send(Err(ClientError::NotConnected));
        }
        session.finish(matches!(end, ConnEnd::Stopped));
        while let Some(out) = session.poll_output() {
            match out {
                Output::Reply(reply, result) => {
                    let _ = reply.send(result);
                }
                // Events already produced are still delivered; nothing else matters now.
                Output::Event(ev) => self.emitter.push(ev),
                Output::RaiseBackoffFloor(d) => self.backoff.raise_floor(d),
                Output::Send(_) | Output::Close { .. } => {}
            }
        }
        end
    }

    /// Carries out everything the session asked for; `Some` when the connection is over.
    async fn carry_out(
        &mut self,
        session: &mut Session<oneshot::Sender<Result<(), ClientError>>>,
        sink: &mut SplitSink<Ws, Message>,
    ) -> Option<ConnEnd> {
        while let Some(out) = session.poll_output() {
            match out {
                Output::Send(text) => {
                    if let Err(e) = sink.send(Message::text(text)).await {
                        warn!(error = %scrub(&e.to_string()), "signalling write failed");
                        return Some(ConnEnd::Lost {
                            code: ABNORMAL_CLOSE,
                            reason: "write failed".into(),
                        });
                    }
                }
                Output::Event(ev) => self.emitter.push(ev),
                Output::Reply(reply, result) => {
                    let _ = reply.send(result);
                }
                Output::RaiseBackoffFloor(d) => self.backoff.raise_floor(d),
                Output::Close { code, reason } => {
                    close_sink(sink, code, &reason).await;
                    return Some(ConnEnd::Lost { code, reason });
                }
            }
        }
        None
    }
}

fn sleep_until(at: Option<Instant>) -> tokio::time::Sleep {
    // Disabled branches still build their future; a far deadline keeps it inert.
    let at = at.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
    tokio::time::sleep_until(tokio::time::Instant::from_std(at))
}

/// The parts of a welcome the driver uses.
struct Welcome {
    peer_id: String,
    server_time: u64,
    expires_at: Option<u64>,
    max_message_size: usize,
    metadata: Option<Value>,
}

/// TCP (with `TCP_NODELAY`), optional TLS, WebSocket upgrade. `url` holds the credential: it
/// is consumed here and never logged; errors are described without it.
async fn open_socket(
    origin: &Origin,
    url: String,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Ws, AttemptFailure> {
    let fail = |reason: String| AttemptFailure {
        close_code: None,
        reason,
    };
    let request = url
        .into_client_request()
        .map_err(|_| fail("could not build the upgrade request".into()))?;
    let tcp = TcpStream::connect((origin.host.as_str(), origin.effective_port()))
        .await
        .map_err(|e| fail(format!("TCP connect failed: {}", e.kind())))?;
    // Signalling is bursts of small frames; Nagle + delayed ACK would hold each second frame
    // back ~40 ms (the server sets it too).
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(error = %e, "TCP_NODELAY not set");
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_INBOUND_BYTES))
        .max_frame_size(Some(MAX_INBOUND_BYTES));
    let connector = match origin.scheme {
        Scheme::Ws => Some(Connector::Plain),
        Scheme::Wss => {
            // rustls needs a process-wide crypto provider for its default config; the server
            // installs the same one, installing twice is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            tls.map(Connector::Rustls)
        }
    };
    match tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(config), connector)
        .await
    {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            Err(AttemptFailure {
                close_code: Some(status),
                reason: format!("upgrade refused with HTTP {status}"),
            })
        }
        Err(e) => Err(fail(sanitize_reason(&scrub(&format!(
            "handshake failed: {e}"
        ))))),
    }
}

fn close_parts(frame: Option<&CloseFrame>) -> (u16, String) {
    match frame {
        // 1005: "no status received", the standard stand-in for a close without a code.
        None => (1005, String::new()),
        Some(f) => (u16::from(f.code), sanitize_reason(f.reason.as_str())),
    }
}

/// Reads until the welcome. Other frames before it are dropped; a close or error ends it.
async fn wait_welcome(ws: &mut Ws) -> Result<Welcome, AttemptFailure> {
    loop {
        match ws.next().await {
            None => {
                return Err(AttemptFailure {
                    close_code: None,
                    reason: "connection closed before welcome".into(),
                });
            }
            Some(Err(e)) => {
                return Err(AttemptFailure {
                    close_code: None,
                    reason: sanitize_reason(&scrub(&e.to_string())),
                });
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = close_parts(frame.as_ref());
                let _ = tokio::time::timeout(CLOSE_FLUSH, ws.close(None)).await;
                return Err(AttemptFailure {
                    close_code: Some(code),
                    reason,
                });
            }
            Some(Ok(Message::Text(text))) => match parse_server_frame(text.as_str()) {
                Ok(ServerFrameIn::Welcome {
                    peer_id,
                    server_time,
                    expires_at,
                    max_message_size,
                    metadata,
                }) => {
                    return Ok(Welcome {
                        peer_id,
                        server_time,
                        expires_at,
                        max_message_size,
                        metadata,
                    });
                }
                Ok(other) => debug!(frame = other.type_name(), "frame before welcome dropped"),
                Err(e) => warn!(error = %e, "dropping malformed server frame"),
            },
            Some(Ok(_)) => {}
        }
    }
}

fn close_frame(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: WsCloseCode::from(code),
        reason: reason.into(),
    }))
}

async fn close_socket(ws: &mut Ws, code: u16, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_FLUSH, ws.send(close_frame(code, reason))).await;
}

async fn close_sink(sink: &mut SplitSink<Ws, Message>, code: u16, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_FLUSH, sink.send(close_frame(code, reason))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_parts_sanitise() {
        assert_eq!(close_parts(None), (1005, String::new()));
        let f = CloseFrame {
            code: WsCloseCode::from(4020),
            reason: "kicked\u{0}\n by admin".into(),
        };
        assert_eq!(close_parts(Some(&f)), (4020, "kicked by admin".into()));
    }
}
