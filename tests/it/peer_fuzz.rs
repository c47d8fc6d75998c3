//! A hostile peer in the room: it sends the SDK mutated SDP offers (real offers from Chromium
//! and from the Python SDK's aiortc, saved in `tests/fixtures/sdp/`, with lines dropped,
//! duplicated, swapped, truncated and bytes flipped), random ICE candidate strings and random
//! JSON as direct messages. The MeteredPeer under attack must not panic, must stay connected to
//! the server, and a well-behaved peer must still get a working connection to it.
//!
//! Seeded (`MESHCALL_FUZZ_SEED`); `MESHCALL_FUZZ_INPUTS` sets the number of inputs (default
//! 1 500). Runs inside the loopback-only namespace like every peer-connection test.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use common::net::{loopback_peer, wait_for_state, wait_remote};
use common::*;
use meshcall::peer::PeerConnectionState;

static PANICS: AtomicUsize = AtomicUsize::new(0);

const FIXTURES: [&str; 2] = [
    include_str!("../fixtures/sdp/chromium-offer.sdp"),
    include_str!("../fixtures/sdp/aiortc-offer.sdp"),
];

/// A real offer, mutated a few times.
fn mutated_offer(rng: &mut StdRng) -> String {
    let base = FIXTURES[rng.random_range(0..FIXTURES.len())];
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    for _ in 0..rng.random_range(1..6) {
        if lines.is_empty() {
            break;
        }
        let i = rng.random_range(0..lines.len());
        match rng.random_range(0..8) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                let j = rng.random_range(0..lines.len());
                lines.swap(i, j);
            }
            3 => {
                let cut = rng.random_range(0..=lines[i].len());
                let cut = (0..=cut)
                    .rev()
                    .find(|&c| lines[i].is_char_boundary(c))
                    .unwrap_or(0);
                lines[i].truncate(cut);
            }
            4 => {
                // A byte of the line replaced by a random printable or control character.
                let mut bytes = lines[i].clone().into_bytes();
                if !bytes.is_empty() {
                    let k = rng.random_range(0..bytes.len());
                    bytes[k] = rng.random_range(0u8..128);
                }
                lines[i] = String::from_utf8_lossy(&bytes).into_owned();
            }
            5 => {
                lines[i] = format!(
                    "m=video {} UDP/TLS/RTP/SAVPF {}",
                    rng.random::<u32>(),
                    rng.random::<u64>()
                )
            }
            6 => {
                lines[i] = format!(
                    "a=rtpmap:{} H264/{}",
                    rng.random::<u32>(),
                    rng.random::<i64>()
                )
            }
            _ => {
                lines[i] = format!(
                    "a=ssrc:{} msid:{} {}",
                    rng.random::<u64>(),
                    "x".repeat(rng.random_range(0..600)),
                    rng.random::<u16>()
                )
            }
        }
    }
    let mut sdp = lines.join("\r\n");
    sdp.push_str("\r\n");
    sdp
}

fn candidate(rng: &mut StdRng) -> Value {
    let text = match rng.random_range(0..5) {
        0 => format!(
            "candidate:{} 1 udp {} 127.0.0.1 {} typ host",
            rng.random::<u32>(),
            rng.random::<u32>(),
            rng.random::<u16>()
        ),
        1 => format!(
            "candidate:1 {} {} {} ::1 {} typ {}",
            rng.random::<i64>(),
            ["udp", "tcp", "sctp", ""][rng.random_range(0..4)],
            rng.random::<i64>(),
            rng.random::<i32>(),
            ["host", "srflx", "relay", "prflx", "bogus"][rng.random_range(0..5)]
        ),
        2 => "candidate:".repeat(rng.random_range(1..200)),
        3 => (0..rng.random_range(0..80))
            .map(|_| char::from(rng.random_range(0u8..128)))
            .collect(),
        _ => format!(
            "candidate:1 1 udp 1 127.0.0.1 9 typ host raddr {} rport {} generation {} ufrag {}",
            rng.random::<u64>(),
            rng.random::<i64>(),
            rng.random::<u64>(),
            "u".repeat(rng.random_range(0..300))
        ),
    };
    let mline: Value = match rng.random_range(0..3) {
        0 => json!(rng.random_range(0u16..4)),
        1 => json!(rng.random::<i64>()),
        _ => Value::Null,
    };
    json!({"type":"rtc-ice","candidate":{"candidate":text,"sdpMid":rng.random_range(0..4).to_string(),"sdpMLineIndex":mline}})
}

/// One hostile direct payload.
fn payload(rng: &mut StdRng) -> Value {
    match rng.random_range(0..10) {
        0..=3 => {
            json!({"type":"rtc-description","description":{"type":"offer","sdp":mutated_offer(rng)}})
        }
        4 => {
            let kind = ["answer", "pranswer", "rollback", ""][rng.random_range(0..4)];
            json!({"type":"rtc-description","description":{"type":kind,"sdp":mutated_offer(rng)}})
        }
        5..=7 => candidate(rng),
        8 => json!({"type":"rtc-ice","candidate":null}),
        _ => {
            json!({"type": "rtc-description", "description": rng.random::<u64>(), "__meteredTrackMeta": {"trackId": "x".repeat(rng.random_range(0..500))}})
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_mutated_offers_and_candidates_cannot_break_the_sdk() {
    assert!(
        common::net::isolated(),
        "run inside a loopback-only network namespace (scripts/test does)"
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        hook(info);
    }));
    let seed: u64 = std::env::var("MESHCALL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xf00d);
    let inputs: usize = std::env::var("MESHCALL_FUZZ_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_500);
    let mut cfg = config();
    cfg.hub.rate_per_sec = 0.0;
    let server = start(cfg).await;
    let origin = server.ws_origin();
    let victim = loopback_peer(&origin, "victim", "Victim");
    victim.join("fuzz", false).await.expect("join");

    let (mut mallory, _) = connect(server.local_addr(), "mallory", "Mallory").await;
    subscribe(&mut mallory, "fuzz").await;
    let at_victim = wait_remote(&victim, "mallory").await;
    let (mut tx, mut rx) = mallory.split();
    // Mallory reads (and ignores) whatever the victim sends it.
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    let mut rng = StdRng::seed_from_u64(seed);
    let started = std::time::Instant::now();
    for i in 0..inputs {
        let frame = json!({"type":"send","to":"victim","data":payload(&mut rng)});
        tx.send(Message::Text(frame.to_string().into()))
            .await
            .expect("mallory sends");
        if i % 50 == 0 {
            // Let the victim's connection task keep up (its inbox is bounded: excess is
            // dropped by design, which would hide inputs from the test).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Give the last inputs time to be processed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = started.elapsed();

    // The victim still talks to the server and still connects to a well-behaved peer.
    let bob = loopback_peer(&origin, "bob", "Bob");
    bob.join("fuzz", false).await.expect("bob joins");
    let victim_sees_bob = wait_remote(&victim, "bob").await;
    let bob_sees_victim = wait_remote(&bob, "victim").await;
    // Connections are made on demand: a data channel asks for one.
    let dc = bob_sees_victim
        .create_data_channel("after-fuzz", None)
        .await
        .expect("data channel");
    tokio::time::timeout(Duration::from_secs(10), dc.wait_open())
        .await
        .expect("open in time")
        .expect("open");
    wait_for_state(&victim_sees_bob, PeerConnectionState::Connected, 20).await;
    println!(
        "peer fuzz: {inputs} hostile directs (mutated Chromium/aiortc offers, candidates, junk) in {:.1} s; \
         mallory's connection is {:?}; a new peer still connects; panics {}",
        elapsed.as_secs_f64(),
        at_victim.state(),
        PANICS.load(Ordering::SeqCst)
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked");
    drain.abort();
    for p in [victim, bob] {
        p.close().await;
    }
}

/// A real offer's session part followed by `sections` minimal H.264 video sections with distinct
/// mids (small, to fit the server's 64 KiB message limit), as a hostile peer would craft it to
/// make the SDK build hundreds of transceivers.
fn offer_with_sections(sections: usize) -> String {
    let base = FIXTURES[0];
    let start = base.find("\nm=").map_or(base.len(), |i| i + 1);
    let (session, media) = base.split_at(start);
    // The transport attributes once, at session level; each section only what makes it one.
    let transport: Vec<&str> = media
        .lines()
        .filter(|l| {
            ["a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=setup"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .take(4)
        .collect();
    let mut sdp = session.replace("a=group:BUNDLE", "a=x-group-was:BUNDLE");
    for l in transport {
        sdp.push_str(l);
        sdp.push_str("\r\n");
    }
    for i in 0..sections {
        sdp.push_str(&format!(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:v{i}\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:96 H264/90000\r\n"
        ));
    }
    sdp
}

/// An offer with 200 media sections is refused before webrtc-rs builds anything for it: the
/// SDK reports a negotiation error, answers nothing, and still works for everybody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_with_hundreds_of_media_sections_is_refused() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    assert!(
        common::net::isolated(),
        "run inside a loopback-only network namespace (scripts/test does)"
    );
    let server = start(config()).await;
    let origin = server.ws_origin();
    let victim = loopback_peer(&origin, "victim", "Victim");
    victim.join("sections", false).await.expect("join");
    let (mut mallory, _) = connect(server.local_addr(), "mallory", "Mallory").await;
    subscribe(&mut mallory, "sections").await;
    let at_victim = wait_remote(&victim, "mallory").await;
    let mut errors = at_victim.on_negotiation_error();
    let offer = offer_with_sections(200);
    assert_eq!(offer.matches("\nm=video").count(), 200);
    let frame = json!({"type":"send","to":"victim","data":{"type":"rtc-description","description":{"type":"offer","sdp":offer}}});
    let size = frame.to_string().len();
    assert!(size < 65_536, "fits the server's message limit: {size}");
    send(&mut mallory, frame).await;
    let error = tokio::time::timeout(Duration::from_secs(5), errors.next_item())
        .await
        .expect("a negotiation error within 5 s")
        .expect("stream open");
    assert!(error.contains("media sections"), "{error}");
    // No answer comes back for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(Ok(Message::Text(t)))) =
        tokio::time::timeout_at(deadline, mallory.next()).await
    {
        assert!(!t.contains("\"answer\""), "the victim answered: {t}");
    }
    // The victim still connects to a well-behaved peer.
    let bob = loopback_peer(&origin, "bob", "Bob");
    bob.join("sections", false).await.expect("bob joins");
    let bob_sees_victim = wait_remote(&bob, "victim").await;
    let dc = bob_sees_victim
        .create_data_channel("after-sections", None)
        .await
        .expect("data channel");
    tokio::time::timeout(Duration::from_secs(10), dc.wait_open())
        .await
        .expect("open in time")
        .expect("open");
    for p in [victim, bob] {
        p.close().await;
    }
}
