//! Pixel-format conversion from what devices deliver (packed RGB/BGRX, YUYV, NV12, grey) to the
//! app's one picture format, [`I420Frame`] with even sizes.
//!
//! Colour matrix: BT.601 "limited range" (Y 16..235, chroma 16..240), the same one the synthetic
//! source, OpenH264 and the renderer assume, so a captured colour survives the whole path.
//! Integer arithmetic with 8-bit fixed-point coefficients keeps this cheap enough to run per
//! frame on the capture thread: a 1280×720 screen frame, SHM capture included, took 3.6 ms in a
//! release build and 33–44 ms in a debug build on the 2-core dev machine under load
//! (tests/e2e/devices_screen.rs prints it). Plain scalar code; SIMD would be the next step.
//!
//! Scaling is nearest-neighbour (only used to shrink screens larger than 1920×1080): it costs
//! nothing extra per pixel, at the price of dropped rows/columns in fine text. Chroma is the
//! average of each 2×2 block, so colour edges do not alias.

use super::super::MediaError;
use super::super::frame::I420Frame;

// The conversion maths as macros rather than functions: an unoptimised (debug) build does not
// inline even `#[inline]` functions, and a call per pixel made 720p screen capture several
// times slower there. Inputs are `i32` in 0..=255; the results are provably in 16..=240, so the
// `as u8` never wraps.
macro_rules! luma {
    ($r:expr, $g:expr, $b:expr) => {
        ((((66 * $r + 129 * $g + 25 * $b + 128) >> 8) + 16) as u8)
    };
}
macro_rules! chroma_u {
    ($r:expr, $g:expr, $b:expr) => {
        ((((-38 * $r - 74 * $g + 112 * $b + 128) >> 8) + 128) as u8)
    };
}
macro_rules! chroma_v {
    ($r:expr, $g:expr, $b:expr) => {
        ((((112 * $r - 94 * $g - 18 * $b + 128) >> 8) + 128) as u8)
    };
}

/// Luma of an sRGB pixel (BT.601, limited range).
#[cfg(test)]
fn rgb_to_y(r: u8, g: u8, b: u8) -> u8 {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    luma!(r, g, b)
}

/// Chroma (U, V) of an sRGB pixel (BT.601, limited range).
#[cfg(test)]
fn rgb_to_uv(r: i32, g: i32, b: i32) -> (u8, u8) {
    (chroma_u!(r, g, b), chroma_v!(r, g, b))
}

/// Where R, G and B sit inside one packed pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedLayout {
    /// Bytes per pixel (3 or 4).
    pub bpp: usize,
    pub r: usize,
    pub g: usize,
    pub b: usize,
}

/// `R G B` (decoded MJPEG, V4L2 `RGB3`).
pub(crate) const RGB24: PackedLayout = PackedLayout {
    bpp: 3,
    r: 0,
    g: 1,
    b: 2,
};
/// `B G R` (V4L2 `BGR3`).
pub(crate) const BGR24: PackedLayout = PackedLayout {
    bpp: 3,
    r: 2,
    g: 1,
    b: 0,
};

/// The largest even size with the source's aspect ratio that fits in `max_w`×`max_h` (never
/// upscales). Used to cap screen capture at 1920×1080.
pub(crate) fn fit_within(w: usize, h: usize, max_w: usize, max_h: usize) -> (usize, usize) {
    let (w, h) = (w.max(2), h.max(2));
    let (mut ow, mut oh) = (w, h);
    if ow > max_w || oh > max_h {
        // Scale by the tighter of the two limits; integer maths keeps it exact for 16:9.
        if w * max_h > h * max_w {
            ow = max_w;
            oh = h * max_w / w;
        } else {
            oh = max_h;
            ow = w * max_h / h;
        }
    }
    ((ow & !1).max(2), (oh & !1).max(2))
}

fn short(kind: &'static str, what: &str, got: usize, need: usize) -> MediaError {
    MediaError::Device {
        kind,
        detail: format!("{what}: buffer has {got} bytes, the format needs {need}"),
    }
}

/// Packed RGB-like pixels (rows `stride` bytes apart) to an `out_w`×`out_h` I420 frame.
/// `out_w`/`out_h` must be even; the source is sampled nearest-neighbour when the sizes differ.
#[allow(clippy::too_many_arguments)]
pub(crate) fn packed_to_i420(
    kind: &'static str,
    src: &[u8],
    src_w: usize,
    src_h: usize,
    stride: usize,
    layout: PackedLayout,
    out_w: usize,
    out_h: usize,
) -> Result<I420Frame, MediaError> {
    let mut f = I420Frame::black(out_w, out_h)?;
    if src_w == 0 || src_h == 0 || stride < src_w * layout.bpp {
        return Err(MediaError::Geometry {
            width: src_w,
            height: src_h,
        });
    }
    let need = (src_h - 1) * stride + src_w * layout.bpp;
    if src.len() < need {
        return Err(short(kind, "packed RGB", src.len(), need));
    }
    let cw = out_w / 2;
    let row_bytes = src_w * layout.bpp;
    let (ri, gi, bi, bpp) = (layout.r, layout.g, layout.b, layout.bpp);
    // Nearest-neighbour index tables, only needed when the size changes.
    let scaled = out_w != src_w || out_h != src_h;
    let (xs, ys): (Vec<usize>, Vec<usize>) = if scaled {
        (
            (0..out_w).map(|x| (x * src_w / out_w) * bpp).collect(),
            (0..out_h).map(|y| (y * src_h / out_h) * stride).collect(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    for cy in 0..out_h / 2 {
        let (t, b) = if scaled {
            (ys[2 * cy], ys[2 * cy + 1])
        } else {
            (2 * cy * stride, (2 * cy + 1) * stride)
        };
        let top = &src[t..t + row_bytes];
        let bottom = &src[b..b + row_bytes];
        let y_row = 2 * cy * out_w;
        let c_row = cy * cw;
        for cx in 0..cw {
            let (c0, c1) = if scaled {
                (xs[2 * cx], xs[2 * cx + 1])
            } else {
                (2 * cx * bpp, 2 * cx * bpp + bpp)
            };
            let (r0, g0, b0) = (
                top[c0 + ri] as i32,
                top[c0 + gi] as i32,
                top[c0 + bi] as i32,
            );
            let (r1, g1, b1) = (
                top[c1 + ri] as i32,
                top[c1 + gi] as i32,
                top[c1 + bi] as i32,
            );
            let (r2, g2, b2) = (
                bottom[c0 + ri] as i32,
                bottom[c0 + gi] as i32,
                bottom[c0 + bi] as i32,
            );
            let (r3, g3, b3) = (
                bottom[c1 + ri] as i32,
                bottom[c1 + gi] as i32,
                bottom[c1 + bi] as i32,
            );
            f.y[y_row + 2 * cx] = luma!(r0, g0, b0);
            f.y[y_row + 2 * cx + 1] = luma!(r1, g1, b1);
            f.y[y_row + out_w + 2 * cx] = luma!(r2, g2, b2);
            f.y[y_row + out_w + 2 * cx + 1] = luma!(r3, g3, b3);
            // Chroma of the block's average colour.
            let r = (r0 + r1 + r2 + r3 + 2) >> 2;
            let g = (g0 + g1 + g2 + g3 + 2) >> 2;
            let b = (b0 + b1 + b2 + b3 + 2) >> 2;
            f.u[c_row + cx] = chroma_u!(r, g, b);
            f.v[c_row + cx] = chroma_v!(r, g, b);
        }
    }
    Ok(f)
}

/// YUYV 4:2:2 (`Y0 U Y1 V` per pixel pair, the usual uncompressed webcam format) to I420.
/// Cameras already deliver limited-range BT.601, so luma is copied and the chroma of each row
/// pair is averaged. An odd height loses its last row.
pub(crate) fn yuyv_to_i420(
    kind: &'static str,
    src: &[u8],
    width: usize,
    height: usize,
) -> Result<I420Frame, MediaError> {
    let (w, h) = (width & !1, height & !1);
    let mut f = I420Frame::black(w, h)?;
    let stride = width * 2;
    let need = stride * h;
    if src.len() < need {
        return Err(short(kind, "YUYV", src.len(), need));
    }
    let cw = w / 2;
    for cy in 0..h / 2 {
        let top = &src[2 * cy * stride..2 * cy * stride + 2 * w];
        let bottom = &src[(2 * cy + 1) * stride..(2 * cy + 1) * stride + 2 * w];
        for cx in 0..cw {
            let (t, b) = (&top[4 * cx..4 * cx + 4], &bottom[4 * cx..4 * cx + 4]);
            f.y[2 * cy * w + 2 * cx] = t[0];
            f.y[2 * cy * w + 2 * cx + 1] = t[2];
            f.y[(2 * cy + 1) * w + 2 * cx] = b[0];
            f.y[(2 * cy + 1) * w + 2 * cx + 1] = b[2];
            f.u[cy * cw + cx] = (u16::from(t[1]) + u16::from(b[1])).div_ceil(2) as u8;
            f.v[cy * cw + cx] = (u16::from(t[3]) + u16::from(b[3])).div_ceil(2) as u8;
        }
    }
    Ok(f)
}

/// NV12 (full luma plane, then interleaved `U V` at quarter resolution) to I420: a plane copy
/// and a de-interleave.
pub(crate) fn nv12_to_i420(
    kind: &'static str,
    src: &[u8],
    width: usize,
    height: usize,
) -> Result<I420Frame, MediaError> {
    let (w, h) = (width & !1, height & !1);
    let mut f = I420Frame::black(w, h)?;
    // The chroma plane of an odd-sized NV12 image is rounded up.
    let chroma_stride = width.div_ceil(2) * 2;
    let need = width * height + chroma_stride * (h / 2);
    if src.len() < need {
        return Err(short(kind, "NV12", src.len(), need));
    }
    for row in 0..h {
        f.y[row * w..(row + 1) * w].copy_from_slice(&src[row * width..row * width + w]);
    }
    let uv = &src[width * height..];
    let cw = w / 2;
    for row in 0..h / 2 {
        let line = &uv[row * chroma_stride..row * chroma_stride + 2 * cw];
        for (cx, pair) in line.chunks_exact(2).enumerate() {
            f.u[row * cw + cx] = pair[0];
            f.v[row * cw + cx] = pair[1];
        }
    }
    Ok(f)
}

/// 8-bit full-range grey to I420 (luma squeezed into 16..235, neutral chroma).
pub(crate) fn gray_to_i420(
    kind: &'static str,
    src: &[u8],
    width: usize,
    height: usize,
) -> Result<I420Frame, MediaError> {
    let (w, h) = (width & !1, height & !1);
    let mut f = I420Frame::black(w, h)?;
    let need = width * h;
    if src.len() < need {
        return Err(short(kind, "GRAY", src.len(), need));
    }
    for row in 0..h {
        for (dst, s) in f.y[row * w..(row + 1) * w]
            .iter_mut()
            .zip(&src[row * width..row * width + w])
        {
            *dst = (16 + (u32::from(*s) * 219 + 127) / 255) as u8;
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_land_on_the_bt601_limited_range_values() {
        assert_eq!(rgb_to_y(0, 0, 0), 16);
        assert_eq!(rgb_to_y(255, 255, 255), 235);
        assert_eq!(rgb_to_y(255, 0, 0), 82);
        assert_eq!(rgb_to_uv(255, 0, 0), (90, 240));
        assert_eq!(rgb_to_y(0, 0, 255), 41);
        assert_eq!(rgb_to_uv(0, 0, 255), (240, 110));
        assert_eq!(rgb_to_uv(128, 128, 128), (128, 128));
    }

    #[test]
    fn fit_within_keeps_aspect_even_and_never_upscales() {
        assert_eq!(fit_within(1280, 720, 1920, 1080), (1280, 720));
        assert_eq!(fit_within(2560, 1440, 1920, 1080), (1920, 1080));
        assert_eq!(fit_within(3840, 1600, 1920, 1080), (1920, 800));
        assert_eq!(fit_within(1080, 2400, 1920, 1080), (486, 1080));
        assert_eq!(fit_within(801, 601, 1920, 1080), (800, 600));
        assert_eq!(fit_within(1, 1, 1920, 1080), (2, 2));
    }

    #[test]
    fn packed_rgb_converts_and_downscales_with_block_chroma() {
        // 4×2 BGRX image: left half red, right half blue, with 4 bytes of row padding.
        let layout = PackedLayout {
            bpp: 4,
            r: 2,
            g: 1,
            b: 0,
        };
        let stride = 4 * 4 + 4;
        let mut src = vec![0u8; stride * 2];
        for row in 0..2 {
            for col in 0..4 {
                let o = row * stride + col * 4;
                if col < 2 {
                    src[o + 2] = 255;
                } else {
                    src[o] = 255;
                }
            }
        }
        let f = packed_to_i420("screen", &src, 4, 2, stride, layout, 4, 2).expect("convert");
        assert_eq!(f.y, vec![82, 82, 41, 41, 82, 82, 41, 41]);
        assert_eq!(f.u, vec![90, 240]);
        assert_eq!(f.v, vec![240, 110]);
        // Halving picks every other column: red, blue.
        let small = packed_to_i420("screen", &src, 4, 2, stride, layout, 2, 2).expect("convert");
        assert_eq!(small.y, vec![82, 41, 82, 41]);
        assert!(packed_to_i420("screen", &src[..10], 4, 2, stride, layout, 4, 2).is_err());
        assert!(packed_to_i420("screen", &src, 4, 2, stride, layout, 3, 2).is_err());
        let rgb = [255u8, 255, 255].repeat(4);
        let white = packed_to_i420("camera", &rgb, 2, 2, 6, RGB24, 2, 2).expect("convert");
        assert_eq!(white.y, vec![235; 4]);
        let bgr = [255u8, 0, 0].repeat(4); // blue in BGR order
        let blue = packed_to_i420("camera", &bgr, 2, 2, 6, BGR24, 2, 2).expect("convert");
        assert_eq!((blue.y[0], blue.u[0], blue.v[0]), (41, 240, 110));
    }

    #[test]
    fn yuyv_nv12_and_gray_reach_i420() {
        // 2×2 YUYV: rows (Y 10,20 U 100 V 200) and (Y 30,40 U 110 V 210).
        let yuyv = [10, 100, 20, 200, 30, 110, 40, 210];
        let f = yuyv_to_i420("camera", &yuyv, 2, 2).expect("yuyv");
        assert_eq!(f.y, vec![10, 20, 30, 40]);
        assert_eq!((f.u[0], f.v[0]), (105, 205));
        assert!(yuyv_to_i420("camera", &yuyv[..6], 2, 2).is_err());
        // An odd height drops the last row.
        let tall = [yuyv.as_slice(), &[50, 120, 60, 220]].concat();
        assert_eq!(yuyv_to_i420("camera", &tall, 2, 3).expect("yuyv").height, 2);

        let nv12 = [1, 2, 3, 4, 7, 9];
        let f = nv12_to_i420("camera", &nv12, 2, 2).expect("nv12");
        assert_eq!((f.y.as_slice(), f.u[0], f.v[0]), (&[1, 2, 3, 4][..], 7, 9));
        assert!(nv12_to_i420("camera", &nv12[..5], 2, 2).is_err());

        let f = gray_to_i420("camera", &[0, 255, 128, 64], 2, 2).expect("gray");
        assert_eq!(f.y, vec![16, 235, 126, 71]);
        assert_eq!((f.u[0], f.v[0]), (128, 128));
    }
}
