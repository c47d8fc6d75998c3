//! `meshcall bench media`: openh264 encode and decode speed on camera-like 720p content, and
//! Opus encode/decode speed, single-threaded, printed as a table (no assertions: numbers).

use std::time::Instant;

use crate::media::MediaError;
use crate::media::audio::{FRAME_SAMPLES, OpusDecoder, OpusEncoder};
use crate::media::frame::I420Frame;
use crate::media::h264::{EncoderSettings, H264Decoder, H264Encoder};
use crate::media::processing::{
    AudioProcessor, FRAME_10MS, ProcessingSettings, RATE, WebRtcProcessor,
};
use crate::media::synthetic::{SyntheticAudio, SyntheticVideo};

#[derive(Debug, clap::Args)]
pub struct MediaBenchArgs {
    /// Frames to encode and decode.
    #[arg(long, default_value_t = 300)]
    pub frames: usize,
    #[arg(long, default_value_t = 1280)]
    pub width: usize,
    #[arg(long, default_value_t = 720)]
    pub height: usize,
    #[arg(long, default_value_t = 2_500_000)]
    pub bitrate: u32,
}

/// Adds deterministic ±12 luma noise, as a camera sensor would (the clean pattern flatters the
/// encoder).
fn camera_like(mut f: I420Frame, seed: u32) -> I420Frame {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    for p in f.y.iter_mut().skip(f.width * 48) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let noise = (x % 25) as i16 - 12;
        *p = (i16::from(*p) + noise).clamp(16, 235) as u8;
    }
    f
}

pub fn run(args: MediaBenchArgs) -> Result<std::process::ExitCode, MediaError> {
    let mut src = SyntheticVideo::new(args.width, args.height)?;
    let frames: Vec<I420Frame> = (0..args.frames)
        .map(|i| camera_like(src.next_frame(i as u64 * 33_333), i as u32))
        .collect();
    let mut enc = H264Encoder::new(EncoderSettings {
        bitrate_bps: args.bitrate,
        fps: 30.0,
    })?;
    let t = Instant::now();
    let mut units = Vec::with_capacity(frames.len());
    for f in &frames {
        units.push(enc.encode(f)?);
    }
    let enc_s = t.elapsed().as_secs_f64();
    let bytes: usize = units.iter().map(Vec::len).sum();
    let mut dec = H264Decoder::new()?;
    let t = Instant::now();
    let mut decoded = 0;
    for u in &units {
        if !u.is_empty() && dec.decode(u)?.is_some() {
            decoded += 1;
        }
    }
    let dec_s = t.elapsed().as_secs_f64();

    let mut audio = SyntheticAudio::default();
    let pcm = audio.next_samples(48_000 * 10);
    let mut oe = OpusEncoder::new(32_000)?;
    let mut od = OpusDecoder::new()?;
    let t = Instant::now();
    let packets: Vec<Vec<u8>> = pcm
        .chunks(FRAME_SAMPLES)
        .map(|c| oe.encode(c))
        .collect::<Result<_, _>>()?;
    let opus_enc_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for p in &packets {
        od.decode(p)?;
    }
    let opus_dec_s = t.elapsed().as_secs_f64();

    // Audio processing (AEC + NS + AGC + high-pass) on 10 s of a two-voice echo scenario: the
    // render stream is what a 5-person call's mixer plays (one stream, however many talk), the
    // capture stream carries its echo 100 ms later at −10 dB.
    // Far end: bursts of deterministic broadband noise (a pure tone would tell the canceller
    // little about the echo path, and its statistics would mean nothing).
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let far: Vec<f32> = (0..RATE as usize * 10)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let white = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            let talking = (i / (RATE as usize / 4)) % 4 != 3;
            if talking { white * 0.2 } else { 0.0 }
        })
        .collect();
    let echo_delay = RATE as usize / 10;
    let mut apm = WebRtcProcessor::new(ProcessingSettings::ON);
    let mut per_frame_us = Vec::with_capacity(far.len() / FRAME_10MS);
    let mut mic = vec![0.0f32; FRAME_10MS];
    for (k, f) in far.chunks_exact(FRAME_10MS).enumerate() {
        for (i, m) in mic.iter_mut().enumerate() {
            let at = k * FRAME_10MS + i;
            *m = if at >= echo_delay {
                far[at - echo_delay] * 0.316
            } else {
                0.0
            };
        }
        let t = Instant::now();
        apm.process_render(f);
        apm.process_capture(&mut mic);
        per_frame_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let apm_stats = apm.stats();
    per_frame_us.sort_by(f64::total_cmp);
    let q = |p: f64| per_frame_us[((per_frame_us.len() - 1) as f64 * p) as usize];

    let mix = mix_five_participants()?;

    let n = frames.len() as f64;
    println!("| metric | value |");
    println!("|---|---|");
    println!(
        "| H.264 encode {}x{} camera-like, {} kbit/s target | {:.0} fps ({:.2} ms/frame), {:.0} kbit/s produced at 30 fps |",
        args.width,
        args.height,
        args.bitrate / 1000,
        n / enc_s,
        enc_s * 1000.0 / n,
        bytes as f64 * 8.0 / (n / 30.0) / 1000.0
    );
    println!(
        "| H.264 decode | {:.0} fps ({:.2} ms/frame), {decoded}/{} frames |",
        decoded as f64 / dec_s,
        dec_s * 1000.0 / decoded.max(1) as f64,
        frames.len()
    );
    println!(
        "| Opus 48 kHz mono 20 ms encode / decode | {:.0}× / {:.0}× real time |",
        10.0 / opus_enc_s,
        10.0 / opus_dec_s
    );
    println!(
        "| audio processing (AEC+NS+AGC+HPF, 48 kHz mono), render+capture per 10 ms | p50 {:.0} µs / p99 {:.0} µs = {:.1} % of one core; ERLE {:.1} dB, delay estimate {} ms |",
        q(0.5),
        q(0.99),
        q(0.5) / 10_000.0 * 100.0,
        apm_stats.erle_db.unwrap_or(f64::NAN),
        apm_stats.delay_ms.map_or("?".into(), |d| d.to_string())
    );
    println!(
        "| a call with 5 remote participants mixed (5 Opus decodes + jitter buffers + mix + far-end tap), playout thread | {:.1} % of one core over {:.0} s; with the capture processing above: {:.1} % |",
        mix.cpu_share * 100.0,
        mix.seconds,
        mix.cpu_share * 100.0 + q(0.5) / 10_000.0 * 100.0
    );
    Ok(std::process::ExitCode::SUCCESS)
}

struct MixCost {
    cpu_share: f64,
    seconds: f64,
}

/// Five participants talk at once (the synthetic tone, pre-encoded), fed in real time into
/// the real mixer with the echo canceller's far-end tap on; the playout thread's own CPU time
/// (from /proc) over the run is the cost of mixing a 6-person call.
fn mix_five_participants() -> Result<MixCost, MediaError> {
    use crate::media::mixer::Mixer;
    use crate::media::processing::shared;
    const SECONDS: u64 = 5;
    let packets: Vec<bytes::Bytes> = {
        let mut enc = OpusEncoder::new(32_000)?;
        let mut tone = SyntheticAudio::default();
        (0..SECONDS * 50)
            .map(|_| {
                enc.encode(&tone.next_samples(FRAME_SAMPLES))
                    .map(bytes::Bytes::from)
            })
            .collect::<Result<_, _>>()?
    };
    let (mixer, playout) = Mixer::start(Box::new(crate::media::devices::NullSink::new()))?;
    mixer.set_render_tap(Some(shared(WebRtcProcessor::new(ProcessingSettings::ON))));
    let inputs: Vec<u64> = (0..5)
        .map(|_| mixer.add_input())
        .collect::<Result<_, _>>()?;
    let thread_cpu = playout_thread_cpu_s();
    let started = Instant::now();
    for (seq, p) in packets.iter().enumerate() {
        for id in &inputs {
            mixer.push(*id, seq as u16, p.clone());
        }
        let due = started + std::time::Duration::from_millis(20 * (seq as u64 + 1));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let cpu = playout_thread_cpu_s() - thread_cpu;
    let seconds = started.elapsed().as_secs_f64();
    mixer.stop();
    let _ = playout.join();
    Ok(MixCost {
        cpu_share: cpu / seconds,
        seconds,
    })
}

/// User + system CPU seconds of this process's audio playout thread (0 when not found).
fn playout_thread_cpu_s() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        // Thread names are cut to 15 characters: "meshcall-audio-" (the bench runs no sender).
        if !comm.starts_with("meshcall-audio") {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // SAFETY: sysconf only reads a constant of the C library.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        return (ticks(11) + ticks(12)) / hz;
    }
    0.0
}
