//! The video receive pipeline (the audio side is in [`super::mixer`]).
//!
//! Video: RTP (SDK channel) → [`H264Assembler`] on a tokio task → bounded queue (8) → openh264
//! on a dedicated decoder thread → latest-frame-wins slot that the renderer reads. PLIs go out on
//! start (until the first keyframe, every 500 ms), on every loss and on decode errors, at most one
//! per 300 ms. A decoder that falls behind drops whole access units and asks for a keyframe; it
//! never queues stale video.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, error};
use webrtc::media_stream::track_remote::TrackRemote;

use super::MediaError;
use super::assembler::{AssemblerOutput, H264Assembler};
use super::frame::I420Frame;
use super::h264::H264Decoder;
use super::source::media_clock_us;
use super::stamp;
use super::stats::ReceiveStats;
use crate::peer::remote_peer::RemoteTrack;

/// Access units queued for the decoder before the newest is dropped (and a keyframe requested).
/// Frames held behind a hole that NACK then repairs are released together (six or more at
/// 30 fps after a 200 ms wait) and every one of them is needed: each P-frame references the one
/// before. A queue of 3 turned each such burst into a keyframe wait; 8 absorbs it, and a
/// decoder that really cannot keep up still overflows it within a quarter of a second (the
/// picture must not lag behind the call).
const DECODE_QUEUE: usize = 8;
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

impl VideoShared {
    fn new() -> VideoShared {
        VideoShared {
            latest: Mutex::new(None),
            log: Mutex::new(VecDeque::new()),
            stats: Mutex::new(ReceiveStats::default()),
            need_key: Notify::new(),
            stop: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            on_frame: Mutex::new(None),
            read_stamps: AtomicBool::new(true),
        }
    }
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
        let shared = Arc::new(VideoShared::new());
        let (au_tx, au_rx) = std_mpsc::sync_channel::<Bytes>(DECODE_QUEUE);
        let s = shared.clone();
        let decoder = std::thread::Builder::new()
            .name("meshcall-video-decode".into())
            .spawn(move || {
                let stats = s.clone();
                let run = std::panic::AssertUnwindSafe(|| decode_loop(decoder, au_rx, s));
                if let Err(p) = std::panic::catch_unwind(run) {
                    mark_failed(&stats.stats, "decode", &p);
                }
            })
            .map_err(|e| MediaError::Device {
                kind: "video decoder",
                detail: e.to_string(),
            })?;
        let raw = track.raw.clone();
        let s = shared.clone();
        let task = tokio::spawn(supervised(
            "receive",
            shared.clone(),
            receive_loop(rtp, raw, au_tx, s),
        ));
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

/// Runs one pipeline stage; if it panics (a bug), the failure is logged and recorded in the
/// stats (`failed`), so the tile says the video stopped instead of freezing without a word.
async fn supervised(
    stage: &'static str,
    shared: Arc<VideoShared>,
    stage_future: impl std::future::Future<Output = ()>,
) {
    let run = std::panic::AssertUnwindSafe(stage_future);
    if let Err(p) = futures_util::FutureExt::catch_unwind(run).await {
        mark_failed(&shared.stats, stage, &p);
    }
}

fn mark_failed(stats: &Mutex<ReceiveStats>, stage: &str, panic: &Box<dyn std::any::Any + Send>) {
    let why = super::supervise::panic_message(panic.as_ref());
    error!(stage, reason = %why, "video pipeline failed; the stream is dead");
    lock(stats).failed = Some(format!("{stage}: {why}"));
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
            // Packets first: on a starved machine a retransmission may already be waiting in
            // the queue when a hole's repair wait runs out; it must be seen before giving up.
            biased;
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
                let out = asm.push(
                    p.header.sequence_number,
                    p.header.timestamp,
                    p.header.marker,
                    p.payload,
                    Instant::now(),
                );
                if !take_frames(out, &mut asm, &au_tx, &shared, &mut window_frames, &mut want_pli) {
                    return;
                }
            }
            _ = sleep_until_opt(asm.poll_timeout()) => {
                let out = asm.handle_timeout(Instant::now());
                if !take_frames(out, &mut asm, &au_tx, &shared, &mut window_frames, &mut want_pli) {
                    return;
                }
            }
            _ = shared.need_key.notified() => want_pli = true,
            _ = retry.tick() => {
                if asm.waiting_for_keyframe() {
                    want_pli = true;
                }
                {
                    let mut st = lock(&shared.stats);
                    st.packets_repaired = asm.repaired_packets;
                    st.late_packets = asm.late_packets;
                    st.frames_lost = asm.frames_lost;
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

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// Hands the assembler's complete frames to the decoder thread. Returns false when the decoder
/// is gone (the pipeline is stopping).
fn take_frames(
    out: Vec<AssemblerOutput>,
    asm: &mut H264Assembler,
    au_tx: &std_mpsc::SyncSender<Bytes>,
    shared: &VideoShared,
    window_frames: &mut u64,
    want_pli: &mut bool,
) -> bool {
    for o in out {
        match o {
            AssemblerOutput::Frame { data, .. } => {
                *window_frames += 1;
                lock(&shared.stats).frames_assembled += 1;
                match au_tx.try_send(data) {
                    Ok(()) => {}
                    Err(std_mpsc::TrySendError::Full(_)) => {
                        // Decoder behind: skip to the next keyframe.
                        *want_pli = true;
                        let mut fresh = H264Assembler::new();
                        fresh.set_repair_wait(asm.repair_wait());
                        fresh.late_packets = asm.late_packets;
                        fresh.repaired_packets = asm.repaired_packets;
                        fresh.frames_lost = asm.frames_lost;
                        *asm = fresh;
                    }
                    Err(std_mpsc::TrySendError::Disconnected(_)) => return false,
                }
            }
            AssemblerOutput::NeedKeyframe => *want_pli = true,
        }
    }
    true
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stage_that_panics_marks_the_stream_dead_instead_of_dying_silently() {
        let shared = Arc::new(VideoShared::new());
        let task = tokio::spawn(supervised("receive", shared.clone(), async {
            panic!("depacketizer bug");
        }));
        task.await.expect("the supervisor itself does not fail");
        assert_eq!(
            lock(&shared.stats).failed.as_deref(),
            Some("receive: depacketizer bug")
        );
    }
}
