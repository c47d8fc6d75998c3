//! Receive pipelines (issue 4 §5).
//!
//! Video: RTP (SDK channel) → [`H264Assembler`] on a tokio task → bounded queue (3) → openh264
//! on a dedicated decoder thread → latest-frame-wins slot that the renderer reads. PLIs go out on
//! start (until the first keyframe, every 500 ms), on every loss and on decode errors, at most one
//! per 300 ms. A decoder that falls behind drops whole access units and asks for a keyframe; it
//! never queues stale video.
//!
//! Audio: RTP → [`AudioJitterBuffer`] per stream (reorders, conceals losses with Opus PLC) →
//! [`Mixer`] → one playout thread writing 20 ms blocks to an [`AudioSink`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, warn};
use webrtc::media_stream::track_remote::TrackRemote;

use super::MediaError;
use super::assembler::{AssemblerOutput, H264Assembler};
use super::audio::OpusDecoder;
use super::frame::I420Frame;
use super::h264::H264Decoder;
use super::source::{AUDIO_FRAME, AudioSink, media_clock_us};
use super::stamp;
use super::stats::ReceiveStats;
use crate::peer::remote_peer::RemoteTrack;

/// Access units queued for the decoder before the newest is dropped (and a keyframe requested).
const DECODE_QUEUE: usize = 3;
/// Minimum spacing of keyframe requests.
const PLI_SPACING: Duration = Duration::from_millis(300);
/// While no keyframe has arrived, ask again this often.
const PLI_RETRY: Duration = Duration::from_millis(500);
/// Decoded-frame records kept for tests and diagnostics.
const FRAME_LOG: usize = 1_024;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A decoded picture ready to render.
#[derive(Debug)]
pub struct DecodedFrame {
    pub frame: I420Frame,
    /// Increments per decoded frame (the renderer uploads only when it changed).
    pub seq: u64,
    /// When it was decoded, on the media clock (µs).
    pub decoded_us: u64,
}

/// One line of the decoded-frame log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameRecord {
    pub seq: u64,
    pub width: usize,
    pub height: usize,
    pub decoded_us: u64,
    /// The synthetic sender's stamp, when the picture carries one.
    pub stamp: Option<stamp::Stamp>,
}

struct VideoShared {
    latest: Mutex<Option<Arc<DecodedFrame>>>,
    log: Mutex<VecDeque<FrameRecord>>,
    stats: Mutex<ReceiveStats>,
    need_key: Notify,
    stop: AtomicBool,
    seq: AtomicU64,
    on_frame: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    read_stamps: AtomicBool,
}

/// A running video receive pipeline for one remote track.
pub struct VideoReceiver {
    shared: Arc<VideoShared>,
    decoder: Option<JoinHandle<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl VideoReceiver {
    /// Starts receiving `track` (takes its RTP channel). Must run inside a tokio runtime.
    pub fn start(track: &RemoteTrack) -> Result<VideoReceiver, MediaError> {
        let rtp = track.take_rtp().ok_or(MediaError::Device {
            kind: "remote video",
            detail: "the track's RTP is already being consumed".into(),
        })?;
        let decoder = H264Decoder::new()?;
        let shared = Arc::new(VideoShared {
            latest: Mutex::new(None),
            log: Mutex::new(VecDeque::new()),
            stats: Mutex::new(ReceiveStats::default()),
            need_key: Notify::new(),
            stop: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            on_frame: Mutex::new(None),
            read_stamps: AtomicBool::new(true),
        });
        let (au_tx, au_rx) = std_mpsc::sync_channel::<Bytes>(DECODE_QUEUE);
        let s = shared.clone();
        let decoder = std::thread::Builder::new()
            .name("meshcall-video-decode".into())
            .spawn(move || decode_loop(decoder, au_rx, s))
            .map_err(|e| MediaError::Device {
                kind: "video decoder",
                detail: e.to_string(),
            })?;
        let raw = track.raw.clone();
        let s = shared.clone();
        let task = tokio::spawn(async move { receive_loop(rtp, raw, au_tx, s).await });
        Ok(VideoReceiver {
            shared,
            decoder: Some(decoder),
            task: Some(task),
        })
    }

    /// The newest decoded picture (latest-frame-wins; older ones are gone).
    pub fn latest(&self) -> Option<Arc<DecodedFrame>> {
        lock(&self.shared.latest).clone()
    }

    /// Called on the decoder thread after every new frame (e.g. `ctx.request_repaint()`).
    pub fn set_on_frame(&self, f: Box<dyn Fn() + Send + Sync>) {
        *lock(&self.shared.on_frame) = Some(f);
    }

    /// Whether to look for the synthetic stamp in decoded pictures (cheap; on by default).
    pub fn set_read_stamps(&self, on: bool) {
        self.shared.read_stamps.store(on, Ordering::Relaxed);
    }

    /// Takes the decoded-frame records collected so far (bounded; oldest dropped).
    pub fn drain_log(&self) -> Vec<FrameRecord> {
        lock(&self.shared.log).drain(..).collect()
    }

    pub fn stats(&self) -> ReceiveStats {
        lock(&self.shared.stats).clone()
    }

    pub fn frames_decoded(&self) -> u64 {
        self.shared.seq.load(Ordering::Relaxed)
    }

    /// Stops receiving. The decoder thread ends on its own once the aborted receive task has
    /// dropped its queue (never joined here: this may run on a runtime worker, and blocking it
    /// could stall the very task whose cancellation the thread waits for).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.decoder.take();
    }
}

impl Drop for VideoReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn send_pli(raw: &Arc<dyn TrackRemote>, ssrc: u32, shared: &VideoShared) {
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc: ssrc,
    };
    match raw.write_rtcp(vec![Box::new(pli)]).await {
        Ok(()) => lock(&shared.stats).keyframe_requests += 1,
        Err(e) => debug!(error = %e, "PLI not sent"),
    }
}

async fn receive_loop(
    mut rtp: mpsc::Receiver<rtc::rtp::Packet>,
    raw: Arc<dyn TrackRemote>,
    au_tx: std_mpsc::SyncSender<Bytes>,
    shared: Arc<VideoShared>,
) {
    let mut asm = H264Assembler::new();
    let mut ssrc: Option<u32> = None;
    let mut last_pli: Option<Instant> = None;
    let mut want_pli = true; // on start
    let mut retry = tokio::time::interval(PLI_RETRY);
    let mut window_start = Instant::now();
    let (mut window_bytes, mut window_frames) = (0u64, 0u64);
    let mut highest_seq: Option<u16> = None;
    // RFC 3550 jitter estimator state (RTP units).
    let mut jitter = 0f64;
    let mut last_transit: Option<f64> = None;
    let clock0 = Instant::now();
    loop {
        tokio::select! {
            p = rtp.recv() => {
                let Some(p) = p else { break };
                ssrc.get_or_insert(p.header.ssrc);
                {
                    let now = clock0.elapsed().as_secs_f64() * 90_000.0;
                    let transit = now - f64::from(p.header.timestamp);
                    if let Some(lt) = last_transit {
                        jitter += ((transit - lt).abs() - jitter) / 16.0;
                    }
                    last_transit = Some(transit);
                    let mut st = lock(&shared.stats);
                    st.packets += 1;
                    st.bytes += p.payload.len() as u64;
                    st.jitter_ms = jitter / 90.0;
                    if let Some(h) = highest_seq {
                        let d = p.header.sequence_number.wrapping_sub(h);
                        if d > 1 && d < 0x8000 {
                            st.packets_lost += u64::from(d - 1);
                        }
                        if d < 0x8000 {
                            highest_seq = Some(p.header.sequence_number);
                        }
                    } else {
                        highest_seq = Some(p.header.sequence_number);
                    }
                }
                window_bytes += p.payload.len() as u64;
                for o in asm.push(p.header.sequence_number, p.header.timestamp, p.header.marker, p.payload) {
                    match o {
                        AssemblerOutput::Frame { data, .. } => {
                            window_frames += 1;
                            lock(&shared.stats).frames_assembled += 1;
                            match au_tx.try_send(data) {
                                Ok(()) => {}
                                Err(std_mpsc::TrySendError::Full(_)) => {
                                    // Decoder behind: skip to the next keyframe.
                                    want_pli = true;
                                    asm = H264Assembler::new();
                                }
                                Err(std_mpsc::TrySendError::Disconnected(_)) => return,
                            }
                        }
                        AssemblerOutput::NeedKeyframe => want_pli = true,
                    }
                }
            }
            _ = shared.need_key.notified() => want_pli = true,
            _ = retry.tick() => {
                if asm.waiting_for_keyframe() {
                    want_pli = true;
                }
                let secs = window_start.elapsed().as_secs_f64();
                if secs >= 1.0 {
                    let mut st = lock(&shared.stats);
                    st.bitrate_bps = (window_bytes as f64 * 8.0 / secs) as u64;
                    st.fps = window_frames as f64 / secs;
                    window_start = Instant::now();
                    window_bytes = 0;
                    window_frames = 0;
                }
            }
        }
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        if want_pli
            && let Some(ssrc) = ssrc
            && last_pli.is_none_or(|t| t.elapsed() >= PLI_SPACING)
        {
            send_pli(&raw, ssrc, &shared).await;
            last_pli = Some(Instant::now());
            want_pli = false;
        }
    }
}

fn decode_loop(mut dec: H264Decoder, rx: std_mpsc::Receiver<Bytes>, shared: Arc<VideoShared>) {
    while let Ok(au) = rx.recv() {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let started = Instant::now();
        match dec.decode(&au) {
            Ok(Some(frame)) => {
                let decoded_us = media_clock_us();
                let stamp = if shared.read_stamps.load(Ordering::Relaxed) {
                    stamp::read(&frame)
                } else {
                    None
                };
                let seq = shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
                {
                    let mut st = lock(&shared.stats);
                    st.frames_decoded += 1;
                    st.decode_ms_total += started.elapsed().as_secs_f64() * 1000.0;
                    st.width = frame.width as u32;
                    st.height = frame.height as u32;
                    if let Some(s) = stamp
                        && decoded_us >= s.capture_us
                    {
                        st.last_latency_us = Some(decoded_us - s.capture_us);
                    }
                }
                {
                    let mut log = lock(&shared.log);
                    if log.len() >= FRAME_LOG {
                        log.pop_front();
                    }
                    log.push_back(FrameRecord {
                        seq,
                        width: frame.width,
                        height: frame.height,
                        decoded_us,
                        stamp,
                    });
                }
                let previous = lock(&shared.latest).replace(Arc::new(DecodedFrame {
                    frame,
                    seq,
                    decoded_us,
                }));
                if previous.is_some_and(|p| Arc::strong_count(&p) == 1 && p.seq + 1 == seq) {
                    // Nobody took the previous frame: the renderer is slower than the video.
                    lock(&shared.stats).frames_superseded += 1;
                }
                if let Some(cb) = lock(&shared.on_frame).as_ref() {
                    cb();
                }
            }
            Ok(None) => {}
            Err(e) => {
                debug!(error = %e, "decode error; asking for a keyframe");
                lock(&shared.stats).decode_errors += 1;
                shared.need_key.notify_one();
            }
        }
    }
}

/// Per-stream audio jitter buffer, sans-IO: packets in by RTP sequence number, 20 ms frames out
/// in order after a target delay; a missing packet is concealed (Opus PLC) rather than waited
/// for, and a buffer that grows beyond its cap drops its oldest packets.
pub struct AudioJitterBuffer {
    packets: BTreeMap<u64, Bytes>,
    next: Option<u64>,
    highest: Option<u64>,
    target: usize,
    cap: usize,
    started: bool,
    pub concealed: u64,
    pub dropped: u64,
}

/// What the jitter buffer yields for one 20 ms tick.
#[derive(Debug, PartialEq)]
pub enum JitterOutput {
    Packet(Bytes),
    /// The packet for this slot is missing: conceal.
    Lost,
    /// Nothing buffered yet (or drained): play silence.
    Empty,
}

impl AudioJitterBuffer {
    /// `target_frames` of delay (3 = 60 ms) before playout starts; at most `cap_frames` held.
    pub fn new(target_frames: usize, cap_frames: usize) -> AudioJitterBuffer {
        AudioJitterBuffer {
            packets: BTreeMap::new(),
            next: None,
            highest: None,
            target: target_frames.max(1),
            cap: cap_frames.max(target_frames + 1),
            started: false,
            concealed: 0,
            dropped: 0,
        }
    }

    fn extend(&mut self, seq: u16) -> u64 {
        let Some(h) = self.highest else {
            let e = (1u64 << 32) + u64::from(seq);
            self.highest = Some(e);
            return e;
        };
        let base = h & !0xffff;
        let e = [base.saturating_sub(0x1_0000), base, base + 0x1_0000]
            .into_iter()
            .map(|b| b + u64::from(seq))
            .min_by_key(|c| c.abs_diff(h))
            .unwrap_or(base + u64::from(seq));
        self.highest = Some(h.max(e));
        e
    }

    pub fn push(&mut self, seq: u16, payload: Bytes) {
        let e = self.extend(seq);
        if self.next.is_some_and(|n| e < n) {
            self.dropped += 1; // too late: its slot was already played
            return;
        }
        self.packets.insert(e, payload);
        while self.packets.len() > self.cap {
            if let Some((&k, _)) = self.packets.iter().next() {
                self.packets.remove(&k);
                self.dropped += 1;
                self.next = Some(k + 1);
            }
        }
    }

    /// Number of packets buffered.
    pub fn depth(&self) -> usize {
        self.packets.len()
    }

    /// One 20 ms tick.
    pub fn pop(&mut self) -> JitterOutput {
        if !self.started {
            if self.packets.len() < self.target {
                return JitterOutput::Empty;
            }
            self.started = true;
            self.next = self.packets.keys().next().copied();
        }
        let Some(next) = self.next else {
            return JitterOutput::Empty;
        };
        if self.packets.is_empty() {
            // Drained: re-buffer to the target before playing again.
            self.started = false;
            return JitterOutput::Empty;
        }
        self.next = Some(next + 1);
        match self.packets.remove(&next) {
            Some(p) => JitterOutput::Packet(p),
            None => {
                self.concealed += 1;
                JitterOutput::Lost
            }
        }
    }
}

struct MixerInput {
    id: u64,
    jitter: AudioJitterBuffer,
    decoder: OpusDecoder,
    level: f32,
}

/// Mixes every remote audio stream and plays it on one sink at a real-time 20 ms cadence.
pub struct Mixer {
    inputs: Mutex<Vec<MixerInput>>,
    next_id: AtomicU64,
    stop: AtomicBool,
    played_frames: AtomicU64,
    /// Last output block (for tests and the level meter).
    last_block: Mutex<Vec<f32>>,
    /// A speaker to switch to at the next 20 ms tick.
    next_sink: Mutex<Option<Box<dyn AudioSink>>>,
}

impl Mixer {
    /// Starts the playout thread writing to `sink`.
    pub fn start(sink: Box<dyn AudioSink>) -> Result<(Arc<Mixer>, JoinHandle<()>), MediaError> {
        let mixer = Arc::new(Mixer {
            inputs: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            played_frames: AtomicU64::new(0),
            last_block: Mutex::new(Vec::new()),
            next_sink: Mutex::new(None),
        });
        let m = mixer.clone();
        let handle = std::thread::Builder::new()
            .name("meshcall-audio-playout".into())
            .spawn(move || m.playout(sink))
            .map_err(|e| MediaError::Device {
                kind: "audio playout",
                detail: e.to_string(),
            })?;
        Ok((mixer, handle))
    }

    fn playout(&self, mut sink: Box<dyn AudioSink>) {
        let tick = Duration::from_millis(20);
        let mut next = Instant::now() + tick;
        let mut block = vec![0f32; AUDIO_FRAME];
        // After a sink failure (device unplugged) mixing goes on, so levels, active speaker and
        // jitter buffers keep working, and the output is discarded until a new sink arrives.
        let mut sink_ok = true;
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(s) = lock(&self.next_sink).take() {
                sink = s; // the old one closes here
                sink_ok = true;
            }
            block.iter_mut().for_each(|s| *s = 0.0);
            {
                let mut inputs = lock(&self.inputs);
                for input in inputs.iter_mut() {
                    let pcm = match input.jitter.pop() {
                        JitterOutput::Packet(p) => input.decoder.decode(&p).ok(),
                        JitterOutput::Lost => input.decoder.decode(&[]).ok(),
                        JitterOutput::Empty => None,
                    };
                    let Some(pcm) = pcm else {
                        input.level *= 0.5;
                        continue;
                    };
                    let mut sq = 0f32;
                    for (o, s) in block.iter_mut().zip(pcm.iter()) {
                        *o += s;
                        sq += s * s;
                    }
                    input.level = (sq / AUDIO_FRAME as f32).sqrt();
                }
            }
            block.iter_mut().for_each(|s| *s = s.clamp(-1.0, 1.0));
            if sink_ok && let Err(e) = sink.play(&block) {
                warn!(error = %e, "audio sink failed; discarding output until another is chosen");
                sink_ok = false;
            }
            *lock(&self.last_block) = block.clone();
            self.played_frames.fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
                next += tick;
            } else {
                next = now + tick; // fell behind (suspend, overload): do not burst
            }
        }
    }

    /// Adds one remote stream; returns its id for [`Mixer::push`] and [`Mixer::level`].
    pub fn add_input(&self) -> Result<u64, MediaError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.inputs).push(MixerInput {
            id,
            jitter: AudioJitterBuffer::new(3, 25),
            decoder: OpusDecoder::new()?,
            level: 0.0,
        });
        Ok(id)
    }

    pub fn remove_input(&self, id: u64) {
        lock(&self.inputs).retain(|i| i.id != id);
    }

    pub fn push(&self, id: u64, seq: u16, payload: Bytes) {
        if let Some(i) = lock(&self.inputs).iter_mut().find(|i| i.id == id) {
            i.jitter.push(seq, payload);
        }
    }

    /// RMS level of one input's last 20 ms (for the speaking ring and active speaker).
    pub fn level(&self, id: u64) -> f32 {
        lock(&self.inputs)
            .iter()
            .find(|i| i.id == id)
            .map_or(0.0, |i| i.level)
    }

    pub fn played_frames(&self) -> u64 {
        self.played_frames.load(Ordering::Relaxed)
    }

    pub fn last_block(&self) -> Vec<f32> {
        lock(&self.last_block).clone()
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Plays on another speaker from the next 20 ms block on.
    pub fn replace_sink(&self, sink: Box<dyn AudioSink>) {
        *lock(&self.next_sink) = Some(sink);
    }
}

/// Feeds one remote audio track into the mixer.
pub struct AudioReceiver {
    mixer: Arc<Mixer>,
    id: u64,
    task: tokio::task::JoinHandle<()>,
    packets: Arc<AtomicU64>,
}

impl AudioReceiver {
    pub fn start(track: &RemoteTrack, mixer: Arc<Mixer>) -> Result<AudioReceiver, MediaError> {
        let mut rtp = track.take_rtp().ok_or(MediaError::Device {
            kind: "remote audio",
            detail: "the track's RTP is already being consumed".into(),
        })?;
        let id = mixer.add_input()?;
        let m = mixer.clone();
        let packets = Arc::new(AtomicU64::new(0));
        let count = packets.clone();
        let task = tokio::spawn(async move {
            while let Some(p) = rtp.recv().await {
                count.fetch_add(1, Ordering::Relaxed);
                m.push(id, p.header.sequence_number, p.payload);
            }
        });
        Ok(AudioReceiver {
            mixer,
            id,
            task,
            packets,
        })
    }

    pub fn level(&self) -> f32 {
        self.mixer.level(self.id)
    }

    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }
}

impl Drop for AudioReceiver {
    fn drop(&mut self) {
        self.task.abort();
        self.mixer.remove_input(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x: u8) -> Bytes {
        Bytes::from(vec![x])
    }

    #[test]
    fn jitter_buffer_reorders_conceals_and_waits_for_its_target() {
        let mut j = AudioJitterBuffer::new(3, 10);
        j.push(65_534, b(1));
        j.push(0, b(3)); // 65535 missing, wraps
        assert_eq!(j.pop(), JitterOutput::Empty, "below target");
        j.push(1, b(4));
        assert_eq!(j.pop(), JitterOutput::Packet(b(1)));
        assert_eq!(j.pop(), JitterOutput::Lost);
        j.push(65_535, b(2)); // too late now
        assert_eq!(j.dropped, 1);
        assert_eq!(j.pop(), JitterOutput::Packet(b(3)));
        assert_eq!(j.pop(), JitterOutput::Packet(b(4)));
        assert_eq!(j.pop(), JitterOutput::Empty, "drained → re-buffer");
        assert_eq!(j.concealed, 1);
    }

    #[test]
    fn jitter_buffer_is_bounded() {
        let mut j = AudioJitterBuffer::new(2, 5);
        for s in 0..100u16 {
            j.push(s, b(s as u8));
        }
        assert_eq!(j.depth(), 5);
        assert_eq!(j.pop(), JitterOutput::Packet(b(95)));
    }

    /// A sink that records what it was given.
    struct Recorder(Arc<Mutex<Vec<f32>>>);
    impl AudioSink for Recorder {
        fn name(&self) -> &str {
            "recorder"
        }
        fn play(&mut self, s: &[f32]) -> Result<usize, MediaError> {
            lock(&self.0).extend_from_slice(s);
            Ok(s.len())
        }
    }

    #[test]
    fn mixer_plays_a_decoded_tone_at_its_pitch() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mixer, handle) = Mixer::start(Box::new(Recorder(out.clone()))).expect("mixer");
        let id = mixer.add_input().expect("input");
        let mut enc = crate::media::audio::OpusEncoder::new(32_000).expect("enc");
        let mut tone = crate::media::synthetic::SyntheticAudio::default();
        for seq in 0..50u16 {
            let pcm = tone.next_samples(AUDIO_FRAME);
            let packet = enc.encode(&pcm).expect("encode");
            mixer.push(id, seq, Bytes::from(packet));
            if seq >= 5 {
                std::thread::sleep(Duration::from_millis(20)); // real-time pace, 100 ms ahead
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while mixer.played_frames() < 45 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        mixer.stop();
        let _ = handle.join();
        let rec = lock(&out).clone();
        // skip the beep (first 50 ms of each second) and the start-up silence
        let start = rec
            .iter()
            .position(|s| s.abs() > 0.05)
            .expect("sound played");
        let tone_part = &rec[start + 4_800..(start + 40_000).min(rec.len())];
        let f = crate::media::audio::dominant_frequency(tone_part, 48_000);
        assert!((f - 440.0).abs() < 5.0, "{f} Hz");
    }
}
