//! meshcall's own data messages, carried server-routed as directs between participants (the
//! wire forms are listed in the engine's module documentation and the README):
//! a participant's microphone/camera status, a chat line, and the goodbye sent before leaving on
//! purpose. Anything whose `type` does not start with `meshcall-` belongs to other applications
//! and is left alone.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The prefix every meshcall message type carries.
const PREFIX: &str = "meshcall-";

/// One of meshcall's own messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub(super) enum AppMessage {
    /// The sender's microphone and camera state: on change and to each newcomer.
    #[serde(rename = "meshcall-status")]
    Status {
        /// A missing or non-boolean value reads as `false`, as older senders may omit it.
        #[serde(default, deserialize_with = "lenient_bool")]
        mic_muted: bool,
        #[serde(default, deserialize_with = "lenient_bool")]
        camera_off: bool,
    },
    /// A chat line (the receiver shortens it to `MAX_CHAT_CHARS`).
    #[serde(rename = "meshcall-chat")]
    Chat { text: String },
    /// The sender is leaving on purpose (so its `left` is not a network drop).
    #[serde(rename = "meshcall-bye")]
    Bye,
}

/// What a received data message is, as far as meshcall is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Received {
    /// One of ours, well formed.
    Ours(AppMessage),
    /// Its type claims to be ours but the rest does not parse (or the type is unknown): ignored.
    Malformed,
    /// Another application's data.
    Foreign,
}

impl AppMessage {
    /// The message as it goes on the wire.
    pub(super) fn to_value(&self) -> Value {
        // Serialising this enum cannot fail (strings and booleans only).
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Reads a received data message.
    pub(super) fn read(data: &Value) -> Received {
        let ours = data
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with(PREFIX));
        if !ours {
            return Received::Foreign;
        }
        match AppMessage::deserialize(data) {
            Ok(m) => Received::Ours(m),
            Err(_) => Received::Malformed,
        }
    }
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Value::deserialize(d)?.as_bool().unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_keep_their_wire_form() {
        assert_eq!(
            AppMessage::Status {
                mic_muted: true,
                camera_off: false
            }
            .to_value(),
            json!({"type":"meshcall-status","mic_muted":true,"camera_off":false})
        );
        assert_eq!(
            AppMessage::Chat { text: "hi".into() }.to_value(),
            json!({"type":"meshcall-chat","text":"hi"})
        );
        assert_eq!(AppMessage::Bye.to_value(), json!({"type":"meshcall-bye"}));
    }

    #[test]
    fn received_messages_are_sorted_into_ours_malformed_and_foreign() {
        let table = [
            (
                json!({"type":"meshcall-status","mic_muted":true}),
                Received::Ours(AppMessage::Status {
                    mic_muted: true,
                    camera_off: false,
                }),
            ),
            (
                json!({"type":"meshcall-status","mic_muted":"yes","camera_off":1}),
                Received::Ours(AppMessage::Status {
                    mic_muted: false,
                    camera_off: false,
                }),
            ),
            (
                json!({"type":"meshcall-chat","text":"hello"}),
                Received::Ours(AppMessage::Chat {
                    text: "hello".into(),
                }),
            ),
            (
                json!({"type":"meshcall-chat","text":5}),
                Received::Malformed,
            ),
            (json!({"type":"meshcall-chat"}), Received::Malformed),
            (
                json!({"type":"meshcall-bye","extra":1}),
                Received::Ours(AppMessage::Bye),
            ),
            (json!({"type":"meshcall-dance"}), Received::Malformed),
            (json!({"type":"game-move","x":1}), Received::Foreign),
            (json!({"seq":3}), Received::Foreign),
            (json!("meshcall-bye"), Received::Foreign),
        ];
        for (data, want) in table {
            assert_eq!(AppMessage::read(&data), want, "{data}");
        }
    }
}
