//! Byte-level tests of `meshcall serve` behaviour: a real server on 127.0.0.1:0, real WebSocket
//! clients, real JWTs. Every frame type, error code and close code the server emits.

use crate::common;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use common::*;
use meshcall::auth::MintRequest;

#[tokio::test]
async fn welcome_for_jwt_and_publishable_key() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let before = unix_now();
    let req = MintRequest {
        sub: "alice".into(),
        ttl_secs: 120,
        metadata: Some(json!({"iceServers":[{"urls":"stun:127.0.0.1:3478"}]})),
        ..MintRequest::default()
    };
    let mut ws = connect_raw(addr, &format!("token={}", token_with(req))).await;
    let w = recv(&mut ws).await;
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["peerId"], "alice");
    let exp = w["expiresAt"].as_u64().expect("expiresAt number");
    assert!((before + 119..=unix_now() + 120).contains(&exp), "{w}");
    let st = w["serverTime"].as_u64().expect("serverTime");
    assert!((before..=unix_now()).contains(&st));
    assert_eq!(w["maxMessageSize"], 65536);
    assert_eq!(
        w["metadata"],
        json!({"iceServers":[{"urls":"stun:127.0.0.1:3478"}]})
    );

    // Publishable key: server-assigned UUID, expiresAt present and null, no metadata.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut ws = connect_raw(addr, &format!("key={PK}")).await;
        let w = recv(&mut ws).await;
        let obj = w.as_object().expect("object");
        assert!(
            obj.contains_key("expiresAt") && w["expiresAt"].is_null(),
            "{w}"
        );
        assert!(!obj.contains_key("metadata"));
        let id = w["peerId"].as_str().expect("peerId").to_string();
        assert_eq!(id.len(), 36, "uuid: {id}");
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
}

async fn closed_with(addr: std::net::SocketAddr, query: &str) -> Option<u16> {
    let mut ws = connect_raw(addr, query).await;
    close_code(&mut ws, Duration::from_secs(5)).await
}

#[tokio::test]
async fn authentication_failures_close_before_welcome() {
    let server = start(config()).await;
    let addr = server.local_addr();
    assert_eq!(closed_with(addr, "token=garbage").await, Some(4001));
    assert_eq!(closed_with(addr, "").await, Some(4001), "no credential");
    assert_eq!(closed_with(addr, "key=pk_unknown_1234").await, Some(4001));
    // Signed with the wrong secret.
    let wrong = meshcall::auth::SecretKey {
        kid: KID.into(),
        secret: meshcall::auth::Secret::new(b"another-secret-xyz0123".to_vec()),
        channel_patterns: meshcall::auth::PatternSet::any(),
        actions: meshcall::auth::Actions::all(),
        app: String::new(),
    };
    let req = MintRequest {
        sub: "mallory".into(),
        ttl_secs: 60,
        ..MintRequest::default()
    };
    let (forged, _) = meshcall::auth::mint(&wrong, &req, unix_now()).expect("mint");
    assert_eq!(
        closed_with(addr, &format!("token={forged}")).await,
        Some(4001)
    );
    // Already expired.
    let key = &keys().secret_keys[0];
    let (old, _) = meshcall::auth::mint(key, &req, unix_now() - 120).expect("mint");
    assert_eq!(closed_with(addr, &format!("token={old}")).await, Some(4002));
    // Origin allow-list: checked only when an Origin header is sent.
    for (origin, want) in [
        ("https://evil.example", Some(4001)),
        ("https://good.example", None),
    ] {
        let mut req = format!("ws://{addr}/v1?key={PK}")
            .into_client_request()
            .expect("req");
        req.headers_mut()
            .insert("Origin", origin.parse().expect("header"));
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("upgrade");
        match want {
            Some(code) => assert_eq!(
                close_code(&mut ws, Duration::from_secs(5)).await,
                Some(code)
            ),
            None => assert_eq!(recv(&mut ws).await["type"], "welcome"),
        }
    }
    let (status, metrics) = http(addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("meshcall_auth_failures_total 6"),
        "{metrics}"
    );
}

#[tokio::test]
async fn presence_snapshot_diffs_and_ordering() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let (mut alice, _) = connect(addr, "alice", "Alice").await;
    let snap = subscribe(&mut alice, "room").await;
    assert_eq!(
        snap,
        json!({"type":"presence","channel":"room","joined":[],"left":[]})
    );

    let (mut bob, _) = connect(addr, "bob", "Bob").await;
    // Bob subscribes and immediately sends a direct: alice must see the join diff first.
    send(
        &mut bob,
        json!({"type":"subscribe","channel":"room","requestId":"s1"}),
    )
    .await;
    send(
        &mut bob,
        json!({"type":"send","to":"alice","data":{"sdp":"offer"},"requestId":"d1"}),
    )
    .await;
    assert_eq!(recv(&mut bob).await, json!({"type":"ack","requestId":"s1"}));
    assert_eq!(
        recv(&mut bob).await,
        json!({"type":"presence","channel":"room","joined":[{"peerId":"alice","metadata":{"username":"Alice"}}],"left":[]})
    );
    assert_eq!(recv(&mut bob).await, json!({"type":"ack","requestId":"d1"}));
    assert_eq!(
        recv(&mut alice).await,
        json!({"type":"presence","channel":"room","joined":[{"peerId":"bob","metadata":{"username":"Bob"}}],"left":[]})
    );
    assert_eq!(
        recv(&mut alice).await,
        json!({"type":"direct","from":"bob","data":{"sdp":"offer"},"fromMetadata":{"username":"Bob"}})
    );

    // A second connection of bob: no new join for alice; closing one keeps him present.
    let (mut bob2, _) = connect(addr, "bob", "Bob").await;
    let snap = subscribe(&mut bob2, "room").await;
    assert_eq!(
        snap["joined"],
        json!([{"peerId":"alice","metadata":{"username":"Alice"}}])
    );
    silent(&mut alice, 200).await;
    bob2.close(None).await.expect("close");
    silent(&mut alice, 300).await;
    // Dropping the last connection without a close frame still produces `left`.
    drop(bob);
    assert_eq!(
        recv(&mut alice).await,
        json!({"type":"presence","channel":"room","joined":[],"left":[{"peerId":"bob"}]})
    );
    let (status, body) = http(
        addr,
        "GET",
        "/v1/channels/room/peers",
        Some(&bearer()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        body,
        json!({"channel":"room","peers":[{"peerId":"alice","metadata":{"username":"Alice"}}]})
    );
}

#[tokio::test]
async fn publish_and_send_routing() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let (mut alice, _) = connect(addr, "alice", "Alice").await;
    let (mut bob, _) = connect(addr, "bob", "Bob").await;
    let (mut carol, _) = connect(addr, "carol", "Carol").await;
    send(
        &mut alice,
        json!({"type":"subscribe","channel":"chat","requestId":"a","includeSenderMetadata":true}),
    )
    .await;
    recv(&mut alice).await;
    recv(&mut alice).await;
    subscribe(&mut bob, "chat").await;
    recv(&mut alice).await; // bob joined
    send(
        &mut carol,
        json!({"type":"publish","channel":"chat","data":{"text":"hi"},"requestId":"p1"}),
    )
    .await;
    assert_eq!(
        recv(&mut carol).await,
        json!({"type":"ack","requestId":"p1"})
    );
    assert_eq!(
        recv(&mut alice).await,
        json!({"type":"message","channel":"chat","from":"carol","data":{"text":"hi"},"fromMetadata":{"username":"Carol"}})
    );
    assert_eq!(
        recv(&mut bob).await,
        json!({"type":"message","channel":"chat","from":"carol","data":{"text":"hi"}})
    );
    // The publisher never receives its own message.
    send(
        &mut bob,
        json!({"type":"publish","channel":"chat","data":[1,null,"x"]}),
    )
    .await;
    assert_eq!(recv(&mut alice).await["data"], json!([1, null, "x"]));
    silent(&mut bob, 200).await;
    // Direct: fromMetadata always.
    send(
        &mut alice,
        json!({"type":"send","to":"carol","data":"psst"}),
    )
    .await;
    assert_eq!(
        recv(&mut carol).await,
        json!({"type":"direct","from":"alice","data":"psst","fromMetadata":{"username":"Alice"}})
    );
    // Ping / pong.
    send(&mut carol, json!({"type":"ping"})).await;
    assert_eq!(recv(&mut carol).await, json!({"type":"pong"}));
    send(&mut carol, json!({"type":"ping","requestId":"pp"})).await;
    assert_eq!(
        recv(&mut carol).await,
        json!({"type":"pong","requestId":"pp"})
    );
}

#[tokio::test]
async fn every_error_code_over_the_wire() {
    let mut cfg = config();
    cfg.hub.max_channels_per_connection = 2;
    cfg.hub.message_quota = Some(3);
    let server = start(cfg).await;
    let addr = server.local_addr();
    let limited = token_with(MintRequest {
        sub: "lim".into(),
        ttl_secs: 60,
        channels: Some(vec!["allowed-*".into()]),
        permissions: Some(vec![
            meshcall::auth::Action::Subscribe,
            meshcall::auth::Action::Presence,
        ]),
        ..MintRequest::default()
    });
    let mut lim = connect_raw(addr, &format!("token={limited}")).await;
    recv(&mut lim).await;
    let (mut a, _) = connect(addr, "alice", "Alice").await;

    let cases: Vec<(&mut Ws, Value, &str)> = vec![];
    drop(cases);
    async fn expect_error(ws: &mut Ws, frame: Value, code: &str) {
        send(ws, frame.clone()).await;
        let e = recv(ws).await;
        assert_eq!(e["type"], "error", "{frame} → {e}");
        assert_eq!(e["code"], code, "{frame} → {e}");
        assert!(e["message"].is_string());
    }
    ws_text(&mut a, "{{{").await;
    let e = recv(&mut a).await;
    assert_eq!(
        (e["code"].as_str(), e.get("requestId")),
        (Some("malformed_message"), None)
    );
    a.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("send");
    assert_eq!(recv(&mut a).await["code"], "malformed_message");
    expect_error(
        &mut a,
        json!({"type":"teleport","requestId":"r"}),
        "unknown_type",
    )
    .await;
    expect_error(
        &mut a,
        json!({"type":"subscribe","channel":"","requestId":"r"}),
        "invalid_channel",
    )
    .await;
    expect_error(
        &mut a,
        json!({"type":"subscribe","channel":"x".repeat(257),"requestId":"r"}),
        "invalid_channel",
    )
    .await;
    expect_error(
        &mut a,
        json!({"type":"send","to":"bad\nid","data":1,"requestId":"r"}),
        "invalid_peer_id",
    )
    .await;
    expect_error(
        &mut a,
        json!({"type":"subscribe","channel":"_internal/x","requestId":"r"}),
        "channel_reserved",
    )
    .await;
    expect_error(
        &mut lim,
        json!({"type":"subscribe","channel":"other","requestId":"r"}),
        "channel_not_authorized",
    )
    .await;
    expect_error(
        &mut lim,
        json!({"type":"publish","channel":"allowed-1","data":1,"requestId":"r"}),
        "action_not_permitted",
    )
    .await;
    expect_error(
        &mut a,
        json!({"type":"publish","channel":"c","requestId":"r"}),
        "missing_data",
    )
    .await;
    expect_error(
        &mut a,
        json!({"type":"send","to":"nobody","data":1,"requestId":"r"}),
        "peer_not_found",
    )
    .await;
    subscribe(&mut a, "c1").await;
    subscribe(&mut a, "c2").await;
    expect_error(
        &mut a,
        json!({"type":"subscribe","channel":"c3","requestId":"r"}),
        "channel_limit_exceeded",
    )
    .await;
    // Quota: 3 attempts counted (missing_data is refused before counting; peer_not_found counts).
    send(
        &mut a,
        json!({"type":"publish","channel":"c1","data":1,"requestId":"q1"}),
    )
    .await;
    assert_eq!(recv(&mut a).await["type"], "ack");
    send(
        &mut a,
        json!({"type":"publish","channel":"c1","data":1,"requestId":"q2"}),
    )
    .await;
    assert_eq!(recv(&mut a).await["type"], "ack");
    expect_error(
        &mut a,
        json!({"type":"publish","channel":"c1","data":1,"requestId":"q3"}),
        "over_message_quota",
    )
    .await;
    // The limited connection is still usable: refusals are error frames, not closes.
    let snap = subscribe(&mut lim, "allowed-1").await;
    assert_eq!(snap["joined"], json!([]));
}

async fn ws_text(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.to_string().into()))
        .await
        .expect("send");
}

#[tokio::test]
async fn oversize_frame_closes_with_1009_and_others_see_left() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let (mut watcher, _) = connect(addr, "watcher", "W").await;
    subscribe(&mut watcher, "room").await;
    let (mut big, _) = connect(addr, "big", "B").await;
    subscribe(&mut big, "room").await;
    recv(&mut watcher).await;
    let pad = "x".repeat(65_537);
    ws_text(
        &mut big,
        &format!(r#"{{"type":"publish","channel":"room","data":"{pad}"}}"#),
    )
    .await;
    assert_eq!(
        close_code(&mut big, Duration::from_secs(5)).await,
        Some(1009)
    );
    assert_eq!(recv(&mut watcher).await["left"], json!([{"peerId":"big"}]));
    // Just under the limit is fine.
    let (mut ok, _) = connect(addr, "ok", "O").await;
    let pad = "y".repeat(65_000);
    ws_text(
        &mut ok,
        &format!(r#"{{"type":"publish","channel":"room","data":"{pad}","requestId":"r"}}"#),
    )
    .await;
    assert_eq!(recv(&mut ok).await["type"], "ack");
    assert_eq!(
        recv(&mut watcher).await["data"].as_str().map(str::len),
        Some(65_000)
    );
}

#[tokio::test]
async fn rate_limit_closes_with_4011() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let (mut fast, _) = connect(addr, "fast", "F").await;
    for _ in 0..260 {
        if fast
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let mut pongs = 0;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), fast.next())
            .await
            .expect("frame")
        {
            Some(Ok(Message::Text(_))) => pongs += 1,
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            _ => break None,
        }
    };
    assert_eq!(code, Some(4011));
    assert!(
        (200..=205).contains(&pongs),
        "burst of about 200 answered, got {pongs}"
    );
}

#[tokio::test]
async fn concurrent_cap_closes_with_4010() {
    let mut cfg = config();
    cfg.hub.max_connections = 2;
    let server = start(cfg).await;
    let addr = server.local_addr();
    let (_a, _) = connect(addr, "a", "A").await;
    let (b, _) = connect(addr, "b", "B").await;
    assert_eq!(
        closed_with(addr, &format!("token={}", token("c", "C"))).await,
        Some(4010)
    );
    drop(b);
    // The slot frees up once the server notices the socket is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut ws = connect_raw(addr, &format!("token={}", token("c", "C"))).await;
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("welcome") => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("slot never freed: {other:?}"),
        }
    }
}

#[tokio::test]
async fn token_expiry_closes_with_4002_250ms_early() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let t = token_with(MintRequest {
        sub: "short".into(),
        ttl_secs: 2,
        ..MintRequest::default()
    });
    let mut ws = connect_raw(addr, &format!("token={t}")).await;
    let w = recv(&mut ws).await;
    let exp_ms = w["expiresAt"].as_u64().expect("exp") * 1000;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(4)).await,
        Some(4002)
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    assert!(now_ms < exp_ms, "closed before exp ({now_ms} vs {exp_ms})");
    assert!(
        now_ms + 600 > exp_ms,
        "closed about 250 ms before exp ({now_ms} vs {exp_ms})"
    );
}

#[tokio::test]
async fn unauthorized_subscribe_can_close_with_4003() {
    let mut cfg = config();
    cfg.hub.close_on_unauthorized_subscribe = true;
    let server = start(cfg).await;
    let t = token_with(MintRequest {
        sub: "p".into(),
        ttl_secs: 60,
        channels: Some(vec!["mine".into()]),
        ..MintRequest::default()
    });
    let mut ws = connect_raw(server.local_addr(), &format!("token={t}")).await;
    recv(&mut ws).await;
    send(
        &mut ws,
        json!({"type":"subscribe","channel":"theirs","requestId":"r"}),
    )
    .await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(4003)
    );
}

#[tokio::test]
async fn keepalive_drops_a_silent_peer() {
    let mut cfg = config();
    cfg.shell.keepalive_interval = Duration::from_millis(500);
    cfg.shell.keepalive_grace = Duration::from_millis(500);
    let server = start(cfg).await;
    let addr = server.local_addr();
    let (mut alive, _) = connect(addr, "alive", "A").await;
    subscribe(&mut alive, "room").await;
    let (mut mute, _) = connect(addr, "mute", "M").await;
    subscribe(&mut mute, "room").await;
    assert_eq!(
        recv(&mut alive).await["joined"],
        json!([{"peerId":"mute","metadata":{"username":"M"}}])
    );
    // `mute` is never polled again, so it never answers the server's pings; `alive` keeps
    // reading (tungstenite answers pings while reading) and must stay.
    let started = Instant::now();
    let left = recv(&mut alive).await;
    assert_eq!(left["left"], json!([{"peerId":"mute"}]));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "dropped too early: {waited:?}"
    );
    send(&mut alive, json!({"type":"ping"})).await;
    assert_eq!(recv(&mut alive).await["type"], "pong");
    drop(mute);
}

#[tokio::test]
async fn per_ip_connect_rate_gets_http_429() {
    let mut cfg = config();
    cfg.shell.connects_per_ip_per_minute = 3;
    let server = start(cfg).await;
    let addr = server.local_addr();
    for _ in 0..3 {
        let _ = connect(addr, "x", "X").await;
    }
    let err = tokio_tungstenite::connect_async(format!("ws://{addr}/v1?key={PK}"))
        .await
        .expect_err("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 429),
        other => panic!("expected HTTP 429, got {other}"),
    }
}

/// Behind a trusted load balancer each client has its own budget (named by X-Forwarded-For);
/// the same header from an untrusted source changes nothing.
#[tokio::test]
async fn a_trusted_proxy_forwards_the_client_address_for_the_connect_budget() {
    async fn attempt(addr: std::net::SocketAddr, forwarded_for: &str) -> u16 {
        let mut req = format!("ws://{addr}/v1?key={PK}")
            .into_client_request()
            .expect("request");
        req.headers_mut()
            .insert("x-forwarded-for", forwarded_for.parse().expect("header"));
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => 101,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            Err(e) => panic!("{e}"),
        }
    }
    let mut cfg = config();
    cfg.shell.connects_per_ip_per_minute = 2;
    cfg.shell.trusted_proxies =
        meshcall::server::limits::TrustedProxies::parse(&["127.0.0.1".into()]).expect("parse");
    let server = start(cfg).await;
    let addr = server.local_addr();
    assert_eq!(attempt(addr, "203.0.113.1").await, 101);
    assert_eq!(attempt(addr, "203.0.113.1").await, 101);
    assert_eq!(
        attempt(addr, "203.0.113.1").await,
        429,
        "that client's budget is spent"
    );
    assert_eq!(
        attempt(addr, "203.0.113.2").await,
        101,
        "another client is not"
    );

    // Without trust, the header is ignored: the loopback peer's own budget applies.
    let mut cfg = config();
    cfg.shell.connects_per_ip_per_minute = 2;
    let server = start(cfg).await;
    let addr = server.local_addr();
    assert_eq!(attempt(addr, "203.0.113.1").await, 101);
    assert_eq!(attempt(addr, "203.0.113.2").await, 101);
    assert_eq!(
        attempt(addr, "203.0.113.3").await,
        429,
        "a client cannot rotate headers"
    );
}

#[tokio::test]
async fn graceful_shutdown_sends_going_away_then_1001() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let (mut a, _) = connect(addr, "a", "A").await;
    let stop = tokio::spawn(server.shutdown());
    let ga = recv(&mut a).await;
    assert_eq!(ga["type"], "going_away");
    let retry = ga["retryAfterMs"].as_u64().expect("retryAfterMs");
    assert!((1000..=5000).contains(&retry), "{retry}");
    assert_eq!(close_code(&mut a, Duration::from_secs(5)).await, Some(1001));
    stop.await.expect("shutdown completes");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn rest_control_plane() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let auth = bearer();
    // Auth: missing, wrong secret, unknown kid, publishable key → identical 401.
    for cred in [
        None,
        Some(format!("{KID}:wrong")),
        Some(format!("nokid:{SECRET}")),
        Some(PK.to_string()),
    ] {
        let (status, body) = http(addr, "GET", "/v1/usage", cred.as_deref(), None).await;
        assert_eq!(status, 401, "{cred:?}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).expect("json")["error"],
            "unauthorized"
        );
    }
    // Mint a token over REST and connect with it.
    let (status, body) = http(
        addr,
        "POST",
        "/v1/tokens",
        Some(&auth),
        Some(r#"{"peerId":"u_rest","channels":["room"],"expiresInSec":60,"peerMetadata":{"username":"Rest"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let minted: Value = serde_json::from_str(&body).expect("json");
    let exp = minted["expiresAt"].as_u64().expect("expiresAt");
    assert!(exp >= unix_now() + 58);
    let mut ws = connect_raw(
        addr,
        &format!("token={}", minted["token"].as_str().expect("token")),
    )
    .await;
    assert_eq!(recv(&mut ws).await["peerId"], "u_rest");
    send(
        &mut ws,
        json!({"type":"subscribe","channel":"room","requestId":"s","includeSenderMetadata":true}),
    )
    .await;
    recv(&mut ws).await;
    recv(&mut ws).await;
    for (body, status) in [
        (r#"{"peerId":""}"#, 400),
        (r#"{"peerId":"x","expiresInSec":86401}"#, 400),
        (r#"{"peerId":"x","permissions":["fly"]}"#, 400),
        (r#"{"peerId":"x","channels":["_metered/x"]}"#, 400),
        ("not json", 400),
    ] {
        assert_eq!(
            http(addr, "POST", "/v1/tokens", Some(&auth), Some(body))
                .await
                .0,
            status,
            "{body}"
        );
    }
    let huge = format!(
        r#"{{"peerId":"x","metadata":{{"pad":"{}"}}}}"#,
        "p".repeat(33 * 1024)
    );
    let (status, body) = http(addr, "POST", "/v1/tokens", Some(&auth), Some(&huge)).await;
    assert_eq!(status, 413, "{body}");
    // Server-side publish reaches the subscriber with the given sender.
    let (status, body) = http(
        addr,
        "POST",
        "/v1/channels/room/publish",
        Some(&auth),
        Some(r#"{"data":{"notice":"maintenance"},"peerMetadata":{"kind":"bot"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({"channel":"room","delivered":1})
    );
    assert_eq!(
        recv(&mut ws).await,
        json!({"type":"message","channel":"room","from":"system","data":{"notice":"maintenance"},"fromMetadata":{"kind":"bot"}})
    );
    assert_eq!(
        http(
            addr,
            "POST",
            "/v1/channels/room/publish",
            Some(&auth),
            Some("{}")
        )
        .await
        .0,
        400
    );
    assert_eq!(
        http(
            addr,
            "GET",
            "/v1/channels/_system%2Fx/peers",
            Some(&auth),
            None
        )
        .await
        .0,
        400
    );
    // URL-encoded channel names with a slash.
    let (status, body) = http(
        addr,
        "GET",
        "/v1/channels/app%2Froom-1/peers",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({"channel":"app/room-1","peers":[]})
    );
    // Usage.
    let (status, body) = http(addr, "GET", "/v1/usage", Some(&auth), None).await;
    assert_eq!(status, 200);
    let usage: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(usage["concurrentNow"], 1);
    assert_eq!(usage["messagesUsed"], 1);
    assert!(usage["plan"]["name"].is_string());
    // Kick: 4020 on every socket of the peer.
    let (status, body) = http(addr, "DELETE", "/v1/peers/u_rest", Some(&auth), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({"peerId":"u_rest","closed":1})
    );
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        Some(4020)
    );
    let (_, body) = http(addr, "DELETE", "/v1/peers/u_rest", Some(&auth), None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["closed"],
        0
    );
    // Health, metrics, unknown path.
    let (status, body) = http(addr, "GET", "/healthz", None, None).await;
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&body).expect("json")["status"].clone()
        ),
        (200, json!("ok"))
    );
    let (status, metrics) = http(addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    for needle in [
        "meshcall_closes_total{code=\"4020\"} 1",
        "meshcall_frames_in_total{type=\"subscribe\"} 1",
        "meshcall_frames_out_total{type=\"message\"} 1",
        "meshcall_fanout_latency_seconds_count",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    let (status, body) = http(addr, "GET", "/v2/nothing", None, None).await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["error"],
        "not_found"
    );
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_closed_with_1008_and_leaves() {
    let mut cfg = config();
    cfg.shell.outbox_capacity = 16;
    let server = start(cfg).await;
    let addr = server.local_addr();
    let (mut slow, _) = connect(addr, "slow", "S").await;
    subscribe(&mut slow, "room").await;
    let (mut talker, _) = connect(addr, "talker", "T").await;
    // ~9 MB towards `slow`, which reads nothing: kernel buffers fill, then its queue.
    let pad = "z".repeat(60_000);
    for i in 0..150 {
        let frame =
            format!(r#"{{"type":"publish","channel":"room","data":{{"i":{i},"pad":"{pad}"}}}}"#);
        talker
            .send(Message::Text(frame.into()))
            .await
            .expect("send");
    }
    send(&mut talker, json!({"type":"ping"})).await;
    assert_eq!(
        recv(&mut talker).await["type"],
        "pong",
        "the talker is unaffected"
    );
    // The hub forgets `slow` at once: it leaves the channel's presence.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = http(
            addr,
            "GET",
            "/v1/channels/room/peers",
            Some(&bearer()),
            None,
        )
        .await;
        if body.contains(r#""peers":[]"#) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slow consumer still present: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // When `slow` finally reads, it finds fewer than all messages and then a 1008 close.
    let mut got = 0;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next())
            .await
            .expect("frame")
        {
            Some(Ok(Message::Text(_))) => got += 1,
            Some(Ok(Message::Close(f))) => break f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            _ => break None,
        }
    };
    assert_eq!(code, Some(1008));
    assert!(got < 150, "slow consumer was cut off early, got {got}");
    let (_, metrics) = http(addr, "GET", "/metrics", None, None).await;
    assert!(
        metrics.contains("meshcall_slow_consumers_total 1"),
        "{metrics}"
    );
}

/// A client the server has closed cannot keep its socket, and the frames queued for it, alive by
/// talking without reading: once closed, both halves end within the close timeout.
#[tokio::test]
async fn a_closed_client_that_keeps_talking_and_never_reads_is_dropped() {
    let mut cfg = config();
    cfg.shell.outbox_capacity = 16;
    cfg.shell.close_timeout = Duration::from_secs(1);
    let server = start(cfg).await;
    let addr = server.local_addr();
    let (mut slow, _) = connect(addr, "slow", "S").await;
    subscribe(&mut slow, "room").await;
    let (mut slow_tx, _never_read) = slow.split();
    let (mut talker, _) = connect(addr, "talker", "T").await;
    assert_eq!(server.open_sockets(), 2);
    let pad = "z".repeat(60_000);
    for i in 0..150 {
        let frame =
            format!(r#"{{"type":"publish","channel":"room","data":{{"i":{i},"pad":"{pad}"}}}}"#);
        talker
            .send(Message::Text(frame.into()))
            .await
            .expect("send");
    }
    send(&mut talker, json!({"type":"ping"})).await;
    assert_eq!(recv(&mut talker).await["type"], "pong");
    assert_eq!(server.connection_count(), 1, "the hub closed the slow one");
    // `slow` pings every 200 ms and never reads. The server must still let go of it.
    let started = Instant::now();
    while server.open_sockets() > 1 && started.elapsed() < Duration::from_secs(8) {
        let _ = slow_tx
            .send(Message::Text(json!({"type":"ping"}).to_string().into()))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = started.elapsed();
    assert_eq!(
        server.open_sockets(),
        1,
        "the closed client's socket is still served after {held:?}"
    );
    assert!(held < Duration::from_secs(4), "dropped only after {held:?}");
    send(&mut talker, json!({"type":"ping"})).await;
    assert_eq!(
        recv(&mut talker).await["type"],
        "pong",
        "the talker is unaffected"
    );
}

/// A REST client that sends its headers but trickles the body (a byte every 500 ms) gets
/// 408 once the request timeout has passed, instead of holding the request open.
#[tokio::test]
async fn a_client_trickling_a_rest_body_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = config();
    cfg.shell.request_timeout = Duration::from_secs(2);
    let server = start(cfg).await;
    let addr = server.local_addr();
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    let head = format!(
        "POST /v1/channels/room/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        bearer()
    );
    w.write_all(head.as_bytes()).await.expect("headers");
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..10 {
            if w.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    });
    let response = tokio::time::timeout(Duration::from_secs(8), reader)
        .await
        .expect("an answer within 8 s")
        .expect("reader");
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    trickle.abort();
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    let server = start(config()).await;
    let (mut ws, _) = connect(server.local_addr(), "polite", "P").await;
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .expect("close sent");
    // RFC 6455 §5.5.1: the server echoes a close; tungstenite surfaces it as Message::Close.
    let echoed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("answer within 5 s");
    assert_eq!(echoed, Some(1000));
}

/// Slowloris: a client that trickles its request headers one byte at a time must not hold a
/// socket for ever. The server gives up once the header-read timeout has passed.
#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = config();
    cfg.shell.header_read_timeout = Duration::from_secs(2);
    let server = start(cfg).await;
    let mut s = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let request = b"GET /v1?token=x HTTP/1.1\r\nHost: meshcall\r\nUpgrade: websocket\r\n";
    let started = std::time::Instant::now();
    let mut closed_after = None;
    for &b in request.iter() {
        if s.write_all(&[b]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        // Read with a short wait: the server answers (408 or nothing) and closes.
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(_)) => {} // a 408 response; the close follows
            Err(_) => {}    // still open
        }
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let closed_after = closed_after.expect("the trickling connection was never closed");
    assert!(
        closed_after < Duration::from_secs(5),
        "closed only after {closed_after:?}"
    );
}

/// A TCP connection that never completes its first request is dropped within the header-read
/// timeout, whatever it sends: nothing at all, one byte, or a trickled HTTP/2 preface (before
/// any request the server does not yet know which protocol it speaks, so hyper's own HTTP/1
/// header timer does not run yet).
#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut cfg = config();
    cfg.shell.header_read_timeout = Duration::from_secs(2);
    let server = start(cfg).await;
    let addr = server.local_addr();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for (what, bytes) in [
        ("nothing", &b""[..]),
        ("one byte", &b"G"[..]),
        ("a trickled HTTP/2 preface", &preface[..]),
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let started = std::time::Instant::now();
        let mut closed_after = None;
        let mut sent = 0;
        while started.elapsed() < Duration::from_secs(8) {
            if sent < bytes.len() {
                if s.write_all(&bytes[sent..sent + 1]).await.is_err() {
                    closed_after = Some(started.elapsed());
                    break;
                }
                sent += 1;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(700), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed_after = Some(started.elapsed());
                    break;
                }
                Ok(Ok(_)) | Err(_) => {}
            }
        }
        let closed_after = closed_after.unwrap_or_else(|| panic!("{what}: never closed"));
        assert!(
            closed_after < Duration::from_secs(4),
            "{what}: closed only after {closed_after:?}"
        );
    }
    // One complete request, then silence on the kept-alive connection: dropped as well.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: meshcall\r\n\r\n")
        .await
        .expect("request");
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.expect("response");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "the request itself is served"
    );
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "an idle keep-alive connection was never closed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "idle keep-alive closed only after {:?}",
        started.elapsed()
    );
}

/// Two signing keys configured as separate apps share nothing: the same peer id minted by the
/// other key neither receives directs nor shows in presence, publishes stay within the app, and
/// a REST kick or presence query reaches only the calling key's app.
#[tokio::test]
async fn apps_on_different_keys_share_nothing() {
    use meshcall::auth::{Actions, PatternSet, Secret, SecretKey, mint};
    const KID_B: &str = "other-app-kid";
    const SECRET_B: &str = "other-app-secret-0123456789";
    let mut ring = keys();
    ring.secret_keys[0].app = "app-a".into();
    let key_b = SecretKey {
        kid: KID_B.into(),
        secret: Secret::new(SECRET_B.as_bytes().to_vec()),
        channel_patterns: PatternSet::any(),
        actions: Actions::all(),
        app: "app-b".into(),
    };
    ring.secret_keys.push(key_b.clone());
    let server = start(meshcall::server::ServerConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        ring,
    ))
    .await;
    let addr = server.local_addr();
    let (mut alice, _) = connect(addr, "alice", "Alice").await;
    let (mut bob, _) = connect(addr, "bob", "Bob").await;
    let impostor_token = mint(
        &key_b,
        &MintRequest {
            sub: "alice".into(),
            ttl_secs: 600,
            peer_metadata: Some(json!({"username": "Mallory"})),
            ..MintRequest::default()
        },
        unix_now(),
    )
    .expect("mint")
    .0;
    let mut impostor = connect_raw(addr, &format!("token={impostor_token}")).await;
    assert_eq!(recv(&mut impostor).await["type"], "welcome");

    // Presence: each app sees only its own members of "room".
    subscribe(&mut alice, "room").await;
    let snap = subscribe(&mut bob, "room").await;
    assert_eq!(
        snap["joined"],
        json!([{"peerId":"alice","metadata":{"username":"Alice"}}])
    );
    assert_eq!(recv(&mut alice).await["joined"][0]["peerId"], "bob");
    let snap = subscribe(&mut impostor, "room").await;
    assert_eq!(snap["joined"], json!([]), "app B's room is empty: {snap}");
    silent(&mut alice, 200).await;
    silent(&mut bob, 200).await;

    // Directs to "alice" reach app A's alice only.
    send(
        &mut bob,
        json!({"type":"send","to":"alice","data":"sdp-offer"}),
    )
    .await;
    assert_eq!(recv(&mut alice).await["data"], "sdp-offer");
    silent(&mut impostor, 300).await;
    // …and the impostor cannot reach app A's bob at all.
    send(
        &mut impostor,
        json!({"type":"send","to":"bob","data":"hi","requestId":"s1"}),
    )
    .await;
    assert_eq!(recv(&mut impostor).await["code"], "peer_not_found");
    silent(&mut bob, 200).await;

    // Publishes stay within the app.
    send(
        &mut bob,
        json!({"type":"publish","channel":"room","data":"to app A"}),
    )
    .await;
    assert_eq!(recv(&mut alice).await["data"], "to app A");
    silent(&mut impostor, 300).await;

    // Usage is per app: key B sees its one connection and one message (the refused send),
    // key A its two connections and two messages.
    let bearer_b = format!("{KID_B}:{SECRET_B}");
    let (_, body) = http(addr, "GET", "/v1/usage", Some(&bearer_b), None).await;
    let usage: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(usage["appId"], "app-b", "{usage}");
    assert_eq!(usage["concurrentNow"], 1, "{usage}");
    assert_eq!(usage["messagesUsed"], 1, "{usage}");
    let (_, body) = http(addr, "GET", "/v1/usage", Some(&bearer()), None).await;
    let usage: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(usage["appId"], "app-a", "{usage}");
    assert_eq!(usage["concurrentNow"], 2, "{usage}");
    assert_eq!(usage["messagesUsed"], 2, "{usage}");

    // REST with key B sees and kicks only app B's "alice".
    let (_, body) = http(
        addr,
        "GET",
        "/v1/channels/room/peers",
        Some(&bearer_b),
        None,
    )
    .await;
    let peers: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        peers["peers"],
        json!([{"peerId":"alice","metadata":{"username":"Mallory"}}])
    );
    let (status, body) = http(addr, "DELETE", "/v1/peers/alice", Some(&bearer_b), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        close_code(&mut impostor, Duration::from_secs(5)).await,
        Some(4020)
    );
    send(&mut alice, json!({"type":"ping"})).await;
    assert_eq!(
        recv(&mut alice).await["type"],
        "pong",
        "app A's alice stays"
    );
    let (_, body) = http(
        addr,
        "GET",
        "/v1/channels/room/peers",
        Some(&bearer()),
        None,
    )
    .await;
    let peers: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(peers["peers"].as_array().map(Vec::len), Some(2), "{body}");
}

/// Writes one raw, client-masked WebSocket frame behind the client library's back (it would
/// never send a malformed one). The mask is all zeros, so the payload goes as is.
async fn write_raw_frame(ws: &mut Ws, first_byte: u8, payload: &[u8]) {
    use tokio::io::AsyncWriteExt;
    assert!(payload.len() < 126, "short frames only");
    let mut frame = vec![first_byte, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_mut() else {
        panic!("plain TCP expected");
    };
    tcp.write_all(&frame).await.expect("raw write");
    tcp.flush().await.expect("flush");
}

/// RFC 6455 §7.4.1: a text frame that is not UTF-8 is answered with 1007, a frame that breaks
/// the framing rules (here a reserved bit no extension negotiated) with 1002, and a too-big
/// frame with 1009. A client whose TCP connection just dies is not a close at all: it must not
/// show up in the close counters as 1009.
#[tokio::test]
async fn malformed_websocket_frames_get_the_close_code_that_says_why() {
    let server = start(config()).await;
    let addr = server.local_addr();

    let (mut ws, _) = connect(addr, "utf8", "U").await;
    // FIN + text, payload 0xff 0xfe (never valid UTF-8).
    write_raw_frame(&mut ws, 0x81, &[0xff, 0xfe]).await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(3)).await,
        Some(1007)
    );

    let (mut ws, _) = connect(addr, "rsv", "R").await;
    // FIN + RSV1 + text: no extension was negotiated, so RSV1 must be zero.
    write_raw_frame(&mut ws, 0xC1, b"hi").await;
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(3)).await,
        Some(1002)
    );

    // A client that vanishes without a closing handshake.
    for i in 0..3 {
        let (mut ws, _) = connect(addr, &format!("gone-{i}"), "G").await;
        let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.get_mut() else {
            panic!("plain TCP expected");
        };
        // A zero linger makes the close an immediate RST (what a killed process or a lost
        // network looks like); it does not block, which is what the deprecation warns about.
        #[allow(deprecated)]
        tcp.set_linger(Some(Duration::ZERO)).expect("linger");
        drop(ws);
    }
    let started = Instant::now();
    while server.open_sockets() > 0 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.open_sockets(), 0, "the dead sockets were noticed");
    let (_, metrics) = http(addr, "GET", "/metrics", None, None).await;
    let counted = |code: u16| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("meshcall_closes_total{{code=\"{code}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(counted(1009), 0, "{metrics}");
    assert_eq!(counted(1007), 1, "{metrics}");
    assert_eq!(counted(1002), 1, "{metrics}");
}
