//! `meshcall bench ui`: what the desktop app costs to draw video, and what it costs in a call.
//!
//! Default mode: the real app window (eframe, wgpu, the call screen, the WGSL YUV→RGB tiles)
//! shows N remote tiles of 1280×720 at 30 fps plus the self-view. The frames come from a
//! stand-in for the decoders (pre-rendered synthetic pictures, copied per frame, their cost
//! measured and reported separately), so what is measured is the UI: layout, per-frame texture
//! uploads, the shader, the present. Two phases:
//! 1. *continuous*: a repaint is requested every frame, so the interval between frames is the
//!    time one frame takes end to end → frame time p50/p99;
//! 2. *as shipped*: repaints only when a picture arrives (paced to ≤ 60 Hz) → frames drawn per
//!    second, the process's CPU and RSS.
//!
//! `--call` mode: the real app (`meshcall join`, GUI) in a 4-party 720p30 call on an in-process
//! server, with three `meshcall join --headless --no-receive` peers (they only send): the whole
//! app's CPU (decode ×3, encode ×1, UI) and RSS from /proc over a window.
//!
//! Both need a display (`$DISPLAY`, e.g. under Xvfb, where wgpu runs on llvmpipe: every pixel is
//! drawn by the CPU). Prints numbers; asserts nothing.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eframe::egui::{self, Ui};

use super::LatencyHistogram;
use crate::engine::api::{
    Auth, CallState, Command, Event, JoinRequest, RemoteVideo, StreamRole, VideoFeed,
};
use crate::media::receive::DecodedFrame;
use crate::media::stats::ReceiveStats;
use crate::media::synthetic::SyntheticVideo;
use crate::ui::app::{EngineLink, MeshcallApp};
use crate::ui::{JoinForm, RepaintPacer, VIDEO_REPAINT_INTERVAL, native_options, video};

#[derive(Debug, Clone, clap::Args)]
pub struct UiBenchArgs {
    /// Remote video tiles (each 1280×720 at 30 fps).
    #[arg(long, default_value_t = 9)]
    pub tiles: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Measure the real app in a 4-party 720p30 call instead (spawns the app and three headless
    /// peers; run inside a loopback-only network namespace).
    #[arg(long)]
    pub call: bool,
}

pub fn run(args: UiBenchArgs) -> Result<std::process::ExitCode, String> {
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        return Err("no display: run under a desktop session or `xvfb-run -a`".into());
    }
    if args.call {
        let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        return rt.block_on(app_in_call(args.seconds));
    }
    tiles(args)
}

// ---------------------------------------------------------------------------------------------
// Tiles: the UI alone

/// A remote stream as the renderer sees it: the latest picture.
#[derive(Default)]
struct BenchFeed(Mutex<Option<Arc<DecodedFrame>>>);

impl VideoFeed for BenchFeed {
    fn latest(&self) -> Option<Arc<DecodedFrame>> {
        self.0.lock().ok().and_then(|f| f.clone())
    }

    fn stats(&self) -> ReceiveStats {
        ReceiveStats::default()
    }
}

/// Plays the engine's part: one scripted call, then nothing.
struct ScriptedEngine(Mutex<VecDeque<Event>>);

impl EngineLink for ScriptedEngine {
    fn send(&self, _c: Command) -> bool {
        true
    }

    fn try_recv(&self) -> Option<Event> {
        self.0.lock().ok()?.pop_front()
    }
}

/// The decoders' stand-in: every feed gets a new 720p picture 30 times a second, the feeds
/// staggered over the frame period like independent streams. Returns the busy time it spent.
fn feed_frames(
    feeds: Vec<Arc<BenchFeed>>,
    poke: Arc<dyn Fn() + Send + Sync>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    busy: Arc<Mutex<Duration>>,
) {
    let mut pattern = match SyntheticVideo::new(1280, 720) {
        Ok(p) => p,
        Err(_) => return,
    };
    let pictures: Vec<_> = (0..8u64).map(|i| pattern.next_frame(i * 33_333)).collect();
    let period = Duration::from_micros(33_333);
    let slot = period / feeds.len().max(1) as u32;
    let mut seq = 0u64;
    let mut next = Instant::now();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        seq += 1;
        for (i, feed) in feeds.iter().enumerate() {
            next += slot;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let t = Instant::now();
            let mut frame = pictures[(seq as usize + i) % pictures.len()].clone();
            frame.capture_us = crate::media::source::media_clock_us();
            let f = Arc::new(DecodedFrame {
                frame,
                seq,
                decoded_us: crate::media::source::media_clock_us(),
            });
            if let Ok(mut l) = feed.0.lock() {
                *l = Some(f);
            }
            poke();
            if let Ok(mut b) = busy.lock() {
                *b += t.elapsed();
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Warmup,
    Continuous,
    AsShipped,
    Done,
}

struct BenchApp {
    app: MeshcallApp,
    tiles: usize,
    phase: Phase,
    phase_start: Instant,
    seconds: Duration,
    last_frame: Option<Instant>,
    frame_time: LatencyHistogram,
    build_time: LatencyHistogram,
    frames: u64,
    cpu_at_start: f64,
    feeder_busy: Arc<Mutex<Duration>>,
    feeder_at_start: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
    report: Vec<String>,
}

impl BenchApp {
    fn next_phase(&mut self, now: Instant) {
        let secs = now.duration_since(self.phase_start).as_secs_f64();
        let cpu = super::process_cpu_seconds(std::process::id()).unwrap_or(0.0);
        let feeder = self.feeder_busy.lock().map(|b| *b).unwrap_or_default();
        let cpu_pct = (cpu - self.cpu_at_start) / secs * 100.0;
        let feeder_pct = (feeder - self.feeder_at_start).as_secs_f64() / secs * 100.0;
        let fps = self.frames as f64 / secs;
        let rss = super::process_rss_mib(std::process::id()).unwrap_or(0.0);
        match self.phase {
            Phase::Continuous => self.report.push(format!(
                "{} tiles, continuous repaint: frame time p50 {:.1} ms, p99 {:.1} ms ({fps:.0} frames/s); \
                 UI build (egui layout, no raster) p50 {:.2} ms, p99 {:.2} ms",
                self.tiles,
                self.frame_time.quantile_us(0.5) as f64 / 1000.0,
                self.frame_time.quantile_us(0.99) as f64 / 1000.0,
                self.build_time.quantile_us(0.5) as f64 / 1000.0,
                self.build_time.quantile_us(0.99) as f64 / 1000.0,
            )),
            Phase::AsShipped => self.report.push(format!(
                "{} tiles, as shipped (repaint on new pictures, ≤ 60 Hz): {fps:.0} frames/s; \
                 process CPU {cpu_pct:.0} % of one core, of which the frame feeder (decoder \
                 stand-in) {feeder_pct:.0} % → UI ≈ {:.0} %; RSS {rss:.0} MiB",
                self.tiles,
                cpu_pct - feeder_pct
            )),
            _ => {}
        }
        self.phase = match self.phase {
            Phase::Warmup => Phase::Continuous,
            Phase::Continuous => Phase::AsShipped,
            Phase::AsShipped | Phase::Done => Phase::Done,
        };
        self.phase_start = now;
        self.frames = 0;
        self.frame_time = LatencyHistogram::default();
        self.build_time = LatencyHistogram::default();
        self.last_frame = None;
        self.cpu_at_start = cpu;
        self.feeder_at_start = feeder;
    }
}

impl eframe::App for BenchApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        let now = Instant::now();
        let phase_len = if self.phase == Phase::Warmup {
            Duration::from_secs(3)
        } else {
            self.seconds
        };
        if now.duration_since(self.phase_start) >= phase_len {
            self.next_phase(now);
        }
        if let Some(last) = self.last_frame {
            self.frame_time
                .record_us(now.duration_since(last).as_micros() as u64);
        }
        self.last_frame = Some(now);
        self.frames += 1;
        let t = Instant::now();
        self.app.show(ui);
        self.build_time.record_us(t.elapsed().as_micros() as u64);
        match self.phase {
            Phase::Warmup | Phase::Continuous => ui.ctx().request_repaint(),
            Phase::AsShipped => {
                // Wake up at the end of the phase even if no picture arrives.
                ui.ctx()
                    .request_repaint_after(phase_len.saturating_sub(now - self.phase_start));
            }
            Phase::Done => {
                self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
                for line in self.report.drain(..) {
                    println!("{line}");
                }
                ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
            }
        }
    }
}

fn tiles(args: UiBenchArgs) -> Result<std::process::ExitCode, String> {
    let n = args.tiles.clamp(1, 25);
    println!(
        "meshcall bench ui — {n} remote tiles of 1280×720 @ 30 fps + self-view, window 1100×720, \
         {} s per phase",
        args.seconds
    );
    let seconds = Duration::from_secs(args.seconds.max(1));
    let result = eframe::run_native(
        "meshcall bench ui",
        eframe::NativeOptions {
            // The window is always 1100×720: never restored from (or saved over) the app's
            // remembered geometry.
            persist_window: false,
            ..native_options("meshcall bench ui")
        },
        Box::new(move |cc| {
            match &cc.wgpu_render_state {
                Some(rs) => {
                    let info = rs.adapter.get_info();
                    println!("renderer: {} ({:?})", info.name, info.device_type);
                    video::install(rs, 1);
                }
                None => return Err("no wgpu render state".into()),
            }
            let feeds: Vec<Arc<BenchFeed>> = (0..=n).map(|_| Arc::default()).collect();
            let mut script = VecDeque::new();
            script.push_back(Event::Joined {
                self_id: "me".into(),
                room: "bench".into(),
            });
            script.push_back(Event::CallState {
                state: CallState::Joined,
                since: None,
            });
            script.push_back(Event::LocalPreview(Some(RemoteVideo(feeds[0].clone()))));
            for (i, feed) in feeds.iter().enumerate().skip(1) {
                let id = format!("peer-{i}");
                script.push_back(Event::PeerJoined {
                    id: id.clone(),
                    name: format!("Participant {i}"),
                    metadata: None,
                });
                script.push_back(Event::PeerConnection {
                    id: id.clone(),
                    state: crate::peer::PeerConnectionState::Connected,
                });
                script.push_back(Event::StreamAdded {
                    peer: id,
                    stream_id: format!("camera-{i}"),
                    role: StreamRole::Camera,
                    metadata: None,
                    video: Some(RemoteVideo(feed.clone())),
                    has_audio: false,
                    rebound: false,
                });
            }
            let pacer = Arc::new(RepaintPacer::new(
                cc.egui_ctx.clone(),
                VIDEO_REPAINT_INTERVAL,
            ));
            let mut app = MeshcallApp::new(
                Box::new(ScriptedEngine(Mutex::new(script))),
                JoinForm::default(),
            )
            .with_pacer(pacer.clone());
            app.join(JoinRequest::new(
                "ws://bench",
                "bench",
                "Me",
                Auth::ThisComputer,
            ));
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let busy = Arc::new(Mutex::new(Duration::ZERO));
            let (s, b) = (stop.clone(), busy.clone());
            let poke: Arc<dyn Fn() + Send + Sync> = Arc::new(move || pacer.request());
            std::thread::Builder::new()
                .name("bench-frames".into())
                .spawn(move || feed_frames(feeds, poke, s, b))
                .map_err(|e| e.to_string())?;
            Ok(Box::new(BenchApp {
                app,
                tiles: n,
                phase: Phase::Warmup,
                phase_start: Instant::now(),
                seconds,
                last_frame: None,
                frame_time: LatencyHistogram::default(),
                build_time: LatencyHistogram::default(),
                frames: 0,
                cpu_at_start: 0.0,
                feeder_busy: busy,
                feeder_at_start: Duration::ZERO,
                stop,
                report: Vec::new(),
            }))
        }),
    );
    result.map_err(|e| format!("cannot open the window: {e}"))?;
    Ok(std::process::ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// The real app in a 4-party call

async fn app_in_call(seconds: u64) -> Result<std::process::ExitCode, String> {
    let (server, kid, secret) = super::call::bench_server().await?;
    let origin = server.ws_origin();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let room = "bench-ui-4";
    let total = seconds + 30;
    println!(
        "meshcall bench ui --call — the app + 3 headless peers in a 720p30 call on {origin}, \
         {seconds} s window"
    );
    // Its own settings directory: the bench never reads or overwrites the user's.
    let home = std::env::temp_dir().join(format!("meshcall-bench-ui-{}", std::process::id()));
    let mut app = tokio::process::Command::new(&exe)
        .args([
            "join",
            "--server",
            &origin,
            "--room",
            room,
            "--name",
            "Measured app",
        ])
        .args(["--secret", &format!("{kid}={secret}")])
        .args([
            "--video",
            "synthetic",
            "--audio",
            "synthetic",
            "--size",
            "1280x720",
        ])
        .args(["--fps", "30", "--loopback-only"])
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| e.to_string())?;
    let app_pid = app.id().ok_or("the app exited at once")?;
    let mut others = Vec::new();
    for i in 0..3 {
        others.push(
            tokio::process::Command::new(&exe)
                .args(["join", "--headless", "--loopback-only", "--server", &origin])
                .args(["--room", room, "--name", &format!("other-{i}")])
                .args(["--secret", &format!("{kid}={secret}")])
                .args(["--video", "synthetic", "--size", "1280x720", "--no-receive"])
                .args(["--duration", &total.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| e.to_string())?,
        );
    }
    // Joining, first keyframes, rate control settling.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pids: Vec<u32> = others.iter().filter_map(|c| c.id()).collect();
    let cpu = |pid| super::process_cpu_seconds(pid).unwrap_or(0.0);
    let (a0, o0, t0) = (
        cpu(app_pid),
        pids.iter().map(|p| cpu(*p)).sum::<f64>(),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let secs = t0.elapsed().as_secs_f64();
    let (a1, o1) = (cpu(app_pid), pids.iter().map(|p| cpu(*p)).sum::<f64>());
    let rss = super::process_rss_mib(app_pid).unwrap_or(0.0);
    if let Ok(Some(status)) = app.try_wait() {
        return Err(format!("the app exited during the run: {status}"));
    }
    println!(
        "app (1 × 720p30 encode, 3 × 720p30 decode, 4 tiles drawn): CPU {:.0} % of one core, \
         RSS {rss:.0} MiB; the three sending peers together {:.0} %",
        (a1 - a0) / secs * 100.0,
        (o1 - o0) / secs * 100.0
    );
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(app_pid as i32, libc::SIGTERM);
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), app.wait()).await;
    drop(others);
    drop(server);
    let _ = std::fs::remove_dir_all(&home);
    Ok(std::process::ExitCode::SUCCESS)
}
