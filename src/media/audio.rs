//! Opus 48 kHz mono, 20 ms frames, VoIP mode, plus a pitch estimate used by tests and the
//! audio loopback check.

use super::MediaError;

pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 960;

fn opus_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::Opus(e.to_string())
}

pub struct OpusEncoder {
    inner: opus::Encoder,
}

impl OpusEncoder {
    pub fn new(bitrate_bps: i32) -> Result<OpusEncoder, MediaError> {
        let mut inner =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .map_err(opus_err)?;
        inner
            .set_bitrate(opus::Bitrate::Bits(bitrate_bps))
            .map_err(opus_err)?;
        Ok(OpusEncoder { inner })
    }

    /// Encodes exactly one 20 ms frame ([`FRAME_SAMPLES`] samples).
    pub fn encode(&mut self, pcm: &[f32]) -> Result<Vec<u8>, MediaError> {
        if pcm.len() != FRAME_SAMPLES {
            return Err(MediaError::Opus(format!(
                "a frame is {FRAME_SAMPLES} samples, got {}",
                pcm.len()
            )));
        }
        let mut out = vec![0u8; 1500];
        let n = self.inner.encode_float(pcm, &mut out).map_err(opus_err)?;
        out.truncate(n);
        Ok(out)
    }
}

pub struct OpusDecoder {
    inner: opus::Decoder,
}

impl OpusDecoder {
    pub fn new() -> Result<OpusDecoder, MediaError> {
        Ok(OpusDecoder {
            inner: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).map_err(opus_err)?,
        })
    }

    /// Decodes one packet; an empty packet conceals a lost one (packet-loss concealment).
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<f32>, MediaError> {
        // For concealment the output size decides how much is synthesised: one frame.
        let len = if packet.is_empty() {
            FRAME_SAMPLES
        } else {
            FRAME_SAMPLES * 6
        };
        let mut out = vec![0f32; len];
        let n = self
            .inner
            .decode_float(packet, &mut out, false)
            .map_err(opus_err)?;
        out.truncate(n);
        Ok(out)
    }
}

/// The frequency of a (nearly) pure tone, from its rising zero crossings with sub-sample
/// interpolation. Returns 0 when there are fewer than two crossings.
pub fn dominant_frequency(samples: &[f32], sample_rate: u32) -> f64 {
    let mut first: Option<f64> = None;
    let mut last = 0.0;
    let mut count = 0u32;
    for i in 1..samples.len() {
        let (a, b) = (samples[i - 1], samples[i]);
        if a < 0.0 && b >= 0.0 {
            let t = (i - 1) as f64 + f64::from(-a / (b - a));
            if first.is_none() {
                first = Some(t);
            }
            last = t;
            count += 1;
        }
    }
    match first {
        Some(f) if count >= 2 && last > f => {
            f64::from(count - 1) * f64::from(sample_rate) / (last - f)
        }
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::synthetic::SyntheticAudio;

    #[test]
    fn tone_survives_opus_with_its_pitch() {
        let mut src = SyntheticAudio::default();
        let mut enc = OpusEncoder::new(32_000).expect("encoder");
        let mut dec = OpusDecoder::new().expect("decoder");
        let input = src.next_samples(48_000);
        let mut output = Vec::new();
        let mut bytes = 0;
        for chunk in input.chunks(FRAME_SAMPLES) {
            let packet = enc.encode(chunk).expect("encode");
            bytes += packet.len();
            output.extend(dec.decode(&packet).expect("decode"));
        }
        assert_eq!(output.len(), 48_000);
        assert!(
            bytes < 48_000 / 8,
            "about 32 kbit/s, got {bytes} bytes for 1 s"
        );
        // Skip the codec delay and the beep (first 50 ms of the second).
        let pitch = dominant_frequency(&output[4_800..47_000], SAMPLE_RATE);
        assert!((pitch - 440.0).abs() < 2.0, "decoded pitch {pitch:.1} Hz");
        assert!(
            enc.encode(&input[..100]).is_err(),
            "wrong frame size is an error"
        );
        assert_eq!(dec.decode(&[]).expect("concealment").len(), FRAME_SAMPLES);
    }

    #[test]
    fn pitch_estimate() {
        let s: Vec<f32> = (0..48_000)
            .map(|i| (2.0 * std::f64::consts::PI * 523.25 * i as f64 / 48_000.0).sin() as f32)
            .collect();
        assert!((dominant_frequency(&s, 48_000) - 523.25).abs() < 0.5);
        assert_eq!(dominant_frequency(&[0.5; 100], 48_000), 0.0);
    }
}
