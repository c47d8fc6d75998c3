//! Field validation shared by the server, the auth layer and the client.
//!
//! The limits are the ones Metered documents. Where the documentation says *bytes* and the SDKs
//! say *characters* we count bytes: a value that passes here passes both readings.

use thiserror::Error;

/// Longest channel name, in bytes of UTF-8.
pub const MAX_CHANNEL_LEN: usize = 256;
/// Longest peer id, in bytes (peer ids are printable ASCII, so bytes = characters).
pub const MAX_PEER_ID_LEN: usize = 128;
/// Longest request id, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// Deepest nesting of arrays and objects allowed in a message's `data`. Clients parse what the
/// server forwards with ordinary JSON parsers, several of which stop at 128 levels (serde_json)
/// or overflow their stack far below what one 64 KiB frame can hold; the server must not relay
/// a frame that makes the receivers fail.
pub const MAX_DATA_DEPTH: usize = 64;
/// Channel prefixes reserved for the service, matched case-insensitively.
pub const RESERVED_PREFIXES: [&str; 3] = ["_metered/", "_internal/", "_system/"];

/// Why a field was refused. Each variant maps onto one wire error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FieldError {
    #[error("channel must be 1-256 bytes without control characters")]
    InvalidChannel,
    #[error("channel uses a reserved prefix")]
    ReservedChannel,
    #[error("peer id must be 1-128 printable ASCII characters")]
    InvalidPeerId,
    #[error("requestId must be a non-empty string of at most 128 bytes")]
    InvalidRequestId,
}

/// C0 controls, DEL and C1 controls: refused anywhere in a channel name.
pub fn is_control(c: char) -> bool {
    matches!(c as u32, 0x00..=0x1F | 0x7F..=0x9F)
}

/// A channel name as a subscriber or publisher may use it (reserved prefixes are checked apart,
/// by [`check_not_reserved`], because they map onto a different error code).
pub fn check_channel(channel: &str) -> Result<(), FieldError> {
    if channel.is_empty() || channel.len() > MAX_CHANNEL_LEN || channel.chars().any(is_control) {
        return Err(FieldError::InvalidChannel);
    }
    Ok(())
}

/// `_metered/`, `_internal/` and `_system/` (any case) belong to the service.
pub fn check_not_reserved(channel: &str) -> Result<(), FieldError> {
    let lowered_prefix: String = channel
        .chars()
        .take(10)
        .flat_map(char::to_lowercase)
        .collect();
    if RESERVED_PREFIXES
        .iter()
        .any(|p| lowered_prefix.starts_with(p))
    {
        return Err(FieldError::ReservedChannel);
    }
    Ok(())
}

/// Peer ids (JWT `sub`, `send.to`, REST paths): 1–128 printable ASCII characters (0x20–0x7E).
pub fn check_peer_id(peer_id: &str) -> Result<(), FieldError> {
    if peer_id.is_empty()
        || peer_id.len() > MAX_PEER_ID_LEN
        || !peer_id.bytes().all(|b| (0x20..=0x7E).contains(&b))
    {
        return Err(FieldError::InvalidPeerId);
    }
    Ok(())
}

/// Whether already-valid JSON text nests arrays/objects deeper than `max` (strings are skipped,
/// escapes included). Linear, no recursion.
pub fn json_deeper_than(json: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in json.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Request ids: 1–128 bytes, no control characters.
pub fn check_request_id(request_id: &str) -> Result<(), FieldError> {
    if request_id.is_empty()
        || request_id.len() > MAX_REQUEST_ID_LEN
        || request_id.chars().any(is_control)
    {
        return Err(FieldError::InvalidRequestId);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_rules() {
        let table: &[(&str, Result<(), FieldError>)] = &[
            ("room-1", Ok(())),
            ("app_abc/room-1", Ok(())),
            ("ünïcödé/ok", Ok(())),
            ("", Err(FieldError::InvalidChannel)),
            ("a\u{0}b", Err(FieldError::InvalidChannel)),
            ("tab\there", Err(FieldError::InvalidChannel)),
            ("del\u{7f}", Err(FieldError::InvalidChannel)),
            ("c1\u{85}", Err(FieldError::InvalidChannel)),
        ];
        for (input, want) in table {
            assert_eq!(check_channel(input), *want, "{input:?}");
        }
        assert_eq!(check_channel(&"x".repeat(256)), Ok(()));
        assert_eq!(
            check_channel(&"x".repeat(257)),
            Err(FieldError::InvalidChannel)
        );
        // 128 two-byte characters = 256 bytes is fine; one more is not.
        assert_eq!(check_channel(&"é".repeat(128)), Ok(()));
        assert_eq!(
            check_channel(&"é".repeat(129)),
            Err(FieldError::InvalidChannel)
        );
    }

    #[test]
    fn reserved_prefixes_any_case() {
        for ch in ["_metered/x", "_INTERNAL/y", "_System/z", "_metered/"] {
            assert_eq!(
                check_not_reserved(ch),
                Err(FieldError::ReservedChannel),
                "{ch}"
            );
        }
        for ch in ["metered/x", "_meteredx", "room/_metered/", "_sys/x"] {
            assert_eq!(check_not_reserved(ch), Ok(()), "{ch}");
        }
    }

    #[test]
    fn peer_id_rules() {
        assert_eq!(check_peer_id("alice"), Ok(()));
        assert_eq!(check_peer_id("u_alice 123!~"), Ok(()));
        assert_eq!(check_peer_id(&"a".repeat(128)), Ok(()));
        assert_eq!(
            check_peer_id(&"a".repeat(129)),
            Err(FieldError::InvalidPeerId)
        );
        assert_eq!(check_peer_id(""), Err(FieldError::InvalidPeerId));
        assert_eq!(check_peer_id("bob\n"), Err(FieldError::InvalidPeerId));
        assert_eq!(check_peer_id("zoë"), Err(FieldError::InvalidPeerId));
    }

    #[test]
    fn request_id_rules() {
        assert_eq!(
            check_request_id("7c9e6679-7425-40de-944b-e07fc1f90ae7"),
            Ok(())
        );
        assert_eq!(check_request_id(""), Err(FieldError::InvalidRequestId));
        assert_eq!(
            check_request_id(&"r".repeat(129)),
            Err(FieldError::InvalidRequestId)
        );
        assert_eq!(
            check_request_id("a\u{1}"),
            Err(FieldError::InvalidRequestId)
        );
    }
}
