//! Join and leave sounds: a short cue through the call's mixer when somebody arrives or goes,
//! so a user looking at another window still notices. Generated (see `media::cues`), on by
//! default, switchable mid-call. People already in the room when you join are not announced
//! (the roster arrives in the first moments of the call), and neither is a participant who
//! drops and comes back within the rejoin grace (they never visibly left).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::media::cues::Cue;
use crate::media::mixer::Mixer;

/// Joins seen this soon after our own join are the room's existing members.
const ROSTER_SETTLE: Duration = Duration::from_secs(2);

pub(super) struct Sounds {
    mixer: Arc<Mixer>,
    on: AtomicBool,
    joined_at: Instant,
}

impl Sounds {
    pub(super) fn new(mixer: Arc<Mixer>, on: bool, joined_at: Instant) -> Arc<Sounds> {
        Arc::new(Sounds {
            mixer,
            on: AtomicBool::new(on),
            joined_at,
        })
    }

    pub(super) fn set_enabled(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Somebody new arrived (not one of the members we found on joining).
    pub(super) fn peer_joined(&self) {
        if self.joined_at.elapsed() >= ROSTER_SETTLE {
            self.play(Cue::Joined);
        }
    }

    pub(super) fn peer_left(&self) {
        self.play(Cue::Left);
    }

    fn play(&self, cue: Cue) {
        if self.on.load(Ordering::Relaxed) {
            self.mixer.play_cue(&cue.samples());
        }
    }
}
