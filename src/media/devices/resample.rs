//! Mono sample-rate conversion between a device's rate and the app's 48 kHz, for devices that
//! cannot run at 48 kHz themselves (PulseAudio always can; raw ALSA hardware often runs at
//! 44.1 kHz).
//!
//! rubato's synchronous FFT resampler is used because the ratio is fixed (two nominal rates);
//! it is both the fastest and the cleanest of rubato's resamplers for that case. Drift between
//! the device clock and the sender's clock is the jitter buffer's problem, not this one's. The
//! resampler runs on the consumer's thread (`next_frame` / `play`), never in the real-time audio
//! callback.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use crate::media::MediaError;

pub(crate) struct MonoResampler {
    inner: Fft<f32>,
    out: Vec<f32>,
    kind: &'static str,
}

/// Which side of the conversion has a fixed chunk size.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fixed {
    /// Every call consumes `chunk` samples (playout: 20 ms frames in).
    Input,
    /// Every call produces `chunk` samples (capture: 20 ms frames out).
    Output,
}

fn err(kind: &'static str, e: impl std::fmt::Display) -> MediaError {
    MediaError::Device {
        kind,
        detail: format!("resampler: {e}"),
    }
}

impl MonoResampler {
    pub(crate) fn new(
        kind: &'static str,
        from_hz: u32,
        to_hz: u32,
        chunk: usize,
        fixed: Fixed,
    ) -> Result<MonoResampler, MediaError> {
        let fixed = match fixed {
            Fixed::Input => FixedSync::Input,
            Fixed::Output => FixedSync::Output,
        };
        let inner = Fft::<f32>::new(from_hz as usize, to_hz as usize, chunk, 1, fixed)
            .map_err(|e| err(kind, e))?;
        let out = vec![0.0; inner.output_frames_max()];
        Ok(MonoResampler { inner, out, kind })
    }

    /// Samples the next [`process`](Self::process) call needs.
    pub(crate) fn input_needed(&self) -> usize {
        self.inner.input_frames_next()
    }

    /// Converts exactly [`input_needed`](Self::input_needed) samples.
    pub(crate) fn process(&mut self, input: &[f32]) -> Result<&[f32], MediaError> {
        let kind = self.kind;
        let frames_out = self.out.len();
        let inp = InterleavedSlice::new(input, 1, input.len()).map_err(|e| err(kind, e))?;
        let mut outp =
            InterleavedSlice::new_mut(&mut self.out, 1, frames_out).map_err(|e| err(kind, e))?;
        let (_, written) = self
            .inner
            .process_into_buffer(&inp, &mut outp, None)
            .map_err(|e| err(kind, e))?;
        Ok(&self.out[..written])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::dominant_frequency;

    fn sine(hz: f64, rate: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (0.5 * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin()) as f32
            })
            .collect()
    }

    #[test]
    fn capture_side_makes_exact_20ms_frames_and_keeps_the_pitch() {
        let input = sine(440.0, 44_100, 44_100 * 2);
        let mut rs = MonoResampler::new("microphone", 44_100, 48_000, 960, Fixed::Output)
            .expect("resampler");
        let mut pos = 0;
        let mut out = Vec::new();
        while pos + rs.input_needed() <= input.len() {
            let n = rs.input_needed();
            let frame = rs.process(&input[pos..pos + n]).expect("process");
            assert_eq!(frame.len(), 960);
            out.extend_from_slice(frame);
            pos += n;
        }
        assert!(out.len() >= 48_000 * 2 - 2 * 960, "{}", out.len());
        let pitch = dominant_frequency(&out[4_800..], 48_000);
        assert!((pitch - 440.0).abs() < 0.5, "{pitch}");
    }

    #[test]
    fn playout_side_takes_20ms_frames_and_keeps_the_pitch() {
        let input = sine(1000.0, 48_000, 48_000);
        let mut rs =
            MonoResampler::new("speaker", 48_000, 44_100, 960, Fixed::Input).expect("resampler");
        assert_eq!(rs.input_needed(), 960);
        let mut out = Vec::new();
        for chunk in input.chunks_exact(960) {
            out.extend_from_slice(rs.process(chunk).expect("process"));
        }
        // 50 frames in, 44 100 samples out give or take the resampler's startup delay.
        assert!((43_000..=44_100).contains(&out.len()), "{}", out.len());
        let pitch = dominant_frequency(&out[4_410..], 44_100);
        assert!((pitch - 1000.0).abs() < 1.0, "{pitch}");
        assert!(
            rs.process(&input[..10]).is_err(),
            "a short chunk is an error"
        );
    }
}
