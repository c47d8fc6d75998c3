//! Bitrate adaptation on a link that really is too slow: inside the test's own loopback-only
//! network namespace an nftables policer caps all UDP at 800 kbit/s (packets over the rate are
//! dropped, as on a saturated uplink). A 720p call whose encoder starts at 1.5 Mbit/s must find
//! the link's rate within 5 s and keep the picture moving, and climb again once the cap is gone.
//!
//! (Random loss on a fast link is the opposite case — the rate must *not* drop there, because
//! NACK repairs it; `tests/media_loss.rs` checks that.) Refuses to run unless the only interface
//! is `lo`.

use meshcall::bench::loss::{
    LossRunOptions, Phase, describe, loopback_only_namespace, run_loss_call,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_link_is_found_within_five_seconds_and_the_rate_returns_when_it_lifts() {
    assert!(
        loopback_only_namespace(),
        "run inside a loopback-only network namespace (scripts/test does): this test installs a firewall rule"
    );
    let mut opts = LossRunOptions::standard(&[], 0);
    opts.table = "meshcall_cap".into();
    opts.phases = vec![Phase::loss(0, 4), Phase::cap(800, 15), Phase::loss(0, 12)];
    let reports = run_loss_call(&opts).await.expect("cap run");
    for r in &reports {
        println!("{}", describe(r));
        println!("  target kbit/s every 200 ms: {:?}", r.target_trace);
    }
    let (clean, capped, after) = (&reports[0], &reports[1], &reports[2]);
    assert_eq!(
        clean.sender.target_bitrate_bps, 1_500_000,
        "clean: at the maximum"
    );
    let found = capped.target_at_or_below_ms(800);
    assert!(
        found.is_some_and(|ms| ms <= 5_000),
        "the target reaches the 800 kbit/s cap within 5 s ({found:?} ms): {}",
        describe(capped)
    );
    assert!(
        capped.metrics.median_fps_last10 >= 20.0,
        "the picture keeps moving on the capped link: {}",
        describe(capped)
    );
    let low = capped.sender.target_bitrate_bps;
    let recovered = after.sender.target_bitrate_bps;
    assert!(
        f64::from(recovered) > f64::from(low) * 1.3,
        "the target climbs again once the cap is gone ({low} → {recovered}): {}",
        describe(after)
    );
    assert!(
        after.metrics.median_fps_last10 >= 25.0,
        "full rate after the cap: {}",
        describe(after)
    );
}
