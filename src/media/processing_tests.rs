//! Deterministic tests of the capture processing with speech-like signals and a simulated echo
//! path. Numbers are asserted as the issue states them: ERLE, convergence, double-talk
//! preservation, noise-suppression gain, AGC output level.

use super::*;

/// A speech-like voice: a glottal pulse train whose pitch glides around `f0`, shaped by two
/// formant resonators that move per "syllable", amplitude-modulated at ~4 syllables a second
/// with short pauses. Deterministic (`seed`).
fn voice(seconds: f64, f0: f64, seed: u64, level_dbfs: f64) -> Vec<f32> {
    let n = (seconds * f64::from(RATE)) as usize;
    let fs = f64::from(RATE);
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut out = Vec::with_capacity(n);
    let mut phase = 0.0f64;
    // Two resonators (biquads) per formant, retuned per syllable.
    let mut state = [[0.0f64; 2]; 2];
    let mut formants = [700.0, 1200.0];
    let syllable = (fs * 0.25) as usize;
    for i in 0..n {
        if i % syllable == 0 {
            formants = [300.0 + 600.0 * next(), 900.0 + 1500.0 * next()];
        }
        let t = i as f64 / fs;
        let pitch = f0 * (1.0 + 0.1 * (2.0 * std::f64::consts::PI * 0.7 * t).sin());
        phase += pitch / fs;
        let pulse = if phase >= 1.0 {
            phase -= 1.0;
            1.0
        } else {
            0.0
        };
        let mut x = pulse + 0.02 * (next() - 0.5); // a little breath noise
        for (k, f) in formants.iter().enumerate() {
            let r = 0.97;
            let w = 2.0 * std::f64::consts::PI * f / fs;
            let y = x + 2.0 * r * w.cos() * state[k][0] - r * r * state[k][1];
            state[k][1] = state[k][0];
            state[k][0] = y;
            x = y * (1.0 - r);
        }
        // Syllable envelope with a pause every fourth syllable.
        let pos = (i % syllable) as f64 / syllable as f64;
        let env = if (i / syllable) % 4 == 3 {
            0.0
        } else {
            (std::f64::consts::PI * pos).sin().powi(2)
        };
        out.push(x * env);
    }
    scale_to(&mut out, level_dbfs);
    out.into_iter().map(|s| s as f32).collect()
}

/// Real (synthesised) speech: espeak-ng renders `text` with `voice` (22.05 kHz, 16-bit WAV),
/// resampled here to 48 kHz and scaled so its talking parts sit at `level_dbfs`. CI installs
/// espeak-ng (`scripts/setup-system`).
fn speech(text: &str, voice_name: &str, level_dbfs: f64) -> Vec<f32> {
    let out = std::process::Command::new("espeak-ng")
        .args(["-v", voice_name, "-s", "160", "--stdout", text])
        .output()
        .expect("espeak-ng must be installed (scripts/setup-system installs it)");
    assert!(out.status.success(), "espeak-ng failed");
    let (rate, samples) = crate::media::wav::parse_wav(&out.stdout).expect("espeak-ng WAV");
    let mut up: Vec<f64> = crate::media::wav::resample_linear(&samples, rate, RATE)
        .into_iter()
        .map(f64::from)
        .collect();
    scale_to(&mut up, level_dbfs);
    up.into_iter().map(|s| s as f32).collect()
}

/// Repeats `x` to `n` samples.
fn looped(x: &[f32], n: usize) -> Vec<f32> {
    x.iter().copied().cycle().take(n).collect()
}

const FAR_TEXT: &str = "The quarterly numbers look better than we expected, but shipping \
    is still two weeks behind. Can you check with the warehouse team tomorrow morning?";
const NEAR_TEXT: &str = "Sure, I will call them first thing and send you a summary before \
    lunch, together with the updated delivery plan.";

/// Stationary fan-like noise: low-passed white noise with a hum.
fn fan_noise(n: usize, seed: u64, level_dbfs: f64) -> Vec<f32> {
    let mut rng = seed | 1;
    let mut lp = 0.0f64;
    let mut out: Vec<f64> = (0..n)
        .map(|i| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let white = (rng >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            lp = 0.9 * lp + 0.1 * white;
            lp + 0.02 * (2.0 * std::f64::consts::PI * 120.0 * i as f64 / f64::from(RATE)).sin()
        })
        .collect();
    scale_to(&mut out, level_dbfs);
    out.into_iter().map(|s| s as f32).collect()
}

fn scale_to(x: &mut [f64], level_dbfs: f64) {
    let rms = (x.iter().map(|s| s * s).sum::<f64>() / x.len().max(1) as f64).sqrt();
    // Level of the active parts: pauses would otherwise pull the RMS down.
    let active = x.iter().filter(|s| s.abs() > rms * 0.05).count().max(1) as f64 / x.len() as f64;
    let target = 10f64.powf(level_dbfs / 20.0) / active.sqrt().max(0.3);
    if rms > 0.0 {
        for s in x.iter_mut() {
            *s *= target / rms;
        }
    }
}

/// The echo path: `delay_ms`, `gain_db`, and a short decaying room response.
fn echo_path(far: &[f32], delay_ms: usize, gain_db: f64) -> Vec<f32> {
    let d = delay_ms * RATE as usize / 1000;
    let g = 10f64.powf(gain_db / 20.0);
    let taps: Vec<(usize, f64)> = vec![(0, 1.0), (37, 0.5), (101, -0.3), (263, 0.2), (611, 0.1)];
    (0..far.len())
        .map(|i| {
            taps.iter()
                .filter(|(k, _)| i >= d + k)
                .map(|(k, a)| a * f64::from(far[i - d - k]))
                .sum::<f64>()
                * g
        })
        .map(|s| s as f32)
        .collect()
}

fn power(x: &[f32]) -> f64 {
    x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() / x.len().max(1) as f64
}

fn db(ratio: f64) -> f64 {
    10.0 * ratio.max(1e-20).log10()
}

/// Runs far (render) and mic (capture) through `p` frame by frame; returns the processed mic.
fn run(p: &mut dyn AudioProcessor, far: &[f32], mic: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(mic.len());
    for (f, m) in far
        .chunks_exact(FRAME_10MS)
        .zip(mic.chunks_exact(FRAME_10MS))
    {
        p.process_render(f);
        let mut frame = m.to_vec();
        p.process_capture(&mut frame);
        out.extend_from_slice(&frame);
    }
    out
}

fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    (dot / (power(a) * power(b)).sqrt() / n as f64).clamp(-1.0, 1.0)
}

const ECHO_ONLY: ProcessingSettings = ProcessingSettings {
    echo_cancellation: true,
    noise_suppression: false,
    auto_gain: false,
};

/// Talking frames (10 ms) of the clean signal: within 20 dB of its loudest frames.
fn talking_frames(clean: &[f32]) -> Vec<bool> {
    let levels: Vec<f64> = clean.chunks(FRAME_10MS).map(level_dbfs).collect();
    let peak = levels.iter().copied().fold(-120.0, f64::max);
    levels.iter().map(|&l| l > peak - 20.0).collect()
}

/// Power of `x` over the 10 ms frames where `mask` is set.
fn masked_power(x: &[f32], mask: &[bool]) -> f64 {
    let frames: Vec<&[f32]> = x
        .chunks(FRAME_10MS)
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(c, _)| c)
        .collect();
    frames.iter().map(|c| power(c)).sum::<f64>() / frames.len().max(1) as f64
}

#[test]
fn echo_is_cancelled_by_at_least_25_db_and_converges_within_2_s() {
    let sec = RATE as usize;
    let far = looped(&speech(FAR_TEXT, "en-us", -20.0), 10 * sec);
    for (delay_ms, gain_db) in [(60, -6.0), (150, -20.0), (100, -10.0)] {
        let mic = echo_path(&far, delay_ms, gain_db);
        let mut p = WebRtcProcessor::new(ECHO_ONLY);
        let out = run(&mut p, &far, &mic);
        // After convergence (the last 6 s), and the second after 2 s of talk.
        let erle = db(power(&mic[4 * sec..]) / power(&out[4 * sec..]));
        let early = db(power(&mic[2 * sec..3 * sec]) / power(&out[2 * sec..3 * sec]));
        println!(
            "echo path {delay_ms} ms {gain_db} dB: ERLE {erle:.1} dB after convergence, \
             {early:.1} dB in 2–3 s; estimated delay {:?} ms",
            p.stats().delay_ms
        );
        assert!(
            erle >= 25.0,
            "ERLE {erle:.1} dB (delay {delay_ms} ms, {gain_db} dB)"
        );
        assert!(early >= 20.0, "converged by 2 s: {early:.1} dB");
    }
}

#[test]
fn near_end_speech_survives_double_talk() {
    let sec = RATE as usize;
    let far = looped(&speech(FAR_TEXT, "en-us", -20.0), 12 * sec);
    let near = looped(&speech(NEAR_TEXT, "en-us+f3", -26.0), 12 * sec);
    let echo = echo_path(&far, 100, -10.0);
    // Far end alone for 3 s (convergence), then both talk.
    let near_only: Vec<f32> = (0..far.len())
        .map(|i| if i >= 3 * sec { near[i] } else { 0.0 })
        .collect();
    let mic: Vec<f32> = echo.iter().zip(&near_only).map(|(e, n)| e + n).collect();
    let mut p = WebRtcProcessor::new(ECHO_ONLY);
    let out = run(&mut p, &far, &mic);
    // The reference is the near end alone through an identical processor with nothing played:
    // the same high-pass filter and algorithmic delay, no echo to remove. What differs is what
    // the canceller did to the near end while both talked.
    let mut clean = WebRtcProcessor::new(ECHO_ONLY);
    let reference = run(&mut clean, &vec![0.0; far.len()], &near_only);
    let w = (5 * sec)..(12 * sec);
    let corr = correlation(&out[w.clone()], &reference[w.clone()]);
    let level = db(power(&out[w.clone()]) / power(&reference[w.clone()]));
    println!("double talk: correlation with the clean near end {corr:.3}, level {level:+.1} dB");
    assert!(corr >= 0.8, "near end preserved: correlation {corr:.3}");
    assert!(
        level.abs() <= 3.0,
        "near-end level within 3 dB: {level:+.1}"
    );
}

#[test]
fn noise_suppression_gains_10_db_snr_and_keeps_the_speech_level() {
    let sec = RATE as usize;
    // One-second pieces of speech with half-second gaps: the gaps show the noise alone.
    let voice = speech(NEAR_TEXT, "en-us", -26.0);
    let mut clean = Vec::new();
    let mut gap = Vec::new();
    for piece in voice.chunks(sec).cycle().take(8) {
        clean.extend_from_slice(piece);
        gap.extend(std::iter::repeat_n(false, piece.len().div_ceil(FRAME_10MS)));
        clean.extend(std::iter::repeat_n(0.0, sec / 2));
        gap.extend(std::iter::repeat_n(true, sec / 2 / FRAME_10MS));
    }
    clean.truncate(clean.len() / FRAME_10MS * FRAME_10MS);
    let talking = talking_frames(&clean);
    let speech_level = db(masked_power(&clean, &talking));
    let noise = fan_noise(clean.len(), 11, speech_level - 10.0); // 10 dB SNR
    let mic: Vec<f32> = clean.iter().zip(&noise).map(|(s, n)| s + n).collect();
    let s = ProcessingSettings {
        echo_cancellation: false,
        noise_suppression: true,
        auto_gain: false,
    };
    let mut p = WebRtcProcessor::new(s);
    let out = run(&mut p, &vec![0.0; mic.len()], &mic);
    // Measure after the first 2 s (the noise estimate settles), in gap cores and talking frames.
    let skip = 2 * sec / FRAME_10MS;
    let cores: Vec<bool> = (0..gap.len())
        .map(|i| {
            i >= skip
                && gap[i]
                && gap.get(i.saturating_sub(3)) == Some(&true)
                && gap.get(i + 3) == Some(&true)
        })
        .collect();
    let speaking: Vec<bool> = (0..talking.len())
        .map(|i| i >= skip && talking[i])
        .collect();
    let snr_in = db(masked_power(&clean, &speaking) / masked_power(&noise, &cores));
    let snr_out = db(
        (masked_power(&out, &speaking) - masked_power(&out, &cores)).max(1e-20)
            / masked_power(&out, &cores),
    );
    let speech_change = db(
        (masked_power(&out, &speaking) - masked_power(&out, &cores)).max(1e-20)
            / masked_power(&clean, &speaking),
    );
    println!(
        "noise suppression: SNR {snr_in:.1} → {snr_out:.1} dB (+{:.1}), speech level {speech_change:+.1} dB",
        snr_out - snr_in
    );
    assert!(
        snr_out - snr_in >= 10.0,
        "SNR gain {:.1} dB",
        snr_out - snr_in
    );
    assert!(
        speech_change.abs() <= 3.0,
        "speech level {speech_change:+.1} dB"
    );
}

#[test]
fn quiet_speech_is_brought_to_a_normal_level() {
    let sec = RATE as usize;
    let voice = looped(&speech(FAR_TEXT, "en-us", -44.0), 14 * sec);
    let s = ProcessingSettings {
        echo_cancellation: false,
        noise_suppression: false,
        auto_gain: true,
    };
    let mut p = WebRtcProcessor::new(s);
    let out = run(&mut p, &vec![0.0; voice.len()], &voice);
    let talking = talking_frames(&voice);
    let tail: Vec<bool> = (0..talking.len())
        .map(|i| i * FRAME_10MS >= 8 * sec && talking[i])
        .collect();
    let before = db(masked_power(&voice, &tail));
    let after = db(masked_power(&out, &tail));
    println!("automatic gain: speech at {before:.1} dBFS comes out at {after:.1} dBFS");
    assert!(
        (before + 40.0).abs() < 1.5,
        "the input is the quiet microphone: {before:.1}"
    );
    assert!(
        (-26.0..=-14.0).contains(&after),
        "output level {after:.1} dBFS"
    );
}

#[test]
fn settings_switch_stages_without_a_new_processor_and_bypass_is_bit_exact() {
    let far = voice(2.0, 120.0, 1, -20.0);
    let mic = echo_path(&far, 80, -10.0);
    let mut p = WebRtcProcessor::new(ProcessingSettings::OFF);
    assert_eq!(run(&mut p, &far, &mic), mic, "all off: untouched");
    p.set_settings(ECHO_ONLY);
    assert_eq!(p.settings(), ECHO_ONLY);
    let out = run(&mut p, &far, &mic);
    assert!(
        power(&out) < power(&mic),
        "echo cancelled after switching on"
    );
    let mut b = Bypass;
    assert_eq!(run(&mut b, &far, &mic), mic);
    assert_eq!(ProcessingSettings::ON.describe(), "aec+ns+agc");
    assert_eq!(ProcessingSettings::OFF.describe(), "off");
}
