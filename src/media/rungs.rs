//! Two qualities for a mesh, sans-IO: which peers get the full picture and which get a smaller
//! one.
//!
//! One encoder feeds every peer of a call. With a single encoding the weakest link sets the
//! quality for everybody: one participant on a poor connection would pull the whole call down
//! to a postage stamp. Browsers solve this with simulcast and an SFU picking layers; a mesh has
//! no SFU, so the sender picks: it runs a second, half-size encoding only while the peers'
//! rate estimates really diverge, and gives each peer the best one its estimate carries.
//!
//! - Every leg (peer connection) has its own rate estimate (`media::rate`).
//! - Legs whose estimate is at least [`SPLIT_RATIO`] of the best one share the *high* rung
//!   (full size); the lowest estimate among them sets its bitrate. The others share the *low*
//!   rung (half size), at the lowest estimate among them.
//! - A leg on the low rung climbs back to high only above [`REJOIN_RATIO`] of the best, so a
//!   leg near the boundary does not flap (each switch costs a keyframe).
//! - With estimates close together there is one rung and no second encode.

use std::collections::HashMap;

/// A leg whose estimate falls below this share of the best leg's moves to the low rung.
pub const SPLIT_RATIO: f64 = 0.6;
/// A leg on the low rung returns to the high rung above this share of the best leg's.
pub const REJOIN_RATIO: f64 = 0.75;

/// Which encoding a leg receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Rung {
    /// Full size.
    #[default]
    High,
    /// Half size, encoded only while some leg needs it.
    Low,
}

impl Rung {
    pub fn index(self) -> usize {
        match self {
            Rung::High => 0,
            Rung::Low => 1,
        }
    }
}

/// The result of [`plan`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RungPlan {
    /// The leg whose estimate sets each rung's bitrate (the weakest of its group); `None` when
    /// no leg is on that rung.
    pub high_governor: Option<u64>,
    pub low_governor: Option<u64>,
    /// Every leg's rung.
    pub assignment: HashMap<u64, Rung>,
}

/// Assigns rungs from each leg's estimate (bit/s) and its current rung (absent: new leg).
pub fn plan(legs: &[(u64, u32)], current: &HashMap<u64, Rung>) -> RungPlan {
    let best = legs.iter().map(|&(_, bps)| bps).max().unwrap_or(0);
    let mut out = RungPlan::default();
    let mut weakest = [None::<(u64, u32)>; 2];
    for &(leg, bps) in legs {
        let share = if best == 0 {
            1.0
        } else {
            f64::from(bps) / f64::from(best)
        };
        let was_low = current.get(&leg) == Some(&Rung::Low);
        let rung = if share < SPLIT_RATIO || (was_low && share < REJOIN_RATIO) {
            Rung::Low
        } else {
            Rung::High
        };
        out.assignment.insert(leg, rung);
        let w = &mut weakest[rung.index()];
        if w.is_none_or(|(_, b)| bps < b) {
            *w = Some((leg, bps));
        }
    }
    out.high_governor = weakest[0].map(|(l, _)| l);
    out.low_governor = weakest[1].map(|(l, _)| l);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_estimates_share_one_rung_set_by_the_weakest() {
        let p = plan(
            &[(1, 1_500_000), (2, 1_100_000), (3, 950_000)],
            &HashMap::new(),
        );
        assert!(p.assignment.values().all(|&r| r == Rung::High));
        assert_eq!(p.high_governor, Some(3));
        assert_eq!(p.low_governor, None);
    }

    #[test]
    fn one_weak_leg_gets_the_low_rung_and_no_longer_sets_the_high_one() {
        let p = plan(
            &[(1, 1_500_000), (2, 1_400_000), (3, 300_000)],
            &HashMap::new(),
        );
        assert_eq!(p.assignment[&3], Rung::Low);
        assert_eq!(p.assignment[&1], Rung::High);
        assert_eq!(p.assignment[&2], Rung::High);
        assert_eq!(p.high_governor, Some(2));
        assert_eq!(p.low_governor, Some(3));
    }

    #[test]
    fn a_leg_returns_to_high_only_with_margin() {
        let low: HashMap<u64, Rung> = [(1, Rung::High), (2, Rung::Low)].into();
        // 70 % of the best: above the split, below the rejoin threshold: stays low.
        let p = plan(&[(1, 1_000_000), (2, 700_000)], &low);
        assert_eq!(p.assignment[&2], Rung::Low);
        let p = plan(&[(1, 1_000_000), (2, 800_000)], &low);
        assert_eq!(p.assignment[&2], Rung::High);
        // A fresh leg at 70 % starts high.
        let p = plan(&[(1, 1_000_000), (2, 700_000)], &HashMap::new());
        assert_eq!(p.assignment[&2], Rung::High);
    }

    #[test]
    fn no_legs_no_rungs() {
        let p = plan(&[], &HashMap::new());
        assert_eq!(p, RungPlan::default());
        let p = plan(&[(7, 0)], &HashMap::new());
        assert_eq!(p.assignment[&7], Rung::High);
    }
}
