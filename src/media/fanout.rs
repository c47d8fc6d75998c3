//! The fan-out half of a send pipeline: one encoder's samples go to one *leg* per peer
//! connection.
//!
//! Why this shape: webrtc-rs binds a track to one connection, so each connection gets its own
//! `TrackLocalStaticSample` (a leg), but the picture is encoded once. A leg joins the fan-out
//! only when its connection is up and the payload type is negotiated, and it then skips to the
//! next keyframe (requested on joining): no media before the connection is up, and the first
//! frame a peer gets is decodable. A slow connection drops whole frames from its own bounded
//! queue and waits for a keyframe; it never stalls the encoder or the other peers. The capture
//! and encode side is in `send`.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters,
    RtpCodecKind,
};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::RTCStatsReportEntry;
use webrtc::rtp_transceiver::RtpSender;

use super::h264::{self};
use super::rungs::Rung;
use super::source::media_instant;
use super::supervise::guard_task;
use crate::peer::error::PeerError;
use crate::peer::feedback::LegFeedback;
use crate::peer::local_media::{LocalMedia, MediaLeg};
use crate::peer::remote_peer::RemotePeer;
use crate::peer::state::PeerConnectionState;

/// Encoded frames buffered per leg before it starts dropping (≈ 260 ms of video).
pub(super) const LEG_QUEUE: usize = 8;
/// How often a leg reads its sender's stats (loss, RTT, bytes) for the rate controller.
pub(super) const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// A leg's keyframe requests in its first seconds bypass the coalescing (see `run_leg`).
pub(super) const FRESH_LEG: Duration = Duration::from_secs(2);
/// A leg gives up waiting for its connection after this long (the peer is gone or failed).
pub(super) const LEG_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One encoded frame (video access unit or 20 ms Opus packet).
#[derive(Debug)]
pub struct EncodedSample {
    pub data: Bytes,
    pub capture_us: u64,
    pub duration: Duration,
    pub keyframe: bool,
    /// The encoding it belongs to (audio: always the high rung).
    pub rung: Rung,
}

/// What identifies a local track on the wire.
#[derive(Debug, Clone)]
pub struct TrackSpec {
    pub track_id: String,
    pub stream_id: String,
}

impl TrackSpec {
    /// A globally unique track id (webrtc-rs routes RTCP by track id; collisions misroute PLIs).
    pub fn unique(prefix: &str, stream_id: &str) -> TrackSpec {
        TrackSpec {
            track_id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
            stream_id: stream_id.to_string(),
        }
    }
}

pub(super) fn h264_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/H264".into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: h264::FMTP.into(),
        rtcp_feedback: vec![],
    }
}

pub(super) fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    }
}

/// What one leg's receiver says about the network (see `SampleFanout::leg_views`).
#[derive(Debug, Clone, Copy)]
pub(super) struct LegView {
    pub(super) id: u64,
    pub(super) loss: f64,
    pub(super) newest_report: Option<Instant>,
    pub(super) rtt_ms: Option<f64>,
    pub(super) bytes_sent: u64,
    /// Encoded bytes handed to the leg's track so far (counted at once, unlike the stats).
    pub(super) media_bytes: u64,
}

/// Per-leg network view, refreshed from the sender's stats every second.
#[derive(Debug, Clone, Default)]
pub(super) struct LegReport {
    pub(super) rtt_ms: Option<f64>,
    pub(super) bytes_sent: u64,
}

pub(super) struct LegSlot {
    pub(super) id: u64,
    pub(super) tx: mpsc::Sender<Arc<EncodedSample>>,
    /// The leg dropped a frame and must restart at a keyframe.
    pub(super) need_key: Arc<AtomicBool>,
    pub(super) report: Arc<Mutex<LegReport>>,
    /// The receiver reports about this leg's stream, from its connection (`None` when the
    /// connection was already gone when the leg joined).
    pub(super) feedback: Option<LegFeedback>,
    /// The encoding this leg receives (`Rung::index`), set by the encoder thread.
    pub(super) rung: Arc<AtomicU8>,
    /// Encoded bytes written to the leg's track.
    pub(super) media_bytes: Arc<AtomicU64>,
}

/// The shared half of a send pipeline: implements [`LocalMedia`] for the MeteredPeer and fans
/// encoded samples out to the ready legs.
pub struct SampleFanout {
    pub(super) spec: TrackSpec,
    pub(super) kind: RtpCodecKind,
    pub(super) codec: RTCRtpCodec,
    pub(super) legs: Mutex<Vec<LegSlot>>,
    pub(super) next_leg: AtomicU64,
    /// A receiver asked for a keyframe (PLI/FIR) or a slow leg must restart at one; the
    /// encoder coalesces these (see `media::keyframes`).
    pub(super) keyframe_requested: [AtomicBool; 2],
    /// A keyframe is needed now (a new leg, the source changed, the camera came back), per rung.
    pub(super) urgent_keyframe: [AtomicBool; 2],
    /// Frames that reached at least one leg / were dropped at a full leg queue.
    pub(super) delivered: AtomicU64,
    pub(super) dropped: AtomicU64,
    /// Keyframe requests received from any receiver (PLI/FIR), for the rate controller.
    pub(super) keyframe_requests: AtomicU64,
    /// Set when the owner stops: legs end, no new legs start.
    pub(super) stopped: AtomicBool,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SampleFanout {
    pub(super) fn new(spec: TrackSpec, kind: RtpCodecKind) -> Arc<SampleFanout> {
        let codec = match kind {
            RtpCodecKind::Audio => opus_codec(),
            _ => h264_codec(),
        };
        Arc::new(SampleFanout {
            spec,
            kind,
            codec,
            legs: Mutex::new(Vec::new()),
            next_leg: AtomicU64::new(1),
            keyframe_requested: [AtomicBool::new(false), AtomicBool::new(false)],
            urgent_keyframe: [AtomicBool::new(true), AtomicBool::new(false)],
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            keyframe_requests: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        })
    }

    /// Number of legs currently receiving media.
    pub fn ready_legs(&self) -> usize {
        lock(&self.legs).len()
    }

    /// Hands one encoded sample to every ready leg without blocking (called on the encoder
    /// thread). A full leg drops the frame and will resume at the next keyframe.
    pub(super) fn publish(&self, sample: EncodedSample) {
        let sample = Arc::new(sample);
        let mut legs = lock(&self.legs);
        let mut any = false;
        let rung = sample.rung.index();
        legs.retain(|leg| {
            if usize::from(leg.rung.load(Ordering::Relaxed)) != rung {
                return true;
            }
            match leg.tx.try_send(sample.clone()) {
                Ok(()) => {
                    any = true;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    if !leg.need_key.swap(true, Ordering::Relaxed) {
                        self.keyframe_requested[rung].store(true, Ordering::Relaxed);
                    }
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if any {
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn take_keyframe_request(&self, rung: Rung) -> bool {
        self.keyframe_requested[rung.index()].swap(false, Ordering::Relaxed)
    }

    pub(super) fn take_urgent_keyframe(&self, rung: Rung) -> bool {
        self.urgent_keyframe[rung.index()].swap(false, Ordering::Relaxed)
    }

    /// Every rung needs a keyframe now.
    pub(super) fn urgent_keyframes(&self) {
        for u in &self.urgent_keyframe {
            u.store(true, Ordering::Relaxed);
        }
    }

    /// Moves a leg to another encoding; it restarts at that encoding's next keyframe.
    pub(super) fn set_leg_rung(&self, id: u64, rung: Rung) {
        let legs = lock(&self.legs);
        if let Some(leg) = legs.iter().find(|l| l.id == id) {
            let old = leg.rung.swap(rung.index() as u8, Ordering::Relaxed);
            if usize::from(old) != rung.index() {
                leg.need_key.store(true, Ordering::Relaxed);
                self.urgent_keyframe[rung.index()].store(true, Ordering::Relaxed);
            }
        }
    }

    /// Each ready leg's view of its network, for the per-leg rate estimates.
    pub(super) fn leg_views(&self) -> Vec<LegView> {
        let legs = lock(&self.legs);
        legs.iter()
            .map(|leg| {
                let report = leg
                    .feedback
                    .as_ref()
                    .and_then(LegFeedback::latest)
                    .filter(|l| l.at.elapsed() < Duration::from_secs(5));
                let r = lock(&leg.report);
                LegView {
                    id: leg.id,
                    loss: report.map_or(0.0, |l| l.fraction_lost),
                    newest_report: report.map(|l| l.at),
                    rtt_ms: r.rtt_ms,
                    bytes_sent: r.bytes_sent,
                    media_bytes: leg.media_bytes.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    pub(super) fn new_track(&self) -> Result<(Arc<TrackLocalStaticSample>, u32), PeerError> {
        let ssrc = rand::random::<u32>();
        let track = TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                self.spec.stream_id.clone(),
                self.spec.track_id.clone(),
                self.spec.track_id.clone(),
                self.kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        // Video retransmits on its own SSRC when the peer negotiates RTX
                        // (Chromium does; so do we); without it, on the media SSRC.
                        rtx: (self.kind == RtpCodecKind::Video).then(|| RTCRtpRtxParameters {
                            ssrc: rand::random::<u32>() | 1,
                        }),
                        ..Default::default()
                    },
                    codec: self.codec.clone(),
                    ..Default::default()
                }],
            ),
        )
        .map_err(|e| PeerError::WebRtc(e.to_string()))?;
        Ok((Arc::new(track), ssrc))
    }
}

/// `LocalMedia` over a fan-out; holds it weakly so a stopped pipeline frees its encoder.
pub(super) struct FanoutMedia(
    pub(super) Weak<SampleFanout>,
    pub(super) TrackSpec,
    pub(super) RtpCodecKind,
);

impl LocalMedia for FanoutMedia {
    fn track_id(&self) -> String {
        self.1.track_id.clone()
    }
    fn stream_id(&self) -> Option<String> {
        Some(self.1.stream_id.clone())
    }
    fn kind(&self) -> String {
        match self.2 {
            RtpCodecKind::Audio => "audio".into(),
            _ => "video".into(),
        }
    }
    fn new_leg(&self, peer: &RemotePeer) -> Result<MediaLeg, PeerError> {
        let fanout = self
            .0
            .upgrade()
            .ok_or(PeerError::InvalidState("the local track was stopped"))?;
        if fanout.stopped.load(Ordering::Relaxed) {
            return Err(PeerError::InvalidState("the local track was stopped"));
        }
        let (track, ssrc) = fanout.new_track()?;
        let (attached_tx, attached_rx) = oneshot::channel();
        let leg_track = track.clone();
        let weak = self.0.clone();
        let peer_id = peer.id().to_string();
        tokio::spawn(async move {
            // A leg that panics ends for its peer only; the others keep receiving.
            let _ = guard_task(
                "send leg",
                run_leg(weak, leg_track, ssrc, attached_rx, peer_id),
            )
            .await;
        });
        Ok(MediaLeg {
            track: track as Arc<dyn TrackLocal>,
            on_attached: Box::new(move |sender, peer| {
                let _ = attached_tx.send((sender, peer));
            }),
        })
    }
}

/// The payload type the connection negotiated for `codec` (mime and, for H.264, the
/// packetization mode and profile must agree; do not just take the first codec).
pub(super) async fn negotiated_pt(sender: &Arc<dyn RtpSender>, codec: &RTCRtpCodec) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    let same_mime = |c: &&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters| {
        c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type)
    };
    let fmtp_ok = |f: &str| {
        !codec.mime_type.eq_ignore_ascii_case("video/H264")
            || (f.contains("packetization-mode=1")
                && (f.contains("profile-level-id=42e01f") || f.contains("profile-level-id=42001f")))
    };
    // Prefer the payload type whose fmtp is exactly our codec's: webrtc-rs binds the NACK
    // responder (and picks the RTX payload type, `apt=`) by that match, so sending media under
    // another compatible payload type (42001f when we are 42e01f) made every retransmission
    // unwrap at the receiver as a different codec — Chromium then reset its decoder and asked
    // for a keyframe after each one (1 fps at 10 % loss).
    let profile = |fmtp: &str| {
        fmtp.split(';')
            .find_map(|kv| kv.trim().strip_prefix("profile-level-id="))
            .map(str::to_ascii_lowercase)
    };
    let candidates: Vec<_> = params
        .rtp_parameters
        .codecs
        .iter()
        .filter(same_mime)
        .filter(|c| fmtp_ok(&c.rtp_codec.sdp_fmtp_line))
        .collect();
    candidates
        .iter()
        .find(|c| profile(&c.rtp_codec.sdp_fmtp_line) == profile(&codec.sdp_fmtp_line))
        .or_else(|| candidates.first())
        .map(|c| c.payload_type)
}

/// One connection's leg: waits until the connection is up and the codec negotiated, joins the
/// fan-out, then writes samples (from a keyframe on), forwards PLI/FIR, and reads stats.
pub(super) async fn run_leg(
    fanout: Weak<SampleFanout>,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    attached: oneshot::Receiver<(Arc<dyn RtpSender>, RemotePeer)>,
    peer_id: String,
) {
    let Ok((sender, peer)) = attached.await else {
        return;
    };
    let Some(codec) = fanout.upgrade().map(|f| f.codec.clone()) else {
        return;
    };
    // 1. Wait for the connection and the negotiated payload type (polling: both change on
    //    the driver task; 20 ms keeps join → first frame short without spinning).
    let deadline = Instant::now() + LEG_READY_TIMEOUT;
    let pt = loop {
        if matches!(peer.state(), PeerConnectionState::Closed) || Instant::now() > deadline {
            debug!(peer = %peer_id, "leg gave up before the connection came up");
            return;
        }
        if fanout
            .upgrade()
            .is_none_or(|f| f.stopped.load(Ordering::Relaxed))
        {
            return;
        }
        if peer.state() == PeerConnectionState::Connected
            && let Some(pt) = negotiated_pt(&sender, &codec).await
        {
            break pt;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // 2. Join the fan-out and ask for a keyframe.
    let (tx, mut rx) = mpsc::channel::<Arc<EncodedSample>>(LEG_QUEUE);
    let need_key = Arc::new(AtomicBool::new(true));
    let report = Arc::new(Mutex::new(LegReport::default()));
    let rung = Arc::new(AtomicU8::new(Rung::High.index() as u8));
    let media_bytes = Arc::new(AtomicU64::new(0));
    let leg_id = {
        let Some(f) = fanout.upgrade() else { return };
        let id = f.next_leg.fetch_add(1, Ordering::Relaxed);
        lock(&f.legs).push(LegSlot {
            id,
            tx,
            need_key: need_key.clone(),
            report: report.clone(),
            feedback: peer.loss_feedback(ssrc),
            rung: rung.clone(),
            media_bytes: media_bytes.clone(),
        });
        f.urgent_keyframe[Rung::High.index()].store(true, Ordering::Relaxed);
        id
    };
    debug!(peer = %peer_id, pt, ssrc, "leg joined the fan-out");
    let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
    let is_video = codec.clock_rate == 90_000;
    let joined_at = Instant::now();
    loop {
        tokio::select! {
            sample = rx.recv() => {
                let Some(sample) = sample else { break };
                if need_key.load(Ordering::Relaxed) {
                    if is_video && !sample.keyframe {
                        continue;
                    }
                    need_key.store(false, Ordering::Relaxed);
                }
                let s = rtc::media::Sample {
                    data: sample.data.clone(),
                    duration: sample.duration,
                    ..rtc::media::Sample::new(media_instant(sample.capture_us))
                };
                if let Err(e) = track.sample_writer(ssrc, pt).write_sample(&s).await {
                    debug!(peer = %peer_id, error = %e, "leg write failed; leaving the fan-out");
                    break;
                }
                media_bytes.fetch_add(s.data.len() as u64, Ordering::Relaxed);
            }
            ev = track.poll() => match ev {
                Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                    if packets.iter().any(|p| {
                        p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>()
                    }) && let Some(f) = fanout.upgrade() {
                        let r = usize::from(rung.load(Ordering::Relaxed)).min(1);
                        // A receiver that is just starting (its first keyframe went out before
                        // it was ready) must not wait out the coalescing interval.
                        if joined_at.elapsed() < FRESH_LEG {
                            f.urgent_keyframe[r].store(true, Ordering::Relaxed);
                        } else {
                            f.keyframe_requested[r].store(true, Ordering::Relaxed);
                        }
                        f.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(_) => {}
                None => break, // unbound: the connection was replaced or closed
            },
            _ = stats_tick.tick() => {
                if let Ok(rep) = sender.get_stats(Instant::now()).await {
                    let mut r = lock(&report);
                    for e in rep.iter() {
                        match e {
                            RTCStatsReportEntry::OutboundRtp(o) => {
                                r.bytes_sent = o.sent_rtp_stream_stats.bytes_sent;
                            }
                            RTCStatsReportEntry::IceCandidatePair(cp)
                                if cp.current_round_trip_time > 0.0 => {
                                r.rtt_ms = Some(cp.current_round_trip_time * 1000.0);
                            }
                            _ => {}
                        }
                    }
                }
                if fanout.upgrade().is_none_or(|f| f.stopped.load(Ordering::Relaxed)) {
                    break;
                }
            }
        }
    }
    if let Some(f) = fanout.upgrade() {
        lock(&f.legs).retain(|l| l.id != leg_id);
    }
    debug!(peer = %peer_id, "leg ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_leg_drops_frames_and_asks_for_a_keyframe_without_blocking() {
        let f = SampleFanout::new(TrackSpec::unique("v", "s"), RtpCodecKind::Video);
        f.take_keyframe_request(Rung::High);
        let (tx, mut rx) = mpsc::channel(LEG_QUEUE);
        let need_key = Arc::new(AtomicBool::new(false));
        lock(&f.legs).push(LegSlot {
            id: 1,
            tx,
            need_key: need_key.clone(),
            report: Arc::default(),
            feedback: None,
            rung: Arc::new(AtomicU8::new(0)),
            media_bytes: Arc::default(),
        });
        for i in 0..(LEG_QUEUE as u64 + 3) {
            f.publish(EncodedSample {
                data: Bytes::from_static(b"x"),
                capture_us: i,
                duration: Duration::from_millis(33),
                keyframe: i == 0,
                rung: Rung::High,
            });
        }
        assert_eq!(f.dropped.load(Ordering::Relaxed), 3);
        assert!(need_key.load(Ordering::Relaxed));
        assert!(
            f.take_keyframe_request(Rung::High),
            "one keyframe request for the overflow"
        );
        assert!(!f.take_keyframe_request(Rung::High));
        let mut got = 0;
        while rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, LEG_QUEUE);
        // a closed leg is removed on the next publish
        drop(rx);
        f.publish(EncodedSample {
            data: Bytes::from_static(b"y"),
            capture_us: 99,
            duration: Duration::from_millis(33),
            keyframe: true,
            rung: Rung::High,
        });
        assert_eq!(f.ready_legs(), 0);
    }

    #[test]
    fn each_leg_gets_only_its_rung_and_a_switch_waits_for_a_keyframe_of_the_new_one() {
        let f = SampleFanout::new(TrackSpec::unique("v", "s"), RtpCodecKind::Video);
        let mut rxs = Vec::new();
        for id in [1u64, 2] {
            let (tx, rx) = mpsc::channel(LEG_QUEUE);
            lock(&f.legs).push(LegSlot {
                id,
                tx,
                need_key: Arc::new(AtomicBool::new(false)),
                report: Arc::default(),
                feedback: None,
                rung: Arc::new(AtomicU8::new(0)),
                media_bytes: Arc::default(),
            });
            rxs.push(rx);
        }
        f.take_urgent_keyframe(Rung::High);
        f.take_urgent_keyframe(Rung::Low);
        f.set_leg_rung(2, Rung::Low);
        assert!(
            f.take_urgent_keyframe(Rung::Low),
            "the low rung owes leg 2 a keyframe"
        );
        assert!(
            lock(&f.legs)[1].need_key.load(Ordering::Relaxed),
            "leg 2 restarts at a keyframe"
        );
        let sample = |rung, capture_us| EncodedSample {
            data: Bytes::from_static(b"x"),
            capture_us,
            duration: Duration::from_millis(33),
            keyframe: false,
            rung,
        };
        f.publish(sample(Rung::High, 1));
        f.publish(sample(Rung::Low, 2));
        let got = |rx: &mut mpsc::Receiver<Arc<EncodedSample>>| {
            let mut v = Vec::new();
            while let Ok(s) = rx.try_recv() {
                v.push(s.capture_us);
            }
            v
        };
        assert_eq!(got(&mut rxs[0]), vec![1]);
        assert_eq!(got(&mut rxs[1]), vec![2]);
        // Moving to the rung it is already on changes nothing.
        f.set_leg_rung(1, Rung::High);
        assert!(!f.take_urgent_keyframe(Rung::High));
    }
}
