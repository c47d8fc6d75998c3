//! RTP → H.264 access units, sans-IO: packets and the current time go in, complete frames and
//! keyframe requests come out.
//!
//! webrtc-rs' `SampleBuilder` releases a frame only when the next one starts, which costs a whole
//! frame interval (33 ms at 30 fps) of latency. This assembler completes a frame on its marker
//! bit instead, and releases frames strictly in sequence order.
//!
//! Loss and repair: when a packet is missing (a later one has arrived), the frames behind the
//! hole are held for up to the *repair wait* (about one round trip plus two NACK intervals),
//! because the NACK generator asks the sender for the missing packet and the retransmission
//! usually arrives well within that. A frame that is repaired in time is released as if nothing
//! happened. Only when the wait runs out is the hole a loss: every frame up to the next keyframe
//! is then withheld (each P-frame references the one before it, so the decoder would show a
//! broken picture) and a keyframe is requested. A frame still arriving without any hole (a large
//! keyframe paced over a slow link) is never timed out.
//!
//! Memory is bounded: at most [`MAX_PENDING_FRAMES`] frames and [`MAX_PENDING_PACKETS`] packets
//! wait; beyond that the oldest hole is given up at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;

/// Frames held behind a hole before the oldest is declared lost whatever the wait.
pub const MAX_PENDING_FRAMES: usize = 64;
/// Packets held behind a hole before the oldest is declared lost whatever the wait.
pub const MAX_PENDING_PACKETS: usize = 4_096;
/// Packets per frame above which a frame is refused (a 1080p IDR is ~100 packets).
const MAX_PACKETS_PER_FRAME: usize = 2_000;
/// A packet this far behind the last released one is a restarted stream, not a late packet
/// (twice the NACK history: no retransmission can be that old).
const RESTART_DISTANCE: u64 = 2_048;
/// How long a hole may wait for its retransmission. With the NACK generator asking every
/// 20 ms, that is about ten attempts on a short path and three or four at a 100 ms round trip:
/// at 20 % loss on both the request and the retransmission (each attempt succeeds with
/// p = 0.64) a packet is still missing after it once in ~10 000. Measured on loopback at 20 %
/// loss, 120 ms left a frame unrepaired every few seconds (a 0.65 s freeze while a keyframe
/// came); 200 ms did not. Frames wait only behind an unrepaired hole, so the cost is latency
/// during loss, not in a clean call.
pub const DEFAULT_REPAIR_WAIT: Duration = Duration::from_millis(200);

/// What the assembler produced.
#[derive(Debug, PartialEq)]
pub enum AssemblerOutput {
    /// A complete Annex-B access unit.
    Frame {
        data: Bytes,
        rtp_timestamp: u32,
        keyframe: bool,
    },
    /// A frame was lost; ask the sender for a keyframe.
    NeedKeyframe,
}

#[derive(Default)]
struct PendingFrame {
    /// Extended sequence number → payload.
    packets: BTreeMap<u64, Bytes>,
    marker: Option<u64>,
    /// When its first packet (in arrival order) came.
    arrived: Option<Instant>,
}

impl PendingFrame {
    fn first(&self) -> Option<u64> {
        self.packets.keys().next().copied()
    }

    fn last(&self) -> Option<u64> {
        self.packets.keys().next_back().copied()
    }

    /// Contiguous from its first packet to its marker, with nothing after the marker.
    fn complete(&self) -> bool {
        match (self.marker, self.first()) {
            (Some(m), Some(f)) => {
                (m + 1).checked_sub(f) == Some(self.packets.len() as u64) && self.last() == Some(m)
            }
            _ => false,
        }
    }

    /// A packet is missing between its first and last packet.
    fn has_inner_hole(&self) -> bool {
        match (self.first(), self.last()) {
            (Some(f), Some(l)) => l - f + 1 > self.packets.len() as u64,
            _ => false,
        }
    }

    fn starts_with_partition_head(&self) -> bool {
        self.packets
            .values()
            .next()
            .is_some_and(|p| H264Packet::default().is_partition_head(p))
    }
}

#[derive(Default)]
pub struct H264Assembler {
    /// Pending frames by RTP timestamp.
    frames: BTreeMap<u32, PendingFrame>,
    pending_packets: usize,
    /// Extended sequence of the last released (or given-up) frame's last packet.
    last_released_marker: Option<u64>,
    highest_seq: Option<u64>,
    waiting_for_key: bool,
    repair_wait: Duration,
    /// Packets that arrived after their frame was already released or given up.
    pub late_packets: u64,
    /// Packets that filled a hole in time (retransmissions, reordering).
    pub repaired_packets: u64,
    pub frames_lost: u64,
}

/// True if the Annex-B unit holds an IDR slice or an SPS (a decoder can start here).
pub fn is_keyframe(annexb: &[u8]) -> bool {
    let mut i = 0;
    while i + 3 < annexb.len() {
        if annexb[i] == 0 && annexb[i + 1] == 0 && annexb[i + 2] == 1 {
            let t = annexb[i + 3] & 0x1f;
            if t == 5 || t == 7 {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

impl H264Assembler {
    /// Starts withholding until the first keyframe (a decoder cannot start on a P-frame).
    pub fn new() -> H264Assembler {
        H264Assembler {
            waiting_for_key: true,
            repair_wait: DEFAULT_REPAIR_WAIT,
            ..Default::default()
        }
    }

    /// How long a hole waits for its retransmission before it counts as a loss.
    pub fn set_repair_wait(&mut self, wait: Duration) {
        self.repair_wait = wait;
    }

    pub fn repair_wait(&self) -> Duration {
        self.repair_wait
    }

    /// No keyframe seen since the start or the last loss.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.waiting_for_key
    }

    /// When [`Self::handle_timeout`] must be called next (a hole's repair wait runs out).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.stalled_since().map(|t| t + self.repair_wait)
    }

    /// Gives up on holes whose wait has run out.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<AssemblerOutput> {
        let mut out = Vec::new();
        self.release(now, &mut out);
        out
    }

    /// Extends a 16-bit sequence number to 64 bits relative to the highest one seen.
    fn extend(&mut self, seq: u16) -> u64 {
        match self.highest_seq {
            None => {
                let e = (1u64 << 32) + u64::from(seq);
                self.highest_seq = Some(e);
                e
            }
            Some(h) => {
                let base = h & !0xffff;
                let candidates = [base.wrapping_sub(0x1_0000), base, base + 0x1_0000];
                let e = candidates
                    .into_iter()
                    .map(|b| b + u64::from(seq))
                    .min_by_key(|c| c.abs_diff(h))
                    .unwrap_or(base + u64::from(seq));
                if e > h {
                    self.highest_seq = Some(e);
                }
                e
            }
        }
    }

    /// Feeds one RTP packet received at `now`; returns what became ready.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: Bytes,
        now: Instant,
    ) -> Vec<AssemblerOutput> {
        let mut out = Vec::new();
        let before = self.highest_seq;
        let mut ext = self.extend(seq);
        if self
            .last_released_marker
            .is_some_and(|m| ext + RESTART_DISTANCE < m)
        {
            // Far behind anything reordering or a retransmission could explain: the sender
            // restarted its sequence. Start over (at a keyframe) instead of discarding minutes of
            // packets as late until the numbers catch up.
            self.restart();
            ext = self.extend(seq);
        }
        if self.last_released_marker.is_some_and(|m| ext <= m) {
            self.late_packets += 1;
            return out;
        }
        let frame = self.frames.entry(timestamp).or_default();
        frame.arrived.get_or_insert(now);
        if frame.packets.len() >= MAX_PACKETS_PER_FRAME || frame.packets.contains_key(&ext) {
            return out;
        }
        frame.packets.insert(ext, payload);
        self.pending_packets += 1;
        if marker {
            frame.marker = Some(ext);
        }
        if before.is_some_and(|h| ext < h) {
            self.repaired_packets += 1;
        }
        self.release(now, &mut out);
        out
    }

    /// Forgets the stream's position and everything pending (counters are kept).
    fn restart(&mut self) {
        self.frames.clear();
        self.pending_packets = 0;
        self.last_released_marker = None;
        self.highest_seq = None;
        self.waiting_for_key = true;
    }

    /// The pending frame holding the lowest sequence number.
    fn lowest(&self) -> Option<(u32, u64)> {
        self.frames
            .iter()
            .filter_map(|(&ts, f)| f.first().map(|s| (ts, s)))
            .min_by_key(|&(_, s)| s)
    }

    /// Whether the oldest pending frame follows the last released one without a gap.
    fn in_order(&self, frame: &PendingFrame) -> bool {
        match (self.last_released_marker, frame.first()) {
            (Some(m), Some(first)) => first == m + 1,
            (None, _) => frame.starts_with_partition_head(),
            (Some(_), None) => false,
        }
    }

    /// When the hole blocking the oldest pending frame was first seen, if one blocks it: the
    /// arrival of the first packet after the hole. A frame still arriving with nothing missing
    /// is not blocked.
    fn stalled_since(&self) -> Option<Instant> {
        let (ts, _) = self.lowest()?;
        let frame = self.frames.get(&ts)?;
        if !self.in_order(frame) || frame.has_inner_hole() {
            return frame.arrived;
        }
        if frame.complete() {
            return None;
        }
        // In order, nothing missing inside, no marker yet: blocked only if later frames have
        // started (its tail is missing); the hole showed with the first of them.
        self.frames
            .iter()
            .filter(|&(&t, _)| t != ts)
            .filter_map(|(_, f)| f.arrived)
            .min()
    }

    /// Releases every frame that can go, in order, and gives up holes whose wait ran out.
    fn release(&mut self, now: Instant, out: &mut Vec<AssemblerOutput>) {
        while let Some((ts, _)) = self.lowest() {
            let Some(frame) = self.frames.get(&ts) else {
                break;
            };
            if self.in_order(frame) && frame.complete() {
                self.emit(ts, out);
                continue;
            }
            let overflow = self.frames.len() > MAX_PENDING_FRAMES
                || self.pending_packets > MAX_PENDING_PACKETS;
            let expired = self
                .stalled_since()
                .is_some_and(|since| now >= since + self.repair_wait);
            if !overflow && !expired {
                break;
            }
            let skip_to = (frame.complete() && frame.starts_with_partition_head())
                .then(|| frame.first())
                .flatten();
            self.frames_lost += 1;
            self.lost(out);
            if let Some(first) = skip_to {
                // The hole lies before this whole frame: skip the hole, keep the frame (it is
                // shown if it is a keyframe).
                self.last_released_marker = Some(first - 1);
                continue;
            }
            // Give up on the oldest frame: what it misses is not coming in time.
            if let Some(f) = self.frames.remove(&ts) {
                self.pending_packets -= f.packets.len();
                if let Some(last) = f.last() {
                    self.last_released_marker =
                        Some(self.last_released_marker.map_or(last, |m| m.max(last)));
                }
            }
        }
    }

    /// Removes a complete frame and hands it out (or withholds it while waiting for a key).
    fn emit(&mut self, ts: u32, out: &mut Vec<AssemblerOutput>) {
        let Some(frame) = self.frames.remove(&ts) else {
            return;
        };
        self.pending_packets -= frame.packets.len();
        self.last_released_marker = frame.marker.or(frame.last());
        match depacketize(&frame) {
            Some(data) => {
                let keyframe = is_keyframe(&data);
                if keyframe {
                    self.waiting_for_key = false;
                }
                if !self.waiting_for_key {
                    out.push(AssemblerOutput::Frame {
                        data,
                        rtp_timestamp: ts,
                        keyframe,
                    });
                }
            }
            None => {
                self.frames_lost += 1;
                self.lost(out);
            }
        }
    }

    /// Signals a loss once per keyframe wait.
    fn lost(&mut self, out: &mut Vec<AssemblerOutput>) {
        if !self.waiting_for_key {
            self.waiting_for_key = true;
            out.push(AssemblerOutput::NeedKeyframe);
        }
    }
}

/// Whether a payload is safe to hand to rtc-rtp's depacketizer. It indexes a STAP-A's length
/// fields without checking that both bytes are there (a peer sending `18 00 00 00` panics it),
/// so aggregation packets are walked here first.
fn well_formed(payload: &[u8]) -> bool {
    const STAP_A: u8 = 24;
    match payload.first().map(|b| b & 0x1f) {
        None => false,
        Some(STAP_A) => {
            let mut off = 1;
            while off < payload.len() {
                let Some(len) = payload.get(off..off + 2) else {
                    return false;
                };
                off += 2 + (usize::from(len[0]) << 8 | usize::from(len[1]));
            }
            off == payload.len()
        }
        Some(_) => true,
    }
}

fn depacketize(frame: &PendingFrame) -> Option<Bytes> {
    let mut depack = H264Packet::default();
    let mut buf = Vec::new();
    for payload in frame.packets.values() {
        if !well_formed(payload) {
            return None;
        }
        match depack.depacketize(payload) {
            Ok(b) => buf.extend_from_slice(&b),
            Err(_) => return None,
        }
    }
    (!buf.is_empty()).then(|| Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::packetizer::Payloader;

    /// Packetizes real encoder output with the same payloader webrtc-rs sends with.
    fn packets_of(frames: &[Vec<u8>], mtu: usize) -> Vec<(u16, u32, bool, Bytes)> {
        let mut p = rtc::rtp::codec::h264::H264Payloader::default();
        let mut out = Vec::new();
        let mut seq: u16 = 65_530; // wraps within the test
        for (i, f) in frames.iter().enumerate() {
            let payloads = p.payload(mtu, &Bytes::from(f.clone())).expect("payload");
            let n = payloads.len();
            for (k, pl) in payloads.into_iter().enumerate() {
                out.push((seq, (i as u32) * 3000, k + 1 == n, pl));
                seq = seq.wrapping_add(1);
            }
        }
        out
    }

    fn encoded(n: usize) -> Vec<Vec<u8>> {
        let mut src = crate::media::synthetic::SyntheticVideo::new(320, 240).expect("src");
        let mut enc =
            crate::media::h264::H264Encoder::new(crate::media::h264::EncoderSettings::default())
                .expect("enc");
        (0..n)
            .map(|i| enc.encode(&src.next_frame(i as u64)).expect("encode"))
            .filter(|au| !au.is_empty())
            .collect()
    }

    fn frames(out: Vec<AssemblerOutput>) -> (usize, usize) {
        let f = out
            .iter()
            .filter(|o| matches!(o, AssemblerOutput::Frame { .. }))
            .count();
        (f, out.len() - f)
    }

    #[test]
    fn in_order_packets_release_each_frame_on_its_marker_and_decode() {
        let aus = encoded(10);
        let pkts = packets_of(&aus, 400);
        let t0 = Instant::now();
        let mut a = H264Assembler::new();
        let mut dec = crate::media::h264::H264Decoder::new().expect("dec");
        let mut released = 0;
        for (seq, ts, m, p) in pkts {
            for o in a.push(seq, ts, m, p, t0) {
                match o {
                    AssemblerOutput::Frame { data, keyframe, .. } => {
                        assert_eq!(keyframe, released == 0);
                        assert!(dec.decode(&data).expect("decode").is_some());
                        released += 1;
                    }
                    AssemblerOutput::NeedKeyframe => panic!("no loss here"),
                }
            }
            // released exactly on the marker, never held for the next frame
            if m {
                assert_eq!(released, (ts / 3000) as usize + 1);
            }
        }
        assert_eq!(released, aus.len());
    }

    #[test]
    fn reordered_packets_within_a_frame_still_complete() {
        let aus = encoded(3);
        let mut pkts = packets_of(&aus, 300);
        // swap two packets of the first frame (a NACK retransmission arriving late)
        pkts.swap(1, 3);
        let t0 = Instant::now();
        let mut a = H264Assembler::new();
        let mut got = 0;
        for (seq, ts, m, p) in pkts {
            let (f, lost) = frames(a.push(seq, ts, m, p, t0));
            assert_eq!(lost, 0);
            got += f;
        }
        assert_eq!(got, 3);
    }

    #[test]
    fn a_lost_packet_asks_for_a_keyframe_and_withholds_until_one_arrives() {
        let mut aus = encoded(6);
        // frame 3 is forced to be a keyframe by encoding a fresh stream: use a new encoder's IDR
        let idr = encoded(1).remove(0);
        aus.push(idr);
        let pkts = packets_of(&aus, 300);
        let drop_seq = pkts
            .iter()
            .find(|(_, ts, _, _)| *ts == 3000)
            .map(|x| x.0)
            .expect("frame 1");
        let t0 = Instant::now();
        let mut a = H264Assembler::new();
        let mut keyframe_requests = 0;
        let mut released_ts = Vec::new();
        let mut record = |out: Vec<AssemblerOutput>| {
            for o in out {
                match o {
                    AssemblerOutput::Frame { rtp_timestamp, .. } => released_ts.push(rtp_timestamp),
                    AssemblerOutput::NeedKeyframe => keyframe_requests += 1,
                }
            }
        };
        for (seq, ts, m, p) in pkts {
            if seq == drop_seq {
                continue;
            }
            record(a.push(seq, ts, m, p, t0));
        }
        // Held for the retransmission; given up only when the repair wait runs out.
        let deadline = a.poll_timeout().expect("a hole is waiting");
        assert_eq!(deadline, t0 + DEFAULT_REPAIR_WAIT);
        record(a.handle_timeout(deadline - Duration::from_millis(1)));
        record(a.handle_timeout(deadline));
        assert_eq!(keyframe_requests, 1);
        // frame 0 (IDR) out; frames 1..=5 withheld (1 lost, 2..5 reference it); the IDR resumes
        assert_eq!(released_ts, vec![0, 6 * 3000]);
        assert!(a.frames_lost >= 1);
    }

    #[test]
    fn garbage_payloads_never_panic() {
        let t0 = Instant::now();
        let mut a = H264Assembler::new();
        for i in 0..500u16 {
            let junk = Bytes::from(vec![(i % 256) as u8; (i % 40) as usize]);
            let _ = a.push(
                i.wrapping_mul(7919),
                u32::from(i / 3),
                i % 3 == 2,
                junk,
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert!(a.frames.len() <= MAX_PENDING_FRAMES + 1);
        let _ = a.handle_timeout(t0 + Duration::from_secs(10));
        assert!(a.frames.is_empty(), "every hole is given up in the end");
    }

    #[test]
    fn a_retransmission_within_the_wait_repairs_the_hole_without_a_keyframe() {
        let aus = encoded(6);
        let pkts = packets_of(&aus, 300);
        let lost = pkts
            .iter()
            .position(|(_, ts, _, _)| *ts == 2 * 3000)
            .expect("frame 2");
        let t0 = Instant::now();
        let mut a = H264Assembler::new();
        let mut released = Vec::new();
        let mut requests = 0;
        let mut take = |out: Vec<AssemblerOutput>, released: &mut Vec<u32>| {
            for o in out {
                match o {
                    AssemblerOutput::Frame { rtp_timestamp, .. } => released.push(rtp_timestamp),
                    AssemblerOutput::NeedKeyframe => requests += 1,
                }
            }
        };
        for (i, (seq, ts, m, p)) in pkts.iter().cloned().enumerate() {
            if i != lost {
                take(a.push(seq, ts, m, p, t0), &mut released);
            }
        }
        assert_eq!(released, vec![0, 3000], "frames behind the hole are held");
        // The retransmission arrives 80 ms later, inside the wait.
        let (seq, ts, m, p) = pkts[lost].clone();
        take(
            a.push(seq, ts, m, p, t0 + Duration::from_millis(80)),
            &mut released,
        );
        assert_eq!(released, (0..6).map(|i| i * 3000).collect::<Vec<u32>>());
        assert_eq!(requests, 0);
        assert_eq!(a.repaired_packets, 1);
        assert_eq!(a.frames_lost, 0);
        assert_eq!(a.poll_timeout(), None);
    }

    #[test]
    fn a_frame_still_arriving_without_a_hole_never_times_out() {
        let aus = encoded(2);
        let pkts = packets_of(&aus, 200);
        let t0 = Instant::now();
        let mut a = H264Assembler::new();
        let first = pkts.iter().filter(|(_, ts, _, _)| *ts == 0).count();
        assert!(first > 2, "the keyframe spans several packets");
        // Half of the keyframe, then a long pause (a slow, paced link).
        for (seq, ts, m, p) in pkts.iter().take(first / 2).cloned() {
            assert!(a.push(seq, ts, m, p, t0).is_empty());
        }
        assert_eq!(a.poll_timeout(), None);
        assert!(a.handle_timeout(t0 + Duration::from_secs(5)).is_empty());
        let mut out = Vec::new();
        for (seq, ts, m, p) in pkts.iter().skip(first / 2).cloned() {
            out.extend(a.push(seq, ts, m, p, t0 + Duration::from_secs(5)));
        }
        let (f, lost) = frames(out);
        assert_eq!((f, lost), (2, 0));
    }

    #[test]
    fn a_retransmission_after_the_wait_is_late_and_a_whole_lost_frame_is_skipped() {
        // Frame 1 vanishes entirely; the keyframe that follows must still be shown.
        let mut aus = encoded(3);
        aus.push(encoded(1).remove(0));
        let pkts = packets_of(&aus, 300);
        let t0 = Instant::now();
        let mut a = H264Assembler::new();
        let mut released = Vec::new();
        let mut requests = 0;
        for (seq, ts, m, p) in pkts.iter().cloned() {
            if ts == 3000 {
                continue;
            }
            for o in a.push(seq, ts, m, p, t0) {
                match o {
                    AssemblerOutput::Frame { rtp_timestamp, .. } => released.push(rtp_timestamp),
                    AssemblerOutput::NeedKeyframe => requests += 1,
                }
            }
        }
        for o in a.handle_timeout(t0 + DEFAULT_REPAIR_WAIT) {
            match o {
                AssemblerOutput::Frame { rtp_timestamp, .. } => released.push(rtp_timestamp),
                AssemblerOutput::NeedKeyframe => requests += 1,
            }
        }
        assert_eq!(released, vec![0, 9000], "frame 2 referenced the lost one");
        assert_eq!(requests, 1);
        let (seq, ts, m, p) = pkts
            .iter()
            .find(|(_, ts, _, _)| *ts == 3000)
            .cloned()
            .expect("frame 1");
        assert!(
            a.push(seq, ts, m, p, t0 + Duration::from_secs(1))
                .is_empty()
        );
        assert_eq!(a.late_packets, 1);
    }

    #[test]
    fn a_stap_a_with_one_trailing_byte_is_a_loss_not_a_panic() {
        // A peer's crafted aggregation packet: STAP-A, one empty NAL unit, one stray byte.
        let t0 = Instant::now();
        let mut a = H264Assembler::new();
        let out = a.push(1, 0, true, Bytes::from_static(&[0x18, 0, 0, 0]), t0);
        assert!(
            out.iter()
                .all(|o| !matches!(o, AssemblerOutput::Frame { .. })),
            "{out:?}"
        );
        // The stream goes on: a valid keyframe after it is still assembled.
        let aus = encoded(1);
        let mut got = 0;
        for (k, (_, ts, m, p)) in packets_of(&aus, 300).into_iter().enumerate() {
            let out = a.push(2 + k as u16, ts + 3000, m, p, t0);
            got += frames(out).0;
        }
        assert_eq!(got, 1);
    }

    #[test]
    fn random_payloads_of_every_nal_type_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let t0 = Instant::now();
        let mut a = H264Assembler::new();
        for i in 0..50_000u32 {
            let len = rng.random_range(0..24usize);
            let mut p: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if let Some(b) = p.first_mut() {
                *b = (*b & 0xe0) | (i % 32) as u8;
            }
            let seq: u16 = rng.random();
            let ts: u32 = rng.random_range(0..64);
            let now = t0 + Duration::from_millis(u64::from(i / 10));
            let _ = a.push(seq, ts, rng.random_bool(0.3), Bytes::from(p), now);
            if i % 100 == 0 {
                let _ = a.handle_timeout(now);
            }
        }
        assert!(a.frames.len() <= MAX_PENDING_FRAMES + 1);
    }

    #[test]
    fn a_sequence_jump_backwards_is_a_restart_not_minutes_of_late_packets() {
        // A sender that restarts its stream (new encoder, same SSRC) picks a new random
        // sequence start; here 20 000 behind the old one.
        let t0 = Instant::now();
        let mut a = H264Assembler::new();
        let aus = encoded(4);
        let mut released = 0;
        for (k, (_, ts, m, p)) in packets_of(&aus, 300).into_iter().enumerate() {
            released += frames(a.push(30_000 + k as u16, ts, m, p, t0)).0;
        }
        assert_eq!(released, 4);
        let aus = encoded(4);
        let mut after = 0;
        for (k, (_, ts, m, p)) in packets_of(&aus, 300).into_iter().enumerate() {
            after += frames(a.push(10_000 + k as u16, ts + 90_000, m, p, t0)).0;
        }
        assert_eq!(after, 4, "the restarted stream is assembled at once");
    }

    mod property {
        use super::super::*;
        use proptest::prelude::*;

        /// A payload whose first byte is any NAL type (0–31, with random NRI/F bits), including
        /// STAP-A (24), FU-A (28) and the types the depacketizer refuses, then random bytes.
        fn payload() -> impl Strategy<Value = Vec<u8>> {
            (
                0u8..32,
                0u8..8,
                proptest::collection::vec(any::<u8>(), 0..64),
            )
                .prop_map(|(nal, high, rest)| {
                    let mut v = vec![(high << 5) | nal];
                    v.extend(rest);
                    v
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]
            /// Random sequence numbers, timestamps, markers and payloads, with timeouts in
            /// between: the assembler never panics and never releases an access unit the
            /// decoder could not at least try (every released frame is non-empty Annex-B).
            #[test]
            fn random_rtp_never_panics(
                packets in proptest::collection::vec(
                    (any::<u16>(), any::<u32>(), any::<bool>(), payload(), 0u64..300),
                    1..60,
                ),
            ) {
                let mut a = H264Assembler::new();
                let mut now = Instant::now();
                for (seq, ts, marker, payload, advance_ms) in packets {
                    now += Duration::from_millis(advance_ms);
                    let mut out = a.push(seq, ts, marker, Bytes::from(payload), now);
                    if a.poll_timeout().is_some_and(|t| t <= now) {
                        out.extend(a.handle_timeout(now));
                    }
                    for o in out {
                        if let AssemblerOutput::Frame { data, .. } = o {
                            prop_assert!(!data.is_empty());
                        }
                    }
                }
            }

            /// Runs of consecutive sequence numbers (what a real but hostile sender produces),
            /// where the interesting paths (FU-A start/end, STAP-A lengths) are reached.
            #[test]
            fn consecutive_hostile_packets_never_panic(
                start in any::<u16>(),
                packets in proptest::collection::vec((any::<bool>(), payload()), 1..80),
            ) {
                let mut a = H264Assembler::new();
                let now = Instant::now();
                for (i, (marker, payload)) in packets.into_iter().enumerate() {
                    let _ = a.push(start.wrapping_add(i as u16), (i as u32 / 3) * 3000, marker, Bytes::from(payload), now);
                }
                let _ = a.handle_timeout(now + Duration::from_secs(1));
            }
        }
    }
}
