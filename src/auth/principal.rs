//! The authenticated identity and scope of one connection, as every credential kind yields it.

use std::fmt;

use super::actions::{Action, Actions};
use super::glob::PatternSet;

/// How a connection authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrincipalKind {
    /// A JWT signed by a secret key (`?token=`).
    Token,
    /// A publishable key (`?key=`).
    PublishableKey,
}

/// The authenticated identity and scope of one connection: everything the server needs to
/// authorise frames and build `welcome`, with the credential itself already discarded.
#[derive(Clone)]
pub struct Principal {
    /// JWT `sub`, or a fresh hyphenated UUID v4 for publishable keys.
    pub peer_id: String,
    /// Which credential kind was used.
    pub kind: PrincipalKind,
    /// The signing key's `kid` for tokens; the publishable key's redacted prefix otherwise (for
    /// logs only — it is not unique).
    pub key_id: String,
    /// The signing key's or publishable key's `channelPatterns`.
    pub key_patterns: PatternSet,
    /// The JWT `channels` claim; `None` when absent (the key's patterns alone then apply).
    pub token_channels: Option<PatternSet>,
    /// Effective actions: (claim `permissions`, or the key's actions if absent) ∩ key actions.
    pub permissions: Actions,
    /// `peerMetadata`, always a JSON object when present; shown to other peers.
    pub peer_metadata: Option<serde_json::Value>,
    /// `metadata`, always a JSON object when present; private, echoed once in `welcome`.
    pub metadata: Option<serde_json::Value>,
    /// Token `exp` in unix seconds; `None` for publishable keys.
    pub expires_at: Option<u64>,
    /// The key's application: everything this connection reaches is within it.
    pub app: String,
}

impl Principal {
    /// Whether the connection may perform `a`.
    pub fn can(&self, a: Action) -> bool {
        self.permissions.contains(a)
    }

    /// Whether `ch` is within both the key's patterns and, when the token names channels,
    /// the token's `channels`: the effective scope is the intersection of both.
    pub fn may_use_channel(&self, ch: &str) -> bool {
        self.key_patterns.matches(ch)
            && self
                .token_channels
                .as_ref()
                .is_none_or(|set| set.matches(ch))
    }
}

/// `metadata` typically holds TURN credentials (`iceServers`), so `Debug` shows only which keys
/// the two metadata objects have, never their values.
impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Keys<'a>(&'a Option<serde_json::Value>);
        impl fmt::Debug for Keys<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    None => f.write_str("None"),
                    Some(serde_json::Value::Object(m)) => f.debug_set().entries(m.keys()).finish(),
                    Some(_) => f.write_str("<non-object>"),
                }
            }
        }
        f.debug_struct("Principal")
            .field("peer_id", &self.peer_id)
            .field("kind", &self.kind)
            .field("key_id", &self.key_id)
            .field("app", &self.app)
            .field("key_patterns", &self.key_patterns)
            .field("token_channels", &self.token_channels)
            .field("permissions", &self.permissions)
            .field("peer_metadata", &Keys(&self.peer_metadata))
            .field("metadata", &Keys(&self.metadata))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
