//! Cameras through nokhwa (V4L2 on Linux, AVFoundation on macOS, Media Foundation on Windows).
//!
//! The camera is opened and read on its own thread, never on the caller's: a V4L2 read can
//! block indefinitely when a USB camera is pulled, and nokhwa's `Camera` is not `Send` on every
//! platform. Frames go through a 2-slot queue that drops the oldest frame, so a slow encoder
//! always gets the freshest picture, and [`CameraSource::next_frame`] waits at most
//! [`FRAME_TIMEOUT`] before reporting [`MediaError::DeviceLost`].
//!
//! Formats: the device mode closest to the request is chosen by `choose_format`; YUYV, NV12,
//! grey and raw RGB/BGR are converted to I420 directly. MJPEG is decoded to RGB by nokhwa
//! (libjpeg-turbo through mozjpeg) and then converted, which costs roughly 5–10 ms per 720p frame
//! on one core: acceptable at 30 fps, and the price of the 30 fps modes most USB cameras only
//! offer in MJPEG.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use nokhwa::Camera;
use nokhwa::FormatDecoder;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
};

use super::convert;
use super::ring::{Ring, RingWait};
use super::{FRAME_TIMEOUT, no_device};
use crate::media::MediaError;
use crate::media::frame::I420Frame;
use crate::media::source::{DeviceInfo, VideoSource, media_clock_us};

const KIND: &str = "camera";
/// How long `open` waits for the capture thread to open the device and negotiate a mode.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Consecutive unreadable frames after which the camera is considered gone.
const MAX_BAD_FRAMES: u32 = 30;

/// The cameras the OS reports. An empty list is not an error (most of this project's machines
/// have none); an `Err` means the backend itself failed.
pub fn list_cameras() -> Result<Vec<DeviceInfo>, MediaError> {
    let cams = nokhwa::query(ApiBackend::Auto).map_err(|e| MediaError::Device {
        kind: KIND,
        detail: format!("listing cameras: {e}"),
    })?;
    Ok(cams
        .into_iter()
        .map(|c| DeviceInfo {
            id: c.index().as_string(),
            name: c.human_name(),
        })
        .collect())
}

/// The mode a camera was opened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraMode {
    /// Size of the delivered I420 frames (the device size rounded down to even).
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    /// The device's pixel format (`MJPEG`, `YUYV`, …) before conversion.
    pub device_format: &'static str,
}

/// A camera as a [`VideoSource`].
pub struct CameraSource {
    name: String,
    mode: CameraMode,
    ring: Arc<Ring<I420Frame>>,
    stop: Arc<AtomicBool>,
}

impl CameraSource {
    /// Opens a camera by index (`"0"`) or by its listed name, in the mode closest to
    /// `width`×`height`@`fps`. A missing camera is [`MediaError::NoDevice`].
    pub fn open(
        id_or_name: &str,
        width: u32,
        height: u32,
        fps: u32,
    ) -> Result<CameraSource, MediaError> {
        let cams = list_cameras()?;
        let wanted = id_or_name.trim();
        let found = cams
            .iter()
            .find(|c| c.id == wanted)
            .or_else(|| cams.iter().find(|c| c.name.eq_ignore_ascii_case(wanted)));
        let Some(info) = found else {
            let have = if cams.is_empty() {
                "this machine has none".to_string()
            } else {
                let names: Vec<String> = cams
                    .iter()
                    .map(|c| format!("{} ({})", c.id, c.name))
                    .collect();
                format!("available: {}", names.join(", "))
            };
            return Err(no_device(KIND, format!("no camera {wanted:?}; {have}")));
        };
        let index = match info.id.parse::<u32>() {
            Ok(n) => CameraIndex::Index(n),
            Err(_) => CameraIndex::String(info.id.clone()),
        };
        let name = info.name.clone();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let spawn = move |ring: Arc<Ring<I420Frame>>, stop: Arc<AtomicBool>| {
            std::thread::Builder::new()
                .name("meshcall-camera".into())
                .spawn(
                    move || match NokhwaGrabber::open(index, width, height, fps) {
                        Ok(grabber) => {
                            let _ = ready_tx.send(Ok(grabber.mode));
                            run_capture(grabber, &ring, &stop);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    },
                )
        };
        Self::start(name, spawn, ready_rx)
    }

    /// Starts the capture thread and waits for it to report the negotiated mode.
    fn start<F>(
        name: String,
        spawn: F,
        ready_rx: mpsc::Receiver<Result<CameraMode, MediaError>>,
    ) -> Result<CameraSource, MediaError>
    where
        F: FnOnce(
            Arc<Ring<I420Frame>>,
            Arc<AtomicBool>,
        ) -> std::io::Result<std::thread::JoinHandle<()>>,
    {
        let ring = Arc::new(Ring::new(2));
        let stop = Arc::new(AtomicBool::new(false));
        spawn(Arc::clone(&ring), Arc::clone(&stop)).map_err(|e| MediaError::Device {
            kind: KIND,
            detail: format!("starting the capture thread: {e}"),
        })?;
        let mode = match ready_rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok(mode)) => mode,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                // The thread may still be stuck in the driver; tell it to give up when it returns.
                stop.store(true, Ordering::Relaxed);
                return Err(MediaError::Device {
                    kind: KIND,
                    detail: format!("{name} did not open within {} s", OPEN_TIMEOUT.as_secs()),
                });
            }
        };
        Ok(CameraSource {
            name,
            mode,
            ring,
            stop,
        })
    }

    /// The negotiated mode (delivered size, frame rate, device pixel format).
    pub fn mode(&self) -> CameraMode {
        self.mode
    }

    /// Frames dropped because the consumer was slower than the camera.
    pub fn dropped_frames(&self) -> u64 {
        self.ring.dropped()
    }
}

impl VideoSource for CameraSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_frame(&mut self) -> Result<I420Frame, MediaError> {
        self.ring
            .pop_wait(FRAME_TIMEOUT)
            .map_err(|w| MediaError::DeviceLost {
                kind: KIND,
                detail: match w {
                    RingWait::TimedOut => format!(
                        "{}: no frame for {} s (unplugged?)",
                        self.name,
                        FRAME_TIMEOUT.as_secs()
                    ),
                    RingWait::Closed(reason) => format!("{}: {reason}", self.name),
                },
            })
    }
}

impl Drop for CameraSource {
    /// Asks the capture thread to stop; it is not joined, because a thread stuck in a read
    /// from an unplugged device would hang the caller. It exits at its next frame.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One frame read from a device.
pub(crate) enum Grab {
    Frame(I420Frame),
    /// A frame that could not be read or converted; the device may recover.
    Bad(String),
    /// The device is gone.
    Lost(String),
}

/// Reads frames from a device (nokhwa in production, fakes in tests).
pub(crate) trait Grabber {
    fn grab(&mut self) -> Grab;
}

/// The capture loop: stamps and queues frames until stopped or the device is lost. It closes
/// the queue with the reason, so the consumer reports `DeviceLost` immediately instead of
/// waiting out the timeout.
pub(crate) fn run_capture<G: Grabber>(mut grabber: G, ring: &Ring<I420Frame>, stop: &AtomicBool) {
    let mut bad = 0u32;
    while !stop.load(Ordering::Relaxed) {
        match grabber.grab() {
            Grab::Frame(f) => {
                bad = 0;
                ring.push_overwrite([f]);
            }
            Grab::Bad(why) => {
                bad += 1;
                tracing::debug!(%why, "camera frame skipped");
                if bad >= MAX_BAD_FRAMES {
                    ring.close(format!("{bad} unreadable frames in a row, last: {why}"));
                    return;
                }
            }
            Grab::Lost(why) => {
                ring.close(why);
                return;
            }
        }
    }
    ring.close("stopped");
}

struct NokhwaGrabber {
    camera: Camera,
    mode: CameraMode,
    format: CameraFormat,
}

fn nokhwa_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::Device {
        kind: KIND,
        detail: e.to_string(),
    }
}

impl NokhwaGrabber {
    fn open(index: CameraIndex, width: u32, height: u32, fps: u32) -> Result<Self, MediaError> {
        // Open with any format we can decode, then pick the mode ourselves: nokhwa's `Closest`
        // request only matches frame rates of the exact requested size and fails otherwise.
        let any = RequestedFormat::new::<RgbFormat>(RequestedFormatType::None);
        let mut camera = Camera::new(index, any).map_err(nokhwa_err)?;
        let formats = camera.compatible_camera_formats().map_err(nokhwa_err)?;
        let format =
            choose_format(&formats, width, height, fps).ok_or_else(|| MediaError::Device {
                kind: KIND,
                detail: format!("no usable video mode among {} offered", formats.len()),
            })?;
        // `Exact` with the chosen mode is the non-deprecated way to set it.
        let exact = [format.format()];
        camera
            .set_camera_requset(RequestedFormat::with_formats(
                RequestedFormatType::Exact(format),
                &exact,
            ))
            .map_err(nokhwa_err)?;
        camera.open_stream().map_err(nokhwa_err)?;
        let format = camera.camera_format();
        let mode = CameraMode {
            width: (format.width() & !1) as usize,
            height: (format.height() & !1) as usize,
            fps: format.frame_rate(),
            device_format: format_name(format.format()),
        };
        Ok(NokhwaGrabber {
            camera,
            mode,
            format,
        })
    }
}

impl Grabber for NokhwaGrabber {
    fn grab(&mut self) -> Grab {
        let buf = match self.camera.frame() {
            Ok(b) => b,
            // V4L2 reports ENODEV once the device node is gone; anything else may be transient.
            Err(e) => {
                let why = e.to_string();
                return if why.contains("No such device") || why.contains("os error 19") {
                    Grab::Lost(why)
                } else {
                    Grab::Bad(why)
                };
            }
        };
        let capture_us = media_clock_us();
        let res = buf.resolution();
        match convert_frame(
            buf.source_frame_format(),
            buf.buffer(),
            res.width() as usize,
            res.height() as usize,
        ) {
            Ok(mut f) => {
                f.capture_us = capture_us;
                Grab::Frame(f)
            }
            Err(e) => Grab::Bad(format!("{} frame: {e}", format_name(self.format.format()))),
        }
    }
}

fn format_name(f: FrameFormat) -> &'static str {
    match f {
        FrameFormat::MJPEG => "MJPEG",
        FrameFormat::YUYV => "YUYV",
        FrameFormat::NV12 => "NV12",
        FrameFormat::GRAY => "GRAY",
        FrameFormat::RAWRGB => "RGB3",
        FrameFormat::RAWBGR => "BGR3",
    }
}

/// Relative cost of turning a device format into I420 (lower is cheaper); breaks ties between
/// modes of equal size and rate.
fn conversion_cost(f: FrameFormat) -> u32 {
    match f {
        FrameFormat::NV12 => 0,
        FrameFormat::YUYV => 1,
        FrameFormat::RAWRGB | FrameFormat::RAWBGR => 2,
        FrameFormat::MJPEG => 3,
        // Grey loses colour: only if nothing else matches as well.
        FrameFormat::GRAY => 4,
    }
}

/// The device mode closest to the request: nearest size first (sum of the width and height
/// differences), then the nearest frame rate, then the cheapest conversion. Returns `None` for
/// an empty list.
pub(crate) fn choose_format(
    formats: &[CameraFormat],
    width: u32,
    height: u32,
    fps: u32,
) -> Option<CameraFormat> {
    formats.iter().copied().min_by_key(|f| {
        let size = f.width().abs_diff(width) + f.height().abs_diff(height);
        (
            size,
            f.frame_rate().abs_diff(fps),
            conversion_cost(f.format()),
        )
    })
}

/// Converts one device buffer to I420 (even sizes).
pub(crate) fn convert_frame(
    format: FrameFormat,
    data: &[u8],
    width: usize,
    height: usize,
) -> Result<I420Frame, MediaError> {
    let (ew, eh) = (width & !1, height & !1);
    match format {
        FrameFormat::YUYV => convert::yuyv_to_i420(KIND, data, width, height),
        FrameFormat::NV12 => convert::nv12_to_i420(KIND, data, width, height),
        FrameFormat::GRAY => convert::gray_to_i420(KIND, data, width, height),
        FrameFormat::RAWRGB => {
            convert::packed_to_i420(KIND, data, width, height, width * 3, convert::RGB24, ew, eh)
        }
        FrameFormat::RAWBGR => {
            convert::packed_to_i420(KIND, data, width, height, width * 3, convert::BGR24, ew, eh)
        }
        FrameFormat::MJPEG => {
            let res = nokhwa::utils::Resolution::new(width as u32, height as u32);
            // libjpeg's fatal errors unwind out of mozjpeg (`resume_unwind`) instead of returning
            // an error, so a corrupt frame from a flaky USB link must be caught here or it would
            // take the capture thread down.
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                RgbFormat::write_output(FrameFormat::MJPEG, res, data)
            }));
            let rgb = match decoded {
                Ok(r) => r.map_err(nokhwa_err)?,
                Err(payload) => {
                    let why = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "libjpeg error".into());
                    return Err(MediaError::Device {
                        kind: KIND,
                        detail: format!("MJPEG frame: {why}"),
                    });
                }
            };
            // Trust the decoded size over the negotiated one if a camera sends something else.
            if rgb.len() != width * height * 3 {
                return Err(MediaError::Device {
                    kind: KIND,
                    detail: format!(
                        "MJPEG frame decoded to {} bytes, expected {width}x{height} RGB",
                        rgb.len()
                    ),
                });
            }
            convert::packed_to_i420(KIND, &rgb, width, height, width * 3, convert::RGB24, ew, eh)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nokhwa::utils::Resolution;
    use std::time::Instant;

    fn fmt(w: u32, h: u32, ff: FrameFormat, fps: u32) -> CameraFormat {
        CameraFormat::new(Resolution::new(w, h), ff, fps)
    }

    #[test]
    fn choose_format_prefers_size_then_rate_then_cheap_conversion() {
        let offered = [
            fmt(640, 480, FrameFormat::YUYV, 30),
            fmt(1280, 720, FrameFormat::YUYV, 10),
            fmt(1280, 720, FrameFormat::MJPEG, 30),
            fmt(1920, 1080, FrameFormat::MJPEG, 30),
        ];
        // Same size: the 30 fps MJPEG mode beats 10 fps YUYV.
        assert_eq!(choose_format(&offered, 1280, 720, 30), Some(offered[2]));
        // Same size and rate: the cheaper YUYV wins.
        assert_eq!(choose_format(&offered, 1280, 720, 10), Some(offered[1]));
        // No exact size: the nearest one (nokhwa's own `Closest` fails here).
        assert_eq!(choose_format(&offered, 1200, 700, 30), Some(offered[2]));
        assert_eq!(choose_format(&offered, 320, 240, 15), Some(offered[0]));
        assert_eq!(choose_format(&[], 1280, 720, 30), None);
    }

    #[test]
    fn mjpeg_frames_decode_to_i420_with_the_right_colour() {
        // A 64×32 JPEG, left half red, right half blue, made with libjpeg-turbo (mozjpeg).
        let (w, h) = (64usize, 32usize);
        let mut rgb = Vec::with_capacity(w * h * 3);
        for _ in 0..h {
            for x in 0..w {
                rgb.extend_from_slice(if x < w / 2 {
                    &[255, 0, 0]
                } else {
                    &[0, 0, 255]
                });
            }
        }
        let jpeg = std::panic::catch_unwind(|| {
            let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
            comp.set_size(w, h);
            comp.set_quality(95.0);
            let mut started = comp.start_compress(Vec::new()).expect("start");
            started.write_scanlines(&rgb).expect("scanlines");
            started.finish().expect("finish")
        })
        .unwrap_or_else(|p| panic!("mozjpeg: {:?}", p.downcast_ref::<String>()));

        let f = convert_frame(FrameFormat::MJPEG, &jpeg, w, h).expect("decode");
        assert_eq!((f.width, f.height), (64, 32));
        let at = |x: usize, y: usize| f.y[y * w + x];
        let uv = |x: usize, y: usize| {
            (
                f.u[(y / 2) * (w / 2) + x / 2],
                f.v[(y / 2) * (w / 2) + x / 2],
            )
        };
        assert!(at(8, 16).abs_diff(82) <= 3, "red luma {}", at(8, 16));
        assert!(at(56, 16).abs_diff(41) <= 3, "blue luma {}", at(56, 16));
        let (u, v) = uv(8, 16);
        assert!(
            u.abs_diff(90) <= 4 && v.abs_diff(240) <= 4,
            "red chroma {u},{v}"
        );
        let (u, v) = uv(56, 16);
        assert!(
            u.abs_diff(240) <= 4 && v.abs_diff(110) <= 4,
            "blue chroma {u},{v}"
        );

        // Garbage and truncated frames are errors, not panics on the capture thread.
        assert!(convert_frame(FrameFormat::MJPEG, b"not a jpeg", w, h).is_err());
        assert!(convert_frame(FrameFormat::MJPEG, &jpeg[..20], w, h).is_err());
    }

    /// Delivers `frames` frames, then either blocks (a hung driver) or reports the device gone.
    struct Fake {
        frames: u32,
        then_lost: bool,
    }

    impl Grabber for Fake {
        fn grab(&mut self) -> Grab {
            if self.frames == 0 {
                if self.then_lost {
                    return Grab::Lost("No such device (os error 19)".into());
                }
                // A hung driver: the read does not return for a long time.
                std::thread::sleep(Duration::from_secs(5));
                return Grab::Bad("EAGAIN".into());
            }
            self.frames -= 1;
            std::thread::sleep(Duration::from_millis(5));
            let mut f = I420Frame::black(4, 2).expect("frame");
            f.capture_us = media_clock_us();
            Grab::Frame(f)
        }
    }

    fn fake_source(frames: u32, then_lost: bool) -> CameraSource {
        let (tx, rx) = mpsc::sync_channel(1);
        let spawn = move |ring: Arc<Ring<I420Frame>>, stop: Arc<AtomicBool>| {
            std::thread::Builder::new().spawn(move || {
                let _ = tx.send(Ok(CameraMode {
                    width: 4,
                    height: 2,
                    fps: 30,
                    device_format: "YUYV",
                }));
                run_capture(Fake { frames, then_lost }, &ring, &stop);
            })
        };
        CameraSource::start("fake camera".into(), spawn, rx).expect("start")
    }

    #[test]
    fn unplugged_camera_is_device_lost_at_once() {
        let mut cam = fake_source(1, true);
        assert_eq!(cam.mode().width, 4);
        // The one frame may or may not still be queued when the loss is seen; then the loss.
        let t0 = Instant::now();
        let mut lost = None;
        for _ in 0..3 {
            if let Err(e) = cam.next_frame() {
                lost = Some(e);
                break;
            }
        }
        match lost {
            Some(MediaError::DeviceLost { kind, detail }) => {
                assert_eq!(kind, "camera");
                assert!(detail.contains("No such device"), "{detail}");
            }
            other => panic!("expected DeviceLost, got {other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(1), "no timeout wait");
    }

    #[test]
    fn silent_camera_is_device_lost_after_two_seconds_not_a_hang() {
        let mut cam = fake_source(30, false);
        // 30 frames exceed the 2-slot queue: the oldest are dropped, not blocked on.
        let t0 = Instant::now();
        while cam.dropped_frames() < 28 {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "{}",
                cam.dropped_frames()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut got = 0;
        let t0 = Instant::now();
        let err = loop {
            match cam.next_frame() {
                Ok(_) => got += 1,
                Err(e) => break e,
            }
        };
        let waited = t0.elapsed();
        assert_eq!(got, 2, "only the two freshest frames were kept");
        assert!(
            matches!(err, MediaError::DeviceLost { kind: "camera", .. }),
            "{err:?}"
        );
        assert!(
            waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
    }

    #[test]
    fn open_timeout_or_open_error_is_reported() {
        let (tx, rx) = mpsc::sync_channel(1);
        let spawn = move |_ring: Arc<Ring<I420Frame>>, _stop: Arc<AtomicBool>| {
            std::thread::Builder::new().spawn(move || {
                let _ = tx.send(Err(MediaError::Device {
                    kind: KIND,
                    detail: "busy".into(),
                }));
            })
        };
        assert!(matches!(
            CameraSource::start("x".into(), spawn, rx),
            Err(MediaError::Device { .. })
        ));
    }
}
