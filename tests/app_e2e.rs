//! The desktop app end to end, as a person sees it: the real `meshcall` binary opens its window
//! (not headless) on a private Xvfb and joins a room on a real server started here; another peer
//! publishes video; the test takes screenshots of the X screen (x11rb `GetImage`, no extra tool)
//! and checks pixels, not internals:
//!
//! 1. a headless synthetic peer (`meshcall join --headless --video synthetic`): its tile shows the
//!    moving, colourful test pattern with a static name tag in its bottom-left corner; when the
//!    peer's signalling drops (`--simulate drop-signalling@…`) the tile stays, showing the
//!    "Reconnecting…" overlay, and then comes back with moving video;
//! 2. the official JS SDK in Chromium with a fake camera (`tests/interop/js/browser-peer.mjs`):
//!    its tile shows non-uniform, moving pixels.
//!
//! Both end with SIGTERM to the app, which must close its window, leave the call (the other peer
//! sees `peer-left`) and exit 0. Screenshots are written as PNGs to
//! `$CARGO_TARGET_TMPDIR/app_e2e/<test>/` (with the app's log) for a person to look at.
//!
//! Run inside a loopback-only network namespace like every test here (`scripts/test`); all ICE
//! is limited to 127.0.0.1. Skipped, with a message, only when `Xvfb` is not installed. The two
//! tests take turns (one lock), as each starts a window, a decoder and a peer on a 2-core machine.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt as _, ImageFormat, ImageOrder};
use x11rb::rust_connection::RustConnection;

use common::interop::JsonLinesPeer;
use common::xvfb::Xvfb;
use common::*;

/// The two tests start heavy processes; run them one after the other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The headless peer's display name, which its tile's name tag must show.
const BOT_NAME: &str = "Synthetic Bot";

const SCREEN_W: u16 = 1280;
const SCREEN_H: u16 = 720;

// ---------------------------------------------------------------------------------------------
// Xvfb and screenshots

fn xvfb_or_skip() -> Option<Xvfb> {
    Xvfb::start_or_skip(&[&format!("{SCREEN_W}x{SCREEN_H}")])
}

/// The Xvfb's first screen, for screenshots.
fn connect(x: &Xvfb) -> Screen {
    let (conn, screen) = x11rb::connect(Some(&x.display)).expect("connect to Xvfb");
    assert_eq!(
        conn.setup().image_byte_order,
        ImageOrder::LSB_FIRST,
        "ZPixmap pixels are read as BGRX"
    );
    let root = conn.setup().roots[screen].root;
    Screen { conn, root }
}

struct Screen {
    conn: RustConnection,
    root: u32,
}

impl Screen {
    /// The whole root window (the app's window has no window manager around it).
    fn grab(&self) -> Shot {
        self.grab_area(Area {
            x0: 0,
            y0: 0,
            x1: usize::from(SCREEN_W),
            y1: usize::from(SCREEN_H),
        })
    }

    /// One rectangle of the screen.
    fn grab_area(&self, a: Area) -> Shot {
        self.grab_sparse(a, 1)
    }

    /// `rows` evenly spaced one-pixel lines across a rectangle, stacked into one picture: enough
    /// to tell moving video from a frozen or removed tile, and cheap enough (a few kilobytes
    /// through the X socket) to take 15–30 times a second without the sampling itself taking
    /// the CPU the app needs on a two-core machine. A whole-tile grab moves ~2.6 MB each time.
    fn grab_rows(&self, a: Area, rows: usize) -> Shot {
        // Inside the tile's border, which turns green and thicker while the peer speaks.
        let a = Area {
            x0: a.x0 + 8,
            y0: a.y0 + 8,
            x1: a.x1.saturating_sub(8).max(a.x0 + 9),
            y1: a.y1.saturating_sub(8).max(a.y0 + 9),
        };
        let mut rgb = Vec::with_capacity(a.w() * rows);
        for k in 0..rows {
            let y = a.y0 + (a.h() * (2 * k + 1)) / (2 * rows);
            let line = self.grab_sparse(
                Area {
                    x0: a.x0,
                    y0: y,
                    x1: a.x1,
                    y1: y + 1,
                },
                1,
            );
            rgb.extend_from_slice(&line.rgb);
        }
        Shot {
            w: a.w(),
            h: rows,
            rgb,
            at: Instant::now(),
        }
    }

    /// One rectangle of the screen, keeping every `step`-th pixel of every `step`-th row: cheap
    /// enough to sample a tile many times a second in this unoptimised test build.
    fn grab_sparse(&self, a: Area, step: usize) -> Shot {
        let dim = |v: usize| u16::try_from(v).expect("screen coordinate");
        let reply = self
            .conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                self.root,
                dim(a.x0) as i16,
                dim(a.y0) as i16,
                dim(a.w()),
                dim(a.h()),
                !0,
            )
            .expect("GetImage request")
            .reply()
            .expect("GetImage reply");
        assert_eq!(
            reply.data.len(),
            a.w() * a.h() * 4,
            "32 bits per pixel at depth 24"
        );
        let (w, h) = (a.w().div_ceil(step), a.h().div_ceil(step));
        let mut rgb = Vec::with_capacity(w * h);
        for y in (0..a.h()).step_by(step) {
            for x in (0..a.w()).step_by(step) {
                let i = (y * a.w() + x) * 4;
                rgb.push([reply.data[i + 2], reply.data[i + 1], reply.data[i]]);
            }
        }
        Shot {
            w,
            h,
            rgb,
            at: Instant::now(),
        }
    }
}

/// One screenshot, RGB.
struct Shot {
    w: usize,
    h: usize,
    rgb: Vec<[u8; 3]>,
    at: Instant,
}

/// A pixel rectangle, `x0..x1` × `y0..y1` (exclusive ends).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Area {
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

impl Area {
    fn w(&self) -> usize {
        self.x1 - self.x0
    }
    fn h(&self) -> usize {
        self.y1 - self.y0
    }
    fn pixels(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (self.y0..self.y1).flat_map(move |y| (self.x0..self.x1).map(move |x| (x, y)))
    }
}

impl Shot {
    fn px(&self, x: usize, y: usize) -> [u8; 3] {
        self.rgb[y * self.w + x]
    }

    fn save(&self, path: &Path) {
        let raw: Vec<u8> = self.rgb.iter().flatten().copied().collect();
        image::RgbImage::from_raw(self.w as u32, self.h as u32, raw)
            .expect("buffer size")
            .save(path)
            .unwrap_or_else(|e| panic!("saving {}: {e}", path.display()));
    }
}

fn luma(p: [u8; 3]) -> f64 {
    0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])
}

fn max_channel_diff(a: [u8; 3], b: [u8; 3]) -> u8 {
    (0..3).map(|i| a[i].abs_diff(b[i])).max().unwrap_or(0)
}

/// Where two screenshots differ in bulk: the rows and columns with at least `MIN_LINE` changed
/// pixels bound the area. Moving video changes nearly every pixel of its rectangle; the call
/// clock, a spinner or a cursor change a few short lines and stay under the threshold.
fn moving_area(a: &Shot, b: &Shot) -> Option<Area> {
    const MIN_LINE: usize = 60;
    let mut rows = vec![0usize; a.h];
    let mut cols = vec![0usize; a.w];
    for (i, (pa, pb)) in a.rgb.iter().zip(&b.rgb).enumerate() {
        if max_channel_diff(*pa, *pb) >= 12 {
            rows[i / a.w] += 1;
            cols[i % a.w] += 1;
        }
    }
    let span = |v: &[usize]| {
        let first = v.iter().position(|&n| n >= MIN_LINE)?;
        let last = v.iter().rposition(|&n| n >= MIN_LINE)?;
        Some((first, last + 1))
    };
    let (x0, x1) = span(&cols)?;
    let (y0, y1) = span(&rows)?;
    Some(Area { x0, y0, x1, y1 })
}

/// Fraction of the area's pixels that differ between two screenshots.
fn changed_fraction(a: &Shot, b: &Shot, area: Area) -> f64 {
    let n = (area.w() * area.h()).max(1) as f64;
    area.pixels()
        .filter(|&(x, y)| max_channel_diff(a.px(x, y), b.px(x, y)) >= 12)
        .count() as f64
        / n
}

/// Colour facts about an area: how many distinct colours (4 bits per channel), how spread the
/// luma is, and what fraction of the pixels are saturated colour (the UI itself is greys).
#[derive(Debug)]
struct Colours {
    distinct: usize,
    luma_sd: f64,
    saturated: f64,
}

fn colours(s: &Shot, a: Area) -> Colours {
    let mut seen = std::collections::HashSet::new();
    let (mut sum, mut sum2, mut sat) = (0.0, 0.0, 0usize);
    let n = (a.w() * a.h()).max(1);
    for (x, y) in a.pixels() {
        let p = s.px(x, y);
        seen.insert((p[0] >> 4, p[1] >> 4, p[2] >> 4));
        let l = luma(p);
        sum += l;
        sum2 += l * l;
        if is_saturated(p) {
            sat += 1;
        }
    }
    let mean = sum / n as f64;
    Colours {
        distinct: seen.len(),
        luma_sd: (sum2 / n as f64 - mean * mean).max(0.0).sqrt(),
        saturated: sat as f64 / n as f64,
    }
}

/// A clearly coloured pixel (not a grey of the UI, not near black).
fn is_saturated(p: [u8; 3]) -> bool {
    let (mx, mn) = (
        p.iter().copied().max().unwrap_or(0),
        p.iter().copied().min().unwrap_or(0),
    );
    mx >= 60 && f64::from(mx - mn) / f64::from(mx) >= 0.35
}

/// The synthetic pattern's signature: its luma ramp depends on `column + row`, so the picture is
/// constant along anti-diagonals (up-right) and changes along diagonals (down-right). Returns
/// mean |Δluma| up-right divided by mean |Δluma| down-right, in steps of 6 px over the middle
/// of the picture (away from the stamp at the top and the overlays at the bottom): well below 1
/// for the pattern, about 1 for a picture without that structure.
fn antidiagonal_ratio(s: &Shot, a: Area) -> f64 {
    const STEP: usize = 6;
    let (mut along, mut across) = (0.0, 0.0);
    for y in (a.y0 + a.h() / 5)..(a.y1 - a.h() / 5) {
        for x in a.x0..(a.x1 - STEP) {
            let l = luma(s.px(x, y));
            along += (l - luma(s.px(x + STEP, y - STEP))).abs();
            across += (l - luma(s.px(x + STEP, y + STEP))).abs();
        }
    }
    along / across.max(1e-6)
}

/// Pixels of `area` that are bright (every channel ≥ 180) and the same (within 24) in every
/// screenshot: an overlay drawn over video, like white text, and not the video itself, whose
/// pixels all move.
fn static_bright(shots: &[Shot], area: Area) -> usize {
    area.pixels()
        .filter(|&(x, y)| {
            let first = shots[0].px(x, y);
            shots.iter().all(|s| {
                let p = s.px(x, y);
                p.iter().all(|&c| c >= 180) && max_channel_diff(p, first) <= 24
            })
        })
        .count()
}

/// The share of sampled pixels that must differ between two samples for the tile to count as
/// moving. Xvfb draws deterministically, so a still picture differs in no pixel at all; one
/// frame of the synthetic pattern at 15 fps changes about 4 % of them (its stripes move a few
/// pixels), which a 5 % bar missed whenever only one new frame fell between two samples.
const MOTION: f64 = 0.015;

/// Samples a playing tile for `span`, ~25 times a second, the way the drop phase does.
async fn sample_tile(screen: &Screen, area: Area, span: Duration) -> Vec<(f64, TileLook)> {
    let t0 = Instant::now();
    let mut prev = screen.grab_rows(area, 12);
    let reference_luma = mean_luma(&prev);
    let mut last_change = prev.at;
    let mut timeline = Vec::new();
    while t0.elapsed() < span {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let now = screen.grab_rows(area, 12);
        if changed_fraction(&prev, &now, whole(&now)) >= MOTION {
            last_change = now.at;
        }
        let stale = now.at.duration_since(last_change) > Duration::from_millis(300);
        timeline.push((
            now.at.duration_since(t0).as_secs_f64(),
            tile_look(&now, reference_luma, stale),
        ));
        prev = now;
    }
    timeline
}

/// How much of a sampled stretch showed moving video, and its longest stretch without.
#[derive(Debug, Clone, Copy)]
struct Smoothness {
    samples: usize,
    moving: usize,
    longest_stall: f64,
}

impl Smoothness {
    fn of(timeline: &[(f64, TileLook)]) -> Smoothness {
        let moving = timeline
            .iter()
            .filter(|(_, l)| *l == TileLook::Video)
            .count();
        let mut longest_stall = 0.0f64;
        let mut stall_from: Option<f64> = None;
        for (t, l) in timeline {
            match (l, stall_from) {
                (TileLook::Video, Some(from)) => {
                    longest_stall = longest_stall.max(t - from);
                    stall_from = None;
                }
                (TileLook::Video, None) => {}
                (_, None) => stall_from = Some(*t),
                (_, Some(_)) => {}
            }
        }
        if let (Some(from), Some((last, _))) = (stall_from, timeline.last()) {
            longest_stall = longest_stall.max(last - from);
        }
        Smoothness {
            samples: timeline.len(),
            moving,
            longest_stall,
        }
    }

    fn moving_share(&self) -> f64 {
        self.moving as f64 / self.samples.max(1) as f64
    }
}

impl std::fmt::Display for Smoothness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} samples moving video, longest stall {:.2} s",
            self.moving, self.samples, self.longest_stall
        )
    }
}

/// What a tile's rectangle looked like in one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TileLook {
    /// Colourful and changing: the pattern playing.
    Video,
    /// Colourful but unchanged for a while: no new frames.
    Frozen,
    /// Darker than the playing video, or without its colours: the tile removed (the self-view
    /// alone on the stage), its placeholder, or the spinner overlay. The saved screenshots tell
    /// which.
    NoVideo,
}

/// Classifies one sample of a tile: `reference_luma` is its mean brightness while playing,
/// `stale` whether its pixels have not changed for a while.
fn tile_look(now: &Shot, reference_luma: f64, stale: bool) -> TileLook {
    let saturated =
        now.rgb.iter().filter(|p| is_saturated(**p)).count() as f64 / now.rgb.len().max(1) as f64;
    if mean_luma(now) < 0.6 * reference_luma || saturated < 0.3 {
        TileLook::NoVideo
    } else if stale {
        TileLook::Frozen
    } else {
        TileLook::Video
    }
}

fn whole(s: &Shot) -> Area {
    Area {
        x0: 0,
        y0: 0,
        x1: s.w,
        y1: s.h,
    }
}

fn mean_luma(s: &Shot) -> f64 {
    s.rgb.iter().map(|p| luma(*p)).sum::<f64>() / s.rgb.len().max(1) as f64
}

/// `text` as the app's name tags draw it (egui's proportional font at 13 points, white, 1 pixel
/// per point — Xvfb reports no DPI), rendered by egui itself through kittest's headless wgpu
/// renderer on black. Glyphs are rasterised on the CPU into egui's font atlas and placed on whole
/// pixels, so the app's window shows the same pixels. Returns (width, height, luma), cropped.
fn rendered_text(text: &str) -> (usize, usize, Vec<f64>) {
    rendered_text_sized(text, 13.0)
}

/// [`rendered_text`] at another size (the tile overlay's "Reconnecting…" is 14 points).
fn rendered_text_sized(text: &str, points: f32) -> (usize, usize, Vec<f64>) {
    use eframe::egui::{Align2, Color32, FontId, pos2, vec2};
    let owned = text.to_string();
    let mut h = egui_kittest::Harness::builder()
        .with_size(vec2(320.0, 40.0))
        .with_pixels_per_point(1.0)
        .wgpu()
        .build_ui(move |ui| {
            let p = ui.ctx().layer_painter(eframe::egui::LayerId::background());
            p.rect_filled(ui.ctx().content_rect(), 0.0, Color32::BLACK);
            p.text(
                pos2(8.0, 8.0),
                Align2::LEFT_TOP,
                &owned,
                FontId::proportional(points),
                Color32::WHITE,
            );
        });
    h.run_steps(2);
    let img = h.render().expect("kittest renders the text");
    let (w, h) = (img.width() as usize, img.height() as usize);
    let l: Vec<f64> = img.pixels().map(|p| luma([p[0], p[1], p[2]])).collect();
    let lit = |x: usize, y: usize| l[y * w + x] > 20.0;
    let xs: Vec<usize> = (0..w).filter(|&x| (0..h).any(|y| lit(x, y))).collect();
    let ys: Vec<usize> = (0..h).filter(|&y| (0..w).any(|x| lit(x, y))).collect();
    let (x0, x1) = (xs[0], xs[xs.len() - 1] + 1);
    let (y0, y1) = (ys[0], ys[ys.len() - 1] + 1);
    let crop = (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| (x, y)))
        .map(|(x, y)| l[y * w + x])
        .collect();
    (x1 - x0, y1 - y0, crop)
}

/// How well `text` (see [`rendered_text`]) reads inside `region` of the screenshot: the best
/// recall over the positions where it reads as light text on a dark ground. Recall: the share of
/// the glyphs' solid pixels (≥ 180 in the rendering) that are bright (≥ 170) on screen; a
/// position counts only if at most 5 % of the pixels between the glyphs (< 26) are bright too
/// (so a bright patch of video, bright everywhere, matches nothing). White text on a name tag's
/// darkened pill gives about 1 for its own string; other strings stay well below.
fn text_match(shot: &Shot, region: Area, text: &str) -> f64 {
    glyphs_match(shot, region, &rendered_text(text))
}

/// [`text_match`] for text rendered beforehand (rendering takes a GPU round trip).
fn glyphs_match(shot: &Shot, region: Area, glyphs: &(usize, usize, Vec<f64>)) -> f64 {
    let (tw, th, t) = (glyphs.0, glyphs.1, &glyphs.2);
    let solid: Vec<(usize, usize)> = (0..th)
        .flat_map(|y| (0..tw).map(move |x| (x, y)))
        .filter(|&(x, y)| t[y * tw + x] >= 180.0)
        .collect();
    let gaps: Vec<(usize, usize)> = (0..th)
        .flat_map(|y| (0..tw).map(move |x| (x, y)))
        .filter(|&(x, y)| t[y * tw + x] < 26.0)
        .collect();
    let bright = |x: usize, y: usize| luma(shot.px(x, y)) >= 170.0;
    let mut best = 0.0;
    for oy in region.y0..region.y1.saturating_sub(th) {
        for ox in region.x0..region.x1.saturating_sub(tw) {
            let hits = solid
                .iter()
                .filter(|&&(x, y)| bright(ox + x, oy + y))
                .count();
            let recall = hits as f64 / solid.len().max(1) as f64;
            if recall <= best {
                continue;
            }
            let spilled = gaps
                .iter()
                .filter(|&&(x, y)| bright(ox + x, oy + y))
                .count();
            if spilled as f64 <= 0.05 * gaps.len() as f64 {
                best = recall;
            }
        }
    }
    best
}

// ---------------------------------------------------------------------------------------------
// Processes

/// The app as a child process: `meshcall join` without `--headless`, on the Xvfb display, with
/// its own data directory (the remembered form goes there, not into the user's).
struct App {
    child: Child,
    log: PathBuf,
    _home: tempfile::TempDir,
}

impl App {
    fn spawn(display: &str, origin: &str, room: &str, dir: &Path) -> App {
        let home = tempfile::tempdir().expect("temp dir");
        let log = dir.join("app.log");
        let log_file = std::fs::File::create(&log).expect("app log file");
        let child = Command::new(env!("CARGO_BIN_EXE_meshcall"))
            .args(["join", "--server", origin, "--room", room, "--name", "Ada"])
            .arg("--secret")
            .arg(format!("{KID}={SECRET}"))
            // The app sends nothing: the only moving picture on screen is the remote video.
            .args(["--video", "none", "--audio", "none", "--loopback-only"])
            .args(["--log", "warn,meshcall=info"])
            .env("DISPLAY", display)
            .env_remove("WAYLAND_DISPLAY")
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("meshcall (the app) starts");
        App {
            child,
            log,
            _home: home,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the app is running")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Fails the test with the app's log if it has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "the app exited early ({status}); its log:\n{}",
                self.log_tail()
            );
        }
    }

    /// SIGTERM, then waits for a clean exit (the app closes its window and leaves the call).
    async fn terminate(mut self) {
        let pid = self.pid();
        signal(pid, libc::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        match status {
            Ok(Ok(s)) => assert!(
                s.success(),
                "the app exits 0 on SIGTERM, got {s}; its log:\n{}",
                self.log_tail()
            ),
            _ => {
                let _ = self.child.kill().await;
                panic!(
                    "the app did not exit within 15 s of SIGTERM; its log:\n{}",
                    self.log_tail()
                );
            }
        }
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the app's process is gone (reaped)"
        );
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            !log.contains("panicked"),
            "no panic in the app's log:\n{log}"
        );
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits");
    // SAFETY: kill(2) with a pid of a child this test started and has not reaped yet.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// CPU time (user + system, all threads) and resident memory of a process, from /proc.
struct ProcSample {
    at: Instant,
    cpu_s: f64,
    rss_mib: f64,
}

fn proc_sample(pid: u32) -> ProcSample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the parenthesised command name: state is index 0, utime 11, stime 12.
    let rest = stat.rsplit_once(')').expect("stat format").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    ProcSample {
        at: Instant::now(),
        cpu_s: ticks / hz,
        rss_mib: rss_kib / 1024.0,
    }
}

/// `b - a` in seconds, negative when `b` came first.
fn signed_secs(a: Instant, b: Instant) -> f64 {
    if b >= a {
        b.duration_since(a).as_secs_f64()
    } else {
        -a.duration_since(b).as_secs_f64()
    }
}

fn cpu_percent(a: &ProcSample, b: &ProcSample) -> f64 {
    100.0 * (b.cpu_s - a.cpu_s) / b.at.duration_since(a.at).as_secs_f64().max(1e-3)
}

/// Where this test's screenshots and the app's log go (kept after the run).
fn shots_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("app_e2e")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

/// Waits until `n` peers are in the room (the server's REST view), failing early if the app dies.
async fn wait_members(server: &meshcall::server::Server, app: &mut App, room: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        app.assert_running();
        let (status, body) = http(
            server.local_addr(),
            "GET",
            &format!("/v1/channels/{room}/peers"),
            Some(&bearer()),
            None,
        )
        .await;
        let count = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["peers"].as_array().map(Vec::len))
            .unwrap_or(0);
        if status == 200 && count >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} peer(s) in {room} within 30 s (now {count}); app log:\n{}",
            app.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Grabs screenshots until an area of at least `min` pixels moves in three consecutive
/// intervals, in the same place (remote video on the screen; a one-off change such as a tile
/// appearing does not count); returns that area.
async fn wait_for_video(
    screen: &Screen,
    app: &mut App,
    min: (usize, usize),
    secs: u64,
    dir: &Path,
) -> Area {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = screen.grab();
    let mut streak: Vec<Area> = Vec::new();
    loop {
        app.assert_running();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = screen.grab();
        match moving_area(&last, &now) {
            Some(a) if a.w() >= min.0 && a.h() >= min.1 => {
                if streak.last().is_some_and(|p| !same_place(p, &a)) {
                    streak.clear();
                }
                streak.push(a);
                if streak.len() >= 3 {
                    return a;
                }
            }
            _ => streak.clear(),
        }
        if Instant::now() >= deadline {
            let path = dir.join("no-video.png");
            now.save(&path);
            panic!(
                "no moving video of at least {min:?} px on screen within {secs} s (see {}); app log:\n{}",
                path.display(),
                app.log_tail()
            );
        }
        last = now;
    }
}

/// Two areas within 16 px of each other on every side.
fn same_place(a: &Area, b: &Area) -> bool {
    a.x0.abs_diff(b.x0) <= 16
        && a.x1.abs_diff(b.x1) <= 16
        && a.y0.abs_diff(b.y0) <= 16
        && a.y1.abs_diff(b.y1) <= 16
}

/// Waits until a large part of the screen differs from `alone`, is mostly green and changes
/// between two screenshots (the browser's fake camera playing in its tile); returns that part.
async fn wait_for_browser_video(screen: &Screen, app: &mut App, alone: &Shot, dir: &Path) -> Area {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut prev = screen.grab();
    loop {
        app.assert_running();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = screen.grab();
        if let Some(a) = moving_area(alone, &now)
            && a.w() >= 300
            && a.h() >= 200
            && green_fraction(&now, a) >= 0.5
            && changed_fraction(&prev, &now, a) > 0.002
        {
            return a;
        }
        if Instant::now() >= deadline {
            let path = dir.join("no-video.png");
            now.save(&path);
            panic!(
                "no moving green video on screen within 30 s (see {}); app log:\n{}",
                path.display(),
                app.log_tail()
            );
        }
        prev = now;
    }
}

/// Fraction of the area's pixels that are clearly green (green above red and blue by 30).
fn green_fraction(s: &Shot, a: Area) -> f64 {
    let n = (a.w() * a.h()).max(1) as f64;
    a.pixels()
        .filter(|&(x, y)| {
            let [r, g, b] = s.px(x, y).map(i32::from);
            g > r + 30 && g > b + 30
        })
        .count() as f64
        / n
}

/// `n` screenshots `gap` apart.
async fn series(screen: &Screen, n: usize, gap: Duration) -> Vec<Shot> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        out.push(screen.grab());
    }
    out
}

/// The checks on a tile showing the synthetic pattern: big, colourful, moving, and with a
/// static white label (the name tag) in its bottom-left corner, which the rest of the picture
/// does not have.
fn assert_synthetic_tile(shots: &[Shot], area: Area, what: &str, name: &str) {
    assert!(
        area.w() >= 400 && area.h() >= 225,
        "{what}: a large tile, got {area:?}"
    );
    let c = colours(&shots[0], area);
    println!("{what}: video area {area:?}, {c:?}");
    assert!(c.distinct >= 100, "{what}: many colours in the tile: {c:?}");
    assert!(c.luma_sd >= 20.0, "{what}: not a flat picture: {c:?}");
    assert!(
        c.saturated >= 0.3,
        "{what}: the pattern's colours, not UI greys: {c:?}"
    );
    let diag = antidiagonal_ratio(&shots[0], area);
    println!("{what}: luma change up-right / down-right = {diag:.2}");
    assert!(
        diag < 0.5,
        "{what}: the synthetic pattern's diagonal ramp (ratio {diag:.2})"
    );
    for pair in shots.windows(2) {
        let f = changed_fraction(&pair[0], &pair[1], area);
        assert!(
            f >= 0.3,
            "{what}: the video moves ({:.0} % changed)",
            f * 100.0
        );
    }
    // The name tag: a pill 8 px in from the tile's bottom-left corner, text 13 px high.
    let tag = Area {
        x0: area.x0,
        y0: area.y1.saturating_sub(48),
        x1: area.x0 + area.w() / 2,
        y1: area.y1,
    };
    // Control: the same size in the middle of the picture's right half (no overlay there; the
    // pattern's stamp is in the top-left and the self-view in the bottom-right).
    let cy = area.y0 + area.h() / 2;
    let control = Area {
        x0: area.x0 + area.w() / 2,
        y0: cy - 24,
        x1: area.x1,
        y1: cy + 24,
    };
    let text = static_bright(shots, tag);
    let noise = static_bright(shots, control);
    println!("{what}: static bright pixels: name-tag corner {text}, control {noise}");
    assert!(
        text >= 15 && text > 4 * noise.max(1),
        "{what}: a static white label (name tag) in the tile's bottom-left: {text} px vs {noise} px elsewhere"
    );
    // And it reads "Synthetic Bot": egui's own rendering of the name matches the screen there,
    // and the fallback name "Anonymous" does not.
    let search = Area {
        x0: area.x0,
        y0: area.y1.saturating_sub(40),
        x1: area.x0 + 140,
        y1: area.y1,
    };
    let recall = text_match(&shots[0], search, name);
    let other = text_match(&shots[0], search, "Anonymous");
    println!(
        "{what}: \"{name}\" matches the tag: {:.0} % of its glyph pixels; \"Anonymous\" best {:.0} %",
        recall * 100.0,
        other * 100.0
    );
    assert!(
        recall >= 0.9,
        "{what}: the name tag reads \"{name}\" ({recall:.2} of its glyph pixels)"
    );
    assert!(
        other < 0.6,
        "{what}: a different name does not match ({other:.2})"
    );
}

// ---------------------------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_shows_a_synthetic_peer_with_its_name_and_recovers_after_a_signalling_drop() {
    let _serial = SERIAL.lock().await;
    let Some(x) = xvfb_or_skip() else { return };
    let dir = shots_dir("synthetic_peer");
    let server = start(config()).await;
    let origin = server.ws_origin();
    let room = "e2e-synthetic";
    let screen = connect(&x);
    let t0 = Instant::now();
    let mut app = App::spawn(&x.display, &origin, room, &dir);
    wait_members(&server, &mut app, room, 1).await;
    println!("app in the room after {:.1} s", t0.elapsed().as_secs_f64());
    // Let the call screen settle, then the picture without anyone else.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alone = screen.grab();
    alone.save(&dir.join("1-alone.png"));
    let c = colours(&alone, whole(&alone));
    assert!(
        c.distinct >= 8,
        "the app's window is drawn (not a blank screen): {c:?}"
    );

    // The synthetic peer: 16:9 so the video fills its tile (the name tag sits on the video).
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshcall"));
    cmd.args(["join", "--headless", "--loopback-only", "--server", &origin])
        .args(["--room", room, "--name", BOT_NAME, "--peer-id", "bot"])
        .arg("--secret")
        .arg(format!("{KID}={SECRET}"))
        .args(["--video", "synthetic", "--audio", "synthetic"])
        .args(["--size", "640x360", "--fps", "15"])
        .args(["--simulate", "drop-signalling@18s"]);
    let mut bot = JsonLinesPeer::spawn(cmd, "headless", "meshcall join --headless");
    let seen = bot
        .expect("the bot sees the app", 30, |v| {
            v["event"] == "peer-joined" && v["name"] == "Ada"
        })
        .await;
    let app_id = seen["peer"].as_str().expect("peer id").to_string();

    // Phase 1: the bot's video in a large tile, with its name.
    let area = wait_for_video(&screen, &mut app, (320, 180), 30, &dir).await;
    println!(
        "moving video on screen {:.1} s after start",
        t0.elapsed().as_secs_f64()
    );
    let before = proc_sample(app.pid());
    let shots = series(&screen, 5, Duration::from_millis(400)).await;
    let after = proc_sample(app.pid());
    for (i, s) in shots.iter().enumerate() {
        s.save(&dir.join(format!("2-video-{i}.png")));
    }
    assert_synthetic_tile(&shots, area, "synthetic tile", BOT_NAME);
    let differs = changed_fraction(&alone, &shots[0], whole(&alone));
    println!(
        "{:.0} % of the screen differs from the picture without the peer",
        differs * 100.0
    );
    assert!(
        differs >= 0.15,
        "the call with a peer looks different from the call alone"
    );
    println!(
        "app while showing 640x360@15 video: CPU {:.0} % of one core over {:.1} s, RSS {:.0} MiB",
        cpu_percent(&before, &after),
        after.at.duration_since(before.at).as_secs_f64(),
        after.rss_mib
    );
    // The same sampling as during the drop, with nothing happening: how smoothly this machine
    // shows the bot's 15 fps when only the call runs; after the reconnect the video must be
    // back to the same.
    let baseline = sample_tile(&screen, area, Duration::from_secs(3)).await;
    let before_drop = Smoothness::of(&baseline);
    println!("before the drop: {before_drop}");
    assert!(
        before_drop.moving_share() >= 0.8 && before_drop.longest_stall < 1.0,
        "the bot's video plays smoothly before the drop ({before_drop}): {baseline:?}"
    );
    assert!(
        !bot.poll().iter().any(|v| v["event"] == "simulate"),
        "phase 1 finished before the drop (machine too slow for the 18 s schedule)"
    );

    // Phase 2: the bot's signalling drops (`--simulate drop-signalling@18s`). Its SDK
    // reconnects and reconciles: a fresh PeerConnection, so the app's receiver of the old one
    // never delivers again and the tile must be re-bound to the new stream, or it freezes. The
    // outage is short on loopback (about 0.7 s until the bot is connected again), so the tile
    // is sampled ~15× a second; what must hold is that the tile shows "Reconnecting…" during
    // the gap (it is not removed) and that moving video is back afterwards.
    bot.expect("the signalling drop", 30, |v| v["event"] == "simulate")
        .await;
    let sim_at = Instant::now();
    let mut prev = screen.grab_rows(area, 12);
    let reference_luma = mean_luma(&prev);
    let mut last_change = prev.at;
    let mut timeline: Vec<(f64, TileLook)> = Vec::new();
    let mut caught: Vec<(Shot, TileLook)> = Vec::new();
    let mut reconnected: Option<Instant> = None;
    // While the bot is away the tile must stay, under the "Reconnecting…" overlay (drawn at
    // 14 points below the spinner in the tile's centre), not vanish: the app's engine keeps a
    // meshcall peer that left without a goodbye (`engine/departures.rs`).
    let overlay_text = rendered_text_sized("Reconnecting…", 14.0);
    let (cx, cy) = ((area.x0 + area.x1) / 2, (area.y0 + area.y1) / 2);
    let overlay_region = Area {
        x0: cx.saturating_sub(90),
        y0: cy + 20,
        x1: cx + 90,
        y1: cy + 60,
    };
    let mut overlay_seen = 0.0f64;
    let mut overlay_checks = 0;
    loop {
        app.assert_running();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let now = screen.grab_rows(area, 12);
        if changed_fraction(&prev, &now, whole(&now)) >= MOTION {
            last_change = now.at;
        }
        // 15 fps video changes every 67 ms; 300 ms without a change is a stall.
        let stale = now.at.duration_since(last_change) > Duration::from_millis(300);
        let look = tile_look(&now, reference_luma, stale);
        let t = signed_secs(sim_at, now.at);
        if look != TileLook::Video && overlay_checks < 20 && overlay_seen < 0.9 {
            // Only the overlay's few rows are grabbed, and the whole-screen pictures are kept
            // for later: encoding PNGs here would take the CPU the app needs right now.
            overlay_checks += 1;
            let region = screen.grab_area(overlay_region);
            overlay_seen = overlay_seen.max(glyphs_match(&region, whole(&region), &overlay_text));
            if caught.len() < 3 {
                // The whole screen, so a person can tell a removed tile from a spinner.
                caught.push((screen.grab(), look));
            }
        }
        timeline.push((t, look));
        prev = now;
        if reconnected.is_none()
            && bot.poll().iter().any(|v| {
                v["event"] == "state-change"
                    && v["peer"] == app_id.as_str()
                    && v["to"] == "connected"
                    && v["t_ms"].as_f64().is_some_and(|t| t > 18_000.0)
            })
        {
            reconnected = Some(Instant::now());
        }
        if reconnected.is_some_and(|r| r.elapsed() > Duration::from_secs(6)) {
            break;
        }
        assert!(
            t < 30.0,
            "the bot did not reconnect to the app within 30 s of the drop; it said {:#?}",
            bot.poll()
        );
    }
    let reconnected = reconnected.expect("reconnected");
    for (i, (shot, look)) in caught.iter().enumerate() {
        shot.save(&dir.join(format!("3-drop-{}-{look:?}.png", i + 1)));
    }
    let not_video: Vec<&(f64, TileLook)> = timeline
        .iter()
        .filter(|(_, l)| *l != TileLook::Video)
        .collect();
    println!(
        "signalling drop: bot connected to the app again {:.2} s after its drop; {} of {} tile samples were not moving video: {not_video:?}",
        signed_secs(sim_at, reconnected),
        not_video.len(),
        timeline.len()
    );
    println!(
        "\"Reconnecting…\" over the tile: best match {:.0} % of its glyph pixels in {overlay_checks} checks",
        overlay_seen * 100.0
    );
    assert!(
        overlay_seen >= 0.9,
        "the tile showed the reconnecting overlay during the bot's signalling drop (best {overlay_seen:.2}; see 3-drop-*.png)"
    );
    // From a second after the reconnect, for five seconds: the tile is bound to the new
    // connection's stream and plays. A tile left on the old connection's receiver would stay
    // frozen on its last picture; a removed tile reads as no video.
    //
    // Measured here: every sample moving before the drop and after the reconnect, also with
    // two busy loops taking both cores. (An earlier version of this test grabbed the whole tile
    // 30 times a second and needed 5 % of its pixels to change; one frame of the pattern changes
    // about 4 %, so it reported 1–2 s "stalls" that were not on screen, and the grabs themselves
    // took a good part of a core.)
    let tail: Vec<(f64, TileLook)> = timeline
        .iter()
        .filter(|(t, _)| *t >= signed_secs(sim_at, reconnected) + 1.0)
        .copied()
        .collect();
    let after = Smoothness::of(&tail);
    println!("after the reconnect: {after} (before the drop: {before_drop})");
    let end = tail.last().map_or(0.0, |(t, _)| *t);
    let moving_at_the_end = tail
        .iter()
        .any(|(t, l)| *t >= end - 1.0 && *l == TileLook::Video);
    assert!(
        after.samples >= 30
            && after.moving_share() >= 0.8
            && after.longest_stall < 1.0
            && moving_at_the_end,
        "moving video in the tile after the reconnect ({after}; before the drop: {before_drop}): {tail:?}"
    );
    // After recovery: the same checks as before (the tile is the synthetic video again, with
    // its name tag).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let area = wait_for_video(&screen, &mut app, (320, 180), 10, &dir).await;
    let shots = series(&screen, 5, Duration::from_millis(400)).await;
    for (i, s) in shots.iter().enumerate() {
        s.save(&dir.join(format!("5-after-{i}.png")));
    }
    assert_synthetic_tile(&shots, area, "synthetic tile after the drop", BOT_NAME);

    // The end: SIGTERM closes the window and leaves the call; the bot sees the app go.
    app.terminate().await;
    bot.expect("the app leaves the call", 10, |v| {
        v["event"] == "peer-left" && v["peer"] == app_id.as_str()
    })
    .await;
    if let Some(pid) = bot.pid() {
        signal(pid, libc::SIGINT);
    }
    let status = bot.wait_exit(10).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the bot leaves on SIGINT: {status:?}"
    );
    println!(
        "screenshots and the app's log: {} ({:.1} s in all)",
        dir.display(),
        t0.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_shows_the_video_of_a_browser_peer() {
    let _serial = SERIAL.lock().await;
    let Some(x) = xvfb_or_skip() else { return };
    let dir = shots_dir("browser_peer");
    let server = start(config()).await;
    let origin = server.ws_origin();
    let room = "e2e-browser";
    let screen = connect(&x);
    let t0 = Instant::now();
    let mut app = App::spawn(&x.display, &origin, room, &dir);
    wait_members(&server, &mut app, room, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alone = screen.grab();
    alone.save(&dir.join("1-alone.png"));

    let mut cmd = Command::new("node");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/js/browser-peer.mjs"
    ))
    .args(["--server", &origin, "--token"])
    .arg(token("browser", "Browser"))
    .args(["--room", room, "--name", "Browser", "--camera"]);
    let mut browser = JsonLinesPeer::spawn(cmd, "browser", "run tests/interop/js/setup.sh first");
    let seen = browser
        .expect("the browser sees the app", 40, |v| {
            v["event"] == "peer-joined" && v["name"] == "Ada"
        })
        .await;
    let app_id = seen["peer"].as_str().expect("peer id").to_string();
    browser
        .expect("the browser connects to the app", 30, |v| {
            v["event"] == "state-change" && v["peer"] == app_id.as_str() && v["to"] == "connected"
        })
        .await;

    // Chromium's fake camera (640×480, letterboxed in a 16:9 tile) is a green picture with a
    // turning pie and a running clock: only small parts of it change from frame to frame. So the
    // tile is found as what changed since the app was alone, and must then be mostly green,
    // non-uniform, and changing.
    let tile = wait_for_browser_video(&screen, &mut app, &alone, &dir).await;
    let before = proc_sample(app.pid());
    let shots = series(&screen, 4, Duration::from_millis(500)).await;
    let after = proc_sample(app.pid());
    for (i, s) in shots.iter().enumerate() {
        s.save(&dir.join(format!("2-video-{i}.png")));
    }
    println!("browser tile (new since alone): {tile:?}");
    assert!(
        tile.w() >= 400 && tile.h() >= 300,
        "a large tile appeared: {tile:?}"
    );
    let c = colours(&shots[0], tile);
    let green = green_fraction(&shots[0], tile);
    println!("browser tile colours: {c:?}, {:.0} % green", green * 100.0);
    assert!(
        c.distinct >= 8 && c.luma_sd >= 10.0,
        "non-uniform pixels in the browser's tile: {c:?}"
    );
    assert!(
        green >= 0.5,
        "Chromium's fake camera is a green picture: {:.0} % green",
        green * 100.0
    );
    let moved: Vec<f64> = shots
        .windows(2)
        .map(|p| changed_fraction(&p[0], &p[1], tile))
        .collect();
    println!("browser tile changed between shots: {moved:?}");
    assert!(
        moved.iter().all(|&f| f > 0.002),
        "the browser's video moves in every interval: {moved:?}"
    );
    // The tile's name tag (on the letterbox bar beside the 4:3 picture) reads "Browser", the
    // name in the browser's token.
    let search = Area {
        x0: tile.x0,
        y0: tile.y1.saturating_sub(40),
        x1: tile.x0 + 140,
        y1: tile.y1,
    };
    let recall = text_match(&shots[0], search, "Browser");
    let other = text_match(&shots[0], search, "Anonymous");
    println!(
        "browser tile: \"Browser\" matches the tag: {:.0} % of its glyph pixels; \"Anonymous\" best {:.0} %",
        recall * 100.0,
        other * 100.0
    );
    assert!(
        recall >= 0.9 && other < 0.6,
        "the browser's name tag reads \"Browser\" ({recall:.2}; \"Anonymous\" {other:.2})"
    );
    println!(
        "app while showing the browser's 640x480 camera: CPU {:.0} % of one core, RSS {:.0} MiB",
        cpu_percent(&before, &after),
        after.rss_mib
    );

    app.terminate().await;
    browser
        .expect("the app leaves the call", 10, |v| {
            v["event"] == "peer-left" && v["peer"] == app_id.as_str()
        })
        .await;
    browser.command(serde_json::json!({"cmd": "leave"})).await;
    let status = browser.wait_exit(15).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser leaves cleanly: {status:?}"
    );
    println!(
        "screenshots and the app's log: {} ({:.1} s in all)",
        dir.display(),
        t0.elapsed().as_secs_f64()
    );
}
