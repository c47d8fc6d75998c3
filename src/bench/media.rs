//! `meshcall bench media`: openh264 encode and decode speed on camera-like 720p content, and
//! Opus encode/decode speed, single-threaded, printed as a table (no assertions: numbers).

use std::time::Instant;

use crate::media::MediaError;
use crate::media::audio::{FRAME_SAMPLES, OpusDecoder, OpusEncoder};
use crate::media::frame::I420Frame;
use crate::media::h264::{EncoderSettings, H264Decoder, H264Encoder};
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
    Ok(std::process::ExitCode::SUCCESS)
}
