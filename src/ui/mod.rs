//! The desktop app (eframe on wgpu). It talks to the call engine only through
//! [`crate::engine::EngineHandle`] (commands out, events in) and owns the tokio runtime the
//! engine runs on; no webrtc or async code lives here.
//!
//! | module | what |
//! |---|---|
//! | [`app`] | the shell: screens, engine link, persistence, settings |
//! | [`join`] | the join screen, its validation, the settings pickers |
//! | [`devices`] | device listings for the pickers, scanned off the UI thread |
//! | [`call`] | the call screen's model ([`call::CallView`]) and drawing |
//! | [`layout`] | pure layout/wording rules: grid, spotlight, banner, shortcuts, quality |
//! | [`video`] | I420 planes → GPU textures → BT.601 WGSL shader via a paint callback |

pub mod app;
pub mod call;
pub mod devices;
pub mod join;
pub mod layout;
pub mod video;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use eframe::egui;

use crate::engine::{self, EngineOptions};
pub use app::{EngineLink, MeshcallApp};
pub use join::JoinForm;

/// How the app starts.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// Values from the command line that override the remembered form.
    pub overrides: FormOverrides,
    /// Join immediately (`meshcall join …` without `--headless`).
    pub auto_join: bool,
}

/// Join-screen values given on the command line.
#[derive(Debug, Clone, Default)]
pub struct FormOverrides {
    pub server: Option<String>,
    pub room: Option<String>,
    pub name: Option<String>,
    pub mode: Option<join::AuthMode>,
    pub token: Option<String>,
    pub key: Option<String>,
    pub secret: Option<(String, String)>,
    pub video: Option<join::VideoSource>,
    pub camera_id: Option<String>,
    pub audio: Option<join::AudioSource>,
    pub size: Option<(usize, usize)>,
    pub fps: Option<f32>,
    /// Restrict ICE to 127.0.0.1 (single-machine demos and tests).
    pub loopback_only: bool,
}

impl FormOverrides {
    /// Applies the command line on top of the remembered values.
    pub fn apply(&self, f: &mut JoinForm) {
        let set = |dst: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                dst.clone_from(v);
            }
        };
        set(&mut f.server, &self.server);
        set(&mut f.room, &self.room);
        set(&mut f.name, &self.name);
        set(&mut f.token, &self.token);
        set(&mut f.key, &self.key);
        set(&mut f.camera_id, &self.camera_id);
        if let Some(m) = self.mode {
            f.mode = m;
        }
        if self.secret.is_some() {
            f.secret.clone_from(&self.secret);
        }
        if let Some(v) = self.video {
            f.video = v;
        }
        if let Some(a) = self.audio {
            f.audio = a;
        }
        if self.video.is_some() || self.audio.is_some() {
            // Sources given on the command line are a choice: no first-scan defaults.
            f.devices_chosen = true;
        }
        if let Some((w, h)) = self.size {
            f.width = w;
            f.height = h;
        }
        if let Some(fps) = self.fps {
            f.fps = fps;
        }
        f.loopback_only |= self.loopback_only;
    }
}

/// Turns "a new remote frame arrived" wake-ups into at most one repaint per `min_interval`.
///
/// Every decoded frame of every stream pokes the UI. Nine 30 fps streams arrive unsynchronised,
/// so repainting per poke would draw ~270 frames a second, each paying the whole window's
/// layout and raster cost (all of it on the CPU under llvmpipe). A poke soon after the last paint
/// is deferred to `last paint + min_interval` instead; pokes in between share that repaint
/// (egui keeps the earliest pending deadline). A poke long after the last paint repaints at once,
/// so an idle call adds no display latency.
pub struct RepaintPacer {
    ctx: egui::Context,
    start: Instant,
    last_paint_us: AtomicU64,
    min_interval: Duration,
}

impl RepaintPacer {
    pub fn new(ctx: egui::Context, min_interval: Duration) -> RepaintPacer {
        RepaintPacer {
            ctx,
            start: Instant::now(),
            last_paint_us: AtomicU64::new(0),
            min_interval,
        }
    }

    /// From any thread: something new is ready to show.
    pub fn request(&self) {
        let now = self.start.elapsed();
        let last = Duration::from_micros(self.last_paint_us.load(Ordering::Relaxed));
        match (last + self.min_interval).checked_sub(now) {
            Some(wait) if !wait.is_zero() => self.ctx.request_repaint_after(wait),
            _ => self.ctx.request_repaint(),
        }
    }

    /// From the UI thread at the start of every frame.
    pub fn painted(&self) {
        let us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_paint_us.store(us, Ordering::Relaxed);
    }
}

/// The fastest the call screen redraws for new video (60 Hz; streams are ≤ 30 fps).
pub const VIDEO_REPAINT_INTERVAL: Duration = Duration::from_micros(16_667);

/// Window options shared by the app and `meshcall bench ui`.
pub fn native_options(title: &str) -> eframe::NativeOptions {
    eframe::NativeOptions {
        renderer: eframe::Renderer::Wgpu,
        viewport: egui::ViewportBuilder::default()
            .with_title(title)
            .with_app_id("meshcall")
            .with_inner_size([1100.0, 720.0])
            .with_min_inner_size([640.0, 420.0]),
        ..Default::default()
    }
}

/// Opens the window and runs until it closes.
pub fn run(options: AppOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("meshcall-engine")
        .build()
        .context("cannot start the async runtime")?;
    eframe::run_native(
        "meshcall",
        native_options("meshcall"),
        Box::new(move |cc| {
            match &cc.wgpu_render_state {
                // eframe's wgpu renderer runs without MSAA unless `multisampling` is set.
                Some(rs) => video::install(rs, 1),
                None => tracing::warn!("no wgpu render state: video tiles will stay empty"),
            }
            rt.spawn(close_on_signal(cc.egui_ctx.clone()));
            let pacer = Arc::new(RepaintPacer::new(
                cc.egui_ctx.clone(),
                VIDEO_REPAINT_INTERVAL,
            ));
            let poke = pacer.clone();
            let handle = engine::spawn(
                rt.handle(),
                EngineOptions {
                    notify: Some(Arc::new(move || poke.request())),
                    // New cameras, microphones and speakers are announced.
                    device_scan_every: Some(std::time::Duration::from_secs(5)),
                    ..EngineOptions::default()
                },
            );
            let mut form = MeshcallApp::load_form(cc.storage);
            options.overrides.apply(&mut form);
            let mut app = MeshcallApp::new(Box::new(handle), form)
                .with_runtime(rt)
                .with_pacer(pacer);
            if options.auto_join {
                app.join_from_form();
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}

/// Closes the window on SIGTERM or SIGINT as if the user had closed it, so the app leaves the
/// call cleanly (peers see a departure, not a timeout) and saves its form before exiting with
/// status 0. Without this a `kill` or Ctrl-C in the launching terminal ends the process on the
/// spot. A second signal exits at once, for a UI that no longer draws frames.
async fn close_on_signal(ctx: egui::Context) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot watch SIGTERM/SIGINT: a kill will not leave the call cleanly");
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received: closing the window");
        ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        ctx.request_repaint();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        std::process::exit(130);
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        ctx.request_repaint();
    }
}
