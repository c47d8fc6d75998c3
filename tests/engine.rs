//! The call engine against a real server with real peer connections (loopback only): what the
//! UI is told when other participants drop their signalling, leave, or are blackholed.
//!
//! Run inside a loopback-only network namespace (scripts/test does).

mod common;

use std::time::{Duration, Instant};

use common::*;
use meshcall::client::{ClientOptions, Credential};
use meshcall::engine::api::{
    AudioChoice, Auth, CallState, Command, ErrorKind, Event, JoinRequest, Simulation,
    SpeakerChoice, VideoChoice,
};
use meshcall::engine::{EngineEvent, EngineOptions, spawn};
use meshcall::peer::{MeteredPeer, PeerConnectionState, PeerSettings};
use tokio::sync::mpsc;

struct Participant {
    cmd: mpsc::Sender<Command>,
    events: mpsc::Receiver<EngineEvent>,
    /// Every call event seen so far, with when it arrived.
    seen: Vec<(Instant, Event)>,
}

impl Participant {
    async fn join(origin: &str, room: &str, sub: &str) -> Participant {
        Participant::join_with(origin, room, sub, VideoChoice::Synthetic, AudioChoice::None).await
    }

    async fn join_with(
        origin: &str,
        room: &str,
        sub: &str,
        video: VideoChoice,
        audio: AudioChoice,
    ) -> Participant {
        let handle = spawn(&tokio::runtime::Handle::current(), EngineOptions::default());
        let (cmd, events) = handle.into_parts();
        let mut req = JoinRequest::new(origin, room, sub, Auth::Token(token(sub, sub)));
        req.video = video;
        req.audio = audio;
        req.width = 320;
        req.height = 240;
        req.fps = 15.0;
        req.bitrate_bps = 300_000;
        req.loopback_only = true;
        cmd.send(Command::Join(Box::new(req)))
            .await
            .expect("engine");
        let mut p = Participant {
            cmd,
            events,
            seen: Vec::new(),
        };
        p.wait("joined", Duration::from_secs(10), |e| {
            matches!(e, Event::Joined { .. })
        })
        .await;
        p
    }

    /// A position in the event history, for [`Self::wait_after`].
    fn mark(&self) -> usize {
        self.seen.len()
    }

    /// An event matching `f` seen at any time so far, or the next one to arrive.
    async fn wait(&mut self, what: &str, within: Duration, f: impl Fn(&Event) -> bool) -> Event {
        self.wait_after(0, what, within, f).await
    }

    /// An event matching `f` seen after `mark`, or the next one to arrive; everything on the
    /// way is recorded.
    async fn wait_after(
        &mut self,
        mark: usize,
        what: &str,
        within: Duration,
        f: impl Fn(&Event) -> bool,
    ) -> Event {
        if let Some((_, e)) = self.seen.iter().skip(mark).find(|(_, e)| f(e)) {
            return e.clone();
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {within:?}; saw {:?}", self.kinds()))
                .expect("engine alive");
            if let EngineEvent::Call(e) = ev {
                if let Event::Error {
                    fatal: true,
                    message,
                    ..
                } = &e
                {
                    panic!("fatal engine error while waiting for {what}: {message}");
                }
                self.seen.push((Instant::now(), e.clone()));
                if f(&e) {
                    return e;
                }
            }
        }
    }

    /// Records events for `d` without waiting for anything in particular.
    async fn drain_for(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if let EngineEvent::Call(e) = ev {
                self.seen.push((Instant::now(), e));
            }
        }
    }

    fn kinds(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|(_, e)| {
                let s = format!("{e:?}");
                s.chars().take(60).collect()
            })
            .collect()
    }

    fn left_since(&self, t: Instant, id: &str) -> bool {
        self.seen
            .iter()
            .any(|(at, e)| *at >= t && matches!(e, Event::PeerLeft { id: p } if p == id))
    }
}

fn joined(peer: &'static str) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::PeerJoined { id, .. } if id == peer)
}

fn left(peer: &'static str) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::PeerLeft { id } if id == peer)
}

fn video_from(peer: &'static str) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::StreamAdded { peer: p, video: Some(_), .. } if p == peer)
}

fn first_frame_from(peer: &'static str) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::FirstFrame { peer: p, .. } if p == peer)
}

fn state_of(peer: &'static str, want: PeerConnectionState) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::PeerConnection { id, state } if id == peer && *state == want)
}

/// A meshcall peer whose signalling drops is shown as reconnecting (not removed) and comes
/// back with the same stream; one that leaves says bye and is removed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signalling_drop_keeps_the_peer_and_a_leave_removes_it_at_once() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let mut alice = Participant::join(&origin, "grace", "alice").await;
    let mut bob = Participant::join(&origin, "grace", "bob").await;
    let added = alice
        .wait("bob's stream", Duration::from_secs(15), video_from("bob"))
        .await;
    let Event::StreamAdded { stream_id, .. } = added else {
        unreachable!()
    };
    alice
        .wait(
            "bob's first frame",
            Duration::from_secs(15),
            first_frame_from("bob"),
        )
        .await;
    // bob has told alice its mic/camera state by now (it does so to every newcomer).
    alice
        .wait(
            "bob's status",
            Duration::from_secs(5),
            |e| matches!(e, Event::RemoteStatus { peer, .. } if peer == "bob"),
        )
        .await;

    // 1. bob's WebSocket drops. The server reports him gone, but alice's engine shows him
    //    reconnecting, then re-binds the same stream when he is back.
    let t_drop = Instant::now();
    let m = alice.mark();
    bob.cmd
        .send(Command::Simulate(Simulation::DropSignalling))
        .await
        .expect("engine");
    alice
        .wait_after(
            m,
            "bob reconnecting",
            Duration::from_secs(10),
            state_of("bob", PeerConnectionState::Reconnecting),
        )
        .await;
    alice
        .wait_after(m, "bob back", Duration::from_secs(15), joined("bob"))
        .await;
    let again = alice
        .wait_after(
            m,
            "bob's stream again",
            Duration::from_secs(15),
            video_from("bob"),
        )
        .await;
    assert!(
        matches!(&again, Event::StreamAdded { stream_id: s, .. } if *s == stream_id),
        "the same stream id comes back (tiles re-bind, not duplicate)"
    );
    alice
        .wait_after(
            m,
            "bob connected",
            Duration::from_secs(15),
            state_of("bob", PeerConnectionState::Connected),
        )
        .await;
    assert!(
        !alice.left_since(t_drop, "bob"),
        "alice was told bob left during a signalling drop: {:?}",
        alice.kinds()
    );

    // 2. bob leaves on purpose: alice is told promptly (the bye), not after the grace period.
    let t_leave = Instant::now();
    let m = alice.mark();
    bob.cmd.send(Command::Leave).await.expect("engine");
    alice
        .wait_after(m, "bob left", Duration::from_secs(5), left("bob"))
        .await;
    assert!(
        t_leave.elapsed() < Duration::from_secs(3),
        "bob's departure took {:?}",
        t_leave.elapsed()
    );
    bob.wait("bob's own leave", Duration::from_secs(5), |e| {
        matches!(e, Event::Left)
    })
    .await;

    // 3. A peer of another SDK (never sends meshcall-status) that drops leaves at once, as the
    //    SDK semantics say.
    let carol = MeteredPeer::new(
        ClientOptions::new(
            &origin,
            Credential::token_provider(|| async { Ok::<String, String>(token("carol", "carol")) }),
        ),
        PeerSettings::loopback_only(),
    )
    .expect("options");
    carol.join("grace", true).await.expect("join");
    alice
        .wait("carol", Duration::from_secs(5), joined("carol"))
        .await;
    let t_carol = Instant::now();
    let m = alice.mark();
    carol.simulate_signalling_drop();
    alice
        .wait_after(m, "carol left", Duration::from_secs(5), left("carol"))
        .await;
    assert!(t_carol.elapsed() < Duration::from_secs(3));
    carol.close().await;
    alice.cmd.send(Command::Leave).await.expect("engine");
    alice.drain_for(Duration::from_millis(200)).await;
}

/// The Troubleshoot action end to end: blackholing bob's media makes alice's engine report him
/// reconnecting, then connected again, with video frames flowing after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholing_a_peer_shows_reconnecting_then_recovers() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let mut alice = Participant::join(&origin, "bh", "alice").await;
    let mut bob = Participant::join(&origin, "bh", "bob").await;
    alice
        .wait(
            "bob's first frame",
            Duration::from_secs(15),
            first_frame_from("bob"),
        )
        .await;
    alice
        .wait(
            "bob connected",
            Duration::from_secs(10),
            |e| matches!(e, Event::PeerConnection { id, state } if id == "bob" && *state == PeerConnectionState::Connected),
        )
        .await;
    let t0 = Instant::now();
    let (m, mb) = (alice.mark(), bob.mark());
    alice
        .cmd
        .send(Command::Simulate(Simulation::BlackholeMedia {
            peer: "bob".into(),
            duration: Duration::from_secs(4),
        }))
        .await
        .expect("engine");
    // ICE notices after its 5 s disconnected timeout (product default).
    alice
        .wait_after(
            m,
            "bob reconnecting",
            Duration::from_secs(15),
            state_of("bob", PeerConnectionState::Reconnecting),
        )
        .await;
    let went_down = t0.elapsed();
    alice
        .wait_after(
            m,
            "bob connected again",
            Duration::from_secs(40),
            state_of("bob", PeerConnectionState::Connected),
        )
        .await;
    let recovered = t0.elapsed();
    println!(
        "blackhole 4 s: reconnecting after {went_down:?}, connected again after {recovered:?}"
    );
    // bob's side saw it too (the blackhole is both ways).
    bob.wait_after(
        mb,
        "alice reconnecting (bob's view)",
        Duration::from_secs(15),
        state_of("alice", PeerConnectionState::Reconnecting),
    )
    .await;
    // Stats show bob's video decoding again after recovery.
    let decoded = |e: &Event| match e {
        Event::Stats(s) => s
            .remote_video
            .iter()
            .find(|(p, _, _)| p == "bob")
            .map(|(_, _, v)| v.frames_decoded),
        _ => None,
    };
    let m = alice.mark();
    let before = alice
        .wait_after(m, "stats", Duration::from_secs(5), |e| decoded(e).is_some())
        .await;
    let n0 = decoded(&before).unwrap_or(0);
    alice.drain_for(Duration::from_secs(3)).await;
    let n1 = alice
        .seen
        .iter()
        .rev()
        .find_map(|(_, e)| decoded(e))
        .unwrap_or(0);
    assert!(
        n1 > n0 + 10,
        "video did not resume: {n0} → {n1} frames decoded"
    );
    assert!(!alice.left_since(t0, "bob"));
    for p in [&alice, &bob] {
        p.cmd.send(Command::Leave).await.expect("engine");
    }
}

/// Devices switch mid-call without leaving: a participant who joined with no camera and no
/// microphone starts both from settings and the other side gets the video stream and hears the
/// tone; a speaker that cannot be opened is reported and the call goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_switch_mid_call() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let mut alice = Participant::join(&origin, "devices", "alice").await;
    let mut bob = Participant::join_with(
        &origin,
        "devices",
        "bob",
        VideoChoice::None,
        AudioChoice::None,
    )
    .await;
    alice
        .wait("bob", Duration::from_secs(10), joined("bob"))
        .await;
    // bob receives alice; nothing comes from bob yet.
    bob.wait(
        "alice's first frame",
        Duration::from_secs(15),
        first_frame_from("alice"),
    )
    .await;
    alice.drain_for(Duration::from_millis(500)).await;
    assert!(
        !alice
            .seen
            .iter()
            .any(|(_, e)| matches!(e, Event::StreamAdded { peer, .. } if peer == "bob")),
        "bob sends nothing before choosing a camera"
    );

    // bob picks the test pattern and the tone in settings.
    bob.cmd
        .send(Command::SetCamera(VideoChoice::Synthetic))
        .await
        .expect("engine");
    bob.wait("bob's own preview", Duration::from_secs(5), |e| {
        matches!(e, Event::LocalPreview(Some(_)))
    })
    .await;
    alice
        .wait(
            "bob's video",
            Duration::from_secs(15),
            first_frame_from("bob"),
        )
        .await;
    bob.cmd
        .send(Command::SetMicrophone(AudioChoice::Synthetic))
        .await
        .expect("engine");
    alice
        .wait("bob's tone", Duration::from_secs(15), |e| {
            matches!(e, Event::Levels { peers, .. } if peers.iter().any(|(p, l)| p == "bob" && *l > 0.05))
        })
        .await;

    // A speaker that does not exist: a clear, non-fatal error; the call goes on.
    let m = alice.mark();
    alice
        .cmd
        .send(Command::SetSpeaker(SpeakerChoice::Speaker(Some(
            "no-such-speaker".into(),
        ))))
        .await
        .expect("engine");
    let err = alice
        .wait_after(m, "the speaker error", Duration::from_secs(10), |e| {
            matches!(e, Event::Error { .. })
        })
        .await;
    let Event::Error {
        kind,
        message,
        fatal,
        ..
    } = err
    else {
        unreachable!()
    };
    assert!(!fatal);
    assert_eq!(kind, ErrorKind::Device, "{message}");
    assert!(message.starts_with("speaker:"), "{message}");
    assert!(message.contains("previous one"), "{message}");
    // Discarding always works, and bob's video still arrives afterwards.
    alice
        .cmd
        .send(Command::SetSpeaker(SpeakerChoice::None))
        .await
        .expect("engine");
    let m = alice.mark();
    alice.drain_for(Duration::from_secs(2)).await;
    assert!(
        !alice.seen[m..]
            .iter()
            .any(|(_, e)| matches!(e, Event::Error { .. })),
        "no error for the discard sink"
    );
    // Camera off by choosing "no video": bob's status says so.
    let m = alice.mark();
    bob.cmd
        .send(Command::SetCamera(VideoChoice::None))
        .await
        .expect("engine");
    alice
        .wait_after(
            m,
            "bob's camera off",
            Duration::from_secs(5),
            |e| matches!(e, Event::RemoteStatus { peer, camera_off: true, .. } if peer == "bob"),
        )
        .await;
    for p in [&alice, &bob] {
        p.cmd.send(Command::Leave).await.expect("engine");
    }
}

/// Server-side publish (REST) can put any `from` on a message. Forged meshcall control messages
/// must neither remove a member (a fake bye makes its next signalling drop look like a
/// departure) nor put words and a name in its mouth (a fake chat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_app_messages_neither_remove_nor_impersonate_a_member() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let addr = server.local_addr();
    let mut alice = Participant::join(&origin, "forge", "alice").await;
    let mut bob = Participant::join(&origin, "forge", "bob").await;
    alice
        .wait("bob", Duration::from_secs(15), joined("bob"))
        .await;
    alice
        .wait(
            "bob's status",
            Duration::from_secs(5),
            |e| matches!(e, Event::RemoteStatus { peer, .. } if peer == "bob"),
        )
        .await;
    let auth = bearer();
    let forged = [
        r#"{"from":"bob","peerMetadata":{"username":"Mallory"},"data":{"type":"meshcall-chat","text":"send me your password"}}"#,
        r#"{"from":"bob","data":{"type":"meshcall-bye"}}"#,
        r#"{"from":"nobody","data":{"type":"meshcall-status","mic_muted":true}}"#,
    ];
    for body in forged {
        let (status, text) = http(
            addr,
            "POST",
            "/v1/channels/forge/publish",
            Some(&auth),
            Some(body),
        )
        .await;
        assert_eq!(status, 200, "{text}");
    }
    let m = alice.mark();
    alice.drain_for(Duration::from_millis(800)).await;
    assert!(
        !alice.seen[m..]
            .iter()
            .any(|(_, e)| matches!(e, Event::Chat { .. })),
        "a forged chat was shown: {:?}",
        alice.kinds()
    );
    // bob's signalling drops: after the forged bye it must still be a drop, not a departure.
    let m = alice.mark();
    let bob_m = bob.mark();
    bob.cmd
        .send(Command::Simulate(Simulation::DropSignalling))
        .await
        .expect("engine");
    alice
        .wait_after(
            m,
            "bob reconnecting",
            Duration::from_secs(10),
            state_of("bob", PeerConnectionState::Reconnecting),
        )
        .await;
    assert!(
        !alice.seen[m..].iter().any(|(_, e)| left("bob")(e)),
        "a forged bye removed bob: {:?}",
        alice.kinds()
    );
    // The real thing still works: bob's own chat arrives with his name.
    alice
        .wait_after(m, "bob back", Duration::from_secs(15), joined("bob"))
        .await;
    bob.wait_after(bob_m, "bob's own drop", Duration::from_secs(15), |e| {
        matches!(
            e,
            Event::CallState {
                state: CallState::Reconnecting,
                ..
            }
        )
    })
    .await;
    let bob_m = bob.mark();
    bob.wait_after(bob_m, "bob rejoined", Duration::from_secs(15), |e| {
        matches!(
            e,
            Event::CallState {
                state: CallState::Joined,
                ..
            }
        )
    })
    .await;
    bob.cmd
        .send(Command::SendChat("hello".into()))
        .await
        .expect("engine");
    let chat = alice
        .wait(
            "bob's chat",
            Duration::from_secs(5),
            |e| matches!(e, Event::Chat { text, .. } if text == "hello"),
        )
        .await;
    assert!(
        matches!(&chat, Event::Chat { from, name, .. } if from == "bob" && name == "bob"),
        "{chat:?}"
    );
}

/// The cues played so far, from the next stats event after `mark`.
async fn cues_after(p: &mut Participant, mark: usize) -> u64 {
    match p
        .wait_after(mark, "stats", Duration::from_secs(5), |e| {
            matches!(e, Event::Stats(_))
        })
        .await
    {
        Event::Stats(s) => s.cues_played,
        _ => unreachable!("matched stats"),
    }
}

/// A newcomer and a departure each play one sound; the members found on joining do not; the
/// setting turns them off mid-call and back on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_sounds_play_for_newcomers_and_departures_only() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let (v, a) = (VideoChoice::None, AudioChoice::None);
    let mut ada = Participant::join_with(&origin, "cues", "ada", v.clone(), a.clone()).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;

    let mut bob = Participant::join_with(&origin, "cues", "bob", v.clone(), a.clone()).await;
    ada.wait("bob joined", Duration::from_secs(10), joined("bob"))
        .await;
    let m = ada.mark();
    assert_eq!(cues_after(&mut ada, m).await, 1, "a newcomer is announced");
    bob.wait("ada listed", Duration::from_secs(10), joined("ada"))
        .await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let m = bob.mark();
    assert_eq!(
        cues_after(&mut bob, m).await,
        0,
        "the people already in the room are not announced"
    );

    ada.cmd
        .send(Command::SetSounds(false))
        .await
        .expect("engine");
    let mut carol = Participant::join_with(&origin, "cues", "carol", v, a).await;
    ada.wait("carol joined", Duration::from_secs(10), joined("carol"))
        .await;
    ada.drain_for(Duration::from_millis(1_500)).await;
    let m = ada.mark();
    assert_eq!(cues_after(&mut ada, m).await, 1, "sounds off: no cue");

    ada.cmd
        .send(Command::SetSounds(true))
        .await
        .expect("engine");
    carol.cmd.send(Command::Leave).await.expect("engine");
    ada.wait("carol left", Duration::from_secs(10), left("carol"))
        .await;
    let m = ada.mark();
    assert_eq!(cues_after(&mut ada, m).await, 2, "a departure is announced");
    carol
        .wait("left", Duration::from_secs(5), |e| matches!(e, Event::Left))
        .await;
}

/// A token the user pasted cannot be refreshed: when it expires the server closes with 4002 and
/// every reconnect would be refused the same way. The call must end with a fatal error that says
/// so, within a few reconnect attempts, instead of "reconnecting" for the better part of an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_pasted_token_ends_the_call_in_words_not_endless_reconnects() {
    use meshcall::auth::MintRequest;
    let server = start(config()).await;
    let origin = server.ws_origin();
    let handle = spawn(&tokio::runtime::Handle::current(), EngineOptions::default());
    let (cmd, mut events) = handle.into_parts();
    let short = token_with(MintRequest {
        sub: "shorty".into(),
        ttl_secs: 3,
        peer_metadata: Some(serde_json::json!({"username": "Shorty"})),
        ..MintRequest::default()
    });
    let mut req = JoinRequest::new(&origin, "expiry", "Shorty", Auth::Token(short));
    req.video = VideoChoice::None;
    req.audio = AudioChoice::None;
    req.loopback_only = true;
    cmd.send(Command::Join(Box::new(req)))
        .await
        .expect("engine");
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    let (kind, message) = loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(EngineEvent::Call(Event::Error {
                kind,
                message,
                fatal: true,
                ..
            }))) => break (kind, message),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the engine stopped"),
            Err(_) => panic!("still no fatal error {:?} after joining", started.elapsed()),
        }
    };
    println!("ended after {:?}: {message}", started.elapsed());
    assert_eq!(kind, ErrorKind::CallEnded, "{message}");
    assert!(message.contains("expired"), "{message}");
}
