//! End-to-end abuse: many authenticated connections send mutated frames (random JSON in every
//! field, control characters, lone surrogates, deep nesting, huge numbers, truncated JSON,
//! binary and oversize frames) while two well-behaved clients exchange acknowledged messages in
//! one channel. The server must not panic, lose an acknowledged message, disconnect a
//! well-behaved client, or stop welcoming new ones.
//!
//! The number of inputs is `MESHCALL_ABUSE_INPUTS` (default 100 000, what CI runs; the ignored
//! test runs 1 000 000). The generator is seeded (`MESHCALL_ABUSE_SEED`) so a failure replays.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use common::*;

static PANICS: AtomicUsize = AtomicUsize::new(0);

const FIELDS: [&str; 9] = [
    "type",
    "channel",
    "requestId",
    "data",
    "to",
    "includeSenderMetadata",
    "from",
    "peerMetadata",
    "x",
];
const TYPES: [&str; 8] = [
    "subscribe",
    "unsubscribe",
    "publish",
    "send",
    "ping",
    "welcome",
    "",
    "SUBSCRIBE",
];

/// A random JSON value, sometimes nasty (deep, huge, odd strings).
fn value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..12) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>() * 1e300),
        4 => json!(u64::MAX),
        5 | 6 => Value::String(string(rng)),
        7 | 8 if depth < 4 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| value(rng, depth + 1))
                .collect(),
        ),
        9 | 10 if depth < 4 => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.random_range(0..4) {
                m.insert(string(rng), value(rng, depth + 1));
            }
            Value::Object(m)
        }
        _ => json!(TYPES[rng.random_range(0..TYPES.len())]),
    }
}

/// A random string: printable, control characters, non-ASCII, long, or a channel-ish name.
fn string(rng: &mut StdRng) -> String {
    match rng.random_range(0..6) {
        0 => String::new(),
        1 => (0..rng.random_range(1..20))
            .map(|_| char::from(rng.random_range(0u8..32)))
            .collect(),
        2 => "é漢😀\u{202e}\u{feff}".repeat(rng.random_range(1..5)),
        3 => "a".repeat(rng.random_range(100..400)),
        4 => format!("room{}", rng.random_range(0..3)),
        _ => (0..rng.random_range(1..12))
            .map(|_| char::from(rng.random_range(33u8..127)))
            .collect(),
    }
}

/// One mutated frame.
fn frame(rng: &mut StdRng) -> Message {
    match rng.random_range(0..20) {
        // A plausible frame with random fields.
        0..=9 => {
            let mut m = serde_json::Map::new();
            m.insert(
                "type".into(),
                json!(TYPES[rng.random_range(0..TYPES.len())]),
            );
            for _ in 0..rng.random_range(0..5) {
                let k = FIELDS[rng.random_range(0..FIELDS.len())];
                m.insert(k.into(), value(rng, 0));
            }
            Message::Text(Value::Object(m).to_string().into())
        }
        // Truncated JSON.
        10 | 11 => {
            let full = json!({"type":"publish","channel":"room0","data":value(rng, 0)}).to_string();
            let cut = rng.random_range(0..full.len().max(1));
            let cut = (0..=cut)
                .rev()
                .find(|&i| full.is_char_boundary(i))
                .unwrap_or(0);
            Message::Text(full[..cut].to_string().into())
        }
        // Lone surrogates and bad escapes (valid UTF-8 text, invalid JSON strings).
        12 => Message::Text(
            r#"{"type":"publish","channel":"room0","data":"\ud800\udfff\ud800 \u0000 \x"}"#.into(),
        ),
        13 => Message::Text(r#"{"type":"subscribe","channel":"\udc00"}"#.into()),
        // Deep nesting.
        14 => {
            let n = rng.random_range(100..3000);
            Message::Text(
                format!(
                    r#"{{"type":"publish","channel":"room0","data":{}{}}}"#,
                    "[".repeat(n),
                    "]".repeat(n)
                )
                .into(),
            )
        }
        // Huge numbers.
        15 => Message::Text(
            format!(
                r#"{{"type":"ping","requestId":{}}}"#,
                "9".repeat(rng.random_range(20..400))
            )
            .into(),
        ),
        // Binary.
        16 | 17 => Message::Binary(
            (0..rng.random_range(0..200))
                .map(|_| rng.random::<u8>())
                .collect::<Vec<u8>>()
                .into(),
        ),
        // Random text.
        18 => Message::Text(string(rng).into()),
        // Oversize (closes with 1009; the abuser reconnects).
        _ => Message::Text(
            format!(
                r#"{{"type":"publish","channel":"room0","data":"{}"}}"#,
                "z".repeat(70_000)
            )
            .into(),
        ),
    }
}

/// One abuser: connects, fires its share of frames, reconnects whenever the server closed it.
async fn abuser(
    addr: std::net::SocketAddr,
    id: usize,
    inputs: u64,
    seed: u64,
    sent: Arc<AtomicU64>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut done = 0u64;
    while done < inputs {
        let ws = connect_raw(
            addr,
            &format!("token={}", token(&format!("abuser{id}"), "A")),
        )
        .await;
        let (mut tx, mut rx) = ws.split();
        // Drain whatever the server says (so this abuser is not also a slow consumer) and note
        // when it closes us.
        let closed = Arc::new(tokio::sync::Notify::new());
        let reader = tokio::spawn({
            let closed = closed.clone();
            async move {
                while let Some(Ok(m)) = rx.next().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
                closed.notify_one();
            }
        });
        while done < inputs {
            let f = frame(&mut rng);
            let oversize = f.len() > 65_536;
            done += 1;
            sent.fetch_add(1, Ordering::Relaxed);
            if tx.send(f).await.is_err() {
                break;
            }
            if oversize {
                // The server closes with 1009: everything sent after it would be discarded.
                let _ = tokio::time::timeout(Duration::from_secs(5), closed.notified()).await;
                break;
            }
        }
        let _ = tx.close().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
}

async fn run(inputs: u64) {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        hook(info);
    }));
    let seed: u64 = std::env::var("MESHCALL_ABUSE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut cfg = config();
    // Abusers must get their frames through the parser, not stop at the rate limit.
    cfg.hub.rate_per_sec = 0.0;
    cfg.shell.connects_per_ip_per_minute = 0;
    let server = start(cfg).await;
    let addr = server.local_addr();

    let (mut alice, _) = connect(addr, "alice", "Alice").await;
    let (mut bob, _) = connect(addr, "bob", "Bob").await;
    subscribe(&mut alice, "room0").await;
    subscribe(&mut bob, "room0").await;
    recv(&mut alice).await; // bob joined

    let sent = Arc::new(AtomicU64::new(0));
    let abusers = 16;
    let started = Instant::now();
    let tasks: Vec<_> = (0..abusers)
        .map(|i| tokio::spawn(abuser(addr, i, inputs / abusers as u64, seed, sent.clone())))
        .collect();

    // The well-behaved pair: acknowledged publishes, each must arrive exactly once, in order.
    let mut acked = 0u64;
    let mut next_expected = 0u64;
    while tasks.iter().any(|t| !t.is_finished()) || acked < 50 {
        let rid = format!("m{acked}");
        send(
            &mut alice,
            json!({"type":"publish","channel":"room0","data":{"n":acked},"requestId":rid}),
        )
        .await;
        // Alice's ack (other frames in between are presence from abusers joining room0).
        loop {
            let f = recv(&mut alice).await;
            if f["type"] == "ack" {
                assert_eq!(f["requestId"], rid.as_str());
                break;
            }
        }
        acked += 1;
        // Bob receives everything Alice got acked, in order (abusers' messages in between).
        while next_expected < acked {
            let f = recv(&mut bob).await;
            if f["type"] == "message" && f["from"] == "alice" {
                assert_eq!(f["data"]["n"], next_expected, "order or loss: {f}");
                next_expected += 1;
            }
        }
    }
    for t in tasks {
        t.await.expect("abuser task");
    }
    let elapsed = started.elapsed();
    // Both well-behaved clients are still connected and served.
    for ws in [&mut alice, &mut bob] {
        send(ws, json!({"type":"ping","requestId":"still-there"})).await;
        loop {
            let f = recv(ws).await;
            if f["type"] == "pong" {
                break;
            }
        }
    }
    // And the server still welcomes a newcomer.
    let (_newcomer, welcome) = connect(addr, "newcomer", "N").await;
    assert_eq!(welcome["peerId"], "newcomer");
    let tried = sent.load(Ordering::Relaxed);
    // What the server actually read and judged (frames written after a close are not).
    let (_, metrics) = http(addr, "GET", "/metrics", None, None).await;
    let sum = |prefix: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let processed = sum("meshcall_frames_in_total");
    let errors = sum("meshcall_errors_total");
    let closes = sum("meshcall_closes_total");
    println!(
        "abuse: {tried} mutated inputs sent from {abusers} connections in {:.1} s, {processed} read by the server \
         ({errors} answered with an error, {closes} connections closed by it); {acked} acked messages all \
         delivered in order; panics {}",
        elapsed.as_secs_f64(),
        PANICS.load(Ordering::SeqCst)
    );
    assert!(tried >= inputs - abusers as u64, "{tried} of {inputs}");
    assert!(
        processed >= inputs * 8 / 10,
        "the server read only {processed} of {inputs} inputs"
    );
    assert!(
        errors > inputs / 4,
        "most mutated frames are refused: {errors}"
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the server panicked");
}

fn inputs_from_env(default: u64) -> u64 {
    std::env::var("MESHCALL_ABUSE_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_frames_from_many_clients_never_hurt_the_well_behaved() {
    run(inputs_from_env(100_000)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a million inputs, nightly-style: cargo test --release --test it server_abuse -- --ignored"]
async fn a_million_mutated_frames() {
    run(inputs_from_env(1_000_000)).await;
}
