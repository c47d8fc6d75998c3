//! Errors of the peer layer. Messages never contain credentials, SDP or payloads.

use thiserror::Error;

use crate::client::ClientError;

#[derive(Debug, Error)]
pub enum PeerError {
    /// The call is not allowed in the current state (e.g. `join` twice, `send` before joined).
    #[error("invalid state: {0}")]
    InvalidState(&'static str),
    #[error("not joined")]
    NotJoined,
    #[error("channel prefix is reserved")]
    ReservedChannel,
    #[error("invalid arguments: {0}")]
    InvalidArgs(&'static str),
    #[error("cannot send to yourself")]
    SelfSend,
    #[error("payload of {size} bytes exceeds the {max}-byte limit")]
    Oversized { size: usize, max: usize },
    #[error("remote peer {0} is closed")]
    RemoteClosed(String),
    #[error("signalling: {0}")]
    Signalling(#[from] ClientError),
    #[error("webrtc: {0}")]
    WebRtc(String),
    #[error("the data channel is closed")]
    DataChannelClosed,
    /// `replace_track` failed on some peers (it succeeded on the others).
    #[error("replace_track failed on {} of {} peers", failed.len(), failed.len() + succeeded.len())]
    ReplaceTrack {
        succeeded: Vec<String>,
        failed: Vec<(String, String)>,
    },
    #[error("data channel overflow: {queued} sends already queued (cap {cap})")]
    DataChannelOverflow { queued: usize, cap: usize },
}

/// Errors delivered as events (MeteredPeer `errors()`, RemotePeer negotiation errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEventError {
    /// A terminal condition the app should react to with `close()` and a new MeteredPeer.
    Fatal { code: Option<u16>, message: String },
    /// Reconcile did not complete within the deadline and forced resubscribes.
    ReconcileTimeout,
    /// The ICE-restart ladder for one peer is spent; it stays `reconnecting`.
    IceRecoveryExhausted { peer: String, attempts: u32 },
    /// The token provider failed repeatedly.
    TokenProvider {
        consecutive_failures: u32,
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
