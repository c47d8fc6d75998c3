//! RTX retransmissions (RFC 4588) turned back into the packets they repair, at the wire side of
//! the NACK generator.
//!
//! With RTX negotiated (as Chromium offers it) a retransmission arrives on its own SSRC and
//! payload type, with the original sequence number in its first two payload bytes. webrtc-rs
//! unwraps it only on the way to the application, after the interceptor chain; the NACK
//! generator therefore never learns that the packet it asked for has arrived and keeps asking
//! (up to its per-packet limit: ten retransmissions of every lost packet), and the receiver
//! reports count the repaired packet as lost. This interceptor restores the original packet
//! right after SRTP, before any of them: original SSRC, payload type and sequence number, the
//! payload without the two-byte prefix. Padding-only RTX packets (a browser's bandwidth probes)
//! carry nothing to repair and are dropped here.
//!
//! A packet is unwrapped only when its SSRC and payload type are exactly a bound stream's RTX
//! pair, and a truncated one is dropped, so a peer cannot use this to inject into another
//! stream.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;

/// The chain position: wire side of the NACK generator (7 000), application side of the FEC
/// decoder (6 000), so every NACK, report and TWCC interceptor sees the unwrapped packet.
pub(crate) const RTX_UNWRAP_SLOT: usize = 6_500;

static UNWRAPPED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Retransmissions received over RTX and restored, by every connection of this process (a
/// diagnostic and test observable: it shows RTX really was negotiated and used).
pub fn unwrapped_total() -> u64 {
    UNWRAPPED_TOTAL.load(Ordering::Relaxed)
}

/// Where an RTX SSRC's packets belong.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Primary {
    ssrc: u32,
    payload_type: u8,
    rtx_payload_type: u8,
}

#[derive(Default)]
pub(crate) struct RtxUnwrap {
    /// RTX SSRC → the stream it repairs.
    repairs: HashMap<u32, Primary>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
    /// Retransmissions unwrapped, and RTX packets dropped (padding or malformed).
    pub(crate) unwrapped: u64,
    pub(crate) dropped: u64,
}

impl RtxUnwrap {
    /// Rewrites an RTX packet in place; false if it must be dropped.
    fn unwrap_rtx(&mut self, p: &mut rtc::rtp::Packet) -> Option<bool> {
        let primary = *self.repairs.get(&p.header.ssrc)?;
        if p.header.payload_type != primary.rtx_payload_type {
            return None;
        }
        if p.payload.len() <= 2 {
            return Some(false);
        }
        let osn = u16::from_be_bytes([p.payload[0], p.payload[1]]);
        p.payload = p.payload.slice(2..);
        p.header.ssrc = primary.ssrc;
        p.header.payload_type = primary.payload_type;
        p.header.sequence_number = osn;
        p.header.padding = false;
        Some(true)
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtxUnwrap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtp(p) = &mut msg.message.packet {
            match self.unwrap_rtx(p) {
                Some(true) => {
                    self.unwrapped += 1;
                    UNWRAPPED_TOTAL.fetch_add(1, Ordering::Relaxed);
                }
                Some(false) => {
                    self.dropped += 1;
                    return Ok(());
                }
                None => {}
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for RtxUnwrap {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if let (Some(rtx), Some(rtx_pt)) = (info.ssrc_rtx, info.payload_type_rtx)
            && rtx != info.ssrc
        {
            self.repairs.insert(
                rtx,
                Primary {
                    ssrc: info.ssrc,
                    payload_type: info.payload_type,
                    rtx_payload_type: rtx_pt,
                },
            );
        }
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.repairs.remove(&rtx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;

    fn rtp(ssrc: u32, pt: u8, seq: u16, payload: &'static [u8]) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    ssrc,
                    payload_type: pt,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload: Bytes::from_static(payload),
            })),
        }
    }

    fn read_one(u: &mut RtxUnwrap, p: TaggedPacket) -> Option<rtc::rtp::Packet> {
        u.handle_read(p).expect("read");
        match u.poll_read()?.message.packet {
            Packet::Rtp(p) => Some(p),
            _ => None,
        }
    }

    fn bound() -> RtxUnwrap {
        let mut u = RtxUnwrap::default();
        u.bind_remote_stream(&StreamInfo {
            ssrc: 1000,
            ssrc_rtx: Some(2000),
            payload_type: 125,
            payload_type_rtx: Some(107),
            ..Default::default()
        });
        u
    }

    #[test]
    fn a_retransmission_becomes_the_packet_it_repairs() {
        let mut u = bound();
        let p = read_one(&mut u, rtp(2000, 107, 7, &[0x12, 0x34, 0xaa, 0xbb])).expect("kept");
        assert_eq!(p.header.ssrc, 1000);
        assert_eq!(p.header.payload_type, 125);
        assert_eq!(p.header.sequence_number, 0x1234);
        assert_eq!(&p.payload[..], &[0xaa, 0xbb]);
        assert_eq!(u.unwrapped, 1);
    }

    #[test]
    fn padding_and_truncated_rtx_are_dropped_and_other_packets_pass_untouched() {
        let mut u = bound();
        assert!(read_one(&mut u, rtp(2000, 107, 8, &[])).is_none());
        assert!(read_one(&mut u, rtp(2000, 107, 9, &[0x12, 0x34])).is_none());
        assert_eq!(u.dropped, 2);
        // The media stream itself, an unknown SSRC, and the RTX SSRC with another PT.
        for (ssrc, pt) in [(1000, 125), (3000, 107), (2000, 125)] {
            let p = read_one(&mut u, rtp(ssrc, pt, 5, &[1, 2, 3])).expect("passes");
            assert_eq!(
                (
                    p.header.ssrc,
                    p.header.payload_type,
                    p.header.sequence_number
                ),
                (ssrc, pt, 5)
            );
            assert_eq!(&p.payload[..], &[1, 2, 3]);
        }
        u.unbind_remote_stream(&StreamInfo {
            ssrc: 1000,
            ssrc_rtx: Some(2000),
            ..Default::default()
        });
        let p = read_one(&mut u, rtp(2000, 107, 7, &[0x12, 0x34, 0xaa])).expect("passes");
        assert_eq!(p.header.ssrc, 2000, "no longer unwrapped once unbound");
    }
}
