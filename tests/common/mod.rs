//! Shared helpers for the integration tests: a real server on 127.0.0.1:0, real WebSocket
//! clients (tokio-tungstenite), real JWTs.
#![allow(dead_code)]

pub mod interop;
pub mod net;
pub mod pulse;
pub mod xvfb;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use meshcall::auth::{
    Actions, KeyRing, MintRequest, PatternSet, PublishableKey, Secret, SecretKey, mint,
};
use meshcall::server::{Server, ServerConfig};

pub const KID: &str = "test-kid";
pub const SECRET: &str = "test-secret-0123456789";
pub const PK: &str = "pk_test_abcdef123456";

pub fn keys() -> KeyRing {
    let mut ring = KeyRing::default();
    ring.secret_keys.push(SecretKey {
        kid: KID.into(),
        secret: Secret::new(SECRET.as_bytes().to_vec()),
        channel_patterns: PatternSet::any(),
        actions: Actions::all(),
        app: String::new(),
    });
    ring.publishable_keys.push(PublishableKey {
        key: PK.into(),
        channel_patterns: PatternSet::any(),
        actions: Actions::all(),
        app: String::new(),
        allowed_origins: Some(vec!["https://good.example".into()]),
    });
    ring
}

pub fn config() -> ServerConfig {
    ServerConfig::new("127.0.0.1:0".parse().expect("addr"), keys())
}

pub async fn start(cfg: ServerConfig) -> Server {
    Server::start(cfg).await.expect("server starts")
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

pub fn token_with(req: MintRequest) -> String {
    let key = &keys().secret_keys[0];
    mint(key, &req, unix_now()).expect("mint").0
}

/// A token for `sub` with peerMetadata.username = name.
pub fn token(sub: &str, name: &str) -> String {
    token_with(MintRequest {
        sub: sub.into(),
        ttl_secs: 600,
        peer_metadata: Some(json!({"username": name})),
        ..MintRequest::default()
    })
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn connect_raw(addr: SocketAddr, query: &str) -> Ws {
    let url = format!("ws://{addr}/v1?{query}");
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    ws
}

/// Connects with a token and reads the welcome.
pub async fn connect(addr: SocketAddr, sub: &str, name: &str) -> (Ws, Value) {
    let mut ws = connect_raw(addr, &format!("token={}", token(sub, name))).await;
    let welcome = recv(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// The next text frame as JSON (fails the test after 5 s).
pub async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("socket open")
            .expect("no socket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON frame"),
            Message::Close(c) => panic!("unexpected close {c:?}"),
            _ => {}
        }
    }
}

/// Asserts nothing arrives for `ms` milliseconds.
pub async fn silent(ws: &mut Ws, ms: u64) {
    if let Ok(Some(Ok(Message::Text(t)))) =
        tokio::time::timeout(Duration::from_millis(ms), ws.next()).await
    {
        panic!("expected silence, got {t}");
    }
}

/// Reads until the server closes; returns the close code (None if the socket just died).
pub async fn close_code(ws: &mut Ws, within: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no close within {within:?}"),
            Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Close(frame)))) => {
                return frame.map(|f| u16::from(f.code));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

pub async fn subscribe(ws: &mut Ws, channel: &str) -> Value {
    send(
        ws,
        json!({"type":"subscribe","channel":channel,"requestId":"sub"}),
    )
    .await;
    let ack = recv(ws).await;
    assert_eq!(ack, json!({"type":"ack","requestId":"sub"}));
    let snap = recv(ws).await;
    assert_eq!(snap["type"], "presence", "{snap}");
    snap
}

pub fn ws_close_code(c: WsCloseCode) -> u16 {
    u16::from(c)
}

/// A minimal HTTP/1.1 client for the REST tests (one request per connection).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: Bearer {a}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    s.write_all(body.as_bytes()).await.expect("write body");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("response within 5 s")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Undo chunked transfer encoding if present (axum uses it for streamed bodies).
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn bearer() -> String {
    format!("{KID}:{SECRET}")
}
