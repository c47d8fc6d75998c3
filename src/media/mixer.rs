//! The audio receive side: RTP → [`AudioJitterBuffer`] per remote stream (reorders, conceals
//! losses with Opus PLC) → [`Mixer`] → one playout thread writing 20 ms blocks to an
//! [`AudioSink`], paced by the sink's own clock when it reports its queue (a speaker), by a
//! 20 ms timer otherwise. The echo canceller's far-end tap sits between the mix and the sink.

use super::supervise::{guard_task, guard_thread};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use super::MediaError;
use super::audio::OpusDecoder;
use super::processing::{FRAME_10MS, LevelMeter, SharedProcessor};
use super::source::{AUDIO_FRAME, AudioSink};

/// Audio the playout keeps queued in a clocked sink (a speaker) beyond the device's own buffer,
/// at first: enough to ride out ordinary scheduling delays, small enough to add little to
/// mouth-to-ear latency (and to the echo path). [`PlayoutTarget`] raises it on a machine where
/// the device runs dry.
pub const PLAYOUT_QUEUE_MS: u32 = 40;
/// A clocked sink whose queue has not drained for this long is treated as stalled.
const SINK_STALL: Duration = Duration::from_millis(500);
/// The longest local cue the mixer takes (1 s).
const MAX_CUE_SAMPLES: usize = 48_000;
/// The most the playout queue grows to on a machine that keeps starving the device.
pub const PLAYOUT_QUEUE_MAX_MS: u32 = 200;
/// Underruns within this long after a sink starts are its start-up, not a busy machine.
const PLAYOUT_GRACE: Duration = Duration::from_secs(1);
/// A raised target comes down by 10 ms after this long without an underrun.
const PLAYOUT_QUIET: Duration = Duration::from_secs(20);

/// How much audio to keep queued in the speaker, sans-IO: starts at [`PLAYOUT_QUEUE_MS`], goes
/// up by 20 ms (to [`PLAYOUT_QUEUE_MAX_MS`]) each time the device ran dry, and back down by
/// 10 ms after each quiet `PLAYOUT_QUIET`. A gap in the played audio is heard, and it also
/// moves the echo path under the echo canceller; a longer queue costs only latency.
#[derive(Debug)]
pub struct PlayoutTarget {
    target_ms: u32,
    underruns: u64,
    started: Instant,
    last_change: Instant,
}

impl PlayoutTarget {
    pub fn new(now: Instant) -> PlayoutTarget {
        PlayoutTarget {
            target_ms: PLAYOUT_QUEUE_MS,
            underruns: 0,
            started: now,
            last_change: now,
        }
    }

    /// A new sink: its underrun count starts again, the target stays what it learned.
    pub fn restart(&mut self, now: Instant) {
        self.underruns = 0;
        self.started = now;
    }

    /// The target for this block, given the sink's total underrun count so far.
    pub fn update(&mut self, underruns: u64, now: Instant) -> u32 {
        let new = underruns.saturating_sub(self.underruns);
        self.underruns = underruns;
        if new > 0 && now.duration_since(self.started) >= PLAYOUT_GRACE {
            if self.target_ms < PLAYOUT_QUEUE_MAX_MS {
                self.target_ms = (self.target_ms + 20).min(PLAYOUT_QUEUE_MAX_MS);
                debug!(
                    target_ms = self.target_ms,
                    "speaker ran dry: longer playout queue"
                );
            }
            self.last_change = now;
        } else if self.target_ms > PLAYOUT_QUEUE_MS
            && now.duration_since(self.last_change) >= PLAYOUT_QUIET
        {
            self.target_ms = (self.target_ms - 10).max(PLAYOUT_QUEUE_MS);
            self.last_change = now;
        }
        self.target_ms
    }
}
use crate::peer::remote_peer::RemoteTrack;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

/// One remote stream as the network side sees it: its jitter buffer (locked briefly by `push`
/// and by the playout thread taking a packet) and its level. The Opus decoder is not here: it
/// belongs to the playout thread, so decoding never holds a lock that `push` needs.
struct MixerInput {
    id: u64,
    jitter: Arc<Mutex<AudioJitterBuffer>>,
    /// RMS of the last 20 ms played, as `f32` bits.
    level: Arc<AtomicU32>,
    /// The same, accumulated between stats reads.
    meter: Arc<LevelMeter>,
    /// Playback volume (linear, 0–2), as `f32` bits: the user's per-participant slider.
    gain: Arc<AtomicU32>,
}

/// The playout thread's own state for one stream: the decoder and decoded samples not yet
/// played (a 40 or 60 ms packet fills two or three blocks).
struct Playing {
    decoder: OpusDecoder,
    pending: VecDeque<f32>,
}

/// Mixes every remote audio stream and plays it on one sink in 20 ms blocks, paced by the
/// sink's clock when it has one (see [`AudioSink::queued_ms`]), by a timer otherwise.
pub struct Mixer {
    inputs: Mutex<Vec<MixerInput>>,
    next_id: AtomicU64,
    stop: AtomicBool,
    played_frames: AtomicU64,
    /// Times the current sink played silence for want of queued audio.
    sink_underruns: AtomicU64,
    /// The playout queue target now (ms), see [`PlayoutTarget`].
    queue_target_ms: AtomicU32,
    /// Why the current sink stopped taking audio (unplugged), until another is set.
    sink_error: Mutex<Option<String>>,
    /// Local sounds (join/leave cues) still to play, mixed over the remote audio. Bounded.
    cue: Mutex<VecDeque<f32>>,
    cues_played: AtomicU64,
    /// Last output block (for tests and the level meter).
    last_block: Mutex<Vec<f32>>,
    /// A speaker to switch to at the next 20 ms tick.
    next_sink: Mutex<Option<Box<dyn AudioSink>>>,
    /// The echo canceller's far-end input: every block exactly as it goes to the speaker.
    render_tap: Mutex<Option<SharedProcessor>>,
    /// Set when the playout thread or a receive task panicked (a bug): remote audio stops.
    failed: Mutex<Option<String>>,
}

impl Mixer {
    /// Starts the playout thread writing to `sink`.
    pub fn start(sink: Box<dyn AudioSink>) -> Result<(Arc<Mixer>, JoinHandle<()>), MediaError> {
        let mixer = Arc::new(Mixer {
            inputs: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            stop: AtomicBool::new(false),
            played_frames: AtomicU64::new(0),
            sink_underruns: AtomicU64::new(0),
            queue_target_ms: AtomicU32::new(PLAYOUT_QUEUE_MS),
            sink_error: Mutex::new(None),
            cue: Mutex::new(VecDeque::new()),
            cues_played: AtomicU64::new(0),
            last_block: Mutex::new(Vec::new()),
            next_sink: Mutex::new(None),
            render_tap: Mutex::new(None),
            failed: Mutex::new(None),
        });
        let m = mixer.clone();
        let handle = std::thread::Builder::new()
            .name("meshcall-audio-playout".into())
            .spawn(move || {
                let mixer = m.clone();
                if let Err(why) = guard_thread("audio playout", move || m.playout(sink)) {
                    *lock(&mixer.failed) = Some(why);
                }
            })
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
        let mut playing: HashMap<u64, Playing> = HashMap::new();
        // After a sink failure (device unplugged) mixing goes on, so levels, active speaker and
        // jitter buffers keep working, and the output is discarded until a new sink arrives.
        let mut sink_ok = true;
        let mut target = PlayoutTarget::new(Instant::now());
        let mut waiting_since: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(s) = lock(&self.next_sink).take() {
                sink = s; // the old one closes here
                sink_ok = true;
                target.restart(Instant::now());
            }
            // A sink with its own clock (a sound card) sets the pace: mix the next block only
            // when its queue is below the target. Its clock and the system's drift apart, so a
            // timer alone either fills the queue (latency grows to its cap, then samples the
            // echo canceller saw as played are dropped) or lets it run dry.
            let mut clocked = if sink_ok { sink.queued_ms() } else { None };
            let underruns = sink.underruns();
            let target_ms = target.update(underruns, Instant::now());
            self.sink_underruns.store(underruns, Ordering::Relaxed);
            self.queue_target_ms.store(target_ms, Ordering::Relaxed);
            if let Some(queued) = clocked {
                if queued < target_ms {
                    waiting_since = None;
                } else if waiting_since.get_or_insert_with(Instant::now).elapsed() < SINK_STALL {
                    let wait = (queued - target_ms + 1).min(20);
                    std::thread::sleep(Duration::from_millis(u64::from(wait)));
                    continue;
                } else {
                    // The device stopped taking audio without an error: mixing must go on
                    // (levels, jitter buffers), on the timer, until it drains again; the sink
                    // drops what does not fit.
                    clocked = None;
                }
            }
            block.iter_mut().for_each(|s| *s = 0.0);
            // Who is playing: a cheap snapshot, so the lock is not held while decoding.
            type Input = (
                u64,
                Arc<Mutex<AudioJitterBuffer>>,
                Arc<AtomicU32>,
                Arc<LevelMeter>,
                f32,
            );
            let inputs: Vec<Input> = lock(&self.inputs)
                .iter()
                .map(|i| {
                    let gain = f32::from_bits(i.gain.load(Ordering::Relaxed));
                    (
                        i.id,
                        i.jitter.clone(),
                        i.level.clone(),
                        i.meter.clone(),
                        gain,
                    )
                })
                .collect();
            playing.retain(|id, _| inputs.iter().any(|(i, ..)| i == id));
            for (id, jitter, level, meter, gain) in &inputs {
                let p = match playing.entry(*id) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => match OpusDecoder::new() {
                        Ok(decoder) => e.insert(Playing {
                            decoder,
                            pending: VecDeque::new(),
                        }),
                        Err(err) => {
                            warn!(error = %err, "no Opus decoder for a remote stream");
                            continue;
                        }
                    },
                };
                while p.pending.len() < AUDIO_FRAME {
                    let next = lock(jitter).pop();
                    let pcm = match next {
                        JitterOutput::Packet(pkt) => p.decoder.decode(&pkt).ok(),
                        JitterOutput::Lost => p.decoder.decode(&[]).ok(),
                        JitterOutput::Empty => break,
                    };
                    // Bounded: at most 120 ms per packet (Opus' largest frame).
                    p.pending.extend(pcm.unwrap_or_default());
                }
                if p.pending.is_empty() {
                    let l = f32::from_bits(level.load(Ordering::Relaxed)) * 0.5;
                    level.store(l.to_bits(), Ordering::Relaxed);
                    meter.add(0.0);
                    continue;
                }
                let mut sq = 0f32;
                for o in block.iter_mut() {
                    let Some(s) = p.pending.pop_front() else {
                        break;
                    };
                    // The level (speaking ring, stats) is the participant's, before volume.
                    *o += s * gain;
                    sq += s * s;
                }
                let rms = (sq / AUDIO_FRAME as f32).sqrt();
                level.store(rms.to_bits(), Ordering::Relaxed);
                meter.add(rms);
            }
            {
                let mut cue = lock(&self.cue);
                let n = cue.len().min(AUDIO_FRAME);
                for (o, s) in block.iter_mut().zip(cue.drain(..n)) {
                    *o += s;
                }
            }
            block.iter_mut().for_each(|s| *s = s.clamp(-1.0, 1.0));
            // The far end for echo cancellation: what is played, after mixing and volume.
            let tap = lock(&self.render_tap).clone();
            if let Some(p) = tap {
                let mut p = lock(&p);
                for c in block.chunks_exact(FRAME_10MS) {
                    p.process_render(c);
                }
            }
            if sink_ok && let Err(e) = sink.play(&block) {
                warn!(error = %e, "audio sink failed; discarding output until another is chosen");
                *lock(&self.sink_error) = Some(e.to_string());
                sink_ok = false;
            }
            *lock(&self.last_block) = block.clone();
            self.played_frames.fetch_add(1, Ordering::Relaxed);
            if clocked.is_some() {
                next = Instant::now() + tick;
                continue; // the check at the top waits for the device
            }
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
                next += tick;
            } else {
                next = now + tick; // fell behind (suspend, overload): do not burst
            }
        }
    }

    /// Feeds every played block to `processor` as the far end (echo cancellation), or stops.
    pub fn set_render_tap(&self, processor: Option<SharedProcessor>) {
        *lock(&self.render_tap) = processor;
    }

    /// Adds one remote stream; returns its id for [`Mixer::push`] and [`Mixer::level`].
    pub fn add_input(&self) -> Result<u64, MediaError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.inputs).push(MixerInput {
            id,
            jitter: Arc::new(Mutex::new(AudioJitterBuffer::new(3, 25))),
            level: Arc::new(AtomicU32::new(0f32.to_bits())),
            meter: Arc::new(LevelMeter::default()),
            gain: Arc::new(AtomicU32::new(1f32.to_bits())),
        });
        Ok(id)
    }

    pub fn remove_input(&self, id: u64) {
        lock(&self.inputs).retain(|i| i.id != id);
    }

    pub fn push(&self, id: u64, seq: u16, payload: Bytes) {
        let jitter = lock(&self.inputs)
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.jitter.clone());
        if let Some(j) = jitter {
            lock(&j).push(seq, payload);
        }
    }

    /// One input's playback volume: 0 (silent) to 2 (+6 dB), clamped.
    pub fn set_gain(&self, id: u64, gain: f32) {
        let gain = if gain.is_finite() {
            gain.clamp(0.0, 2.0)
        } else {
            1.0
        };
        if let Some(i) = lock(&self.inputs).iter().find(|i| i.id == id) {
            i.gain.store(gain.to_bits(), Ordering::Relaxed);
        }
    }

    /// One input's decoded level since the last call (dBFS), for stats.
    pub fn take_level_dbfs(&self, id: u64) -> f64 {
        lock(&self.inputs)
            .iter()
            .find(|i| i.id == id)
            .map_or(-120.0, |i| i.meter.take_dbfs())
    }

    /// RMS level of one input's last 20 ms (for the speaking ring and active speaker).
    pub fn level(&self, id: u64) -> f32 {
        lock(&self.inputs)
            .iter()
            .find(|i| i.id == id)
            .map_or(0.0, |i| f32::from_bits(i.level.load(Ordering::Relaxed)))
    }

    /// How often the current speaker ran dry, and how much audio the playout now keeps queued
    /// for it (ms).
    pub fn playout_health(&self) -> (u64, u32) {
        (
            self.sink_underruns.load(Ordering::Relaxed),
            self.queue_target_ms.load(Ordering::Relaxed),
        )
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
        *lock(&self.sink_error) = None;
        *lock(&self.next_sink) = Some(sink);
    }

    /// Why the speaker stopped (unplugged, sound server gone), until another one is set.
    pub fn sink_error(&self) -> Option<String> {
        lock(&self.sink_error).clone()
    }

    /// Plays a short local sound over the call (a join or leave cue). It goes through the
    /// echo canceller's far-end tap like everything else played. A cue arriving while one
    /// plays replaces the rest of it (a burst of joins is one sound, not a queue of them).
    pub fn play_cue(&self, samples: &[f32]) {
        let mut cue = lock(&self.cue);
        cue.clear();
        cue.extend(samples.iter().take(MAX_CUE_SAMPLES).copied());
        self.cues_played.fetch_add(1, Ordering::Relaxed);
    }

    /// Cues played since the mixer started.
    /// Why remote audio stopped, if a stage of it panicked.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failed).clone()
    }

    pub fn cues_played(&self) -> u64 {
        self.cues_played.load(Ordering::Relaxed)
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
            let mixer = m.clone();
            let receive = async move {
                while let Some(p) = rtp.recv().await {
                    count.fetch_add(1, Ordering::Relaxed);
                    m.push(id, p.header.sequence_number, p.payload);
                }
            };
            if let Err(why) = guard_task("remote audio receive", receive).await {
                *lock(&mixer.failed) = Some(why);
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

    /// This participant's playback volume (0–2).
    pub fn set_gain(&self, gain: f32) {
        self.mixer.set_gain(self.id, gain);
    }

    /// The decoded level since the last call, dBFS.
    pub fn take_level_dbfs(&self) -> f64 {
        self.mixer.take_level_dbfs(self.id)
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

    /// Two participants with the same tone; one at 200 %, then at 0 %: the mix follows, and
    /// the per-participant level (speaking ring) does not.
    #[test]
    fn per_participant_volume_scales_only_that_participant_in_the_mix() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mixer, handle) = Mixer::start(Box::new(Recorder(out.clone()))).expect("mixer");
        let (a, b) = (mixer.add_input().expect("a"), mixer.add_input().expect("b"));
        let mut encs = [
            crate::media::audio::OpusEncoder::new(32_000).expect("enc"),
            crate::media::audio::OpusEncoder::new(32_000).expect("enc"),
        ];
        let mut tone = crate::media::synthetic::SyntheticAudio::default();
        let mut rms_of_phase = Vec::new();
        let mut seq = 0u16;
        for gain_a in [1.0f32, 2.0, 0.0] {
            mixer.set_gain(a, gain_a);
            lock(&out).clear();
            for _ in 0..40 {
                let pcm = tone.next_samples(AUDIO_FRAME);
                for (id, enc) in [a, b].into_iter().zip(encs.iter_mut()) {
                    mixer.push(id, seq, Bytes::from(enc.encode(&pcm).expect("encode")));
                }
                seq = seq.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(20));
            }
            let rec = lock(&out).clone();
            let tail = &rec[rec.len() / 2..];
            rms_of_phase.push(
                (tail.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / tail.len() as f64)
                    .sqrt(),
            );
            assert!(
                mixer.level(a) > 0.01,
                "a's own level is unaffected by its volume"
            );
        }
        mixer.stop();
        let _ = handle.join();
        // Both at 100 %: 2×; a at 200 %: 3×; a at 0 %: 1× (b alone).
        let (both, loud, muted) = (rms_of_phase[0], rms_of_phase[1], rms_of_phase[2]);
        assert!((loud / both - 1.5).abs() < 0.15, "{loud} vs {both}");
        assert!((muted / both - 0.5).abs() < 0.1, "{muted} vs {both}");
    }

    #[test]
    fn mixer_plays_sixty_ms_packets_whole_and_at_their_pitch() {
        // Browsers may send 40 or 60 ms Opus packets (ptime); each must play in full.
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mixer, handle) = Mixer::start(Box::new(Recorder(out.clone()))).expect("mixer");
        let id = mixer.add_input().expect("input");
        let mut enc =
            opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).expect("enc");
        let mut tone = crate::media::synthetic::SyntheticAudio::default();
        for seq in 0..20u16 {
            let pcm = tone.next_samples(3 * AUDIO_FRAME);
            let mut packet = vec![0u8; 4000];
            let n = enc.encode_float(&pcm, &mut packet).expect("encode");
            packet.truncate(n);
            mixer.push(id, seq, Bytes::from(packet));
            if seq >= 2 {
                std::thread::sleep(Duration::from_millis(60));
            }
        }
        std::thread::sleep(Duration::from_millis(400));
        mixer.stop();
        let _ = handle.join();
        let rec = lock(&out).clone();
        let loud_blocks = rec
            .chunks(AUDIO_FRAME)
            .filter(|b| b.iter().any(|s| s.abs() > 0.05))
            .count();
        // 20 packets × 60 ms = 60 blocks of sound (a few lost to start-up and the beep gaps).
        assert!(loud_blocks >= 50, "{loud_blocks} of 60 blocks had sound");
        let start = rec
            .iter()
            .position(|s| s.abs() > 0.05)
            .expect("sound played");
        let part = &rec[start + 4_800..(start + 40_000).min(rec.len())];
        let f = crate::media::audio::dominant_frequency(part, 48_000);
        assert!((f - 440.0).abs() < 5.0, "{f} Hz");
    }

    /// A speaker stand-in with its own sample clock: it plays `rate` × real time out of a
    /// 250 ms queue, drops what does not fit and counts the silence it had to play.
    struct ClockedSink {
        rate: f64,
        queue: f64,
        last: Instant,
        dropped: Arc<AtomicU64>,
        starved: Arc<AtomicU64>,
        max_queue_ms: Arc<AtomicU64>,
    }
    impl ClockedSink {
        fn advance(&mut self) {
            let now = Instant::now();
            let due = now.duration_since(self.last).as_secs_f64() * 48_000.0 * self.rate;
            self.last = now;
            if due > self.queue {
                self.starved
                    .fetch_add((due - self.queue) as u64, Ordering::Relaxed);
                self.queue = 0.0;
            } else {
                self.queue -= due;
            }
        }
    }
    impl AudioSink for ClockedSink {
        fn name(&self) -> &str {
            "clocked"
        }
        fn play(&mut self, s: &[f32]) -> Result<usize, MediaError> {
            self.advance();
            let room = (12_000.0 - self.queue).max(0.0) as usize;
            let taken = s.len().min(room);
            self.dropped
                .fetch_add((s.len() - taken) as u64, Ordering::Relaxed);
            self.queue += taken as f64;
            self.max_queue_ms
                .fetch_max((self.queue / 48.0) as u64, Ordering::Relaxed);
            Ok(taken)
        }
        fn queued_ms(&mut self) -> Option<u32> {
            self.advance();
            Some((self.queue / 48.0) as u32)
        }
    }

    /// The speaker's clock, not the mixer's timer, sets the pace: a device 10 % slower or
    /// faster than the system clock neither fills its queue (latency, and dropped samples the
    /// echo canceller believed were played) nor runs dry.
    #[test]
    fn playout_follows_the_speakers_clock_without_drops_or_growing_latency() {
        for rate in [0.9, 1.1] {
            let (dropped, starved, max_queue_ms) = (
                Arc::new(AtomicU64::new(0)),
                Arc::new(AtomicU64::new(0)),
                Arc::new(AtomicU64::new(0)),
            );
            let sink = ClockedSink {
                rate,
                queue: 0.0,
                last: Instant::now(),
                dropped: dropped.clone(),
                starved: starved.clone(),
                max_queue_ms: max_queue_ms.clone(),
            };
            let (mixer, handle) = Mixer::start(Box::new(sink)).expect("mixer");
            std::thread::sleep(Duration::from_millis(300));
            let starved_at_start = starved.load(Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(3));
            mixer.stop();
            let _ = handle.join();
            let (dropped, starved, max_queue_ms) = (
                dropped.load(Ordering::Relaxed),
                starved.load(Ordering::Relaxed) - starved_at_start,
                max_queue_ms.load(Ordering::Relaxed),
            );
            assert_eq!(dropped, 0, "device at {rate}×: samples dropped");
            assert!(
                max_queue_ms <= u64::from(PLAYOUT_QUEUE_MS) + 25,
                "device at {rate}×: queue reached {max_queue_ms} ms"
            );
            // At most one 20 ms block of silence over 3 s (scheduling hiccups).
            assert!(
                starved <= 960,
                "device at {rate}×: {starved} samples of silence played"
            );
        }
    }

    #[test]
    fn playout_target_grows_on_underruns_after_start_up_and_shrinks_when_quiet() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut t = PlayoutTarget::new(t0);
        assert_eq!(
            t.update(3, at(500)),
            PLAYOUT_QUEUE_MS,
            "start-up underruns do not count"
        );
        assert_eq!(t.update(3, at(1_500)), PLAYOUT_QUEUE_MS);
        assert_eq!(t.update(4, at(2_000)), PLAYOUT_QUEUE_MS + 20);
        assert_eq!(t.update(6, at(2_020)), PLAYOUT_QUEUE_MS + 40);
        for i in 0..20 {
            t.update(6 + i, at(3_000 + i * 100));
        }
        assert_eq!(t.update(30, at(6_000)), PLAYOUT_QUEUE_MAX_MS, "capped");
        assert_eq!(
            t.update(30, at(25_000)),
            PLAYOUT_QUEUE_MAX_MS,
            "not quiet long enough"
        );
        assert_eq!(t.update(30, at(26_000)), PLAYOUT_QUEUE_MAX_MS - 10);
        assert_eq!(t.update(30, at(46_000)), PLAYOUT_QUEUE_MAX_MS - 20);
        // A new sink counts from zero, with a new grace period, and keeps what was learned.
        t.restart(at(50_000));
        assert_eq!(t.update(2, at(50_500)), PLAYOUT_QUEUE_MAX_MS - 20);
    }

    #[test]
    fn a_cue_plays_once_whole_and_at_its_pitch() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mixer, handle) = Mixer::start(Box::new(Recorder(out.clone()))).expect("mixer");
        std::thread::sleep(Duration::from_millis(100));
        let cue = crate::media::cues::Cue::Joined.samples();
        mixer.play_cue(&cue);
        std::thread::sleep(Duration::from_millis(600));
        mixer.stop();
        let _ = handle.join();
        let rec = lock(&out).clone();
        let start = rec
            .iter()
            .position(|s| s.abs() > 0.01)
            .expect("the cue played");
        let played = &rec[start..];
        let loud = played.iter().filter(|s| s.abs() > 0.01).count();
        // Once, whole: about 220 ms of sound (the fades are quieter), then silence.
        assert!((8_000..=10_600).contains(&loud), "{loud} loud samples");
        let f = crate::media::audio::dominant_frequency(&played[600..4_800], 48_000);
        assert!((f - 660.0).abs() < 15.0, "{f} Hz");
        assert!(
            played[12_000..].iter().all(|s| s.abs() < 1e-6),
            "silence after the cue"
        );
        assert_eq!(mixer.cues_played(), 1);
    }

    /// A speaker that stops taking audio without reporting an error does not stop the mixing
    /// (levels and jitter buffers go on, on the timer).
    #[test]
    fn a_stalled_speaker_does_not_stop_the_mixing() {
        let counter = || Arc::new(AtomicU64::new(0));
        let sink = ClockedSink {
            rate: 0.0,
            queue: 0.0,
            last: Instant::now(),
            dropped: counter(),
            starved: counter(),
            max_queue_ms: counter(),
        };
        let (mixer, handle) = Mixer::start(Box::new(sink)).expect("mixer");
        std::thread::sleep(Duration::from_secs(2));
        let played = mixer.played_frames();
        mixer.stop();
        let _ = handle.join();
        // 2 s of 20 ms blocks, less the 0.5 s of waiting before the stall is recognised.
        assert!(played >= 60, "{played} blocks mixed");
    }
}
