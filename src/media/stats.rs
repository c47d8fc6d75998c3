//! Per-track media statistics: one plain struct per direction that the UI's stats
//! overlay and the headless peer both read. Pipelines update them about once a second.

use serde::Serialize;

/// A local track being sent (one encoder, all peers).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SendStats {
    pub frames_encoded: u64,
    /// Keyframes among them (requested, coalesced, or the encoder's own).
    pub keyframes: u64,
    /// Keyframe requests (PLI/FIR) received from all receivers.
    pub keyframe_requests: u64,
    /// Sum of encode times, for an average.
    pub encode_ms_total: f64,
    /// Frames sent per second over the last second.
    pub fps: f64,
    /// Bytes actually sent, summed over all peers, per second × 8.
    pub bitrate_bps: u64,
    /// The rate controller's encoder target.
    pub target_bitrate_bps: u32,
    /// Worst receiver's loss fraction (RTCP RR) and RTT.
    pub loss_fraction: f64,
    pub rtt_ms: Option<f64>,
    pub width: u32,
    pub height: u32,
    /// Connections receiving this track.
    pub peers: usize,
    /// Sending half-size frames because of bandwidth pressure.
    pub scale_down: bool,
    /// The second, half-size encoding for peers on weak links (`media::rungs`): its bitrate
    /// and picture size while it runs, and how many peers receive it.
    pub low_rung_bitrate_bps: Option<u32>,
    pub low_rung_size: Option<(u32, u32)>,
    pub legs_on_low_rung: usize,
    /// Why the source stopped, if it did.
    pub source_error: Option<String>,
    /// A stage of the pipeline panicked (a bug): the track sends nothing more.
    pub failed: Option<String>,
}

/// A remote track being received.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReceiveStats {
    pub packets: u64,
    pub bytes: u64,
    /// Packets missing from the sequence (before NACK recovery).
    pub packets_lost: u64,
    /// Packets that filled a gap in time to be used (NACK retransmissions, reordering).
    pub packets_repaired: u64,
    /// Packets that arrived after their frame had been given up or released (useless).
    pub late_packets: u64,
    /// Frames given up as lost (the decoder then waits for a keyframe).
    pub frames_lost: u64,
    pub frames_assembled: u64,
    pub frames_decoded: u64,
    /// Frames replaced in the display slot before anyone looked (latest-frame-wins).
    pub frames_superseded: u64,
    pub decode_errors: u64,
    pub keyframe_requests: u64,
    pub decode_ms_total: f64,
    pub fps: f64,
    pub bitrate_bps: u64,
    pub width: u32,
    pub height: u32,
    /// Interarrival jitter in ms (RFC 3550 estimator over RTP timestamps).
    pub jitter_ms: f64,
    /// Capture → decoded latency of the last stamped frame (synthetic senders in this process
    /// or with a shared clock), µs.
    pub last_latency_us: Option<u64>,
    /// The pipeline stopped on an internal error (a bug, not bad input: that is dropped and
    /// counted). The stream is dead until the peer's track is renegotiated; the UI says so.
    pub failed: Option<String>,
}

impl ReceiveStats {
    pub fn avg_decode_ms(&self) -> f64 {
        if self.frames_decoded == 0 {
            0.0
        } else {
            self.decode_ms_total / self.frames_decoded as f64
        }
    }
}

impl SendStats {
    pub fn avg_encode_ms(&self) -> f64 {
        if self.frames_encoded == 0 {
            0.0
        } else {
            self.encode_ms_total / self.frames_encoded as f64
        }
    }
}
