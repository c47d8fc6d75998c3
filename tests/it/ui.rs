//! Desktop UI tests: egui_kittest renders the real screens headless through wgpu (llvmpipe or
//! lavapipe; no DISPLAY needed) with a fake engine and synthetic video feeds.
//!
//! Snapshots live in `tests/snapshots/`; `UPDATE_SNAPSHOTS=1 cargo test --test it ui::` rewrites them
//! (look at every changed PNG before committing it). Software rasterizers differ by a few
//! levels on anti-aliased edges, so `kittest.toml` allows a small per-pixel distance and a few
//! hundred differing pixels; every test also asserts on the model, the accessibility tree or
//! exact pixels, which do not depend on the rasterizer.
//!
//! Time is the harness's mocked clock (`step_dt` per step) and tests advance it with
//! `run_steps`, never `run()`: a connecting tile keeps asking for spinner frames.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eframe::egui::{self, Key, Modifiers, Rect, vec2};
use eframe::egui_wgpu;
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::{Harness, SnapshotResults};
use serde_json::json;

use meshcall::engine::api::{
    Auth, CallState, Command, ErrorKind, Event, RemoteVideo, StatsSnapshot, StreamRole, VideoFeed,
};
use meshcall::media::frame::I420Frame;
use meshcall::media::receive::DecodedFrame;
use meshcall::media::stats::ReceiveStats;
use meshcall::media::synthetic::SyntheticVideo;
use meshcall::peer::PeerConnectionState;
use meshcall::ui::call::{CallAction, CallView};
use meshcall::ui::join::{AuthMode, JoinForm};
use meshcall::ui::video::{self, VideoRenderer};
use meshcall::ui::{EngineLink, MeshcallApp};

// ---------------------------------------------------------------------------------------------
// Fakes

/// Records commands and hands out queued events, like the engine would.
#[derive(Clone, Default)]
struct FakeEngine {
    sent: Arc<Mutex<Vec<Command>>>,
    events: Arc<Mutex<VecDeque<Event>>>,
}

impl FakeEngine {
    fn push(&self, e: Event) {
        self.events.lock().expect("lock").push_back(e);
    }
    fn sent(&self) -> Vec<Command> {
        self.sent.lock().expect("lock").clone()
    }
}

impl EngineLink for FakeEngine {
    fn send(&self, c: Command) -> bool {
        self.sent.lock().expect("lock").push(c);
        true
    }
    fn try_recv(&self) -> Option<Event> {
        self.events.lock().expect("lock").pop_front()
    }
}

/// A feed holding one fixed decoded frame.
struct StillFeed(Arc<DecodedFrame>);

impl VideoFeed for StillFeed {
    fn latest(&self) -> Option<Arc<DecodedFrame>> {
        Some(self.0.clone())
    }
    fn stats(&self) -> ReceiveStats {
        ReceiveStats::default()
    }
}

/// Frame `n` of the real synthetic test pattern at 320×180.
fn pattern(n: u32) -> RemoteVideo {
    let mut src = SyntheticVideo::new(320, 180).expect("geometry");
    let mut frame = src.next_frame(0);
    for i in 1..=n {
        frame = src.next_frame(u64::from(i) * 33_333);
    }
    still(frame, u64::from(n) + 1)
}

fn still(frame: I420Frame, seq: u64) -> RemoteVideo {
    RemoteVideo(Arc::new(StillFeed(Arc::new(DecodedFrame {
        frame,
        seq,
        decoded_us: 0,
    }))))
}

/// A uniform picture of one YUV colour.
fn solid(y: u8, u: u8, v: u8) -> I420Frame {
    let mut f = I420Frame::black(320, 180).expect("geometry");
    f.y.fill(y);
    f.u.fill(u);
    f.v.fill(v);
    f
}

// ---------------------------------------------------------------------------------------------
// Harness

/// A wgpu render state with the video pipeline installed, shared with the harness so tests can
/// look into the video renderer (upload counts, live textures).
fn render_state() -> egui_wgpu::RenderState {
    let rs = egui_kittest::wgpu::create_render_state(
        egui_kittest::wgpu::default_wgpu_setup(),
        egui_wgpu::RendererOptions::PREDICTABLE,
    );
    video::install(&rs, 1);
    rs
}

fn call_harness(
    view: CallView,
) -> (
    Harness<'static, (CallView, Vec<CallAction>)>,
    egui_wgpu::RenderState,
) {
    let rs = render_state();
    let harness = Harness::builder()
        .with_size(vec2(960.0, 600.0))
        .renderer(egui_kittest::wgpu::WgpuTestRenderer::from_render_state(
            rs.clone(),
        ))
        .build_ui_state(
            |ui, (view, actions): &mut (CallView, Vec<CallAction>)| {
                actions.extend(view.ui(ui));
            },
            (view, Vec::new()),
        );
    (harness, rs)
}

fn app_harness(app: MeshcallApp) -> Harness<'static, MeshcallApp> {
    Harness::builder()
        .with_size(vec2(720.0, 640.0))
        .renderer(egui_kittest::wgpu::WgpuTestRenderer::from_render_state(
            render_state(),
        ))
        .build_ui_state(|ui, app: &mut MeshcallApp| app.show(ui), app)
}

/// A call with `n` remote camera streams from connected peers named after the alphabet.
fn call_with(n: usize) -> CallView {
    let names = [
        "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Radia",
    ];
    let mut v = CallView::new("design-review", "Me");
    v.apply(Event::CallState {
        state: CallState::Joined,
        since: None,
    });
    v.apply(Event::LocalPreview(Some(pattern(40))));
    for (i, name) in names.iter().take(n).enumerate() {
        let id = format!("peer-{i}");
        v.apply(Event::PeerJoined {
            id: id.clone(),
            name: name.to_string(),
            metadata: Some(json!({ "username": name })),
        });
        v.apply(Event::PeerConnection {
            id: id.clone(),
            state: PeerConnectionState::Connected,
        });
        v.apply(Event::StreamAdded {
            peer: id,
            stream_id: format!("cam-{i}"),
            role: StreamRole::Camera,
            metadata: Some(json!({"role": "camera"})),
            video: Some(pattern(i as u32 * 7)),
            has_audio: true,
            rebound: false,
        });
    }
    v
}

/// How soon the last frame asked to be repainted.
fn repaint_delay<T>(h: &Harness<'static, T>) -> Duration {
    h.output()
        .viewport_output
        .get(&egui::ViewportId::ROOT)
        .map_or(Duration::MAX, |v| v.repaint_delay)
}

fn tile_label(h: &Harness<'static, (CallView, Vec<CallAction>)>, label: &str) -> Rect {
    h.get_by_label(label).rect()
}

/// Whether the pixels inside `r` (points; 1 px per point here) vary: a painted video, not a
/// flat fill.
fn varies(img: &image::RgbaImage, r: Rect) -> bool {
    let mut seen = std::collections::HashSet::new();
    let (x0, y0) = (r.left().max(0.0) as u32, r.top().max(0.0) as u32);
    let (x1, y1) = (
        (r.right() as u32).min(img.width()),
        (r.bottom() as u32).min(img.height()),
    );
    for y in (y0..y1).step_by(3) {
        for x in (x0..x1).step_by(3) {
            seen.insert(img.get_pixel(x, y).0);
            if seen.len() > 32 {
                return true;
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Join screen

#[test]
fn join_screen_validation_and_persistence() {
    let mut results = SnapshotResults::new();
    let engine = FakeEngine::default();
    let form = JoinForm {
        name: "Ada".into(),
        ..JoinForm::default()
    };
    let mut h = app_harness(MeshcallApp::new(Box::new(engine.clone()), form));
    h.run_steps(2);
    results.add(h.try_snapshot("join_screen"));

    // Token mode with an http:// address: explained, nothing sent.
    h.get_by_label("Token").click();
    h.run_steps(2);
    h.get_by_label("Server").focus();
    h.key_press_modifiers(Modifiers::COMMAND, Key::A);
    h.get_by_label("Server")
        .type_text("http://calls.example.org:9292");
    h.get_by_label("Token").click();
    h.run_steps(2);
    h.get_by_label("Join").click();
    h.run_steps(2);
    let err = "Use ws://calls.example.org:9292 (signalling is a WebSocket)";
    assert_eq!(h.state().error.as_deref(), Some(err));
    assert!(h.query_by_label(err).is_some(), "the error is on screen");
    assert!(engine.sent().is_empty(), "an invalid form is not sent");
    results.add(h.try_snapshot("join_screen_bad_url"));

    // Persistence: what was typed comes back on the next start (the token does not).
    h.state_mut().form.token = "a.b.c".into();
    let mut store = MemStorage::default();
    MeshcallApp::save_form(&mut store, &h.state().form);
    let back = MeshcallApp::load_form(Some(&store));
    assert_eq!(back.server, "http://calls.example.org:9292");
    assert_eq!(back.name, "Ada");
    assert_eq!(back.mode, AuthMode::Token);
    assert_eq!(back.token, "", "tokens are not written to disk");
    assert_eq!(
        MeshcallApp::load_form(None),
        JoinForm {
            devices_chosen: false,
            ..JoinForm::default()
        },
        "nothing remembered: the defaults, waiting for the first device scan"
    );
    assert!(back.devices_chosen, "a remembered form keeps its sources");
    let mut h2 = app_harness(MeshcallApp::new(Box::new(FakeEngine::default()), back));
    h2.run_steps(2);
    assert!(h2.query_by_label("Token").is_some());
    results.add(h2.try_snapshot("join_screen_remembered"));
    results.unwrap();
}

#[derive(Default)]
struct MemStorage(HashMap<String, String>);

impl eframe::Storage for MemStorage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn flush(&mut self) {}
}

#[test]
fn join_sends_the_request_and_failures_come_back_in_words() {
    let engine = FakeEngine::default();
    let form = JoinForm {
        name: "Ada".into(),
        room: "standup".into(),
        ..JoinForm::default()
    };
    let mut h = app_harness(MeshcallApp::new(Box::new(engine.clone()), form));
    h.run_steps(1);
    h.get_by_label("Join").click();
    h.run_steps(2);
    match engine.sent().as_slice() {
        [Command::Join(req)] => {
            assert_eq!(req.auth, Auth::ThisComputer);
            assert_eq!(req.room, "standup");
            assert_eq!(req.name, "Ada");
        }
        other => panic!("expected one join, got {other:?}"),
    }
    assert!(
        h.state().call().is_some(),
        "the call screen is up while joining"
    );
    // The server refuses the token: fatal error, then Idle → back to the join screen.
    engine.push(Event::Error {
        kind: ErrorKind::JoinFailed,
        message: "could not join \"standup\": connect failed (close code Some(4001))".into(),
        close_code: Some(4001),
        fatal: true,
    });
    engine.push(Event::CallState {
        state: CallState::Idle,
        since: None,
    });
    h.run_steps(2);
    assert!(h.state().call().is_none());
    let err = h.state().error.clone().unwrap_or_default();
    assert!(err.contains("the token was refused"), "{err}");
    // Unreachable server.
    h.get_by_label("Join").click();
    h.run_steps(1);
    engine.push(Event::Error {
        kind: ErrorKind::Unreachable,
        message: "could not join \"standup\": connect failed (close code None)".into(),
        close_code: None,
        fatal: true,
    });
    engine.push(Event::CallState {
        state: CallState::Idle,
        since: None,
    });
    h.run_steps(2);
    let err = h.state().error.clone().unwrap_or_default();
    assert!(err.contains("Could not reach the server"), "{err}");
}

#[test]
fn keyboard_shortcuts_and_leave() {
    let engine = FakeEngine::default();
    let form = JoinForm {
        name: "Ada".into(),
        ..JoinForm::default()
    };
    let mut app = MeshcallApp::new(Box::new(engine.clone()), form);
    app.join_from_form();
    let mut h = app_harness(app);
    engine.push(Event::CallState {
        state: CallState::Joined,
        since: None,
    });
    h.run_steps(1);
    h.key_press(Key::M);
    h.run_steps(1);
    h.key_press(Key::V);
    h.run_steps(1);
    h.key_press(Key::I);
    h.run_steps(1);
    assert!(h.state().call().is_some_and(|c| c.show_stats));
    h.key_press_modifiers(Modifiers::COMMAND, Key::W);
    h.run_steps(1);
    let sent = engine.sent();
    assert_eq!(
        &sent[1..],
        &[
            Command::SetMicMuted(true),
            Command::SetCameraEnabled(false),
            Command::Leave
        ]
    );
    assert!(h.state().call().is_none(), "back on the join screen");
}

// ---------------------------------------------------------------------------------------------
// Call screen

#[test]
fn grids_of_1_2_4_7_with_video() {
    let mut results = SnapshotResults::new();
    for n in [1usize, 2, 4, 7] {
        let (mut h, rs) = call_harness(call_with(n));
        h.run_steps(2);
        results.add(h.try_snapshot(format!("call_grid_{n}")));
        let img = h.render().expect("render");
        for name in [
            "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret",
        ]
        .iter()
        .take(n)
        {
            let r = tile_label(&h, name);
            assert!(
                varies(&img, r.shrink(20.0)),
                "{name}'s tile shows video (n={n})"
            );
        }
        // Every tile and the self-view hold textures; nothing re-uploads an unchanged frame.
        let uploads = {
            let renderer = rs.renderer.read();
            let v = renderer
                .callback_resources
                .get::<VideoRenderer>()
                .expect("installed");
            assert_eq!(v.live_tiles(), n + 1);
            v.uploads
        };
        h.run_steps(3);
        let _ = h.render().expect("render");
        let renderer = rs.renderer.read();
        let v = renderer
            .callback_resources
            .get::<VideoRenderer>()
            .expect("installed");
        assert_eq!(v.uploads, uploads, "same seq: no upload (n={n})");
    }
    results.unwrap();
}

#[test]
fn shader_converts_bt601_limited_range() {
    let mut v = CallView::new("colours", "Me");
    v.apply(Event::PeerJoined {
        id: "p".into(),
        name: "Red".into(),
        metadata: None,
    });
    v.apply(Event::PeerConnection {
        id: "p".into(),
        state: PeerConnectionState::Connected,
    });
    // Studio-swing red, and a grey, side by side.
    v.apply(Event::StreamAdded {
        peer: "p".into(),
        stream_id: "s".into(),
        role: StreamRole::Camera,
        metadata: None,
        video: Some(still(solid(81, 90, 240), 1)),
        has_audio: false,
        rebound: false,
    });
    v.apply(Event::PeerJoined {
        id: "q".into(),
        name: "Grey".into(),
        metadata: None,
    });
    v.apply(Event::PeerConnection {
        id: "q".into(),
        state: PeerConnectionState::Connected,
    });
    v.apply(Event::StreamAdded {
        peer: "q".into(),
        stream_id: "s".into(),
        role: StreamRole::Camera,
        metadata: None,
        video: Some(still(solid(126, 128, 128), 1)),
        has_audio: false,
        rebound: false,
    });
    let (mut h, _rs) = call_harness(v);
    h.run_steps(2);
    let img = h.render().expect("render");
    for (name, yuv) in [("Red", (81, 90, 240)), ("Grey", (126, 128, 128))] {
        let c = tile_label(&h, name).center();
        let px = img.get_pixel(c.x as u32, (c.y - 30.0) as u32).0;
        let want = video::bt601_to_rgb(yuv.0, yuv.1, yuv.2);
        for k in 0..3 {
            assert!(
                px[k].abs_diff(want[k]) <= 3,
                "{name}: rendered {px:?}, BT.601 says {want:?}"
            );
        }
    }
}

#[test]
fn screen_share_spotlight_and_name_tags() {
    let mut results = SnapshotResults::new();
    let mut v = call_with(3);
    // Grace shares her screen; the stream names itself.
    v.apply(Event::StreamAdded {
        peer: "peer-1".into(),
        stream_id: "screen-1".into(),
        role: StreamRole::Screen,
        metadata: Some(json!({"role": "screen", "username": "Grace's slides"})),
        video: Some(pattern(90)),
        has_audio: false,
        rebound: false,
    });
    // A peer with no name anywhere.
    v.apply(Event::PeerJoined {
        id: "anon".into(),
        name: meshcall::engine::api::display_name(None),
        metadata: None,
    });
    v.apply(Event::PeerConnection {
        id: "anon".into(),
        state: PeerConnectionState::Connected,
    });
    v.apply(Event::StreamAdded {
        peer: "anon".into(),
        stream_id: "cam-x".into(),
        role: StreamRole::Camera,
        metadata: None,
        video: Some(pattern(3)),
        has_audio: true,
        rebound: false,
    });
    let (mut h, _rs) = call_harness(v);
    h.run_steps(2);
    results.add(h.try_snapshot("call_screen_share_spotlight"));
    let spot = tile_label(&h, "Grace's slides, screen");
    let others: Vec<Rect> = ["Ada", "Grace", "Alan", "Anonymous"]
        .iter()
        .map(|n| tile_label(&h, n))
        .collect();
    for r in &others {
        assert!(spot.area() > 4.0 * r.area(), "the share is the big tile");
        assert!(r.top() > spot.bottom(), "the others are in the strip below");
    }
    let img = h.render().expect("render");
    assert!(varies(&img, spot.shrink(40.0)));
    results.unwrap();
}

#[test]
fn reconnecting_peer_spins_and_recovered_peer_does_not() {
    let mut results = SnapshotResults::new();
    let mut v = call_with(2);
    v.apply(Event::PeerConnection {
        id: "peer-1".into(),
        state: PeerConnectionState::Reconnecting,
    });
    let (mut h, _rs) = call_harness(v);
    h.run_steps(3);
    assert!(h.query_by_label("Grace, connecting").is_some());
    assert!(h.query_by_label("Ada").is_some(), "the other tile is calm");
    results.add(h.try_snapshot("call_peer_reconnecting"));
    // The spinner asks for ~20 fps while it is up…
    let repaint = repaint_delay(&h);
    assert!(repaint <= Duration::from_millis(50), "{repaint:?}");
    // …and a new receiver arrives with the recovered connection (re-bound tile).
    h.state_mut().0.apply(Event::PeerConnection {
        id: "peer-1".into(),
        state: PeerConnectionState::Connected,
    });
    h.state_mut().0.apply(Event::StreamAdded {
        peer: "peer-1".into(),
        stream_id: "cam-1".into(),
        role: StreamRole::Camera,
        metadata: None,
        video: Some(pattern(50)),
        has_audio: true,
        rebound: true,
    });
    h.run_steps(2);
    assert!(h.query_by_label("Grace, connecting").is_none());
    assert!(h.query_by_label("Grace").is_some());
    results.add(h.try_snapshot("call_peer_recovered"));
    // Nothing connecting: no spinner-rate repaint any more (the still self-view polls at 4 Hz,
    // the call clock at 1 Hz).
    h.run_steps(1);
    let repaint = repaint_delay(&h);
    assert!(repaint >= Duration::from_millis(200), "{repaint:?}");
    results.unwrap();
}

#[test]
fn signalling_banner_counts_retries_and_offers_rejoin() {
    let mut results = SnapshotResults::new();
    let mut v = call_with(2);
    v.apply(Event::CallState {
        state: CallState::Reconnecting,
        since: Some(Duration::from_secs(7)),
    });
    let (mut h, _rs) = call_harness(v);
    h.run_steps(1);
    let text = h
        .query_by_label_contains("Connection to the server lost")
        .and_then(|n| n.accesskit_node().value())
        .unwrap_or_default();
    assert!(text.contains("Connection to the server lost"), "{text}");
    results.add(h.try_snapshot("call_signalling_banner"));
    assert!(h.query_by_label("Leave and rejoin").is_none());
    h.get_by_label("Retry now").click();
    h.run_steps(1);
    assert!(h.state().1.contains(&CallAction::Send(Command::RetryNow)));
    // 30 s later (mocked clock: 4 steps per second).
    h.run_steps(4 * 25);
    assert!(
        h.query_by_label_contains("Still reconnecting after")
            .is_some()
    );
    h.get_by_label("Leave and rejoin").click();
    h.run_steps(1);
    assert!(h.state().1.contains(&CallAction::Rejoin));
    results.add(h.try_snapshot("call_signalling_banner_30s"));
    // Back online: the banner goes.
    h.state_mut().0.apply(Event::CallState {
        state: CallState::Joined,
        since: None,
    });
    h.run_steps(1);
    assert!(h.query_by_label("Retry now").is_none());
    results.unwrap();
}

#[test]
fn no_video_tile_shows_name_ring_status_and_stats() {
    let mut results = SnapshotResults::new();
    let mut v = call_with(2);
    // Alan sends audio only and is talking; Ada's camera is off and her mic muted.
    v.apply(Event::PeerJoined {
        id: "alan".into(),
        name: "Alan Kay".into(),
        metadata: None,
    });
    v.apply(Event::PeerConnection {
        id: "alan".into(),
        state: PeerConnectionState::Connected,
    });
    v.apply(Event::StreamAdded {
        peer: "alan".into(),
        stream_id: "mic".into(),
        role: StreamRole::Camera,
        metadata: None,
        video: None,
        has_audio: true,
        rebound: false,
    });
    v.apply(Event::RemoteStatus {
        peer: "peer-0".into(),
        mic_muted: true,
        camera_off: true,
    });
    v.apply(Event::Levels {
        local: 0.0,
        peers: vec![("alan".into(), 0.2), ("peer-1".into(), 0.01)],
    });
    v.apply(Event::Stats(Box::new(StatsSnapshot {
        remote_video: vec![(
            "peer-1".into(),
            "cam-1".into(),
            ReceiveStats {
                packets: 1000,
                packets_lost: 50,
                fps: 29.8,
                bitrate_bps: 1_240_000,
                width: 1280,
                height: 720,
                jitter_ms: 6.0,
                ..ReceiveStats::default()
            },
        )],
        ..StatsSnapshot::default()
    })));
    v.show_stats = true;
    let (mut h, _rs) = call_harness(v);
    h.run_steps(2);
    assert!(h.query_by_label("Alan Kay, speaking").is_some());
    assert!(h.query_by_label("Ada, muted, camera off").is_some());
    assert_eq!(h.state().0.active_speaker(), Some("alan"));
    results.add(h.try_snapshot("call_audio_only_status_stats"));
    results.unwrap();
}

#[test]
fn chat_troubleshoot_and_invite() {
    let (mut h, _rs) = call_harness(call_with(2));
    h.run_steps(1);
    // Troubleshoot → ICE restart on Grace, then a signalling drop.
    h.get_by_label("Troubleshoot").click();
    h.run_steps(2);
    h.get_by_label("Grace (connected)").click();
    h.run_steps(1);
    h.get_by_label("Troubleshoot").click();
    h.run_steps(2);
    h.get_by_label("Drop the signalling connection").click();
    h.run_steps(1);
    h.get_by_label("Invite a test participant").click();
    h.run_steps(1);
    assert_eq!(
        std::mem::take(&mut h.state_mut().1),
        vec![
            CallAction::Send(Command::Simulate(
                meshcall::engine::api::Simulation::RestartIce {
                    peer: "peer-1".into()
                }
            )),
            CallAction::Send(Command::Simulate(
                meshcall::engine::api::Simulation::DropSignalling
            )),
            CallAction::Send(Command::InviteTestParticipant),
        ]
    );
    // Chat: an incoming message counts as unread until the panel opens.
    h.state_mut().0.apply(Event::Chat {
        from: "peer-0".into(),
        name: "Ada".into(),
        text: "can you see my slides?".into(),
    });
    h.run_steps(1);
    h.get_by_label("Chat (1)").click();
    h.run_steps(1);
    assert!(h.query_by_label("can you see my slides?").is_some());
    h.get_by_label("Message").focus();
    h.get_by_label("Message").type_text("yes, loud and clear");
    h.run_steps(1);
    h.get_by_label("Send").click();
    h.run_steps(2);
    // While typing, letters are text, not shortcuts: no mute from the "m"s above.
    assert_eq!(
        h.state().1,
        vec![CallAction::Send(Command::SendChat(
            "yes, loud and clear".into()
        ))]
    );
    assert!(h.query_by_label("yes, loud and clear").is_some());
}

#[test]
fn enter_sends_chat_and_the_toolbar_still_works() {
    let (mut h, _rs) = call_harness(call_with(2));
    h.run_steps(1);
    h.get_by_label("Chat").click();
    h.run_steps(1);
    h.get_by_label("Message").focus();
    h.get_by_label("Message").type_text("hi");
    h.key_press(Key::Enter);
    h.run_steps(2);
    assert_eq!(
        std::mem::take(&mut h.state_mut().1),
        vec![CallAction::Send(Command::SendChat("hi".into()))]
    );
    h.get_by_label("Stats (I)").click();
    h.run_steps(1);
    assert!(h.state().0.show_stats);
    h.get_by_label("Troubleshoot").click();
    h.run_steps(2);
    assert!(h.query_by_label("Grace (connected)").is_some(), "menu open");
}

#[test]
fn malformed_frames_from_a_peer_are_skipped_not_fatal() {
    let bad = |width: usize, height: usize, y: usize| I420Frame {
        width,
        height,
        y: vec![100; y],
        u: vec![128; width * height / 4],
        v: vec![128; width * height / 4],
        capture_us: 0,
    };
    let frames = [
        bad(321, 180, 321 * 180),   // odd width
        bad(320, 180, 100),         // short luma plane
        bad(40_000, 2, 40_000 * 2), // wider than any texture limit
    ];
    let mut v = CallView::new("bad", "Me");
    for (i, f) in frames.into_iter().enumerate() {
        let id = format!("p{i}");
        v.apply(Event::PeerConnection {
            id: id.clone(),
            state: PeerConnectionState::Connected,
        });
        v.apply(Event::StreamAdded {
            peer: id,
            stream_id: "s".into(),
            role: StreamRole::Camera,
            metadata: None,
            video: Some(still(f, 1)),
            has_audio: false,
            rebound: false,
        });
    }
    let (mut h, rs) = call_harness(v);
    h.run_steps(2);
    let _ = h.render().expect("render");
    let renderer = rs.renderer.read();
    let v = renderer
        .callback_resources
        .get::<VideoRenderer>()
        .expect("installed");
    assert_eq!(v.live_tiles(), 0, "no texture for a malformed picture");
    assert_eq!(v.uploads, 0);
}

/// The app, joined from its form as "Ada", with the call up (the engine said Joined).
fn app_in_call(
    engine: &FakeEngine,
    prepare: impl FnOnce(&mut MeshcallApp),
) -> Harness<'static, MeshcallApp> {
    let form = JoinForm {
        name: "Ada".into(),
        ..JoinForm::default()
    };
    let mut app = MeshcallApp::new(Box::new(engine.clone()), form);
    prepare(&mut app);
    app.join_from_form();
    let mut h = app_harness(app);
    engine.push(Event::CallState {
        state: CallState::Joined,
        since: None,
    });
    h.run_steps(1);
    h
}

#[test]
fn settings_rejoin_applies_the_new_resolution() {
    let engine = FakeEngine::default();
    let mut h = app_in_call(&engine, |_| {});
    h.get_by_label("Settings").click();
    h.run_steps(2);
    h.get_by_label("Resolution").click();
    h.run_steps(2);
    h.get_by_label("640×360").click();
    h.run_steps(2);
    h.get_by_label("Rejoin with these settings").click();
    h.run_steps(1);
    // The old call must end before the new join goes out.
    assert_eq!(engine.sent().last(), Some(&Command::Leave));
    engine.push(Event::CallState {
        state: CallState::Left,
        since: None,
    });
    engine.push(Event::Left);
    h.run_steps(2);
    match engine.sent().last() {
        Some(Command::Join(req)) => assert_eq!((req.width, req.height), (640, 360)),
        other => panic!("expected a rejoin, got {other:?}"),
    }
    assert!(h.state().call().is_some());
}

#[test]
fn settings_switch_devices_mid_call_without_rejoining() {
    use meshcall::engine::api::{AudioChoice, SpeakerChoice, VideoChoice};
    use meshcall::media::devices::{SinkChoice, SourceChoice};
    use meshcall::media::processing::ProcessingSettings;
    use meshcall::media::source::DeviceInfo;
    use meshcall::ui::devices::DeviceLists;
    let dev = |id: &str, name: &str| DeviceInfo {
        id: id.into(),
        name: name.into(),
    };
    // The machine's devices, as a scan would have found them.
    let lists = DeviceLists {
        cameras: vec![
            SourceChoice::Camera(dev("cam-usb", "USB Camera")),
            SourceChoice::Synthetic {
                label: "Synthetic test pattern".into(),
            },
        ],
        microphones: vec![SourceChoice::Microphone(dev("mic-2", "Headset Mic"))],
        speakers: vec![
            SinkChoice::Speaker(dev("spk-2", "Headset")),
            SinkChoice::Discard {
                label: "No sound (discard audio)".into(),
            },
        ],
        screens: Vec::new(),
        complete: true,
    };
    let engine = FakeEngine::default();
    let mut h = app_in_call(&engine, |app| app.devices.set(lists));
    h.get_by_label("Settings").click();
    h.run_steps(2);
    let before = engine.sent().len();
    for (picker, entry) in [
        ("Camera", "USB Camera"),
        ("Microphone", "Headset Mic"),
        ("Speaker", "Headset"),
    ] {
        h.get_by_label(picker).click();
        h.run_steps(2);
        h.get_by_label(entry).click();
        h.run_steps(2);
    }
    let sent = engine.sent();
    assert_eq!(
        &sent[before..],
        &[
            Command::SetCamera(VideoChoice::Camera("cam-usb".into())),
            Command::SetMicrophone(AudioChoice::Microphone(Some("mic-2".into()))),
            Command::SetAudioProcessing(ProcessingSettings::ON),
            Command::SetSpeaker(SpeakerChoice::Speaker(Some("spk-2".into()))),
        ],
        "each pick goes to the engine at once (a microphone with its processing); no leave, \
         no rejoin"
    );
    // Microphone processing toggles apply at once too, and are remembered.
    h.get_by_label("Noise suppression").click();
    h.run_steps(2);
    let expected = ProcessingSettings {
        noise_suppression: false,
        ..ProcessingSettings::ON
    };
    assert_eq!(
        engine.sent().last(),
        Some(&Command::SetAudioProcessing(expected))
    );
    assert_eq!(h.state().form.audio_processing, expected);
    // Remembered for the next call too.
    let form = &h.state().form;
    assert_eq!(form.camera_id, "cam-usb");
    assert_eq!(form.mic_id, "mic-2");
    assert_eq!(form.speaker_id, "spk-2");
    assert!(h.state().call().is_some(), "still in the call");
}

/// A feed whose receive pipeline failed on an internal error.
struct FailedFeed;

impl VideoFeed for FailedFeed {
    fn latest(&self) -> Option<Arc<DecodedFrame>> {
        None
    }
    fn stats(&self) -> ReceiveStats {
        ReceiveStats {
            failed: Some("receive: depacketizer bug".into()),
            ..ReceiveStats::default()
        }
    }
}

#[test]
fn a_failed_video_pipeline_says_so_instead_of_freezing() {
    let mut v = call_with(1);
    v.apply(Event::StreamAdded {
        peer: "peer-0".into(),
        stream_id: "cam-0".into(),
        role: StreamRole::Camera,
        metadata: Some(json!({"role": "camera"})),
        video: Some(RemoteVideo(Arc::new(FailedFeed))),
        has_audio: true,
        rebound: false,
    });
    let (mut h, _rs) = call_harness(v);
    h.run_steps(2);
    assert!(
        h.query_by_label("Ada, video stopped").is_some(),
        "the tile tells the user the video stopped"
    );
}

#[test]
fn talking_while_muted_shows_you_are_muted() {
    let mut v = call_with(1);
    v.local.mic_muted = true;
    for k in 0..8 {
        v.set_now(f64::from(k) * 0.1);
        v.apply(Event::Levels {
            local: 0.05,
            peers: Vec::new(),
        });
    }
    let (mut h, _rs) = call_harness(v);
    h.run_steps(2);
    assert!(
        h.query_by_label("You are muted — press M to talk")
            .is_some(),
        "the notice is on screen"
    );
}

#[test]
fn the_s_key_opens_the_screen_picker_and_a_pick_starts_the_share() {
    use meshcall::engine::api::VideoChoice;
    let engine = FakeEngine::default();
    let form = JoinForm {
        name: "Ada".into(),
        ..JoinForm::default()
    };
    let mut app = MeshcallApp::new(Box::new(engine.clone()), form);
    app.join_from_form();
    let mut h = app_harness(app);
    engine.push(Event::CallState {
        state: CallState::Joined,
        since: None,
    });
    h.run_steps(1);
    let before = engine.sent().len();
    h.key_press(Key::S);
    h.run_steps(2);
    assert_eq!(engine.sent().len(), before, "S alone shares nothing");
    assert!(h.state().call().is_some_and(|c| c.share_picker_open));
    h.get_by_label("Test pattern (synthetic share)").click();
    h.run_steps(2);
    assert_eq!(
        engine.sent().last(),
        Some(&Command::StartScreenShare(VideoChoice::Synthetic))
    );
    assert!(
        h.state()
            .call()
            .is_some_and(|c| c.local.sharing && !c.share_picker_open)
    );
    // S again stops the share.
    h.key_press(Key::S);
    h.run_steps(1);
    assert_eq!(engine.sent().last(), Some(&Command::StopScreenShare));
}

/// A new user's form (nothing remembered) picks the system's camera and microphone from the
/// first scan, or the test sources with a note when there are none.
#[test]
fn a_new_user_gets_the_real_devices_or_a_note_saying_why_not() {
    use meshcall::media::devices::{SinkChoice, SourceChoice};
    use meshcall::media::source::DeviceInfo;
    use meshcall::ui::devices::DeviceLists;
    use meshcall::ui::join::{AudioSource, VideoSource};
    let dev = |id: &str, name: &str| DeviceInfo {
        id: id.into(),
        name: name.into(),
    };
    let with_devices = DeviceLists {
        cameras: vec![
            SourceChoice::Camera(dev("/dev/video2", "USB Camera")),
            SourceChoice::Synthetic {
                label: "Synthetic test pattern".into(),
            },
        ],
        microphones: vec![SourceChoice::Microphone(dev("mic-1", "Built-in Mic"))],
        speakers: vec![SinkChoice::Speaker(dev("spk-1", "Speakers"))],
        screens: Vec::new(),
        complete: true,
    };
    let without = DeviceLists {
        cameras: vec![SourceChoice::Synthetic {
            label: "No camera found".into(),
        }],
        microphones: vec![SourceChoice::Synthetic {
            label: "No microphone found".into(),
        }],
        speakers: Vec::new(),
        screens: Vec::new(),
        complete: true,
    };
    for (lists, video, audio, note) in [
        (
            with_devices,
            VideoSource::Camera,
            AudioSource::Microphone,
            None,
        ),
        (
            without,
            VideoSource::TestPattern,
            AudioSource::TestTone,
            Some(
                "No camera found: sending a test pattern. No microphone found: sending a test tone.",
            ),
        ),
    ] {
        let form = MeshcallApp::load_form(None);
        assert!(!form.devices_chosen, "nothing remembered: a new user");
        let mut app = MeshcallApp::new(Box::new(FakeEngine::default()), form);
        app.devices.set(lists);
        let mut h = app_harness(app);
        h.run_steps(2);
        let form = &h.state().form;
        assert!(form.devices_chosen);
        assert_eq!((form.video, form.audio), (video, audio));
        assert_eq!(form.device_note.as_deref(), note);
        if video == VideoSource::Camera {
            assert_eq!(form.camera_id, "/dev/video2");
            assert_eq!(form.mic_id, "", "the system default microphone");
        }
        if let Some(n) = note {
            assert!(h.query_by_label(n).is_some(), "the note is on the form");
        }
    }
}

#[test]
fn a_tiles_volume_slider_sends_the_participants_volume() {
    let (mut h, _rs) = call_harness(call_with(2));
    h.run_steps(2);
    h.get_by_label("Grace").click_secondary();
    h.run_steps(2);
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "Volume")
        .set_value_accesskit(150.0);
    h.run_steps(2);
    let (_, sent) = h.state();
    assert!(
        sent.iter().any(|a| *a
            == CallAction::Send(Command::SetPeerVolume {
                peer: "peer-1".into(),
                volume: 1.5
            })),
        "{sent:?}"
    );
    assert_eq!(h.state().0.volumes.get("peer-1"), Some(&1.5), "remembered");
}
