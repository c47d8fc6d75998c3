//! Errors of the peer layer. Messages never contain credentials, SDP or payloads.

use thiserror::Error;

use crate::client::ClientError;

/// Why a peer-layer call failed.
#[derive(Debug, Error)]
pub enum PeerError {
    /// The call is not allowed in the current state (e.g. `join` twice, `send` before joined).
    #[error("invalid state: {0}")]
    InvalidState(&'static str),
    /// `send`/`send_to` outside the `joined` state, including while signalling reconnects;
    /// nothing was sent.
    #[error("not joined")]
    NotJoined,
    /// `join` with a channel under `_metered/`, `_internal/` or `_system/` (any case).
    #[error("channel prefix is reserved")]
    ReservedChannel,
    /// An argument was refused; the text says which (empty peer id, track metadata that is not
    /// a JSON object, unknown track id, …).
    #[error("invalid arguments: {0}")]
    InvalidArgs(&'static str),
    /// `send_to` with our own peer id.
    #[error("cannot send to yourself")]
    SelfSend,
    /// A track's metadata message would exceed the server's `maxMessageSize`; the track was
    /// not added.
    #[error("payload of {size} bytes exceeds the {max}-byte limit")]
    Oversized {
        /// Length of the serialised message, in bytes.
        size: usize,
        /// The signalling client's current `maxMessageSize`.
        max: usize,
    },
    /// The RemotePeer (id inside) is closed: it left, or the MeteredPeer closed. A member that
    /// comes back is a new RemotePeer, announced by `on_peer_joined`.
    #[error("remote peer {0} is closed")]
    RemoteClosed(String),
    /// The signalling client refused or failed the call (bad URL or options in
    /// `MeteredPeer::new`, not connected, ack timeout, server refusal, …).
    #[error("signalling: {0}")]
    Signalling(#[from] ClientError),
    /// A remote offer or answer refused before it was applied (the text says why, e.g. too
    /// many media sections); nothing of it was built.
    #[error("{0}")]
    DescriptionRefused(String),
    /// An error from webrtc-rs, as its text.
    #[error("webrtc: {0}")]
    WebRtc(String),
    /// The data channel is closed, or not open yet: `send` before `Open` fails too (use
    /// `wait_open`). Also what pending sends get when the channel closes.
    #[error("the data channel is closed")]
    DataChannelClosed,
    /// `replace_track` failed on some peers (it succeeded on the others).
    #[error("replace_track failed on {} of {} peers", failed.len(), failed.len() + succeeded.len())]
    ReplaceTrack {
        /// Peer ids now sending the new track.
        succeeded: Vec<String>,
        /// Peer id and error text for each peer the swap failed on.
        failed: Vec<(String, String)>,
    },
    /// [`MAX_QUEUED_SENDS`](super::data_channel::MAX_QUEUED_SENDS) sends are already waiting on
    /// this data channel; this one was refused. Wait for earlier sends before sending more.
    #[error("data channel overflow: {queued} sends already queued (cap {cap})")]
    DataChannelOverflow {
        /// Sends waiting when this one was refused.
        queued: usize,
        /// The queue limit.
        cap: usize,
    },
}

/// Errors delivered as events (MeteredPeer `errors()`, RemotePeer negotiation errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEventError {
    /// A terminal condition the app should react to with `close()` and a new MeteredPeer.
    Fatal {
        /// The terminal close code, when a close caused it; `None` for a fatal server `error`
        /// frame (`token_expired`, `channel_not_authorized`, …).
        code: Option<u16>,
        /// What happened, with the server's text scrubbed; for display and logs.
        message: String,
    },
    /// Reconcile did not complete within the deadline and forced resubscribes.
    ReconcileTimeout,
    /// The ICE-restart ladder for one peer is spent; it stays `reconnecting`.
    IceRecoveryExhausted {
        /// The remote peer's id.
        peer: String,
        /// ICE restarts tried in this episode (the ladder schedule's length).
        attempts: u32,
    },
    /// The token provider failed repeatedly.
    TokenProvider {
        /// Failures in a row so far (3 on the first report); reset by a successful call.
        consecutive_failures: u32,
        /// The provider's latest error text, scrubbed of credentials.
        message: String,
    },
}

/// Drops query credentials and SDP secrets from a message before it is shown or logged.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let next = ["token=", "key=", "ice-pwd:", "ice-ufrag:", "credential"]
            .iter()
            .filter_map(|m| rest.find(m).map(|i| (i, *m)))
            .min_by_key(|(i, _)| *i);
        match next {
            Some((i, marker)) => {
                out.push_str(&rest[..i + marker.len()]);
                rest = &rest[i + marker.len()..];
                let skip = rest
                    .find(|c: char| c.is_whitespace() || c == '&' || c == '"' || c == ',')
                    .unwrap_or(rest.len());
                if skip > 0 {
                    out.push_str("***");
                }
                rest = &rest[skip..];
            }
            None => {
                out.push_str(rest);
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_credentials() {
        assert_eq!(
            scrub("GET ws://h/v1?token=eyJabc.def&x=1 failed"),
            "GET ws://h/v1?token=***&x=1 failed"
        );
        assert_eq!(
            scrub("a=ice-pwd:secretpw\r\na=ice-ufrag:uf"),
            "a=ice-pwd:***\r\na=ice-ufrag:***"
        );
        assert_eq!(scrub("key=pk_live_x"), "key=***");
        assert_eq!(scrub("nothing here"), "nothing here");
    }
}
