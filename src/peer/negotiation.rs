//! Perfect-negotiation decisions, as pure functions and timers with time passed in.
//! The connection actor asks these what to do; it never decides inline.

use std::time::{Duration, Instant};

/// The polite side is the one whose peer id sorts first, comparing bytes. Peer ids are
/// printable ASCII, so this agrees with JS (UTF-16) and Python (code points).
pub fn is_polite(local_id: &str, remote_id: &str) -> bool {
    local_id.as_bytes() < remote_id.as_bytes()
}

/// What to do with an inbound offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferDecision {
    /// Impolite side in a collision: drop the offer (and candidates until the next answer).
    Ignore,
    /// Apply it; `rollback_first` when our own offer must be withdrawn (polite side in a
    /// collision — webrtc 0.21 has no implicit rollback).
    Apply {
        /// Withdraw our own outstanding offer before applying this one.
        rollback_first: bool,
    },
}

/// `collision = making_offer || have_local_offer` (the W3C pattern).
pub fn decide_offer(polite: bool, making_offer: bool, have_local_offer: bool) -> OfferDecision {
    let collision = making_offer || have_local_offer;
    match (collision, polite) {
        (true, false) => OfferDecision::Ignore,
        (true, true) => OfferDecision::Apply {
            rollback_first: have_local_offer,
        },
        (false, _) => OfferDecision::Apply {
            rollback_first: false,
        },
    }
}

/// An answer is only meaningful while our offer is outstanding; otherwise it is stale (for an
/// offer the other side ignored, or a torn-down generation) and dropped silently.
pub fn accept_answer(have_local_offer: bool) -> bool {
    have_local_offer
}

/// Most active media sections a remote description may have: the remote tracks we accept
/// ([`super::remote_peer::MAX_REMOTE_TRACKS`]), as many of our own, and the data channels'
/// section. Every section makes webrtc-rs build a transceiver, so a crafted offer with hundreds
/// of them is refused before anything is built.
pub const MAX_MEDIA_SECTIONS: usize = 2 * super::remote_peer::MAX_REMOTE_TRACKS + 1;
/// Most sections counting rejected ones (port 0): a long call that shares a screen many times
/// accumulates stopped sections that browsers keep in the description, so these are allowed far
/// more room, but not without bound.
pub const MAX_ALL_MEDIA_SECTIONS: usize = 256;

/// Checks a remote description before it is applied; the error says why, in words.
pub fn check_remote_sdp(sdp: &str) -> Result<(), String> {
    let mut active = 0usize;
    let mut all = 0usize;
    for line in sdp.lines().filter(|l| l.starts_with("m=")) {
        all += 1;
        let port = line.split_whitespace().nth(1).unwrap_or("");
        if port != "0" {
            active += 1;
        }
    }
    if active > MAX_MEDIA_SECTIONS {
        return Err(format!(
            "{active} media sections (at most {MAX_MEDIA_SECTIONS} active ones are accepted)"
        ));
    }
    if all > MAX_ALL_MEDIA_SECTIONS {
        return Err(format!(
            "{all} media sections in all (at most {MAX_ALL_MEDIA_SECTIONS} are accepted)"
        ));
    }
    Ok(())
}

/// The two watchdogs the official SDKs lack: an offer left unanswered is withdrawn and re-made,
/// and ICE stuck in `new`/`checking` after signalling settles is restarted (this also rescues a
/// stalled Chromium peer).
#[derive(Debug, Clone)]
pub struct Watchdogs {
    /// How long an offer may wait for its answer before [`WatchdogAction::ReOffer`].
    pub offer_timeout: Duration,
    /// How long ICE may stay `new`/`checking` once signalling is stable before
    /// [`WatchdogAction::RestartIce`].
    pub stuck_ice_timeout: Duration,
    offer_sent_at: Option<Instant>,
    stable_with_ice_pending_since: Option<Instant>,
}

/// What a due watchdog asks the connection to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogAction {
    /// Our offer got no answer in time: roll it back and offer again.
    ReOffer,
    /// Signalling is stable but ICE never left `new`/`checking`: restart ICE.
    RestartIce,
}

impl Watchdogs {
    /// Both watchdogs disarmed, with these timeouts.
    pub fn new(offer_timeout: Duration, stuck_ice_timeout: Duration) -> Self {
        Watchdogs {
            offer_timeout,
            stuck_ice_timeout,
            offer_sent_at: None,
            stable_with_ice_pending_since: None,
        }
    }

    /// We sent an offer: arms the offer watchdog and disarms the ICE one until signalling is
    /// stable again.
    pub fn offer_sent(&mut self, now: Instant) {
        self.offer_sent_at = Some(now);
        self.stable_with_ice_pending_since = None;
    }

    /// Signalling returned to stable (answer applied, or we answered). `ice_settled` is true
    /// when ICE is already connected/completed (then there is nothing to watch).
    pub fn stable(&mut self, now: Instant, ice_settled: bool) {
        self.offer_sent_at = None;
        self.stable_with_ice_pending_since = (!ice_settled).then_some(now);
    }

    /// ICE reached connected/completed (or the connection is closing): stop watching it.
    pub fn ice_settled(&mut self) {
        self.stable_with_ice_pending_since = None;
    }

    /// The earliest armed deadline, for the actor's timer; `None` when nothing is watched.
    pub fn next_deadline(&self) -> Option<Instant> {
        let a = self.offer_sent_at.map(|t| t + self.offer_timeout);
        let b = self
            .stable_with_ice_pending_since
            .map(|t| t + self.stuck_ice_timeout);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Advances time: the due action, if any (at most one per call). A watchdog that fires is
    /// disarmed until re-armed by `offer_sent` or `stable`.
    pub fn poll(&mut self, now: Instant) -> Option<WatchdogAction> {
        if self
            .offer_sent_at
            .is_some_and(|t| now >= t + self.offer_timeout)
        {
            self.offer_sent_at = None;
            return Some(WatchdogAction::ReOffer);
        }
        if self
            .stable_with_ice_pending_since
            .is_some_and(|t| now >= t + self.stuck_ice_timeout)
        {
            self.stable_with_ice_pending_since = None;
            return Some(WatchdogAction::RestartIce);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_with_too_many_media_sections_are_refused() {
        let section = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:x\r\n";
        let sdp = |n: usize| format!("v=0\r\ns=-\r\n{}", section.repeat(n));
        assert_eq!(check_remote_sdp(&sdp(3)), Ok(()));
        assert_eq!(check_remote_sdp(&sdp(MAX_MEDIA_SECTIONS)), Ok(()));
        let e = check_remote_sdp(&sdp(200)).expect_err("refused");
        assert!(e.contains("200 media sections"), "{e}");
        // Rejected sections (port 0) are what a long call leaves behind: allowed, within reason.
        let rejected = "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:r\r\n";
        let long_call = format!("{}{}", section.repeat(4), rejected.repeat(60));
        assert_eq!(check_remote_sdp(&long_call), Ok(()));
        let absurd = rejected.repeat(MAX_ALL_MEDIA_SECTIONS + 1);
        assert!(check_remote_sdp(&absurd).is_err());
    }

    #[test]
    fn politeness_is_byte_order_and_antisymmetric() {
        assert!(is_polite("alice", "bob"));
        assert!(!is_polite("bob", "alice"));
        assert!(is_polite("A", "a"), "uppercase sorts first");
        assert!(is_polite("peer-10", "peer-9"));
        for (a, b) in [("x", "y"), ("u_1", "u_10"), ("Z", "a")] {
            assert_ne!(is_polite(a, b), is_polite(b, a));
        }
    }

    #[test]
    fn offer_decision_table() {
        use OfferDecision::*;
        let table = [
            // polite, making_offer, have_local_offer → decision
            (
                false,
                false,
                false,
                Apply {
                    rollback_first: false,
                },
            ),
            (
                true,
                false,
                false,
                Apply {
                    rollback_first: false,
                },
            ),
            (false, true, false, Ignore),
            (false, false, true, Ignore),
            (
                true,
                false,
                true,
                Apply {
                    rollback_first: true,
                },
            ),
            (
                true,
                true,
                false,
                Apply {
                    rollback_first: false,
                },
            ),
            (
                true,
                true,
                true,
                Apply {
                    rollback_first: true,
                },
            ),
        ];
        for (polite, making, have, want) in table {
            assert_eq!(
                decide_offer(polite, making, have),
                want,
                "{polite} {making} {have}"
            );
        }
        assert!(accept_answer(true));
        assert!(!accept_answer(false));
    }

    #[test]
    fn watchdogs_fire_once_each() {
        let t0 = Instant::now();
        let mut w = Watchdogs::new(Duration::from_secs(10), Duration::from_secs(8));
        assert_eq!(w.next_deadline(), None);
        w.offer_sent(t0);
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(w.poll(t0 + Duration::from_secs(9)), None);
        assert_eq!(
            w.poll(t0 + Duration::from_secs(10)),
            Some(WatchdogAction::ReOffer)
        );
        assert_eq!(w.poll(t0 + Duration::from_secs(11)), None, "only once");
        // Answer arrives, ICE still checking: the stuck-ICE watchdog arms.
        let t1 = t0 + Duration::from_secs(12);
        w.stable(t1, false);
        assert_eq!(w.poll(t1 + Duration::from_secs(7)), None);
        assert_eq!(
            w.poll(t1 + Duration::from_secs(8)),
            Some(WatchdogAction::RestartIce)
        );
        // ICE connected in time: nothing fires.
        w.stable(t1, false);
        w.ice_settled();
        assert_eq!(w.poll(t1 + Duration::from_secs(60)), None);
        // Already connected when stable: nothing to watch.
        w.stable(t1, true);
        assert_eq!(w.next_deadline(), None);
    }
}
