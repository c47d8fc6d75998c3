//! SignallingClient against the real server in-process (and, where the server would never
//! misbehave on purpose, against a scripted raw WebSocket listener). Every timeout is short so
//! the file runs in seconds.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

use common::*;
use meshcall::auth::MintRequest;
use meshcall::client::{
    ClientError, ClientEvent, ClientOptions, ClientState, Credential, ReconnectPolicy,
    SignallingClient,
};

type Events = mpsc::Receiver<ClientEvent>;

/// Options with test-sized timers: fast reconnects, short ack/welcome timeouts.
fn opts(origin: &str, credential: Credential) -> ClientOptions {
    let mut o = ClientOptions::new(origin, credential);
    o.reconnect = Some(ReconnectPolicy {
        initial: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        ..ReconnectPolicy::default()
    });
    o.ack_timeout = Duration::from_secs(3);
    o.welcome_timeout = Duration::from_secs(3);
    o.resubscribe_retry_interval = Duration::from_millis(200);
    o
}

fn fixed_token(t: String) -> Credential {
    Credential::token_provider(move || {
        let t = t.clone();
        async move { Ok(t) }
    })
}

/// A connected client for `sub` (peerMetadata.username = name).
async fn connected(origin: &str, sub: &str, name: &str) -> (SignallingClient, Events) {
    let (c, mut rx) =
        SignallingClient::new(opts(origin, fixed_token(token(sub, name)))).expect("valid options");
    let info = c.connect().await.expect("connects");
    assert_eq!(info.peer_id, sub);
    wait_for(&mut rx, "Connected", |e| {
        matches!(e, ClientEvent::Connected(_))
    })
    .await;
    (c, rx)
}

/// Next event matching `pred` within 8 s; the others are skipped (and listed on failure).
async fn wait_for(rx: &mut Events, what: &str, pred: impl Fn(&ClientEvent) -> bool) -> ClientEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let mut skipped = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(ev)) if pred(&ev) => return ev,
            Ok(Some(ev)) => skipped.push(ev),
            Ok(None) => panic!("event stream ended waiting for {what}; skipped {skipped:#?}"),
            Err(_) => panic!("no {what} within 8 s; skipped {skipped:#?}"),
        }
    }
}

/// Every event that arrives within `ms`.
async fn drain(rx: &mut Events, ms: u64) -> Vec<ClientEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    let mut out = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        out.push(ev);
    }
    out
}

fn presence_ids(peers: &[meshcall::client::PresencePeer]) -> Vec<&str> {
    peers.iter().map(|p| p.peer_id.as_str()).collect()
}

#[tokio::test]
async fn connects_with_a_token_and_with_the_publishable_key() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let before = unix_now();
    let tok = token_with(MintRequest {
        sub: "alice".into(),
        ttl_secs: 600,
        metadata: Some(json!({"iceServers": [
            {"urls": "stun:127.0.0.1:3478"},
            {"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "c"}
        ], "room": "r1"})),
        ..MintRequest::default()
    });
    let (c, mut rx) = SignallingClient::new(opts(&origin, fixed_token(tok))).expect("options");
    let info = c.connect().await.expect("connects");
    assert_eq!(info.peer_id, "alice");
    assert!(!info.is_reconnect);
    assert_eq!(info.max_message_size, 65536);
    assert!(info.expires_at.expect("token expiry") >= before + 599);
    assert!(info.server_time >= before);
    assert_eq!(info.metadata.as_ref().expect("metadata")["room"], "r1");
    let ice = info.ice_servers.expect("valid list");
    assert_eq!(ice.len(), 2);
    assert_eq!(ice[1].username.as_deref(), Some("u"));
    assert_eq!(c.ice_servers().map(|l| l.len()), Some(2));
    assert_eq!(c.state(), ClientState::Connected);
    assert_eq!(c.peer_id().as_deref(), Some("alice"));
    // Event order: Idle→Connecting, Connecting→Connected, Connected.
    let evs = drain(&mut rx, 100).await;
    assert!(
        matches!(
            evs.as_slice(),
            [
                ClientEvent::StateChanged {
                    from: ClientState::Idle,
                    to: ClientState::Connecting
                },
                ClientEvent::StateChanged {
                    from: ClientState::Connecting,
                    to: ClientState::Connected
                },
                ClientEvent::Connected(_)
            ]
        ),
        "{evs:#?}"
    );
    assert!(matches!(
        c.connect().await,
        Err(ClientError::AlreadyConnecting)
    ));

    // Publishable key: server-assigned UUID, no expiry, no ICE servers.
    let (k, _krx) = SignallingClient::new(opts(&origin, Credential::api_key(PK))).expect("options");
    let info = k.connect().await.expect("connects with the key");
    assert_eq!(info.peer_id.len(), 36, "{}", info.peer_id);
    assert_eq!(info.expires_at, None);
    assert!(info.ice_servers.is_none());

    // A hostile iceServers list is voided whole, the connection itself is fine.
    let bad = token_with(MintRequest {
        sub: "mallory".into(),
        ttl_secs: 600,
        metadata: Some(json!({"iceServers": [{"urls": "stun:ok"}, {"urls": "javascript:x"}]})),
        ..MintRequest::default()
    });
    let (m, _mrx) = SignallingClient::new(opts(&origin, fixed_token(bad))).expect("options");
    let info = m.connect().await.expect("connects");
    assert!(info.ice_servers.is_none());
    assert!(m.ice_servers().is_none());
}

#[tokio::test]
async fn subscribe_yields_the_presence_snapshot_then_diffs() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let (alice, mut arx) = connected(&origin, "alice", "Alice").await;
    alice.subscribe("room", false).await.expect("subscribed");
    let snap = wait_for(&mut arx, "snapshot", |e| {
        matches!(e, ClientEvent::Presence { .. })
    })
    .await;
    let ClientEvent::Presence {
        channel,
        joined,
        left,
    } = snap
    else {
        unreachable!()
    };
    assert_eq!(channel, "room");
    assert!(
        joined.is_empty() && left.is_empty(),
        "empty snapshot is still sent"
    );
    assert_eq!(alice.tracked_channels(), vec![("room".to_string(), false)]);

    let (bob, mut brx) = connected(&origin, "bob", "Bob").await;
    bob.subscribe("room", false).await.expect("subscribed");
    let ClientEvent::Presence { joined, .. } = wait_for(&mut brx, "bob's snapshot", |e| {
        matches!(e, ClientEvent::Presence { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(presence_ids(&joined), ["alice"]);
    assert_eq!(joined[0].metadata, Some(json!({"username": "Alice"})));
    let ClientEvent::Presence { joined, .. } = wait_for(&mut arx, "diff", |e| {
        matches!(e, ClientEvent::Presence { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(presence_ids(&joined), ["bob"]);
    assert_eq!(joined[0].metadata, Some(json!({"username": "Bob"})));

    bob.unsubscribe("room").await.expect("unsubscribed");
    assert!(bob.tracked_channels().is_empty());
    let ClientEvent::Presence { left, .. } = wait_for(&mut arx, "left", |e| {
        matches!(e, ClientEvent::Presence { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(presence_ids(&left), ["bob"]);
}

#[tokio::test]
async fn publish_and_send_round_trip_between_two_clients() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let (alice, mut arx) = connected(&origin, "alice", "Alice").await;
    let (bob, mut brx) = connected(&origin, "bob", "Bob").await;
    alice.subscribe("room", true).await.expect("subscribed");
    bob.subscribe("room", false).await.expect("subscribed");

    bob.publish("room", json!({"n": 1})).await.expect("acked");
    let ev = wait_for(&mut arx, "message", |e| {
        matches!(e, ClientEvent::Message { .. })
    })
    .await;
    let ClientEvent::Message {
        channel,
        from,
        data,
        from_metadata,
    } = ev
    else {
        unreachable!()
    };
    assert_eq!((channel.as_str(), from.as_str()), ("room", "bob"));
    assert_eq!(data, json!({"n": 1}));
    assert_eq!(
        from_metadata,
        Some(json!({"username": "Bob"})),
        "alice opted in"
    );

    alice.publish("room", json!("hi all")).await.expect("acked");
    let ClientEvent::Message {
        data,
        from_metadata,
        ..
    } = wait_for(&mut brx, "message", |e| {
        matches!(e, ClientEvent::Message { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(data, json!("hi all"));
    assert_eq!(from_metadata, None, "bob did not opt in");

    alice.send("bob", json!([1, 2, 3])).await.expect("acked");
    let ClientEvent::Direct {
        from,
        data,
        from_metadata,
    } = wait_for(&mut brx, "direct", |e| {
        matches!(e, ClientEvent::Direct { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(from, "alice");
    assert_eq!(data, json!([1, 2, 3]));
    assert_eq!(from_metadata, Some(json!({"username": "Alice"})));

    // A publisher never gets its own broadcast.
    let own = drain(&mut arx, 200).await;
    assert!(
        !own.iter().any(|e| matches!(e, ClientEvent::Message { .. })),
        "{own:#?}"
    );
}

#[tokio::test]
async fn server_errors_are_correlated_and_local_checks_run_first() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let (alice, mut arx) = connected(&origin, "alice", "Alice").await;

    match alice.send("nobody", json!(1)).await {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, "peer_not_found"),
        other => panic!("expected peer_not_found, got {other:?}"),
    }
    assert!(matches!(
        alice.send("alice", json!(1)).await,
        Err(ClientError::SelfSend)
    ));
    assert!(matches!(
        alice.send("", json!(1)).await,
        Err(ClientError::InvalidPeerId)
    ));
    assert!(matches!(
        alice.subscribe("_metered/x", false).await,
        Err(ClientError::ReservedChannel)
    ));
    assert!(matches!(
        alice.publish("", json!(1)).await,
        Err(ClientError::InvalidChannel)
    ));
    assert!(matches!(
        alice.subscribe("bad\u{7}", false).await,
        Err(ClientError::InvalidChannel)
    ));
    // The connection survived all of that.
    alice.subscribe("room", false).await.expect("still usable");
    // Correlated errors never show up as uncorrelated ServerError events.
    let evs = drain(&mut arx, 200).await;
    assert!(
        !evs.iter()
            .any(|e| matches!(e, ClientEvent::ServerError { .. })),
        "{evs:#?}"
    );

    // A subscribe the server refuses is not replayed later.
    let limited = token_with(MintRequest {
        sub: "carol".into(),
        ttl_secs: 600,
        channels: Some(vec!["allowed/*".into()]),
        ..MintRequest::default()
    });
    let (carol, _crx) = SignallingClient::new(opts(&origin, fixed_token(limited))).expect("ok");
    carol.connect().await.expect("connects");
    match carol.subscribe("other", false).await {
        Err(ClientError::Server { code, .. }) => assert_eq!(code, "channel_not_authorized"),
        other => panic!("expected channel_not_authorized, got {other:?}"),
    }
    carol.subscribe("allowed/1", false).await.expect("allowed");
    assert_eq!(
        carol.tracked_channels(),
        vec![("allowed/1".to_string(), false)]
    );
}

#[tokio::test]
async fn oversize_frames_are_refused_locally_on_the_full_envelope() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let (alice, _arx) = connected(&origin, "alice", "Alice").await;
    let (bob, mut brx) = connected(&origin, "bob", "Bob").await;
    bob.subscribe("room", false).await.expect("subscribed");
    let max = alice.max_message_size();
    assert_eq!(max, 65536);

    // The envelope is {"type":"publish","channel":"room","data":"…","requestId":"<uuid>"}.
    let empty = format!(
        r#"{{"type":"publish","channel":"room","data":"","requestId":"{}"}}"#,
        "x".repeat(36)
    );
    let fill = max - empty.len();
    alice
        .publish("room", json!("a".repeat(fill)))
        .await
        .expect("exactly max bytes is accepted by client and server");
    match alice.publish("room", json!("a".repeat(fill + 1))).await {
        Err(ClientError::TooLarge { size, max: m }) => {
            assert_eq!((size, m), (max + 1, max));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Data far below the limit can still make the envelope too big (escaping counts).
    let quotes = "\"".repeat(max / 2);
    assert!(matches!(
        alice.send("bob", json!(quotes)).await,
        Err(ClientError::TooLarge { .. })
    ));

    // Only the fitting one reached bob, and alice's socket was never closed (1009).
    let evs = drain(&mut brx, 300).await;
    let sizes: Vec<usize> = evs
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Message { data, .. } => data.as_str().map(str::len),
            ClientEvent::Direct { .. } => Some(0),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [fill]);
    assert_eq!(alice.state(), ClientState::Connected);
    alice
        .publish("room", json!("small"))
        .await
        .expect("still connected");
}

#[tokio::test]
async fn admin_kick_is_terminal() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let (alice, mut arx) = connected(&server.ws_origin(), "alice", "Alice").await;
    let (status, _) = http(addr, "DELETE", "/v1/peers/alice", Some(&bearer()), None).await;
    assert_eq!(status, 200);
    let ev = wait_for(&mut arx, "Disconnected", |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    match ev {
        ClientEvent::Disconnected {
            code,
            will_reconnect,
            ..
        } => assert_eq!((code, will_reconnect), (4020, false)),
        _ => unreachable!(),
    }
    wait_for(&mut arx, "Closed", |e| {
        matches!(
            e,
            ClientEvent::StateChanged {
                to: ClientState::Closed,
                ..
            }
        )
    })
    .await;
    assert_eq!(alice.state(), ClientState::Closed);
    assert!(matches!(
        alice.publish("room", json!(1)).await,
        Err(ClientError::NotConnected)
    ));
    // No reconnect attempt follows.
    let later = drain(&mut arx, 500).await;
    assert!(later.is_empty(), "{later:#?}");
    assert_eq!(server.connection_count(), 0);
}

#[tokio::test]
async fn token_expiry_reconnects_with_a_fresh_token_and_resubscribes() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let calls = Arc::new(AtomicUsize::new(0));
    let provider = {
        let calls = calls.clone();
        Credential::token_provider(move || {
            // First token lives 2 s (the server closes 4002 250 ms before exp), later ones 10 min.
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let ttl = if n == 0 { 2 } else { 600 };
            async move {
                Ok(token_with(MintRequest {
                    sub: "alice".into(),
                    ttl_secs: ttl,
                    ..MintRequest::default()
                }))
            }
        })
    };
    let (alice, mut arx) = SignallingClient::new(opts(&origin, provider)).expect("options");
    alice.connect().await.expect("connects");
    alice.subscribe("room", true).await.expect("subscribed");
    let (bob, _brx) = connected(&origin, "bob", "Bob").await;
    bob.subscribe("room", false).await.expect("subscribed");

    let ev = wait_for(&mut arx, "Disconnected", |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            ev,
            ClientEvent::Disconnected {
                code: 4002,
                will_reconnect: true,
                ..
            }
        ),
        "{ev:?}"
    );
    let ClientEvent::Connected(info) = wait_for(&mut arx, "reconnect", |e| {
        matches!(e, ClientEvent::Connected(_))
    })
    .await
    else {
        unreachable!()
    };
    assert!(info.is_reconnect);
    assert_eq!(info.peer_id, "alice");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "provider called again");
    // The automatic re-subscribe produces a fresh snapshot listing bob.
    let ClientEvent::Presence {
        channel, joined, ..
    } = wait_for(&mut arx, "replayed snapshot", |e| {
        matches!(e, ClientEvent::Presence { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(channel, "room");
    assert_eq!(presence_ids(&joined), ["bob"]);

    bob.publish("room", json!("after")).await.expect("acked");
    let ClientEvent::Message {
        data,
        from_metadata,
        ..
    } = wait_for(&mut arx, "message", |e| {
        matches!(e, ClientEvent::Message { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(data, json!("after"));
    assert!(from_metadata.is_some(), "includeSenderMetadata replayed");
}

#[tokio::test]
async fn going_away_then_restart_on_the_same_port() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let origin = server.ws_origin();
    let (alice, mut arx) = connected(&origin, "alice", "Alice").await;
    alice.subscribe("room", false).await.expect("subscribed");
    wait_for(&mut arx, "snapshot", |e| {
        matches!(e, ClientEvent::Presence { .. })
    })
    .await;

    let t0 = Instant::now();
    server.shutdown().await;
    let restarted = start(meshcall::server::ServerConfig::new(addr, keys())).await;
    assert_eq!(restarted.local_addr(), addr);

    let ClientEvent::GoingAway { retry_after_ms } = wait_for(&mut arx, "GoingAway", |e| {
        matches!(e, ClientEvent::GoingAway { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert!((1000..=5000).contains(&retry_after_ms), "{retry_after_ms}");
    let ev = wait_for(&mut arx, "Disconnected", |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            ev,
            ClientEvent::Disconnected {
                code: 1001,
                will_reconnect: true,
                ..
            }
        ),
        "{ev:?}"
    );
    let ClientEvent::Connected(info) = wait_for(&mut arx, "reconnect", |e| {
        matches!(e, ClientEvent::Connected(_))
    })
    .await
    else {
        unreachable!()
    };
    assert!(info.is_reconnect);
    // retryAfterMs was the floor of the delay (−20 % jitter at most).
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(retry_after_ms * 8 / 10),
        "reconnected after {waited:?}, retryAfterMs {retry_after_ms}"
    );
    wait_for(
        &mut arx,
        "replayed snapshot",
        |e| matches!(e, ClientEvent::Presence { channel, .. } if channel == "room"),
    )
    .await;

    let (bob, _brx) = connected(&restarted.ws_origin(), "bob", "Bob").await;
    bob.publish("room", json!("new server"))
        .await
        .expect("acked");
    let ClientEvent::Message { data, from, .. } = wait_for(&mut arx, "message", |e| {
        matches!(e, ClientEvent::Message { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!((from.as_str(), data), ("bob", json!("new server")));
}

#[tokio::test]
async fn first_connect_with_a_bad_token_fails_with_4001_and_is_not_retried() {
    let server = start(config()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let provider = {
        let calls = calls.clone();
        Credential::token_provider(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok("garbage".to_string()) }
        })
    };
    let (c, mut rx) = SignallingClient::new(opts(&server.ws_origin(), provider)).expect("ok");
    match c.connect().await {
        Err(ClientError::ConnectFailed { close_code, .. }) => assert_eq!(close_code, Some(4001)),
        other => panic!("expected ConnectFailed(4001), got {other:?}"),
    }
    assert_eq!(c.state(), ClientState::Closed);
    let evs = drain(&mut rx, 700).await;
    assert!(
        matches!(
            evs.as_slice(),
            [
                ClientEvent::StateChanged {
                    to: ClientState::Connecting,
                    ..
                },
                ClientEvent::StateChanged {
                    from: ClientState::Connecting,
                    to: ClientState::Closed
                }
            ]
        ),
        "{evs:#?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no retry");
}

#[tokio::test]
async fn a_refused_upgrade_reports_the_http_status() {
    let mut cfg = config();
    cfg.shell.connects_per_ip_per_minute = 1;
    let server = start(cfg).await;
    let origin = server.ws_origin();
    let (_first, _rx) = connected(&origin, "alice", "Alice").await;
    let (second, _rx2) =
        SignallingClient::new(opts(&origin, fixed_token(token("bob", "Bob")))).expect("ok");
    match second.connect().await {
        Err(ClientError::ConnectFailed { close_code, .. }) => assert_eq!(close_code, Some(429)),
        other => panic!("expected ConnectFailed(429), got {other:?}"),
    }
}

#[tokio::test]
async fn wss_with_a_trusted_test_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let mut cfg = config();
    cfg.tls = Some(meshcall::server::TlsConfig {
        cert: cert_path,
        key: key_path,
    });
    let server = start(cfg).await;
    let url = format!("wss://localhost:{}", server.local_addr().port());

    // Not trusted by the bundled roots: refused at the TLS layer.
    let (untrusted, _rx) =
        SignallingClient::new(opts(&url, fixed_token(token("alice", "A")))).expect("ok");
    assert!(matches!(
        untrusted.connect().await,
        Err(ClientError::ConnectFailed {
            close_code: None,
            ..
        })
    ));

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            cert.cert.der().to_vec(),
        ))
        .expect("trust the test cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut o = opts(&url, fixed_token(token("alice", "A")));
    o.tls = Some(Arc::new(tls));
    let (c, _rx) = SignallingClient::new(o).expect("ok");
    let info = c.connect().await.expect("connects over TLS");
    assert_eq!(info.peer_id, "alice");
    c.subscribe("secure", false).await.expect("works over TLS");
}

// ---------------------------------------------------------------------------------------------
// Scripted raw listener, for behaviour a correct server never shows on purpose.

/// What the raw listener does with connection number `i`.
struct Plan {
    send: Vec<Message>,
    /// Close with this code right after sending (`None`: keep reading until the client leaves).
    then_close: Option<u16>,
    /// Close with this code once the first text frame from the client has arrived.
    close_on_first_text: Option<u16>,
}

#[derive(Debug, PartialEq)]
enum Seen {
    Text(String),
    Close(Option<u16>, String),
    Gone,
}

struct Raw {
    origin: String,
    seen: mpsc::UnboundedReceiver<(usize, Seen)>,
    accepted: Arc<AtomicUsize>,
}

const WELCOME: &str =
    r#"{"type":"welcome","peerId":"raw","expiresAt":null,"serverTime":1,"maxMessageSize":65536}"#;

async fn raw_server(plan: impl Fn(usize) -> Plan + Send + Sync + 'static) -> Raw {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let plan = Arc::new(plan);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let i = count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            let p = plan(i);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                for m in p.send {
                    if ws.send(m).await.is_err() {
                        return;
                    }
                }
                if let Some(code) = p.then_close {
                    let _ = ws
                        .send(Message::Close(Some(CloseFrame {
                            code: WsCloseCode::from(code),
                            reason: "scripted".into(),
                        })))
                        .await;
                }
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => {
                            let _ = tx.send((i, Seen::Text(t.to_string())));
                            if let Some(code) = p.close_on_first_text {
                                let _ = ws
                                    .send(Message::Close(Some(CloseFrame {
                                        code: WsCloseCode::from(code),
                                        reason: "scripted".into(),
                                    })))
                                    .await;
                            }
                        }
                        Some(Ok(Message::Close(f))) => {
                            let (code, reason) = match f {
                                Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                                None => (None, String::new()),
                            };
                            let _ = tx.send((i, Seen::Close(code, reason)));
                            return;
                        }
                        Some(Ok(_)) => {}
                        None | Some(Err(_)) => {
                            let _ = tx.send((i, Seen::Gone));
                            return;
                        }
                    }
                }
            });
        }
    });
    Raw {
        origin: format!("ws://{addr}"),
        seen: rx,
        accepted,
    }
}

async fn next_seen(raw: &mut Raw) -> (usize, Seen) {
    tokio::time::timeout(Duration::from_secs(5), raw.seen.recv())
        .await
        .expect("raw listener saw something within 5 s")
        .expect("raw listener alive")
}

fn welcome_then_listen() -> Plan {
    Plan {
        send: vec![Message::text(WELCOME)],
        then_close: None,
        close_on_first_text: None,
    }
}

#[tokio::test]
async fn welcome_timeout_fails_the_first_connect_quickly() {
    let mut raw = raw_server(|_| Plan {
        send: vec![],
        then_close: None,
        close_on_first_text: None,
    })
    .await;
    let mut o = opts(&raw.origin, Credential::api_key("k"));
    o.welcome_timeout = Duration::from_millis(300);
    let (c, _rx) = SignallingClient::new(o).expect("ok");
    let t0 = Instant::now();
    match c.connect().await {
        Err(ClientError::ConnectFailed { close_code, reason }) => {
            assert_eq!(close_code, None);
            assert_eq!(reason, "no welcome");
        }
        other => panic!("expected ConnectFailed, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(c.state(), ClientState::Closed);
    assert_eq!(
        next_seen(&mut raw).await,
        (0, Seen::Close(Some(1000), "no welcome".into()))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(raw.accepted.load(Ordering::SeqCst), 1, "no retry");
}

#[tokio::test]
async fn inactivity_watchdog_pings_then_closes_4000_and_reconnects() {
    let mut raw = raw_server(|_| welcome_then_listen()).await;
    let mut o = opts(&raw.origin, Credential::api_key("k"));
    // Heartbeat after max(1 s, 1.5 s / 3) = 1 s of silence; watchdog at 1.5 s.
    o.inactivity_timeout = Duration::from_millis(1500);
    let (c, mut rx) = SignallingClient::new(o).expect("ok");
    let t0 = Instant::now();
    c.connect().await.expect("welcome");
    assert_eq!(
        next_seen(&mut raw).await,
        (0, Seen::Text(r#"{"type":"ping"}"#.into()))
    );
    let ping_at = t0.elapsed();
    assert!(
        ping_at >= Duration::from_millis(900),
        "ping after {ping_at:?}"
    );
    assert_eq!(
        next_seen(&mut raw).await,
        (0, Seen::Close(Some(4000), "inactivity".into()))
    );
    let closed_at = t0.elapsed();
    assert!(
        closed_at >= Duration::from_millis(1400),
        "closed after {closed_at:?}"
    );
    let ev = wait_for(&mut rx, "Disconnected", |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            ev,
            ClientEvent::Disconnected {
                code: 4000,
                will_reconnect: true,
                ..
            }
        ),
        "{ev:?}"
    );
    let ClientEvent::Connected(info) = wait_for(&mut rx, "reconnect", |e| {
        matches!(e, ClientEvent::Connected(_))
    })
    .await
    else {
        unreachable!()
    };
    assert!(info.is_reconnect);
    assert_eq!(raw.accepted.load(Ordering::SeqCst), 2);
    c.close().await;
}

#[tokio::test]
async fn zero_inactivity_timeout_disables_ping_and_watchdog() {
    let mut raw = raw_server(|_| welcome_then_listen()).await;
    let mut o = opts(&raw.origin, Credential::api_key("k"));
    o.inactivity_timeout = Duration::ZERO;
    let (c, _rx) = SignallingClient::new(o).expect("ok");
    c.connect().await.expect("welcome");
    let quiet = tokio::time::timeout(Duration::from_millis(1300), raw.seen.recv()).await;
    assert!(quiet.is_err(), "expected silence, got {quiet:?}");
    assert_eq!(c.state(), ClientState::Connected);
}

#[tokio::test]
async fn ack_timeout_and_close_fail_pending_requests() {
    let mut raw = raw_server(|_| welcome_then_listen()).await;
    let mut o = opts(&raw.origin, Credential::api_key("k"));
    o.ack_timeout = Duration::from_millis(300);
    let (c, mut rx) = SignallingClient::new(o).expect("ok");
    c.connect().await.expect("welcome");

    let t0 = Instant::now();
    assert!(matches!(
        c.publish("room", json!(1)).await,
        Err(ClientError::AckTimeout)
    ));
    assert!(t0.elapsed() >= Duration::from_millis(280));
    let (_, Seen::Text(sent)) = next_seen(&mut raw).await else {
        panic!("expected the publish frame")
    };
    let v: Value = serde_json::from_str(&sent).expect("json");
    assert_eq!(v["type"], "publish");
    let rid = v["requestId"].as_str().expect("requestId");
    assert_eq!(
        uuid::Uuid::parse_str(rid).expect("uuid").get_version_num(),
        4
    );

    let pending = {
        let c = c.clone();
        tokio::spawn(async move { c.send("bob", json!("x")).await })
    };
    let _ = next_seen(&mut raw).await; // the send frame left
    c.close().await;
    assert!(matches!(
        pending.await.expect("task"),
        Err(ClientError::Closed)
    ));
    assert_eq!(c.state(), ClientState::Closed);
    assert_eq!(
        next_seen(&mut raw).await,
        (0, Seen::Close(Some(1000), "client closed".into()))
    );
    let evs = drain(&mut rx, 200).await;
    assert!(
        !evs.iter()
            .any(|e| matches!(e, ClientEvent::Disconnected { .. })),
        "close() is not a disconnect: {evs:#?}"
    );
    assert!(matches!(
        evs.last(),
        Some(ClientEvent::StateChanged {
            to: ClientState::Closed,
            ..
        })
    ));
    c.close().await; // idempotent
    // And the client can start a fresh session.
    let info = c.connect().await.expect("reconnects after close");
    assert!(!info.is_reconnect);
}

#[tokio::test]
async fn server_frames_are_parsed_strictly_and_oversize_inbound_closes_1009() {
    let frames = vec![
        Message::text(WELCOME),
        Message::text("not json"),
        Message::text(r#"{"type":"message","channel":"c","from":"x"}"#),
        Message::text(
            r#"{"type":"welcome","peerId":"other","expiresAt":null,"serverTime":1,"maxMessageSize":10}"#,
        ),
        Message::text(r#"{"type":"error","code":"unknown_type"}"#),
        Message::text(r#"{"type":"error","code":"over_message_quota","message":"m"}"#),
        Message::text(r#"{"type":"presence","channel":"c","joined":[{"peerId":"p"}]}"#),
        Message::binary(vec![1u8, 2, 3]),
        Message::text(r#"{"type":"going_away"}"#),
        Message::text(r#"{"type":"brand_new_frame"}"#),
        Message::text(r#"{"type":"direct","from":"x","data":[1]}"#),
        Message::text(format!(
            r#"{{"type":"direct","from":"x","data":"{}"}}"#,
            "z".repeat(1 << 20)
        )),
    ];
    let mut raw = raw_server(move |i| Plan {
        send: if i == 0 {
            frames.clone()
        } else {
            vec![Message::text(WELCOME)]
        },
        then_close: None,
        close_on_first_text: None,
    })
    .await;
    let (c, mut rx) =
        SignallingClient::new(opts(&raw.origin, Credential::api_key("k"))).expect("ok");
    c.connect().await.expect("welcome");
    wait_for(&mut rx, "Connected", |e| {
        matches!(e, ClientEvent::Connected(_))
    })
    .await;
    let mut got = Vec::new();
    loop {
        let ev = wait_for(&mut rx, "any", |_| true).await;
        let stop = matches!(ev, ClientEvent::Disconnected { .. });
        got.push(ev);
        if stop {
            break;
        }
    }
    assert!(
        matches!(
            got.as_slice(),
            [
                ClientEvent::ServerError { code, message: Some(_) },
                ClientEvent::GoingAway { retry_after_ms: 1000 },
                ClientEvent::Direct { .. },
                ClientEvent::Disconnected { code: 1009, will_reconnect: true, .. },
            ] if code == "over_message_quota"
        ),
        "{got:#?}"
    );
    assert_eq!(
        c.peer_id().as_deref(),
        Some("raw"),
        "second welcome ignored"
    );
    assert_eq!(c.max_message_size(), 65536);
    assert_eq!(
        next_seen(&mut raw).await,
        (0, Seen::Close(Some(1009), "message too big".into()))
    );
    wait_for(&mut rx, "reconnect", |e| {
        matches!(e, ClientEvent::Connected(_))
    })
    .await;
}

#[tokio::test]
async fn spent_budget_and_disabled_reconnect_emit_a_terminal_disconnect() {
    // Connection 0 is welcomed then closed 1011; every later attempt is closed before welcome.
    let raw = raw_server(|i| Plan {
        send: if i == 0 {
            vec![Message::text(WELCOME)]
        } else {
            vec![]
        },
        then_close: Some(1011),
        close_on_first_text: None,
    })
    .await;
    let mut o = opts(&raw.origin, Credential::api_key("k"));
    o.reconnect = Some(ReconnectPolicy {
        initial: Duration::from_millis(20),
        max_attempts: 2,
        ..ReconnectPolicy::default()
    });
    let (c, mut rx) = SignallingClient::new(o).expect("ok");
    c.connect().await.expect("welcome");
    let first = wait_for(&mut rx, "Disconnected", |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        first,
        ClientEvent::Disconnected {
            code: 1011,
            will_reconnect: true,
            ..
        }
    ));
    let last = wait_for(&mut rx, "terminal Disconnected", |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            last,
            ClientEvent::Disconnected {
                code: 1011,
                will_reconnect: false,
                ..
            }
        ),
        "{last:?}"
    );
    wait_for(&mut rx, "Closed", |e| {
        matches!(
            e,
            ClientEvent::StateChanged {
                from: ClientState::Reconnecting,
                to: ClientState::Closed
            }
        )
    })
    .await;
    assert_eq!(raw.accepted.load(Ordering::SeqCst), 3, "1 + max_attempts");

    // Reconnect disabled: the first drop is already terminal.
    let raw = raw_server(|_| Plan {
        send: vec![Message::text(WELCOME)],
        then_close: Some(1001),
        close_on_first_text: None,
    })
    .await;
    let mut o = opts(&raw.origin, Credential::api_key("k"));
    o.reconnect = None;
    let (c, mut rx) = SignallingClient::new(o).expect("ok");
    c.connect().await.expect("welcome");
    let ev = wait_for(&mut rx, "Disconnected", |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(
        matches!(
            ev,
            ClientEvent::Disconnected {
                code: 1001,
                will_reconnect: false,
                ..
            }
        ),
        "{ev:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.state(), ClientState::Closed);
    assert_eq!(raw.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn token_provider_failures_are_reported_from_the_third_and_end_in_a_terminal_disconnect() {
    let raw = raw_server(|_| Plan {
        send: vec![Message::text(WELCOME)],
        then_close: Some(1011),
        close_on_first_text: None,
    })
    .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let provider = {
        let calls = calls.clone();
        Credential::token_provider(move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Ok("first".to_string())
                } else {
                    Err("backend down for https://auth/x?token=SECRET123".to_string())
                }
            }
        })
    };
    let mut o = opts(&raw.origin, provider);
    o.reconnect = Some(ReconnectPolicy {
        initial: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
        max_attempts: 4,
        ..ReconnectPolicy::default()
    });
    let (c, mut rx) = SignallingClient::new(o).expect("ok");
    c.connect().await.expect("welcome");
    let mut reported = Vec::new();
    loop {
        match wait_for(&mut rx, "provider error or terminal", |e| {
            matches!(
                e,
                ClientEvent::TokenProviderError { .. }
                    | ClientEvent::Disconnected {
                        will_reconnect: false,
                        ..
                    }
            )
        })
        .await
        {
            ClientEvent::TokenProviderError {
                consecutive_failures,
                message,
            } => {
                assert!(!message.contains("SECRET123"), "{message}");
                reported.push(consecutive_failures);
            }
            ClientEvent::Disconnected { code, .. } => {
                assert_eq!(code, 1011);
                break;
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(reported, [3, 4]);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "first connect + 4 attempts"
    );
    assert_eq!(raw.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(c.state(), ClientState::Closed);
}

#[tokio::test]
async fn a_slow_consumer_gets_every_event_in_order() {
    let mut cfg = config();
    cfg.hub.rate_per_sec = 0.0; // the token bucket would otherwise cap bob at 200 frames
    let server = start(cfg).await;
    let origin = server.ws_origin();
    let (alice, mut arx) = connected(&origin, "alice", "Alice").await;
    alice.subscribe("room", false).await.expect("subscribed");
    wait_for(&mut arx, "snapshot", |e| {
        matches!(e, ClientEvent::Presence { .. })
    })
    .await;
    let (bob, _brx) = connected(&origin, "bob", "Bob").await;
    bob.subscribe("room", false).await.expect("subscribed");
    wait_for(&mut arx, "bob joined", |e| {
        matches!(e, ClientEvent::Presence { .. })
    })
    .await;

    // Alice's consumer reads nothing while 1500 messages (more than the 1024-event queue) land.
    const N: u64 = 1500;
    for n in 0..N {
        bob.publish("room", json!({ "n": n })).await.expect("acked");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(arx.len(), 1024, "queue full, the rest held back");
    for n in 0..N {
        match wait_for(&mut arx, "message", |_| true).await {
            ClientEvent::Message { data, .. } => assert_eq!(data["n"], json!(n)),
            other => panic!("expected message {n}, got {other:?}"),
        }
    }
    assert_eq!(alice.state(), ClientState::Connected);
    alice
        .publish("room", json!("done"))
        .await
        .expect("still healthy");
}

#[tokio::test]
async fn a_drop_fails_in_flight_requests_and_tracked_channels_are_replayed_with_retries() {
    // Connection 0 drops (1011) as soon as the client sends anything; connection 1 welcomes
    // and then never acknowledges, so every replayed subscribe times out and is retried.
    let mut raw = raw_server(|i| Plan {
        send: vec![Message::text(WELCOME)],
        then_close: None,
        close_on_first_text: (i == 0).then_some(1011),
    })
    .await;
    let mut o = opts(&raw.origin, Credential::api_key("k"));
    o.ack_timeout = Duration::from_millis(200);
    o.resubscribe_retry_interval = Duration::from_millis(100);
    let (c, mut rx) = SignallingClient::new(o).expect("ok");
    c.connect().await.expect("welcome");
    // The subscribe left, then the socket died: the outcome is unknown, the channel is kept.
    assert!(matches!(
        c.subscribe("room", true).await,
        Err(ClientError::Disconnected)
    ));
    assert_eq!(c.tracked_channels(), vec![("room".to_string(), true)]);
    let ev = wait_for(&mut rx, "Disconnected", |e| {
        matches!(e, ClientEvent::Disconnected { .. })
    })
    .await;
    assert!(matches!(
        ev,
        ClientEvent::Disconnected {
            code: 1011,
            will_reconnect: true,
            ..
        }
    ));
    wait_for(&mut rx, "reconnect", |e| {
        matches!(e, ClientEvent::Connected(_))
    })
    .await;

    let mut replays = Vec::new();
    let t0 = Instant::now();
    while replays.len() < 5 {
        match next_seen(&mut raw).await {
            (0, Seen::Text(_)) | (0, Seen::Close(..)) | (0, Seen::Gone) => {}
            (1, Seen::Text(t)) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                assert_eq!(v["type"], "subscribe", "{v}");
                assert_eq!(v["channel"], "room");
                assert_eq!(v["includeSenderMetadata"], true);
                replays.push((t0.elapsed(), v["requestId"].as_str().map(str::to_string)));
            }
            other => panic!("unexpected {other:?}"),
        }
        if replays.len() == 4 {
            // 1 replay + 3 retries, then it waits for the next reconnect.
            let more = tokio::time::timeout(Duration::from_millis(700), raw.seen.recv()).await;
            assert!(more.is_err(), "no 5th attempt: {more:?}");
            break;
        }
    }
    assert_eq!(replays.len(), 4);
    for pair in replays.windows(2) {
        // ack timeout (200 ms) + retry interval (100 ms) between attempts, fresh request ids.
        assert!(
            pair[1].0 - pair[0].0 >= Duration::from_millis(280),
            "{replays:?}"
        );
        assert_ne!(pair[0].1, pair[1].1);
    }
    assert_eq!(c.tracked_channels(), vec![("room".to_string(), true)]);
    c.close().await;
}
