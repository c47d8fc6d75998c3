//! RTP → H.264 access units, sans-IO (issue 4 §5).
//!
//! webrtc-rs' `SampleBuilder` releases a frame only when the next one starts, which costs a whole
//! frame interval (33 ms at 30 fps) of latency. This assembler completes a frame on its marker
//! bit instead, and tolerates the reordering that NACK retransmissions cause: packets are kept
//! per RTP timestamp (up to [`MAX_PENDING_FRAMES`]) and a frame is released once its sequence
//! range is contiguous from its head to its marker. A frame that can no longer complete (a newer
//! frame completed first, or it aged out) is a loss: the assembler then withholds everything up
//! to the next keyframe and asks for one, so the decoder never sees a broken reference chain.

use std::collections::BTreeMap;

use bytes::Bytes;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;

/// Frames in flight before the oldest incomplete one is declared lost.
pub const MAX_PENDING_FRAMES: usize = 4;
/// Packets per frame above which a frame is refused (a 1080p IDR is ~100 packets).
const MAX_PACKETS_PER_FRAME: usize = 2_000;

/// What the assembler produced for one packet.
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
    /// Arrival order of the frame (to age frames out).
    order: u64,
}

#[derive(Default)]
pub struct H264Assembler {
    frames: BTreeMap<u32, PendingFrame>,
    /// Extended sequence of the last released frame's marker.
    last_released_marker: Option<u64>,
    last_released_ts: Option<u32>,
    highest_seq: Option<u64>,
    waiting_for_key: bool,
    arrivals: u64,
    /// Packets that arrived after their frame was already released or dropped.
    pub late_packets: u64,
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
            ..Default::default()
        }
    }

    /// No keyframe seen since the start or the last loss.
    pub fn waiting_for_keyframe(&self) -> bool {
        self.waiting_for_key
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

    /// Feeds one RTP packet; returns what became ready.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: Bytes,
    ) -> Vec<AssemblerOutput> {
        let mut out = Vec::new();
        let ext = self.extend(seq);
        if self.last_released_marker.is_some_and(|m| ext <= m) {
            self.late_packets += 1;
            return out;
        }
        self.arrivals += 1;
        let order = self.arrivals;
        let frame = self
            .frames
            .entry(timestamp)
            .or_insert_with(|| PendingFrame {
                order,
                ..Default::default()
            });
        if frame.packets.len() >= MAX_PACKETS_PER_FRAME {
            return out;
        }
        frame.packets.insert(ext, payload);
        if marker {
            frame.marker = Some(ext);
        }
        // Release every frame that is now complete, oldest first.
        while let Some(ts) = self.next_complete() {
            let Some(frame) = self.frames.remove(&ts) else {
                break;
            };
            // Older pending frames can no longer be released in order: they are lost.
            let Some(marker_seq) = frame.marker else {
                break;
            };
            let stale: Vec<u32> = self
                .frames
                .iter()
                .filter(|(_, f)| f.packets.keys().next().is_some_and(|&s| s < marker_seq))
                .map(|(&t, _)| t)
                .collect();
            for t in stale {
                self.frames.remove(&t);
                self.frames_lost += 1;
                self.lost(&mut out);
            }
            let gap = self
                .last_released_marker
                .is_some_and(|m| frame.packets.keys().next().is_some_and(|&s| s != m + 1));
            if gap {
                self.frames_lost += 1;
                self.lost(&mut out);
            }
            self.last_released_marker = Some(marker_seq);
            self.last_released_ts = Some(ts);
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
                    self.lost(&mut out);
                }
            }
        }
        // Age out: too many frames in flight means the oldest will never complete.
        while self.frames.len() > MAX_PENDING_FRAMES {
            let Some((&ts, _)) = self.frames.iter().min_by_key(|(_, f)| f.order) else {
                break;
            };
            if let Some(f) = self.frames.remove(&ts)
                && let Some(&last) = f.packets.keys().next_back()
            {
                self.last_released_marker =
                    Some(self.last_released_marker.map_or(last, |m| m.max(last)));
            }
            self.frames_lost += 1;
            self.lost(&mut out);
        }
        out
    }

    /// Signals a loss once per keyframe wait.
    fn lost(&mut self, out: &mut Vec<AssemblerOutput>) {
        if !self.waiting_for_key {
            self.waiting_for_key = true;
            out.push(AssemblerOutput::NeedKeyframe);
        }
    }

    /// The oldest frame whose packets run contiguously from its head to its marker, and whose
    /// head follows the last released frame (or is a partition head when nothing was released).
    fn next_complete(&self) -> Option<u32> {
        let mut best: Option<(u64, u32)> = None;
        for (&ts, f) in &self.frames {
            let Some(marker) = f.marker else { continue };
            let Some((&first, head)) = f.packets.iter().next() else {
                continue;
            };
            let contiguous = (marker + 1).checked_sub(first) == Some(f.packets.len() as u64)
                && f.packets.keys().next_back() == Some(&marker);
            if !contiguous {
                continue;
            }
            let starts_right = match self.last_released_marker {
                Some(m) => first == m + 1 || H264Packet::default().is_partition_head(head),
                None => H264Packet::default().is_partition_head(head),
            };
            if !starts_right {
                continue;
            }
            if best.is_none_or(|(s, _)| first < s) {
                best = Some((first, ts));
            }
        }
        best.map(|(_, ts)| ts)
    }
}

fn depacketize(frame: &PendingFrame) -> Option<Bytes> {
    let mut depack = H264Packet::default();
    let mut buf = Vec::new();
    for payload in frame.packets.values() {
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
        let mut a = H264Assembler::new();
        let mut dec = crate::media::h264::H264Decoder::new().expect("dec");
        let mut released = 0;
        for (seq, ts, m, p) in pkts {
            for o in a.push(seq, ts, m, p) {
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
        let mut a = H264Assembler::new();
        let mut got = 0;
        for (seq, ts, m, p) in pkts {
            let (f, lost) = frames(a.push(seq, ts, m, p));
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
        let mut a = H264Assembler::new();
        let mut keyframe_requests = 0;
        let mut released_ts = Vec::new();
        for (seq, ts, m, p) in pkts {
            if seq == drop_seq {
                continue;
            }
            for o in a.push(seq, ts, m, p) {
                match o {
                    AssemblerOutput::Frame { rtp_timestamp, .. } => released_ts.push(rtp_timestamp),
                    AssemblerOutput::NeedKeyframe => keyframe_requests += 1,
                }
            }
        }
        assert_eq!(keyframe_requests, 1);
        // frame 0 (IDR) out; frames 1..=5 withheld (1 lost, 2..5 reference it); the IDR resumes
        assert_eq!(released_ts, vec![0, 6 * 3000]);
        assert!(a.frames_lost >= 1);
    }

    #[test]
    fn garbage_payloads_never_panic() {
        let mut a = H264Assembler::new();
        for i in 0..500u16 {
            let junk = Bytes::from(vec![(i % 256) as u8; (i % 40) as usize]);
            let _ = a.push(i.wrapping_mul(7919), u32::from(i / 3), i % 3 == 2, junk);
        }
        assert!(a.frames.len() <= MAX_PENDING_FRAMES);
    }
}
