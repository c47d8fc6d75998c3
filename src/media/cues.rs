//! Short sounds the app plays itself (someone joined, someone left), generated rather than
//! shipped as files: two soft sine notes with smooth edges, rising for a join and falling for
//! a leave, quiet enough (−20 dBFS peak) to sit under speech. Pure: samples out, no device.

use std::f32::consts::TAU;

use super::source::AUDIO_RATE;

/// Which cue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cue {
    Joined,
    Left,
}

/// Length of each of the two notes.
pub const NOTE_MS: u32 = 110;
/// Peak amplitude (−20 dBFS).
pub const PEAK: f32 = 0.1;

impl Cue {
    /// The two notes' pitches (Hz): a rising fifth for a join, falling for a leave.
    pub fn notes(self) -> [f32; 2] {
        match self {
            Cue::Joined => [660.0, 990.0],
            Cue::Left => [990.0, 660.0],
        }
    }

    /// 48 kHz mono samples of the whole cue (220 ms).
    pub fn samples(self) -> Vec<f32> {
        let n = (AUDIO_RATE * NOTE_MS / 1000) as usize;
        let fade = n / 8; // ~14 ms raised-cosine edges: no click at either end of a note
        let mut out = Vec::with_capacity(2 * n);
        for f in self.notes() {
            for i in 0..n {
                let edge = i.min(n - 1 - i);
                let env = if edge < fade {
                    0.5 - 0.5 * (std::f32::consts::PI * edge as f32 / fade as f32).cos()
                } else {
                    1.0
                };
                out.push(PEAK * env * (TAU * f * i as f32 / AUDIO_RATE as f32).sin());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::dominant_frequency;

    #[test]
    fn a_join_rises_a_leave_falls_each_note_at_its_pitch() {
        for cue in [Cue::Joined, Cue::Left] {
            let s = cue.samples();
            let n = s.len() / 2;
            assert_eq!(s.len(), 2 * 48 * NOTE_MS as usize);
            let [a, b] = cue.notes();
            let fa = dominant_frequency(&s[..n], 48_000);
            let fb = dominant_frequency(&s[n..], 48_000);
            assert!(
                (fa - f64::from(a)).abs() < 15.0 && (fb - f64::from(b)).abs() < 15.0,
                "{cue:?}: {fa} {fb}"
            );
        }
        assert!(Cue::Joined.notes()[1] > Cue::Joined.notes()[0]);
        assert!(Cue::Left.notes()[1] < Cue::Left.notes()[0]);
    }

    #[test]
    fn cues_are_quiet_and_start_and_end_without_a_click() {
        let s = Cue::Joined.samples();
        let peak = s.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(peak <= PEAK + 1e-6 && peak > PEAK * 0.9, "peak {peak}");
        assert!(s[0].abs() < 1e-3 && s[s.len() - 1].abs() < 1e-2);
        // No sample-to-sample jump larger than the sine's own slope at full amplitude.
        let max_step = TAU * 990.0 / 48_000.0 * PEAK * 1.05;
        assert!(s.windows(2).all(|w| (w[1] - w[0]).abs() <= max_step));
    }
}
