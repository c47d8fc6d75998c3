//! A Rust peer and the official JS SDK in Chromium keep decoding each other's video through 10 %
//! random UDP loss (nftables in the test's own loopback-only namespace, both directions). This
//! checks the repair path across implementations: both sides negotiate RTX, Chromium's NACKs
//! reach our responder and our retransmissions reach it on the RTX SSRC, and its retransmissions
//! are unwrapped and used by our receiver. A separate test binary, so the loss rule touches no other test.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use common::interop::{browser_peer, rust_peer_with_camera, wait_connected};
use common::*;
use meshcall::bench::loss::{LossShaper, loopback_only_namespace, phase_metrics};
use meshcall::media::receive::VideoReceiver;
use meshcall::media::source::media_clock_us;

/// The browser's inbound video from the Rust peer: (frames decoded, retransmitted packets
/// received), from its `inbound-rtp` stats.
async fn browser_video_in(browser: &mut common::interop::JsonLinesPeer, n: u64) -> (u64, u64) {
    browser
        .command(json!({"cmd": "stats", "peer": "rust", "id": n}))
        .await;
    let r = browser
        .expect("stats", 15, |v| {
            v["event"] == "cmd-result" && v["cmd"] == "stats" && v["id"] == n
        })
        .await;
    let inbound = || {
        r["rtp"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "inbound-rtp" && e["kind"] == "video")
    };
    (
        inbound().filter_map(|e| e["frames"].as_u64()).sum(),
        inbound().filter_map(|e| e["retransmitted"].as_u64()).sum(),
    )
}

async fn browser_frames(browser: &mut common::interop::JsonLinesPeer, n: u64) -> u64 {
    browser_video_in(browser, n).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_and_rust_decode_each_other_through_ten_percent_loss() {
    assert!(
        loopback_only_namespace(),
        "run inside a loopback-only network namespace (scripts/test does): this test installs a firewall rule"
    );
    let server = start(config()).await;
    let origin = server.ws_origin();
    // The Rust side sends real H.264 (the synthetic pattern, one encoder for all peers).
    let (rust, camera) = rust_peer_with_camera(&origin).await;
    let mut joined = rust.on_peer_joined();
    rust.join("browser-loss", true).await.expect("rust joins");
    let mut browser = browser_peer(
        &origin,
        &token("browser", "Browser"),
        "browser-loss",
        "Browser",
    );
    let remote = tokio::time::timeout(Duration::from_secs(60), joined.next_item())
        .await
        .expect("browser appears")
        .expect("peer");
    let mut streams = remote.on_stream_added();
    wait_connected(&remote, 30).await;
    let stream = match remote.current_streams().into_iter().next() {
        Some(s) => s,
        None => tokio::time::timeout(Duration::from_secs(20), streams.next_item())
            .await
            .expect("the browser's camera stream")
            .expect("stream"),
    };
    let video = stream
        .tracks
        .iter()
        .find(|t| t.kind == "video")
        .expect("a video track");
    let rx = VideoReceiver::start(video).expect("receiver");
    browser
        .expect("the Rust video plays in the browser", 30, |v| {
            v["event"] == "first-frame" && v["peer"] == "rust"
        })
        .await;
    tokio::time::timeout(Duration::from_secs(15), async {
        while rx.frames_decoded() < 10 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the browser's video did not decode: {:?}", rx.stats()));

    // Clean reference: 5 s.
    let secs = 10u64;
    let b0 = browser_frames(&mut browser, 1).await;
    let r0 = rx.frames_decoded();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let clean_in_browser = (browser_frames(&mut browser, 2).await - b0) as f64 / 5.0;
    let clean_in_rust = (rx.frames_decoded() - r0) as f64 / 5.0;

    // 10 % loss both ways: 3 s to settle, then `secs` measured.
    let shaper = LossShaper::new("meshcall_interop_loss").expect("nftables");
    shaper.set_loss(10).expect("loss rule");
    tokio::time::sleep(Duration::from_secs(3)).await;
    rx.drain_log();
    let from = media_clock_us();
    let (b1, rtx_in_browser_1) = browser_video_in(&mut browser, 3).await;
    let rtx_in_rust_1 = meshcall::peer::rtx::unwrapped_total();
    let r1 = rx.frames_decoded();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (b2, rtx_in_browser_2) = browser_video_in(&mut browser, 4).await;
    let lossy_in_browser = (b2 - b1) as f64 / secs as f64;
    let rtx_in_rust = meshcall::peer::rtx::unwrapped_total() - rtx_in_rust_1;
    let rtx_in_browser = rtx_in_browser_2.saturating_sub(rtx_in_browser_1);
    let lossy_in_rust = (rx.frames_decoded() - r1) as f64 / secs as f64;
    let to = media_clock_us();
    let decoded: Vec<u64> = rx.drain_log().iter().map(|r| r.decoded_us).collect();
    let m = phase_metrics(&decoded, from, to);
    shaper.set_loss(0).expect("loss off");
    drop(shaper);
    let stats: Value = json!({
        "rust_receiver": format!("{:?}", rx.stats()),
        "rust_sender": format!("{:?}", camera.stats()),
    });
    println!(
        "Chromium → Rust: {clean_in_rust:.1} fps clean, {lossy_in_rust:.1} fps at 10 % loss \
         (per second {:?}, longest freeze {:.0} ms); Rust → Chromium: {clean_in_browser:.1} fps \
         clean, {lossy_in_browser:.1} fps at 10 % loss; {stats}",
        m.fps_per_second, m.longest_freeze_ms
    );
    println!(
        "retransmissions received over RTX: {rtx_in_rust} by Rust, {rtx_in_browser} by Chromium"
    );
    assert!(
        rtx_in_rust > 0,
        "Chromium's retransmissions reach us over RTX (negotiated and unwrapped)"
    );
    assert!(
        rtx_in_browser > 0,
        "Chromium receives our retransmissions (retransmittedPacketsReceived)"
    );
    assert!(
        lossy_in_rust >= 0.75 * clean_in_rust,
        "Rust keeps decoding Chromium's video under loss: {lossy_in_rust:.1} vs {clean_in_rust:.1} fps clean"
    );
    assert!(
        lossy_in_browser >= 0.75 * clean_in_browser,
        "Chromium keeps decoding the Rust video under loss: {lossy_in_browser:.1} vs {clean_in_browser:.1} fps clean"
    );
    assert!(
        m.longest_freeze_ms <= 1_000.0,
        "no long freeze of Chromium's video at the Rust side: {:.0} ms",
        m.longest_freeze_ms
    );
    browser.command(json!({"cmd": "leave"})).await;
    rust.close().await;
    drop(camera);
}
