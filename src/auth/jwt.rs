//! Minting and verifying connection tokens (WebSocket connect and the REST token endpoint).
//!
//! Tokens are HS256 JWTs signed with a secret key and naming it in the header `kid`. Claims:
//!
//! | Claim | Rule |
//! |---|---|
//! | `sub` | required; the peer id: 1–128 printable ASCII |
//! | `exp` | required; unix seconds; the token is dead once `exp <= now` |
//! | `nbf` | optional; the token is refused (4001) while `nbf > now` — zero leeway, like `exp` |
//! | `iat` | written by [`mint`]; a numeric `iat` more than a minute ahead of `now` is refused (4001) |
//! | `channels` | optional globs; absent = the key's patterns alone |
//! | `permissions` | optional action names; absent = the key's actions; always ∩ key actions |
//! | `peerMetadata` | optional object, ≤ [`MAX_PEER_METADATA_BYTES`] serialised |
//! | `metadata` | optional object, ≤ [`MAX_METADATA_BYTES`] serialised |
//! | `aud`, `iss`, others | ignored: Metered's own examples carry `iss`, and an unknown claim must not lock out a client that works against the hosted service |
//!
//! A JSON `null` for an optional claim is read as "absent", because common JWT libraries write
//! unset optional fields that way.
//!
//! Verification inspects the header itself before any cryptography: only `alg: "HS256"` is
//! accepted, whatever the library would tolerate, so `none` and algorithm-confusion tokens are
//! refused with a clear error. `jsonwebtoken` then checks the signature (with its own time
//! checks switched off); expiry is judged against the caller's `now_unix`, so the hub can stay a
//! pure state machine and tests are deterministic. Every error maps onto a WebSocket close code
//! via [`AuthError::close_code`], and no error text ever includes the token or a secret.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde_json::{Map, Value};

use super::actions::{Action, Actions};
use super::error::AuthError;
use super::glob::{ChannelPattern, PatternSet};
use super::keys::{KeyRing, SecretKey};
use super::principal::{Principal, PrincipalKind};
use crate::protocol::validate::check_peer_id;

/// Largest serialised `peerMetadata` (compact JSON bytes), Metered's documented limit.
pub const MAX_PEER_METADATA_BYTES: usize = 4096;
/// Largest serialised `metadata` (compact JSON bytes), Metered's documented limit.
pub const MAX_METADATA_BYTES: usize = 8192;
/// Longest token accepted, in bytes. Checked before any decoding so an attacker cannot make the
/// server base64-decode and parse megabytes per connection attempt.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;
/// Token lifetime the REST endpoint uses when none is asked for (Metered's default).
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// Longest lifetime the REST endpoint grants (Metered's cap). Not enforced by [`mint`] itself, so
/// an embedded server may mint longer-lived tokens for itself.
pub const MAX_TTL_SECS: u64 = 86_400;

/// How far ahead of our clock a token's `iat` may be before the token is refused: a backend
/// whose clock runs a little fast still works; a token "issued" an hour from now does not.
pub const IAT_CLOCK_SKEW_SECS: u64 = 60;

/// What to put in a token.
#[derive(Clone, Debug, Default)]
pub struct MintRequest {
    /// The peer id (becomes `sub`).
    pub sub: String,
    /// Channel globs; `None` omits the claim (the key's patterns then apply).
    pub channels: Option<Vec<String>>,
    /// Actions; `None` omits the claim (the key's actions then apply).
    pub permissions: Option<Vec<Action>>,
    /// Lifetime in seconds; must be at least 1.
    pub ttl_secs: u64,
    /// Public identity bag, a JSON object.
    pub peer_metadata: Option<Value>,
    /// Private connection metadata, a JSON object.
    pub metadata: Option<Value>,
}

/// The claims as written on the wire (camelCase where the protocol uses it).
#[derive(Serialize)]
struct WireClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permissions: Option<Vec<&'static str>>,
    #[serde(rename = "peerMetadata", skip_serializing_if = "Option::is_none")]
    peer_metadata: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Value>,
}

/// Signs a token for `req` with `key`; returns the token and its `exp`.
///
/// Applies the same claim rules as verification, so a minted token always verifies (until it
/// expires). It does not check that `channels`/`permissions` are within the key's scope: the
/// REST layer decides whether to refuse and verification narrows them anyway.
pub fn mint(key: &SecretKey, req: &MintRequest, now_unix: u64) -> Result<(String, u64), AuthError> {
    check_peer_id(&req.sub).map_err(|_| AuthError::InvalidSubject)?;
    if req.ttl_secs == 0 {
        // A token dead on arrival is always a caller bug.
        return Err(AuthError::InvalidClaim("exp"));
    }
    if let Some(channels) = &req.channels {
        for c in channels {
            ChannelPattern::parse(c).map_err(|_| AuthError::InvalidClaim("channels"))?;
        }
    }
    check_object(req.peer_metadata.as_ref(), PEER_METADATA)?;
    check_object(req.metadata.as_ref(), METADATA)?;

    let exp = now_unix.saturating_add(req.ttl_secs);
    let claims = WireClaims {
        sub: &req.sub,
        iat: now_unix,
        exp,
        channels: req.channels.as_deref(),
        permissions: req
            .permissions
            .as_ref()
            .map(|p| p.iter().map(|a| a.as_str()).collect()),
        peer_metadata: req.peer_metadata.as_ref(),
        metadata: req.metadata.as_ref(),
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid.clone());
    // HMAC signing of serialisable claims cannot fail in practice; map defensively anyway.
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(key.secret.as_bytes()),
    )
    .map_err(|_| AuthError::Malformed)?;
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::TokenTooLarge);
    }
    Ok((token, exp))
}

/// Verifies `token` against `keys` (the work behind `KeyRing::verify_token`).
///
/// Order: size → shape → header (`alg`, `kid`) → key lookup → signature → `exp` → `sub` →
/// `channels` → `permissions` → `peerMetadata` → `metadata`. Expiry comes first among the
/// claims so that a stale but otherwise valid token gets 4002 (retry with a new token).
pub(crate) fn verify(
    keys: &[SecretKey],
    token: &str,
    now_unix: u64,
) -> Result<Principal, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed);
    }
    let mut segments = token.split('.');
    let (header_b64, payload_b64) = match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some(h), Some(p), Some(_signature), None) if !h.is_empty() && !p.is_empty() => (h, p),
        _ => return Err(AuthError::Malformed),
    };
    // The payload is decoded by the library after the signature check; checking its alphabet
    // here keeps "garbage" reported as Malformed rather than as a signature failure.
    if !is_base64url(payload_b64) {
        return Err(AuthError::Malformed);
    }

    let header_json = b64url_decode(header_b64).ok_or(AuthError::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&header_json).map_err(|_| AuthError::Malformed)?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "HS256" => {}
        Some(Value::String(_)) => return Err(AuthError::UnsupportedAlgorithm),
        _ => return Err(AuthError::Malformed),
    }
    // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; we understand none.
    if header.contains_key("crit") {
        return Err(AuthError::Malformed);
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(AuthError::Malformed),
    };
    let key = match (kid, keys) {
        (Some(kid), _) => keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(AuthError::UnknownKey)?,
        // Without `kid` the signer is only unambiguous when a single key exists.
        (None, [only]) => only,
        (None, _) => return Err(AuthError::UnknownKey),
    };

    let claims = check_signature(token, key)?;
    let Value::Object(mut claims) = claims else {
        return Err(AuthError::Malformed);
    };

    let exp = match claims.get("exp") {
        None | Some(Value::Null) => return Err(AuthError::MissingExpiry),
        Some(v) => numeric_date(v).ok_or(AuthError::InvalidClaim("exp"))?,
    };
    if exp <= now_unix {
        return Err(AuthError::Expired);
    }
    match claims.get("nbf") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let nbf = numeric_date(v).ok_or(AuthError::InvalidClaim("nbf"))?;
            if nbf > now_unix {
                return Err(AuthError::NotYetValid);
            }
        }
    }
    if claims
        .get("iat")
        .and_then(numeric_date)
        .is_some_and(|iat| iat > now_unix.saturating_add(IAT_CLOCK_SKEW_SECS))
    {
        return Err(AuthError::NotYetValid);
    }

    let peer_id = match claims.remove("sub") {
        Some(Value::String(sub)) if check_peer_id(&sub).is_ok() => sub,
        _ => return Err(AuthError::InvalidSubject),
    };

    let token_channels = match optional(claims.remove("channels")) {
        None => None,
        Some(v) => {
            let names = string_array(&v).ok_or(AuthError::InvalidClaim("channels"))?;
            Some(PatternSet::parse(&names).map_err(|_| AuthError::InvalidClaim("channels"))?)
        }
    };

    let claimed = match optional(claims.remove("permissions")) {
        None => None,
        Some(v) => {
            let names = string_array(&v).ok_or(AuthError::InvalidClaim("permissions"))?;
            Some(Actions::from_names(&names)?)
        }
    };
    let permissions = claimed.unwrap_or(key.actions).intersect(key.actions);

    let peer_metadata = optional(claims.remove("peerMetadata"));
    check_object(peer_metadata.as_ref(), PEER_METADATA)?;
    let metadata = optional(claims.remove("metadata"));
    check_object(metadata.as_ref(), METADATA)?;

    Ok(Principal {
        peer_id,
        kind: PrincipalKind::Token,
        key_id: key.kid.clone(),
        key_patterns: key.channel_patterns.clone(),
        token_channels,
        permissions,
        peer_metadata,
        metadata,
        expires_at: Some(exp),
        app: key.app.clone(),
    })
}

/// Checks the HS256 signature with `jsonwebtoken` and returns the decoded claims.
///
/// All of the library's claim validation is switched off (no required claims, no `exp`/`nbf`/
/// `aud` checks, zero leeway): those rules are applied by [`verify`] with the caller's clock, and
/// the library's defaults would, for instance, reject a token carrying an `aud`.
fn check_signature(token: &str, key: &SecretKey) -> Result<Value, AuthError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    let decoding = DecodingKey::from_secret(key.secret.as_bytes());
    jsonwebtoken::decode::<Value>(token, &decoding, &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
                AuthError::UnsupportedAlgorithm
            }
            _ => AuthError::Malformed,
        })
}

/// Name, size cap and size error of one of the two metadata claims.
struct ObjectClaim {
    name: &'static str,
    max: usize,
    too_large: AuthError,
}

const PEER_METADATA: ObjectClaim = ObjectClaim {
    name: "peerMetadata",
    max: MAX_PEER_METADATA_BYTES,
    too_large: AuthError::PeerMetadataTooLarge,
};

const METADATA: ObjectClaim = ObjectClaim {
    name: "metadata",
    max: MAX_METADATA_BYTES,
    too_large: AuthError::MetadataTooLarge,
};

/// A metadata claim must be a JSON object whose compact serialisation fits its cap (the size is
/// what other peers and `welcome` will carry, so it is measured re-serialised, not as sent).
fn check_object(value: Option<&Value>, claim: ObjectClaim) -> Result<(), AuthError> {
    match value {
        None => Ok(()),
        Some(v @ Value::Object(_)) => {
            let len = serde_json::to_string(v)
                .map_err(|_| AuthError::InvalidClaim(claim.name))?
                .len();
            if len > claim.max {
                Err(claim.too_large)
            } else {
                Ok(())
            }
        }
        Some(_) => Err(AuthError::InvalidClaim(claim.name)),
    }
}

/// Treats an explicit JSON `null` like an absent claim.
fn optional(v: Option<Value>) -> Option<Value> {
    v.filter(|v| !v.is_null())
}

/// `Some` when `v` is an array made only of strings.
fn string_array(v: &Value) -> Option<Vec<&str>> {
    v.as_array()?.iter().map(Value::as_str).collect()
}

/// A JWT NumericDate: non-negative seconds. Fractions are allowed by RFC 7519 and truncated.
fn numeric_date(v: &Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    // `as` saturates for values beyond u64::MAX, which is the right reading of "far future".
    (f.is_finite() && f >= 0.0).then_some(f as u64)
}

/// A token's `exp` (unix seconds), read *without* verifying the token: for a client that holds a
/// token someone else minted and wants to know when it stops working. Never use it to trust a
/// token. `None` when the token is malformed or has no numeric `exp`.
pub fn unverified_expiry(token: &str) -> Option<u64> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let json = b64url_decode(payload)?;
    let claims: Map<String, Value> = serde_json::from_slice(&json).ok()?;
    numeric_date(claims.get("exp")?)
}

/// True when every byte is in the base64url alphabet (no padding, as JWTs use).
fn is_base64url(s: &str) -> bool {
    s.bytes().all(|b| b64_value(b).is_some())
}

fn b64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Strict unpadded base64url decoding (RFC 4648 §5), as JWT segments use.
///
/// Written here because `base64` is not a direct dependency and the library's header parser
/// cannot be used: it rejects unknown algorithms such as `none` as a generic JSON error, and we
/// must recognise them to report [`AuthError::UnsupportedAlgorithm`]. Non-canonical input
/// (impossible length, non-zero padding bits) is refused, as the library's decoder does.
fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for b in s.bytes() {
        acc = (acc << 6) | u32::from(b64_value(b)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (acc == 0).then_some(out)
}

/// Token verification belongs with the token rules; the key ring only holds the keys.
impl KeyRing {
    /// Verifies a JWT from `?token=` against the secret keys (rules in this module).
    /// `now_unix` is passed in so callers and tests control the clock.
    pub fn verify_token(&self, token: &str, now_unix: u64) -> Result<Principal, AuthError> {
        verify(&self.secret_keys, token, now_unix)
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
