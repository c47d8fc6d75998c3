//! What the client reports to its one consumer, and the data those reports carry.
//!
//! Also home of the fail-closed `iceServers` allowlist: the list comes from the
//! JWT's `metadata`, i.e. from whoever minted the token, and ends up in every peer connection and
//! possibly in a UI, so one bad entry voids the whole list rather than being "fixed up".

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::protocol::validate::is_control;

/// Connection lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Built, never connected.
    Idle,
    /// First connect in progress.
    Connecting,
    /// A welcome arrived on the current socket.
    Connected,
    /// Lost a connection, waiting or trying to get it back.
    Reconnecting,
    /// Closed by the app, by a terminal close code, or after the reconnect budget ran out.
    /// `connect()` may be called again.
    Closed,
}

/// A member in a presence snapshot or diff.
#[derive(Debug, Clone, PartialEq)]
pub struct PresencePeer {
    /// The member's peer id (its JWT `sub`, or the server-made UUID of a publishable-key
    /// connection). One peer id may stand for several connections.
    pub peer_id: String,
    /// The member's JWT `peerMetadata`. Untrusted peer input: never use it for authorisation.
    pub metadata: Option<Value>,
}

/// One STUN/TURN server from `welcome.metadata.iceServers`, after the allowlist.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct IceServer {
    /// One or more `stun:`/`stuns:`/`turn:`/`turns:` URLs (a single string is accepted on input).
    #[serde(deserialize_with = "string_or_list")]
    pub urls: Vec<String>,
    /// TURN username; `None` for STUN. A secret like `credential`: `Debug` redacts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password (often a time-limited HMAC); `None` for STUN. Redacted in `Debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl fmt::Debug for IceServer {
    /// TURN usernames and credentials are secrets (often time-limited HMACs); URLs are not.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &redact(&self.username))
            .field("credential", &redact(&self.credential))
            .finish()
    }
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Everything the welcome told us.
#[derive(Debug, Clone)]
pub struct ConnectedInfo {
    /// Our peer id as the server assigned it: the JWT `sub`, or a server-made UUID for a
    /// publishable-key connection (which need not survive a reconnect). Others see us by it.
    pub peer_id: String,
    /// Server clock, unix seconds.
    pub server_time: u64,
    /// Token expiry, unix seconds; `None` for publishable keys.
    pub expires_at: Option<u64>,
    /// True when this client had a welcome before (a reconnect).
    pub is_reconnect: bool,
    /// Largest frame the server accepts; every outbound envelope is checked against it.
    pub max_message_size: usize,
    /// The validated list from this welcome; `None` when it had none or the list failed the
    /// allowlist. [`SignallingClient::ice_servers`](super::SignallingClient::ice_servers) keeps
    /// the last valid one across reconnects.
    pub ice_servers: Option<Vec<IceServer>>,
    /// The JWT's private `metadata` claim as the welcome carried it (connection-private).
    pub metadata: Option<Value>,
}

/// Events, delivered in order on the receiver returned by `SignallingClient::new`.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// A welcome arrived (first connect or reconnect).
    Connected(ConnectedInfo),
    /// A live connection (one that had a welcome) ended, or the client gave up. A terminal one
    /// (`will_reconnect: false`) is always emitted when the client stops on its own: terminal
    /// close code, reconnect disabled, budget spent. Not emitted for `close()`.
    Disconnected {
        /// WebSocket close code: the server's, ours (4000 after inactivity, 1009 for an
        /// oversized inbound frame), or 1006 when the socket died without a close frame. When
        /// the client gives up after failed reconnect attempts it is the last attempt's code,
        /// which may be the HTTP status of a refused upgrade (e.g. 429).
        code: u16,
        /// Server-controlled text, sanitised: control characters stripped, at most 123 bytes.
        reason: String,
        /// `true`: the client moves to `Reconnecting` and keeps trying. `false`: it stopped
        /// for good and a `StateChanged` to `Closed` follows.
        will_reconnect: bool,
    },
    /// A channel broadcast (`message` frame).
    Message {
        /// The channel it was published on (one this client is subscribed to).
        channel: String,
        /// The sender's peer id. The sending connection gets no echo, but another connection
        /// under our own peer id does, so this can equal ours.
        from: String,
        /// The payload exactly as published (any JSON value, untrusted peer input).
        data: Value,
        /// The sender's `peerMetadata`; present only if we subscribed with
        /// `include_sender_metadata` and the sender has some. Untrusted.
        from_metadata: Option<Value>,
    },
    /// A direct message (`direct` frame).
    Direct {
        /// The sender's peer id (not necessarily on any channel we share).
        from: String,
        /// The payload exactly as sent (any JSON value, untrusted peer input).
        data: Value,
        /// The sender's `peerMetadata`, whenever it has some (no opt-in for directs). Untrusted.
        from_metadata: Option<Value>,
    },
    /// A presence snapshot (the first after each subscribe) or diff. Passed through as the
    /// server sent it; filtering out the own id is the caller's business.
    Presence {
        /// The channel whose membership this describes.
        channel: String,
        /// Members that arrived; in a snapshot, everyone currently subscribed.
        joined: Vec<PresencePeer>,
        /// Members that went (usually without metadata); empty in a snapshot.
        left: Vec<PresencePeer>,
    },
    /// An `error` frame no pending request was waiting for.
    ServerError {
        /// The server's machine-readable code, passed through as sent.
        code: String,
        /// Optional human-readable text from the server, unsanitised: for logs, not for logic.
        message: Option<String>,
    },
    /// The server announced a shutdown; a 1001 close follows. The value (clamped to
    /// ≤ 300 000 ms, 1000 when missing) is also the floor of the next reconnect delay.
    GoingAway {
        /// Milliseconds the server asks us to wait before reconnecting.
        retry_after_ms: u64,
    },
    /// The token provider failed 3 times in a row, and again on each failure after that.
    /// `message` is scrubbed of credentials.
    TokenProviderError {
        /// Failures in a row so far (3 on the first event); reset by a successful call.
        consecutive_failures: u32,
        /// The provider's latest error text, scrubbed.
        message: String,
    },
    /// Every state transition, in order.
    StateChanged {
        /// The state before the transition.
        from: ClientState,
        /// The state now; never equal to `from`.
        to: ClientState,
    },
}

/// Why an `iceServers` list was voided (for the log line; never shown with the values).
pub type IceServersError = &'static str;

/// Most entries accepted (more looks like an attempt to make every PC probe dozens of hosts).
pub const MAX_ICE_SERVERS: usize = 16;
/// Longest accepted URL, in characters.
pub const MAX_ICE_URL_CHARS: usize = 512;
/// Longest accepted username / credential, in characters.
pub const MAX_ICE_SECRET_CHARS: usize = 1024;

/// Extracts `metadata.iceServers`: `Ok(None)` when absent (or `null`), `Ok(Some(list))` when
/// every entry passes, `Err` when anything fails, in which case the caller uses no list from
/// this welcome at all (fail-closed, all-or-nothing).
///
/// Rules (the Python SDK's): metadata is an object; the list has at most 16 entries, each an
/// object; `urls` is a string or a non-empty list of strings; each URL is non-empty, at most
/// 512 characters and starts with `stun:`, `stuns:`, `turn:` or `turns:` (any case); string
/// `username`/`credential` are at most 1024 characters, non-strings read as absent. Stricter
/// than the Python SDK in one point: control characters in a URL void the list too, since a URL
/// may be rendered in a UI.
pub fn extract_ice_servers(
    metadata: Option<&Value>,
) -> Result<Option<Vec<IceServer>>, IceServersError> {
    let Some(meta) = metadata else {
        return Ok(None);
    };
    let Value::Object(meta) = meta else {
        return Err("welcome.metadata is not an object");
    };
    let list = match meta.get("iceServers") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("iceServers is not a list"),
    };
    if list.len() > MAX_ICE_SERVERS {
        return Err("iceServers has more than 16 entries");
    }
    let mut out = Vec::with_capacity(list.len());
    for entry in list {
        let Value::Object(entry) = entry else {
            return Err("an iceServers entry is not an object");
        };
        let urls: Vec<&str> = match entry.get("urls") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) if !items.is_empty() => {
                let mut v = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => v.push(s.as_str()),
                        _ => return Err("an iceServers url is not a string"),
                    }
                }
                v
            }
            _ => return Err("iceServers urls must be a string or a non-empty list of strings"),
        };
        for url in &urls {
            check_ice_url(url)?;
        }
        let secret = |key: &str| -> Result<Option<String>, IceServersError> {
            match entry.get(key) {
                Some(Value::String(s)) if s.chars().count() > MAX_ICE_SECRET_CHARS => {
                    Err("an iceServers username or credential is longer than 1024 characters")
                }
                Some(Value::String(s)) => Ok(Some(s.clone())),
                _ => Ok(None),
            }
        };
        out.push(IceServer {
            urls: urls.into_iter().map(str::to_string).collect(),
            username: secret("username")?,
            credential: secret("credential")?,
        });
    }
    Ok(Some(out))
}

fn check_ice_url(url: &str) -> Result<(), IceServersError> {
    if url.is_empty() || url.chars().count() > MAX_ICE_URL_CHARS {
        return Err("an iceServers url is empty or longer than 512 characters");
    }
    if url.chars().any(is_control) {
        return Err("an iceServers url contains control characters");
    }
    let lower: String = url.chars().take(6).flat_map(char::to_lowercase).collect();
    if !["stun:", "stuns:", "turn:", "turns:"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return Err("an iceServers url does not use stun:, stuns:, turn: or turns:");
    }
    Ok(())
}

/// Longest close reason the WebSocket protocol allows (125-byte control payload − 2-byte code).
pub const MAX_CLOSE_REASON_BYTES: usize = 123;

/// Makes server-controlled close-reason text safe to display: control characters removed, cut
/// to 123 bytes on a character boundary.
pub fn sanitize_reason(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(MAX_CLOSE_REASON_BYTES));
    for c in reason.chars().filter(|c| !is_control(*c)) {
        if out.len() + c.len_utf8() > MAX_CLOSE_REASON_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn servers(v: Value) -> Result<Option<Vec<IceServer>>, IceServersError> {
        extract_ice_servers(Some(&json!({ "iceServers": v })))
    }

    #[test]
    fn accepted_lists() {
        assert_eq!(extract_ice_servers(None), Ok(None));
        assert_eq!(extract_ice_servers(Some(&json!({}))), Ok(None));
        assert_eq!(
            extract_ice_servers(Some(&json!({"iceServers": null}))),
            Ok(None)
        );
        assert_eq!(servers(json!([])), Ok(Some(vec![])));
        let got = servers(json!([
            {"urls": "stun:stun.example.com:3478"},
            {"urls": ["TURN:t.example.com:3478?transport=udp", "turns:t.example.com:5349"],
             "username": "u", "credential": "c"},
            {"urls": "stuns:x", "username": 5, "credential": null},
        ]))
        .expect("valid")
        .expect("present");
        assert_eq!(
            got,
            vec![
                IceServer {
                    urls: vec!["stun:stun.example.com:3478".into()],
                    username: None,
                    credential: None
                },
                IceServer {
                    urls: vec![
                        "TURN:t.example.com:3478?transport=udp".into(),
                        "turns:t.example.com:5349".into()
                    ],
                    username: Some("u".into()),
                    credential: Some("c".into())
                },
                IceServer {
                    urls: vec!["stuns:x".into()],
                    username: None,
                    credential: None
                },
            ]
        );
        let max: Vec<Value> = (0..16).map(|_| json!({"urls": "stun:a"})).collect();
        assert_eq!(
            servers(Value::Array(max)).expect("16 ok").map(|v| v.len()),
            Some(16)
        );
        let long_ok = format!("stun:{}", "a".repeat(507));
        assert!(servers(json!([{"urls": long_ok, "credential": "c".repeat(1024)}])).is_ok());
    }

    #[test]
    fn refused_lists_are_voided_whole() {
        let seventeen: Vec<Value> = (0..17).map(|_| json!({"urls": "stun:a"})).collect();
        let table: Vec<Value> = vec![
            json!("stun:a"),
            json!({"urls": "stun:a"}),
            Value::Array(seventeen),
            json!(["stun:a"]),
            json!([{"urls": "stun:a"}, 5]),
            json!([{}]),
            json!([{"urls": []}]),
            json!([{"urls": 5}]),
            json!([{"urls": ["stun:a", 5]}]),
            json!([{"urls": ""}]),
            json!([{"urls": "http://evil.example"}]),
            json!([{"urls": "javascript:alert(1)"}]),
            json!([{"urls": "stun"}]),
            json!([{"urls": "stun:a\nb"}]),
            json!([{"urls": format!("stun:{}", "a".repeat(508))}]),
            json!([{"urls": "stun:a", "username": "u".repeat(1025)}]),
            json!([{"urls": "stun:a"}, {"urls": "ftp:b"}]),
        ];
        for v in table {
            assert!(servers(v.clone()).is_err(), "should void {v}");
        }
        assert!(
            extract_ice_servers(Some(&json!([1]))).is_err(),
            "metadata not an object"
        );
        assert!(extract_ice_servers(Some(&json!({"iceServers": 1}))).is_err());
    }

    #[test]
    fn ice_server_debug_redacts_secrets_and_serde_round_trips() {
        let s = IceServer {
            urls: vec!["turn:t:3478".into()],
            username: Some("user-secret".into()),
            credential: Some("pw-secret".into()),
        };
        let dbg = format!("{s:?}");
        assert!(dbg.contains("turn:t:3478"));
        assert!(
            !dbg.contains("user-secret") && !dbg.contains("pw-secret"),
            "{dbg}"
        );
        let text = serde_json::to_string(&s).expect("serialise");
        let back: IceServer = serde_json::from_str(&text).expect("deserialise");
        assert_eq!(back, s);
        let one: IceServer = serde_json::from_str(r#"{"urls":"stun:x"}"#).expect("string urls");
        assert_eq!(one.urls, vec!["stun:x".to_string()]);
        assert_eq!(
            serde_json::to_string(&one).expect("ser"),
            r#"{"urls":["stun:x"]}"#
        );
    }

    #[test]
    fn reasons_are_sanitised() {
        let table: &[(&str, &str)] = &[
            ("token expired", "token expired"),
            ("bad\u{0}\u{1b}[31mred\n", "bad[31mred"),
            ("tab\there\u{85}", "tabhere"),
            ("", ""),
        ];
        for (input, want) in table {
            assert_eq!(sanitize_reason(input), *want, "{input:?}");
        }
        assert_eq!(sanitize_reason(&"x".repeat(200)).len(), 123);
        // 62 two-byte chars = 124 bytes: cut at 61 chars (122 bytes), never mid-character.
        let s = sanitize_reason(&"é".repeat(62));
        assert_eq!(s.len(), 122);
        assert!(s.chars().all(|c| c == 'é'));
    }
}
