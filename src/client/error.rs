//! The one error type of the client. No variant ever holds a credential: URLs are never
//! embedded, provider errors are scrubbed, server text is sanitised.

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL is not an accepted origin (see [`super::url`]); the text never echoes it.
    #[error("invalid server URL: {0}")]
    InvalidUrl(String),
    /// An option is out of range (empty API key, zero timeout, bad reconnect policy, …).
    #[error("invalid client options: {0}")]
    InvalidOptions(String),
    /// The first connect failed before a welcome. `close_code` is the server's close code, the
    /// HTTP status of a refused upgrade (e.g. 429), or `None` when the socket never opened or
    /// died without a close frame. `reason` is sanitised server text (or our own description);
    /// it is kept out of `Display` because it is server-controlled.
    #[error("connect failed (close code {close_code:?})")]
    ConnectFailed {
        /// Close code or refused-upgrade HTTP status; `None` when no code was ever received.
        close_code: Option<u16>,
        /// Sanitised server text or our own description of the failure; never the URL.
        reason: String,
    },
    /// The call needs a connected client; nothing was sent.
    #[error("not connected")]
    NotConnected,
    /// The socket died while the request was in flight; the server may or may not have acted.
    #[error("disconnected before the request was acknowledged")]
    Disconnected,
    /// No `ack`/`error` within the ack timeout.
    #[error("no acknowledgement within the ack timeout")]
    AckTimeout,
    /// The server refused the request (`error` frame with our requestId). Unknown codes pass
    /// through verbatim; branch on `code`, never on `message`.
    #[error("server refused the request: {code}")]
    Server {
        /// The server's machine-readable code (e.g. `peer_not_found`), passed through as sent.
        code: String,
        /// Optional human-readable text from the server, unsanitised: for logs, not for logic.
        message: Option<String>,
    },
    /// The full serialised frame exceeds the server's `maxMessageSize`; the check covers the
    /// whole envelope, not just `data`, and nothing was sent.
    #[error("frame of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Length of the serialised frame, in bytes.
        size: usize,
        /// The limit it was checked against: the latest welcome's `maxMessageSize` (65536
        /// before the first welcome).
        max: usize,
    },
    /// Channel empty, longer than 256 bytes or containing control characters.
    #[error("invalid channel name")]
    InvalidChannel,
    /// Peer id empty, longer than 128 bytes or not printable ASCII.
    #[error("invalid peer id")]
    InvalidPeerId,
    /// `_metered/`, `_internal/`, `_system/` (any case) belong to the service.
    #[error("reserved channel prefix")]
    ReservedChannel,
    /// `send` to the own peer id.
    #[error("cannot send to self")]
    SelfSend,
    /// `connect()` while already connecting, connected or reconnecting.
    #[error("already connecting or connected")]
    AlreadyConnecting,
    /// The client was closed by `close()` while the call was in flight.
    #[error("client closed")]
    Closed,
    /// The token provider failed, timed out or returned an empty token (scrubbed text).
    #[error("token provider failed: {0}")]
    TokenProvider(String),
}
