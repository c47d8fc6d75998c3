//! Receiver feedback about our outgoing streams, as read from RTCP receiver reports.
//!
//! webrtc-rs 0.21 does not surface report blocks to the application (its stats keep the remote
//! loss at zero in practice), so each connection's RTCP tap records the report blocks about the
//! streams it sends into that connection's [`FeedbackTable`], keyed by SSRC; each send leg holds
//! a [`LegFeedback`] (the table of the connection it was attached to, and its own SSRC) and
//! reads its receiver's latest report from it. The table is bounded and forgets streams silent
//! for a minute.
//!
//! A remote peer cannot abuse it: the tap records only blocks about SSRCs bound on that peer's
//! own connection (so it can neither fill the table nor pose as another peer's receiver), at
//! most 200 blocks a second per connection; and each leg has its own rate controller, so a peer
//! reporting 100 % loss lowers only what it receives (and the low encoding it shares with
//! other struggling legs), never the full-size encoding the others get.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The latest report block about one of our SSRCs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossReport {
    /// Fraction of packets lost (0..1) over the last window of at least [`LOSS_WINDOW`],
    /// computed from the cumulative counters (see [`FeedbackTable::record`]).
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

/// One connection's report blocks about the streams we send on it.
#[derive(Debug, Clone, Default)]
pub struct FeedbackTable(Arc<Mutex<HashMap<u32, LossReport>>>);

/// What one send leg reads: its connection's table and its own SSRC.
#[derive(Debug, Clone)]
pub struct LegFeedback {
    table: FeedbackTable,
    ssrc: u32,
}

impl LegFeedback {
    /// The latest report about this leg's stream, if any arrived.
    pub fn latest(&self) -> Option<LossReport> {
        self.table.latest(self.ssrc)
    }
}

/// The shortest span a loss fraction is computed over. A browser sends a receiver report with
/// every NACK, so report blocks can arrive tens of milliseconds apart, each with a
/// `fraction_lost` over a handful of packets (0 %, 20 %, 40 %…); computing the fraction from
/// the cumulative counters over at least this long gives the rate controller a steady signal
/// whatever the sender of the reports.
pub const LOSS_WINDOW: Duration = Duration::from_secs(1);

const CAP: usize = 4_096;
const FORGET: Duration = Duration::from_secs(60);

impl FeedbackTable {
    /// The handle a send leg on this connection reads its reports through.
    pub fn for_leg(&self, ssrc: u32) -> LegFeedback {
        LegFeedback {
            table: self.clone(),
            ssrc,
        }
    }

    /// Records one report block (called from the RTCP tap on the driver task; cheap).
    /// `highest_seq` is the block's extended highest sequence number received.
    pub fn record(
        &self,
        ssrc: u32,
        fraction_lost: u8,
        total_lost: u32,
        highest_seq: u32,
        jitter: u32,
        now: Instant,
    ) {
        let Ok(mut t) = self.0.lock() else { return };
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
    pub fn latest(&self, ssrc: u32) -> Option<LossReport> {
        self.0.lock().ok()?.get(&ssrc).copied()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map_or(0, |t| t.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_bounds() {
        let now = Instant::now();
        let table = FeedbackTable::default();
        table.record(7, 64, 10, 1000, 3, now);
        let r = table.for_leg(7).latest().expect("recorded");
        assert_eq!(r.fraction_lost, 0.25, "the first block's own fraction");
        assert_eq!(r.total_lost, 10);
        assert_eq!(table.latest(8), None);
        assert_eq!(
            FeedbackTable::default().latest(7),
            None,
            "each connection has its own table"
        );
        for s in 100..(100 + CAP as u32 + 10) {
            table.record(s, 0, 0, 0, 0, now);
        }
        assert!(table.len() <= CAP);
    }

    #[test]
    fn loss_is_computed_over_a_window_not_per_noisy_report() {
        // A browser's compound reports every 50 ms, each over ~5 packets: 0 % or 20–40 %. The
        // steady truth is 10 % (100 packets a second, 10 lost).
        let t0 = Instant::now();
        let ssrc = 0x1055_0001;
        let table = FeedbackTable::default();
        table.record(ssrc, 0, 0, 10_000, 0, t0);
        for i in 1..=40u32 {
            let t = t0 + Duration::from_millis(u64::from(i) * 50);
            let noisy = if i % 4 == 0 { 102 } else { 0 }; // 40 % or 0 % per report
            table.record(ssrc, noisy, i / 2, 10_000 + i * 5, 0, t);
        }
        let r = table.latest(ssrc).expect("recorded");
        assert!((r.fraction_lost - 0.10).abs() < 0.01, "{}", r.fraction_lost);
    }
}
