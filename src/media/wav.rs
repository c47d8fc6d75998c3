//! Just enough WAV for test signals and file-backed microphones: 16-bit PCM, first channel,
//! plus a linear-interpolation resampler to the pipeline's 48 kHz.

use super::MediaError;

fn bad(detail: &str) -> MediaError {
    MediaError::Device {
        kind: "wav",
        detail: detail.into(),
    }
}

/// Parses a 16-bit PCM WAV; returns (sample rate, the first channel's samples in −1..1). A data
/// chunk whose size is unset (streamed WAV, as espeak-ng writes to stdout) runs to the end.
pub fn parse_wav(b: &[u8]) -> Result<(u32, Vec<f32>), MediaError> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err(bad("not a RIFF/WAVE file"));
    }
    let u16_at = |i: usize| b.get(i..i + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |i: usize| {
        b.get(i..i + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let mut i = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None; // (tag, channels, rate, bits)
    while i + 8 <= b.len() {
        let id = &b[i..i + 4];
        let len = u32_at(i + 4).unwrap_or(0) as usize;
        if id == b"fmt " {
            format = Some((
                u16_at(i + 8).ok_or_else(|| bad("short fmt chunk"))?,
                u16_at(i + 10).ok_or_else(|| bad("short fmt chunk"))?,
                u32_at(i + 12).ok_or_else(|| bad("short fmt chunk"))?,
                u16_at(i + 22).ok_or_else(|| bad("short fmt chunk"))?,
            ));
        } else if id == b"data" {
            let (tag, channels, rate, bits) = format.ok_or_else(|| bad("data before fmt"))?;
            if tag != 1 || bits != 16 || channels == 0 || rate == 0 {
                return Err(bad("only 16-bit PCM WAV is supported"));
            }
            let data = &b[i + 8..];
            let data = if len > 0 && len <= data.len() {
                &data[..len]
            } else {
                data
            };
            let samples = data
                .chunks_exact(2 * usize::from(channels))
                .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0)
                .collect();
            return Ok((rate, samples));
        }
        i = i.saturating_add(8 + len + (len & 1));
    }
    Err(bad("no data chunk"))
}

/// Resamples by linear interpolation (fine for speech and test tones; not a studio resampler).
pub fn resample_linear(samples: &[f32], from_hz: u32, to_hz: u32) -> Vec<f32> {
    if from_hz == to_hz || samples.is_empty() || from_hz == 0 {
        return samples.to_vec();
    }
    let n = (samples.len() as u64 * u64::from(to_hz) / u64::from(from_hz)) as usize;
    (0..n)
        .map(|i| {
            let pos = i as f64 * f64::from(from_hz) / f64::from(to_hz);
            let k = pos as usize;
            let frac = (pos - k as f64) as f32;
            let a = samples.get(k).copied().unwrap_or(0.0);
            let b = samples.get(k + 1).copied().unwrap_or(a);
            a + (b - a) * frac
        })
        .collect()
}

/// A WAV file as a microphone: resampled to 48 kHz once, looped, delivered in real time
/// (`meshcall join --headless --audio file:PATH.wav`).
pub struct WavFileSource {
    name: String,
    samples: Vec<f32>,
    pos: usize,
    next: Option<std::time::Instant>,
}

impl WavFileSource {
    pub fn open(path: &std::path::Path) -> Result<WavFileSource, MediaError> {
        let bytes = std::fs::read(path).map_err(|e| bad(&format!("{}: {e}", path.display())))?;
        let (rate, samples) = parse_wav(&bytes)?;
        let samples = resample_linear(&samples, rate, 48_000);
        if samples.is_empty() {
            return Err(bad("the file holds no samples"));
        }
        Ok(WavFileSource {
            name: format!("file {}", path.display()),
            samples,
            pos: 0,
            next: None,
        })
    }
}

impl super::source::AudioSource for WavFileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_frame(&mut self) -> Result<Vec<f32>, MediaError> {
        super::synthetic::pace(&mut self.next, std::time::Duration::from_millis(20));
        let n = super::source::AUDIO_FRAME;
        let frame = (0..n)
            .map(|i| self.samples[(self.pos + i) % self.samples.len()])
            .collect();
        self.pos = (self.pos + n) % self.samples.len();
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(rate: u32, channels: u16, samples: &[i16], data_len: Option<u32>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF\0\0\0\0WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
        b.extend_from_slice(&(2 * channels).to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        let len = data_len.unwrap_or((samples.len() * 2) as u32);
        b.extend_from_slice(&len.to_le_bytes());
        for s in samples {
            b.extend_from_slice(&s.to_le_bytes());
        }
        b
    }

    #[test]
    fn reads_pcm_takes_the_first_channel_and_tolerates_an_unset_size() {
        let (rate, s) = parse_wav(&wav(22_050, 1, &[0, 16_384, -32_768], None)).expect("wav");
        assert_eq!((rate, s), (22_050, vec![0.0, 0.5, -1.0]));
        let (_, s) = parse_wav(&wav(48_000, 2, &[100, -5, 200, -6], None)).expect("stereo");
        assert_eq!(s.len(), 2);
        let (_, s) = parse_wav(&wav(8_000, 1, &[1, 2, 3], Some(u32::MAX))).expect("streamed");
        assert_eq!(s.len(), 3);
        assert!(parse_wav(b"RIFF....WAVE").is_err());
        assert!(parse_wav(&[0u8; 3]).is_err());
    }

    #[test]
    fn a_wav_file_loops_as_a_microphone() {
        use crate::media::source::AudioSource;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("x.wav");
        let samples: Vec<i16> = (0..24_000).map(|i| (i % 100) as i16 * 100).collect();
        std::fs::write(&path, wav(24_000, 1, &samples, None)).expect("write");
        let mut src = WavFileSource::open(&path).expect("open");
        let mut total = 0;
        for _ in 0..60 {
            let f = src.next_frame().expect("frame");
            assert_eq!(f.len(), crate::media::source::AUDIO_FRAME);
            total += f.len();
        }
        assert!(total > 48_000, "looped past the end of a 1 s file");
        assert!(WavFileSource::open(&dir.path().join("missing.wav")).is_err());
    }

    #[test]
    fn resampling_keeps_duration_and_shape() {
        let ramp: Vec<f32> = (0..441).map(|i| i as f32 / 441.0).collect();
        let up = resample_linear(&ramp, 44_100, 48_000);
        assert_eq!(up.len(), 480);
        assert!((up[240] - 0.5).abs() < 0.01);
    }
}
