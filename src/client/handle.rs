//! The public handle: [`SignallingClient`], a cheap clone around shared state (state, peer id,
//! tracked channels, the current connection's command queue).
//!
//! `connect()` starts one driver task per session (`driver`) that owns everything with
//! a lifetime: the socket, the timers, the backoff, and the protocol core (`session`).
//! API calls talk to it through a bounded command queue and get their answer on a oneshot, so no
//! lock is ever held across an await and per-socket state needs no lock at all.
//!
//! Event delivery: one bounded queue (capacity [`EVENT_CAPACITY`]). When it is full the driver
//! stops *reading the socket* (commands, acks' timers and `close()` keep working), so a slow
//! consumer slows the server down instead of losing events or growing memory.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::driver::{self, CLOSE_FLUSH};
use super::error::ClientError;
use super::events::{ClientEvent, ClientState, ConnectedInfo, IceServer};
use super::options::ClientOptions;
use super::session::{OutFrame, new_request_id};
use super::url::{Origin, parse_origin};
use crate::protocol::validate::{FieldError, check_channel, check_not_reserved, check_peer_id};

/// Capacity of the event queue handed out by [`SignallingClient::new`].
pub const EVENT_CAPACITY: usize = 1024;
/// `max_message_size()` before the first welcome (the protocol default).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 65_536;

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

pub(super) struct Inner {
    pub(super) opts: ClientOptions,
    pub(super) origin: Origin,
    pub(super) events: mpsc::Sender<ClientEvent>,
    pub(super) shared: Mutex<Shared>,
    /// `simulate_drop`: the live connection closes as if the network failed.
    pub(super) drop_now: tokio::sync::Notify,
    /// `retry_now`: cut the current reconnect back-off short (the user pressed "retry now").
    pub(super) retry_now: tokio::sync::Notify,
}

/// State visible to API calls. Only short, synchronous critical sections.
pub(super) struct Shared {
    pub(super) state: ClientState,
    pub(super) peer_id: Option<String>,
    pub(super) max_message_size: usize,
    pub(super) ice_servers: Option<Vec<IceServer>>,
    /// Channels to replay after a reconnect, in subscription order, with their
    /// `includeSenderMetadata`.
    pub(super) tracked: Vec<(String, bool)>,
    /// The live connection's command queue (`Some` exactly while connected).
    pub(super) conn: Option<mpsc::Sender<Command>>,
    pub(super) driver: Option<DriverHandle>,
}

pub(super) struct DriverHandle {
    pub(super) stop: watch::Sender<bool>,
    /// Becomes true once the driver has reached `Closed` (its last events may still be queued).
    pub(super) done: watch::Receiver<bool>,
    pub(super) task: JoinHandle<()>,
}

/// Locks, recovering from poisoning: no code path panics while holding this lock, and a
/// poisoned lock must not turn every later call into a panic.
pub(super) fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request handed to the driver.
pub(super) struct Command {
    pub(super) request_id: String,
    pub(super) text: String,
    pub(super) reply: oneshot::Sender<Result<(), ClientError>>,
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
            let task = driver::spawn(inner.clone(), stop_rx, done_tx, from, first_tx, previous);
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

    /// The current lifecycle state, read now: it may change right after. To follow it, watch
    /// [`ClientEvent::StateChanged`] instead of polling.
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

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
