//! Bitrate adaptation, sans-IO: fed about once a second with the worst receiver's loss fraction
//! (RTCP receiver reports) and RTT (ICE consent checks), it retargets the shared encoder.
//!
//! The loss it sees is what is left *after* NACK repair: retransmitted packets count as received
//! in the receiver's reports. Random loss on a lossy but fast link (Wi-Fi, mobile) is almost all
//! repaired, so it barely shows here and the rate stays where the link can carry it; loss that
//! comes from pushing more than the link carries is not repairable (the retransmissions are
//! dropped too) and shows up in full. That is the distinction the controller relies on.
//!
//! Policy (GCC's loss-based thresholds, evaluated on every report, ~4 a second):
//! - residual loss > 10 %: the link delivered about `sent × (1 − loss)` (what actually went out,
//!   measured by a [`SendMeter`]); the target drops to 90 % of that (at most halving), so a saturated link is found in one or two steps instead of a
//!   slow slide during which every keyframe is lost. Decreases are at least 400 ms apart, so one
//!   episode seen by several reports is not counted several times;
//! - RTT > 400 ms: bitrate × 0.85 (at most once a second) — queues are building somewhere;
//! - loss < 2 % and RTT < 250 ms (or unknown), at most once a second: bitrate × 1.08 + 10 kbit/s
//!   up to the maximum — except within ±15 % of the rate where the link last failed, where it
//!   creeps up 3 % a second so it does not overshoot the same limit again and again;
//! - otherwise hold.
//!
//! Not every receiver nets out repaired loss: a browser's reports count a packet lost even when
//! its retransmission arrived. So every cut for loss is also an experiment: if three seconds later
//! the loss has not fallen with the rate, it is the link's own (random) loss; the cut is undone
//! and that much loss is tolerated from then on (forgotten gradually when the link gets better).
//! On a saturated link the loss vanishes after the cut and the cut stands.
//!
//! Keyframe requests are *not* a congestion signal: under random loss receivers ask for them
//! now and then whatever the rate, and the encoder answers at most two a second anyway
//! (`media::keyframes`).
//!
//! One encoder feeds every peer, so the worst peer sets the rate (a conscious trade: a mesh call
//! of a few people). Under sustained pressure the picture degrades in steps, with hysteresis so
//! it does not flap: below 35 % of the maximum the encoder gets half-size frames (back above
//! 55 %), and at the floor it drops to half the frame rate (back above twice the floor).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::debug;

/// Decreases are at least this far apart: several reports describe one episode, and the loss
/// a receiver reports is computed over a window of about a second (`peer::feedback`).
const DECREASE_SPACING: Duration = Duration::from_millis(400);
/// How long after a cut for loss the controller judges whether the loss went down with it,
/// averaging the reports that arrive after the first `PROBE_SETTLE` (the cut needs a round trip
/// and a report interval to show).
const PROBE_TIME: Duration = Duration::from_secs(3);
/// Longer than the window receivers' loss is computed over (`peer::feedback::LOSS_WINDOW`, 1 s)
/// plus a report interval, so no report averaged into the verdict still counts traffic from
/// before the cut.
const PROBE_SETTLE: Duration = Duration::from_millis(2_000);
/// Loss above this is never taken for the link's own: a link that loses more than a fifth of
/// the packets whatever we send is unusable anyway, while a policer or a saturated queue that
/// drops in bursts (keyframes) can look "unchanged" after a cut and must not be tolerated.
const MAX_TOLERATED_LOSS: f64 = 0.2;
/// Increases (and the RTT back-off) at most this often.
const INCREASE_SPACING: Duration = Duration::from_secs(1);

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
    last_decrease: Option<Instant>,
    last_increase: Option<Instant>,
    /// The rate the link last failed to carry (the estimate made then).
    congested_at: Option<f64>,
    /// Loss the link shows whatever we send (random loss that the receiver's reports do not
    /// net out; a browser reports loss before repair). Only loss above it is congestion.
    inherent_loss: f64,
    /// A cut for loss whose effect is still being watched.
    probe: Option<LossProbe>,
}

/// After a cut for loss: whether the loss followed the rate down (congestion) or stayed (the
/// link's own loss, which sending less does not cure).
#[derive(Debug, Clone, Copy)]
struct LossProbe {
    rate_before: f64,
    loss_at_cut: f64,
    /// Reports seen during the probe (after the cut had time to act): their loss summed.
    loss_sum: f64,
    reports: u32,
    /// The loss expected at the new rate if the link simply cannot carry more than it
    /// delivered before the cut.
    loss_if_congested: f64,
    at: Instant,
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
            last_decrease: None,
            last_increase: None,
            congested_at: None,
            inherent_loss: 0.0,
            probe: None,
        }
    }

    /// The loss fraction the controller currently attributes to the link itself.
    pub fn inherent_loss(&self) -> f64 {
        self.inherent_loss
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

    /// One receiver report at `now`. `loss` is the residual loss fraction in 0..=1 (after
    /// NACK repair), `rtt_ms` the round trip.
    /// `sent_bps` is what actually went out over about the same window (a [`SendMeter`]); the
    /// encoder overshoots its target on keyframes and under scene changes, so on a saturated
    /// link "what got through" is `sent × (1 − loss)`, not `target × (1 − loss)`.
    pub fn on_report(
        &mut self,
        now: Instant,
        loss: f64,
        rtt_ms: Option<f64>,
        sent_bps: Option<f64>,
    ) -> RateDecision {
        let loss = if loss.is_finite() {
            loss.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let rtt = rtt_ms.filter(|r| r.is_finite() && *r >= 0.0);
        let since = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
        let may_decrease = since(self.last_decrease).is_none_or(|d| d >= DECREASE_SPACING);
        let may_increase = since(self.last_increase).is_none_or(|d| d >= INCREASE_SPACING)
            && since(self.last_decrease).is_none_or(|d| d >= INCREASE_SPACING);
        let cur = f64::from(self.current);
        // Judge the last cut once its effect shows: loss that did not fall with the rate is
        // the link's own, so the rate it cost is given back and that loss is tolerated.
        if let Some(p) = &mut self.probe
            && now.saturating_duration_since(p.at) >= PROBE_SETTLE
        {
            p.loss_sum += loss;
            p.reports += 1;
        }
        if let Some(p) = self.probe
            && now.saturating_duration_since(p.at) >= PROBE_TIME
            && p.reports > 0
        {
            self.probe = None;
            // Random loss stays where it was; congestion loss drops to what the smaller rate
            // still overshoots. Only a clear answer undoes the cut. The average over the probe
            // window, not one report: a browser reports once a second, and one report of a
            // 10 % random loss easily reads 6 % or 14 %.
            let loss = p.loss_sum / f64::from(p.reports);
            let tellable = p.loss_at_cut - p.loss_if_congested > 0.05
                && p.loss_at_cut - self.inherent_loss <= MAX_TOLERATED_LOSS + 0.05;
            let stayed = loss >= 0.85 * p.loss_at_cut;
            let closer_to_no_change = loss > (p.loss_at_cut + p.loss_if_congested) / 2.0;
            debug!(
                loss_at_cut = p.loss_at_cut,
                loss_after = loss,
                predicted = p.loss_if_congested,
                undo = tellable && stayed && closer_to_no_change,
                "loss probe judged"
            );
            if tellable && stayed && closer_to_no_change {
                self.inherent_loss = self
                    .inherent_loss
                    .max(loss.min(p.loss_at_cut))
                    .min(MAX_TOLERATED_LOSS);
                self.congested_at = None;
                self.last_decrease = Some(now);
                return self.set(p.rate_before);
            }
        }
        if loss < self.inherent_loss {
            // The link got better: forget its loss gradually.
            self.inherent_loss = 0.9 * self.inherent_loss + 0.1 * loss;
        }
        let excess = (loss - self.inherent_loss).max(0.0);
        // While a cut is being judged, only severe loss cuts again (no cascade on noise), and
        // only once the reports describe traffic sent after the cut.
        let settled = self
            .probe
            .is_none_or(|p| now.saturating_duration_since(p.at) >= PROBE_SETTLE);
        let judging = self.probe.is_some();
        let next = if excess > 0.10 && settled && (!judging || excess > 0.25) {
            if !may_decrease {
                return RateDecision::default();
            }
            let sent = sent_bps
                .filter(|b| b.is_finite() && *b > 0.0)
                .unwrap_or(cur);
            let delivered = sent * (1.0 - excess);
            // Straight to what got through, with a margin for retransmissions and keyframes
            // (they come on top, in bursts, and a policer drops bursts); at most a halving per
            // step, in case one report was wrong.
            let next = (delivered * 0.9).min(cur * 0.95).max(cur * 0.5);
            debug!(
                loss,
                excess,
                sent,
                from = cur,
                to = next,
                judging,
                "cut for loss"
            );
            self.congested_at = Some(delivered);
            self.last_decrease = Some(now);
            // Every cut (re)starts the experiment; an undo restores the rate before the first.
            let rate_before = self.probe.map_or(cur, |p| p.rate_before);
            self.probe = Some(LossProbe {
                rate_before,
                loss_at_cut: loss,
                loss_sum: 0.0,
                reports: 0,
                loss_if_congested: (self.inherent_loss + 1.0 - delivered / next).max(0.0),
                at: now,
            });
            next
        } else if rtt.is_some_and(|r| r > 400.0) {
            if !may_decrease || !may_increase {
                return RateDecision::default();
            }
            self.last_decrease = Some(now);
            cur * 0.85
        } else if excess < 0.02 && rtt.is_none_or(|r| r < 250.0) && may_increase {
            self.last_increase = Some(now);
            let near_limit = self
                .congested_at
                .is_some_and(|c| cur >= 0.85 * c && cur <= 1.15 * c);
            if near_limit {
                cur * 1.03
            } else {
                cur * 1.08 + 10_000.0
            }
        } else {
            cur
        };
        self.set(next)
    }

    /// Applies a new target (clamped) and the resolution / frame-rate steps that follow it.
    fn set(&mut self, next: f64) -> RateDecision {
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

/// What a leg actually put on the wire over the last second, from its running byte count
/// (sampled whenever the encoder loop plans, ~30 times a second). Bounded in time and count.
#[derive(Debug, Default, Clone)]
pub struct SendMeter {
    samples: VecDeque<(Instant, u64)>,
}

impl SendMeter {
    /// The window the rate is measured over: the receivers' loss window.
    const WINDOW: Duration = Duration::from_secs(1);
    const MAX_SAMPLES: usize = 256;

    /// The leg's total bytes sent so far, at `now`.
    pub fn record(&mut self, now: Instant, total_bytes: u64) {
        self.samples.push_back((now, total_bytes));
        // Keep exactly one sample older than the window (the measurement's start).
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|&(t, _)| now.saturating_duration_since(t) >= Self::WINDOW)
        {
            self.samples.pop_front();
        }
        while self.samples.len() > Self::MAX_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// Bits per second over the last window, once at least half a window has been seen.
    pub fn bps(&self) -> Option<f64> {
        let (&(t0, b0), &(t1, b1)) = (self.samples.front()?, self.samples.back()?);
        let secs = t1.saturating_duration_since(t0).as_secs_f64();
        (secs >= Self::WINDOW.as_secs_f64() / 2.0)
            .then(|| b1.saturating_sub(b0) as f64 * 8.0 / secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds one report per second of virtual time.
    struct Clock(Instant);
    impl Clock {
        fn report(&mut self, r: &mut RateController, loss: f64, rtt: Option<f64>) -> RateDecision {
            self.0 += Duration::from_secs(1);
            r.on_report(self.0, loss, rtt, None)
        }
    }

    /// Loss on a link of `capacity` bit/s when sending `rate`: what does not fit.
    fn link_loss(rate: u32, capacity: f64) -> f64 {
        (1.0 - capacity / f64::from(rate)).max(0.0)
    }

    #[test]
    fn a_cut_uses_what_actually_went_out_not_the_target() {
        let t0 = Instant::now();
        let mut r = RateController::new(150_000, 1_500_000, 30.0);
        // Keyframes and retransmissions: 2 Mbit/s went out for a 1.5 Mbit/s target, 50 % was
        // lost, so the link carried about 1 Mbit/s.
        let d = r.on_report(t0, 0.5, Some(1.0), Some(2_000_000.0));
        assert_eq!(d.bitrate_bps, Some(900_000));
        // An encoder under its target (a still picture) cannot make a cut bigger than halving.
        let mut r = RateController::new(150_000, 1_500_000, 30.0);
        let d = r.on_report(t0, 0.5, Some(1.0), Some(200_000.0));
        assert_eq!(d.bitrate_bps, Some(750_000));
    }

    #[test]
    fn the_send_meter_measures_the_last_second() {
        let t0 = Instant::now();
        let mut m = SendMeter::default();
        m.record(t0, 0);
        assert_eq!(m.bps(), None, "one sample is no rate");
        // 100 kB/s for three seconds, sampled every 33 ms.
        for i in 1..=90u64 {
            m.record(t0 + Duration::from_millis(33 * i), i * 3_300);
        }
        let bps = m.bps().expect("a rate");
        assert!((bps - 800_000.0).abs() < 1.0, "{bps}");
        assert!(
            m.samples.len() <= 32,
            "old samples are dropped: {}",
            m.samples.len()
        );
        // The rate halves: within a second the meter shows it.
        for i in 91..=120u64 {
            m.record(
                t0 + Duration::from_millis(33 * i),
                90 * 3_300 + (i - 90) * 1_650,
            );
        }
        let bps = m.bps().expect("a rate");
        assert!((bps - 400_000.0).abs() < 20_000.0, "{bps}");
    }

    #[test]
    fn a_collapsing_link_steps_down_to_the_floor_and_recovers_with_hysteresis() {
        let mut c = Clock(Instant::now());
        let mut r = RateController::new(150_000, 2_000_000, 30.0);
        assert_eq!(
            c.report(&mut r, 0.0, Some(1.0)).bitrate_bps,
            None,
            "at max, clean: hold"
        );
        // The link shrinks to 100 kbit/s: loss follows the rate, so every cut stands (while a
        // cut is judged, the next waits until the reports show the smaller rate: 2 s).
        let mut steps = 0;
        while r.bitrate_bps() > 150_000 {
            let loss = link_loss(r.bitrate_bps(), 100_000.0);
            c.report(&mut r, loss, Some(1.0));
            steps += 1;
            assert!(steps < 30, "{} after {steps} reports", r.bitrate_bps());
        }
        assert!(r.scale_down(), "half-size frames well below the maximum");
        assert!(r.half_fps(), "at the floor the frame rate halves");
        assert_eq!(
            r.inherent_loss(),
            0.0,
            "congestion is not mistaken for link loss"
        );
        // The link is back: fps comes back first, then resolution.
        let mut n = 0;
        while r.half_fps() {
            c.report(&mut r, 0.0, Some(5.0));
            n += 1;
        }
        assert!(
            r.scale_down(),
            "resolution comes back later than frame rate"
        );
        while r.scale_down() {
            c.report(&mut r, 0.0, Some(5.0));
            n += 1;
        }
        assert!(n < 60, "recovers within a minute of clean reports ({n})");
    }

    #[test]
    fn repaired_random_loss_keeps_the_rate_and_clean_reports_probe_up() {
        // What a receiver reports under 10–20 % random loss once NACK has repaired it.
        let mut c = Clock(Instant::now());
        let mut r = RateController::new(150_000, 1_500_000, 30.0);
        for _ in 0..30 {
            assert_eq!(c.report(&mut r, 0.015, Some(1.0)).bitrate_bps, None);
        }
        assert_eq!(r.bitrate_bps(), 1_500_000);
        c.report(&mut r, 0.2, Some(1.0));
        assert!(r.bitrate_bps() < 1_500_000);
        assert!(
            c.report(&mut r, 0.0, Some(1.0)).bitrate_bps.is_some(),
            "calm: probe up"
        );
    }

    #[test]
    fn a_saturated_link_is_found_in_one_step_and_approached_slowly_afterwards() {
        let t0 = Instant::now();
        let mut r = RateController::new(150_000, 1_500_000, 30.0);
        // 1.5 Mbit/s into an 800 kbit/s link: ~47 % of it is lost.
        let d = r.on_report(t0, 0.47, Some(1.0), None);
        assert_eq!(d.bitrate_bps, Some(750_000));
        // The next reports describe the same episode: no second cut so soon.
        assert_eq!(
            r.on_report(t0 + Duration::from_millis(250), 0.47, Some(1.0), None),
            RateDecision::default()
        );
        // Clean again: near the limit it creeps (3 %/s) instead of jumping 8 %.
        let d = r.on_report(t0 + Duration::from_secs(1), 0.0, Some(1.0), None);
        assert_eq!(d.bitrate_bps, Some(772_500));
        // Far above the old limit (the link got better), the fast probe returns.
        let mut t = t0 + Duration::from_secs(1);
        while r.bitrate_bps() < 950_000 {
            t += Duration::from_secs(1);
            r.on_report(t, 0.0, Some(1.0), None);
            assert!(t < t0 + Duration::from_secs(30));
        }
        let before = f64::from(r.bitrate_bps());
        t += Duration::from_secs(1);
        r.on_report(t, 0.0, Some(1.0), None);
        assert!(f64::from(r.bitrate_bps()) >= before * 1.07);
    }

    #[test]
    fn moderate_loss_holds_and_high_rtt_backs_off() {
        let mut c = Clock(Instant::now());
        let mut r = RateController::new(100_000, 1_000_000, 30.0);
        assert_eq!(c.report(&mut r, 0.05, Some(10.0)).bitrate_bps, None);
        assert_eq!(
            c.report(&mut r, 0.0, Some(800.0)).bitrate_bps,
            Some(850_000)
        );
        assert_eq!(
            c.report(&mut r, 0.0, Some(300.0)).bitrate_bps,
            None,
            "between: hold"
        );
        assert_eq!(
            c.report(&mut r, f64::NAN, Some(f64::INFINITY)).bitrate_bps,
            Some(928_000)
        );
    }

    #[test]
    fn loss_that_does_not_follow_the_rate_is_tolerated_and_the_cut_undone() {
        // A browser's reports under 10 % random loss: ~12 % whatever we send.
        let t0 = Instant::now();
        let mut r = RateController::new(150_000, 1_500_000, 30.0);
        let d = r.on_report(t0, 0.12, Some(1.0), None);
        assert!(d.bitrate_bps.is_some_and(|b| b < 1_300_000), "{d:?}");
        // Noisy reports around 10 %, one of them low: no further cut while judging.
        let mut t = t0;
        for loss in [
            0.11, 0.06, 0.14, 0.09, 0.12, 0.10, 0.13, 0.11, 0.12, 0.10, 0.09,
        ] {
            t += Duration::from_millis(250);
            assert_eq!(
                r.on_report(t, loss, Some(1.0), None).bitrate_bps,
                None,
                "{loss}"
            );
        }
        let d = r.on_report(t0 + Duration::from_millis(3100), 0.12, Some(1.0), None);
        assert_eq!(d.bitrate_bps, Some(1_500_000), "the cut is undone");
        assert!(
            (r.inherent_loss() - 0.11).abs() < 0.02,
            "{}",
            r.inherent_loss()
        );
        // From then on the same loss neither cuts nor, once a little lower, stops probing.
        let mut t = t0 + Duration::from_millis(3100);
        for _ in 0..20 {
            t += Duration::from_secs(1);
            r.on_report(t, 0.11, Some(1.0), None);
        }
        assert_eq!(r.bitrate_bps(), 1_500_000);
        // Congestion on top of it still cuts.
        t += Duration::from_secs(1);
        let d = r.on_report(t, 0.45, Some(1.0), None);
        assert!(d.bitrate_bps.is_some_and(|b| b < 1_100_000), "{d:?}");
    }

    #[test]
    fn loss_that_falls_with_the_rate_keeps_the_cut() {
        let t0 = Instant::now();
        let mut r = RateController::new(150_000, 1_500_000, 30.0);
        r.on_report(t0, 0.47, Some(1.0), None);
        let cut = r.bitrate_bps();
        r.on_report(t0 + Duration::from_millis(1200), 0.03, Some(1.0), None);
        r.on_report(t0 + Duration::from_millis(3200), 0.02, Some(1.0), None);
        assert_eq!(r.bitrate_bps(), cut, "congestion: the cut stands");
        assert_eq!(r.inherent_loss(), 0.0);
    }
}
