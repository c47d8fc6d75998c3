//! The SDK's signalling layer: [`SignallingClient`], one WebSocket to a Metered-compatible
//! server (ours or the hosted one), pub/sub over any number of channels.
//!
//! It does what every official SDK's signalling client does:
//! credential per attempt (API key or token provider), request/ack correlation with UUIDv4
//! request ids, welcome timeout, heartbeat ping and inactivity watchdog, reconnect with
//! jittered exponential backoff and the close-code policy, subscription replay, and strict
//! parsing of server frames. `peer/` (MeteredPeer) builds on it.
//!
//! Layout: pure cores that take time and randomness as arguments, and one tokio shell.
//!
//! | module | what | IO? |
//! |---|---|---|
//! | [`backoff`] | reconnect policy, close-code classification, delay computation | pure |
//! | [`credential`] | API key / token provider, redaction and scrubbing | provider call only |
//! | [`requests`] | pending request table with deadlines | pure |
//! | [`url`] | origin validation, connect URL, percent-encoding | pure |
//! | [`events`] | events, states, `iceServers` allowlist, reason sanitising | pure |
//! | [`options`], [`error`] | configuration and the error type | pure |
//! | `session` | one welcomed connection's rules: acks, replay, ping, watchdog, frame meanings | pure |
//! | `driver` | the tokio task: socket, connect attempts, backoff; runs the session | yes |
//! | [`handle`] | the public [`SignallingClient`] and the state its clones share | spawns the driver |
//!
//! The server frame parser lives with the rest of the wire rules, in
//! [`crate::protocol::server_frames`].
//!
//! # Using it from an event loop
//!
//! Events arrive on one bounded queue. While that queue is full the client stops reading the
//! socket, and acks are read from the socket too: a consumer that awaits a request (`publish`,
//! `send`, …) *inline* while not draining events can stall until the ack timeout. Spawn such
//! calls, or keep the consumer loop free of awaits on the client.
//!
//! # Credentials and logs
//!
//! Nothing in this module logs the connect URL or the credential. One caveat outside our
//! control: tungstenite's own `trace!` line for the handshake prints the raw request line, query
//! included, through the `log` bridge. Never enable `tungstenite=trace` where logs are kept.

#![warn(missing_docs)]

pub mod backoff;
pub mod credential;
pub mod error;
pub mod events;
pub mod options;
pub mod requests;
mod session;
pub mod url;

mod driver;
pub mod handle;

pub use backoff::{CloseAction, ReconnectPolicy, classify_close, reconnect_delay};
pub use credential::{ApiKey, Credential, TokenProvider};
pub use driver::MAX_INBOUND_BYTES;
pub use error::ClientError;
pub use events::{ClientEvent, ClientState, ConnectedInfo, IceServer, PresencePeer};
pub use handle::{DEFAULT_MAX_MESSAGE_SIZE, EVENT_CAPACITY, SignallingClient};
pub use options::ClientOptions;
pub use session::RESUBSCRIBE_RETRIES;
