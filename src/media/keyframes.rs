//! When the shared encoder emits a keyframe, sans-IO.
//!
//! One encoder feeds every peer of a call, and a keyframe is several times the size of a normal
//! frame. Receivers ask for one (PLI/FIR) whenever they lose a frame; answering each request at
//! once would let one lossy peer (or a hostile one sending a PLI per frame) turn the whole stream
//! into keyframes, which costs everyone bitrate and, on a lossy link, makes loss more likely.
//!
//! So requests are coalesced: at most one keyframe per [`MIN_KEYFRAME_INTERVAL`] answers
//! receivers' requests; a request inside the interval is remembered and served when it ends.
//! Events that need a keyframe now whatever came before — a new peer starting to receive, the
//! camera turned back on, a new source — are urgent and bypass the interval.

use std::time::{Duration, Instant};

/// The shortest spacing of keyframes sent in answer to receivers' requests.
pub const MIN_KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct KeyframePolicy {
    min_interval: Duration,
    last_keyframe: Option<Instant>,
    pending: bool,
    /// Requests that were merged into a keyframe already scheduled or sent.
    pub coalesced: u64,
}

impl Default for KeyframePolicy {
    fn default() -> Self {
        KeyframePolicy::new(MIN_KEYFRAME_INTERVAL)
    }
}

impl KeyframePolicy {
    pub fn new(min_interval: Duration) -> KeyframePolicy {
        KeyframePolicy {
            min_interval,
            last_keyframe: None,
            pending: false,
            coalesced: 0,
        }
    }

    /// A receiver asked for a keyframe.
    pub fn request(&mut self) {
        if self.pending {
            self.coalesced += 1;
        }
        self.pending = true;
    }

    /// Before encoding a frame at `now`: whether to force a keyframe. `urgent` bypasses the
    /// spacing (a new peer, a new source).
    pub fn force_keyframe(&mut self, now: Instant, urgent: bool) -> bool {
        let due = self
            .last_keyframe
            .is_none_or(|t| now.saturating_duration_since(t) >= self.min_interval);
        if urgent || (self.pending && due) {
            self.pending = false;
            self.last_keyframe = Some(now);
            true
        } else {
            false
        }
    }

    /// The encoder produced a keyframe on its own (a new size, its intra period): it answers
    /// any pending request too.
    pub fn keyframe_sent(&mut self, now: Instant) {
        self.pending = false;
        self.last_keyframe = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pli_per_frame_yields_one_keyframe_per_interval() {
        let t0 = Instant::now();
        let mut p = KeyframePolicy::default();
        let mut keyframes = Vec::new();
        // 3 s at 30 fps, a request before every frame.
        for i in 0..90u64 {
            let now = t0 + Duration::from_millis(i * 1000 / 30);
            p.request();
            if p.force_keyframe(now, false) {
                keyframes.push(now - t0);
            }
        }
        assert_eq!(keyframes.len(), 6, "{keyframes:?}");
        for w in keyframes.windows(2) {
            assert!(w[1] - w[0] >= MIN_KEYFRAME_INTERVAL, "{keyframes:?}");
        }
        assert!(p.coalesced > 0);
    }

    #[test]
    fn a_request_inside_the_interval_is_served_when_it_ends() {
        let t0 = Instant::now();
        let mut p = KeyframePolicy::default();
        p.request();
        assert!(p.force_keyframe(t0, false));
        p.request();
        assert!(!p.force_keyframe(t0 + Duration::from_millis(100), false));
        assert!(!p.force_keyframe(t0 + Duration::from_millis(499), false));
        assert!(p.force_keyframe(t0 + Duration::from_millis(500), false));
        assert!(!p.force_keyframe(t0 + Duration::from_millis(600), false));
    }

    #[test]
    fn urgent_keyframes_bypass_the_spacing_and_own_keyframes_count() {
        let t0 = Instant::now();
        let mut p = KeyframePolicy::default();
        assert!(p.force_keyframe(t0, true));
        assert!(p.force_keyframe(t0 + Duration::from_millis(10), true));
        p.request();
        p.keyframe_sent(t0 + Duration::from_millis(20));
        assert!(
            !p.force_keyframe(t0 + Duration::from_millis(30), false),
            "the encoder's own keyframe answered the request"
        );
        assert!(
            !p.force_keyframe(t0 + Duration::from_secs(5), false),
            "nothing pending"
        );
    }
}
