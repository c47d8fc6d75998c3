//! Video through random packet loss, measured on what the receiver decoded.
//!
//! Inside the test's own loopback-only network namespace an nftables rule drops a random share
//! of every UDP packet (media, RTCP, ICE) in both directions. A 720p30 call goes through 5 s
//! clean, 15 s at 10 % loss, 5 s clean, 15 s at 20 % loss, 5 s clean. The floors asserted here
//! hold on a loaded 2-core CI machine running a debug build; `meshcall bench call --loss 10,20`
//! (release) reports the real numbers against the targets in docs/BENCHMARKS.md.
//!
//! Refuses to run unless the only interface is `lo`.

use meshcall::bench::loss::{LossRunOptions, describe, loopback_only_namespace, run_loss_call};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_keeps_its_frame_rate_through_random_loss_and_recovers_at_once() {
    assert!(
        loopback_only_namespace(),
        "run inside a loopback-only network namespace (scripts/test does): this test installs a firewall rule"
    );
    let opts = LossRunOptions::standard(&[10, 20], 15);
    let rtx_before = meshcall::peer::rtx::unwrapped_total();
    let reports = run_loss_call(&opts).await.expect("loss run");
    let rtx = meshcall::peer::rtx::unwrapped_total() - rtx_before;
    println!("retransmissions received over RTX: {rtx}");
    for r in &reports {
        println!("{}", describe(r));
    }
    let clean = &reports[0];
    let at10 = &reports[1];
    let after10 = &reports[2];
    let at20 = &reports[3];
    let after20 = &reports[4];
    assert_eq!((at10.phase.loss_percent, at20.phase.loss_percent), (10, 20));
    assert!(
        clean.metrics.median_fps_last10 >= 25.0,
        "clean: {}",
        describe(clean)
    );
    // Loss really happened and was repaired by retransmission, not hidden.
    assert!(
        at10.receiver.packets_repaired > 50,
        "NACK repairs packets: {}",
        describe(at10)
    );
    assert!(
        rtx > 50,
        "retransmissions travel over RTX (negotiated between meshcall peers): {rtx}"
    );
    assert!(
        at10.metrics.median_fps_last10 >= 20.0,
        "10 % loss: {}",
        describe(at10)
    );
    assert!(
        at10.metrics.longest_freeze_ms <= 500.0,
        "10 % loss, longest freeze: {}",
        describe(at10)
    );
    assert!(
        at20.metrics.median_fps_last10 >= 15.0,
        "20 % loss: {}",
        describe(at20)
    );
    for (lossy, after) in [(at10, after10), (at20, after20)] {
        let back = lossy.recovery_ms.unwrap_or(f64::INFINITY);
        assert!(
            back <= 3_000.0,
            "full rate within 3 s of the loss stopping: {} / {}",
            describe(lossy),
            describe(after)
        );
    }
    // Random loss that NACK repairs must not drive the encoder down.
    assert!(
        at20.sender.target_bitrate_bps >= 1_000_000,
        "the rate is not cut for repaired random loss: {}",
        describe(at20)
    );
}
