//! Receiver feedback about our outgoing streams, as read from RTCP receiver reports.
//!
//! webrtc-rs 0.21 does not surface report blocks to the application (its stats keep the remote
//! loss at zero in practice), so the connection's RTCP tap records every report block here,
//! keyed by the SSRC it describes. SSRCs are random 32-bit values chosen per leg, so one
//! process-wide table is enough; it is bounded and forgets streams silent for a minute.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The latest report block about one of our SSRCs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossReport {
    /// Fraction of packets lost since the previous report (0..1).
    pub fraction_lost: f64,
    /// Cumulative packets lost.
    pub total_lost: u32,
    /// Interarrival jitter, RTP units.
    pub jitter: u32,
    pub at: Instant,
}

const CAP: usize = 4_096;
const FORGET: Duration = Duration::from_secs(60);

fn table() -> &'static Mutex<HashMap<u32, LossReport>> {
    static T: OnceLock<Mutex<HashMap<u32, LossReport>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Records one report block (called from the RTCP tap on the driver task; cheap).
pub fn record(ssrc: u32, fraction_lost: u8, total_lost: u32, jitter: u32, now: Instant) {
    let Ok(mut t) = table().lock() else { return };
    if t.len() >= CAP && !t.contains_key(&ssrc) {
        t.retain(|_, r| now.duration_since(r.at) < FORGET);
        if t.len() >= CAP {
            return;
        }
    }
    t.insert(
        ssrc,
        LossReport {
            fraction_lost: f64::from(fraction_lost) / 256.0,
            total_lost,
            jitter,
            at: now,
        },
    );
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
        record(7, 64, 10, 3, now);
        let r = latest(7).expect("recorded");
        assert_eq!(r.fraction_lost, 0.25);
        assert_eq!(r.total_lost, 10);
        assert_eq!(latest(8), None);
        for s in 100..(100 + CAP as u32 + 10) {
            record(s, 0, 0, 0, now);
        }
        assert!(table().lock().expect("lock").len() <= CAP);
    }
}
