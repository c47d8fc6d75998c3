//! The tokio shell: [`SignallingClient`] and the one driver task behind it.
//!
//! Shape: the public handle is a cheap clone around shared state (state, peer id, tracked
//! channels, the current connection's command queue). `connect()` spawns one *driver* task per
//! session that owns everything with a lifetime: the socket, the request table, the timers,
//! the backoff. API calls talk to it through a bounded command queue and get their answer on a
//! oneshot, so no lock is ever held across an await and per-socket state needs no lock at all.
//!
//! Event delivery: one bounded queue (capacity [`EVENT_CAPACITY`]). When it is full the driver
//! stops *reading the socket* (commands, acks' timers and `close()` keep working), so a slow
//! consumer slows the server down instead of losing events or growing memory.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde::Serialize;
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
    ClientEvent, ClientState, ConnectedInfo, IceServer, PresencePeer, extract_ice_servers,
    sanitize_reason,
};
use super::options::ClientOptions;
use super::requests::RequestTable;
use super::url::{Origin, Scheme, parse_origin};
use crate::protocol::PresenceEntry;
use crate::protocol::server_frames::{ServerFrameIn, parse_server_frame};
use crate::protocol::validate::{FieldError, check_channel, check_not_reserved, check_peer_id};

/// Capacity of the event queue handed out by [`SignallingClient::new`].
pub const EVENT_CAPACITY: usize = 1024;
/// `max_message_size()` before the first welcome (the protocol default).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 65_536;
/// Largest inbound message accepted; above it the client closes with 1009 and reconnects. Big
/// enough for a presence snapshot of a crowded channel, small enough to bound memory.
pub const MAX_INBOUND_BYTES: usize = 1 << 20;
/// Re-subscribe retries per channel per connection, as in the official SDKs.
pub const RESUBSCRIBE_RETRIES: u32 = 3;
/// API calls queued to the driver before callers wait.
const COMMAND_CAPACITY: usize = 256;
/// How long a close frame may take to flush, as in the official SDKs.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// Floor of the heartbeat interval.
const MIN_HEARTBEAT: Duration = Duration::from_secs(1);
/// Close code when a live socket ends without a close frame.
const ABNORMAL_CLOSE: u16 = 1006;
/// The client's own inactivity close: the code the official SDKs use when their watchdog fires.
const INACTIVITY_CLOSE: u16 = 4000;

/// A Metered-compatible signalling connection: auth, request/ack correlation, heartbeat,
/// reconnect with backoff, subscription replay. Pub/sub only; any number of channels.
///
/// Cheap to clone; all clones drive the same connection. When the last clone is dropped the
/// connection is closed as by [`close`](Self::close).
#[derive(Clone)]
pub struct SignallingClient {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for SignallingClient {
    /// `SignallingClient(state)` only (Python's safe form): no URL, no credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignallingClient({:?})", self.state())
    }
}

/// Dropping the last public clone stops the driver, so a forgotten client does not reconnect
/// forever in the background.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(d) = &lock(&self.inner.shared).driver {
            d.stop.send_replace(true);
        }
    }
}

struct Inner {
    opts: ClientOptions,
    origin: Origin,
    events: mpsc::Sender<ClientEvent>,
    shared: Mutex<Shared>,
    /// `simulate_drop`: the live connection closes as if the network failed.
    drop_now: tokio::sync::Notify,
    /// `retry_now`: cut the current reconnect back-off short (the user pressed "retry now").
    retry_now: tokio::sync::Notify,
}

/// State visible to API calls. Only short, synchronous critical sections.
struct Shared {
    state: ClientState,
    peer_id: Option<String>,
    max_message_size: usize,
    ice_servers: Option<Vec<IceServer>>,
    /// Channels to replay after a reconnect, in subscription order, with their
    /// `includeSenderMetadata`.
    tracked: Vec<(String, bool)>,
    /// The live connection's command queue (`Some` exactly while connected).
    conn: Option<mpsc::Sender<Command>>,
    driver: Option<DriverHandle>,
}

struct DriverHandle {
    stop: watch::Sender<bool>,
    /// Becomes true once the driver has reached `Closed` (its last events may still be queued).
    done: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

/// Locks, recovering from poisoning: no code path panics while holding this lock, and a
/// poisoned lock must not turn every later call into a panic.
fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request handed to the driver.
struct Command {
    request_id: String,
    text: String,
    reply: oneshot::Sender<Result<(), ClientError>>,
}

/// Client → server frames, serialised compactly in wire field order.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutFrame<'a> {
    Subscribe {
        channel: &'a str,
        #[serde(rename = "requestId")]
        request_id: &'a str,
        /// Only written when true, like the official builders.
        #[serde(
            rename = "includeSenderMetadata",
            skip_serializing_if = "std::ops::Not::not"
        )]
        include_sender_metadata: bool,
    },
    Unsubscribe {
        channel: &'a str,
        #[serde(rename = "requestId")]
        request_id: &'a str,
    },
    Publish {
        channel: &'a str,
        data: &'a Value,
        #[serde(rename = "requestId")]
        request_id: &'a str,
    },
    Send {
        to: &'a str,
        data: &'a Value,
        #[serde(rename = "requestId")]
        request_id: &'a str,
    },
    Ping,
}

impl OutFrame<'_> {
    fn to_text(&self) -> Result<String, ClientError> {
        // serde_json::Value cannot hold NaN/Infinity, so this only fails on a serde bug.
        serde_json::to_string(self)
            .map_err(|_| ClientError::InvalidOptions("frame serialisation failed".into()))
    }
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn channel_arg(channel: &str) -> Result<(), ClientError> {
    check_channel(channel).map_err(|_| ClientError::InvalidChannel)?;
    check_not_reserved(channel).map_err(|e| match e {
        FieldError::ReservedChannel => ClientError::ReservedChannel,
        _ => ClientError::InvalidChannel,
    })
}

impl SignallingClient {
    /// Validates options (URL: origin only, `wss:`, or `ws:` for
    /// localhost/127.0.0.1/::1). Does not connect.
    ///
    /// Returns the client and the receiver of its events: a bounded queue (capacity
    /// [`EVENT_CAPACITY`]) read by exactly one consumer. When it is full the client stops reading
    /// the socket until there is room: nothing is dropped, but a consumer that stops reading
    /// also stops the connection (the server eventually drops it as unresponsive).
    pub fn new(
        opts: ClientOptions,
    ) -> Result<(SignallingClient, mpsc::Receiver<ClientEvent>), ClientError> {
        let origin = parse_origin(&opts.url).map_err(|e| ClientError::InvalidUrl(e.into()))?;
        opts.validate().map_err(ClientError::InvalidOptions)?;
        let (tx, rx) = mpsc::channel(EVENT_CAPACITY);
        let inner = Arc::new(Inner {
            opts,
            origin,
            events: tx,
            drop_now: tokio::sync::Notify::new(),
            retry_now: tokio::sync::Notify::new(),
            shared: Mutex::new(Shared {
                state: ClientState::Idle,
                peer_id: None,
                max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
                ice_servers: None,
                tracked: Vec::new(),
                conn: None,
                driver: None,
            }),
        });
        Ok((
            SignallingClient {
                handle: Arc::new(Handle { inner }),
            },
            rx,
        ))
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// Opens the connection and waits for the welcome. Only from `Idle` or `Closed`
    /// (else [`ClientError::AlreadyConnecting`]).
    ///
    /// The first connect of a session is never retried: a close before the welcome fails with
    /// [`ClientError::ConnectFailed`] (`close_code` = the server's close code, or the HTTP status
    /// of a refused upgrade such as 429), a token-provider failure with
    /// [`ClientError::TokenProvider`]. Automatic reconnects start only after a welcome. A
    /// `connect()` after `Closed` starts a fresh session (`is_reconnect` false again).
    pub async fn connect(&self) -> Result<ConnectedInfo, ClientError> {
        let (first_tx, first_rx) = oneshot::channel();
        {
            let inner = self.inner();
            let mut s = lock(&inner.shared);
            let from = s.state;
            if !matches!(from, ClientState::Idle | ClientState::Closed) {
                return Err(ClientError::AlreadyConnecting);
            }
            s.state = ClientState::Connecting;
            let (stop_tx, stop_rx) = watch::channel(false);
            let (done_tx, done_rx) = watch::channel(false);
            // The previous session's driver may still be delivering its last events; the new
            // one waits for it so events never interleave.
            let previous = s.driver.take().map(|d| d.task);
            let driver = Driver {
                inner: inner.clone(),
                stop: stop_rx,
                done: done_tx,
                emitter: Emitter {
                    tx: inner.events.clone(),
                    pending: VecDeque::new(),
                },
                backoff: Backoff::default(),
                token_failures: 0,
                ever_connected: false,
                last_close: (ABNORMAL_CLOSE, String::new()),
            };
            let task = tokio::spawn(async move {
                if let Some(p) = previous {
                    let _ = p.await;
                }
                driver.run(from, first_tx).await;
            });
            s.driver = Some(DriverHandle {
                stop: stop_tx,
                done: done_rx,
                task,
            });
        }
        first_rx.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Subscribes and waits for the ack; the presence snapshot follows as an event.
    ///
    /// The channel is tracked for auto-resubscribe *before* the frame is sent,
    /// so a drop between send and ack does not lose it. It is untracked again when the call
    /// fails with `NotConnected` (nothing was sent) or the server refuses it, unless it was
    /// tracked before.
    pub async fn subscribe(
        &self,
        channel: &str,
        include_sender_metadata: bool,
    ) -> Result<(), ClientError> {
        channel_arg(channel)?;
        let request_id = new_request_id();
        let text = OutFrame::Subscribe {
            channel,
            request_id: &request_id,
            include_sender_metadata,
        }
        .to_text()?;
        self.check_size(&text)?;
        let before = {
            let mut s = lock(&self.inner().shared);
            let before = s.tracked.iter().find(|(c, _)| c == channel).map(|t| t.1);
            match s.tracked.iter_mut().find(|(c, _)| c == channel) {
                Some(t) => t.1 = include_sender_metadata,
                None => s
                    .tracked
                    .push((channel.to_string(), include_sender_metadata)),
            }
            before
        };
        let result = self.request(request_id, text).await;
        let restore = match &result {
            Err(ClientError::NotConnected) => true,
            Err(ClientError::Server { .. }) => before.is_none(),
            _ => false,
        };
        if restore {
            let mut s = lock(&self.inner().shared);
            match before {
                None => s.tracked.retain(|(c, _)| c != channel),
                Some(prev) => {
                    if let Some(t) = s.tracked.iter_mut().find(|(c, _)| c == channel) {
                        t.1 = prev;
                    }
                }
            }
        }
        result
    }

    /// Unsubscribes and waits for the ack. The channel stops being tracked first, whatever
    /// the outcome: the intent to leave survives a reconnect.
    pub async fn unsubscribe(&self, channel: &str) -> Result<(), ClientError> {
        channel_arg(channel)?;
        let request_id = new_request_id();
        let text = OutFrame::Unsubscribe {
            channel,
            request_id: &request_id,
        }
        .to_text()?;
        self.check_size(&text)?;
        lock(&self.inner().shared)
            .tracked
            .retain(|(c, _)| c != channel);
        self.request(request_id, text).await
    }

    /// Broadcasts `data` to the channel's other subscribers and waits for the ack.
    pub async fn publish(&self, channel: &str, data: Value) -> Result<(), ClientError> {
        channel_arg(channel)?;
        let request_id = new_request_id();
        let text = OutFrame::Publish {
            channel,
            data: &data,
            request_id: &request_id,
        }
        .to_text()?;
        self.check_size(&text)?;
        self.request(request_id, text).await
    }

    /// Sends `data` to one peer (server-routed) and waits for the ack.
    pub async fn send(&self, to: &str, data: Value) -> Result<(), ClientError> {
        check_peer_id(to).map_err(|_| ClientError::InvalidPeerId)?;
        if lock(&self.inner().shared).peer_id.as_deref() == Some(to) {
            return Err(ClientError::SelfSend);
        }
        let request_id = new_request_id();
        let text = OutFrame::Send {
            to,
            data: &data,
            request_id: &request_id,
        }
        .to_text()?;
        self.check_size(&text)?;
        self.request(request_id, text).await
    }

    /// Closes with 1000 and moves to `Closed`; requests in flight fail with
    /// [`ClientError::Closed`]. Waits at most ~1 s for the close frame to flush. Idempotent.
    /// Emits `StateChanged { to: Closed }` but no `Disconnected` (the app asked for it).
    pub async fn close(&self) {
        let done = {
            let inner = self.inner();
            let mut s = lock(&inner.shared);
            match (&s.driver, s.state) {
                (_, ClientState::Closed) => return,
                (None, from) => {
                    // Never connected: nothing to tear down, but the transition is still
                    // reported (best effort: the queue is empty unless the app ignored it).
                    s.state = ClientState::Closed;
                    let _ = inner.events.try_send(ClientEvent::StateChanged {
                        from,
                        to: ClientState::Closed,
                    });
                    return;
                }
                (Some(d), _) => {
                    d.stop.send_replace(true);
                    d.done.clone()
                }
            }
        };
        let mut done = done;
        let _ = tokio::time::timeout(CLOSE_FLUSH * 3, done.wait_for(|d| *d)).await;
    }

    /// Troubleshooting: closes the live connection (code 4000) and lets the normal reconnect
    /// path run, as if the network had dropped. No-op when not connected.
    pub fn simulate_drop(&self) {
        if self.state() == ClientState::Connected {
            self.inner().drop_now.notify_one();
        }
    }

    /// Ends the wait before the next reconnect attempt now (a "retry now" button): the attempt
    /// itself, its token and its failure handling are the normal ones, and the back-off
    /// schedule continues from where it was. No-op unless reconnecting, so a stray press while
    /// connected cannot shorten a later, legitimate back-off.
    pub fn retry_now(&self) {
        if self.state() == ClientState::Reconnecting {
            self.inner().retry_now.notify_one();
        }
    }

    pub fn state(&self) -> ClientState {
        lock(&self.inner().shared).state
    }

    /// The id from the latest welcome (`None` before the first one).
    pub fn peer_id(&self) -> Option<String> {
        lock(&self.inner().shared).peer_id.clone()
    }

    /// The latest welcome's `maxMessageSize`; 65536 before the first welcome.
    pub fn max_message_size(&self) -> usize {
        lock(&self.inner().shared).max_message_size
    }

    /// The last valid `iceServers` list; a later welcome without one keeps it.
    pub fn ice_servers(&self) -> Option<Vec<IceServer>> {
        lock(&self.inner().shared).ice_servers.clone()
    }

    /// Channels that will be replayed after a reconnect, with their `includeSenderMetadata`.
    pub fn tracked_channels(&self) -> Vec<(String, bool)> {
        lock(&self.inner().shared).tracked.clone()
    }

    /// The whole envelope, as it would go on the wire, must fit: the server limits whole frames,
    /// so checking only `data` would let a frame through that the server then refuses.
    fn check_size(&self, text: &str) -> Result<(), ClientError> {
        let max = self.max_message_size();
        if text.len() > max {
            return Err(ClientError::TooLarge {
                size: text.len(),
                max,
            });
        }
        Ok(())
    }

    /// Hands a frame to the driver and waits for its ack/error/timeout.
    async fn request(&self, request_id: String, text: String) -> Result<(), ClientError> {
        let conn = {
            let s = lock(&self.inner().shared);
            match (&s.conn, s.state) {
                (Some(c), ClientState::Connected) => c.clone(),
                _ => return Err(ClientError::NotConnected),
            }
        };
        let (reply, answer) = oneshot::channel();
        conn.send(Command {
            request_id,
            text,
            reply,
        })
        .await
        .map_err(|_| ClientError::NotConnected)?;
        // The driver answers every command explicitly; a dropped reply means it died mid-way,
        // after the frame may have left.
        answer.await.unwrap_or(Err(ClientError::Disconnected))
    }
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

/// What a request in the table is waiting on behalf of.
enum Pending {
    Caller(oneshot::Sender<Result<(), ClientError>>),
    /// An automatic re-subscribe; `tries` retries already made.
    Replay {
        channel: String,
        tries: u32,
    },
}

/// A re-subscribe due at `at`.
struct Replay {
    channel: String,
    tries: u32,
    at: Instant,
}

/// Everything the `select!` in the connected loop can wake up for (handled after the select
/// so that the handlers may borrow the driver freely).
enum Wake {
    Stop,
    SimulatedDrop,
    Delivered,
    Command(Command),
    AckTimer,
    ReplayTimer,
    PingTimer,
    Watchdog,
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

    /// The connected loop: inbound frames, API commands, ack deadlines, re-subscribes,
    /// heartbeat and watchdog.
    async fn connected(
        &mut self,
        ws: Ws,
        mut cmd_rx: mpsc::Receiver<Command>,
        is_reconnect: bool,
    ) -> ConnEnd {
        let (mut sink, mut stream) = ws.split();
        let opts = self.inner.opts.clone();
        let mut table: RequestTable<Pending> = RequestTable::new();
        let now = Instant::now();
        // Emit `Connected` first (already queued), then replay: MeteredPeer reconciles on the
        // presence snapshots these produce.
        let mut replays: Vec<Replay> = if is_reconnect && opts.auto_resubscribe {
            lock(&self.inner.shared)
                .tracked
                .iter()
                .map(|(channel, _)| Replay {
                    channel: channel.clone(),
                    tries: 0,
                    at: now,
                })
                .collect()
        } else {
            Vec::new()
        };
        let watchdog = (!opts.inactivity_timeout.is_zero()).then_some(opts.inactivity_timeout);
        let heartbeat = watchdog.map(|w| (w / 3).max(MIN_HEARTBEAT));
        let mut last_inbound = now;
        let mut last_ping = now;
        let mut was_paused = false;

        let end = loop {
            let reading = self.emitter.pending.is_empty();
            if reading && was_paused {
                // We were not listening while the consumer caught up; silence during that time
                // says nothing about the server.
                last_inbound = Instant::now();
                was_paused = false;
            } else if !reading {
                was_paused = true;
            }
            let ack_at = table.next_deadline();
            let replay_at = replays.iter().map(|r| r.at).min();
            let ping_at = heartbeat.map(|h| last_inbound.max(last_ping) + h);
            let watchdog_at = watchdog.map(|w| last_inbound + w);
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
                _ = sleep_until(ack_at), if ack_at.is_some() => Wake::AckTimer,
                _ = sleep_until(replay_at), if replay_at.is_some() => Wake::ReplayTimer,
                _ = sleep_until(ping_at), if reading && ping_at.is_some() => Wake::PingTimer,
                _ = sleep_until(watchdog_at), if reading && watchdog_at.is_some() => Wake::Watchdog,
                msg = stream.next(), if reading => Wake::Inbound(msg),
            };
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
                Wake::Command(cmd) => {
                    let Command {
                        request_id,
                        text,
                        reply,
                    } = cmd;
                    if let Err(Pending::Caller(reply)) = table.insert(
                        request_id,
                        Instant::now(),
                        opts.ack_timeout,
                        Pending::Caller(reply),
                    ) {
                        // A UUIDv4 clash: refuse rather than cross two replies.
                        let _ = reply.send(Err(ClientError::NotConnected));
                        continue;
                    }
                    if let Err(e) = sink.send(Message::text(text)).await {
                        warn!(error = %scrub(&e.to_string()), "signalling write failed");
                        break ConnEnd::Lost {
                            code: ABNORMAL_CLOSE,
                            reason: "write failed".into(),
                        };
                    }
                }
                Wake::AckTimer => {
                    for (request_id, pending) in table.expire(Instant::now()) {
                        debug!(%request_id, "ack timeout");
                        match pending {
                            Pending::Caller(reply) => {
                                let _ = reply.send(Err(ClientError::AckTimeout));
                            }
                            Pending::Replay { channel, tries } => {
                                self.replay_failed(&mut replays, channel, tries, "ack timeout");
                            }
                        }
                    }
                }
                Wake::ReplayTimer => {
                    let now = Instant::now();
                    let (due, later): (Vec<Replay>, Vec<Replay>) =
                        replays.drain(..).partition(|r| r.at <= now);
                    replays = later;
                    for r in due {
                        // Unsubscribed meanwhile: nothing to restore.
                        let include = lock(&self.inner.shared)
                            .tracked
                            .iter()
                            .find(|(c, _)| *c == r.channel)
                            .map(|t| t.1);
                        let Some(include) = include else { continue };
                        let request_id = new_request_id();
                        let Ok(text) = (OutFrame::Subscribe {
                            channel: &r.channel,
                            request_id: &request_id,
                            include_sender_metadata: include,
                        })
                        .to_text() else {
                            continue;
                        };
                        debug!(channel = %r.channel, tries = r.tries, "re-subscribing");
                        let _ = table.insert(
                            request_id,
                            now,
                            opts.ack_timeout,
                            Pending::Replay {
                                channel: r.channel,
                                tries: r.tries,
                            },
                        );
                        if let Err(e) = sink.send(Message::text(text)).await {
                            warn!(error = %scrub(&e.to_string()), "signalling write failed");
                            break;
                        }
                    }
                }
                Wake::PingTimer => {
                    last_ping = Instant::now();
                    if let Ok(text) = OutFrame::Ping.to_text() {
                        // A failed ping is only logged: the watchdog decides liveness.
                        if let Err(e) = sink.send(Message::text(text)).await {
                            debug!(error = %scrub(&e.to_string()), "keepalive ping failed");
                        }
                    }
                }
                Wake::Watchdog => {
                    warn!(timeout = ?opts.inactivity_timeout, "no inbound frame; closing 4000");
                    close_sink(&mut sink, INACTIVITY_CLOSE, "inactivity").await;
                    break ConnEnd::Lost {
                        code: INACTIVITY_CLOSE,
                        reason: "inactivity".into(),
                    };
                }
                Wake::Inbound(msg) => {
                    last_inbound = Instant::now();
                    match msg {
                        Some(Ok(Message::Text(text))) => {
                            self.on_frame(text.as_str(), &mut table, &mut replays);
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let (code, reason) = close_parts(frame.as_ref());
                            // Completes the closing handshake (our reply is already queued).
                            let _ = tokio::time::timeout(CLOSE_FLUSH, sink.close()).await;
                            break ConnEnd::Lost { code, reason };
                        }
                        Some(Ok(_)) => {} // binary, ping, pong: liveness only
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
                    }
                }
            }
        };

        // Tear down: no new commands, queued ones were never sent, in-flight ones may have been.
        lock(&self.inner.shared).conn = None;
        cmd_rx.close();
        while let Ok(cmd) = cmd_rx.try_recv() {
            let _ = cmd.reply.send(Err(ClientError::NotConnected));
        }
        let closed_by_app = matches!(end, ConnEnd::Stopped);
        for (_, pending) in table.drain() {
            if let Pending::Caller(reply) = pending {
                let _ = reply.send(Err(if closed_by_app {
                    ClientError::Closed
                } else {
                    ClientError::Disconnected
                }));
            }
        }
        end
    }

    /// A re-subscribe was refused or timed out: retry later on this socket, or leave it for the
    /// next reconnect (the channel stays tracked either way).
    fn replay_failed(&self, replays: &mut Vec<Replay>, channel: String, tries: u32, why: &str) {
        if tries < RESUBSCRIBE_RETRIES {
            replays.push(Replay {
                channel,
                tries: tries + 1,
                at: Instant::now() + self.inner.opts.resubscribe_retry_interval,
            });
        } else {
            warn!(%channel, reason = why, "re-subscribe failed; will retry after the next reconnect");
        }
    }

    /// One inbound text frame on a live connection.
    fn on_frame(
        &mut self,
        text: &str,
        table: &mut RequestTable<Pending>,
        replays: &mut Vec<Replay>,
    ) {
        let frame = match parse_server_frame(text) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, len = text.len(), "dropping malformed server frame");
                return;
            }
        };
        match frame {
            ServerFrameIn::Welcome { .. } => debug!("ignoring a second welcome"),
            ServerFrameIn::Ack { request_id } => match table.resolve(&request_id) {
                Some(Pending::Caller(reply)) => {
                    let _ = reply.send(Ok(()));
                }
                Some(Pending::Replay { channel, .. }) => debug!(%channel, "re-subscribed"),
                None => debug!(%request_id, "late or unknown ack"),
            },
            ServerFrameIn::Error {
                code,
                request_id,
                message,
            } => {
                let pending = request_id.as_deref().and_then(|id| table.resolve(id));
                match pending {
                    Some(Pending::Caller(reply)) => {
                        let _ = reply.send(Err(ClientError::Server { code, message }));
                    }
                    Some(Pending::Replay { channel, tries }) => {
                        self.replay_failed(replays, channel, tries, &code);
                    }
                    // An old server answering our app-level ping: harmless.
                    None if request_id.is_none() && code == "unknown_type" => {}
                    None => self
                        .emitter
                        .push(ClientEvent::ServerError { code, message }),
                }
            }
            ServerFrameIn::Message {
                channel,
                from,
                data,
                from_metadata,
            } => self.emitter.push(ClientEvent::Message {
                channel,
                from,
                data,
                from_metadata,
            }),
            ServerFrameIn::Direct {
                from,
                data,
                from_metadata,
            } => self.emitter.push(ClientEvent::Direct {
                from,
                data,
                from_metadata,
            }),
            ServerFrameIn::Presence {
                channel,
                joined,
                left,
            } => self.emitter.push(ClientEvent::Presence {
                channel,
                joined: joined.into_iter().map(presence_peer).collect(),
                left: left.into_iter().map(presence_peer).collect(),
            }),
            ServerFrameIn::GoingAway { retry_after_ms } => {
                info!(retry_after_ms, "server going away");
                self.backoff
                    .raise_floor(Duration::from_millis(retry_after_ms));
                self.emitter.push(ClientEvent::GoingAway { retry_after_ms });
            }
            ServerFrameIn::Pong { .. } => {}
        }
    }
}

fn presence_peer(e: PresenceEntry) -> PresencePeer {
    PresencePeer {
        peer_id: e.peer_id,
        metadata: e.metadata,
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

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: WsCloseCode::from(code),
        reason: reason.into(),
    }))
}

async fn close_socket(ws: &mut Ws, code: u16, reason: &'static str) {
    let _ = tokio::time::timeout(CLOSE_FLUSH, ws.send(close_frame(code, reason))).await;
}

async fn close_sink(sink: &mut SplitSink<Ws, Message>, code: u16, reason: &'static str) {
    let _ = tokio::time::timeout(CLOSE_FLUSH, sink.send(close_frame(code, reason))).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outbound_frames_are_compact_and_ordered() {
        let data = json!({"k": [1, "two"]});
        let table: Vec<(OutFrame<'_>, &str)> = vec![
            (
                OutFrame::Subscribe {
                    channel: "room",
                    request_id: "r1",
                    include_sender_metadata: false,
                },
                r#"{"type":"subscribe","channel":"room","requestId":"r1"}"#,
            ),
            (
                OutFrame::Subscribe {
                    channel: "room",
                    request_id: "r1",
                    include_sender_metadata: true,
                },
                r#"{"type":"subscribe","channel":"room","requestId":"r1","includeSenderMetadata":true}"#,
            ),
            (
                OutFrame::Unsubscribe {
                    channel: "room",
                    request_id: "r2",
                },
                r#"{"type":"unsubscribe","channel":"room","requestId":"r2"}"#,
            ),
            (
                OutFrame::Publish {
                    channel: "room",
                    data: &data,
                    request_id: "r3",
                },
                r#"{"type":"publish","channel":"room","data":{"k":[1,"two"]},"requestId":"r3"}"#,
            ),
            (
                OutFrame::Send {
                    to: "bob",
                    data: &data,
                    request_id: "r4",
                },
                r#"{"type":"send","to":"bob","data":{"k":[1,"two"]},"requestId":"r4"}"#,
            ),
            (OutFrame::Ping, r#"{"type":"ping"}"#),
        ];
        for (frame, want) in table {
            assert_eq!(frame.to_text().expect("serialises"), want);
        }
        // Every outbound frame is one the server's own strict parser accepts.
        let text = OutFrame::Publish {
            channel: "room",
            data: &data,
            request_id: &new_request_id(),
        }
        .to_text()
        .expect("serialises");
        assert!(crate::protocol::parse_client_frame(&text).is_ok());
    }

    #[test]
    fn request_ids_are_uuid_v4() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).expect("uuid");
        assert_eq!(parsed.get_version_num(), 4);
    }

    #[test]
    fn channel_argument_checks() {
        let table: &[(&str, Option<&str>)] = &[
            ("room-1", None),
            ("", Some("invalid")),
            ("a\nb", Some("invalid")),
            ("_metered/x", Some("reserved")),
            ("_SYSTEM/x", Some("reserved")),
        ];
        for (ch, want) in table {
            let got = match channel_arg(ch) {
                Ok(()) => None,
                Err(ClientError::InvalidChannel) => Some("invalid"),
                Err(ClientError::ReservedChannel) => Some("reserved"),
                Err(e) => panic!("{ch}: unexpected {e:?}"),
            };
            assert_eq!(got, *want, "{ch:?}");
        }
        assert!(matches!(
            channel_arg(&"x".repeat(257)),
            Err(ClientError::InvalidChannel)
        ));
    }

    #[test]
    fn close_parts_sanitise() {
        assert_eq!(close_parts(None), (1005, String::new()));
        let f = CloseFrame {
            code: WsCloseCode::from(4020),
            reason: "kicked\u{0}\n by admin".into(),
        };
        assert_eq!(close_parts(Some(&f)), (4020, "kicked by admin".into()));
    }

    #[tokio::test]
    async fn construction_validates_and_redacts() {
        use super::super::credential::Credential;
        let bad_urls = ["ws://example.com", "wss://h/v1", "https://h"];
        for u in bad_urls {
            let r = SignallingClient::new(ClientOptions::new(u, Credential::api_key("k")));
            assert!(matches!(r, Err(ClientError::InvalidUrl(_))), "{u}");
        }
        let r = SignallingClient::new(ClientOptions::new(
            "ws://127.0.0.1:1",
            Credential::api_key(""),
        ));
        assert!(matches!(r, Err(ClientError::InvalidOptions(_))));
        let mut o = ClientOptions::new("ws://127.0.0.1:1", Credential::api_key("pk_secret"));
        o.ack_timeout = Duration::ZERO;
        assert!(matches!(
            SignallingClient::new(o),
            Err(ClientError::InvalidOptions(_))
        ));

        let o = ClientOptions::new("ws://127.0.0.1:1", Credential::api_key("pk_secret"));
        assert!(!format!("{o:?}").contains("pk_secret"));
        let (c, _rx) = SignallingClient::new(o).expect("valid");
        assert_eq!(c.state(), ClientState::Idle);
        assert_eq!(c.max_message_size(), DEFAULT_MAX_MESSAGE_SIZE);
        assert_eq!(c.peer_id(), None);
        assert_eq!(format!("{c:?}"), "SignallingClient(Idle)");
        // Calls before connect fail fast, after local validation.
        assert!(matches!(
            c.publish("room", json!(1)).await,
            Err(ClientError::NotConnected)
        ));
        assert!(matches!(
            c.publish("_internal/x", json!(1)).await,
            Err(ClientError::ReservedChannel)
        ));
        assert!(matches!(
            c.send("bad\npeer", json!(1)).await,
            Err(ClientError::InvalidPeerId)
        ));
        // A subscribe that never left is not tracked.
        assert!(matches!(
            c.subscribe("room", false).await,
            Err(ClientError::NotConnected)
        ));
        assert!(c.tracked_channels().is_empty());
        c.close().await;
        assert_eq!(c.state(), ClientState::Closed);
    }
}
