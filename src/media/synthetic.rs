//! Synthetic sources: first-class sources for machines without a camera or microphone, and
//! the ground truth of tests and benchmarks.
//!
//! Video: a moving test pattern (diagonal luma ramp, a bouncing box, slowly cycling colour) with
//! the [`super::stamp`] in the corner. Audio: a 440 Hz tone at 48 kHz with a 1 kHz beep for the
//! first 50 ms of every second, so onsets are known exactly.

use super::MediaError;
use super::frame::I420Frame;
use super::stamp::{self, Stamp};

pub struct SyntheticVideo {
    width: usize,
    height: usize,
    frame: u32,
}

impl SyntheticVideo {
    pub fn new(width: usize, height: usize) -> Result<SyntheticVideo, MediaError> {
        I420Frame::black(width, height)?;
        Ok(SyntheticVideo {
            width,
            height,
            frame: 0,
        })
    }

    /// The next frame, stamped with its number and `capture_us`.
    pub fn next_frame(&mut self, capture_us: u64) -> I420Frame {
        let (w, h) = (self.width, self.height);
        let n = self.frame as usize;
        let mut f = match I420Frame::black(w, h) {
            Ok(f) => f,
            Err(_) => unreachable_geometry(),
        };
        for row in 0..h {
            let line = &mut f.y[row * w..(row + 1) * w];
            for (col, p) in line.iter_mut().enumerate() {
                *p = (16 + ((col + row + n * 4) % 200)) as u8;
            }
        }
        // A bouncing 64×64 box.
        let span_x = w.saturating_sub(64).max(1);
        let span_y = h.saturating_sub(64).max(1);
        let bx = (n * 7) % (2 * span_x);
        let by = (n * 5) % (2 * span_y);
        let bx = if bx >= span_x { 2 * span_x - bx } else { bx }.min(w.saturating_sub(64));
        let by = if by >= span_y { 2 * span_y - by } else { by }.min(h.saturating_sub(64));
        for row in by..(by + 64).min(h) {
            let start = row * w + bx;
            let end = (start + 64).min((row + 1) * w);
            f.y[start..end].fill(235);
        }
        let (cw, ch) = (w / 2, h / 2);
        let hue = (n % 256) as u8;
        for row in 0..ch {
            for col in 0..cw {
                f.u[row * cw + col] = hue.wrapping_add((col / 8) as u8);
                f.v[row * cw + col] = 255u8.wrapping_sub(hue).wrapping_add((row / 8) as u8);
            }
        }
        stamp::draw(
            &mut f,
            Stamp {
                frame: self.frame,
                capture_us,
            },
        );
        f.capture_us = capture_us;
        self.frame = self.frame.wrapping_add(1);
        f
    }
}

/// `new` validated the geometry, so this cannot happen; keep a non-panicking fallback anyway.
fn unreachable_geometry() -> I420Frame {
    I420Frame {
        width: 2,
        height: 2,
        y: vec![16; 4],
        u: vec![128; 1],
        v: vec![128; 1],
        capture_us: 0,
    }
}

pub const SAMPLE_RATE: u32 = 48_000;
pub const TONE_HZ: f64 = 440.0;
pub const BEEP_HZ: f64 = 1000.0;

/// The synthetic microphone: mono f32 samples at 48 kHz.
#[derive(Default)]
pub struct SyntheticAudio {
    sample: u64,
}

impl SyntheticAudio {
    /// The next `n` samples.
    pub fn next_samples(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let t = self.sample as f64 / f64::from(SAMPLE_RATE);
                let in_beep = self.sample % u64::from(SAMPLE_RATE) < u64::from(SAMPLE_RATE) / 20;
                let hz = if in_beep { BEEP_HZ } else { TONE_HZ };
                self.sample += 1;
                (0.4 * (2.0 * std::f64::consts::PI * hz * t).sin()) as f32
            })
            .collect()
    }
}

/// The synthetic camera: the moving pattern paced at `fps` on the media clock.
pub struct SyntheticVideoSource {
    inner: SyntheticVideo,
    interval: std::time::Duration,
    next: Option<std::time::Instant>,
    name: String,
}

impl SyntheticVideoSource {
    pub fn new(width: usize, height: usize, fps: f32) -> Result<SyntheticVideoSource, MediaError> {
        Ok(SyntheticVideoSource {
            inner: SyntheticVideo::new(width, height)?,
            interval: std::time::Duration::from_secs_f32(1.0 / fps.clamp(1.0, 120.0)),
            next: None,
            name: format!("Test pattern ({width}×{height})"),
        })
    }
}

/// Sleeps until the next tick of a fixed cadence; after a stall it restarts the cadence rather
/// than bursting to catch up.
pub(crate) fn pace(next: &mut Option<std::time::Instant>, interval: std::time::Duration) {
    let now = std::time::Instant::now();
    match *next {
        Some(t) if t > now => {
            std::thread::sleep(t - now);
            *next = Some(t + interval);
        }
        Some(t) if now - t < interval => *next = Some(t + interval),
        _ => *next = Some(now + interval),
    }
}

impl super::source::VideoSource for SyntheticVideoSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn next_frame(&mut self) -> Result<I420Frame, MediaError> {
        pace(&mut self.next, self.interval);
        Ok(self.inner.next_frame(super::source::media_clock_us()))
    }
}

/// The synthetic microphone paced in real time (20 ms frames).
#[derive(Default)]
pub struct SyntheticAudioSource {
    inner: SyntheticAudio,
    next: Option<std::time::Instant>,
}

impl super::source::AudioSource for SyntheticAudioSource {
    fn name(&self) -> &str {
        "Test tone (440 Hz, beep every second)"
    }
    fn next_frame(&mut self) -> Result<Vec<f32>, MediaError> {
        pace(&mut self.next, std::time::Duration::from_millis(20));
        Ok(self.inner.next_samples(super::source::AUDIO_FRAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_move_and_carry_their_stamp() {
        let mut v = SyntheticVideo::new(640, 480).expect("source");
        let a = v.next_frame(1_000);
        let b = v.next_frame(34_333);
        assert_ne!(a.y, b.y, "the pattern moves");
        assert_eq!(
            stamp::read(&a),
            Some(Stamp {
                frame: 0,
                capture_us: 1_000
            })
        );
        assert_eq!(
            stamp::read(&b),
            Some(Stamp {
                frame: 1,
                capture_us: 34_333
            })
        );
        assert!(SyntheticVideo::new(641, 480).is_err());
    }

    #[test]
    fn paced_sources_keep_their_cadence() {
        use crate::media::source::{AudioSource, VideoSource};
        let mut v = SyntheticVideoSource::new(320, 240, 50.0).expect("source");
        let t0 = std::time::Instant::now();
        let stamps: Vec<u64> = (0..10)
            .map(|_| v.next_frame().expect("frame").capture_us)
            .collect();
        let took = t0.elapsed();
        assert!(took >= std::time::Duration::from_millis(170), "{took:?}");
        assert!(stamps.windows(2).all(|w| w[1] > w[0]));
        let mut a = SyntheticAudioSource::default();
        assert_eq!(a.next_frame().expect("audio").len(), 960);
    }

    #[test]
    fn audio_beeps_at_known_onsets() {
        let mut a = SyntheticAudio::default();
        let s = a.next_samples(48_000);
        assert_eq!(s.len(), 48_000);
        assert!(s.iter().all(|x| x.abs() <= 0.41));
        let beep = crate::media::audio::dominant_frequency(&s[..2400], 48_000);
        let tone = crate::media::audio::dominant_frequency(&s[4800..48_000], 48_000);
        assert!((beep - 1000.0).abs() < 25.0, "{beep}");
        assert!((tone - 440.0).abs() < 2.0, "{tone}");
    }
}
