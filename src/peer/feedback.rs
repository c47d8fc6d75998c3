//! Receiver feedback about our outgoing streams, as read from RTCP receiver reports.
//!
//! webrtc-rs 0.21 does not surface report blocks to the application (its stats keep the remote
//! loss at zero in practice), so the connection's RTCP tap records every report block here,
//! keyed by the SSRC it describes. SSRCs are random 32-bit values chosen per leg, so one
//! process-wide table is enough; it is bounded and forgets streams silent for a minute.
//!
//! A remote peer cannot abuse it: the tap records only blocks about SSRCs bound on that peer's
//! own connection (so it can neither fill the table nor pose as another peer's receiver), at
//! most 200 blocks a second per connection; and each leg has its own rate controller, so a peer
//! reporting 100 % loss lowers only what it receives (and the low encoding it shares with
//! other struggling legs), never the full-size encoding the others get.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The latest report block about one of our SSRCs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossReport {
    /// Fraction of packets lost (0..1) over the last window of at least [`LOSS_WINDOW`],
    /// computed from the cumulative counters (see [`record`]).
    pub fraction_lost: f64,
    /// Cumulative packets lost.
    pub total_lost: u32,
    /// Interarrival jitter, RTP units.
    pub jitter: u32,
    /// When the latest block was recorded; the table forgets an SSRC a minute after this, so
    /// an old value here means the receiver stopped reporting.
    pub at: Instant,
    /// Where the current window started: (when, cumulative lost, extended highest sequence).
    window_start: (Instant, u32, u32),
}

/// The shortest span a loss fraction is computed over. A browser sends a receiver report with
/// every NACK, so report blocks can arrive tens of milliseconds apart, each with a
/// `fraction_lost` over a handful of packets (0 %, 20 %, 40 %…); computing the fraction from
/// the cumulative counters over at least this long gives the rate controller a steady signal
/// whatever the sender of the reports.
pub const LOSS_WINDOW: Duration = Duration::from_secs(1);

const CAP: usize = 4_096;
const FORGET: Duration = Duration::from_secs(60);

fn table() -> &'static Mutex<HashMap<u32, LossReport>> {
    static T: OnceLock<Mutex<HashMap<u32, LossReport>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Records one report block (called from the RTCP tap on the driver task; cheap).
/// `highest_seq` is the block's extended highest sequence number received.
pub fn record(
    ssrc: u32,
    fraction_lost: u8,
    total_lost: u32,
    highest_seq: u32,
    jitter: u32,
    now: Instant,
) {
    let Ok(mut t) = table().lock() else { return };
    if t.len() >= CAP && !t.contains_key(&ssrc) {
        t.retain(|_, r| now.duration_since(r.at) < FORGET);
        if t.len() >= CAP {
            return;
        }
    }
    let entry = t.entry(ssrc).or_insert(LossReport {
        // The first block's own fraction, until a window's worth of counters exists.
        fraction_lost: f64::from(fraction_lost) / 256.0,
        total_lost,
        jitter,
        at: now,
        window_start: (now, total_lost, highest_seq),
    });
    let (since, lost0, seq0) = entry.window_start;
    if now.saturating_duration_since(since) >= LOSS_WINDOW {
        let expected = highest_seq.wrapping_sub(seq0);
        if expected > 0 && expected < 1 << 30 {
            let lost = total_lost.saturating_sub(lost0).min(expected);
            entry.fraction_lost = f64::from(lost) / f64::from(expected);
        }
        entry.window_start = (now, total_lost, highest_seq);
    }
    entry.total_lost = total_lost;
    entry.jitter = jitter;
    entry.at = now;
}

/// The latest report about `ssrc`, if any arrived.
pub fn latest(ssrc: u32) -> Option<LossReport> {
    table().lock().ok()?.get(&ssrc).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_bounds() {
        let now = Instant::now();
        record(7, 64, 10, 1000, 3, now);
        let r = latest(7).expect("recorded");
        assert_eq!(r.fraction_lost, 0.25, "the first block's own fraction");
        assert_eq!(r.total_lost, 10);
        assert_eq!(latest(8), None);
        for s in 100..(100 + CAP as u32 + 10) {
            record(s, 0, 0, 0, 0, now);
        }
        assert!(table().lock().expect("lock").len() <= CAP);
    }

    #[test]
    fn loss_is_computed_over_a_window_not_per_noisy_report() {
        // A browser's compound reports every 50 ms, each over ~5 packets: 0 % or 20–40 %. The
        // steady truth is 10 % (100 packets a second, 10 lost).
        let t0 = Instant::now();
        let ssrc = 0x1055_0001;
        record(ssrc, 0, 0, 10_000, 0, t0);
        for i in 1..=40u32 {
            let t = t0 + Duration::from_millis(u64::from(i) * 50);
            let noisy = if i % 4 == 0 { 102 } else { 0 }; // 40 % or 0 % per report
            record(ssrc, noisy, i / 2, 10_000 + i * 5, 0, t);
        }
        let r = latest(ssrc).expect("recorded");
        assert!((r.fraction_lost - 0.10).abs() < 0.01, "{}", r.fraction_lost);
    }
}
