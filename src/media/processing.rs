//! Capture-side audio processing: echo cancellation, noise suppression, automatic gain and a
//! high-pass filter, as browsers apply them to `getUserMedia` audio by default.
//!
//! The processor sees two streams of 48 kHz mono audio in 10 ms frames:
//! - the **render** (far-end) stream: exactly what the mixer hands the speaker, after mixing and
//!   per-participant volume, so the echo canceller models what is actually played;
//! - the **capture** stream: the microphone, processed in place before the Opus encoder.
//!
//! The echo canceller (WebRTC's AEC3, through the pure-Rust `sonora` port) estimates the delay
//! between the two itself, within a few hundred ms; [`AudioProcessor::set_delay_hint_ms`] gives
//! it the device latencies when they are known, and [`AudioProcessor::reset`] forgets the echo
//! path when the speaker or microphone changes. The pipeline's 20 ms frames are cut into the
//! 10 ms the processor needs by [`for_each_10ms`].
//!
//! Everything here is synchronous and allocation-free per frame, meant to run on the audio
//! threads (capture and playout), never on the UI thread or a tokio worker. See
//! `docs/audio-processing.md` for the measured numbers.

use sonora::config::{
    AdaptiveDigital, EchoCanceller, GainController2, HighPassFilter, NoiseSuppression,
    NoiseSuppressionLevel,
};
use sonora::{AudioProcessing, Config, StreamConfig};

/// The processing rate and frame: 48 kHz, 10 ms.
pub const RATE: u32 = 48_000;
pub const FRAME_10MS: usize = 480;
/// Far-end frames waiting for their capture frame (1 s). Beyond it the oldest are dropped: the
/// capture side has stopped or fallen a second behind, and the canceller re-aligns.
const MAX_PENDING_RENDER: usize = 100;

/// Which stages are on. Each defaults to on, like a browser's `getUserMedia`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ProcessingSettings {
    pub echo_cancellation: bool,
    pub noise_suppression: bool,
    pub auto_gain: bool,
}

impl Default for ProcessingSettings {
    fn default() -> Self {
        ProcessingSettings::ON
    }
}

impl ProcessingSettings {
    pub const ON: ProcessingSettings = ProcessingSettings {
        echo_cancellation: true,
        noise_suppression: true,
        auto_gain: true,
    };
    pub const OFF: ProcessingSettings = ProcessingSettings {
        echo_cancellation: false,
        noise_suppression: false,
        auto_gain: false,
    };

    pub fn any(&self) -> bool {
        self.echo_cancellation || self.noise_suppression || self.auto_gain
    }

    /// The stages that are on, for logs and stats (`"aec+ns+agc"`, `"off"`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.echo_cancellation {
            parts.push("aec");
        }
        if self.noise_suppression {
            parts.push("ns");
        }
        if self.auto_gain {
            parts.push("agc");
        }
        if parts.is_empty() {
            "off".into()
        } else {
            parts.join("+")
        }
    }
}

/// What the processor reports about itself.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProcessingStats {
    /// Echo return loss enhancement the canceller reports, dB.
    pub erle_db: Option<f64>,
    /// The canceller's current estimate of the render → capture delay, ms.
    pub delay_ms: Option<i32>,
}

/// A capture-path audio processor. Frames are 10 ms of 48 kHz mono, samples in −1..1.
pub trait AudioProcessor: Send {
    /// One frame of what is being played (the far end).
    fn process_render(&mut self, frame: &[f32]);
    /// One frame of the microphone, processed in place.
    fn process_capture(&mut self, frame: &mut [f32]);
    /// The device latencies (playout + capture buffering), when known; the canceller searches
    /// around it.
    fn set_delay_hint_ms(&mut self, ms: u32);
    /// Turns stages on or off without losing the rest of the state.
    fn set_settings(&mut self, settings: ProcessingSettings);
    fn settings(&self) -> ProcessingSettings;
    /// The speaker or microphone changed: the learned echo path is wrong now.
    fn reset(&mut self);
    fn stats(&self) -> ProcessingStats;
}

/// The processor that does nothing (processing off, or a source that must stay bit-exact).
#[derive(Debug, Default)]
pub struct Bypass;

impl AudioProcessor for Bypass {
    fn process_render(&mut self, _: &[f32]) {}
    fn process_capture(&mut self, _: &mut [f32]) {}
    fn set_delay_hint_ms(&mut self, _: u32) {}
    fn set_settings(&mut self, _: ProcessingSettings) {}
    fn settings(&self) -> ProcessingSettings {
        ProcessingSettings::OFF
    }
    fn reset(&mut self) {}
    fn stats(&self) -> ProcessingStats {
        ProcessingStats::default()
    }
}

/// WebRTC's audio processing module (AEC3, NS, AGC2, high-pass) via `sonora`.
///
/// Far-end frames are not handed to the canceller when they are played but queued, and each
/// capture frame takes exactly one of them with it. The speaker and the microphone deliver on
/// their own threads, and a sound server may hand the microphone's audio over in bursts (a
/// quarter of a second at a time was seen with PulseAudio); fed as they came, the canceller
/// saw render and capture calls bunch up, took it for a change of the echo path, flushed its
/// buffers and never converged. Paired one to one, the two streams keep a constant offset
/// (the real echo delay plus the queue), which is what the canceller's delay estimator needs.
pub struct WebRtcProcessor {
    apm: AudioProcessing,
    settings: ProcessingSettings,
    delay_hint_ms: u32,
    out: Vec<f32>,
    pending_render: std::collections::VecDeque<Vec<f32>>,
}

impl std::fmt::Debug for WebRtcProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcProcessor")
            .field("settings", &self.settings)
            .field("delay_hint_ms", &self.delay_hint_ms)
            .finish()
    }
}

fn config_for(s: ProcessingSettings) -> Config {
    Config {
        high_pass_filter: s.any().then(HighPassFilter::default),
        echo_canceller: s.echo_cancellation.then(EchoCanceller::default),
        noise_suppression: s.noise_suppression.then(|| NoiseSuppression {
            level: NoiseSuppressionLevel::Moderate,
            ..NoiseSuppression::default()
        }),
        gain_controller2: s.auto_gain.then(|| GainController2 {
            adaptive_digital: Some(AdaptiveDigital::default()),
            ..GainController2::default()
        }),
        ..Config::default()
    }
}

impl WebRtcProcessor {
    pub fn new(settings: ProcessingSettings) -> WebRtcProcessor {
        let stream = StreamConfig::new(RATE, 1);
        let apm = AudioProcessing::builder()
            .config(config_for(settings))
            .capture_config(stream)
            .render_config(stream)
            .build();
        WebRtcProcessor {
            apm,
            settings,
            delay_hint_ms: 0,
            out: vec![0.0; FRAME_10MS],
            pending_render: std::collections::VecDeque::new(),
        }
    }
}

impl AudioProcessor for WebRtcProcessor {
    fn process_render(&mut self, frame: &[f32]) {
        if !self.settings.echo_cancellation || frame.len() != FRAME_10MS {
            return;
        }
        if self.pending_render.len() >= MAX_PENDING_RENDER {
            self.pending_render.pop_front();
        }
        self.pending_render.push_back(frame.to_vec());
    }

    fn process_capture(&mut self, frame: &mut [f32]) {
        if !self.settings.any() || frame.len() != FRAME_10MS {
            return;
        }
        if self.settings.echo_cancellation {
            if let Some(far) = self.pending_render.pop_front() {
                // The render output is not used (what is played is the mixer's); sonora still
                // wants a destination.
                let _ = self
                    .apm
                    .process_render_f32(&[&far], &mut [self.out.as_mut_slice()]);
            }
            let _ = self
                .apm
                .set_stream_delay_ms(self.delay_hint_ms.min(500) as i32);
        }
        if self
            .apm
            .process_capture_f32(&[&*frame], &mut [self.out.as_mut_slice()])
            .is_ok()
        {
            frame.copy_from_slice(&self.out);
        }
    }

    fn set_delay_hint_ms(&mut self, ms: u32) {
        self.delay_hint_ms = ms;
    }

    fn set_settings(&mut self, settings: ProcessingSettings) {
        if settings != self.settings {
            // Far-end frames queued before the canceller was switched would misalign it.
            self.pending_render.clear();
            self.settings = settings;
            self.apm.apply_config(config_for(settings));
        }
    }

    fn settings(&self) -> ProcessingSettings {
        self.settings
    }

    fn reset(&mut self) {
        *self = WebRtcProcessor {
            delay_hint_ms: self.delay_hint_ms,
            ..WebRtcProcessor::new(self.settings)
        };
    }

    fn stats(&self) -> ProcessingStats {
        let s = self.apm.statistics();
        ProcessingStats {
            erle_db: s.echo_return_loss_enhancement,
            delay_ms: s.delay_ms.or(s.delay_median_ms),
        }
    }
}

/// One processor shared by the playout thread (render) and the capture thread (capture):
/// each call holds the lock for one 10 ms frame (~15–70 µs).
pub type SharedProcessor = std::sync::Arc<std::sync::Mutex<Box<dyn AudioProcessor>>>;

/// Wraps a processor for sharing between the two audio threads.
pub fn shared(p: impl AudioProcessor + 'static) -> SharedProcessor {
    std::sync::Arc::new(std::sync::Mutex::new(Box::new(p)))
}

/// Runs `f` on every 10 ms piece of a frame whose length is a multiple of 10 ms.
pub fn for_each_10ms(frame: &mut [f32], mut f: impl FnMut(&mut [f32])) {
    for chunk in frame.chunks_exact_mut(FRAME_10MS) {
        f(chunk);
    }
}

/// Accumulates 20 ms RMS levels between reads: the level over "the last interval" that stats
/// lines report (not just the last 20 ms).
#[derive(Debug, Default)]
pub struct LevelMeter(std::sync::Mutex<(f64, u64)>);

impl LevelMeter {
    pub fn add(&self, rms: f32) {
        if let Ok(mut m) = self.0.lock() {
            m.0 += f64::from(rms) * f64::from(rms);
            m.1 += 1;
        }
    }

    /// The mean level since the last call, in dBFS (−120 when nothing was added), and resets.
    pub fn take_dbfs(&self) -> f64 {
        let Ok(mut m) = self.0.lock() else {
            return -120.0;
        };
        let (sum, n) = std::mem::take(&mut *m);
        if n == 0 || sum <= 1e-12 * n as f64 {
            -120.0
        } else {
            10.0 * (sum / n as f64).log10()
        }
    }
}

/// RMS level of `samples` in dBFS (−∞ for silence is reported as −120).
pub fn level_dbfs(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return -120.0;
    }
    let power: f64 = samples
        .iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>()
        / samples.len() as f64;
    if power <= 1e-12 {
        -120.0
    } else {
        10.0 * power.log10()
    }
}

#[cfg(test)]
#[path = "processing_tests.rs"]
mod tests;
