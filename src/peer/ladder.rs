//! The ICE-restart ladder: on `failed`, restart ICE after 0/1/2/4/8/16/30/30/30 s,
//! each attempt probed for 15 s; when the schedule is spent, report exhaustion exactly once and
//! stay `reconnecting`. Reaching `connected` resets everything. Pure: time is an argument.

use std::time::{Duration, Instant};

/// Delays before each attempt, in seconds.
pub const SCHEDULE_SECS: [u64; 9] = [0, 1, 2, 4, 8, 16, 30, 30, 30];
/// How long each attempt may take to reach `connected`.
pub const PROBE: Duration = Duration::from_secs(15);

/// What [`IceLadder::poll`] asks the connection to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LadderAction {
    /// Restart ICE now (attempt is 1-based).
    Restart {
        /// Which restart of this episode this is, from 1.
        attempt: u32,
    },
    /// The schedule is spent; emitted once per failure episode.
    Exhausted {
        /// Restarts made in the episode (the schedule's length).
        attempts: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Idle,
    Waiting {
        until: Instant,
    },
    Probing {
        deadline: Instant,
    },
    /// The schedule is spent; `reported` once the single Exhausted action went out.
    Exhausted {
        at: Instant,
        reported: bool,
    },
}

/// One connection's ladder: fed `failed`, `connected` and the time, it answers with restarts
/// and, at most once per episode, exhaustion.
#[derive(Debug, Clone)]
pub struct IceLadder {
    schedule: Vec<Duration>,
    probe: Duration,
    /// Attempts made in this episode.
    attempts: u32,
    phase: Phase,
}

impl Default for IceLadder {
    fn default() -> Self {
        IceLadder::new(
            SCHEDULE_SECS
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            PROBE,
        )
    }
}

impl IceLadder {
    /// An idle ladder. `schedule` holds the wait before each attempt (its length is the attempt
    /// budget); `probe` is how long each attempt gets to reach `connected`.
    pub fn new(schedule: Vec<Duration>, probe: Duration) -> Self {
        IceLadder {
            schedule,
            probe,
            attempts: 0,
            phase: Phase::Idle,
        }
    }

    /// The connection reported `failed`. Starts an episode if none is running; during a probe it
    /// cuts the probe short (the attempt evidently failed).
    pub fn on_failed(&mut self, now: Instant) {
        match self.phase {
            Phase::Idle => self.schedule_next(now),
            Phase::Probing { .. } => self.schedule_next(now),
            Phase::Waiting { .. } | Phase::Exhausted { .. } => {}
        }
    }

    /// `connected`: the episode is over and the budget resets.
    pub fn on_connected(&mut self) {
        self.attempts = 0;
        self.phase = Phase::Idle;
    }

    /// An episode is running: waiting for the next restart or probing one.
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Waiting { .. } | Phase::Probing { .. })
    }

    /// The schedule is spent; only [`Self::on_connected`] starts over.
    pub fn is_exhausted(&self) -> bool {
        matches!(self.phase, Phase::Exhausted { .. })
    }

    fn schedule_next(&mut self, now: Instant) {
        match self.schedule.get(self.attempts as usize) {
            Some(delay) => {
                self.phase = Phase::Waiting {
                    until: now + *delay,
                }
            }
            None => {
                self.phase = Phase::Exhausted {
                    at: now,
                    reported: false,
                }
            }
        }
    }

    /// When [`Self::poll`] next has something to do; `None` when idle or once exhaustion has
    /// been reported.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { until } => Some(until),
            Phase::Probing { deadline } => Some(deadline),
            Phase::Exhausted {
                at,
                reported: false,
            } => Some(at),
            _ => None,
        }
    }

    /// Advances time. At most one action per call; call again if a deadline is still due.
    pub fn poll(&mut self, now: Instant) -> Option<LadderAction> {
        match self.phase {
            Phase::Waiting { until } if now >= until => {
                self.attempts += 1;
                self.phase = Phase::Probing {
                    deadline: now + self.probe,
                };
                Some(LadderAction::Restart {
                    attempt: self.attempts,
                })
            }
            Phase::Probing { deadline } if now >= deadline => {
                self.schedule_next(now);
                self.poll(now)
            }
            // Reached by a probe timing out or by a failure during the last probe.
            Phase::Exhausted {
                at,
                reported: false,
            } => {
                self.phase = Phase::Exhausted { at, reported: true };
                Some(LadderAction::Exhausted {
                    attempts: self.attempts,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the ladder with no recovery and records when each action happened.
    fn run_to_exhaustion(mut l: IceLadder, t0: Instant) -> Vec<(u64, LadderAction)> {
        let mut out = Vec::new();
        l.on_failed(t0);
        while let Some(now) = l.next_deadline() {
            while let Some(a) = l.poll(now) {
                out.push(((now - t0).as_secs(), a));
            }
        }
        out
    }

    #[test]
    fn schedule_and_single_exhaustion() {
        let t0 = Instant::now();
        let actions = run_to_exhaustion(IceLadder::default(), t0);
        let restarts: Vec<u64> = actions
            .iter()
            .filter(|(_, a)| matches!(a, LadderAction::Restart { .. }))
            .map(|(t, _)| *t)
            .collect();
        // attempt n starts after the previous probe (15 s) plus its delay.
        assert_eq!(restarts, vec![0, 16, 33, 52, 75, 106, 151, 196, 241]);
        let exhausted: Vec<_> = actions
            .iter()
            .filter(|(_, a)| matches!(a, LadderAction::Exhausted { .. }))
            .collect();
        assert_eq!(
            exhausted,
            vec![&(256, LadderAction::Exhausted { attempts: 9 })]
        );
    }

    #[test]
    fn connected_resets_the_budget() {
        let t0 = Instant::now();
        let mut l = IceLadder::default();
        l.on_failed(t0);
        assert_eq!(l.poll(t0), Some(LadderAction::Restart { attempt: 1 }));
        l.on_failed(t0 + Duration::from_secs(3)); // attempt failed early
        assert_eq!(l.poll(t0 + Duration::from_secs(3)), None, "waits its 1 s");
        assert_eq!(
            l.poll(t0 + Duration::from_secs(4)),
            Some(LadderAction::Restart { attempt: 2 })
        );
        l.on_connected();
        assert!(!l.is_active());
        assert_eq!(l.next_deadline(), None);
        l.on_failed(t0 + Duration::from_secs(100));
        assert_eq!(
            l.poll(t0 + Duration::from_secs(100)),
            Some(LadderAction::Restart { attempt: 1 }),
            "budget starts over"
        );
    }

    #[test]
    fn failure_during_the_last_probe_still_reports_exhaustion_once() {
        let t0 = Instant::now();
        let mut l = IceLadder::new(
            vec![Duration::ZERO, Duration::ZERO],
            Duration::from_secs(10),
        );
        l.on_failed(t0);
        assert_eq!(l.poll(t0), Some(LadderAction::Restart { attempt: 1 }));
        l.on_failed(t0 + Duration::from_secs(1));
        assert_eq!(
            l.poll(t0 + Duration::from_secs(1)),
            Some(LadderAction::Restart { attempt: 2 })
        );
        l.on_failed(t0 + Duration::from_secs(2)); // the last attempt fails before its probe ends
        assert_eq!(l.next_deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(
            l.poll(t0 + Duration::from_secs(2)),
            Some(LadderAction::Exhausted { attempts: 2 })
        );
        assert_eq!(l.poll(t0 + Duration::from_secs(3)), None);
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn exhausted_ladder_ignores_further_failures_until_connected() {
        let t0 = Instant::now();
        let mut l = IceLadder::new(vec![Duration::ZERO], Duration::from_secs(1));
        l.on_failed(t0);
        assert_eq!(l.poll(t0), Some(LadderAction::Restart { attempt: 1 }));
        assert_eq!(
            l.poll(t0 + Duration::from_secs(1)),
            Some(LadderAction::Exhausted { attempts: 1 })
        );
        l.on_failed(t0 + Duration::from_secs(2));
        assert_eq!(l.poll(t0 + Duration::from_secs(60)), None);
        assert!(l.is_exhausted());
        l.on_connected();
        assert!(!l.is_exhausted());
    }
}
