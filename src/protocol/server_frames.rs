//! The client side of the wire: a strict parser for server → client frames.
//!
//! The acceptance rules are the official browser SDK's, the strictest of the
//! official clients, with the Python SDK's extra checks (`maxMessageSize > 0`, `retryAfterMs`
//! clamped). A frame that breaks them is refused as a whole: the caller logs and drops it, the
//! connection stays up. Keeping the rules here, beside the client-frame parser,
//! means the server's own tests and the SDK agree on one definition of "well-formed".
//!
//! Pure: no IO, no clock. Never panics on any input (property-tested below).

use serde_json::{Map, Value};

use super::frames::PresenceEntry;

/// `going_away.retryAfterMs` when it is missing, not a number or not positive (Python parser).
pub const DEFAULT_RETRY_AFTER_MS: u64 = 1000;
/// Upper bound for `going_away.retryAfterMs` (5 min): a hostile or buggy server must not be able
/// to park every client for hours.
pub const MAX_RETRY_AFTER_MS: u64 = 300_000;

/// A server frame after the structural checks. Owned, because the client hands the parts to
/// events that outlive the socket buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrameIn {
    Welcome {
        peer_id: String,
        /// Unix seconds. Fractions are truncated, negative values read as 0: the field is
        /// informative and not worth dropping a welcome over.
        server_time: u64,
        /// `None` for publishable keys (`null` on the wire; the key itself must be present).
        expires_at: Option<u64>,
        max_message_size: usize,
        /// The JWT's private `metadata` claim, passed through untouched (`null` reads as absent).
        /// Not checked here: a non-object only voids the ICE-server list.
        metadata: Option<Value>,
    },
    Ack {
        request_id: String,
    },
    Error {
        code: String,
        request_id: Option<String>,
        message: Option<String>,
    },
    Message {
        channel: String,
        from: String,
        data: Value,
        from_metadata: Option<Value>,
    },
    Direct {
        from: String,
        data: Value,
        from_metadata: Option<Value>,
    },
    Presence {
        channel: String,
        joined: Vec<PresenceEntry>,
        left: Vec<PresenceEntry>,
    },
    GoingAway {
        /// Already clamped to `1..=MAX_RETRY_AFTER_MS` (default [`DEFAULT_RETRY_AFTER_MS`]).
        retry_after_ms: u64,
    },
    Pong {
        request_id: Option<String>,
    },
}

impl ServerFrameIn {
    /// The wire `type`, for logs.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerFrameIn::Welcome { .. } => "welcome",
            ServerFrameIn::Ack { .. } => "ack",
            ServerFrameIn::Error { .. } => "error",
            ServerFrameIn::Message { .. } => "message",
            ServerFrameIn::Direct { .. } => "direct",
            ServerFrameIn::Presence { .. } => "presence",
            ServerFrameIn::GoingAway { .. } => "going_away",
            ServerFrameIn::Pong { .. } => "pong",
        }
    }
}

/// Why a server frame was refused. Carries no frame content: it goes to logs, and payloads can
/// hold personal data or credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed server frame (type {frame_type}): {reason}")]
pub struct ServerFrameError {
    /// The `type` when it was a known one, else `"?"`/`"unknown"`.
    pub frame_type: &'static str,
    pub reason: &'static str,
}

fn bad(frame_type: &'static str, reason: &'static str) -> ServerFrameError {
    ServerFrameError { frame_type, reason }
}

/// Parses one inbound text frame.
pub fn parse_server_frame(text: &str) -> Result<ServerFrameIn, ServerFrameError> {
    let value: Value = serde_json::from_str(text).map_err(|_| bad("?", "not valid JSON"))?;
    let Value::Object(mut obj) = value else {
        return Err(bad("?", "not a JSON object"));
    };
    let kind = match obj.get("type") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(bad("?", "missing or non-string type")),
    };
    match kind.as_str() {
        "welcome" => welcome(&mut obj),
        "ack" => Ok(ServerFrameIn::Ack {
            request_id: required_string(&mut obj, "requestId", "ack")?,
        }),
        "error" => {
            let code = required_string(&mut obj, "code", "error")?;
            if code.is_empty() {
                return Err(bad("error", "empty code"));
            }
            Ok(ServerFrameIn::Error {
                code,
                request_id: optional_string(&mut obj, "requestId", "error")?,
                message: optional_string(&mut obj, "message", "error")?,
            })
        }
        "message" => Ok(ServerFrameIn::Message {
            channel: required_string(&mut obj, "channel", "message")?,
            from: required_string(&mut obj, "from", "message")?,
            data: obj.remove("data").ok_or(bad("message", "missing data"))?,
            from_metadata: optional_object(&mut obj, "fromMetadata", "message")?,
        }),
        "direct" => Ok(ServerFrameIn::Direct {
            from: required_string(&mut obj, "from", "direct")?,
            data: obj.remove("data").ok_or(bad("direct", "missing data"))?,
            from_metadata: optional_object(&mut obj, "fromMetadata", "direct")?,
        }),
        "presence" => Ok(ServerFrameIn::Presence {
            channel: required_string(&mut obj, "channel", "presence")?,
            joined: presence_list(&mut obj, "joined")?,
            left: presence_list(&mut obj, "left")?,
        }),
        "going_away" => Ok(ServerFrameIn::GoingAway {
            retry_after_ms: retry_after(obj.get("retryAfterMs")),
        }),
        "pong" => Ok(ServerFrameIn::Pong {
            // Lenient on purpose: a pong only proves liveness, its requestId is never awaited.
            request_id: match obj.remove("requestId") {
                Some(Value::String(s)) => Some(s),
                _ => None,
            },
        }),
        // New server frame types must not break old clients: refused here, logged and dropped
        // by the caller, as the official SDKs do.
        _ => Err(bad("unknown", "unknown type")),
    }
}

fn welcome(obj: &mut Map<String, Value>) -> Result<ServerFrameIn, ServerFrameError> {
    const T: &str = "welcome";
    let peer_id = required_string(obj, "peerId", T)?;
    // The key must be present (the JS SDK hangs otherwise, so a server that omits it is broken
    // for browsers and we want to notice); `null` means "never expires".
    let expires_at = match obj.get("expiresAt") {
        None => return Err(bad(T, "missing expiresAt")),
        Some(Value::Null) => None,
        Some(v @ Value::Number(_)) => Some(number_to_u64(v).ok_or(bad(T, "negative expiresAt"))?),
        Some(_) => return Err(bad(T, "expiresAt must be a number or null")),
    };
    let server_time = match obj.get("serverTime") {
        Some(v @ Value::Number(_)) => number_to_u64(v).unwrap_or(0),
        _ => return Err(bad(T, "serverTime must be a number")),
    };
    let max_message_size = match obj.get("maxMessageSize") {
        Some(v @ Value::Number(_)) => match number_to_u64(v) {
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => return Err(bad(T, "maxMessageSize must be > 0")),
        },
        _ => return Err(bad(T, "maxMessageSize must be a number")),
    };
    let metadata = match obj.remove("metadata") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    };
    Ok(ServerFrameIn::Welcome {
        peer_id,
        server_time,
        expires_at,
        max_message_size,
        metadata,
    })
}

/// A non-negative JSON number as u64 (fractions truncated, huge values saturate). `None` for
/// negatives. Booleans never reach here: serde_json keeps them apart from numbers.
fn number_to_u64(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    if f.is_finite() && f >= 0.0 {
        // `as` saturates for floats above u64::MAX, which is what we want.
        Some(f as u64)
    } else {
        None
    }
}

fn retry_after(v: Option<&Value>) -> u64 {
    match v.and_then(number_to_u64) {
        Some(n) if n > 0 => n.min(MAX_RETRY_AFTER_MS),
        _ => DEFAULT_RETRY_AFTER_MS,
    }
}

fn required_string(
    obj: &mut Map<String, Value>,
    key: &'static str,
    t: &'static str,
) -> Result<String, ServerFrameError> {
    match obj.remove(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(t, "a required field is not a string")),
        None => Err(bad(t, "a required field is missing")),
    }
}

/// Optional string: absent or `null` → `None`; any other non-string refuses the frame.
fn optional_string(
    obj: &mut Map<String, Value>,
    key: &'static str,
    t: &'static str,
) -> Result<Option<String>, ServerFrameError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(t, "an optional field is not a string")),
    }
}

/// Optional object: absent or `null` → `None`; any other non-object refuses the frame.
fn optional_object(
    obj: &mut Map<String, Value>,
    key: &'static str,
    t: &'static str,
) -> Result<Option<Value>, ServerFrameError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(bad(t, "an optional field is not an object")),
    }
}

/// `joined` / `left`: required arrays of `{peerId, metadata?}`. One bad entry refuses the whole
/// frame (Python), so a consumer never sees half a snapshot.
fn presence_list(
    obj: &mut Map<String, Value>,
    key: &'static str,
) -> Result<Vec<PresenceEntry>, ServerFrameError> {
    const T: &str = "presence";
    let Some(Value::Array(items)) = obj.remove(key) else {
        return Err(bad(T, "joined and left must both be arrays"));
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Object(mut entry) = item else {
                return Err(bad(T, "an entry is not an object"));
            };
            Ok(PresenceEntry {
                peer_id: required_string(&mut entry, "peerId", T)?,
                metadata: optional_object(&mut entry, "metadata", T)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ok(text: &str) -> ServerFrameIn {
        match parse_server_frame(text) {
            Ok(f) => f,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn accepts_every_server_frame() {
        let table: Vec<(&str, ServerFrameIn)> = vec![
            (
                r#"{"type":"welcome","peerId":"alice","expiresAt":1715539200,"serverTime":1715535600,"maxMessageSize":65536,"metadata":{"iceServers":[]}}"#,
                ServerFrameIn::Welcome {
                    peer_id: "alice".into(),
                    server_time: 1715535600,
                    expires_at: Some(1715539200),
                    max_message_size: 65536,
                    metadata: Some(json!({"iceServers":[]})),
                },
            ),
            (
                r#"{"type":"welcome","peerId":"p","expiresAt":null,"serverTime":1.9,"maxMessageSize":10.5,"metadata":null}"#,
                ServerFrameIn::Welcome {
                    peer_id: "p".into(),
                    server_time: 1,
                    expires_at: None,
                    max_message_size: 10,
                    metadata: None,
                },
            ),
            (
                r#"{"type":"welcome","peerId":"p","expiresAt":null,"serverTime":-5,"maxMessageSize":1,"metadata":[1]}"#,
                ServerFrameIn::Welcome {
                    peer_id: "p".into(),
                    server_time: 0,
                    expires_at: None,
                    max_message_size: 1,
                    metadata: Some(json!([1])),
                },
            ),
            (
                r#"{"type":"ack","requestId":"r1","extra":true}"#,
                ServerFrameIn::Ack {
                    request_id: "r1".into(),
                },
            ),
            (
                r#"{"type":"error","code":"some_future_code"}"#,
                ServerFrameIn::Error {
                    code: "some_future_code".into(),
                    request_id: None,
                    message: None,
                },
            ),
            (
                r#"{"type":"error","code":"peer_not_found","requestId":"r","message":"m"}"#,
                ServerFrameIn::Error {
                    code: "peer_not_found".into(),
                    request_id: Some("r".into()),
                    message: Some("m".into()),
                },
            ),
            (
                r#"{"type":"message","channel":"c","from":"a","data":null}"#,
                ServerFrameIn::Message {
                    channel: "c".into(),
                    from: "a".into(),
                    data: Value::Null,
                    from_metadata: None,
                },
            ),
            (
                r#"{"type":"message","channel":"c","from":"a","data":{"k":[1]},"fromMetadata":{"u":"A"}}"#,
                ServerFrameIn::Message {
                    channel: "c".into(),
                    from: "a".into(),
                    data: json!({"k":[1]}),
                    from_metadata: Some(json!({"u":"A"})),
                },
            ),
            (
                r#"{"type":"direct","from":"a","data":"hi","fromMetadata":null}"#,
                ServerFrameIn::Direct {
                    from: "a".into(),
                    data: json!("hi"),
                    from_metadata: None,
                },
            ),
            (
                r#"{"type":"presence","channel":"c","joined":[{"peerId":"b","metadata":{"u":"B"}},{"peerId":"c"}],"left":[]}"#,
                ServerFrameIn::Presence {
                    channel: "c".into(),
                    joined: vec![
                        PresenceEntry {
                            peer_id: "b".into(),
                            metadata: Some(json!({"u":"B"})),
                        },
                        PresenceEntry {
                            peer_id: "c".into(),
                            metadata: None,
                        },
                    ],
                    left: vec![],
                },
            ),
            (
                r#"{"type":"going_away","retryAfterMs":2500}"#,
                ServerFrameIn::GoingAway {
                    retry_after_ms: 2500,
                },
            ),
            (
                r#"{"type":"pong"}"#,
                ServerFrameIn::Pong { request_id: None },
            ),
            (
                r#"{"type":"pong","requestId":"p"}"#,
                ServerFrameIn::Pong {
                    request_id: Some("p".into()),
                },
            ),
        ];
        for (text, want) in table {
            assert_eq!(ok(text), want, "{text}");
        }
    }

    #[test]
    fn going_away_clamps_and_defaults() {
        let table: &[(&str, u64)] = &[
            (r#"{"type":"going_away"}"#, 1000),
            (r#"{"type":"going_away","retryAfterMs":0}"#, 1000),
            (r#"{"type":"going_away","retryAfterMs":-3}"#, 1000),
            (r#"{"type":"going_away","retryAfterMs":"5"}"#, 1000),
            (r#"{"type":"going_away","retryAfterMs":true}"#, 1000),
            (r#"{"type":"going_away","retryAfterMs":300001}"#, 300_000),
            (r#"{"type":"going_away","retryAfterMs":1e30}"#, 300_000),
            (r#"{"type":"going_away","retryAfterMs":1}"#, 1),
        ];
        for (text, want) in table {
            assert_eq!(
                ok(text),
                ServerFrameIn::GoingAway {
                    retry_after_ms: *want
                },
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_malformed_frames() {
        let table: &[&str] = &[
            "",
            "not json",
            "[1]",
            "{}",
            r#"{"type":7}"#,
            r#"{"type":"nope"}"#,
            // welcome
            r#"{"type":"welcome","peerId":"p","serverTime":1,"maxMessageSize":1}"#,
            r#"{"type":"welcome","peerId":"p","expiresAt":"1","serverTime":1,"maxMessageSize":1}"#,
            r#"{"type":"welcome","peerId":"p","expiresAt":-1,"serverTime":1,"maxMessageSize":1}"#,
            r#"{"type":"welcome","peerId":"p","expiresAt":null,"serverTime":true,"maxMessageSize":1}"#,
            r#"{"type":"welcome","peerId":"p","expiresAt":null,"maxMessageSize":1}"#,
            r#"{"type":"welcome","peerId":"p","expiresAt":null,"serverTime":1,"maxMessageSize":0}"#,
            r#"{"type":"welcome","peerId":"p","expiresAt":null,"serverTime":1,"maxMessageSize":0.5}"#,
            r#"{"type":"welcome","peerId":"p","expiresAt":null,"serverTime":1,"maxMessageSize":true}"#,
            r#"{"type":"welcome","peerId":"p","expiresAt":null,"serverTime":1}"#,
            r#"{"type":"welcome","peerId":5,"expiresAt":null,"serverTime":1,"maxMessageSize":1}"#,
            r#"{"type":"welcome","expiresAt":null,"serverTime":1,"maxMessageSize":1}"#,
            // ack / error
            r#"{"type":"ack"}"#,
            r#"{"type":"ack","requestId":1}"#,
            r#"{"type":"error"}"#,
            r#"{"type":"error","code":""}"#,
            r#"{"type":"error","code":5}"#,
            r#"{"type":"error","code":"x","requestId":5}"#,
            r#"{"type":"error","code":"x","message":{}}"#,
            // message / direct
            r#"{"type":"message","channel":"c","from":"a"}"#,
            r#"{"type":"message","from":"a","data":1}"#,
            r#"{"type":"message","channel":"c","data":1}"#,
            r#"{"type":"message","channel":"c","from":"a","data":1,"fromMetadata":"x"}"#,
            r#"{"type":"direct","from":"a"}"#,
            r#"{"type":"direct","data":1}"#,
            r#"{"type":"direct","from":"a","data":1,"fromMetadata":[1]}"#,
            // presence
            r#"{"type":"presence","channel":"c","joined":[]}"#,
            r#"{"type":"presence","channel":"c","left":[]}"#,
            r#"{"type":"presence","joined":[],"left":[]}"#,
            r#"{"type":"presence","channel":"c","joined":{},"left":[]}"#,
            r#"{"type":"presence","channel":"c","joined":[{"peerId":"a"},"b"],"left":[]}"#,
            r#"{"type":"presence","channel":"c","joined":[],"left":[{"metadata":{}}]}"#,
            r#"{"type":"presence","channel":"c","joined":[{"peerId":"a","metadata":1}],"left":[]}"#,
        ];
        for text in table {
            assert!(parse_server_frame(text).is_err(), "should refuse {text}");
        }
    }

    #[test]
    fn round_trips_what_the_server_emits() {
        use crate::protocol::ServerFrame;
        let meta = json!({"iceServers":[{"urls":"stun:127.0.0.1:3478"}]});
        let w = ServerFrame::Welcome {
            peer_id: "alice",
            expires_at: None,
            server_time: 17,
            max_message_size: 65536,
            metadata: Some(&meta),
        }
        .to_json();
        assert_eq!(
            ok(&w),
            ServerFrameIn::Welcome {
                peer_id: "alice".into(),
                server_time: 17,
                expires_at: None,
                max_message_size: 65536,
                metadata: Some(meta.clone()),
            }
        );
        let joined = [PresenceEntry {
            peer_id: "bob".into(),
            metadata: None,
        }];
        let p = ServerFrame::Presence {
            channel: "c",
            joined: &joined,
            left: &[],
        }
        .to_json();
        assert_eq!(
            ok(&p),
            ServerFrameIn::Presence {
                channel: "c".into(),
                joined: joined.to_vec(),
                left: vec![],
            }
        );
    }

    #[test]
    fn errors_carry_no_content() {
        let e = parse_server_frame(r#"{"type":"ack","requestId":{"secret":"token=abc"}}"#)
            .expect_err("refused");
        assert!(!e.to_string().contains("abc"), "{e}");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_server_frame(&text);
        }

        #[test]
        fn arbitrary_envelopes_never_panic(
            kind in prop_oneof![
                Just("welcome"), Just("ack"), Just("error"), Just("message"), Just("direct"),
                Just("presence"), Just("going_away"), Just("pong"), Just("other")
            ],
            fields in proptest::collection::vec((
                prop_oneof![
                    Just("peerId"), Just("expiresAt"), Just("serverTime"), Just("maxMessageSize"),
                    Just("metadata"), Just("requestId"), Just("code"), Just("message"),
                    Just("channel"), Just("from"), Just("data"), Just("fromMetadata"),
                    Just("joined"), Just("left"), Just("retryAfterMs")
                ],
                prop_oneof![
                    Just(json!(null)), any::<bool>().prop_map(|b| json!(b)),
                    any::<i64>().prop_map(|n| json!(n)), any::<f64>().prop_map(|f| json!(f)),
                    ".{0,20}".prop_map(|s| json!(s)), Just(json!([])),
                    Just(json!([{"peerId":"a"}, {"peerId": 1}])), Just(json!({"iceServers": 1})),
                ],
            ), 0..8),
        ) {
            let mut obj = serde_json::Map::new();
            obj.insert("type".into(), json!(kind));
            for (k, v) in fields {
                obj.insert(k.to_string(), v);
            }
            let text = Value::Object(obj).to_string();
            if let Ok(frame) = parse_server_frame(&text) {
                prop_assert_eq!(frame.type_name(), kind);
            }
        }

        #[test]
        fn well_formed_messages_always_parse(channel in ".{0,40}", from in ".{0,40}", n in any::<i64>()) {
            let text = json!({"type":"message","channel":channel,"from":from,"data":{"n":n}}).to_string();
            let parsed = parse_server_frame(&text);
            prop_assert!(parsed.is_ok());
        }
    }
}
