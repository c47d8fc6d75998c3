//! From the join request's authentication to a signalling origin and credential: tokens as
//! given, publishable keys, and tokens minted locally (a secret, or "this computer").

use std::sync::Arc;

use serde_json::json;

use super::api::*;
use super::local;
use crate::auth::{Actions, MintRequest, PatternSet, Secret, SecretKey, mint};
use crate::client::{ClientError, Credential};
use crate::peer::PeerError;

pub(super) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A peer id from a display name: lowercase ASCII letters/digits plus a random suffix, so that
/// two "Alice" bots do not collide.
pub fn peer_id_from_name(name: &str) -> String {
    let base: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(32)
        .collect();
    let base = if base.is_empty() {
        "peer".to_string()
    } else {
        base
    };
    format!("{base}-{:04x}", rand::random::<u16>())
}

/// Why a join could not start.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the secret must be at least 16 bytes")]
    ShortSecret,
    #[error("the server URL must start with ws:// or wss:// (got {0:?})")]
    BadUrl(String),
    #[error("the room name is empty")]
    EmptyRoom,
    #[error("could not start or reach the local server: {0}")]
    Local(String),
    /// The call's peer or media could not be set up (signalling options, audio output, WebRTC).
    #[error("{0}")]
    Setup(String),
    /// The server refused the join; `close_code` is its close code (or the HTTP status of a
    /// refused upgrade) when it gave one.
    #[error("could not join {room:?}: {message}")]
    Refused {
        room: String,
        close_code: Option<u16>,
        message: String,
    },
    /// The server could not be reached at all.
    #[error("could not join {room:?}: {message}")]
    Unreachable { room: String, message: String },
}

impl JoinError {
    /// Sorts the SDK's join failure: unreachable, refused with a code, or refused otherwise.
    pub(super) fn refused(room: &str, e: &PeerError) -> JoinError {
        let (room, message) = (room.to_string(), e.to_string());
        match e {
            PeerError::Signalling(ClientError::ConnectFailed {
                close_code: None, ..
            }) => JoinError::Unreachable { room, message },
            PeerError::Signalling(ClientError::ConnectFailed { close_code, .. }) => {
                JoinError::Refused {
                    room,
                    close_code: *close_code,
                    message,
                }
            }
            _ => JoinError::Refused {
                room,
                close_code: None,
                message,
            },
        }
    }

    /// What kind of error this is, for the UI's wording.
    pub fn kind(&self) -> ErrorKind {
        match self {
            JoinError::Unreachable { .. } => ErrorKind::Unreachable,
            _ => ErrorKind::JoinFailed,
        }
    }

    /// The server's close code, when it explains the refusal.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            JoinError::Refused { close_code, .. } => *close_code,
            _ => None,
        }
    }
}

/// What the user is told when the token they pasted has expired.
pub(super) const PASTED_TOKEN_EXPIRED: &str =
    "the token expired; get a new one (or join with a key or a secret, which mint fresh tokens)";

/// A credential that mints a fresh token on every connect.
pub(super) fn minting_credential(
    kid: &str,
    secret: &str,
    name: &str,
    room: &str,
    peer_id: Option<&str>,
) -> Credential {
    let key = Arc::new(SecretKey {
        kid: kid.to_string(),
        secret: Secret::new(secret.as_bytes().to_vec()),
        channel_patterns: PatternSet::any(),
        actions: Actions::all(),
        app: String::new(),
    });
    let sub = peer_id.map_or_else(|| peer_id_from_name(name), str::to_string);
    let (name, room) = (name.to_string(), room.to_string());
    Credential::token_provider(move || {
        let req = MintRequest {
            sub: sub.clone(),
            channels: Some(vec![crate::auth::glob::escape(&room)]),
            ttl_secs: 3600,
            peer_metadata: Some(json!({ "username": name })),
            ..MintRequest::default()
        };
        let r = mint(&key, &req, now_unix())
            .map(|(t, _)| t)
            .map_err(|e| e.to_string());
        async move { r }
    })
}

/// Resolves the request's auth into (origin, credential); may start the embedded server.
pub(super) async fn credential_for(
    req: &JoinRequest,
    local: &local::LocalServerOptions,
    keep: &mut Option<local::LocalServer>,
) -> Result<(String, Credential), JoinError> {
    if req.room.trim().is_empty() {
        return Err(JoinError::EmptyRoom);
    }
    let url_ok = |s: &str| s.starts_with("ws://") || s.starts_with("wss://");
    match &req.auth {
        Auth::Token(t) => {
            if !url_ok(&req.server) {
                return Err(JoinError::BadUrl(req.server.clone()));
            }
            // A pasted token cannot be refreshed: once it has expired, say so instead of
            // handing the server the same refused token on every reconnect.
            let t = t.clone();
            Ok((
                req.server.clone(),
                Credential::token_provider(move || {
                    let r = match crate::auth::unverified_expiry(&t) {
                        Some(exp) if now_unix() >= exp => Err(PASTED_TOKEN_EXPIRED.to_string()),
                        _ => Ok(t.clone()),
                    };
                    async move { r }
                }),
            ))
        }
        Auth::Key(k) => {
            if !url_ok(&req.server) {
                return Err(JoinError::BadUrl(req.server.clone()));
            }
            Ok((req.server.clone(), Credential::api_key(k.clone())))
        }
        Auth::Secret { kid, secret } => {
            if !url_ok(&req.server) {
                return Err(JoinError::BadUrl(req.server.clone()));
            }
            if secret.len() < 16 {
                return Err(JoinError::ShortSecret);
            }
            Ok((
                req.server.clone(),
                minting_credential(kid, secret, &req.name, &req.room, req.peer_id.as_deref()),
            ))
        }
        Auth::ThisComputer => {
            let server = local::ensure(local)
                .await
                .map_err(|e| JoinError::Local(e.to_string()))?;
            let origin = server.origin.clone();
            let cred = minting_credential(
                &server.kid,
                &server.secret,
                &req.name,
                &req.room,
                req.peer_id.as_deref(),
            );
            *keep = Some(server);
            Ok((origin, cred))
        }
    }
}
