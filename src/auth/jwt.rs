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
mod tests {
    use super::*;

    #[test]
    fn a_tokens_expiry_can_be_read_without_its_key() {
        let key = SecretKey {
            kid: "k".into(),
            secret: crate::auth::Secret::new(b"0123456789abcdef".to_vec()),
            channel_patterns: PatternSet::any(),
            actions: Actions::all(),
            app: String::new(),
        };
        let req = MintRequest {
            sub: "ana".into(),
            ttl_secs: 60,
            ..MintRequest::default()
        };
        let (token, exp) = mint(&key, &req, 1_700_000_000).expect("mint");
        assert_eq!(unverified_expiry(&token), Some(exp));
        assert_eq!(exp, 1_700_000_060);
        for junk in ["", "a.b", "a.b.c", "x.eyJzdWIiOiJhIn0.y", "....."] {
            assert_eq!(unverified_expiry(junk), None, "{junk:?}");
        }
    }
    use crate::auth::keys::KeyRing;
    use proptest::prelude::*;
    use serde_json::json;

    const NOW: u64 = 1_715_539_200;
    const SECRET_ONE: &str = "sk_secret_one_0123456789";
    const SECRET_TWO: &str = "sk_secret_two_abcdefghij";

    fn key_one() -> SecretKey {
        SecretKey::new("sk_id_one", SECRET_ONE, PatternSet::any(), Actions::all())
    }

    fn key_two() -> SecretKey {
        SecretKey::new(
            "sk_id_two",
            SECRET_TWO,
            PatternSet::parse(&["app/**"]).unwrap(),
            Actions::none()
                .with(Action::Publish)
                .with(Action::Subscribe),
        )
    }

    fn ring() -> KeyRing {
        KeyRing {
            secret_keys: vec![key_one(), key_two()],
            publishable_keys: vec![],
        }
    }

    fn single_ring() -> KeyRing {
        KeyRing {
            secret_keys: vec![key_one()],
            publishable_keys: vec![],
        }
    }

    /// Test-only base64url encoder (the inverse of `b64url_decode`).
    fn b64url(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk.len();
            let word = chunk
                .iter()
                .enumerate()
                .fold(0u32, |w, (i, &b)| w | (u32::from(b) << (16 - 8 * i)));
            for i in 0..=n {
                out.push(ALPHABET[((word >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    /// Builds a token from raw JSON, signed with `alg` (an HMAC algorithm) and `secret`.
    fn craft_with(alg: Algorithm, header: &Value, claims: &Value, secret: &str) -> String {
        let message = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret.as_bytes()),
            alg,
        )
        .unwrap();
        format!("{message}.{sig}")
    }

    fn craft(header: &Value, claims: &Value, secret: &str) -> String {
        craft_with(Algorithm::HS256, header, claims, secret)
    }

    fn hs256(kid: &str) -> Value {
        json!({"alg": "HS256", "typ": "JWT", "kid": kid})
    }

    fn base_claims() -> Value {
        json!({"sub": "u_alice_123", "exp": NOW + 60})
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        claims.as_object_mut().unwrap().remove(key);
        claims
    }

    /// `{"k":"xxx…"}` whose compact serialisation is exactly `len` bytes.
    fn object_of_len(len: usize) -> Value {
        let v = json!({"k": "x".repeat(len - 8)});
        assert_eq!(serde_json::to_string(&v).unwrap().len(), len);
        v
    }

    #[test]
    fn round_trip_preserves_every_claim() {
        let ring = ring();
        let req = MintRequest {
            sub: "u_alice_123".into(),
            channels: Some(vec!["app/room-*".into(), r"app/lit\*".into()]),
            permissions: Some(vec![Action::Publish, Action::Send]),
            ttl_secs: 3600,
            peer_metadata: Some(json!({"userId": "u_alice_123", "username": "Alice"})),
            metadata: Some(json!({"iceServers": [{"urls": "turn:x", "credential": "c"}]})),
        };
        let (token, exp) = mint(&ring.secret_keys[0], &req, NOW).unwrap();
        assert_eq!(exp, NOW + 3600);
        let p = ring.verify_token(&token, NOW).unwrap();
        assert_eq!(p.peer_id, "u_alice_123");
        assert_eq!(p.kind, PrincipalKind::Token);
        assert_eq!(p.key_id, "sk_id_one");
        assert_eq!(p.expires_at, Some(exp));
        assert_eq!(
            p.token_channels
                .as_ref()
                .unwrap()
                .patterns()
                .collect::<Vec<_>>(),
            ["app/room-*", r"app/lit\*"]
        );
        assert_eq!(p.permissions.names(), ["publish", "send"]);
        assert_eq!(p.peer_metadata, req.peer_metadata);
        assert_eq!(p.metadata, req.metadata);
        assert_eq!(p.key_patterns, PatternSet::any());
        assert!(p.may_use_channel("app/room-1") && p.may_use_channel("app/lit*"));
        assert!(!p.may_use_channel("app/litx"));

        // Header and raw claims as documented: alg HS256, typ JWT, kid; camelCase names.
        let mut parts = token.split('.');
        let header: Value =
            serde_json::from_slice(&b64url_decode(parts.next().unwrap()).unwrap()).unwrap();
        assert_eq!(
            header,
            json!({"alg": "HS256", "typ": "JWT", "kid": "sk_id_one"})
        );
        let claims: Value =
            serde_json::from_slice(&b64url_decode(parts.next().unwrap()).unwrap()).unwrap();
        assert_eq!(claims["iat"], json!(NOW));
        assert_eq!(claims["exp"], json!(NOW + 3600));
        assert_eq!(claims["permissions"], json!(["publish", "send"]));
        assert!(claims.get("peerMetadata").is_some() && claims.get("peer_metadata").is_none());
    }

    #[test]
    fn round_trip_without_optional_claims_uses_key_scope() {
        let ring = ring();
        let req = MintRequest {
            sub: "bob".into(),
            ttl_secs: 10,
            ..Default::default()
        };
        let (token, _) = mint(&ring.secret_keys[1], &req, NOW).unwrap();
        let claims: Value =
            serde_json::from_slice(&b64url_decode(token.split('.').nth(1).unwrap()).unwrap())
                .unwrap();
        let mut names: Vec<&str> = claims
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["exp", "iat", "sub"]);

        let p = ring.verify_token(&token, NOW).unwrap();
        assert_eq!(p.key_id, "sk_id_two");
        assert_eq!(p.token_channels, None);
        assert_eq!(p.permissions, key_two().actions);
        assert_eq!(p.peer_metadata, None);
        assert_eq!(p.metadata, None);
        assert!(p.may_use_channel("app/x/y") && !p.may_use_channel("other"));
        // Valid until the last second before exp.
        assert!(ring.verify_token(&token, NOW + 9).is_ok());
    }

    #[test]
    fn claimed_permissions_are_narrowed_by_the_key() {
        let token = craft(
            &hs256("sk_id_two"),
            &with(
                base_claims(),
                "permissions",
                json!(["publish", "send", "presence"]),
            ),
            SECRET_TWO,
        );
        let p = ring().verify_token(&token, NOW).unwrap();
        assert_eq!(p.permissions.names(), ["publish"]);
        assert!(p.can(Action::Publish) && !p.can(Action::Send));

        let token = craft(
            &hs256("sk_id_one"),
            &with(base_claims(), "permissions", json!([])),
            SECRET_ONE,
        );
        assert!(
            ring()
                .verify_token(&token, NOW)
                .unwrap()
                .permissions
                .is_empty()
        );
    }

    #[test]
    fn accepted_variants() {
        let h = hs256("sk_id_one");
        let (one, two) = (single_ring(), ring());
        let cases: Vec<(&str, String, &KeyRing)> = vec![
            (
                "aud, iss, nbf now, iat a little ahead, jti",
                craft(
                    &h,
                    &json!({"sub": "a", "exp": NOW + 1, "aud": ["x", 1], "iss": "your-backend",
                            "nbf": NOW, "iat": NOW + 30, "jti": 7}),
                    SECRET_ONE,
                ),
                &two,
            ),
            (
                "no kid with a single key",
                craft(
                    &json!({"alg": "HS256", "typ": "JWT"}),
                    &base_claims(),
                    SECRET_ONE,
                ),
                &one,
            ),
            (
                "null kid with a single key",
                craft(
                    &json!({"alg": "HS256", "kid": null}),
                    &base_claims(),
                    SECRET_ONE,
                ),
                &one,
            ),
            (
                "no typ",
                craft(
                    &json!({"alg": "HS256", "kid": "sk_id_one"}),
                    &base_claims(),
                    SECRET_ONE,
                ),
                &two,
            ),
            (
                "fractional exp",
                craft(
                    &h,
                    &json!({"sub": "a", "exp": (NOW as f64) + 1.5}),
                    SECRET_ONE,
                ),
                &two,
            ),
            (
                "null optional claims",
                craft(
                    &h,
                    &json!({"sub": "a", "exp": NOW + 1, "channels": null, "permissions": null,
                            "peerMetadata": null, "metadata": null}),
                    SECRET_ONE,
                ),
                &two,
            ),
            (
                "peerMetadata exactly at its cap",
                craft(
                    &h,
                    &with(base_claims(), "peerMetadata", object_of_len(4096)),
                    SECRET_ONE,
                ),
                &two,
            ),
            (
                "metadata and peerMetadata both exactly at their caps",
                craft(
                    &h,
                    &with(
                        with(base_claims(), "metadata", object_of_len(8192)),
                        "peerMetadata",
                        object_of_len(4096),
                    ),
                    SECRET_ONE,
                ),
                &two,
            ),
            (
                "sub of 128 printable characters",
                craft(
                    &h,
                    &with(base_claims(), "sub", json!("~ ".repeat(64))),
                    SECRET_ONE,
                ),
                &two,
            ),
        ];
        for (name, token, ring) in cases {
            if let Err(e) = ring.verify_token(&token, NOW) {
                panic!("{name}: {e}");
            }
        }
    }

    #[test]
    fn rejections() {
        let h1 = hs256("sk_id_one");
        let good = craft(&h1, &base_claims(), SECRET_ONE);
        let (gh, gp, gs) = {
            let mut it = good.split('.');
            (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
        };
        let tampered_payload = b64url(
            with(base_claims(), "sub", json!("u_mallory"))
                .to_string()
                .as_bytes(),
        );
        let alg_none = format!(
            "{}.{}.",
            b64url(br#"{"alg":"none","typ":"JWT"}"#),
            b64url(base_claims().to_string().as_bytes())
        );
        let claims_with = |k: &str, v: Value| craft(&h1, &with(base_claims(), k, v), SECRET_ONE);

        let cases: Vec<(&str, String, AuthError)> = vec![
            ("alg none", alg_none, AuthError::UnsupportedAlgorithm),
            (
                "alg none with a signature",
                format!(
                    "{}.{gp}.{gs}",
                    b64url(br#"{"alg":"none","kid":"sk_id_one"}"#)
                ),
                AuthError::UnsupportedAlgorithm,
            ),
            (
                "HS384",
                craft_with(
                    Algorithm::HS384,
                    &json!({"alg": "HS384", "typ": "JWT", "kid": "sk_id_one"}),
                    &base_claims(),
                    SECRET_ONE,
                ),
                AuthError::UnsupportedAlgorithm,
            ),
            (
                "RS256 header",
                format!(
                    "{}.{gp}.{gs}",
                    b64url(br#"{"alg":"RS256","kid":"sk_id_one"}"#)
                ),
                AuthError::UnsupportedAlgorithm,
            ),
            (
                "lowercase hs256",
                format!(
                    "{}.{gp}.{gs}",
                    b64url(br#"{"alg":"hs256","kid":"sk_id_one"}"#)
                ),
                AuthError::UnsupportedAlgorithm,
            ),
            (
                "alg missing",
                format!("{}.{gp}.{gs}", b64url(br#"{"kid":"sk_id_one"}"#)),
                AuthError::Malformed,
            ),
            (
                "alg not a string",
                format!("{}.{gp}.{gs}", b64url(br#"{"alg":256,"kid":"sk_id_one"}"#)),
                AuthError::Malformed,
            ),
            (
                "crit header",
                craft(
                    &json!({"alg": "HS256", "kid": "sk_id_one", "crit": ["b64"], "b64": false}),
                    &base_claims(),
                    SECRET_ONE,
                ),
                AuthError::Malformed,
            ),
            (
                "unknown kid",
                craft(&hs256("sk_id_nope"), &base_claims(), SECRET_ONE),
                AuthError::UnknownKey,
            ),
            (
                "missing kid with two keys",
                craft(
                    &json!({"alg": "HS256", "typ": "JWT"}),
                    &base_claims(),
                    SECRET_ONE,
                ),
                AuthError::UnknownKey,
            ),
            (
                "kid not a string",
                craft(
                    &json!({"alg": "HS256", "kid": 1}),
                    &base_claims(),
                    SECRET_ONE,
                ),
                AuthError::Malformed,
            ),
            (
                "tampered payload",
                format!("{gh}.{tampered_payload}.{gs}"),
                AuthError::BadSignature,
            ),
            (
                "wrong secret",
                craft(&h1, &base_claims(), SECRET_TWO),
                AuthError::BadSignature,
            ),
            (
                "signed by the other key",
                craft(&hs256("sk_id_two"), &base_claims(), SECRET_ONE),
                AuthError::BadSignature,
            ),
            (
                "empty signature",
                format!("{gh}.{gp}."),
                AuthError::BadSignature,
            ),
            (
                "expired: exp == now",
                claims_with("exp", json!(NOW)),
                AuthError::Expired,
            ),
            (
                "expired: exp < now",
                claims_with("exp", json!(NOW - 1)),
                AuthError::Expired,
            ),
            (
                "expired: exp 0",
                claims_with("exp", json!(0)),
                AuthError::Expired,
            ),
            (
                "nbf one second in the future",
                claims_with("nbf", json!(NOW + 1)),
                AuthError::NotYetValid,
            ),
            (
                "nbf far in the future",
                claims_with("nbf", json!(NOW + 1000)),
                AuthError::NotYetValid,
            ),
            (
                "nbf not a number",
                claims_with("nbf", json!("soon")),
                AuthError::InvalidClaim("nbf"),
            ),
            (
                "iat an hour in the future",
                claims_with("iat", json!(NOW + 3600)),
                AuthError::NotYetValid,
            ),
            (
                "missing exp",
                craft(&h1, &without(base_claims(), "exp"), SECRET_ONE),
                AuthError::MissingExpiry,
            ),
            (
                "null exp",
                claims_with("exp", Value::Null),
                AuthError::MissingExpiry,
            ),
            (
                "string exp",
                claims_with("exp", json!("1715539260")),
                AuthError::InvalidClaim("exp"),
            ),
            (
                "negative exp",
                claims_with("exp", json!(-5)),
                AuthError::InvalidClaim("exp"),
            ),
            (
                "missing sub",
                craft(&h1, &without(base_claims(), "sub"), SECRET_ONE),
                AuthError::InvalidSubject,
            ),
            (
                "empty sub",
                claims_with("sub", json!("")),
                AuthError::InvalidSubject,
            ),
            (
                "129-char sub",
                claims_with("sub", json!("a".repeat(129))),
                AuthError::InvalidSubject,
            ),
            (
                "non-ASCII sub",
                claims_with("sub", json!("élodie")),
                AuthError::InvalidSubject,
            ),
            (
                "control char in sub",
                claims_with("sub", json!("a\tb")),
                AuthError::InvalidSubject,
            ),
            (
                "numeric sub",
                claims_with("sub", json!(42)),
                AuthError::InvalidSubject,
            ),
            (
                "peerMetadata 4097 bytes",
                claims_with("peerMetadata", object_of_len(4097)),
                AuthError::PeerMetadataTooLarge,
            ),
            (
                "metadata 8193 bytes",
                claims_with("metadata", object_of_len(8193)),
                AuthError::MetadataTooLarge,
            ),
            (
                "non-object peerMetadata",
                claims_with("peerMetadata", json!("alice")),
                AuthError::InvalidClaim("peerMetadata"),
            ),
            (
                "array peerMetadata",
                claims_with("peerMetadata", json!([1, 2])),
                AuthError::InvalidClaim("peerMetadata"),
            ),
            (
                "non-object metadata",
                claims_with("metadata", json!(3)),
                AuthError::InvalidClaim("metadata"),
            ),
            (
                "unknown permission",
                claims_with("permissions", json!(["publish", "admin"])),
                AuthError::InvalidClaim("permissions"),
            ),
            (
                "permissions not an array",
                claims_with("permissions", json!("publish")),
                AuthError::InvalidClaim("permissions"),
            ),
            (
                "permission not a string",
                claims_with("permissions", json!([1])),
                AuthError::InvalidClaim("permissions"),
            ),
            (
                "channels not an array",
                claims_with("channels", json!("app/*")),
                AuthError::InvalidClaim("channels"),
            ),
            (
                "channel not a string",
                claims_with("channels", json!(["ok", 5])),
                AuthError::InvalidClaim("channels"),
            ),
            (
                "channel with a trailing escape",
                claims_with("channels", json!([r"app\"])),
                AuthError::InvalidClaim("channels"),
            ),
            (
                "empty channel pattern",
                claims_with("channels", json!([""])),
                AuthError::InvalidClaim("channels"),
            ),
            (
                "payload not an object",
                craft(&h1, &json!(["sub", "exp"]), SECRET_ONE),
                AuthError::Malformed,
            ),
            ("empty string", String::new(), AuthError::Malformed),
            ("garbage", "not a token".into(), AuthError::Malformed),
            ("one segment", gh.to_owned(), AuthError::Malformed),
            ("two segments", format!("{gh}.{gp}"), AuthError::Malformed),
            (
                "four segments",
                format!("{good}.{gs}"),
                AuthError::Malformed,
            ),
            ("empty header", format!(".{gp}.{gs}"), AuthError::Malformed),
            ("empty payload", format!("{gh}..{gs}"), AuthError::Malformed),
            (
                "header not base64",
                format!("{gh}!.{gp}.{gs}"),
                AuthError::Malformed,
            ),
            (
                "payload not base64",
                format!("{gh}.{gp}*.{gs}"),
                AuthError::Malformed,
            ),
            (
                "padded header",
                format!("{gh}==.{gp}.{gs}"),
                AuthError::Malformed,
            ),
            (
                "header not JSON",
                format!("{}.{gp}.{gs}", b64url(b"{alg:HS256")),
                AuthError::Malformed,
            ),
            (
                "header JSON but not an object",
                format!("{}.{gp}.{gs}", b64url(b"[\"HS256\"]")),
                AuthError::Malformed,
            ),
            (
                "payload not JSON",
                craft_raw_payload(&h1, b"{\"sub\":", SECRET_ONE),
                AuthError::Malformed,
            ),
            (
                "oversize token",
                format!("{gh}.{}.{gs}", "A".repeat(MAX_TOKEN_LEN)),
                AuthError::Malformed,
            ),
        ];
        let ring = ring();
        for (name, token, want) in cases {
            let got = ring.verify_token(&token, NOW).map(|p| p.peer_id);
            assert_eq!(got, Err(want.clone()), "{name}");
            // Display text must never echo the token or a secret.
            let text = want.to_string();
            assert!(
                !text.contains(SECRET_ONE) && !text.contains(SECRET_TWO),
                "{name}"
            );
            assert!(token.is_empty() || !text.contains(&token), "{name}");
        }
    }

    /// A correctly signed token whose payload segment is arbitrary bytes.
    fn craft_raw_payload(header: &Value, payload: &[u8], secret: &str) -> String {
        let message = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(payload)
        );
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{message}.{sig}")
    }

    #[test]
    fn no_keys_configured() {
        let ring = KeyRing::default();
        let token = craft(&json!({"alg": "HS256"}), &base_claims(), SECRET_ONE);
        assert_eq!(
            ring.verify_token(&token, NOW).unwrap_err(),
            AuthError::UnknownKey
        );
    }

    #[test]
    fn close_codes() {
        let cases = [
            (AuthError::Expired, 4002),
            (AuthError::NotYetValid, 4001),
            (AuthError::Malformed, 4001),
            (AuthError::UnsupportedAlgorithm, 4001),
            (AuthError::UnknownKey, 4001),
            (AuthError::BadSignature, 4001),
            (AuthError::MissingExpiry, 4001),
            (AuthError::InvalidSubject, 4001),
            (AuthError::PeerMetadataTooLarge, 4001),
            (AuthError::MetadataTooLarge, 4001),
            (AuthError::InvalidClaim("channels"), 4001),
            (AuthError::UnknownPublishableKey, 4001),
            (AuthError::OriginNotAllowed, 4001),
            (AuthError::TokenTooLarge, 4001),
        ];
        for (e, code) in cases {
            assert_eq!(e.close_code(), code, "{e:?}");
            // Close reasons are limited to 123 bytes on the wire.
            assert!(e.to_string().len() <= 123, "{e:?}");
        }
    }

    #[test]
    fn mint_validation() {
        let key = key_one();
        let base = MintRequest {
            sub: "alice".into(),
            ttl_secs: 60,
            ..Default::default()
        };
        let cases: Vec<(&str, MintRequest, AuthError)> = vec![
            (
                "empty sub",
                MintRequest {
                    sub: String::new(),
                    ..base.clone()
                },
                AuthError::InvalidSubject,
            ),
            (
                "long sub",
                MintRequest {
                    sub: "a".repeat(129),
                    ..base.clone()
                },
                AuthError::InvalidSubject,
            ),
            (
                "non-ASCII sub",
                MintRequest {
                    sub: "ß".into(),
                    ..base.clone()
                },
                AuthError::InvalidSubject,
            ),
            (
                "zero ttl",
                MintRequest {
                    ttl_secs: 0,
                    ..base.clone()
                },
                AuthError::InvalidClaim("exp"),
            ),
            (
                "bad glob",
                MintRequest {
                    channels: Some(vec!["ok".into(), r"bad\".into()]),
                    ..base.clone()
                },
                AuthError::InvalidClaim("channels"),
            ),
            (
                "non-object peerMetadata",
                MintRequest {
                    peer_metadata: Some(json!("x")),
                    ..base.clone()
                },
                AuthError::InvalidClaim("peerMetadata"),
            ),
            (
                "non-object metadata",
                MintRequest {
                    metadata: Some(json!([])),
                    ..base.clone()
                },
                AuthError::InvalidClaim("metadata"),
            ),
            (
                "oversize peerMetadata",
                MintRequest {
                    peer_metadata: Some(object_of_len(4097)),
                    ..base.clone()
                },
                AuthError::PeerMetadataTooLarge,
            ),
            (
                "oversize metadata",
                MintRequest {
                    metadata: Some(object_of_len(8193)),
                    ..base.clone()
                },
                AuthError::MetadataTooLarge,
            ),
            (
                "token over 64 KiB",
                MintRequest {
                    channels: Some((0..300).map(|i| format!("{i:0>250}")).collect()),
                    ..base.clone()
                },
                AuthError::TokenTooLarge,
            ),
        ];
        for (name, req, want) in cases {
            assert_eq!(mint(&key, &req, NOW).unwrap_err(), want, "{name}");
        }
        let (_, exp) = mint(
            &key,
            &MintRequest {
                ttl_secs: u64::MAX,
                ..base
            },
            NOW,
        )
        .unwrap();
        assert_eq!(exp, u64::MAX);
    }

    #[test]
    fn base64url_decoding() {
        let cases: [(&str, Option<&[u8]>); 8] = [
            ("", Some(b"")),
            ("YQ", Some(b"a")),
            ("YWI", Some(b"ab")),
            ("YWJj", Some(b"abc")),
            ("-_8", Some(&[0xfb, 0xff])),
            ("Y", None),
            ("YR", None), // non-zero padding bits
            ("YQ==", None),
        ];
        for (input, want) in cases {
            assert_eq!(b64url_decode(input).as_deref(), want, "{input:?}");
        }
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(b64url_decode(&b64url(&data)), Some(data));
        }

        #[test]
        fn verify_never_panics_on_text(token in any::<String>()) {
            let _ = ring().verify_token(&token, NOW);
        }

        #[test]
        fn verify_never_panics_on_dotted_parts(
            h in "[A-Za-z0-9_-]{0,40}", p in "[A-Za-z0-9_-]{0,40}", s in "[A-Za-z0-9_-]{0,45}"
        ) {
            let _ = ring().verify_token(&format!("{h}.{p}.{s}"), NOW);
        }

        /// Correctly signed tokens with arbitrary payload bytes: every path past the signature.
        #[test]
        fn verify_never_panics_on_signed_payloads(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let token = craft_raw_payload(&hs256("sk_id_one"), &payload, SECRET_ONE);
            let _ = ring().verify_token(&token, NOW);
        }

        #[test]
        fn verify_never_panics_on_signed_json(
            sub in proptest::option::of(any::<String>()),
            exp in any::<i64>(),
            extra in "[a-zA-Z]{1,12}",
            value in any::<String>(),
        ) {
            let mut claims = json!({"exp": exp});
            claims[extra.as_str()] = json!(value);
            if let Some(sub) = sub {
                claims["sub"] = json!(sub);
            }
            let token = craft(&hs256("sk_id_one"), &claims, SECRET_ONE);
            let _ = ring().verify_token(&token, NOW);
        }
    }
}
