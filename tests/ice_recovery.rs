//! ICE failure and the restart ladder with real packet loss: inside the test's own
//! loopback-only network namespace, an nftables rule drops every UDP packet, so both peer
//! connections fail; the ladder restarts ICE, recovers when the rule goes, and reports
//! exhaustion exactly once when it never does.
//!
//! Refuses to run unless the only network interface is `lo` (the namespace `scripts/test`
//! creates): the firewall rule must never touch a real machine.

mod common;

use std::time::Duration;

use common::net::{isolated, nft, peer_with, wait_for_state, wait_remote};
use common::*;
use meshcall::peer::{
    DcEvent, DcMessage, MeteredPeer, PeerConnectionState, PeerEventError, PeerSettings,
};

fn nft_line(line: &str) {
    nft(&line.split_whitespace().collect::<Vec<_>>());
}

fn block_udp() {
    nft_line("add table inet meshcall_test");
    nft_line("add chain inet meshcall_test out { type filter hook output priority 0 ; }");
    nft_line("add rule inet meshcall_test out meta l4proto udp drop");
}

fn unblock_udp() {
    nft_line("delete table inet meshcall_test");
}

/// The ladder test blackholes *all* UDP in the namespace with nftables, which would take down
/// the other test's connections too: they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn settings() -> PeerSettings {
    PeerSettings {
        ice_disconnected: Duration::from_millis(800),
        ice_failed: Duration::from_millis(800),
        ice_keepalive: Duration::from_millis(200),
        ladder_schedule: vec![
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_millis(500),
        ],
        ladder_probe: Duration::from_secs(2),
        ..PeerSettings::loopback_only()
    }
}

fn peer(origin: &str, sub: &str) -> MeteredPeer {
    peer_with(origin, sub, sub, settings())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_ladder_recovers_and_reports_exhaustion_once() {
    let _serial = SERIAL.lock().await;
    assert!(
        isolated(),
        "run inside a loopback-only network namespace (scripts/test does)"
    );
    let server = start(config()).await;
    let origin = server.ws_origin();
    let a = peer(&origin, "ice-a");
    let b = peer(&origin, "ice-b");
    a.join("ice", false).await.expect("join");
    b.join("ice", false).await.expect("join");
    let mut a_joined = a.on_peer_joined();
    let ra = match a.remote_peer("ice-b") {
        Some(p) => p,
        None => tokio::time::timeout(Duration::from_secs(5), a_joined.next_item())
            .await
            .expect("b")
            .expect("peer"),
    };
    let mut incoming = {
        let mut b_joined = b.on_peer_joined();
        let rb = match b.remote_peer("ice-a") {
            Some(p) => p,
            None => tokio::time::timeout(Duration::from_secs(5), b_joined.next_item())
                .await
                .expect("a")
                .expect("peer"),
        };
        rb.on_data_channel()
    };
    let dc = ra.create_data_channel("probe", None).await.expect("dc");
    dc.wait_open().await.expect("open");
    let remote_dc = tokio::time::timeout(Duration::from_secs(5), incoming.next_item())
        .await
        .expect("dc")
        .expect("dc");
    let rb = b.remote_peer("ice-a").expect("known");
    wait_for_state(&ra, PeerConnectionState::Connected, 10).await;
    wait_for_state(&rb, PeerConnectionState::Connected, 10).await;

    // 1. Blackhole UDP: both sides go reconnecting; the ladder restarts ICE; lift the block
    //    and the pair recovers in place (the same data channel keeps working).
    let mut a_errors = ra.errors();
    block_udp();
    wait_for_state(&ra, PeerConnectionState::Reconnecting, 10).await;
    wait_for_state(&rb, PeerConnectionState::Reconnecting, 10).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    unblock_udp();
    wait_for_state(&ra, PeerConnectionState::Connected, 20).await;
    wait_for_state(&rb, PeerConnectionState::Connected, 20).await;
    let mut ev = remote_dc.events();
    dc.send_text("after recovery").await.expect("send");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(DcEvent::Message(DcMessage::Text(t))) = ev.next_item().await {
                assert_eq!(t, "after recovery");
                return;
            }
        }
    })
    .await
    .expect("the data channel survived the ICE restart");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), a_errors.next())
            .await
            .is_err(),
        "no exhaustion while recovering"
    );

    // 2. Blackhole for good: the ladder runs its 3 attempts (≈ 3 × 2 s probes + delays), then
    //    reports exhaustion exactly once and stays reconnecting.
    block_udp();
    wait_for_state(&ra, PeerConnectionState::Reconnecting, 10).await;
    let first = tokio::time::timeout(Duration::from_secs(30), a_errors.next_item())
        .await
        .expect("exhaustion reported")
        .expect("error");
    assert_eq!(
        first,
        PeerEventError::IceRecoveryExhausted {
            peer: "ice-b".into(),
            attempts: 3
        }
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(5), a_errors.next())
            .await
            .is_err(),
        "exhaustion is reported once"
    );
    assert_eq!(ra.state(), PeerConnectionState::Reconnecting);
    unblock_udp();
    a.close().await;
    b.close().await;
}

/// The Troubleshoot "blackhole media" action, in process and without a firewall: a's
/// connection to b drops every packet for 2 s, so a↔b go `reconnecting` on both sides and
/// recover through the ladder once it ends, while a↔c (another connection of the same
/// process) stays `connected` throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholing_one_peer_takes_only_that_connection_down_and_it_recovers() {
    let _serial = SERIAL.lock().await;
    let server = start(config()).await;
    let origin = server.ws_origin();
    let a = peer(&origin, "bh-a");
    let b = peer(&origin, "bh-b");
    let c = peer(&origin, "bh-c");
    for p in [&a, &b, &c] {
        p.join("blackhole", false).await.expect("join");
    }
    let ab = wait_remote(&a, "bh-b").await;
    let ac = wait_remote(&a, "bh-c").await;
    // Nothing is negotiated until there is something to carry: a data channel each.
    for r in [&ab, &ac] {
        let dc = r.create_data_channel("probe", None).await.expect("dc");
        tokio::time::timeout(Duration::from_secs(10), dc.wait_open())
            .await
            .expect("open in time")
            .expect("open");
    }
    let ba = wait_remote(&b, "bh-a").await;
    for r in [&ab, &ac, &ba] {
        wait_for_state(r, PeerConnectionState::Connected, 10).await;
    }
    let mut ac_changes = ac.state_changes();

    assert!(!ab.media_blackholed());
    ab.blackhole_media(Duration::from_secs(2));
    assert!(ab.media_blackholed());
    wait_for_state(&ab, PeerConnectionState::Reconnecting, 10).await;
    wait_for_state(&ba, PeerConnectionState::Reconnecting, 10).await;
    wait_for_state(&ab, PeerConnectionState::Connected, 20).await;
    wait_for_state(&ba, PeerConnectionState::Connected, 20).await;
    assert!(!ab.media_blackholed());

    // The same RemotePeer objects recovered in place, and the untouched connection never left
    // `connected`.
    assert_eq!(a.remote_peer("bh-b").as_ref(), Some(&ab));
    assert_eq!(ac.state(), PeerConnectionState::Connected);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), ac_changes.next())
            .await
            .is_err(),
        "a↔c changed state while a↔b was blackholed"
    );

    // And traffic flows again: a data channel opens across the recovered connection.
    let dc = ab.create_data_channel("after", None).await.expect("dc");
    tokio::time::timeout(Duration::from_secs(10), dc.wait_open())
        .await
        .expect("open in time")
        .expect("open");
    for p in [&a, &b, &c] {
        p.close().await;
    }
}
