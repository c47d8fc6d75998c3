//! Typed frames in both directions, a strict parser for client frames and compact serialisers for
//! server frames.
//!
//! Client frames are parsed once into [`ClientFrame`]; `data` is kept as raw JSON text
//! ([`RawValue`]) because the server never looks inside it and fan-out must not re-serialise it
//! per recipient. Server frames are built as compact JSON strings ready for the socket.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::codes::ErrorCode;
use super::validate::{MAX_DATA_DEPTH, check_request_id, json_deeper_than};

/// A frame a client sent, after structural checks. Field *contents* (channel rules, peer id
/// rules, permissions) are checked by the hub, in the documented precedence order.
#[derive(Debug, Clone)]
pub enum ClientFrame {
    Subscribe {
        channel: String,
        request_id: Option<String>,
        include_sender_metadata: bool,
    },
    Unsubscribe {
        channel: String,
        request_id: Option<String>,
    },
    Publish {
        channel: String,
        /// `None` when the key was absent (→ `missing_data`); JSON `null` is `Some("null")`.
        data: Option<Box<RawValue>>,
        request_id: Option<String>,
    },
    Send {
        to: String,
        data: Option<Box<RawValue>>,
        request_id: Option<String>,
    },
    Ping {
        request_id: Option<String>,
    },
}

impl ClientFrame {
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ClientFrame::Subscribe { request_id, .. }
            | ClientFrame::Unsubscribe { request_id, .. }
            | ClientFrame::Publish { request_id, .. }
            | ClientFrame::Send { request_id, .. }
            | ClientFrame::Ping { request_id } => request_id.as_deref(),
        }
    }

    /// The wire `type`, for metrics and logs.
    pub fn kind(&self) -> FrameKind {
        match self {
            ClientFrame::Subscribe { .. } => FrameKind::Subscribe,
            ClientFrame::Unsubscribe { .. } => FrameKind::Unsubscribe,
            ClientFrame::Publish { .. } => FrameKind::Publish,
            ClientFrame::Send { .. } => FrameKind::Send,
            ClientFrame::Ping { .. } => FrameKind::Ping,
        }
    }
}

/// Every frame type on the wire, both directions (metrics label values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKind {
    Subscribe,
    Unsubscribe,
    Publish,
    Send,
    Ping,
    Welcome,
    Ack,
    Error,
    Message,
    Direct,
    Presence,
    GoingAway,
    Pong,
    /// Inbound frames that failed to parse.
    Invalid,
}

impl FrameKind {
    pub const INBOUND: [FrameKind; 6] = [
        FrameKind::Subscribe,
        FrameKind::Unsubscribe,
        FrameKind::Publish,
        FrameKind::Send,
        FrameKind::Ping,
        FrameKind::Invalid,
    ];
    pub const OUTBOUND: [FrameKind; 8] = [
        FrameKind::Welcome,
        FrameKind::Ack,
        FrameKind::Error,
        FrameKind::Message,
        FrameKind::Direct,
        FrameKind::Presence,
        FrameKind::GoingAway,
        FrameKind::Pong,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Subscribe => "subscribe",
            FrameKind::Unsubscribe => "unsubscribe",
            FrameKind::Publish => "publish",
            FrameKind::Send => "send",
            FrameKind::Ping => "ping",
            FrameKind::Welcome => "welcome",
            FrameKind::Ack => "ack",
            FrameKind::Error => "error",
            FrameKind::Message => "message",
            FrameKind::Direct => "direct",
            FrameKind::Presence => "presence",
            FrameKind::GoingAway => "going_away",
            FrameKind::Pong => "pong",
            FrameKind::Invalid => "invalid",
        }
    }
}

/// Why a client frame was refused before it reached the hub's logic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FrameError {
    pub code: ErrorCode,
    /// Echoed when the frame carried a valid `requestId`, so the client's request fails promptly.
    pub request_id: Option<String>,
    pub message: &'static str,
}

impl FrameError {
    /// Stands in for a frame too big to be worth parsing (the hub closes with 1009 before it
    /// would look at this).
    pub fn oversize() -> Self {
        FrameError::new(ErrorCode::MalformedMessage, None, "frame too big")
    }

    fn new(code: ErrorCode, request_id: Option<String>, message: &'static str) -> Self {
        FrameError {
            code,
            request_id,
            message,
        }
    }
}

/// The loose shape every client frame is read into first. Unknown fields are ignored so that
/// newer clients keep working; duplicate fields are refused by serde (→ malformed).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "requestId")]
    request_id: Option<Value>,
    channel: Option<Value>,
    to: Option<Value>,
    #[serde(default, deserialize_with = "present_raw")]
    data: Option<Box<RawValue>>,
    #[serde(rename = "includeSenderMetadata")]
    include_sender_metadata: Option<Value>,
}

/// Keeps `"data": null` distinct from a missing `data` key.
fn present_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Parses one inbound text frame. Precedence: malformed JSON / missing `type` / bad `requestId`
/// → `malformed_message`; unknown `type` → `unknown_type`; a non-string `channel` →
/// `invalid_channel`; a non-string `to` → `invalid_peer_id`.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|_| {
        FrameError::new(
            ErrorCode::MalformedMessage,
            None,
            "frame is not a JSON object with a string type",
        )
    })?;
    let Some(kind) = env.kind else {
        return Err(FrameError::new(
            ErrorCode::MalformedMessage,
            None,
            "missing type",
        ));
    };
    let request_id = match env.request_id {
        None => None,
        Some(Value::String(s)) if check_request_id(&s).is_ok() => Some(s),
        Some(_) => {
            return Err(FrameError::new(
                ErrorCode::MalformedMessage,
                None,
                "requestId must be a non-empty string of at most 128 bytes",
            ));
        }
    };
    let include_sender_metadata = match env.include_sender_metadata {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(FrameError::new(
                ErrorCode::MalformedMessage,
                request_id,
                "includeSenderMetadata must be a boolean",
            ));
        }
    };
    let channel = |rid: Option<String>, ch: Option<Value>| match ch {
        Some(Value::String(s)) => Ok((s, rid)),
        _ => Err(FrameError::new(
            ErrorCode::InvalidChannel,
            rid,
            "channel must be a string",
        )),
    };
    if env
        .data
        .as_ref()
        .is_some_and(|d| json_deeper_than(d.get(), MAX_DATA_DEPTH))
    {
        return Err(FrameError::new(
            ErrorCode::MalformedMessage,
            request_id,
            "data is nested deeper than 64 levels",
        ));
    }
    match kind.as_ref() {
        "subscribe" => {
            let (channel, request_id) = channel(request_id, env.channel)?;
            Ok(ClientFrame::Subscribe {
                channel,
                request_id,
                include_sender_metadata,
            })
        }
        "unsubscribe" => {
            let (channel, request_id) = channel(request_id, env.channel)?;
            Ok(ClientFrame::Unsubscribe {
                channel,
                request_id,
            })
        }
        "publish" => {
            let (channel, request_id) = channel(request_id, env.channel)?;
            Ok(ClientFrame::Publish {
                channel,
                data: env.data,
                request_id,
            })
        }
        "send" => match env.to {
            Some(Value::String(to)) => Ok(ClientFrame::Send {
                to,
                data: env.data,
                request_id,
            }),
            _ => Err(FrameError::new(
                ErrorCode::InvalidPeerId,
                request_id,
                "to must be a peer id string",
            )),
        },
        "ping" => Ok(ClientFrame::Ping { request_id }),
        _ => Err(FrameError::new(
            ErrorCode::UnknownType,
            request_id,
            "unknown frame type",
        )),
    }
}

/// One entry of a presence diff or snapshot: `{peerId, metadata?}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PresenceEntry {
    #[serde(rename = "peerId")]
    pub peer_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// Server → client frames. Serialised with [`ServerFrame::to_json`].
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome {
        #[serde(rename = "peerId")]
        peer_id: &'a str,
        /// Always present: `null` for publishable keys (the JS SDK rejects a welcome without it).
        #[serde(rename = "expiresAt")]
        expires_at: Option<u64>,
        #[serde(rename = "serverTime")]
        server_time: u64,
        #[serde(rename = "maxMessageSize")]
        max_message_size: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<&'a Value>,
    },
    Ack {
        #[serde(rename = "requestId")]
        request_id: &'a str,
    },
    Error {
        #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a str>,
        code: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<&'a str>,
    },
    Message {
        channel: &'a str,
        from: &'a str,
        data: &'a RawValue,
        #[serde(rename = "fromMetadata", skip_serializing_if = "Option::is_none")]
        from_metadata: Option<&'a Value>,
    },
    Direct {
        from: &'a str,
        data: &'a RawValue,
        #[serde(rename = "fromMetadata", skip_serializing_if = "Option::is_none")]
        from_metadata: Option<&'a Value>,
    },
    Presence {
        channel: &'a str,
        joined: &'a [PresenceEntry],
        left: &'a [PresenceEntry],
    },
    GoingAway {
        #[serde(rename = "retryAfterMs")]
        retry_after_ms: u64,
    },
    Pong {
        #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a str>,
    },
}

impl ServerFrame<'_> {
    /// Compact JSON. Serialising these types cannot fail (string keys, no floats from user
    /// input other than inside already-valid raw JSON), but a failure still yields a valid frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal_error","message":"serialisation failed"}"#
                .to_string()
        })
    }

    pub fn kind(&self) -> FrameKind {
        match self {
            ServerFrame::Welcome { .. } => FrameKind::Welcome,
            ServerFrame::Ack { .. } => FrameKind::Ack,
            ServerFrame::Error { .. } => FrameKind::Error,
            ServerFrame::Message { .. } => FrameKind::Message,
            ServerFrame::Direct { .. } => FrameKind::Direct,
            ServerFrame::Presence { .. } => FrameKind::Presence,
            ServerFrame::GoingAway { .. } => FrameKind::GoingAway,
            ServerFrame::Pong { .. } => FrameKind::Pong,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn err(text: &str) -> FrameError {
        parse_client_frame(text).expect_err("frame should be refused")
    }

    #[test]
    fn parses_every_client_frame() {
        match parse_client_frame(
            r#"{"type":"subscribe","channel":"room-1","requestId":"r1","includeSenderMetadata":true}"#,
        ) {
            Ok(ClientFrame::Subscribe {
                channel,
                request_id,
                include_sender_metadata,
            }) => {
                assert_eq!(channel, "room-1");
                assert_eq!(request_id.as_deref(), Some("r1"));
                assert!(include_sender_metadata);
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse_client_frame(r#"{"type":"unsubscribe","channel":"c"}"#) {
            Ok(ClientFrame::Unsubscribe {
                channel,
                request_id,
            }) => {
                assert_eq!(channel, "c");
                assert_eq!(request_id, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse_client_frame(r#"{"type":"publish","channel":"c","data":{"a":[1,2]}}"#) {
            Ok(ClientFrame::Publish { data: Some(d), .. }) => assert_eq!(d.get(), r#"{"a":[1,2]}"#),
            other => panic!("unexpected {other:?}"),
        }
        match parse_client_frame(r#"{"type":"publish","channel":"c","data":null}"#) {
            Ok(ClientFrame::Publish { data: Some(d), .. }) => assert_eq!(d.get(), "null"),
            other => panic!("unexpected {other:?}"),
        }
        match parse_client_frame(r#"{"type":"publish","channel":"c"}"#) {
            Ok(ClientFrame::Publish { data: None, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        match parse_client_frame(r#"{"type":"send","to":"bob","data":"hi","requestId":"x"}"#) {
            Ok(ClientFrame::Send {
                to,
                data: Some(d),
                request_id,
            }) => {
                assert_eq!(to, "bob");
                assert_eq!(d.get(), r#""hi""#);
                assert_eq!(request_id.as_deref(), Some("x"));
            }
            other => panic!("unexpected {other:?}"),
        }
        match parse_client_frame(r#"{"type":"ping","requestId":"p","extra":1}"#) {
            Ok(ClientFrame::Ping { request_id }) => assert_eq!(request_id.as_deref(), Some("p")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn refuses_with_the_documented_codes() {
        let table: &[(&str, ErrorCode, Option<&str>)] = &[
            ("not json", ErrorCode::MalformedMessage, None),
            ("[1,2]", ErrorCode::MalformedMessage, None),
            ("{}", ErrorCode::MalformedMessage, None),
            (r#"{"type":5}"#, ErrorCode::MalformedMessage, None),
            (
                r#"{"type":"ping","requestId":""}"#,
                ErrorCode::MalformedMessage,
                None,
            ),
            (
                r#"{"type":"ping","requestId":7}"#,
                ErrorCode::MalformedMessage,
                None,
            ),
            (
                r#"{"type":"ping","type":"ping"}"#,
                ErrorCode::MalformedMessage,
                None,
            ),
            (
                r#"{"type":"fly","requestId":"r"}"#,
                ErrorCode::UnknownType,
                Some("r"),
            ),
            (
                r#"{"type":"subscribe","requestId":"r"}"#,
                ErrorCode::InvalidChannel,
                Some("r"),
            ),
            (
                r#"{"type":"publish","channel":3}"#,
                ErrorCode::InvalidChannel,
                None,
            ),
            (
                r#"{"type":"send","to":null,"requestId":"q"}"#,
                ErrorCode::InvalidPeerId,
                Some("q"),
            ),
            (
                r#"{"type":"subscribe","channel":"c","includeSenderMetadata":"yes"}"#,
                ErrorCode::MalformedMessage,
                None,
            ),
        ];
        for (text, code, rid) in table {
            let e = err(text);
            assert_eq!(e.code, *code, "{text}");
            assert_eq!(e.request_id.as_deref(), *rid, "{text}");
        }
        let long_rid = format!(r#"{{"type":"ping","requestId":"{}"}}"#, "r".repeat(129));
        assert_eq!(err(&long_rid).code, ErrorCode::MalformedMessage);
    }

    #[test]
    fn server_frames_serialise_compactly_with_exact_field_names() {
        let meta = json!({"iceServers":[]});
        let w = ServerFrame::Welcome {
            peer_id: "alice",
            expires_at: None,
            server_time: 1700000000,
            max_message_size: 65536,
            metadata: None,
        };
        assert_eq!(
            w.to_json(),
            r#"{"type":"welcome","peerId":"alice","expiresAt":null,"serverTime":1700000000,"maxMessageSize":65536}"#
        );
        let w = ServerFrame::Welcome {
            peer_id: "a",
            expires_at: Some(5),
            server_time: 1,
            max_message_size: 2,
            metadata: Some(&meta),
        };
        assert_eq!(
            w.to_json(),
            r#"{"type":"welcome","peerId":"a","expiresAt":5,"serverTime":1,"maxMessageSize":2,"metadata":{"iceServers":[]}}"#
        );
        assert_eq!(
            ServerFrame::Ack { request_id: "r" }.to_json(),
            r#"{"type":"ack","requestId":"r"}"#
        );
        assert_eq!(
            ServerFrame::Error {
                request_id: None,
                code: ErrorCode::UnknownType.as_str(),
                message: Some("x")
            }
            .to_json(),
            r#"{"type":"error","code":"unknown_type","message":"x"}"#
        );
        let data = RawValue::from_string(r#"{"k":1}"#.into()).expect("valid raw json");
        let fm = json!({"username":"Alice"});
        assert_eq!(
            ServerFrame::Message {
                channel: "c",
                from: "alice",
                data: &data,
                from_metadata: Some(&fm)
            }
            .to_json(),
            r#"{"type":"message","channel":"c","from":"alice","data":{"k":1},"fromMetadata":{"username":"Alice"}}"#
        );
        assert_eq!(
            ServerFrame::Direct {
                from: "a",
                data: &data,
                from_metadata: None
            }
            .to_json(),
            r#"{"type":"direct","from":"a","data":{"k":1}}"#
        );
        let joined = [PresenceEntry {
            peer_id: "bob".into(),
            metadata: Some(fm.clone()),
        }];
        assert_eq!(
            ServerFrame::Presence {
                channel: "c",
                joined: &joined,
                left: &[]
            }
            .to_json(),
            r#"{"type":"presence","channel":"c","joined":[{"peerId":"bob","metadata":{"username":"Alice"}}],"left":[]}"#
        );
        assert_eq!(
            ServerFrame::GoingAway {
                retry_after_ms: 1500
            }
            .to_json(),
            r#"{"type":"going_away","retryAfterMs":1500}"#
        );
        assert_eq!(
            ServerFrame::Pong { request_id: None }.to_json(),
            r#"{"type":"pong"}"#
        );
        assert_eq!(
            ServerFrame::Pong {
                request_id: Some("p")
            }
            .to_json(),
            r#"{"type":"pong","requestId":"p"}"#
        );
    }

    #[test]
    fn data_nested_too_deep_is_refused_and_strings_do_not_count() {
        let nested = |n: usize| {
            format!(
                r#"{{"type":"publish","channel":"c","requestId":"r","data":{}{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert!(parse_client_frame(&nested(64)).is_ok());
        let e = parse_client_frame(&nested(65)).expect_err("too deep");
        assert_eq!(e.code, ErrorCode::MalformedMessage);
        assert_eq!(e.request_id.as_deref(), Some("r"));
        let in_string = format!(
            r#"{{"type":"send","to":"b","data":"{}\"{}"}}"#,
            "[".repeat(500),
            "{".repeat(500)
        );
        assert!(
            parse_client_frame(&in_string).is_ok(),
            "brackets inside strings"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_client_frame(&text);
        }

        #[test]
        fn arbitrary_json_envelopes_never_panic(
            kind in prop_oneof![
                Just("subscribe".to_string()), Just("unsubscribe".to_string()), Just("publish".to_string()),
                Just("send".to_string()), Just("ping".to_string()), ".{0,12}"
            ],
            field in prop_oneof![
                Just("channel".to_string()), Just("to".to_string()), Just("data".to_string()),
                Just("requestId".to_string()), Just("includeSenderMetadata".to_string()), ".{0,8}"
            ],
            value in prop_oneof![
                Just(json!(null)), any::<bool>().prop_map(|b| json!(b)), any::<i64>().prop_map(|n| json!(n)),
                ".{0,300}".prop_map(|s| json!(s)), Just(json!([1, {"a": null}])), Just(json!({"nested": {"x": 1}}))
            ],
        ) {
            let mut obj = serde_json::Map::new();
            obj.insert(field.clone(), value);
            obj.insert("type".to_string(), json!(kind));
            let text = serde_json::Value::Object(obj).to_string();
            if let Ok(frame) = parse_client_frame(&text) {
                // Whatever parses must keep its type and any requestId it carried.
                prop_assert_eq!(frame.kind().as_str(), kind.as_str());
            }
        }
    }
}
