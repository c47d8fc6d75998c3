//! Reconnect policy: which close codes end the client, and how long to wait before attempt *n*.
//!
//! Pure (no clock, no randomness of its own: the caller passes a uniform sample in `[-1, 1]`),
//! so the exact sequence is unit-testable. The rules are the official SDKs', plus two of ours:
//! `going_away.retryAfterMs` floors the next delay, and spending the budget always ends in a
//! terminal disconnect.

use std::time::Duration;

/// Close codes after which reconnecting cannot help: bad credential (4001), channel not
/// authorised (4003), account suspended (4012), kicked by an administrator (4020). 4002 (token
/// expired) is deliberately absent: a fresh token from the provider fixes it.
pub const TERMINAL_CLOSE_CODES: [u16; 4] = [4001, 4003, 4012, 4020];
/// Over the concurrent-connection cap: reconnecting at once would only be refused again.
pub const OVER_CAPACITY_CLOSE_CODE: u16 = 4010;
/// The minimum wait after a 4010 close.
pub const OVER_CAPACITY_FLOOR: Duration = Duration::from_secs(30);

/// Exponential backoff with jitter for automatic reconnects. Defaults match every official SDK:
/// 0.5 s, ×2, capped at 30 s, ±20 %, 100 attempts.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconnectPolicy {
    /// Base delay before the first attempt.
    pub initial: Duration,
    /// Growth factor per attempt (≥ 1).
    pub multiplier: f64,
    /// Cap on the base delay (≥ `initial`).
    pub max_delay: Duration,
    /// Relative jitter in `[0, 1]`: 0.2 means ±20 %. Spreads a fleet of clients that lost the
    /// same server so they do not all come back in the same millisecond.
    pub jitter: f64,
    /// Attempts after one drop before giving up (0 = never reconnect). The counter resets on
    /// every welcome.
    pub max_attempts: u32,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial: Duration::from_millis(500),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            jitter: 0.2,
            max_attempts: 100,
        }
    }
}

impl ReconnectPolicy {
    /// The Python SDK's checks; a policy that fails them would spin or never come back.
    pub fn validate(&self) -> Result<(), String> {
        if self.initial.is_zero() {
            return Err("reconnect.initial must be > 0".into());
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err("reconnect.multiplier must be a finite number >= 1".into());
        }
        if self.max_delay < self.initial {
            return Err("reconnect.max_delay must be >= reconnect.initial".into());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err("reconnect.jitter must be within [0, 1]".into());
        }
        Ok(())
    }
}

/// What a close code means for reconnecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAction {
    /// Give up: the same credential would be refused again.
    Terminal,
    /// Reconnect with the normal backoff.
    Reconnect,
    /// Reconnect, but not sooner than this.
    ReconnectAfterFloor(Duration),
}

/// Terminal {4001, 4003, 4012, 4020}, as in the official SDKs; 4010 → 30 s floor; everything else
/// (1001, 1006, 1008, 1009, 4000, 4002, 4011, HTTP statuses from a refused upgrade, …) reconnects.
pub fn classify_close(code: u16) -> CloseAction {
    if TERMINAL_CLOSE_CODES.contains(&code) {
        CloseAction::Terminal
    } else if code == OVER_CAPACITY_CLOSE_CODE {
        CloseAction::ReconnectAfterFloor(OVER_CAPACITY_FLOOR)
    } else {
        CloseAction::Reconnect
    }
}

/// The wait before reconnect attempt `attempt` (1-based), computed as the Python SDK does:
/// `base = min(initial × multiplier^(n−1), max_delay)`, `base = max(base, floor)`,
/// `delay = base + base × jitter × unit_random`, clamped at ≥ 0.
///
/// `floor` comes from a 4010 close or from `going_away.retryAfterMs`; it may exceed
/// `max_delay` (the server asked for it). `unit_random` outside `[-1, 1]` is clamped, a NaN
/// counts as 0, so a bad random source cannot produce a huge or negative delay.
pub fn reconnect_delay(
    policy: &ReconnectPolicy,
    attempt: u32,
    floor: Option<Duration>,
    unit_random: f64,
) -> Duration {
    let exponent = attempt.saturating_sub(1).min(i32::MAX as u32) as i32;
    let initial = policy.initial.as_secs_f64();
    let max = policy.max_delay.as_secs_f64();
    // powi overflows to +inf for large exponents; min() then caps it at max_delay.
    let mut base = (initial * policy.multiplier.powi(exponent)).min(max);
    if !base.is_finite() {
        base = max;
    }
    if let Some(f) = floor {
        base = base.max(f.as_secs_f64());
    }
    let u = if unit_random.is_nan() {
        0.0
    } else {
        unit_random.clamp(-1.0, 1.0)
    };
    let jitter = policy.jitter.clamp(0.0, 1.0);
    let delay = (base + base * jitter * u).max(0.0);
    Duration::try_from_secs_f64(delay).unwrap_or(Duration::MAX)
}

/// The reconnect bookkeeping between two welcomes: attempt counter and a one-shot floor.
/// Pure; the shell owns one per client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backoff {
    attempt: u32,
    floor: Option<Duration>,
}

impl Backoff {
    /// A welcome arrived: the next drop starts again at attempt 1. The floor is kept only if it
    /// was set after the welcome, so it is cleared here too.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.floor = None;
    }

    /// Raises the floor for the next delay (4010, `going_away`). Several hints: the largest wins.
    pub fn raise_floor(&mut self, floor: Duration) {
        self.floor = Some(self.floor.map_or(floor, |f| f.max(floor)));
    }

    /// Attempts made since the last welcome.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts the next attempt: `None` when the budget is spent, else the delay to wait first.
    /// Consumes the floor (it applies to one delay only).
    pub fn next_delay(&mut self, policy: &ReconnectPolicy, unit_random: f64) -> Option<Duration> {
        if self.attempt >= policy.max_attempts {
            return None;
        }
        self.attempt += 1;
        let floor = self.floor.take();
        Some(reconnect_delay(policy, self.attempt, floor, unit_random))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn close_code_policy() {
        let table: &[(u16, CloseAction)] = &[
            (4001, CloseAction::Terminal),
            (4003, CloseAction::Terminal),
            (4012, CloseAction::Terminal),
            (4020, CloseAction::Terminal),
            (
                4010,
                CloseAction::ReconnectAfterFloor(Duration::from_secs(30)),
            ),
            (4002, CloseAction::Reconnect),
            (4000, CloseAction::Reconnect),
            (4011, CloseAction::Reconnect),
            (1000, CloseAction::Reconnect),
            (1001, CloseAction::Reconnect),
            (1006, CloseAction::Reconnect),
            (1008, CloseAction::Reconnect),
            (1009, CloseAction::Reconnect),
            (429, CloseAction::Reconnect),
            (503, CloseAction::Reconnect),
        ];
        for (code, want) in table {
            assert_eq!(classify_close(*code), *want, "{code}");
        }
    }

    #[test]
    fn default_sequence_without_jitter() {
        let p = ReconnectPolicy::default();
        let want = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(
                reconnect_delay(&p, i as u32 + 1, None, 0.0),
                ms(*w),
                "attempt {}",
                i + 1
            );
        }
        // Huge attempt numbers stay at the cap (no overflow to inf/NaN).
        assert_eq!(reconnect_delay(&p, u32::MAX, None, 0.0), ms(30000));
        // attempt 0 is treated like attempt 1.
        assert_eq!(reconnect_delay(&p, 0, None, 0.0), ms(500));
    }

    #[test]
    fn jitter_bounds() {
        let p = ReconnectPolicy::default();
        let table: &[(u32, f64, u64)] = &[
            (1, 1.0, 600),
            (1, -1.0, 400),
            (1, 0.5, 550),
            (3, -1.0, 1600),
            (3, 1.0, 2400),
            (9, 1.0, 36000),
            (9, -1.0, 24000),
            // Out-of-range samples are clamped, NaN counts as 0.
            (1, 7.0, 600),
            (1, -7.0, 400),
            (1, f64::NAN, 500),
        ];
        for (attempt, u, want) in table {
            assert_eq!(
                reconnect_delay(&p, *attempt, None, *u),
                ms(*want),
                "{attempt} {u}"
            );
        }
        // Every sample in [-1, 1] lands in [0.8 base, 1.2 base].
        for step in 0..=200 {
            let u = -1.0 + step as f64 / 100.0;
            let d = reconnect_delay(&p, 4, None, u);
            assert!(d >= ms(3200) && d <= ms(4800), "{u}: {d:?}");
        }
    }

    #[test]
    fn floors_raise_the_base_before_jitter() {
        let p = ReconnectPolicy::default();
        let table: &[(u32, Option<u64>, f64, u64)] = &[
            (1, Some(30_000), 0.0, 30_000),
            (1, Some(30_000), -1.0, 24_000),
            (1, Some(3_000), 1.0, 3_600),
            // A floor below the computed base changes nothing.
            (5, Some(1_000), 0.0, 8_000),
            // A floor above max_delay wins (the server asked for it).
            (1, Some(60_000), 0.0, 60_000),
        ];
        for (attempt, floor, u, want) in table {
            assert_eq!(
                reconnect_delay(&p, *attempt, floor.map(ms), *u),
                ms(*want),
                "{attempt} {floor:?} {u}"
            );
        }
    }

    #[test]
    fn zero_jitter_and_unit_multiplier() {
        let p = ReconnectPolicy {
            initial: ms(100),
            multiplier: 1.0,
            max_delay: ms(100),
            jitter: 0.0,
            max_attempts: 3,
        };
        for n in 1..5 {
            assert_eq!(reconnect_delay(&p, n, None, 1.0), ms(100));
        }
    }

    #[test]
    fn policy_validation() {
        assert!(ReconnectPolicy::default().validate().is_ok());
        let bad = [
            ReconnectPolicy {
                initial: Duration::ZERO,
                ..Default::default()
            },
            ReconnectPolicy {
                multiplier: 0.5,
                ..Default::default()
            },
            ReconnectPolicy {
                multiplier: f64::NAN,
                ..Default::default()
            },
            ReconnectPolicy {
                max_delay: ms(100),
                ..Default::default()
            },
            ReconnectPolicy {
                jitter: 1.5,
                ..Default::default()
            },
            ReconnectPolicy {
                jitter: -0.1,
                ..Default::default()
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
        }
    }

    #[test]
    fn backoff_budget_floor_and_reset() {
        let p = ReconnectPolicy {
            max_attempts: 3,
            ..Default::default()
        };
        let mut b = Backoff::default();
        b.raise_floor(ms(2000));
        b.raise_floor(ms(1000));
        assert_eq!(b.next_delay(&p, 0.0), Some(ms(2000)), "floor used once");
        assert_eq!(b.next_delay(&p, 0.0), Some(ms(1000)), "then normal");
        assert_eq!(b.next_delay(&p, 0.0), Some(ms(2000)));
        assert_eq!(b.attempts(), 3);
        assert_eq!(b.next_delay(&p, 0.0), None, "budget spent");
        b.reset();
        assert_eq!(b.next_delay(&p, 0.0), Some(ms(500)));

        let never = ReconnectPolicy {
            max_attempts: 0,
            ..Default::default()
        };
        assert_eq!(Backoff::default().next_delay(&never, 0.0), None);
    }
}
