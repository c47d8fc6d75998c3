//! Why a credential was refused, in one error type shared by key lookup and token
//! verification, with the close code each reason maps to.

use thiserror::Error;

/// Why a credential was refused. The `Display` text is safe to send as a close reason or log:
/// it never contains the token, a key or a secret.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Not a well-formed JWT (segments, base64url, JSON), or longer than [`MAX_TOKEN_LEN`](super::MAX_TOKEN_LEN).
    #[error("malformed token")]
    Malformed,
    /// The header `alg` is not `HS256`.
    #[error("unsupported token algorithm (only HS256 is accepted)")]
    UnsupportedAlgorithm,
    /// The header `kid` names no configured key, or has no `kid` while several keys exist.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify with the named key.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` is at or before the current time.
    #[error("token expired")]
    Expired,
    /// `nbf` lies in the future, or `iat` more than a minute ahead (RFC 7519 §4.1.5: the
    /// token must not be accepted yet).
    #[error("token not yet valid")]
    NotYetValid,
    /// No `exp` claim: tokens without expiry are refused outright.
    #[error("token has no exp claim")]
    MissingExpiry,
    /// `sub` is missing or not 1–128 printable ASCII characters.
    #[error("token sub must be 1-128 printable ASCII characters")]
    InvalidSubject,
    /// Serialised `peerMetadata` exceeds [`MAX_PEER_METADATA_BYTES`](super::MAX_PEER_METADATA_BYTES).
    #[error("peerMetadata exceeds 4096 bytes")]
    PeerMetadataTooLarge,
    /// Serialised `metadata` exceeds [`MAX_METADATA_BYTES`](super::MAX_METADATA_BYTES).
    #[error("metadata exceeds 8192 bytes")]
    MetadataTooLarge,
    /// The named claim has the wrong type or an invalid value.
    #[error("invalid token claim `{0}`")]
    InvalidClaim(&'static str),
    /// The `?key=` value is not a configured publishable key.
    #[error("unknown publishable key")]
    UnknownPublishableKey,
    /// The `Origin` header is not in the publishable key's `allowedOrigins`.
    #[error("origin not allowed for this key")]
    OriginNotAllowed,
    /// [`mint`](super::mint) only: the signed token would exceed [`MAX_TOKEN_LEN`](super::MAX_TOKEN_LEN), so verification would
    /// refuse it. Returned instead of handing out a token that can never be used.
    #[error("token would exceed 65536 bytes")]
    TokenTooLarge,
}

impl AuthError {
    /// The WebSocket close code for a failed connect: 4002 lets the client fetch a fresh
    /// token and retry; everything else is 4001, which SDKs treat as terminal.
    pub fn close_code(&self) -> u16 {
        match self {
            AuthError::Expired => 4002,
            _ => 4001,
        }
    }
}
