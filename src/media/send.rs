//! Send pipelines: one capture thread and one encoder per local track; the encoded samples go
//! to the fan-out (`media::fanout`), one leg per peer connection.
//!
//! ```text
//! source thread ─ frame ─► encoder (same thread) ─ Arc<EncodedSample> ─► leg queue (8) ─► leg task ─► TrackLocalStaticSample
//!                                   ▲                                     (one per connection)
//!                                   └──── keyframe request (PLI/FIR, new leg, overflow) ◄──┘
//! ```
//!
//! Sources can be replaced mid-call without a new track (devices come and go); the video loop
//! runs per-leg rate estimates and, when the mesh's links diverge, a second half-size encoding.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tracing::{debug, warn};

use super::MediaError;
use super::audio::OpusEncoder;
use super::frame::I420Frame;
use super::h264::{EncoderSettings, H264Encoder};
use super::keyframes::KeyframePolicy;
use super::processing::{LevelMeter, SharedProcessor, for_each_10ms};
use super::rate::{RateController, SendMeter};
use super::receive::DecodedFrame;
use super::rungs::{self, Rung};
use super::source::{AUDIO_FRAME, AudioSource, VideoSource};
use super::stats::SendStats;
use super::supervise::guard_thread;
use crate::peer::local_media::LocalMedia;

use super::fanout::*;
pub use super::fanout::{EncodedSample, SampleFanout, TrackSpec};

/// Settings of a video send pipeline.
#[derive(Debug, Clone, Copy)]
pub struct VideoSendSettings {
    pub encoder: EncoderSettings,
    /// Lowest bitrate the rate controller may choose.
    pub min_bitrate_bps: u32,
}

impl Default for VideoSendSettings {
    fn default() -> Self {
        VideoSendSettings {
            encoder: EncoderSettings::default(),
            min_bitrate_bps: 150_000,
        }
    }
}

/// What every send pipeline has: the capture/encode thread, its fan-out to the peers, its
/// stats. Stopping (or dropping) ends the thread and every leg.
pub struct SendCore {
    fanout: Arc<SampleFanout>,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<SendStats>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    kind: RtpCodecKind,
}

impl SendCore {
    /// What to pass to `MeteredPeer::add_media`.
    pub fn media(&self) -> Arc<dyn LocalMedia> {
        Arc::new(FanoutMedia(
            Arc::downgrade(&self.fanout),
            self.fanout.spec.clone(),
            self.kind,
        ))
    }

    pub fn track_id(&self) -> &str {
        &self.fanout.spec.track_id
    }

    pub fn fanout(&self) -> &SampleFanout {
        &self.fanout
    }

    pub fn stats(&self) -> SendStats {
        lock(&self.stats).clone()
    }

    /// Stops the thread (joins it) and ends every leg.
    pub fn stop(&mut self) {
        self.stop_shared();
    }

    /// [`Self::stop`] through a shared reference.
    pub fn stop_shared(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.fanout.stopped.store(true, Ordering::Relaxed);
        lock(&self.fanout.legs).clear();
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for SendCore {
    fn drop(&mut self) {
        self.stop_shared();
    }
}

/// A running video send pipeline: capture + encode thread and its fan-out.
pub struct VideoSender {
    core: SendCore,
    /// Paused (camera off): frames are still captured but not encoded or sent.
    paused: Arc<AtomicBool>,
    /// The last captured picture, for the local preview (shared, never copied).
    preview: Arc<Mutex<Option<Arc<DecodedFrame>>>>,
    /// A new source for the capture thread to switch to (changing cameras mid-call).
    next_source: Arc<Swap<Box<dyn VideoSource>>>,
    /// Called after each new preview picture (the UI's repaint hook for the self-view).
    on_frame: Arc<Mutex<Option<FrameHook>>>,
}

type FrameHook = Box<dyn Fn() + Send + Sync>;

/// A replacement handed to a capture thread, which picks it up before its next frame: devices
/// change mid-call without a new track, a renegotiation or a gap the remote side can see.
struct Swap<T>(Mutex<Option<T>>);

impl<T> Swap<T> {
    fn new() -> Swap<T> {
        Swap(Mutex::new(None))
    }

    fn put(&self, v: T) {
        *lock(&self.0) = Some(v);
    }

    fn take(&self) -> Option<T> {
        lock(&self.0).take()
    }

    /// After the current source failed: wait (checking `stop`) for a replacement.
    fn wait(&self, stop: &AtomicBool) -> Option<T> {
        while !stop.load(Ordering::Relaxed) {
            if let Some(v) = self.take() {
                return Some(v);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl VideoSender {
    /// Starts capturing from `source` and encoding at the configured bitrate.
    pub fn start(
        source: Box<dyn VideoSource>,
        spec: TrackSpec,
        settings: VideoSendSettings,
    ) -> Result<VideoSender, MediaError> {
        let encoder = H264Encoder::new(settings.encoder)?;
        let fanout = SampleFanout::new(spec, RtpCodecKind::Video);
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(SendStats::default()));
        let preview = Arc::new(Mutex::new(None));
        let next_source = Arc::new(Swap::new());
        let on_frame = Arc::new(Mutex::new(None));
        let ctx = VideoLoop {
            source,
            encoder,
            low: None,
            settings,
            fanout: fanout.clone(),
            stop: stop.clone(),
            paused: paused.clone(),
            stats: stats.clone(),
            leg_rates: HashMap::new(),
            rungs: HashMap::new(),
            keyframes: [KeyframePolicy::default(), KeyframePolicy::default()],
            scaled: [false, false],
            skip_toggle: [false, false],
            fps: settings.encoder.fps,
            preview: preview.clone(),
            next_source: next_source.clone(),
            on_frame: on_frame.clone(),
        };
        let panic_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("meshcall-video-send".into())
            .spawn(move || {
                if let Err(why) = guard_thread("video capture and encode", move || ctx.run()) {
                    lock(&panic_stats).failed = Some(why);
                }
            })
            .map_err(|e| MediaError::Device {
                kind: "video encoder",
                detail: e.to_string(),
            })?;
        Ok(VideoSender {
            core: SendCore {
                fanout,
                stop,
                stats,
                thread: Mutex::new(Some(thread)),
                kind: RtpCodecKind::Video,
            },
            paused,
            preview,
            next_source,
            on_frame,
        })
    }

    /// Calls `f` (from the capture thread) whenever [`Self::preview`] has a new picture.
    pub fn set_on_frame(&self, f: FrameHook) {
        *lock(&self.on_frame) = Some(f);
    }

    /// Switches to another camera or screen; the old source is closed by the capture thread.
    /// A source of another size is fine (the encoder re-initialises and sends a keyframe). Also
    /// revives a sender whose source failed (device unplugged).
    pub fn replace_source(&self, source: Box<dyn VideoSource>) {
        self.next_source.put(source);
    }

    /// Camera off / on without tearing the track down.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        if !paused {
            self.fanout.urgent_keyframes();
        }
    }

    /// The last captured picture (local preview; `seq` increments per frame).
    pub fn preview(&self) -> Option<Arc<DecodedFrame>> {
        lock(&self.preview).clone()
    }
}

/// `media()`, `track_id()`, `stats()`, `stop_shared()`… come from the shared core.
impl std::ops::Deref for VideoSender {
    type Target = SendCore;

    fn deref(&self) -> &SendCore {
        &self.core
    }
}

impl std::ops::DerefMut for VideoSender {
    fn deref_mut(&mut self) -> &mut SendCore {
        &mut self.core
    }
}

struct VideoLoop {
    source: Box<dyn VideoSource>,
    /// The full-size encoding (the high rung).
    encoder: H264Encoder,
    /// The half-size encoding, only while some leg is on the low rung.
    low: Option<H264Encoder>,
    settings: VideoSendSettings,
    fanout: Arc<SampleFanout>,
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    stats: Arc<Mutex<SendStats>>,
    /// Each leg's own rate estimate.
    leg_rates: HashMap<u64, LegRate>,
    /// Each leg's current rung.
    rungs: HashMap<u64, Rung>,
    keyframes: [KeyframePolicy; 2],
    /// Whether each rung was sending half-size / every other frame (to notice a change).
    scaled: [bool; 2],
    skip_toggle: [bool; 2],
    fps: f32,
    preview: Arc<Mutex<Option<Arc<DecodedFrame>>>>,
    next_source: Arc<Swap<Box<dyn VideoSource>>>,
    on_frame: Arc<Mutex<Option<FrameHook>>>,
}

/// One leg's rate controller and when it last heard from the receiver.
struct LegRate {
    rate: RateController,
    sent: SendMeter,
    last_report: Option<Instant>,
    last_eval: Instant,
}

/// What one rung encodes with, from the rate controller of the leg that governs it.
#[derive(Debug, Clone, Copy)]
struct RungTarget {
    bitrate_bps: u32,
    scale_down: bool,
    half_fps: bool,
}

impl VideoLoop {
    /// Updates every leg's estimate from its receiver's reports, assigns rungs, and returns
    /// what each rung should encode (`None`: no leg on it).
    fn plan(&mut self, now: Instant) -> ([Option<RungTarget>; 2], Vec<LegView>) {
        let views = self.fanout.leg_views();
        let s = self.settings;
        self.leg_rates
            .retain(|id, _| views.iter().any(|v| v.id == *id));
        for v in &views {
            let lr = self.leg_rates.entry(v.id).or_insert_with(|| LegRate {
                rate: RateController::new(s.min_bitrate_bps, s.encoder.bitrate_bps, s.encoder.fps),
                sent: SendMeter::default(),
                last_report: None,
                last_eval: now,
            });
            lr.sent.record(now, v.media_bytes);
            // Every new receiver report (about four a second), and at least once a second
            // for the RTT.
            if v.newest_report > lr.last_report
                || now.duration_since(lr.last_eval) >= STATS_INTERVAL
            {
                lr.last_report = v.newest_report;
                lr.last_eval = now;
                lr.rate.on_report(now, v.loss, v.rtt_ms, lr.sent.bps());
            }
        }
        let estimates: Vec<(u64, u32)> = views
            .iter()
            .filter_map(|v| {
                self.leg_rates
                    .get(&v.id)
                    .map(|r| (v.id, r.rate.bitrate_bps()))
            })
            .collect();
        let plan = rungs::plan(&estimates, &self.rungs);
        for (&leg, &rung) in &plan.assignment {
            if self.rungs.get(&leg).copied().unwrap_or_default() != rung {
                debug!(leg, ?rung, "leg moves to another encoding");
                self.fanout.set_leg_rung(leg, rung);
            }
        }
        self.rungs = plan.assignment;
        let target = |gov: Option<u64>| {
            gov.and_then(|l| self.leg_rates.get(&l))
                .map(|r| RungTarget {
                    bitrate_bps: r.rate.bitrate_bps(),
                    scale_down: r.rate.scale_down(),
                    half_fps: r.rate.half_fps(),
                })
        };
        (
            [target(plan.high_governor), target(plan.low_governor)],
            views,
        )
    }

    fn run(mut self) {
        let frame_duration = Duration::from_secs_f32(1.0 / self.fps.max(1.0));
        let mut last_report = Instant::now();
        let mut frames_in_window = 0u32;
        let mut last_bytes = 0u64;
        let mut preview_seq = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(s) = self.next_source.take() {
                self.source = s; // the old one closes here, on the thread that used it
                self.fanout.urgent_keyframes();
                lock(&self.stats).source_error = None;
            }
            let frame = match self.source.next_frame() {
                Ok(f) => f,
                Err(e) => {
                    warn!(error = %e, "video source ended; waiting for another");
                    lock(&self.stats).source_error = Some(e.to_string());
                    *lock(&self.preview) = None;
                    match self.next_source.wait(&self.stop) {
                        Some(s) => {
                            self.next_source.put(s);
                            continue;
                        }
                        None => break,
                    }
                }
            };
            let now = Instant::now();
            let (targets, views) = self.plan(now);
            if now.duration_since(last_report) >= STATS_INTERVAL {
                let secs = now.duration_since(last_report).as_secs_f64();
                let bytes: u64 = views.iter().map(|v| v.bytes_sent).sum();
                let mut s = lock(&self.stats);
                s.fps = f64::from(frames_in_window) / secs;
                s.bitrate_bps = (bytes.saturating_sub(last_bytes) as f64 * 8.0 / secs) as u64;
                s.target_bitrate_bps =
                    targets[0].map_or(self.encoder.bitrate_bps(), |t| t.bitrate_bps);
                s.loss_fraction = views.iter().map(|v| v.loss).fold(0.0, f64::max);
                s.rtt_ms = views.iter().filter_map(|v| v.rtt_ms).reduce(f64::max);
                s.peers = views.len();
                s.scale_down = targets[0].is_some_and(|t| t.scale_down);
                s.low_rung_bitrate_bps = targets[1].map(|t| t.bitrate_bps);
                s.legs_on_low_rung = self.rungs.values().filter(|&&r| r == Rung::Low).count();
                s.keyframe_requests = self.fanout.keyframe_requests.load(Ordering::Relaxed);
                last_bytes = bytes;
                frames_in_window = 0;
                last_report = now;
            }
            if self.paused.load(Ordering::Relaxed) {
                *lock(&self.preview) = None;
                continue;
            }
            preview_seq += 1;
            let capture_us = frame.capture_us;
            let shared = Arc::new(DecodedFrame {
                frame,
                seq: preview_seq,
                decoded_us: capture_us,
            });
            *lock(&self.preview) = Some(shared.clone());
            if let Some(f) = lock(&self.on_frame).as_ref() {
                f();
            }
            if self.fanout.ready_legs() == 0 {
                continue; // nobody to send to: do not spend a core encoding
            }
            let frame = &shared.frame;
            let mut half: Option<I420Frame> = None;
            let mut sent = false;
            for rung in [Rung::High, Rung::Low] {
                let Some(t) = targets[rung.index()] else {
                    if rung == Rung::Low && self.low.take().is_some() {
                        debug!("no leg needs the low encoding any more: stopped");
                    }
                    continue;
                };
                // The low rung is always half size; the high rung halves under pressure.
                let scaled = rung == Rung::Low || t.scale_down;
                if scaled != self.scaled[rung.index()] {
                    self.scaled[rung.index()] = scaled;
                    // A new size re-initialises the encoder: it must start with an IDR.
                    self.fanout.urgent_keyframe[rung.index()].store(true, Ordering::Relaxed);
                }
                if t.half_fps {
                    let toggle = &mut self.skip_toggle[rung.index()];
                    *toggle = !*toggle;
                    if *toggle {
                        continue;
                    }
                }
                let input: &I420Frame = if scaled {
                    half.get_or_insert_with(|| downscale_half(frame))
                } else {
                    frame
                };
                if let Some(sample) = self.encode(rung, t, input, frame_duration) {
                    self.fanout.publish(sample);
                    sent = true;
                }
            }
            if sent {
                frames_in_window += 1;
            }
        }
    }

    /// Encodes one picture for `rung` at its target; `None` if the encoder produced nothing.
    fn encode(
        &mut self,
        rung: Rung,
        t: RungTarget,
        frame: &I420Frame,
        frame_duration: Duration,
    ) -> Option<EncodedSample> {
        let i = rung.index();
        let settings = self.settings.encoder;
        let encoder = match rung {
            Rung::High => &mut self.encoder,
            Rung::Low => match &mut self.low {
                Some(e) => e,
                slot => {
                    let e = H264Encoder::new(EncoderSettings {
                        bitrate_bps: t.bitrate_bps,
                        ..settings
                    })
                    .map_err(|e| warn!(error = %e, "the low encoding could not start"))
                    .ok()?;
                    debug!(bps = t.bitrate_bps, "low encoding started");
                    self.fanout.urgent_keyframe[i].store(true, Ordering::Relaxed);
                    slot.insert(e)
                }
            },
        };
        if encoder.bitrate_bps() != t.bitrate_bps
            && let Err(e) = encoder.set_bitrate(t.bitrate_bps)
        {
            warn!(error = %e, "bitrate change refused");
        }
        if self.fanout.take_keyframe_request(rung) {
            self.keyframes[i].request();
        }
        let urgent = self.fanout.take_urgent_keyframe(rung);
        if self.keyframes[i].force_keyframe(Instant::now(), urgent) {
            encoder.request_keyframe();
        }
        let started = Instant::now();
        let au = match encoder.encode_au(frame) {
            Ok(au) => au,
            Err(e) => {
                warn!(error = %e, "encode failed; skipping the frame");
                return None;
            }
        };
        {
            let mut s = lock(&self.stats);
            s.frames_encoded += 1;
            s.encode_ms_total += started.elapsed().as_secs_f64() * 1000.0;
            match rung {
                Rung::High => {
                    s.width = frame.width as u32;
                    s.height = frame.height as u32;
                }
                Rung::Low => s.low_rung_size = Some((frame.width as u32, frame.height as u32)),
            }
        }
        if au.data.is_empty() {
            return None;
        }
        if au.keyframe {
            self.keyframes[i].keyframe_sent(Instant::now());
            lock(&self.stats).keyframes += 1;
        }
        Some(EncodedSample {
            data: Bytes::from(au.data),
            capture_us: frame.capture_us,
            duration: frame_duration,
            keyframe: au.keyframe,
            rung,
        })
    }
}

/// Halves both dimensions (2×2 box filter), keeping them even. Used under bandwidth pressure.
pub fn downscale_half(f: &I420Frame) -> I420Frame {
    let (w, h) = ((f.width / 4) * 2, (f.height / 4) * 2);
    let Ok(mut out) = I420Frame::black(w.max(2), h.max(2)) else {
        return f.clone();
    };
    let box2 = |src: &[u8], sw: usize, dst: &mut [u8], dw: usize, dh: usize| {
        for y in 0..dh {
            for x in 0..dw {
                let (sx, sy) = (x * 2, y * 2);
                let a = u32::from(src[sy * sw + sx]);
                let b = u32::from(src[sy * sw + sx + 1]);
                let c = u32::from(src[(sy + 1) * sw + sx]);
                let d = u32::from(src[(sy + 1) * sw + sx + 1]);
                dst[y * dw + x] = ((a + b + c + d + 2) / 4) as u8;
            }
        }
    };
    box2(&f.y, f.width, &mut out.y, out.width, out.height);
    let (scw, dcw, dch) = (f.width / 2, out.width / 2, out.height / 2);
    if f.height / 2 >= dch * 2 && scw >= dcw * 2 {
        box2(&f.u, scw, &mut out.u, dcw, dch);
        box2(&f.v, scw, &mut out.v, dcw, dch);
    }
    out.capture_us = f.capture_us;
    out
}

/// A running audio send pipeline (Opus 48 kHz mono, 20 ms).
pub struct AudioSender {
    core: SendCore,
    muted: Arc<AtomicBool>,
    level: Arc<AtomicU32>,
    next_source: Arc<Swap<Box<dyn AudioSource>>>,
    processor: Arc<Mutex<Option<SharedProcessor>>>,
    sent_level: Arc<LevelMeter>,
}

impl AudioSender {
    pub fn start(
        mut source: Box<dyn AudioSource>,
        spec: TrackSpec,
        bitrate_bps: i32,
    ) -> Result<AudioSender, MediaError> {
        let mut encoder = OpusEncoder::new(bitrate_bps)?;
        let fanout = SampleFanout::new(spec, RtpCodecKind::Audio);
        let stop = Arc::new(AtomicBool::new(false));
        let muted = Arc::new(AtomicBool::new(false));
        let level = Arc::new(AtomicU32::new(0));
        let stats = Arc::new(Mutex::new(SendStats::default()));
        let next_source: Arc<Swap<Box<dyn AudioSource>>> = Arc::new(Swap::new());
        let processor: Arc<Mutex<Option<SharedProcessor>>> = Arc::new(Mutex::new(None));
        let sent_level = Arc::new(LevelMeter::default());
        let meter = sent_level.clone();
        let (f, st, mu, lv, ss, next, pr) = (
            fanout.clone(),
            stop.clone(),
            muted.clone(),
            level.clone(),
            stats.clone(),
            next_source.clone(),
            processor.clone(),
        );
        let panic_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("meshcall-audio-send".into())
            .spawn(move || {
                let failed = guard_thread("audio capture and encode", move || {
                    let silence = vec![0f32; AUDIO_FRAME];
                    let mut clock_us = super::source::media_clock_us();
                    while !st.load(Ordering::Relaxed) {
                        if let Some(s) = next.take() {
                            source = s;
                            lock(&ss).source_error = None;
                        }
                        let mut pcm = match source.next_frame() {
                            Ok(p) => p,
                            Err(e) => {
                                warn!(error = %e, "audio source ended; waiting for another");
                                lock(&ss).source_error = Some(e.to_string());
                                lv.store(0f32.to_bits(), Ordering::Relaxed);
                                match next.wait(&st) {
                                    Some(s) => {
                                        next.put(s);
                                        continue;
                                    }
                                    None => break,
                                }
                            }
                        };
                        // Echo cancellation, noise suppression, gain: before the level (what is
                        // sent) and the encoder.
                        let p = lock(&pr).clone();
                        if let Some(p) = p {
                            let mut p = lock(&p);
                            for_each_10ms(&mut pcm, |c| p.process_capture(c));
                        }
                        let rms = (pcm.iter().map(|x| x * x).sum::<f32>()
                            / pcm.len().max(1) as f32)
                            .sqrt();
                        lv.store(rms.to_bits(), Ordering::Relaxed);
                        meter.add(if mu.load(Ordering::Relaxed) { 0.0 } else { rms });
                        let now_us = super::source::media_clock_us();
                        // Timestamp from a running 20 ms clock so RTP timestamps stay regular.
                        clock_us = if now_us.abs_diff(clock_us) > 200_000 {
                            now_us
                        } else {
                            clock_us + 20_000
                        };
                        if f.ready_legs() == 0 {
                            continue;
                        }
                        let input = if mu.load(Ordering::Relaxed) {
                            &silence
                        } else {
                            &pcm
                        };
                        match encoder.encode(input) {
                            Ok(packet) => {
                                lock(&ss).frames_encoded += 1;
                                f.publish(EncodedSample {
                                    data: Bytes::from(packet),
                                    capture_us: clock_us,
                                    duration: Duration::from_millis(20),
                                    keyframe: true,
                                    rung: Rung::High,
                                });
                            }
                            Err(e) => warn!(error = %e, "opus encode failed"),
                        }
                    }
                });
                if let Err(why) = failed {
                    lock(&panic_stats).failed = Some(why);
                }
            })
            .map_err(|e| MediaError::Device {
                kind: "audio encoder",
                detail: e.to_string(),
            })?;
        Ok(AudioSender {
            core: SendCore {
                fanout,
                stop,
                stats,
                thread: Mutex::new(Some(thread)),
                kind: RtpCodecKind::Audio,
            },
            muted,
            level,
            next_source,
            processor,
            sent_level,
        })
    }

    /// The level of what was sent (after processing; silence while muted) since the last call,
    /// dBFS.
    pub fn take_sent_level_dbfs(&self) -> f64 {
        self.sent_level.take_dbfs()
    }

    /// Processes the microphone with `processor` (echo cancellation etc.; its far end is fed by
    /// the mixer's render tap), or stops processing.
    pub fn set_processor(&self, processor: Option<SharedProcessor>) {
        *lock(&self.processor) = processor;
    }

    /// Switches to another microphone (see [`VideoSender::replace_source`]).
    pub fn replace_source(&self, source: Box<dyn AudioSource>) {
        self.next_source.put(source);
    }

    /// Mute sends silence (the track and its RTP clock keep running).
    pub fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
    }

    /// RMS level of the last captured 20 ms (after processing, before mute), for the UI's meter.
    pub fn level(&self) -> f32 {
        f32::from_bits(self.level.load(Ordering::Relaxed))
    }
}

impl std::ops::Deref for AudioSender {
    type Target = SendCore;

    fn deref(&self) -> &SendCore {
        &self.core
    }
}

impl std::ops::DerefMut for AudioSender {
    fn deref_mut(&mut self) -> &mut SendCore {
        &mut self.core
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downscale_halves_and_keeps_content() {
        let mut src = crate::media::synthetic::SyntheticVideo::new(1280, 720).expect("source");
        let f = src.next_frame(42);
        let d = downscale_half(&f);
        assert_eq!((d.width, d.height, d.capture_us), (640, 360, 42));
        assert_eq!(d.u.len(), 320 * 180);
        // a box filter keeps the mean brightness
        let mean = |p: &[u8]| p.iter().map(|&x| u64::from(x)).sum::<u64>() / p.len() as u64;
        assert!(mean(&f.y).abs_diff(mean(&d.y)) <= 2);
    }

    /// A source that fails after `n` frames (an unplugged camera).
    struct Failing(crate::media::synthetic::SyntheticVideoSource, u32);

    impl VideoSource for Failing {
        fn name(&self) -> &str {
            "failing"
        }

        fn next_frame(&mut self) -> Result<I420Frame, MediaError> {
            if self.1 == 0 {
                return Err(MediaError::DeviceLost {
                    kind: "camera",
                    detail: "unplugged".into(),
                });
            }
            self.1 -= 1;
            self.0.next_frame()
        }
    }

    /// A source with a bug: it panics after `n` frames.
    struct Panicking<S>(S, u32);

    impl VideoSource for Panicking<crate::media::synthetic::SyntheticVideoSource> {
        fn name(&self) -> &str {
            "panicking"
        }

        fn next_frame(&mut self) -> Result<I420Frame, MediaError> {
            if self.1 == 0 {
                panic!("video source bug");
            }
            self.1 -= 1;
            self.0.next_frame()
        }
    }

    impl AudioSource for Panicking<crate::media::synthetic::SyntheticAudioSource> {
        fn name(&self) -> &str {
            "panicking"
        }

        fn next_frame(&mut self) -> Result<Vec<f32>, MediaError> {
            if self.1 == 0 {
                panic!("audio source bug");
            }
            self.1 -= 1;
            self.0.next_frame()
        }
    }

    fn wait_failed(stats: impl Fn() -> SendStats) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(why) = stats().failed {
                return why;
            }
            assert!(Instant::now() < deadline, "the failure was never recorded");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A bug that panics in a send thread ends that pipeline only: the panic is caught, the
    /// stats say which stage died and why (the engine tells the user), and stopping the
    /// pipeline afterwards does not hang.
    #[test]
    fn a_panic_in_a_send_pipeline_is_recorded_not_silent() {
        use crate::media::synthetic::{SyntheticAudioSource, SyntheticVideoSource};
        let v = VideoSender::start(
            Box::new(Panicking(
                SyntheticVideoSource::new(320, 240, 30.0).expect("source"),
                5,
            )),
            TrackSpec::unique("camera-video", "p"),
            VideoSendSettings::default(),
        )
        .expect("sender");
        let why = wait_failed(|| v.stats());
        assert!(why.starts_with("video capture and encode"), "{why}");
        assert!(why.contains("video source bug"), "{why}");
        let a = AudioSender::start(
            Box::new(Panicking(SyntheticAudioSource::default(), 5)),
            TrackSpec::unique("camera-audio", "p"),
            32_000,
        )
        .expect("sender");
        let why = wait_failed(|| a.stats());
        assert!(why.contains("audio source bug"), "{why}");
        let started = Instant::now();
        drop(v);
        drop(a);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "stopping did not hang"
        );
    }

    fn wait_preview(v: &VideoSender, f: impl Fn(&DecodedFrame) -> bool) -> Arc<DecodedFrame> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(p) = v.preview()
                && f(&p)
            {
                return p;
            }
            assert!(Instant::now() < deadline, "the preview never matched");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn replacing_the_source_switches_the_picture_on_the_same_track_and_revives_a_dead_one() {
        use crate::media::synthetic::SyntheticVideoSource;
        let small = SyntheticVideoSource::new(320, 240, 30.0).expect("source");
        let v = VideoSender::start(
            Box::new(Failing(small, 15)),
            TrackSpec::unique("camera-video", "s"),
            VideoSendSettings::default(),
        )
        .expect("sender");
        let track = v.track_id().to_string();
        wait_preview(&v, |p| p.frame.width == 320);
        // The source dies: the sender waits for another instead of ending.
        let deadline = Instant::now() + Duration::from_secs(5);
        while v.stats().source_error.is_none() {
            assert!(Instant::now() < deadline, "the failure was not reported");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            v.preview().is_none(),
            "no stale picture after the device is gone"
        );
        v.replace_source(Box::new(
            SyntheticVideoSource::new(640, 480, 30.0).expect("source"),
        ));
        let p = wait_preview(&v, |p| p.frame.width == 640);
        assert_eq!((p.frame.width, p.frame.height), (640, 480));
        assert_eq!(v.stats().source_error, None);
        assert_eq!(v.track_id(), track, "same track: nothing to renegotiate");
        // And a live switch back.
        v.replace_source(Box::new(
            SyntheticVideoSource::new(320, 180, 30.0).expect("source"),
        ));
        wait_preview(&v, |p| p.frame.height == 180);
        v.stop_shared();
    }
}
