//! Bitrate adaptation (issue 4 §6), sans-IO: fed once a second with the worst receiver's loss
//! fraction (RTCP receiver reports) and RTT (ICE consent checks), it retargets the shared
//! encoder.
//!
//! Policy (loss-based, in the spirit of GCC's loss controller, without a pacer queue that would
//! add latency when the encoder overshoots):
//! - loss > 10 %: bitrate × (1 − loss/2) — back off in proportion to the damage;
//! - receivers asking for ≥ 1 keyframe a second: bitrate × 0.85 — NACK hides moderate loss
//!   from the reports, but frames that cannot be completed show up as keyframe requests, and
//!   large keyframes on a lossy link make it worse (each is more likely to lose a packet);
//! - RTT > 400 ms: bitrate × 0.85 — queues are building somewhere;
//! - loss < 2 % and RTT < 250 ms (or unknown): bitrate × 1.08 + 10 kbit/s, up to the maximum —
//!   probe upward gently;
//! - otherwise hold.
//!
//! One encoder feeds every peer, so the worst peer sets the rate (a conscious trade: a mesh call
//! of a few people; simulcast would be the answer beyond that). Under sustained pressure the
//! picture degrades in steps, with hysteresis so it does not flap: below 35 % of the maximum the
//! encoder gets half-size frames (back above 55 %), and at the floor it drops to half the frame
//! rate (back above twice the floor).

/// What the controller wants changed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateDecision {
    /// A new encoder bitrate, when it changed.
    pub bitrate_bps: Option<u32>,
    /// The frame size step changed (the encoder will emit a keyframe).
    pub resolution_changed: bool,
}

#[derive(Debug, Clone)]
pub struct RateController {
    min: u32,
    max: u32,
    current: u32,
    scale_down: bool,
    half_fps: bool,
}

impl RateController {
    pub fn new(min_bps: u32, max_bps: u32, _fps: f32) -> RateController {
        let max = max_bps.max(min_bps);
        RateController {
            min: min_bps.min(max),
            max,
            current: max,
            scale_down: false,
            half_fps: false,
        }
    }

    pub fn bitrate_bps(&self) -> u32 {
        self.current
    }

    /// Send half-size frames.
    pub fn scale_down(&self) -> bool {
        self.scale_down
    }

    /// Send every other frame.
    pub fn half_fps(&self) -> bool {
        self.half_fps
    }

    /// One report (about once a second). `loss` is a fraction in 0..=1, `rtt_ms` the round trip.
    pub fn on_report(&mut self, loss: f64, rtt_ms: Option<f64>) -> RateDecision {
        self.on_feedback(loss, rtt_ms, 0.0)
    }

    /// [`Self::on_report`] plus the rate of keyframe requests (PLI/FIR per second).
    pub fn on_feedback(
        &mut self,
        loss: f64,
        rtt_ms: Option<f64>,
        plis_per_sec: f64,
    ) -> RateDecision {
        let loss = if loss.is_finite() {
            loss.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let rtt = rtt_ms.filter(|r| r.is_finite() && *r >= 0.0);
        let cur = f64::from(self.current);
        let next = if loss > 0.10 {
            cur * (1.0 - loss / 2.0)
        } else if plis_per_sec >= 1.0 || rtt.is_some_and(|r| r > 400.0) {
            // Undecodable frames, or queues building somewhere.
            cur * 0.85
        } else if loss < 0.02 && plis_per_sec < 0.5 && rtt.is_none_or(|r| r < 250.0) {
            cur * 1.08 + 10_000.0
        } else {
            cur
        };
        let next = (next as u32).clamp(self.min, self.max);
        let mut d = RateDecision::default();
        if next != self.current {
            self.current = next;
            d.bitrate_bps = Some(next);
        }
        let max = f64::from(self.max);
        let was = (self.scale_down, self.half_fps);
        if !self.scale_down && f64::from(next) < 0.35 * max {
            self.scale_down = true;
        } else if self.scale_down && f64::from(next) > 0.55 * max {
            self.scale_down = false;
        }
        if !self.half_fps && next <= self.min {
            self.half_fps = true;
        } else if self.half_fps && next > self.min.saturating_mul(2) {
            self.half_fps = false;
        }
        d.resolution_changed = was.0 != self.scale_down;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_loss_backs_off_to_the_floor_in_steps_and_recovers_with_hysteresis() {
        let mut r = RateController::new(150_000, 2_000_000, 30.0);
        assert_eq!(
            r.on_report(0.0, Some(1.0)).bitrate_bps,
            None,
            "at max, clean: hold"
        );
        let d = r.on_report(0.30, Some(1.0));
        assert_eq!(d.bitrate_bps, Some(1_700_000));
        assert!(!r.scale_down());
        let mut steps = 1;
        while !r.scale_down() {
            r.on_report(0.30, Some(1.0));
            steps += 1;
            assert!(steps < 20);
        }
        assert!(r.bitrate_bps() < 700_000);
        while r.bitrate_bps() > 150_000 {
            r.on_report(0.5, None);
        }
        assert!(r.half_fps(), "at the floor the frame rate halves");
        // recovery: clean reports probe upward; fps back first, then resolution
        let mut n = 0;
        while r.half_fps() {
            r.on_report(0.0, Some(5.0));
            n += 1;
        }
        assert!(
            r.scale_down(),
            "resolution comes back later than frame rate"
        );
        while r.scale_down() {
            r.on_report(0.0, Some(5.0));
            n += 1;
        }
        assert!(r.bitrate_bps() > 1_100_000, "{}", r.bitrate_bps());
        assert!(n < 60, "recovers within a minute of clean reports ({n})");
    }

    #[test]
    fn a_storm_of_keyframe_requests_backs_off_even_when_reports_look_clean() {
        let mut r = RateController::new(150_000, 1_500_000, 30.0);
        assert_eq!(
            r.on_feedback(0.05, Some(1.0), 3.0).bitrate_bps,
            Some(1_275_000)
        );
        assert_eq!(
            r.on_feedback(0.0, Some(1.0), 0.7).bitrate_bps,
            None,
            "0.5–1/s: hold"
        );
        assert!(
            r.on_feedback(0.0, Some(1.0), 0.0).bitrate_bps.is_some(),
            "calm: probe up"
        );
    }

    #[test]
    fn moderate_loss_holds_and_high_rtt_backs_off() {
        let mut r = RateController::new(100_000, 1_000_000, 30.0);
        assert_eq!(r.on_report(0.05, Some(10.0)).bitrate_bps, None);
        assert_eq!(r.on_report(0.0, Some(800.0)).bitrate_bps, Some(850_000));
        assert_eq!(
            r.on_report(0.0, Some(300.0)).bitrate_bps,
            None,
            "between: hold"
        );
        assert_eq!(
            r.on_report(f64::NAN, Some(f64::INFINITY)).bitrate_bps,
            Some(928_000)
        );
    }
}
