//! MeteredPeer / RemotePeer end to end: real server on 127.0.0.1, real webrtc-rs connections with
//! ICE limited to 127.0.0.1 (`PeerSettings::loopback_only`). CI runs this inside a loopback-only
//! network namespace, so ICE cannot reach any other interface.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use common::*;
use meshcall::auth::MintRequest;
use meshcall::client::{ClientOptions, Credential};
use meshcall::peer::{
    DataKind, DcEvent, DcMessage, MeteredPeer, MeteredPeerState, PeerConnectionState,
    PeerEventError, PeerSettings, RemotePeer,
};

fn settings() -> PeerSettings {
    PeerSettings {
        reconcile_deadline: Duration::from_secs(5),
        ..PeerSettings::loopback_only()
    }
}

/// A MeteredPeer whose token provider mints a fresh JWT for `sub` on every connect.
fn peer_with_ttl(origin: &str, sub: &str, name: &str, ttl: u64) -> (MeteredPeer, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let (sub, name, c) = (sub.to_string(), name.to_string(), calls.clone());
    let provider = Credential::token_provider(move || {
        let n = c.fetch_add(1, Ordering::SeqCst);
        let t = token_with(MintRequest {
            sub: sub.clone(),
            // Only the first token is short-lived: later ones are normal.
            ttl_secs: if n == 0 { ttl } else { 600 },
            peer_metadata: Some(json!({"username": name})),
            ..MintRequest::default()
        });
        async move { Ok::<String, String>(t) }
    });
    let mut opts = ClientOptions::new(origin, provider);
    opts.resubscribe_retry_interval = Duration::from_millis(200);
    (
        MeteredPeer::new(opts, settings()).expect("valid options"),
        calls,
    )
}

fn peer(origin: &str, sub: &str, name: &str) -> MeteredPeer {
    peer_with_ttl(origin, sub, name, 600).0
}

async fn within<T>(what: &str, secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs} s waiting for {what}"))
}

async fn wait_state(p: &RemotePeer, want: PeerConnectionState, secs: u64) {
    let mut changes = p.state_changes();
    within(&format!("{} to be {want:?}", p.id()), secs, async {
        while p.state() != want {
            let _ = changes.next().await;
        }
    })
    .await;
}

async fn wait_remote(p: &MeteredPeer, id: &str, secs: u64) -> RemotePeer {
    let mut joined = p.on_peer_joined();
    within(&format!("peer {id} to appear"), secs, async {
        loop {
            if let Some(r) = p.remote_peer(id) {
                return r;
            }
            let _ = joined.next().await;
        }
    })
    .await
}

/// Opens a channel from `a` to `b` and checks one message each way.
async fn data_channel_round_trip(a: &RemotePeer, b: &RemotePeer, label: &str) {
    let mut incoming = b.on_data_channel();
    let dc_a = a.create_data_channel(label, None).await.expect("create");
    within("data channel open", 10, dc_a.wait_open())
        .await
        .expect("open");
    let dc_b = within("remote data channel", 10, async {
        loop {
            if let Some(dc) = incoming.next_item().await
                && dc.label() == label
            {
                return dc;
            }
        }
    })
    .await;
    let mut ev_b = dc_b.events();
    let mut ev_a = dc_a.events();
    dc_a.send_text("ping from a").await.expect("send a");
    within("message at b", 10, async {
        loop {
            if let Some(DcEvent::Message(DcMessage::Text(t))) = ev_b.next_item().await {
                assert_eq!(t, "ping from a");
                return;
            }
        }
    })
    .await;
    within("b open", 10, dc_b.wait_open())
        .await
        .expect("b open");
    dc_b.send_binary(vec![1u8, 2, 3]).await.expect("send b");
    within("message at a", 10, async {
        loop {
            if let Some(DcEvent::Message(DcMessage::Binary(b))) = ev_a.next_item().await {
                assert_eq!(b, vec![1, 2, 3]);
                return;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_presence_data_and_data_channels() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let alice = peer(&origin, "alice", "Alice");
    let bob = peer(&origin, "bob", "Bob");
    alice.join("room", true).await.expect("alice joins");
    assert_eq!(alice.state(), MeteredPeerState::Joined);
    let t0 = Instant::now();
    bob.join("room", false).await.expect("bob joins");
    let a_sees_b = wait_remote(&alice, "bob", 5).await;
    let b_sees_a = wait_remote(&bob, "alice", 5).await;
    assert_eq!(a_sees_b.metadata(), Some(json!({"username":"Bob"})));
    assert_eq!(b_sees_a.metadata(), Some(json!({"username":"Alice"})));
    assert!(a_sees_b.polite(), "alice < bob: alice is polite");
    assert!(!b_sees_a.polite());
    assert_eq!(
        a_sees_b.to_json(),
        json!({"id":"bob","state": a_sees_b.state().as_str()})
    );

    // Server-routed data both ways.
    let mut a_data = alice.on_data();
    let mut b_data = bob.on_data();
    bob.send(json!({"hello":"room"})).await.expect("broadcast");
    let d = within("broadcast at alice", 5, a_data.next_item())
        .await
        .expect("data");
    assert_eq!(
        (d.from.as_str(), d.kind, d.data.clone()),
        ("bob", DataKind::Broadcast, json!({"hello":"room"}))
    );
    assert_eq!(
        d.from_metadata,
        Some(json!({"username":"Bob"})),
        "alice opted in"
    );
    alice.send_to("bob", json!("direct")).await.expect("direct");
    let d = within("direct at bob", 5, b_data.next_item())
        .await
        .expect("data");
    assert_eq!((d.from.as_str(), d.kind), ("alice", DataKind::Direct));
    assert!(matches!(
        alice.send_to("alice", json!(1)).await,
        Err(meshcall::peer::PeerError::SelfSend)
    ));
    b_sees_a
        .send(json!({"via":"remote"}))
        .await
        .expect("remote.send");
    let d = within("remote.send at alice", 5, a_data.next_item())
        .await
        .expect("data");
    assert_eq!(d.data, json!({"via":"remote"}));

    // P2P: a data channel makes both sides negotiate and connect.
    data_channel_round_trip(&a_sees_b, &b_sees_a, "chat").await;
    wait_state(&a_sees_b, PeerConnectionState::Connected, 10).await;
    wait_state(&b_sees_a, PeerConnectionState::Connected, 10).await;
    println!(
        "join → data channel connected: {:.1} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    assert!(a_sees_b.pc().is_some());

    // Bob leaves: alice sees him go and her RemotePeer is closed.
    let mut left = alice.on_peer_left();
    bob.close().await;
    assert_eq!(bob.state(), MeteredPeerState::Closed);
    let gone = within("peer left", 5, left.next_item())
        .await
        .expect("left");
    assert_eq!(gone.id(), "bob");
    assert_eq!(gone, a_sees_b, "the same RemotePeer object");
    assert_eq!(a_sees_b.state(), PeerConnectionState::Closed);
    assert!(
        a_sees_b.send(json!(1)).await.is_err(),
        "closed RemotePeer refuses to send"
    );
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_form_a_mesh() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let peers = [
        peer(&origin, "p1", "One"),
        peer(&origin, "p2", "Two"),
        peer(&origin, "p3", "Three"),
    ];
    for p in &peers {
        p.join("mesh", false).await.expect("join");
    }
    let ids = ["p1", "p2", "p3"];
    for (i, p) in peers.iter().enumerate() {
        for (j, id) in ids.iter().enumerate() {
            if i != j {
                wait_remote(p, id, 5).await;
            }
        }
        assert_eq!(p.remote_peers().len(), 2);
    }
    // Every pair opens a channel from the lower id to the higher one.
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        let a = peers[i].remote_peer(ids[j]).expect("known");
        let b = peers[j].remote_peer(ids[i]).expect("known");
        data_channel_round_trip(&a, &b, &format!("dc-{i}{j}")).await;
    }
    for p in &peers {
        p.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_negotiation_50_times_without_a_stall() {
    // 100 connections from one IP in a few seconds: lift the per-IP connect limit.
    let mut cfg = config();
    cfg.shell.connects_per_ip_per_minute = 0;
    let server = start(cfg).await;
    let origin = server.ws_origin();
    let mut times = Vec::new();
    for round in 0..50 {
        let room = format!("glare-{round}");
        let a = peer(&origin, &format!("a{round}"), "A");
        let b = peer(&origin, &format!("b{round}"), "B");
        a.join(&room, false).await.expect("join");
        b.join(&room, false).await.expect("join");
        let ra = wait_remote(&a, &format!("b{round}"), 5).await;
        let rb = wait_remote(&b, &format!("a{round}"), 5).await;
        let t0 = Instant::now();
        // Both sides open a channel at the same moment: both offer (glare).
        let (dca, dcb) = tokio::join!(
            ra.create_data_channel("x", None),
            rb.create_data_channel("y", None)
        );
        let (dca, dcb) = (dca.expect("a channel"), dcb.expect("b channel"));
        within(
            &format!("round {round}: a's channel open"),
            15,
            dca.wait_open(),
        )
        .await
        .expect("open");
        within(
            &format!("round {round}: b's channel open"),
            15,
            dcb.wait_open(),
        )
        .await
        .expect("open");
        times.push(t0.elapsed());
        a.close().await;
        b.close().await;
    }
    times.sort();
    println!(
        "glare rounds: p50 {:.1} ms, max {:.1} ms",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_kick_is_fatal_and_closes_the_peer() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let alice = peer(&origin, "alice", "Alice");
    let bob = peer(&origin, "bob", "Bob");
    alice.join("room", false).await.expect("join");
    bob.join("room", false).await.expect("join");
    wait_remote(&alice, "bob", 5).await;
    let mut errors = bob.errors();
    let mut left = alice.on_peer_left();
    let (status, _) = http(
        server.local_addr(),
        "DELETE",
        "/v1/peers/bob",
        Some(&bearer()),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let err = within("fatal error", 5, errors.next_item())
        .await
        .expect("error");
    assert!(
        matches!(
            err,
            PeerEventError::Fatal {
                code: Some(4020),
                ..
            }
        ),
        "{err:?}"
    );
    let mut states = bob.state_changes();
    within("bob closed", 5, async {
        while bob.state() != MeteredPeerState::Closed {
            let _ = states.next().await;
        }
    })
    .await;
    assert!(bob.remote_peers().is_empty());
    assert_eq!(
        within("alice sees bob leave", 5, left.next_item())
            .await
            .expect("left")
            .id(),
        "bob"
    );
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_reconnects_with_identical_remote_peers_and_a_fresh_pc() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let alice = peer(&origin, "alice", "Alice");
    // Bob's first token lives 3 s; the server closes with 4002 and the provider mints a new one.
    let (bob, calls) = peer_with_ttl(&origin, "bob", "Bob", 3);
    alice.join("room", false).await.expect("join");
    bob.join("room", false).await.expect("join");
    let b_sees_a = wait_remote(&bob, "alice", 5).await;
    let a_sees_b = wait_remote(&alice, "bob", 5).await;
    data_channel_round_trip(&b_sees_a, &a_sees_b, "before").await;
    wait_state(&b_sees_a, PeerConnectionState::Connected, 10).await;
    let pc_before = b_sees_a.pc().expect("pc");
    let mut removed = b_sees_a.on_stream_removed();
    let mut resets = b_sees_a.on_connection_reset();
    let mut bob_states = bob.state_changes();
    let mut seen = Vec::new();
    within("bob reconnecting then joined", 10, async {
        loop {
            if let Some(c) = bob_states.next_item().await {
                seen.push(c.to);
                if c.to == MeteredPeerState::Joined {
                    return;
                }
            }
        }
    })
    .await;
    assert_eq!(
        seen,
        vec![MeteredPeerState::Reconnecting, MeteredPeerState::Joined]
    );
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "the token provider was asked again"
    );
    within("connection reset", 5, resets.next_item())
        .await
        .expect("reset");
    let after = bob.remote_peer("alice").expect("alice survives");
    assert_eq!(after, b_sees_a, "same RemotePeer object");
    assert_eq!(
        after.metadata(),
        Some(json!({"username":"Alice"})),
        "metadata from the snapshot"
    );
    let pc_after = after.pc().expect("pc");
    assert!(
        !Arc::ptr_eq(&pc_before, &pc_after),
        "a fresh PeerConnection"
    );
    // Alice saw bob leave and come back: her new RemotePeer negotiates with bob's fresh pc.
    let a_sees_b2 = wait_remote(&alice, "bob", 5).await;
    data_channel_round_trip(&after, &a_sees_b2, "after").await;
    wait_state(&after, PeerConnectionState::Connected, 10).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), removed.next())
            .await
            .is_err(),
        "no stream-removed during reconcile"
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_call_reconciles() {
    let server = start(config()).await;
    let addr = server.local_addr();
    let origin = server.ws_origin();
    let alice = peer(&origin, "alice", "Alice");
    let bob = peer(&origin, "bob", "Bob");
    alice.join("room", false).await.expect("join");
    bob.join("room", false).await.expect("join");
    let ra = wait_remote(&alice, "bob", 5).await;
    let rb = wait_remote(&bob, "alice", 5).await;
    data_channel_round_trip(&ra, &rb, "before").await;
    let mut watch = [alice.state_changes(), bob.state_changes()];
    server.shutdown().await;
    let server2 = within("restart on the same port", 10, async {
        loop {
            let mut c = config();
            c.listen = addr;
            if let Ok(s) = meshcall::server::Server::start(c).await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    for states in watch.iter_mut() {
        let mut seen = Vec::new();
        within("reconnecting then joined", 20, async {
            loop {
                if let Some(c) = states.next_item().await {
                    seen.push(c.to);
                    if c.to == MeteredPeerState::Joined {
                        return;
                    }
                }
            }
        })
        .await;
        assert_eq!(
            seen,
            vec![MeteredPeerState::Reconnecting, MeteredPeerState::Joined]
        );
    }
    let ra = wait_remote(&alice, "bob", 10).await;
    let rb = wait_remote(&bob, "alice", 10).await;
    data_channel_round_trip(&ra, &rb, "after").await;
    alice.close().await;
    bob.close().await;
    server2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_channel_backpressure_keeps_order_and_overflows_at_256_queued() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let a = peer(&origin, "bp-a", "A");
    let b = peer(&origin, "bp-b", "B");
    a.join("bp", false).await.expect("join");
    b.join("bp", false).await.expect("join");
    let ra = wait_remote(&a, "bp-b", 5).await;
    let rb = wait_remote(&b, "bp-a", 5).await;
    let mut incoming = rb.on_data_channel();
    let dc = ra.create_data_channel("bulk", None).await.expect("create");
    within("open", 10, dc.wait_open()).await.expect("open");
    let remote = within("remote channel", 10, incoming.next_item())
        .await
        .expect("dc");
    let mut received = remote.events();

    // 400 sends of 60 KB (24 MB) issued at once: the 1 MiB send buffer makes them wait, at most
    // 256 may queue, the rest fail at once with an overflow. Accepted ones arrive in order.
    let payload = |i: usize| {
        let mut v = vec![0u8; 60_000];
        v[..8].copy_from_slice(&(i as u64).to_be_bytes());
        v
    };
    // join_all polls the futures in order, so each enqueues in call order on its first poll.
    let sends = (0..400).map(|i| {
        let dc = dc.clone();
        let data = payload(i);
        async move { (i, dc.send_binary(data).await) }
    });
    let results = futures_util::future::join_all(sends).await;
    let mut accepted = Vec::new();
    let mut overflowed = 0;
    for (i, r) in results {
        match r {
            Ok(()) => accepted.push(i),
            Err(meshcall::peer::PeerError::DataChannelOverflow { cap, .. }) => {
                assert_eq!(cap, 256);
                overflowed += 1;
            }
            Err(e) => panic!("unexpected send error {e}"),
        }
    }
    assert!(
        overflowed > 0,
        "some sends must overflow the 256-entry queue"
    );
    assert!(
        accepted.len() >= 256,
        "at least a full queue is accepted, got {}",
        accepted.len()
    );
    let mut got = Vec::new();
    within("all accepted messages", 60, async {
        while got.len() < accepted.len() {
            if let Some(DcEvent::Message(DcMessage::Binary(b))) = received.next_item().await {
                assert_eq!(b.len(), 60_000);
                got.push(u64::from_be_bytes(b[..8].try_into().expect("8 bytes")) as usize);
            }
        }
    })
    .await;
    accepted.sort_unstable();
    assert_eq!(got, accepted, "delivered in send order, none lost");
    println!(
        "backpressure: {} accepted, {overflowed} overflowed",
        accepted.len()
    );
    a.close().await;
    b.close().await;
}

/// An H.264 track with made-up access units: enough for RTP to flow (nothing decodes it here;
/// real encoding is the media layer's job).
fn test_video_track(
    stream: &str,
    id: &str,
) -> Arc<webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample> {
    use rtc::media_stream::MediaStreamTrack;
    use rtc::rtp_transceiver::rtp_sender::{
        RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
    };
    let codec = RTCRtpCodec {
        mime_type: "video/H264".into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            .into(),
        rtcp_feedback: vec![],
    };
    Arc::new(
        webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                stream.into(),
                id.into(),
                "test video".into(),
                RtpCodecKind::Video,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(rand::random::<u32>()),
                        ..Default::default()
                    },
                    codec,
                    ..Default::default()
                }],
            ),
        )
        .expect("track"),
    )
}

/// Finds the negotiated H.264 sender for `track_id` through the pc() escape hatch and writes
/// made-up access units to it every 33 ms.
async fn spawn_writer(
    pc: Arc<dyn webrtc::peer_connection::PeerConnection>,
    track: Arc<webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample>,
    track_id: &str,
) -> tokio::task::JoinHandle<()> {
    let (ssrc, pt) = within("negotiated H.264 sender", 10, async {
        loop {
            for s in pc.get_senders().await {
                if *s.track().track_id().await == *track_id
                    && let Ok(p) = s.get_parameters().await
                    && let Some(c) = p
                        .rtp_parameters
                        .codecs
                        .iter()
                        .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case("video/H264"))
                    && let Some(ssrc) = p
                        .encodings
                        .first()
                        .and_then(|e| e.rtp_coding_parameters.ssrc)
                {
                    return (ssrc, c.payload_type);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tokio::spawn(async move {
        let mut n = 0u8;
        loop {
            n = n.wrapping_add(1);
            let au = bytes::Bytes::from(vec![0, 0, 0, 1, 0x65, 0x88, n, 0x21, 0x10, 0x42]);
            let sample = rtc::media::Sample {
                data: au,
                duration: Duration::from_millis(33),
                ..rtc::media::Sample::new(Instant::now())
            };
            let _ = track.sample_writer(ssrc, pt).write_sample(&sample).await;
            tokio::time::sleep(Duration::from_millis(33)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_track_metadata_reaches_the_peer_and_removal_ends_the_stream() {
    use webrtc::media_stream::track_local::TrackLocal;
    let server = start(config()).await;
    let origin = server.ws_origin();
    let a = peer(&origin, "media-a", "A");
    let b = peer(&origin, "media-b", "B");
    // Added before join, as the SDKs recommend: it reaches every peer that shows up later.
    let track = test_video_track("screen-stream", "screen-track");
    a.add_track(
        track.clone() as Arc<dyn TrackLocal>,
        Some(json!({"role":"screen","label":"Desktop"})),
    )
    .await
    .expect("add_track");
    a.join("media", false).await.expect("join");
    let mut b_joined = b.on_peer_joined();
    b.join("media", false).await.expect("join");
    let rb = match b.remote_peer("media-a") {
        Some(p) => p,
        None => within("a appears at b", 5, b_joined.next_item())
            .await
            .expect("peer"),
    };
    let mut added = rb.on_stream_added();
    let mut removed = rb.on_stream_removed();
    let ra = wait_remote(&a, "media-b", 5).await;
    wait_state(&ra, PeerConnectionState::Connected, 10).await;

    let pc = ra.pc().expect("pc");
    let writer = spawn_writer(pc.clone(), track.clone(), "screen-track").await;
    let stream = within("stream-added at b", 10, added.next_item())
        .await
        .expect("stream");
    assert_eq!(stream.stream_id, "screen-stream");
    assert_eq!(
        stream.metadata,
        Some(json!({"role":"screen","label":"Desktop"}))
    );
    assert_eq!(stream.tracks[0].kind, "video");
    let mut rtp = stream.tracks[0].take_rtp().expect("rtp");
    within("RTP at b", 10, rtp.recv()).await.expect("packet");

    // Removing the track ends the stream at the receiver.
    a.remove_track("screen-track").await.expect("remove");
    let gone = within("stream-removed at b", 15, removed.next_item())
        .await
        .expect("removed");
    assert_eq!(gone.stream_id, "screen-stream");
    writer.abort();

    // replace_track refuses unknown tracks, and swaps a known one (remove + add, one
    // renegotiation; see MeteredPeer::replace_track for why not in place).
    let second = test_video_track("cam-stream", "cam-track");
    a.add_track(
        second.clone() as Arc<dyn TrackLocal>,
        Some(json!({"role":"camera"})),
    )
    .await
    .expect("add second");
    let replacement = test_video_track("cam-stream", "cam-track-2");
    assert!(matches!(
        a.replace_track("no-such-track", replacement.clone() as Arc<dyn TrackLocal>)
            .await,
        Err(meshcall::peer::PeerError::InvalidArgs(_))
    ));
    a.replace_track("cam-track", replacement.clone() as Arc<dyn TrackLocal>)
        .await
        .expect("replace_track");
    a.close().await;
    b.close().await;
}

/// A peer that sends far more tracks than a call needs must not make us create resources for
/// each: past the documented cap the excess is refused with a negotiation error, and the
/// tracks before it keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_too_many_tracks_is_capped() {
    use meshcall::media::send::{TrackSpec, VideoSendSettings, VideoSender};
    use meshcall::media::synthetic::SyntheticVideoSource;
    use meshcall::peer::MAX_REMOTE_TRACKS;
    let server = start(config()).await;
    let origin = server.ws_origin();
    let alice = peer(&origin, "alice", "Alice");
    let mallory = peer(&origin, "mallory", "Mallory");
    let mut senders = Vec::new();
    for i in 0..(MAX_REMOTE_TRACKS + 4) {
        let v = VideoSender::start(
            Box::new(SyntheticVideoSource::new(32, 32, 5.0).expect("source")),
            TrackSpec::unique(&format!("v{i}"), &format!("s{i}")),
            VideoSendSettings::default(),
        )
        .expect("sender");
        mallory.add_media(v.media(), None).await.expect("add");
        senders.push(v);
    }
    alice.join("caps", false).await.expect("join");
    let at_alice_joined = alice.on_peer_joined();
    mallory.join("caps", false).await.expect("join");
    drop(at_alice_joined);
    let at_alice = wait_remote(&alice, "mallory", 10).await;
    let mut errors = at_alice.on_negotiation_error();
    let mut refused = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, errors.next_item()).await {
        refused.push(e);
    }
    let live: usize = at_alice
        .current_streams()
        .iter()
        .map(|s| s.tracks.len())
        .sum();
    println!(
        "alice runs {live} of mallory's tracks; refusals: {}",
        refused.len()
    );
    assert!(live <= MAX_REMOTE_TRACKS, "{live} tracks");
    assert!(
        live >= MAX_REMOTE_TRACKS - 2,
        "tracks up to the cap run ({live})"
    );
    assert!(
        refused.iter().any(|e| e.contains("track")),
        "the excess tracks are refused with a negotiation error: {refused:?}"
    );
    alice.close().await;
    mallory.close().await;
}

/// The same for data channels a peer opens towards us.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_opening_too_many_data_channels_is_capped() {
    use meshcall::peer::MAX_REMOTE_DATA_CHANNELS;
    let server = start(config()).await;
    let origin = server.ws_origin();
    let alice = peer(&origin, "alice", "Alice");
    let mallory = peer(&origin, "mallory", "Mallory");
    alice.join("caps", false).await.expect("join");
    mallory.join("caps", false).await.expect("join");
    let at_alice = wait_remote(&alice, "mallory", 10).await;
    let at_mallory = wait_remote(&mallory, "alice", 10).await;
    let mut channels = at_alice.on_data_channel();
    let mut errors = at_alice.on_negotiation_error();
    let mut opened = Vec::new();
    for i in 0..(MAX_REMOTE_DATA_CHANNELS + 8) {
        opened.push(
            at_mallory
                .create_data_channel(&format!("dc{i}"), None)
                .await
                .expect("create"),
        );
    }
    let (mut n, mut refused) = (0usize, Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        tokio::select! {
            c = channels.next_item() => if c.is_some() { n += 1 },
            e = errors.next_item() => if let Some(e) = e { refused.push(e) },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    println!("alice accepted {n} channels; refusals: {}", refused.len());
    assert!(n <= MAX_REMOTE_DATA_CHANNELS, "{n} channels");
    assert!(
        n >= MAX_REMOTE_DATA_CHANNELS - 2,
        "channels up to the cap open ({n})"
    );
    assert!(
        refused.iter().any(|e| e.contains("data channel")),
        "the excess channels are refused with a negotiation error: {refused:?}"
    );
    drop(opened);
    alice.close().await;
    mallory.close().await;
}

/// The data-channel cap counts channels that are open, not every channel a connection ever
/// had: a peer that opens and closes channels one after another (a chat that reconnects its
/// channel, a file transfer per channel) is never refused.
///
/// Ignored because of an open defect found with it, in webrtc-rs (rtc 0.21.1), not in our code:
/// closing a channel frees its SCTP stream id at once, while the SCTP stream itself lives until
/// the other side's stream reset arrives; the next channel gets the lowest free id again, its
/// open is refused locally ("a stream with that identifier already exists") and never sent. A
/// data ACK that lands on the closed stream can also keep that reset from ever completing.
/// With channels left open, all 32 arrive. The fix belongs in the id allocator (skip ids whose
/// stream still exists); run this with `--ignored` once it is in.
#[tokio::test]
#[ignore = "open defect: a data channel opened after two closed ones never arrives"]
async fn closed_data_channels_do_not_count_against_the_cap() {
    use meshcall::peer::MAX_REMOTE_DATA_CHANNELS;
    let server = start(config()).await;
    let origin = server.ws_origin();
    let alice = peer(&origin, "alice", "Alice");
    let bob = peer(&origin, "bob", "Bob");
    alice.join("cycle", false).await.expect("join");
    bob.join("cycle", false).await.expect("join");
    let at_alice = wait_remote(&alice, "bob", 10).await;
    let at_bob = wait_remote(&bob, "alice", 10).await;
    let mut channels = at_alice.on_data_channel();
    let mut errors = at_alice.on_negotiation_error();
    let rounds = MAX_REMOTE_DATA_CHANNELS + 8;
    for i in 0..rounds {
        let dc = at_bob
            .create_data_channel(&format!("round-{i}"), None)
            .await
            .expect("create");
        let seen = tokio::time::timeout(Duration::from_secs(5), channels.next_item())
            .await
            .unwrap_or_else(|_| panic!("alice never saw channel {i}"))
            .expect("stream open");
        seen.wait_open().await.expect("open at alice");
        dc.close().await;
        // Alice's side sees the close before the next round starts.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while seen.is_open() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!seen.is_open(), "channel {i} never closed at alice");
    }
    if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), errors.next_item()).await
    {
        panic!("a channel was refused although none stayed open: {e}");
    }
    alice.close().await;
    bob.close().await;
}

/// A receive-only newcomer that is the polite side must not wait for the impolite sender's
/// offer hold: it offers at once (asking to receive audio and video), the sender answers with
/// its tracks, and media flows before the hold would have ended. The hold is stretched to 3 s
/// here so that waiting for it is unmistakable; in a real call it is 150 ms of every join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receive_only_polite_newcomer_gets_media_without_waiting_for_the_impolite_hold() {
    use webrtc::media_stream::track_local::TrackLocal;
    let hold = Duration::from_secs(3);
    let server = start(config()).await;
    let origin = server.ws_origin();
    let make = |sub: &str, name: &str| {
        let t = token(sub, name);
        let opts = ClientOptions::new(
            &origin,
            Credential::token_provider(move || {
                let t = t.clone();
                async move { Ok::<String, String>(t) }
            }),
        );
        MeteredPeer::new(
            opts,
            PeerSettings {
                impolite_offer_delay: hold,
                ..settings()
            },
        )
        .expect("valid options")
    };
    // "zz-sender" > "aa-viewer": the sender is the impolite side.
    let sender = make("zz-sender", "Sender");
    let viewer = make("aa-viewer", "Viewer");
    let track = test_video_track("cam-stream", "cam-track");
    sender
        .add_track(track.clone() as Arc<dyn TrackLocal>, None)
        .await
        .expect("add_track");
    sender.join("fast-start", false).await.expect("join");
    let mut joined = viewer.on_peer_joined();
    let t0 = Instant::now();
    viewer.join("fast-start", false).await.expect("join");
    let rs = match viewer.remote_peer("zz-sender") {
        Some(p) => p,
        None => within("sender appears", 5, joined.next_item())
            .await
            .expect("peer"),
    };
    assert!(rs.polite(), "the viewer is the polite side");
    let mut added = rs.on_stream_added();
    let rv = wait_remote(&sender, "aa-viewer", 5).await;
    let writer = spawn_writer(rv.pc().expect("pc"), track.clone(), "cam-track").await;
    let stream = within("the sender's stream at the viewer", 10, added.next_item())
        .await
        .expect("stream");
    let mut rtp = stream.tracks[0].take_rtp().expect("rtp");
    within("RTP at the viewer", 10, rtp.recv())
        .await
        .expect("packet");
    let took = t0.elapsed();
    println!(
        "receive-only polite join → first RTP: {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
    assert!(
        took < hold,
        "media took {took:?}: the viewer waited for the sender's {hold:?} offer hold"
    );
    writer.abort();
    sender.close().await;
    viewer.close().await;
}
