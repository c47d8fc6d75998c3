//! Keys, the key ring, and the authenticated [`Principal`].
//!
//! Two credential kinds exist. A *secret key* is a public id (`sk_id_…`, the JWT `kid`) plus a
//! signing secret; it signs tokens and authenticates REST calls (`Bearer <kid>:<secret>`). A
//! *publishable key* (`pk_live_…`) is its own credential: whoever has the string may connect,
//! which is why it carries a fixed scope and an optional origin allow-list.
//!
//! Secrets and publishable keys must never reach logs, so every type here that
//! holds one implements `Debug` by hand and shows at most a short prefix.

use std::fmt;

use thiserror::Error;

use super::actions::Actions;
use super::error::AuthError;
use super::glob::PatternSet;
use super::principal::{Principal, PrincipalKind};

/// Bytes of a signing secret.
///
/// Deliberately has no `Display` and a redacting `Debug`. Comparison goes through
/// [`Secret::ct_eq`] so that checking a REST bearer does not leak, through timing, how many
/// leading bytes of a guess were right.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps raw secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// The raw bytes, for signing and verifying.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty secret (a configuration error: anyone could sign).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time equality with `other` (the time depends only on the lengths).
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        constant_time_eq(&self.0, other)
    }
}

/// Compares two byte strings in time that depends only on their lengths.
///
/// Lengths are not secret (secrets have a fixed format), so a length mismatch returns early.
/// `black_box` keeps the optimiser from turning the accumulation into an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Best-effort wipe so a freed secret does not linger in reused heap memory. (Not a guarantee:
/// earlier reallocations or copies may survive; there is no `zeroize` dependency.)
impl Drop for Secret {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&mut self.0);
    }
}

impl From<Vec<u8>> for Secret {
    fn from(v: Vec<u8>) -> Self {
        Secret(v)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s.into_bytes())
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.as_bytes().to_vec())
    }
}

/// A secret (signing) key: signs JWTs, authenticates REST calls, and bounds what its tokens
/// can grant (a token's claims are intersected with `channel_patterns` and `actions`).
#[derive(Clone)]
pub struct SecretKey {
    /// Public key id (`sk_id_…`), sent as the JWT header `kid`. Must not contain `:` (the REST
    /// bearer is `<kid>:<secret>`).
    pub kid: String,
    /// The HMAC secret.
    pub secret: Secret,
    /// Channels any token signed by this key may reach at most.
    pub channel_patterns: PatternSet,
    /// Actions any token signed by this key may use at most.
    pub actions: Actions,
    /// The application (tenant) this key belongs to. Peer ids, channels, directs and kicks are
    /// scoped to it: two apps on one server share nothing. Empty: the default app, shared by
    /// every key without one.
    pub app: String,
}

impl SecretKey {
    /// A key with the given scope.
    pub fn new(
        kid: impl Into<String>,
        secret: impl Into<Secret>,
        channel_patterns: PatternSet,
        actions: Actions,
    ) -> Self {
        SecretKey {
            kid: kid.into(),
            secret: secret.into(),
            channel_patterns,
            actions,
            app: String::new(),
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("kid", &self.kid)
            .field("secret", &self.secret)
            .field("channel_patterns", &self.channel_patterns)
            .field("actions", &self.actions)
            .field("app", &self.app)
            .finish()
    }
}

/// A browser-safe key whose string is the whole credential.
#[derive(Clone)]
pub struct PublishableKey {
    /// The key string (`pk_live_…`).
    pub key: String,
    /// Channels every connection of this key may use.
    pub channel_patterns: PatternSet,
    /// Actions every connection of this key may use (the dashboard default omits `send`).
    pub actions: Actions,
    /// Origins (`scheme://host[:port]`) allowed to connect from a browser; `None` allows all.
    /// `"*"` as an entry also allows all. Only checked when the client sends an `Origin`.
    pub allowed_origins: Option<Vec<String>>,
    /// The application this key belongs to (see [`SecretKey::app`]).
    pub app: String,
}

impl PublishableKey {
    /// A key with the given scope and no origin restriction.
    pub fn new(key: impl Into<String>, channel_patterns: PatternSet, actions: Actions) -> Self {
        PublishableKey {
            key: key.into(),
            channel_patterns,
            actions,
            allowed_origins: None,
            app: String::new(),
        }
    }

    /// The key as it may appear in logs: [`redact_key`].
    pub fn redacted(&self) -> String {
        redact_key(&self.key)
    }

    fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match (origin, &self.allowed_origins) {
            // Non-browser clients (the Python SDK) send no Origin and are documented as valid
            // users of publishable keys, so a missing header cannot be refused.
            (None, _) | (_, None) => true,
            (Some(origin), Some(list)) => list.iter().any(|o| o == "*" || o == origin),
        }
    }
}

/// A credential shortened for logs: the first 8 characters and `…`. Never more than half the
/// string is shown, so a short (test or misconfigured) key is not printed whole.
pub fn redact_key(key: &str) -> String {
    let total = key.chars().count();
    let shown = 8.min(total / 2);
    let mut out: String = key.chars().take(shown).collect();
    out.push('…');
    out
}

impl fmt::Debug for PublishableKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishableKey")
            .field("key", &self.redacted())
            .field("channel_patterns", &self.channel_patterns)
            .field("actions", &self.actions)
            .field("app", &self.app)
            .field("allowed_origins", &self.allowed_origins)
            .finish()
    }
}

/// Problems in a key ring that configuration loading should refuse.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyRingError {
    /// A secret key id is empty or contains `:`, which would break the REST bearer format.
    #[error("secret key id {0:?} is empty or contains ':'")]
    BadKid(String),
    /// Two secret keys share an id, so `kid` lookup would be ambiguous.
    #[error("secret key id {0:?} is configured twice")]
    DuplicateKid(String),
    /// A secret key has an empty secret: anyone could sign tokens for it.
    #[error("secret key {0:?} has an empty secret")]
    EmptySecret(String),
    /// A publishable key is empty or configured twice (shown redacted).
    #[error("publishable key {0} is empty or configured twice")]
    BadPublishableKey(String),
}

/// All configured credentials.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    /// Signing keys; the first is the default for minting.
    pub secret_keys: Vec<SecretKey>,
    /// Publishable keys.
    pub publishable_keys: Vec<PublishableKey>,
}

impl KeyRing {
    /// Checks the ring for configuration mistakes that would make lookups ambiguous or
    /// authentication meaningless. Call once after loading configuration.
    pub fn validate(&self) -> Result<(), KeyRingError> {
        for (i, k) in self.secret_keys.iter().enumerate() {
            if k.kid.is_empty() || k.kid.contains(':') {
                return Err(KeyRingError::BadKid(k.kid.clone()));
            }
            if k.secret.is_empty() {
                return Err(KeyRingError::EmptySecret(k.kid.clone()));
            }
            if self.secret_keys[..i].iter().any(|o| o.kid == k.kid) {
                return Err(KeyRingError::DuplicateKid(k.kid.clone()));
            }
        }
        for (i, k) in self.publishable_keys.iter().enumerate() {
            if k.key.is_empty() || self.publishable_keys[..i].iter().any(|o| o.key == k.key) {
                return Err(KeyRingError::BadPublishableKey(k.redacted()));
            }
        }
        Ok(())
    }

    /// Authenticates a publishable key from `?key=`. `origin` is the WebSocket `Origin` header,
    /// if the client sent one. Each call yields a fresh UUID peer id: publishable-key
    /// connections have no stable identity.
    pub fn authenticate_publishable(
        &self,
        key: &str,
        origin: Option<&str>,
    ) -> Result<Principal, AuthError> {
        // Compare against every key in constant time: the key string is the credential.
        let mut found = None;
        for pk in &self.publishable_keys {
            if constant_time_eq(pk.key.as_bytes(), key.as_bytes()) && found.is_none() {
                found = Some(pk);
            }
        }
        let pk = found.ok_or(AuthError::UnknownPublishableKey)?;
        if !pk.origin_allowed(origin) {
            return Err(AuthError::OriginNotAllowed);
        }
        Ok(Principal {
            peer_id: uuid::Uuid::new_v4().hyphenated().to_string(),
            kind: PrincipalKind::PublishableKey,
            key_id: pk.redacted(),
            key_patterns: pk.channel_patterns.clone(),
            token_channels: None,
            permissions: pk.actions,
            peer_metadata: None,
            metadata: None,
            expires_at: None,
            app: pk.app.clone(),
        })
    }

    /// The secret key a REST `Authorization: Bearer <kid>:<secret>` names, if the secret is right.
    /// Unknown kid, wrong secret and malformed input all give `None`, so callers cannot help an
    /// attacker enumerate key ids (REST answers all of them with the same 401).
    pub fn secret_key_for_bearer(&self, bearer: &str) -> Option<&SecretKey> {
        let (kid, secret) = bearer.split_once(':')?;
        let key = self.secret_keys.iter().find(|k| k.kid == kid)?;
        // An empty configured secret would otherwise accept "kid:".
        (!key.secret.is_empty() && key.secret.ct_eq(secret.as_bytes())).then_some(key)
    }

    /// The key to mint with: by id when given, else the first configured key.
    pub fn signing_key(&self, kid: Option<&str>) -> Option<&SecretKey> {
        match kid {
            Some(kid) => self.secret_keys.iter().find(|k| k.kid == kid),
            None => self.secret_keys.first(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Action;
    use serde_json::json;

    const PK: &str = "pk_live_0123456789abcdef";
    const SECRET: &str = "sk_secret_TOPSECRETVALUE";

    fn ring() -> KeyRing {
        let mut restricted = PublishableKey::new(
            "pk_live_restricted_key",
            PatternSet::parse(&["lobby/*"]).unwrap(),
            Actions::all().without(Action::Send),
        );
        restricted.allowed_origins = Some(vec![
            "https://app.example.com".into(),
            "http://localhost:3000".into(),
        ]);
        let mut open = PublishableKey::new(PK, PatternSet::any(), Actions::all());
        open.allowed_origins = Some(vec!["*".into()]);
        KeyRing {
            secret_keys: vec![
                SecretKey::new("sk_id_one", SECRET, PatternSet::any(), Actions::all()),
                SecretKey::new(
                    "sk_id_two",
                    "other-secret",
                    PatternSet::parse(&["a/**"]).unwrap(),
                    Actions::none().with(Action::Publish),
                ),
            ],
            publishable_keys: vec![
                open,
                restricted,
                PublishableKey::new("pk_live_no_origin_list", PatternSet::any(), Actions::all()),
            ],
        }
    }

    #[test]
    fn publishable_key_authentication() {
        let ring = ring();
        // (key, origin, expected)
        let cases: [(&str, Option<&str>, Result<(), AuthError>); 10] = [
            (PK, None, Ok(())),
            (PK, Some("https://anything.example"), Ok(())),
            ("pk_live_restricted_key", None, Ok(())),
            (
                "pk_live_restricted_key",
                Some("https://app.example.com"),
                Ok(()),
            ),
            (
                "pk_live_restricted_key",
                Some("http://localhost:3000"),
                Ok(()),
            ),
            (
                "pk_live_restricted_key",
                Some("https://evil.example.com"),
                Err(AuthError::OriginNotAllowed),
            ),
            (
                "pk_live_restricted_key",
                Some("https://app.example.com:8443"),
                Err(AuthError::OriginNotAllowed),
            ),
            ("pk_live_no_origin_list", Some("https://x.example"), Ok(())),
            (
                "pk_live_unknown",
                None,
                Err(AuthError::UnknownPublishableKey),
            ),
            ("", None, Err(AuthError::UnknownPublishableKey)),
        ];
        for (key, origin, want) in cases {
            let got = ring.authenticate_publishable(key, origin).map(|_| ());
            assert_eq!(got, want, "{key} from {origin:?}");
        }
    }

    #[test]
    fn publishable_principal_shape() {
        let ring = ring();
        let a = ring
            .authenticate_publishable("pk_live_restricted_key", None)
            .unwrap();
        let b = ring
            .authenticate_publishable("pk_live_restricted_key", None)
            .unwrap();
        assert_ne!(a.peer_id, b.peer_id, "fresh peer id per connection");
        let parsed = uuid::Uuid::parse_str(&a.peer_id).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(a.peer_id, parsed.hyphenated().to_string());
        assert_eq!(a.kind, PrincipalKind::PublishableKey);
        assert_eq!(a.key_id, "pk_live_…");
        assert_eq!(a.expires_at, None);
        assert_eq!(a.peer_metadata, None);
        assert_eq!(a.metadata, None);
        assert_eq!(a.token_channels, None);
        assert!(a.can(Action::Publish) && !a.can(Action::Send));
        assert!(a.may_use_channel("lobby/1"));
        assert!(!a.may_use_channel("lobby/1/x"));
        assert!(!a.may_use_channel("admin"));
    }

    #[test]
    fn principal_channel_scope_is_an_intersection() {
        let mut p = ring().authenticate_publishable(PK, None).unwrap();
        p.key_patterns = PatternSet::parse(&["app/**"]).unwrap();
        // (token channels, channel, allowed)
        let cases: [(Option<&[&str]>, &str, bool); 6] = [
            (None, "app/x/y", true),
            (None, "other", false),
            (Some(&["app/room-*"]), "app/room-1", true),
            (Some(&["app/room-*"]), "app/lobby", false),
            (Some(&["**"]), "other", false),
            (Some(&[]), "app/x", false),
        ];
        for (token_channels, ch, want) in cases {
            p.token_channels = token_channels.map(|c| PatternSet::parse(c).unwrap());
            assert_eq!(p.may_use_channel(ch), want, "{token_channels:?} {ch}");
        }
    }

    #[test]
    fn bearer_lookup() {
        let ring = ring();
        let cases = [
            (format!("sk_id_one:{SECRET}"), Some("sk_id_one")),
            ("sk_id_two:other-secret".to_owned(), Some("sk_id_two")),
            ("sk_id_one:other-secret".to_owned(), None),
            (format!("sk_id_one:{SECRET}x"), None),
            (format!("sk_id_one:{}", &SECRET[..SECRET.len() - 1]), None),
            ("sk_id_one:".to_owned(), None),
            (format!("sk_id_nope:{SECRET}"), None),
            ("sk_id_one".to_owned(), None),
            (SECRET.to_owned(), None),
            (String::new(), None),
            (format!(":{SECRET}"), None),
        ];
        for (bearer, want) in cases {
            let got = ring.secret_key_for_bearer(&bearer).map(|k| k.kid.as_str());
            assert_eq!(got, want, "{bearer}");
        }
    }

    #[test]
    fn bearer_secret_may_contain_colons() {
        let ring = KeyRing {
            secret_keys: vec![SecretKey::new(
                "kid",
                "a:b:c",
                PatternSet::any(),
                Actions::all(),
            )],
            publishable_keys: vec![],
        };
        assert!(ring.secret_key_for_bearer("kid:a:b:c").is_some());
        assert!(ring.secret_key_for_bearer("kid:a:b").is_none());
        assert!(ring.secret_key_for_bearer("kid:a").is_none());
    }

    #[test]
    fn signing_key_selection() {
        let ring = ring();
        assert_eq!(ring.signing_key(None).unwrap().kid, "sk_id_one");
        assert_eq!(
            ring.signing_key(Some("sk_id_two")).unwrap().kid,
            "sk_id_two"
        );
        assert!(ring.signing_key(Some("sk_id_x")).is_none());
        assert!(KeyRing::default().signing_key(None).is_none());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let ring = ring();
        let secret = Secret::from(SECRET);
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        let sk = format!("{:?}", ring.secret_keys[0]);
        assert!(!sk.contains(SECRET) && !sk.contains("TOPSECRET"), "{sk}");
        assert!(sk.contains("sk_id_one"), "{sk}");
        let pk = format!("{:?}", ring.publishable_keys[0]);
        assert!(!pk.contains(PK) && !pk.contains("0123"), "{pk}");
        assert!(pk.contains("pk_live_…"), "{pk}");
        let all = format!("{ring:?}");
        assert!(!all.contains(SECRET) && !all.contains(PK) && !all.contains("other-secret"));

        let mut p = ring.authenticate_publishable(PK, None).unwrap();
        p.metadata = Some(json!({"iceServers": [{"credential": "turn-pass"}]}));
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("turn-pass") && shown.contains("iceServers"),
            "{shown}"
        );
    }

    #[test]
    fn redaction_of_short_keys() {
        assert_eq!(redact_key("pk_live_0123456789"), "pk_live_…");
        assert_eq!(redact_key("abcd"), "ab…");
        assert_eq!(redact_key(""), "…");
        assert_eq!(redact_key("ééééééééééééééééé"), "éééééééé…");
    }

    #[test]
    fn constant_time_compare() {
        let s = Secret::from("abc");
        assert!(s.ct_eq(b"abc"));
        assert!(!s.ct_eq(b"abd"));
        assert!(!s.ct_eq(b"ab"));
        assert!(!s.ct_eq(b"abcd"));
        assert!(Secret::new(Vec::new()).ct_eq(b""));
    }

    #[test]
    fn ring_validation() {
        assert_eq!(ring().validate(), Ok(()));
        let mut r = ring();
        r.secret_keys.push(SecretKey::new(
            "sk_id_one",
            "x",
            PatternSet::any(),
            Actions::all(),
        ));
        assert_eq!(
            r.validate(),
            Err(KeyRingError::DuplicateKid("sk_id_one".into()))
        );
        let mut r = ring();
        r.secret_keys[1].kid = "a:b".into();
        assert_eq!(r.validate(), Err(KeyRingError::BadKid("a:b".into())));
        let mut r = ring();
        r.secret_keys[1].secret = Secret::new(Vec::new());
        assert_eq!(
            r.validate(),
            Err(KeyRingError::EmptySecret("sk_id_two".into()))
        );
        let mut r = ring();
        r.publishable_keys
            .push(PublishableKey::new(PK, PatternSet::any(), Actions::all()));
        assert!(matches!(r.validate(), Err(KeyRingError::BadPublishableKey(k)) if !k.contains(PK)));
    }
}
