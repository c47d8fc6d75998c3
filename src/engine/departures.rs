//! Is a peer the server reports as `left` gone, or did only its signalling connection drop?
//!
//! The server (like Metered's) sends presence `left` whenever a WebSocket closes, and the SDKs
//! turn that into `PeerLeft`; when the peer's socket comes back it is a new `PeerJoined`. Its
//! media meanwhile often keeps flowing peer-to-peer. Shown literally, a remote peer's network
//! blip makes its tile vanish and reappear. meshcall peers therefore announce a deliberate
//! departure (`{"type":"meshcall-bye"}`, server-routed, sent before unsubscribing, so it
//! arrives before the presence `left`). A peer known to speak that vocabulary (it sent a
//! `meshcall-status`) that leaves *without* a bye is shown as reconnecting for a grace period;
//! if it rejoins in time the call simply goes on. Peers of other SDKs (which never say bye)
//! leave at once, as the SDK semantics say.
//!
//! Sans-IO: time is passed in; the engine owns the timers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a peer that vanished without a bye is kept as "reconnecting". Covers the SDK's
/// first reconnect attempts (≈ 1–4 s of back-off) and a server restart's `retryAfterMs`.
pub const REJOIN_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftDecision {
    /// Remove the peer now.
    Gone,
    /// Keep its tiles with a spinner until `until` unless it rejoins.
    Linger { until: Instant },
}

#[derive(Debug, Default)]
struct Facts {
    speaks_meshcall: bool,
    said_bye: bool,
    lingering_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Departures {
    grace: Duration,
    peers: HashMap<String, Facts>,
}

impl Departures {
    pub fn new(grace: Duration) -> Departures {
        Departures {
            grace,
            peers: HashMap::new(),
        }
    }

    /// The peer sent a `meshcall-status`: it will say bye when it leaves on purpose.
    pub fn saw_status(&mut self, peer: &str) {
        self.peers
            .entry(peer.to_string())
            .or_default()
            .speaks_meshcall = true;
    }

    /// The peer announced it is leaving. True if it was already lingering (the bye was
    /// handled after its `left`): it is gone now, and forgotten here.
    pub fn saw_bye(&mut self, peer: &str) -> bool {
        if self.is_lingering(peer) {
            self.peers.remove(peer);
            return true;
        }
        self.peers.entry(peer.to_string()).or_default().said_bye = true;
        false
    }

    /// A bye from a sender the SDK no longer lists: its presence `left` overtook the bye
    /// between the SDK and us. It counts only for a peer already known here (strangers cannot
    /// grow the table). True if the peer was lingering: it is gone now.
    pub fn saw_late_bye(&mut self, peer: &str) -> bool {
        match self.peers.get_mut(peer) {
            Some(f) if f.lingering_until.is_some() => {
                self.peers.remove(peer);
                true
            }
            Some(f) => {
                f.said_bye = true;
                false
            }
            None => false,
        }
    }

    /// The SDK reported the peer left at `now`.
    pub fn left(&mut self, peer: &str, now: Instant) -> LeftDecision {
        let linger = self
            .peers
            .get(peer)
            .is_some_and(|f| f.speaks_meshcall && !f.said_bye);
        if !linger || self.grace.is_zero() {
            self.peers.remove(peer);
            return LeftDecision::Gone;
        }
        let until = now + self.grace;
        if let Some(f) = self.peers.get_mut(peer) {
            f.lingering_until = Some(until);
        }
        LeftDecision::Linger { until }
    }

    /// The peer (re)joined. True if it was lingering: the call goes on with it.
    pub fn joined(&mut self, peer: &str) -> bool {
        match self.peers.get_mut(peer) {
            Some(f) => {
                f.said_bye = false;
                f.lingering_until.take().is_some()
            }
            None => false,
        }
    }

    pub fn is_lingering(&self, peer: &str) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|f| f.lingering_until.is_some())
    }

    /// Peers whose grace ran out by `now`: gone for good (forgotten here).
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, f)| f.lingering_until.is_some_and(|u| u <= now))
            .map(|(p, _)| p.clone())
            .collect();
        for p in &gone {
            self.peers.remove(p);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bye_that_lost_the_race_with_the_sdk_still_counts_and_strangers_add_nothing() {
        let t0 = Instant::now();
        let mut d = Departures::new(REJOIN_GRACE);
        d.saw_status("app");
        // The SDK dropped the member before the engine read its bye.
        assert!(!d.saw_late_bye("app"));
        assert_eq!(
            d.left("app", t0),
            LeftDecision::Gone,
            "a bye, so gone at once"
        );
        // A bye from someone never seen leaves no trace.
        assert!(!d.saw_late_bye("stranger"));
        assert!(d.peers.is_empty());
        // Left first (lingering), late bye second: gone now.
        d.saw_status("bob");
        assert!(matches!(d.left("bob", t0), LeftDecision::Linger { .. }));
        assert!(d.saw_late_bye("bob"));
        assert!(!d.is_lingering("bob"));
    }

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn a_peer_of_another_sdk_leaves_at_once() {
        let mut d = Departures::new(REJOIN_GRACE);
        assert_eq!(d.left("js-peer", t0()), LeftDecision::Gone);
        assert!(!d.is_lingering("js-peer"));
    }

    #[test]
    fn a_meshcall_peer_that_said_bye_leaves_at_once() {
        let mut d = Departures::new(REJOIN_GRACE);
        d.saw_status("bob");
        assert!(!d.saw_bye("bob"));
        assert_eq!(d.left("bob", t0()), LeftDecision::Gone);
        // Forgotten: a later return is a fresh peer, and leaving again without status is final.
        assert!(!d.joined("bob"));
        assert_eq!(d.left("bob", t0()), LeftDecision::Gone);
    }

    #[test]
    fn a_meshcall_peer_without_bye_lingers_and_a_rejoin_cancels_the_expiry() {
        let mut d = Departures::new(Duration::from_secs(15));
        let now = t0();
        d.saw_status("bob");
        assert_eq!(
            d.left("bob", now),
            LeftDecision::Linger {
                until: now + Duration::from_secs(15)
            }
        );
        assert!(d.is_lingering("bob"));
        assert!(d.expire(now + Duration::from_secs(14)).is_empty());
        assert!(d.joined("bob"));
        assert!(!d.is_lingering("bob"));
        assert!(d.expire(now + Duration::from_secs(60)).is_empty());
        // It still speaks meshcall: a second drop lingers again.
        assert!(matches!(
            d.left("bob", now + Duration::from_secs(20)),
            LeftDecision::Linger { .. }
        ));
    }

    #[test]
    fn an_unreturned_peer_expires_once_and_is_forgotten() {
        let mut d = Departures::new(Duration::from_secs(15));
        let now = t0();
        d.saw_status("bob");
        d.saw_status("carol");
        d.left("bob", now);
        assert_eq!(
            d.expire(now + Duration::from_secs(15)),
            vec!["bob".to_string()]
        );
        assert!(d.expire(now + Duration::from_secs(16)).is_empty());
        assert!(!d.is_lingering("bob"));
        assert!(!d.is_lingering("carol"));
        assert!(!d.joined("bob"), "forgotten");
    }

    #[test]
    fn a_bye_before_a_rejoin_does_not_stick() {
        let mut d = Departures::new(Duration::from_secs(15));
        d.saw_status("bob");
        assert!(!d.saw_bye("bob"));
        assert!(!d.joined("bob"));
        // bob came back (say the bye raced a reconnect): the next silent drop lingers.
        assert!(matches!(d.left("bob", t0()), LeftDecision::Linger { .. }));
    }

    #[test]
    fn a_bye_handled_after_the_left_ends_the_lingering_at_once() {
        let mut d = Departures::new(Duration::from_secs(15));
        let now = t0();
        d.saw_status("bob");
        assert!(matches!(d.left("bob", now), LeftDecision::Linger { .. }));
        assert!(d.saw_bye("bob"), "was lingering: gone now");
        assert!(!d.is_lingering("bob"));
        assert!(d.expire(now + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn zero_grace_disables_lingering() {
        let mut d = Departures::new(Duration::ZERO);
        d.saw_status("bob");
        assert_eq!(d.left("bob", t0()), LeftDecision::Gone);
    }
}
