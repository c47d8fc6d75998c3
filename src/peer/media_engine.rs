//! What a connection negotiates and how its RTP/RTCP is processed on the way: the codecs
//! (H.264 constrained baseline and Opus only), and the interceptor chain (NACK and RTX tuned
//! for retransmissions that arrive in time, receiver reports four times a second, the TWCC
//! receiver, and the tap that hands PLI/FIR to the application and records receiver reports
//! about our streams into the connection's `FeedbackTable`). `connection` builds each
//! PeerConnection with these.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Attribute, Interceptor, NackGeneratorBuilder, NackResponderBuilder,
    Packet as InterceptorPacket, ReceiverReportBuilder, SenderReportBuilder, Slot, StreamInfo,
    TaggedPacket,
};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use webrtc::peer_connection::{MediaEngine, Registry};

use super::feedback::FeedbackTable;

/// How often the receiver asks again for packets still missing. The default (100 ms) makes a
/// retransmission arrive after the receiver has given the frame up; 20 ms asks within about a
/// frame interval, and the receiver holds a hole for roughly one round trip plus a few of these
/// intervals (see `media::assembler`). Each missing packet is asked for at most
/// [`NACK_MAX_PER_PACKET`] times, so a packet that will never come costs a bounded amount.
const NACK_INTERVAL: Duration = Duration::from_millis(20);
const NACK_MAX_PER_PACKET: u16 = 10;
/// Packets the receiver tracks for NACK, and the sender keeps for retransmission (powers of
/// two): about 2.5 s of 720p at 1.5 Mbit/s, so a keyframe's packets are still there when asked.
const NACK_RECEIVE_LOG: u16 = 1024;
const NACK_SEND_HISTORY: u16 = 1024;

/// How often we report reception to each sender. Four a second (the default is one) lets a
/// sender on a saturated link cut its rate within a few hundred milliseconds; a report is
/// ~50 bytes per stream.
const RECEIVER_REPORT_INTERVAL: Duration = Duration::from_millis(250);

/// The interceptor chain: NACK (tuned as above), RTCP sender/receiver reports, the TWCC receiver
/// (so a browser sending to us can estimate bandwidth), RTX unwrapping and the keyframe tap. This is
/// `register_default_interceptors` with the NACK and receiver-report timing changed.
pub(super) fn interceptors(
    me: &mut MediaEngine,
    feedback: FeedbackTable,
) -> Result<Registry, rtc::shared::error::Error> {
    let registry = Registry::new()
        .with(
            Slot::NackResponder,
            NackResponderBuilder::new()
                .with_size(NACK_SEND_HISTORY)
                .build(),
        )
        .with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_size(NACK_RECEIVE_LOG)
                .with_interval(NACK_INTERVAL)
                .with_max_nacks_per_packet(NACK_MAX_PER_PACKET)
                .build(),
        );
    configure_simulcast_extension_headers(me)?;
    let registry = configure_twcc_receiver_only(registry, me)?;
    Ok(registry
        .with(
            Slot::ReceiverReport,
            ReceiverReportBuilder::new()
                .with_interval(RECEIVER_REPORT_INTERVAL)
                .build(),
        )
        .with(Slot::SenderReport, SenderReportBuilder::new().build())
        .with(
            Slot::from(super::rtx::RTX_UNWRAP_SLOT),
            super::rtx::RtxUnwrap::default(),
        )
        .with(
            Slot::from(KEYFRAME_TAP_SLOT),
            KeyframeTap {
                feedback,
                ..KeyframeTap::default()
            },
        ))
}

/// Where the keyframe tap sits in the interceptor chain: past every built-in slot, so it sees
/// inbound RTCP after the NACK/report interceptors have taken what they need.
const KEYFRAME_TAP_SLOT: usize = 14_000;

/// Marks inbound PLI/FIR packets for delivery to the application. webrtc-rs 0.21 swallows all
/// RTCP at the end of the chain otherwise, so a sender would never learn that a receiver needs a
/// keyframe. The marked packets arrive on the local track's
/// `poll()` as `TrackLocalEvent::OnRtcpPacket`.
#[derive(Default)]
struct KeyframeTap {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
    /// Where report blocks about our streams go (this connection's own table).
    feedback: FeedbackTable,
    /// The SSRCs we send on this connection: report blocks about anything else are ignored, so
    /// a peer cannot fill the feedback table with strangers' streams.
    local: std::collections::HashSet<u32>,
    /// Report blocks recorded in the current second (and when it started): a peer flooding
    /// reports is cut off at [`REPORT_BLOCKS_PER_SEC`] instead of hammering the shared table.
    budget: (Option<Instant>, u32),
    /// Report blocks ignored for being over the budget.
    dropped_blocks: u64,
}

/// Report blocks per second one connection may feed the rate controller: a receiver reports
/// each of our streams every 250 ms to 1 s (more with a browser's NACK-triggered reports), and
/// at most `MAX_REMOTE_TRACKS` streams go to one peer.
const REPORT_BLOCKS_PER_SEC: u32 = 200;

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let InterceptorPacket::Rtcp(packets) = &msg.message.packet {
            let now = Instant::now();
            for p in packets {
                let blocks = if let Some(rr) = p.as_any().downcast_ref::<ReceiverReport>() {
                    &rr.reports[..]
                } else if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                    &sr.reports[..]
                } else {
                    continue;
                };
                for b in blocks.iter().filter(|b| self.local.contains(&b.ssrc)) {
                    let (start, used) = &mut self.budget;
                    if start
                        .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1))
                    {
                        *start = Some(now);
                        *used = 0;
                    }
                    if *used >= REPORT_BLOCKS_PER_SEC {
                        self.dropped_blocks += 1;
                        continue;
                    }
                    *used += 1;
                    self.feedback.record(
                        b.ssrc,
                        b.fraction_lost,
                        b.total_lost,
                        b.last_sequence_number,
                        b.jitter,
                        now,
                    );
                }
            }
            if packets.iter().any(|p| {
                p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>()
            }) {
                msg.message.add(Attribute::DeliverToApplication);
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

impl Interceptor for KeyframeTap {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.local.insert(info.ssrc);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.local.remove(&info.ssrc);
    }
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

/// Registers exactly the codecs the media layer speaks: Opus, and H.264 constrained
/// baseline with packetization-mode 1 (the profile OpenH264 emits, plus 42001f which decodes the
/// same). Offering VP8/VP9/AV1 would let a browser pick a codec nothing here can decode.
pub(super) fn register_call_codecs(me: &mut MediaEngine) -> Result<(), webrtc::error::Error> {
    use rtc::rtp_transceiver::rtp_sender::{
        RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
    };
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "audio/opus".into(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    let feedback = || {
        [
            ("goog-remb", ""),
            ("ccm", "fir"),
            ("nack", ""),
            ("nack", "pli"),
        ]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback {
            typ: typ.into(),
            parameter: parameter.into(),
        })
        .collect::<Vec<_>>()
    };
    // Each H.264 payload type with its RTX payload type (RFC 4588), as Chromium offers them:
    // retransmissions then travel on their own SSRC (see `super::rtx`).
    for (pt, profile, rtx_pt) in [(125u8, "42e01f", 107u8), (102, "42001f", 103)] {
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "video/H264".into(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!(
                        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"
                    ),
                    rtcp_feedback: feedback(),
                },
                payload_type: pt,
            },
            RtpCodecKind::Video,
        )?;
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "video/rtx".into(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={pt}"),
                    rtcp_feedback: vec![],
                },
                payload_type: rtx_pt,
            },
            RtpCodecKind::Video,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::rtcp::reception_report::ReceptionReport;
    use rtc::shared::TransportContext;

    fn rr(ssrcs: impl Iterator<Item = u32>) -> TaggedPacket {
        let reports = ssrcs
            .map(|ssrc| ReceptionReport {
                ssrc,
                fraction_lost: 255,
                ..Default::default()
            })
            .collect();
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(InterceptorPacket::Rtcp(vec![Box::new(
                ReceiverReport {
                    ssrc: 1,
                    reports,
                    ..Default::default()
                },
            )])),
        }
    }

    #[test]
    fn the_tap_records_reports_only_about_our_own_streams() {
        // A peer sends report blocks about thousands of SSRCs that are not ours: they must not
        // crowd out (or pose as) the reports about streams we actually send.
        let mut tap = KeyframeTap::default();
        tap.bind_local_stream(&StreamInfo {
            ssrc: 0x5eed_0001,
            ..Default::default()
        });
        tap.handle_read(rr((0x7000_0000..0x7000_2000).chain([0x5eed_0001])))
            .expect("read");
        assert!(tap.poll_read().is_some(), "the packet still goes on");
        assert!(tap.feedback.latest(0x5eed_0001).is_some());
        assert_eq!(tap.feedback.latest(0x7000_0010), None);
        tap.unbind_local_stream(&StreamInfo {
            ssrc: 0x5eed_0001,
            ..Default::default()
        });
        tap.handle_read(rr([0x5eed_0002].into_iter()))
            .expect("read");
        assert_eq!(tap.feedback.latest(0x5eed_0002), None);
    }

    /// Whatever RTCP a peer sends (random bytes, or real reports with bytes flipped), the tap
    /// passes the packets on, never panics, and what it records is a loss fraction in 0..=1.
    #[test]
    fn hostile_rtcp_never_panics_the_tap() {
        use proptest::prelude::*;
        use rtc::shared::marshal::Marshal;
        let ours = [0x5eed_0101u32, 0x5eed_0102];
        let valid: Vec<u8> = {
            let packet = ReceiverReport {
                ssrc: 1,
                reports: ours
                    .iter()
                    .map(|&ssrc| ReceptionReport {
                        ssrc,
                        fraction_lost: 30,
                        total_lost: 12,
                        last_sequence_number: 5_000,
                        jitter: 40,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            packet.marshal().map(|b| b.to_vec()).unwrap_or_default()
        };
        assert!(!valid.is_empty(), "a real report to mutate");
        let inputs = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            proptest::collection::vec((0..valid.len(), any::<u8>()), 1..8).prop_map({
                let valid = valid.clone();
                move |flips| {
                    let mut v = valid.clone();
                    for (i, b) in flips {
                        v[i] ^= b;
                    }
                    v
                }
            }),
        ];
        proptest!(ProptestConfig::with_cases(2_000), |(bytes in inputs)| {
            let mut tap = KeyframeTap::default();
            for ssrc in ours {
                tap.bind_local_stream(&StreamInfo { ssrc, ..Default::default() });
            }
            let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut &bytes[..]) else {
                return Ok(());
            };
            let msg = TaggedPacket {
                now: Instant::now(),
                transport: TransportContext::default(),
                message: AttributedPacket::new(InterceptorPacket::Rtcp(packets)),
            };
            prop_assert!(tap.handle_read(msg).is_ok());
            prop_assert!(tap.poll_read().is_some(), "the packet goes on");
            for ssrc in ours {
                if let Some(r) = tap.feedback.latest(ssrc) {
                    prop_assert!((0.0..=1.0).contains(&r.fraction_lost), "{}", r.fraction_lost);
                }
            }
        });
    }

    #[test]
    fn a_peer_flooding_reports_is_cut_off_per_second() {
        let mut tap = KeyframeTap::default();
        tap.bind_local_stream(&StreamInfo {
            ssrc: 0x5eed_0003,
            ..Default::default()
        });
        for _ in 0..1_000 {
            tap.handle_read(rr([0x5eed_0003].into_iter()))
                .expect("read");
            let _ = tap.poll_read();
        }
        assert!(tap.feedback.latest(0x5eed_0003).is_some());
        assert_eq!(
            tap.dropped_blocks,
            1_000 - u64::from(REPORT_BLOCKS_PER_SEC),
            "only the per-second budget is recorded"
        );
    }
}
