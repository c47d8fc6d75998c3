//! Interop with the official browser SDK (`@metered-ca/realtime` 1.2.0) in Debian's headless
//! Chromium, driven by `tests/interop/js/browser-peer.mjs` (playwright-core). A Rust MeteredPeer
//! sending the synthetic H.264 pattern and a browser with a fake camera join one room on the real
//! server; each decodes the other's video.
//! `tests/interop/js/setup.sh` installs Chromium and the npm packages outside the namespace
//! (`scripts/test` does); this test runs inside the loopback-only namespace.

mod common;

use std::time::{Duration, Instant};

use serde_json::json;

use common::interop::{
    browser_peer, rust_peer_with_camera, rust_side_drop_keeps_the_remote_peer, text_containing,
    wait_connected,
};
use common::*;
use meshcall::media::receive::VideoReceiver;
use meshcall::peer::DataKind;

/// The two tests here run one at a time. Side by side, three Chromiums and the Rust peer on two
/// cores made the browser's data channel to the Rust peer fail to open within 20 s in about one
/// run in four (video flowed both ways); alone it opened 8 runs in 8. That stall under load is
/// an open bug, not something this lock fixes.
static ONE_BROWSER_TEST_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_official_js_sdk_in_chromium_interoperate() {
    let _one_at_a_time = ONE_BROWSER_TEST_AT_A_TIME.lock().await;
    let server = start(config()).await;
    let origin = server.ws_origin();
    // "browser" < "rust": the browser is polite; it opens "meshcall" at peer-joined.
    // The Rust side sends real H.264 (the synthetic pattern, one encoder for all peers).
    let (rust, camera) = rust_peer_with_camera(&origin).await;
    let mut joined = rust.on_peer_joined();
    let mut data = rust.on_data();
    rust.join("browser-interop", true)
        .await
        .expect("rust joins");

    let mut browser = browser_peer(
        &origin,
        &token("browser", "Browser"),
        "browser-interop",
        "Browser",
    );
    let t_join = Instant::now();

    // Presence both ways with names.
    let remote = tokio::time::timeout(Duration::from_secs(60), joined.next_item())
        .await
        .expect("browser appears")
        .expect("peer");
    assert_eq!(remote.id(), "browser");
    // Subscribe at once: the stream can arrive before the other process reports anything.
    let mut streams = remote.on_stream_added();
    let mut dcs = remote.on_data_channel();
    browser
        .expect("browser joined", 60, |v| v["event"] == "joined")
        .await;
    assert_eq!(
        remote.metadata().and_then(|m| m.get("username").cloned()),
        Some(json!("Browser"))
    );
    let pj = browser
        .expect("rust seen by the browser", 10, |v| {
            v["event"] == "peer-joined" && v["peer"] == "rust"
        })
        .await;
    assert_eq!(pj["name"], "Rust");

    wait_connected(&remote, 30).await;
    let connected_ms = t_join.elapsed().as_secs_f64() * 1000.0;
    let bc = browser
        .expect("browser connected", 30, |v| {
            v["event"] == "state-change" && v["peer"] == "rust" && v["to"] == "connected"
        })
        .await;
    println!(
        "Rust↔Chromium: browser start → Rust connected {connected_ms:.0} ms; browser join() → connected {} ms",
        bc["sinceJoinMs"]
    );

    // The browser's camera reaches Rust as its own stream with role metadata, and RTP flows.
    // Prefer a stream that is already live (it may have arrived before we subscribed).
    let live = remote.current_streams().into_iter().next();
    let stream = async {
        match live {
            Some(s) => Some(s),
            None => streams.next_item().await,
        }
    };
    let stream = tokio::time::timeout(Duration::from_secs(20), stream)
        .await
        .expect("the browser's camera stream")
        .expect("stream");
    assert_eq!(
        stream.metadata.as_ref().and_then(|m| m.get("role")),
        Some(&json!("camera")),
        "{stream:?}"
    );
    let video = stream
        .tracks
        .iter()
        .find(|t| t.kind == "video")
        .expect("a video track");
    // Rust decodes the browser's H.264 (Chromium's fake camera: a moving pattern).
    let decoder = VideoReceiver::start(video).expect("receiver");
    tokio::time::timeout(Duration::from_secs(15), async {
        while decoder.frames_decoded() < 10 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the browser's video did not decode: {:?}", decoder.stats()));
    let pic = decoder.latest().expect("a decoded picture");
    assert!(
        pic.frame.width >= 160 && pic.frame.height >= 120,
        "{:?}",
        pic.frame
    );
    let (lo, hi) = pic
        .frame
        .y
        .iter()
        .fold((255u8, 0u8), |(lo, hi), &p| (lo.min(p), hi.max(p)));
    assert!(
        hi - lo > 40,
        "the browser's picture has content (luma {lo}..{hi})"
    );
    println!(
        "Chromium → Rust: {} frames decoded, {}x{}, {:?}",
        decoder.frames_decoded(),
        pic.frame.width,
        pic.frame.height,
        decoder.stats()
    );

    // And the browser plays the Rust stream: first frame at 640x480, then advancing frames.
    let ff = browser
        .expect("the Rust video plays in the browser", 20, |v| {
            v["event"] == "first-frame" && v["peer"] == "rust"
        })
        .await;
    assert_eq!(ff["videoWidth"], 640, "{ff}");
    assert_eq!(ff["videoHeight"], 480, "{ff}");
    let adv = browser
        .expect("the Rust video advances in the browser", 20, |v| {
            v["event"] == "video-advancing" && v["peer"] == "rust"
        })
        .await;
    println!(
        "Rust → Chromium: first frame {} ms after the browser's join(); {adv}",
        ff["sinceJoinMs"]
    );

    // P2P both ways on the browser's channel.
    browser
        .expect("the browser's data channel open", 20, |v| {
            v["event"] == "dc-open" && v["peer"] == "rust"
        })
        .await;
    let dc = common::interop::meshcall_channel(&remote, &mut dcs, 20).await;
    dc.wait_open().await.expect("open");
    let mut dc_events = dc.events();
    browser
        .command(json!({"cmd":"dc-send","peer":"rust","data":{"from_browser":1}}))
        .await;
    text_containing(&mut dc_events, "from_browser", 10).await;
    dc.send_text(json!({"from_rust": 1}).to_string())
        .await
        .expect("p2p send");
    browser
        .expect("p2p data at the browser", 10, |v| {
            v["event"] == "dc-message" && v["data"]["from_rust"] == 1
        })
        .await;

    // Server-routed both ways.
    browser
        .command(json!({"cmd":"send","data":{"hello":"from browser"}}))
        .await;
    let d = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(d) = data.next_item().await
                && d.from == "browser"
                && d.kind == DataKind::Broadcast
            {
                return d;
            }
        }
    })
    .await
    .expect("the browser's broadcast");
    assert_eq!(d.data, json!({"hello":"from browser"}));
    rust.send_to("browser", json!({"direct":"hi"}))
        .await
        .expect("direct");
    browser
        .expect("direct at the browser", 10, |v| {
            v["event"] == "data" && v["kind"] == "direct" && v["data"]["direct"] == "hi"
        })
        .await;

    // The browser's WebSocket drops: it reconciles (new pc), the Rust data-channel-only peer sees
    // it leave and come back, negotiates a fresh connection and gets P2P data again.
    let mut left = rust.on_peer_left();
    browser.command(json!({"cmd":"reconnect"})).await;
    let gone = tokio::time::timeout(Duration::from_secs(10), left.next_item())
        .await
        .expect("left")
        .expect("peer");
    assert_eq!(gone.id(), "browser");
    let back = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(p) = rust.remote_peer("browser")
                && p != gone
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the browser re-joins");
    let mut dcs = back.on_data_channel();
    wait_connected(&back, 30).await;
    let dc2 = common::interop::meshcall_channel(&back, &mut dcs, 30).await;
    dc2.wait_open().await.expect("open again");
    let mut ev2 = dc2.events();
    browser
        .command(json!({"cmd":"dc-send","peer":"rust","data":{"after_reconnect":true}}))
        .await;
    text_containing(&mut ev2, "after_reconnect", 15).await;

    // Then the Rust side's own WebSocket drops: same RemotePeer, fresh pc, data again.
    let probe = json!({"cmd":"dc-send","peer":"rust","data":{"after_rust_drop":true}});
    rust_side_drop_keeps_the_remote_peer(
        &rust,
        &mut browser,
        "browser",
        Some(probe),
        "after_rust_drop",
    )
    .await;

    browser.command(json!({"cmd":"leave"})).await;
    browser
        .expect("browser left", 15, |v| v["event"] == "left")
        .await;
    rust.close().await;
    drop(camera);
}

/// Chromium↔Chromium through our server (the JS SDK against itself), as a baseline for the
/// join→connected numbers and a check of the server against the official browser SDK.
#[test]
fn two_browsers_through_meshcall() {
    let _one_at_a_time = ONE_BROWSER_TEST_AT_A_TIME.blocking_lock();
    let out = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/js/two_browsers.sh"
        ))
        .env("MESHCALL", env!("CARGO_BIN_EXE_meshcall"))
        .output()
        .expect("two_browsers.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("TIMING") || l.starts_with("KNOWN") || l.contains("passed,"))
    {
        println!("{line}");
    }
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert!(
        out.status.success(),
        "two_browsers.sh failed: {:?}\n{}\n{}",
        out.status.code(),
        fails.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
}
