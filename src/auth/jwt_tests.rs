//! Tests of the token rules: minting, every refusal and its close code, hostile input.
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
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
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
        serde_json::from_slice(&b64url_decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
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
