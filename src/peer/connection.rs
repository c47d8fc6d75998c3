//! One RTCPeerConnection and its negotiation engine, as an actor.
//!
//! Every mutation of the PeerConnection happens on this task, in arrival order: inbound
//! signals, local negotiation, data-channel and track requests, ICE restarts. The
//! PeerConnection's own event handler only forwards events into the actor's queue (it runs on
//! the WebRTC driver task, which must never block). Decisions come from the pure cores in
//! [`super::negotiation`] and [`super::ladder`]; this file does the IO.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::data_channel::RTCDataChannelInit;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::peer_connection::configuration::RTCOfferOptions;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceConnectionState, RTCIceGatheringState,
    RTCIceServer, RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder,
};
use webrtc::rtp_transceiver::RtpSender;

use super::error::{PeerError, scrub};
use super::feedback::FeedbackTable;
use super::ladder::{IceLadder, LadderAction};
use super::media_engine::{interceptors, register_call_codecs};
use super::negotiation::{
    OfferDecision, WatchdogAction, Watchdogs, accept_answer, check_remote_sdp, decide_offer,
};
use super::runtime::{ClampedRuntime, NetworkGate};
use super::settings::PeerSettings;
use super::signals::{
    Candidate, MAX_CANDIDATE_LEN, MAX_CANDIDATES_PER_DESCRIPTION, MsidEntry, SdpKind,
    candidate_json, description_json, first_mid, ice_ufrag, msid_entries, sending_mids,
};
use super::state::{PcState, PeerConnectionState, map_pc_state};
use crate::client::IceServer;

/// Inbound WebRTC signals for this connection (already classified by the MeteredPeer).
#[derive(Debug)]
pub(crate) enum InboundSignal {
    Description { kind: SdpKind, sdp: String },
    Candidate(Option<Candidate>),
}

pub(crate) enum Command {
    Signal(InboundSignal),
    CreateDataChannel {
        label: String,
        init: Option<RTCDataChannelInit>,
        reply: oneshot::Sender<Result<Arc<dyn DataChannel>, PeerError>>,
    },
    AddTrack {
        track: Arc<dyn TrackLocal>,
        reply: oneshot::Sender<Result<Arc<dyn RtpSender>, PeerError>>,
    },
    RemoveTrack {
        track_id: String,
        reply: oneshot::Sender<Result<(), PeerError>>,
    },
    /// Swap the sender's track without renegotiation (the SDK's `replace_track`).
    ReplaceTrack {
        old_track_id: String,
        track: Arc<dyn TrackLocal>,
        reply: oneshot::Sender<Result<Arc<dyn RtpSender>, PeerError>>,
    },
    /// Troubleshooting / app-requested in-place ICE restart.
    RestartIce,
    /// Sent once after a fresh connection got its local tracks: if this is the polite side
    /// and nothing has been offered or received yet (we have nothing to send), offer to
    /// receive audio and video at once. Without it a receive-only newcomer waits for the
    /// impolite side's offer hold (see `PeerSettings::impolite_offer_delay`) on every join.
    OfferToReceiveIfIdle,
    Close(oneshot::Sender<()>),
}

/// What the connection reports to its RemotePeer. Every event carries the generation so that
/// late events of a replaced connection are discarded.
#[derive(Clone)]
pub(crate) enum ConnEvent {
    State(PeerConnectionState),
    DataChannel(Arc<dyn DataChannel>),
    Track {
        track: Arc<dyn TrackRemote>,
        /// msid lines of the remote description current when the track arrived.
        msid: Vec<MsidEntry>,
        mid: Option<String>,
    },
    NegotiationError(String),
    IceCandidateError(String),
    IceRecoveryExhausted {
        attempts: u32,
    },
    /// The remote stopped sending this track (its m-section went recvonly/inactive/rejected).
    TrackEnded {
        track_id: String,
    },
}

/// Handle to a running connection actor.
#[derive(Clone)]
pub(crate) struct ConnectionHandle {
    pub(crate) generation: u64,
    pub(crate) pc: Arc<dyn PeerConnection>,
    cmd: mpsc::Sender<Command>,
    /// Receiver reports about the streams we send on this connection.
    pub(crate) feedback: FeedbackTable,
}

impl ConnectionHandle {
    pub(crate) fn command(&self, c: Command) -> bool {
        match self.cmd.try_send(c) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(c)) => {
                // The actor is far behind; wait for room rather than lose a signal.
                let tx = self.cmd.clone();
                tokio::spawn(async move {
                    let _ = tx.send(c).await;
                });
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Closes the PeerConnection, waiting at most 2 s.
    pub(crate) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Close(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }
}

pub(crate) struct ConnectionParams {
    pub(crate) remote_id: String,
    pub(crate) polite: bool,
    pub(crate) generation: u64,
    pub(crate) ice_servers: Vec<IceServer>,
    pub(crate) settings: Arc<PeerSettings>,
    /// The peer's traffic switch (Troubleshoot: blackhole media), shared by all generations.
    pub(crate) gate: Arc<NetworkGate>,
    /// Outbound signalling payloads for `send(remote_id, …)`, in order.
    pub(crate) signals: mpsc::Sender<Value>,
    /// Events for the RemotePeer: (generation, event).
    pub(crate) events: mpsc::Sender<(u64, ConnEvent)>,
}

/// Raw PeerConnection events, forwarded from the driver task.
enum PcEvent {
    Candidate(RTCIceCandidateInit),
    GatheringComplete,
    State(RTCPeerConnectionState),
    Ice(RTCIceConnectionState),
    NegotiationNeeded,
    DataChannel(Arc<dyn DataChannel>),
    Track(Arc<dyn TrackRemote>),
    /// The reserved channel opened: the SCTP association is established.
    SctpReady,
}

struct Forwarder {
    tx: mpsc::Sender<PcEvent>,
}

impl Forwarder {
    fn fwd(&self, ev: PcEvent) {
        if self.tx.try_send(ev).is_err() {
            warn!("peer connection event queue full or closed; event dropped");
        }
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Forwarder {
    async fn on_negotiation_needed(&self) {
        self.fwd(PcEvent::NegotiationNeeded);
    }
    async fn on_ice_candidate(&self, ev: RTCPeerConnectionIceEvent) {
        match ev.candidate.to_json() {
            Ok(init) => self.fwd(PcEvent::Candidate(init)),
            Err(e) => debug!(error = %e, "local candidate not serialisable"),
        }
    }
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            self.fwd(PcEvent::GatheringComplete);
        }
    }
    async fn on_ice_connection_state_change(&self, s: RTCIceConnectionState) {
        self.fwd(PcEvent::Ice(s));
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        self.fwd(PcEvent::State(s));
    }
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        self.fwd(PcEvent::DataChannel(dc));
    }
    async fn on_track(&self, t: Arc<dyn TrackRemote>) {
        self.fwd(PcEvent::Track(t));
    }
}

/// SRTP replay window in packets. A retransmitted packet carries its original sequence number;
/// with the default window (64) a packet lost early in a keyframe (50–100 packets at 720p) is
/// already outside the window when its retransmission arrives and is dropped as a replay.
const SRTP_REPLAY_WINDOW: usize = 1024;

/// The `a=setup` values of a description (DTLS role negotiation; for logs).
fn dtls_setup(sdp: &str) -> Vec<&str> {
    sdp.lines()
        .map(str::trim)
        .filter_map(|l| {
            l.strip_prefix("a=setup:")
                .or_else(|| l.strip_prefix("a=mid:"))
                .or_else(|| {
                    l.strip_prefix("m=")
                        .map(|m| m.split(' ').next().unwrap_or(m))
                })
                .or(match l {
                    "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive" => Some(l),
                    _ => None,
                })
        })
        .collect()
}

fn rtc_err(e: impl std::fmt::Display) -> PeerError {
    PeerError::WebRtc(scrub(&e.to_string()))
}

/// Builds a PeerConnection with the project's network-safety and latency settings.
async fn build_pc(
    settings: &PeerSettings,
    ice_servers: &[IceServer],
    gate: Arc<NetworkGate>,
    handler: Arc<Forwarder>,
    feedback: FeedbackTable,
) -> Result<Arc<dyn PeerConnection>, PeerError> {
    let se = SettingEngineBuilder::new()
        // mDNS would bind 5353 (and fail where multicast has no route); never wanted here.
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_network_types(vec![NetworkType::Udp4])
        // A binding request may beat its trickled candidate; do not wait 1 s to nominate it.
        .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
        // Answer as the DTLS server. webrtc-rs answers `setup:active` on every renegotiation,
        // whatever role the session already has; when a browser that is the DTLS client
        // re-offers (`setup:active`), that answer fails in Chromium with "Failed to set SSL
        // role". Answering passive is consistent in every order: a browser answering our offer
        // picks active, so we are always the server towards it.
        .with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Server)
        .with_srtp_replay_protection_window(SRTP_REPLAY_WINDOW)
        .with_ice_timeouts(
            Some(settings.ice_disconnected),
            Some(settings.ice_failed),
            Some(settings.ice_keepalive),
        )
        .build();
    let mut me = MediaEngine::default();
    register_call_codecs(&mut me).map_err(rtc_err)?;
    let registry = interceptors(&mut me, feedback).map_err(rtc_err)?;
    let servers: Vec<RTCIceServer> = ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .collect();
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(servers)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_setting_engine(se)
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_runtime(Arc::new(
            ClampedRuntime::new(settings.driver_clamp).with_gate(gate),
        ))
        .with_udp_addrs(settings.udp_bind.clone())
        .with_data_channel_send_buffer_limit(settings.data_channel_send_buffer)
        .build()
        .await
        .map_err(rtc_err)?;
    Ok(Arc::new(pc))
}

/// A data channel request held back until the SCTP association is up.
struct DeferredChannel {
    label: String,
    init: Option<RTCDataChannelInit>,
    reply: oneshot::Sender<Result<Arc<dyn DataChannel>, PeerError>>,
}

/// How long a data channel request waits for the association before it is created anyway.
const SCTP_READY_WAIT: Duration = Duration::from_secs(5);

/// SCTP stream of the unannounced channel a receive-only first offer carries (odd, near the
/// top of the 1 024 streams browsers negotiate, far from the low ids channels are given).
const RESERVED_SCTP_STREAM: u16 = 1021;

/// Creates the PeerConnection and starts its actor.
pub(crate) async fn spawn(params: ConnectionParams) -> Result<ConnectionHandle, PeerError> {
    let (pc_tx, pc_rx) = mpsc::channel(1024);
    let pc_events_tx = pc_tx.clone();
    let handler = Arc::new(Forwarder { tx: pc_tx });
    let feedback = FeedbackTable::default();
    let pc = build_pc(
        &params.settings,
        &params.ice_servers,
        params.gate.clone(),
        handler,
        feedback.clone(),
    )
    .await?;
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let handle = ConnectionHandle {
        generation: params.generation,
        pc: pc.clone(),
        cmd: cmd_tx,
        feedback,
    };
    let settings = params.settings.clone();
    let polite_flag = params.polite;
    let actor = Actor {
        pc,
        params,
        have_local_offer: false,
        ignore_offer: false,
        dirty: false,
        restart_next_offer: false,
        negotiate_soon: false,
        changes: 0,
        changes_offered: 0,
        offer_hold_until: (!settings.impolite_offer_delay.is_zero() && !polite_flag)
            .then(|| Instant::now() + settings.impolite_offer_delay),
        offer_deferred: false,
        pending_candidates: Vec::new(),
        candidates_this_description: 0,
        remote_ufrag: None,
        null_sent_for_ufrag: None,
        ice_settled: false,
        closed: false,
        last_state: PeerConnectionState::Idle,
        remote_tracks: std::collections::HashMap::new(),
        reserved_channel: None,
        deferred_channels: Vec::new(),
        deferred_until: None,
        sctp_ready: true,
        pc_events_tx,
        watchdogs: Watchdogs::new(settings.offer_timeout, settings.stuck_ice_timeout),
        ladder: IceLadder::new(settings.ladder_schedule.clone(), settings.ladder_probe),
    };
    tokio::spawn(actor.run(cmd_rx, pc_rx));
    Ok(handle)
}

struct Actor {
    pc: Arc<dyn PeerConnection>,
    params: ConnectionParams,
    /// Our offer is applied locally and awaits an answer (signalling state have-local-offer).
    have_local_offer: bool,
    /// Impolite side ignored a colliding offer: drop its candidates until the next answer.
    ignore_offer: bool,
    /// Negotiation was requested while an offer was outstanding.
    dirty: bool,
    restart_next_offer: bool,
    /// A local change (track, first data channel) wants an offer once the queued commands are
    /// handled: several changes in a row make one offer, not one each.
    negotiate_soon: bool,
    /// Local changes made / covered by the latest offer; a `negotiationneeded` with nothing
    /// new is ignored (webrtc-rs fires it for changes our explicit offer already carried, and
    /// each needless re-offer is a glare window with a polite browser).
    changes: u64,
    changes_offered: u64,
    /// Until then (impolite side, fresh connection) offers wait (see
    /// `PeerSettings::impolite_offer_delay`).
    offer_hold_until: Option<Instant>,
    offer_deferred: bool,
    pending_candidates: Vec<RTCIceCandidateInit>,
    candidates_this_description: usize,
    remote_ufrag: Option<String>,
    null_sent_for_ufrag: Option<String>,
    ice_settled: bool,
    closed: bool,
    last_state: PeerConnectionState,
    /// mid → remote track id, for tracks reported to the RemotePeer.
    remote_tracks: std::collections::HashMap<String, String>,
    /// Keeps the connection's SCTP section alive when a receive-only offer created it (see
    /// `offer_to_receive_if_idle`).
    reserved_channel: Option<Arc<dyn DataChannel>>,
    /// Data channels asked for while the reserved channel's association is still being set
    /// up, and until when they may wait (see `create_data_channel`).
    deferred_channels: Vec<DeferredChannel>,
    deferred_until: Option<Instant>,
    /// The SCTP association is up, or no reserved channel is waiting for it.
    sctp_ready: bool,
    /// Our own copy of the event queue's sender, for tasks that report back.
    pc_events_tx: mpsc::Sender<PcEvent>,
    watchdogs: Watchdogs,
    ladder: IceLadder,
}

impl Actor {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Command>,
        mut pc_events: mpsc::Receiver<PcEvent>,
    ) {
        loop {
            let hold = self.offer_hold_until.filter(|_| self.offer_deferred);
            let deadline = [
                self.watchdogs.next_deadline(),
                self.ladder.next_deadline(),
                hold,
                self.deferred_until,
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(Command::Close(reply)) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        break;
                    }
                    Some(c) => {
                        self.command(c).await;
                        // Drain what is already queued (e.g. every local track of a fresh
                        // connection) before offering, so they go out in one offer.
                        let mut close = None;
                        while let Ok(next) = cmds.try_recv() {
                            if let Command::Close(reply) = next {
                                close = Some(reply);
                                break;
                            }
                            self.command(next).await;
                        }
                        if let Some(reply) = close {
                            self.shutdown().await;
                            let _ = reply.send(());
                            break;
                        }
                        if std::mem::take(&mut self.negotiate_soon) {
                            self.negotiate().await;
                        }
                    }
                    None => {
                        self.shutdown().await;
                        break;
                    }
                },
                Some(ev) = pc_events.recv() => self.pc_event(ev).await,
                _ = sleep_until_opt(deadline) => self.timers().await,
            }
        }
    }

    async fn shutdown(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.pc.close()).await;
        self.emit(ConnEvent::State(PeerConnectionState::Closed))
            .await;
    }

    async fn emit(&self, ev: ConnEvent) {
        let _ = self.params.events.send((self.params.generation, ev)).await;
    }

    async fn signal(&self, v: Value) {
        if self.params.signals.send(v).await.is_err() {
            debug!(peer = %self.params.remote_id, "signal dropped: sender gone");
        }
    }

    async fn negotiation_error(&self, what: &str, e: PeerError) {
        debug!(peer = %self.params.remote_id, what, error = %e, "negotiation step failed");
        self.emit(ConnEvent::NegotiationError(format!("{what}: {e}")))
            .await;
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Signal(InboundSignal::Description {
                kind: SdpKind::Offer,
                sdp,
            }) => self.remote_offer(sdp).await,
            Command::Signal(InboundSignal::Description {
                kind: SdpKind::Answer,
                sdp,
            }) => self.remote_answer(sdp).await,
            Command::Signal(InboundSignal::Candidate(c)) => self.remote_candidate(c).await,
            Command::CreateDataChannel { label, init, reply } => {
                if !self.sctp_ready {
                    self.deferred_until
                        .get_or_insert_with(|| Instant::now() + SCTP_READY_WAIT);
                    self.deferred_channels
                        .push(DeferredChannel { label, init, reply });
                    return;
                }
                let had_sctp = self.has_application_section().await;
                let r = self
                    .pc
                    .create_data_channel(&label, init)
                    .await
                    .map_err(rtc_err);
                let ok = r.is_ok();
                let _ = reply.send(r);
                // The first channel needs an m=application section: negotiate explicitly
                // rather than rely on negotiationneeded.
                if ok && !had_sctp {
                    self.changes += 1;
                    self.negotiate_soon = true;
                }
            }
            Command::AddTrack { track, reply } => {
                let r = self.pc.add_track(track).await.map_err(rtc_err);
                let ok = r.is_ok();
                let _ = reply.send(r);
                if ok {
                    self.changes += 1;
                    self.negotiate_soon = true;
                }
            }
            Command::RemoveTrack { track_id, reply } => {
                let mut result = Ok(());
                for sender in self.pc.get_senders().await {
                    if *sender.track().track_id().await == track_id {
                        result = self.pc.remove_track(&sender).await.map_err(rtc_err);
                    }
                }
                let ok = result.is_ok();
                let _ = reply.send(result);
                if ok {
                    self.changes += 1;
                    self.negotiate_soon = true;
                }
            }
            Command::ReplaceTrack {
                old_track_id,
                track,
                reply,
            } => {
                // webrtc-rs 0.21's RtpSender::replace_track swaps the core's track but keeps
                // the old TrackLocal bound (writes to the new one never leave), so replace by
                // remove + add, at the cost of one renegotiation.
                let mut removed = Err(PeerError::InvalidArgs("no sender carries that track"));
                for sender in self.pc.get_senders().await {
                    if *sender.track().track_id().await == old_track_id {
                        removed = self.pc.remove_track(&sender).await.map_err(rtc_err);
                        break;
                    }
                }
                let result = match removed {
                    Ok(()) => self.pc.add_track(track).await.map_err(rtc_err),
                    Err(e) => Err(e),
                };
                let ok = result.is_ok();
                let _ = reply.send(result);
                if ok {
                    self.changes += 1;
                    self.negotiate_soon = true;
                }
            }
            Command::RestartIce => {
                self.restart_next_offer = true;
                self.negotiate().await;
            }
            Command::OfferToReceiveIfIdle => self.offer_to_receive_if_idle().await,
            Command::Close(_) => {}
        }
    }

    async fn offer_to_receive_if_idle(&mut self) {
        let idle = self.params.polite
            && !self.closed
            && !self.have_local_offer
            && self.pc.local_description().await.is_none()
            && self.pc.remote_description().await.is_none();
        if !idle {
            return;
        }
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            };
            if let Err(e) = self.pc.add_transceiver_from_kind(kind, Some(init)).await {
                debug!(peer = %self.params.remote_id, error = %e, "no receive-only transceiver");
                return;
            }
        }
        // An m=application section as well, through a negotiated (never announced) channel:
        // webrtc-rs starts the SCTP association only when DTLS completes, so a data channel
        // the application opens later could never be added to a connection set up without
        // one. The remote sees no channel; the stream id is far above the ids a call uses.
        if !self.has_application_section().await {
            let init = RTCDataChannelInit {
                negotiated: Some(RESERVED_SCTP_STREAM),
                ..RTCDataChannelInit::default()
            };
            match self
                .pc
                .create_data_channel("meshcall-reserved", Some(init))
                .await
            {
                Ok(dc) => {
                    // webrtc-rs loses the opening message of a channel created while the
                    // association is still shaking hands, so later channels wait for this
                    // one to open (negotiated channels open exactly when the association is up).
                    self.sctp_ready = false;
                    let (watch, tx) = (dc.clone(), self.pc_events_tx.clone());
                    tokio::spawn(async move {
                        while let Some(ev) = watch.poll().await {
                            if matches!(ev, DataChannelEvent::OnOpen) {
                                let _ = tx.send(PcEvent::SctpReady).await;
                            }
                        }
                    });
                    self.reserved_channel = Some(dc);
                }
                Err(e) => debug!(peer = %self.params.remote_id, error = %e, "no reserved channel"),
            }
        }
        self.changes += 1;
        self.negotiate_soon = true;
    }

    async fn has_application_section(&self) -> bool {
        match self.pc.local_description().await {
            Some(d) => d.sdp.contains("m=application"),
            None => false,
        }
    }

    /// Makes and sends an offer, unless one is already outstanding (then it is remembered).
    async fn negotiate(&mut self) {
        if self.closed {
            return;
        }
        if self.have_local_offer {
            self.dirty = true;
            return;
        }
        if let Some(t) = self.offer_hold_until {
            if Instant::now() < t {
                self.offer_deferred = true;
                return;
            }
            self.offer_hold_until = None;
        }
        self.offer_deferred = false;
        self.dirty = false;
        self.changes_offered = self.changes;
        let restart = std::mem::take(&mut self.restart_next_offer);
        if restart && let Err(e) = self.pc.restart_ice().await {
            self.negotiation_error("restart_ice", rtc_err(e)).await;
        }
        let options = restart.then_some(RTCOfferOptions { ice_restart: true });
        let offer = match self.pc.create_offer(options).await {
            Ok(o) => o,
            Err(e) => return self.negotiation_error("create_offer", rtc_err(e)).await,
        };
        if let Err(e) = self.pc.set_local_description(offer.clone()).await {
            return self
                .negotiation_error("set_local_description(offer)", rtc_err(e))
                .await;
        }
        self.have_local_offer = true;
        self.watchdogs.offer_sent(Instant::now());
        if self.last_state == PeerConnectionState::Idle {
            self.set_state(PeerConnectionState::Connecting).await;
        }
        debug!(peer = %self.params.remote_id, setup = ?dtls_setup(&offer.sdp), "offering");
        self.signal(description_json(SdpKind::Offer, &offer.sdp))
            .await;
    }

    async fn rollback(&mut self) -> bool {
        match RTCSessionDescription::rollback(None) {
            Ok(rb) => match self.pc.set_local_description(rb).await {
                Ok(()) => {
                    self.have_local_offer = false;
                    true
                }
                Err(e) => {
                    self.negotiation_error("rollback", rtc_err(e)).await;
                    false
                }
            },
            Err(e) => {
                self.negotiation_error("rollback", rtc_err(e)).await;
                false
            }
        }
    }

    async fn remote_offer(&mut self, sdp: String) {
        if self.closed {
            return;
        }
        match decide_offer(self.params.polite, false, self.have_local_offer) {
            OfferDecision::Ignore => {
                debug!(peer = %self.params.remote_id, "ignoring colliding offer (impolite)");
                self.ignore_offer = true;
                return;
            }
            OfferDecision::Apply { rollback_first } => {
                self.ignore_offer = false;
                if rollback_first {
                    if !self.rollback().await {
                        return;
                    }
                    // Whatever our withdrawn offer carried still needs negotiating.
                    self.dirty = true;
                }
            }
        }
        if let Err(why) = check_remote_sdp(&sdp) {
            return self
                .negotiation_error("remote offer refused", PeerError::DescriptionRefused(why))
                .await;
        }
        let offer = match RTCSessionDescription::offer(sdp) {
            Ok(o) => o,
            Err(e) => return self.negotiation_error("parse offer", rtc_err(e)).await,
        };
        let ufrag = ice_ufrag(&offer.sdp).map(str::to_string);
        debug!(peer = %self.params.remote_id, setup = ?dtls_setup(&offer.sdp), "applying a remote offer");
        if let Err(e) = self.pc.set_remote_description(offer).await {
            return self
                .negotiation_error("set_remote_description(offer)", rtc_err(e))
                .await;
        }
        self.remote_description_applied(ufrag).await;
        let answer = match self.pc.create_answer(None).await {
            Ok(a) => a,
            Err(e) => return self.negotiation_error("create_answer", rtc_err(e)).await,
        };
        if let Err(e) = self.pc.set_local_description(answer.clone()).await {
            return self
                .negotiation_error("set_local_description(answer)", rtc_err(e))
                .await;
        }
        if self.last_state == PeerConnectionState::Idle {
            self.set_state(PeerConnectionState::Connecting).await;
        }
        debug!(peer = %self.params.remote_id, setup = ?dtls_setup(&answer.sdp), "answering");
        self.signal(description_json(SdpKind::Answer, &answer.sdp))
            .await;
        self.watchdogs.stable(Instant::now(), self.ice_settled);
        if self.dirty {
            self.negotiate().await;
        }
    }

    async fn remote_answer(&mut self, sdp: String) {
        if self.closed {
            return;
        }
        if !accept_answer(self.have_local_offer) {
            debug!(peer = %self.params.remote_id, "dropping stale answer");
            return;
        }
        if let Err(why) = check_remote_sdp(&sdp) {
            return self
                .negotiation_error("remote answer refused", PeerError::DescriptionRefused(why))
                .await;
        }
        let answer = match RTCSessionDescription::answer(sdp) {
            Ok(a) => a,
            Err(e) => return self.negotiation_error("parse answer", rtc_err(e)).await,
        };
        let ufrag = ice_ufrag(&answer.sdp).map(str::to_string);
        debug!(peer = %self.params.remote_id, setup = ?dtls_setup(&answer.sdp), "applying a remote answer");
        if let Err(e) = self.pc.set_remote_description(answer).await {
            return self
                .negotiation_error("set_remote_description(answer)", rtc_err(e))
                .await;
        }
        self.have_local_offer = false;
        self.ignore_offer = false;
        self.remote_description_applied(ufrag).await;
        self.watchdogs.stable(Instant::now(), self.ice_settled);
        if self.dirty {
            self.negotiate().await;
        }
    }

    /// After any remote description: new candidate budget, buffered candidates applied.
    async fn remote_description_applied(&mut self, ufrag: Option<String>) {
        if ufrag.is_some() && ufrag != self.remote_ufrag {
            self.candidates_this_description = 0;
            self.remote_ufrag = ufrag;
        }
        let pending = std::mem::take(&mut self.pending_candidates);
        for c in pending {
            self.add_candidate(c).await;
        }
        // webrtc-rs does not end a remote track when its sender removes it: infer it from the
        // new description (the m-section no longer sends).
        if let Some(d) = self.pc.remote_description().await {
            let sending = sending_mids(&d.sdp);
            let ended: Vec<String> = self
                .remote_tracks
                .keys()
                .filter(|mid| !sending.contains(*mid))
                .cloned()
                .collect();
            for mid in ended {
                if let Some(track_id) = self.remote_tracks.remove(&mid) {
                    self.emit(ConnEvent::TrackEnded { track_id }).await;
                }
            }
        }
    }

    async fn remote_candidate(&mut self, c: Option<Candidate>) {
        let Some(c) = c else {
            return; // end-of-candidates: nothing to hand to webrtc-rs
        };
        if self.closed || self.ignore_offer {
            return;
        }
        if c.candidate.len() > MAX_CANDIDATE_LEN {
            debug!(peer = %self.params.remote_id, "dropping oversize candidate");
            return;
        }
        if let (Some(u), Some(current)) = (&c.username_fragment, &self.remote_ufrag)
            && u != current
        {
            debug!(peer = %self.params.remote_id, "dropping candidate of an old ICE generation");
            return;
        }
        if self.candidates_this_description >= MAX_CANDIDATES_PER_DESCRIPTION {
            debug!(peer = %self.params.remote_id, "candidate cap reached; dropping");
            return;
        }
        self.candidates_this_description += 1;
        let init = RTCIceCandidateInit {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            username_fragment: c.username_fragment,
            ..Default::default()
        };
        if self.pc.remote_description().await.is_none() {
            if self.pending_candidates.len() < MAX_CANDIDATES_PER_DESCRIPTION {
                self.pending_candidates.push(init);
            }
            return;
        }
        self.add_candidate(init).await;
    }

    async fn add_candidate(&mut self, init: RTCIceCandidateInit) {
        if let Err(e) = self.pc.add_ice_candidate(init).await {
            self.emit(ConnEvent::IceCandidateError(scrub(&e.to_string())))
                .await;
        }
    }

    async fn set_state(&mut self, s: PeerConnectionState) {
        if self.last_state != s {
            self.last_state = s;
            self.emit(ConnEvent::State(s)).await;
        }
    }

    async fn pc_event(&mut self, ev: PcEvent) {
        if self.closed {
            return;
        }
        match ev {
            PcEvent::Candidate(mut init) => {
                // Browsers and the official SDKs want a real mid and the ufrag.
                let local = self.pc.local_description().await;
                if init.sdp_mid.as_deref().is_none_or(str::is_empty) {
                    init.sdp_mid = local
                        .as_ref()
                        .and_then(|d| first_mid(&d.sdp))
                        .map(str::to_string)
                        .or(Some("0".into()));
                    init.sdp_mline_index = Some(0);
                }
                if init.username_fragment.is_none() {
                    init.username_fragment = local
                        .as_ref()
                        .and_then(|d| ice_ufrag(&d.sdp))
                        .map(str::to_string);
                }
                let c = Candidate {
                    candidate: init.candidate,
                    sdp_mid: init.sdp_mid,
                    sdp_mline_index: init.sdp_mline_index,
                    username_fragment: init.username_fragment,
                };
                self.signal(candidate_json(Some(&c))).await;
            }
            PcEvent::GatheringComplete => {
                // Complete repeats after every local description; send the end marker once
                // per local ICE generation.
                let ufrag = self
                    .pc
                    .local_description()
                    .await
                    .and_then(|d| ice_ufrag(&d.sdp).map(str::to_string));
                if ufrag.is_some() && ufrag != self.null_sent_for_ufrag {
                    self.null_sent_for_ufrag = ufrag;
                    self.signal(candidate_json(None)).await;
                }
            }
            PcEvent::State(s) => {
                let pc_state = match s {
                    RTCPeerConnectionState::New => PcState::New,
                    RTCPeerConnectionState::Connecting => PcState::Connecting,
                    RTCPeerConnectionState::Connected => PcState::Connected,
                    RTCPeerConnectionState::Disconnected => PcState::Disconnected,
                    RTCPeerConnectionState::Failed => PcState::Failed,
                    RTCPeerConnectionState::Closed => PcState::Closed,
                    _ => return,
                };
                match pc_state {
                    PcState::Connected => {
                        self.ladder.on_connected();
                        self.watchdogs.ice_settled();
                    }
                    PcState::Failed => self.ladder.on_failed(Instant::now()),
                    _ => {}
                }
                // `new` before the first negotiation is not news.
                if !(pc_state == PcState::New && self.last_state == PeerConnectionState::Idle) {
                    self.set_state(map_pc_state(pc_state)).await;
                }
            }
            PcEvent::Ice(s) => {
                if matches!(
                    s,
                    RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
                ) {
                    self.ice_settled = true;
                    self.watchdogs.ice_settled();
                } else if matches!(
                    s,
                    RTCIceConnectionState::Checking | RTCIceConnectionState::New
                ) {
                    self.ice_settled = false;
                }
            }
            PcEvent::NegotiationNeeded => {
                let covered = self.changes_offered == self.changes
                    && self.pc.local_description().await.is_some();
                if covered {
                    debug!(peer = %self.params.remote_id, "negotiationneeded with nothing new: ignored");
                } else if !self.have_local_offer {
                    self.negotiate().await;
                } else {
                    self.dirty = true;
                }
            }
            PcEvent::DataChannel(dc) => self.emit(ConnEvent::DataChannel(dc)).await,
            PcEvent::SctpReady => self.release_deferred_channels().await,
            PcEvent::Track(track) => {
                let remote = self.pc.remote_description().await;
                let msid = remote.map(|d| msid_entries(&d.sdp)).unwrap_or_default();
                let mut mid = None;
                let wanted = track.track_id().await.to_string();
                for t in self.pc.get_transceivers().await {
                    let Ok(Some(receiver)) = t.receiver().await else {
                        continue;
                    };
                    if *receiver.track().track_id().await == wanted {
                        mid = t.mid().await.ok().flatten();
                    }
                }
                if let Some(m) = &mid {
                    self.remote_tracks.insert(m.clone(), wanted.clone());
                }
                self.emit(ConnEvent::Track { track, msid, mid }).await;
            }
        }
    }

    /// Creates the data channels that waited for the association (it is up, or the wait ran
    /// out and they take their chances).
    async fn release_deferred_channels(&mut self) {
        self.sctp_ready = true;
        self.deferred_until = None;
        for d in std::mem::take(&mut self.deferred_channels) {
            self.command(Command::CreateDataChannel {
                label: d.label,
                init: d.init,
                reply: d.reply,
            })
            .await;
        }
        if std::mem::take(&mut self.negotiate_soon) {
            self.negotiate().await;
        }
    }

    async fn timers(&mut self) {
        let now = Instant::now();
        if self.deferred_until.is_some_and(|t| now >= t) {
            debug!(peer = %self.params.remote_id, "association not up in time; creating the waiting data channels");
            self.release_deferred_channels().await;
        }
        if self.offer_deferred && self.offer_hold_until.is_none_or(|t| now >= t) {
            self.offer_hold_until = None;
            self.negotiate().await;
        }
        if let Some(action) = self.watchdogs.poll(now) {
            match action {
                WatchdogAction::ReOffer => {
                    debug!(peer = %self.params.remote_id, "offer unanswered: withdrawing and re-offering");
                    if self.have_local_offer && self.rollback().await {
                        self.negotiate().await;
                    }
                }
                WatchdogAction::RestartIce => {
                    debug!(peer = %self.params.remote_id, "ICE stuck after negotiation: restarting");
                    self.restart_next_offer = true;
                    self.negotiate().await;
                }
            }
        }
        while let Some(action) = self.ladder.poll(now) {
            match action {
                LadderAction::Restart { attempt } => {
                    debug!(peer = %self.params.remote_id, attempt, "ICE recovery: restarting");
                    if self.have_local_offer {
                        let _ = self.rollback().await;
                    }
                    self.restart_next_offer = true;
                    self.negotiate().await;
                }
                LadderAction::Exhausted { attempts } => {
                    warn!(peer = %self.params.remote_id, attempts, "ICE recovery exhausted");
                    self.emit(ConnEvent::IceRecoveryExhausted { attempts })
                        .await;
                }
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
