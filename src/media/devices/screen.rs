//! Screen and window capture on X11 (and Xvfb) with x11rb, as a [`VideoSource`].
//!
//! Capture uses MIT-SHM `GetImage`: the server writes the pixels straight into a shared memory
//! segment, about 0.4 ms per 1280×720 frame against 9 ms for a plain `GetImage` that sends them
//! over the socket. When SHM is unavailable (a remote display, a server
//! without the extension) the plain request is used instead.
//!
//! Frames are converted from the server's 32-bit pixels to I420, shrunk to fit 1920×1080 (the
//! screen-share cap) and paced to at most 15 fps. A window is captured as the
//! region of the screen it covers, so overlapping windows show as they do on screen, and a
//! window that moves is followed.
//!
//! Not covered: Wayland (needs the desktop portal and PipeWire); with no X display at all,
//! opening or listing is [`MediaError::NoDevice`] and the app offers the synthetic pattern.

use std::time::{Duration, Instant};

use x11rb::connection::{Connection, RequestConnection};
use x11rb::errors::ReplyError;
use x11rb::protocol::shm::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{
    AtomEnum, ConnectionExt as _, ImageFormat, ImageOrder, MapState, Window,
};
use x11rb::rust_connection::RustConnection;

use super::convert::{self, PackedLayout};
use super::no_device;
use crate::media::MediaError;
use crate::media::frame::I420Frame;
use crate::media::source::{DeviceInfo, VideoSource, media_clock_us};

const KIND: &str = "screen";
/// Largest frame sent; bigger screens are scaled down to fit.
pub const MAX_WIDTH: usize = 1920;
pub const MAX_HEIGHT: usize = 1080;
/// Highest capture rate of a screen share.
pub const MAX_FPS: u32 = 15;

/// How to open a screen source.
#[derive(Debug, Clone)]
pub struct ScreenOptions {
    /// X display name (`":1"`); `None` uses `$DISPLAY`.
    pub display: Option<String>,
    /// Frame rate cap, clamped to 1..=[`MAX_FPS`].
    pub max_fps: u32,
    /// Try MIT-SHM first (the default); `false` forces the plain `GetImage` path.
    pub use_shm: bool,
}

impl Default for ScreenOptions {
    fn default() -> Self {
        ScreenOptions {
            display: None,
            max_fps: MAX_FPS,
            use_shm: true,
        }
    }
}

fn connect(display: Option<&str>) -> Result<(RustConnection, usize), MediaError> {
    x11rb::connect(display).map_err(|e| {
        no_device(
            KIND,
            format!(
                "no X display {} ({e}); Wayland-only sessions are not supported",
                display
                    .map(|d| format!("{d:?}"))
                    .unwrap_or_else(|| "($DISPLAY)".into())
            ),
        )
    })
}

fn lost(e: impl std::fmt::Display) -> MediaError {
    MediaError::DeviceLost {
        kind: KIND,
        detail: format!("X server connection: {e}"),
    }
}

fn x_err(e: ReplyError) -> MediaError {
    match e {
        ReplyError::ConnectionError(c) => lost(c),
        ReplyError::X11Error(x) => MediaError::Device {
            kind: KIND,
            detail: format!("X11 error {:?}", x.error_kind),
        },
    }
}

/// The screens of `$DISPLAY` and, when available, its top-level windows with their titles.
/// No display is [`MediaError::NoDevice`].
pub fn list_screens() -> Result<Vec<DeviceInfo>, MediaError> {
    list_screens_on(None)
}

/// [`list_screens`] for a given display.
pub fn list_screens_on(display: Option<&str>) -> Result<Vec<DeviceInfo>, MediaError> {
    let (conn, _) = connect(display)?;
    let mut out = Vec::new();
    for (i, root) in conn.setup().roots.iter().enumerate() {
        out.push(DeviceInfo {
            id: format!("screen:{i}"),
            name: format!(
                "Screen {i} ({}×{})",
                root.width_in_pixels, root.height_in_pixels
            ),
        });
    }
    let roots: Vec<Window> = conn.setup().roots.iter().map(|r| r.root).collect();
    for root in roots {
        for (win, title) in top_level_windows(&conn, root)? {
            out.push(DeviceInfo {
                id: format!("window:{win:#x}"),
                name: title,
            });
        }
    }
    Ok(out)
}

fn atom(conn: &RustConnection, name: &str) -> Result<u32, MediaError> {
    Ok(conn
        .intern_atom(false, name.as_bytes())
        .map_err(lost)?
        .reply()
        .map_err(x_err)?
        .atom)
}

/// A window's title: `_NET_WM_NAME` (UTF-8) or else `WM_NAME` (Latin-1 by the ICCCM).
fn window_title(conn: &RustConnection, win: Window) -> Result<Option<String>, MediaError> {
    let net_wm_name = atom(conn, "_NET_WM_NAME")?;
    let utf8 = atom(conn, "UTF8_STRING")?;
    let get = |prop: u32, ty: u32| -> Result<Vec<u8>, MediaError> {
        match conn
            .get_property(false, win, prop, ty, 0, 1024)
            .map_err(lost)?
            .reply()
        {
            Ok(r) => Ok(r.value),
            // The window went away while we looked: no title.
            Err(ReplyError::X11Error(_)) => Ok(Vec::new()),
            Err(e) => Err(x_err(e)),
        }
    };
    let name = get(net_wm_name, utf8)?;
    if !name.is_empty() {
        return Ok(Some(String::from_utf8_lossy(&name).into_owned()));
    }
    let name = get(AtomEnum::WM_NAME.into(), AtomEnum::ANY.into())?;
    if name.is_empty() {
        return Ok(None);
    }
    Ok(Some(name.iter().map(|&b| char::from(b)).collect()))
}

/// Named top-level windows: the window manager's `_NET_CLIENT_LIST` when there is one, else
/// the root's mapped children (no window manager, as under a bare Xvfb).
fn top_level_windows(
    conn: &RustConnection,
    root: Window,
) -> Result<Vec<(Window, String)>, MediaError> {
    let client_list = atom(conn, "_NET_CLIENT_LIST")?;
    let listed: Vec<Window> = conn
        .get_property(false, root, client_list, AtomEnum::WINDOW, 0, 4096)
        .map_err(lost)?
        .reply()
        .map_err(x_err)?
        .value32()
        .map(|it| it.collect())
        .unwrap_or_default();
    let candidates = if listed.is_empty() {
        let children = conn
            .query_tree(root)
            .map_err(lost)?
            .reply()
            .map_err(x_err)?
            .children;
        let mut mapped = Vec::new();
        for w in children {
            if let Ok(attrs) = conn.get_window_attributes(w).map_err(lost)?.reply()
                && attrs.map_state == MapState::VIEWABLE
                && !attrs.override_redirect
            {
                mapped.push(w);
            }
        }
        mapped
    } else {
        listed
    };
    let mut out = Vec::new();
    for w in candidates {
        if let Some(title) = window_title(conn, w)?
            && !title.trim().is_empty()
        {
            out.push((w, title));
        }
    }
    Ok(out)
}

/// A MIT-SHM segment attached both to this process and to the X server.
struct ShmSegment {
    seg: shm::Seg,
    addr: *mut libc::c_void,
    size: usize,
}

// SAFETY: the mapping is private to this process and only ever read through `&self` while the
// owning `ScreenSource` is borrowed mutably (one capture at a time); moving it between threads
// is no different from moving a `Vec`.
unsafe impl Send for ShmSegment {}

impl ShmSegment {
    /// Creates and attaches a segment of `size` bytes, or `None` when the server cannot use
    /// shared memory with us (no extension, remote display, SysV IPC limits).
    fn create(conn: &RustConnection, size: usize) -> Option<ShmSegment> {
        conn.extension_information(shm::X11_EXTENSION_NAME).ok()??;
        conn.shm_query_version().ok()?.reply().ok()?;
        // SAFETY: plain SysV calls; every failure is checked and cleaned up below.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, size, libc::IPC_CREAT | 0o600) };
        if id < 0 {
            return None;
        }
        // SAFETY: `id` is a segment we just created; a null address lets the kernel choose.
        let addr = unsafe { libc::shmat(id, std::ptr::null(), 0) };
        if addr as isize == -1 {
            // SAFETY: removing the segment we created.
            unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
            return None;
        }
        let attached = (|| {
            let seg = conn.generate_id().ok()?;
            conn.shm_attach(seg, id as u32, false).ok()?.check().ok()?;
            Some(seg)
        })();
        // Mark for removal now: the kernel frees it once both sides detach, even if we crash.
        // SAFETY: `id` is ours; the mapping stays valid until `shmdt`.
        unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        match attached {
            Some(seg) => Some(ShmSegment { seg, addr, size }),
            None => {
                // SAFETY: `addr` came from `shmat` above and is not used after this.
                unsafe { libc::shmdt(addr) };
                None
            }
        }
    }

    fn bytes(&self, len: usize) -> Option<&[u8]> {
        if len > self.size {
            return None;
        }
        // SAFETY: `addr` maps `size` bytes for as long as `self` lives; the server finished
        // writing before the GetImage reply we waited for.
        Some(unsafe { std::slice::from_raw_parts(self.addr as *const u8, len) })
    }
}

impl Drop for ShmSegment {
    fn drop(&mut self) {
        // SAFETY: `addr` came from `shmat` and is detached exactly once.
        unsafe { libc::shmdt(self.addr) };
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Screen,
    Window(Window),
}

/// A screen or window as a [`VideoSource`].
pub struct ScreenSource {
    conn: RustConnection,
    name: String,
    target: Target,
    root: Window,
    root_size: (u16, u16),
    layout: PackedLayout,
    shm: Option<ShmSegment>,
    interval: Duration,
    next_due: Option<Instant>,
    last_size: (usize, usize),
}

/// Byte offsets of R, G and B inside a 32-bit pixel, from the visual's masks and the server's
/// byte order; `None` for anything other than 8 bits per channel.
fn layout_for(masks: (u32, u32, u32), order: ImageOrder) -> Option<PackedLayout> {
    let byte = |mask: u32| -> Option<usize> {
        let shift = mask.trailing_zeros();
        if mask >> shift != 0xff || !shift.is_multiple_of(8) {
            return None;
        }
        let lsb_index = (shift / 8) as usize;
        Some(if order == ImageOrder::LSB_FIRST {
            lsb_index
        } else {
            3 - lsb_index
        })
    };
    Some(PackedLayout {
        bpp: 4,
        r: byte(masks.0)?,
        g: byte(masks.1)?,
        b: byte(masks.2)?,
    })
}

impl ScreenSource {
    /// Opens `id` from [`list_screens`] (`"screen:0"`, `"0"` or `"window:0x…"`) on `$DISPLAY`,
    /// paced to at most `max_fps` (itself capped at 15).
    pub fn open(id: &str, max_fps: u32) -> Result<ScreenSource, MediaError> {
        ScreenSource::open_with(
            id,
            &ScreenOptions {
                max_fps,
                ..ScreenOptions::default()
            },
        )
    }

    /// [`open`](Self::open) with explicit options (display, SHM on or off).
    pub fn open_with(id: &str, opts: &ScreenOptions) -> Result<ScreenSource, MediaError> {
        let (conn, _) = connect(opts.display.as_deref())?;
        let id = id.trim();
        let (screen_index, target, name) = if let Some(hex) = id.strip_prefix("window:") {
            let win = u32::from_str_radix(hex.trim_start_matches("0x"), 16)
                .map_err(|_| no_device(KIND, format!("{id:?} is not a window id")))?;
            let tree = match conn.query_tree(win).map_err(lost)?.reply() {
                Ok(t) => t,
                Err(ReplyError::X11Error(_)) => {
                    return Err(no_device(KIND, format!("no window {id}")));
                }
                Err(e) => return Err(x_err(e)),
            };
            let index = conn
                .setup()
                .roots
                .iter()
                .position(|r| r.root == tree.root)
                .unwrap_or(0);
            let title = window_title(&conn, win)?.unwrap_or_else(|| format!("Window {win:#x}"));
            (index, Target::Window(win), title)
        } else {
            let n: usize = id
                .strip_prefix("screen:")
                .unwrap_or(id)
                .parse()
                .map_err(|_| no_device(KIND, format!("{id:?} is not a screen or window id")))?;
            (n, Target::Screen, String::new())
        };
        let setup = conn.setup();
        let Some(screen) = setup.roots.get(screen_index) else {
            return Err(no_device(
                KIND,
                format!(
                    "no screen {screen_index} (the display has {})",
                    setup.roots.len()
                ),
            ));
        };
        let name = if name.is_empty() {
            format!(
                "Screen {screen_index} ({}×{})",
                screen.width_in_pixels, screen.height_in_pixels
            )
        } else {
            name
        };
        let visual = screen
            .allowed_depths
            .iter()
            .flat_map(|d| d.visuals.iter().map(move |v| (d.depth, v)))
            .find(|(_, v)| v.visual_id == screen.root_visual);
        let bpp = visual.and_then(|(depth, _)| {
            setup
                .pixmap_formats
                .iter()
                .find(|f| f.depth == depth)
                .map(|f| f.bits_per_pixel)
        });
        let layout = match (visual, bpp) {
            (Some((_, v)), Some(32)) => layout_for(
                (v.red_mask, v.green_mask, v.blue_mask),
                setup.image_byte_order,
            ),
            _ => None,
        }
        .ok_or_else(|| MediaError::Device {
            kind: KIND,
            detail: format!(
                "unsupported pixel format (depth {}, {} bits per pixel); a 24/32-bit display is needed",
                screen.root_depth,
                bpp.unwrap_or(0)
            ),
        })?;
        let root = screen.root;
        let root_size = (screen.width_in_pixels, screen.height_in_pixels);
        let shm = if opts.use_shm {
            ShmSegment::create(
                &conn,
                usize::from(root_size.0) * usize::from(root_size.1) * 4,
            )
        } else {
            None
        };
        let fps = opts.max_fps.clamp(1, MAX_FPS);
        Ok(ScreenSource {
            conn,
            name,
            target,
            root,
            root_size,
            layout,
            shm,
            interval: Duration::from_micros(1_000_000 / u64::from(fps)),
            next_due: None,
            last_size: (640, 360),
        })
    }

    /// Whether frames are read through MIT-SHM (else plain `GetImage`).
    pub fn uses_shm(&self) -> bool {
        self.shm.is_some()
    }

    /// The pacing rate in frames per second.
    pub fn fps(&self) -> f64 {
        1.0 / self.interval.as_secs_f64()
    }

    /// The region of the root window to read: the whole screen, or the visible part of the
    /// window (which may have moved or been resized since the last frame).
    fn region(&self) -> Result<Option<(i16, i16, u16, u16)>, MediaError> {
        let (rw, rh) = (i32::from(self.root_size.0), i32::from(self.root_size.1));
        let Target::Window(win) = self.target else {
            return Ok(Some((0, 0, self.root_size.0, self.root_size.1)));
        };
        let closed = |e: ReplyError| match e {
            ReplyError::X11Error(_) => MediaError::DeviceLost {
                kind: KIND,
                detail: format!("{}: the window was closed", self.name),
            },
            other => x_err(other),
        };
        let attrs = self
            .conn
            .get_window_attributes(win)
            .map_err(lost)?
            .reply()
            .map_err(closed)?;
        if attrs.map_state != MapState::VIEWABLE {
            return Ok(None);
        }
        let geo = self
            .conn
            .get_geometry(win)
            .map_err(lost)?
            .reply()
            .map_err(closed)?;
        let pos = self
            .conn
            .translate_coordinates(win, self.root, 0, 0)
            .map_err(lost)?
            .reply()
            .map_err(closed)?;
        let (x0, y0) = (i32::from(pos.dst_x).max(0), i32::from(pos.dst_y).max(0));
        let x1 = (i32::from(pos.dst_x) + i32::from(geo.width)).min(rw);
        let y1 = (i32::from(pos.dst_y) + i32::from(geo.height)).min(rh);
        if x1 - x0 < 2 || y1 - y0 < 2 {
            return Ok(None);
        }
        Ok(Some((
            x0 as i16,
            y0 as i16,
            (x1 - x0) as u16,
            (y1 - y0) as u16,
        )))
    }

    /// Captures one frame now, without pacing (used by `next_frame` and by benchmarks).
    pub fn capture(&mut self) -> Result<I420Frame, MediaError> {
        let Some((x, y, w, h)) = self.region()? else {
            // Minimised or off-screen window: black at the last size, so the stream continues.
            let mut f = I420Frame::black(self.last_size.0, self.last_size.1)?;
            f.capture_us = media_clock_us();
            return Ok(f);
        };
        let (sw, sh) = (usize::from(w), usize::from(h));
        let (ow, oh) = convert::fit_within(sw, sh, MAX_WIDTH, MAX_HEIGHT);
        let stride = sw * 4;
        let z_pixmap: u8 = ImageFormat::Z_PIXMAP.into();
        let frame = if let Some(seg) = &self.shm {
            let reply = self
                .conn
                .shm_get_image(self.root, x, y, w, h, !0, z_pixmap, seg.seg, 0)
                .map_err(lost)?
                .reply()
                .map_err(x_err)?;
            let data = seg.bytes(stride * sh).ok_or_else(|| MediaError::Device {
                kind: KIND,
                detail: format!("SHM image of {} bytes exceeds the segment", reply.size),
            })?;
            let capture_us = media_clock_us();
            let mut f = convert::packed_to_i420(KIND, data, sw, sh, stride, self.layout, ow, oh)?;
            f.capture_us = capture_us;
            f
        } else {
            let reply = self
                .conn
                .get_image(ImageFormat::Z_PIXMAP, self.root, x, y, w, h, !0)
                .map_err(lost)?
                .reply()
                .map_err(x_err)?;
            let capture_us = media_clock_us();
            let mut f =
                convert::packed_to_i420(KIND, &reply.data, sw, sh, stride, self.layout, ow, oh)?;
            f.capture_us = capture_us;
            f
        };
        self.last_size = (frame.width, frame.height);
        Ok(frame)
    }
}

impl VideoSource for ScreenSource {
    fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the next slot of the frame-rate cap, then captures.
    fn next_frame(&mut self) -> Result<I420Frame, MediaError> {
        let now = Instant::now();
        let due = self.next_due.unwrap_or(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        // Schedule from the slot, not from now, so the rate holds on average; after a stall
        // start afresh instead of bursting to catch up.
        let base = if Instant::now() > due + self.interval {
            Instant::now()
        } else {
            due
        };
        self.next_due = Some(base + self.interval);
        self.capture()
    }
}

impl Drop for ScreenSource {
    fn drop(&mut self) {
        if let Some(seg) = &self.shm {
            // Best effort: the server also detaches when the connection closes.
            let _ = self.conn.shm_detach(seg.seg);
            let _ = self.conn.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_layout_from_visual_masks() {
        let bgrx = layout_for((0xff0000, 0xff00, 0xff), ImageOrder::LSB_FIRST).expect("layout");
        assert_eq!((bgrx.r, bgrx.g, bgrx.b), (2, 1, 0));
        let xrgb = layout_for((0xff0000, 0xff00, 0xff), ImageOrder::MSB_FIRST).expect("layout");
        assert_eq!((xrgb.r, xrgb.g, xrgb.b), (1, 2, 3));
        // 10-bit or 16-bit visuals are refused, not misread.
        assert!(layout_for((0x3ff00000, 0xffc00, 0x3ff), ImageOrder::LSB_FIRST).is_none());
        assert!(layout_for((0xf800, 0x7e0, 0x1f), ImageOrder::LSB_FIRST).is_none());
    }

    #[test]
    fn no_display_is_no_device() {
        for display in ["", ":4242"] {
            match list_screens_on(Some(display)) {
                Err(MediaError::NoDevice { kind, detail }) => {
                    assert_eq!(kind, "screen");
                    assert!(detail.contains("synthetic"), "{detail}");
                }
                other => panic!("display {display:?}: expected NoDevice, got {other:?}"),
            }
            let opts = ScreenOptions {
                display: Some(display.into()),
                ..ScreenOptions::default()
            };
            assert!(matches!(
                ScreenSource::open_with("screen:0", &opts),
                Err(MediaError::NoDevice { kind: "screen", .. })
            ));
        }
    }
}
