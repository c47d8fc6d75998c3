//! I420 (YUV 4:2:0 planar) frames: the one picture format between sources, encoders, decoders and
//! the renderer. Planes are tightly packed (stride = width, chroma stride = width / 2).

use super::MediaError;

#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
    /// Capture time on the media clock, in microseconds.
    pub capture_us: u64,
}

impl std::fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "I420Frame({}x{}, t={}µs)",
            self.width, self.height, self.capture_us
        )
    }
}

impl I420Frame {
    /// A black frame. Sizes must be even and non-zero (4:2:0 chroma).
    pub fn black(width: usize, height: usize) -> Result<I420Frame, MediaError> {
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(MediaError::Geometry { width, height });
        }
        Ok(I420Frame {
            width,
            height,
            y: vec![16; width * height],
            u: vec![128; width * height / 4],
            v: vec![128; width * height / 4],
            capture_us: 0,
        })
    }

    /// Copies a decoder's (possibly strided) planes into a packed frame; an odd size is cropped
    /// to the even size below it.
    pub fn from_planes(
        width: usize,
        height: usize,
        (y, u, v): (&[u8], &[u8], &[u8]),
        (ys, us, vs): (usize, usize, usize),
    ) -> Result<I420Frame, MediaError> {
        // I420 here is even-sized; a decoder may hand out an odd size (a browser sharing an
        // odd-sized window). Drop the last column/row instead of refusing the picture.
        let (width, height) = (width & !1, height & !1);
        let mut f = I420Frame::black(width, height)?;
        let (cw, ch) = (width / 2, height / 2);
        let short = || MediaError::H264("decoded plane shorter than its geometry".into());
        for row in 0..height {
            let src = y.get(row * ys..row * ys + width).ok_or_else(short)?;
            f.y[row * width..(row + 1) * width].copy_from_slice(src);
        }
        for row in 0..ch {
            let su = u.get(row * us..row * us + cw).ok_or_else(short)?;
            let sv = v.get(row * vs..row * vs + cw).ok_or_else(short)?;
            f.u[row * cw..(row + 1) * cw].copy_from_slice(su);
            f.v[row * cw..(row + 1) * cw].copy_from_slice(sv);
        }
        Ok(f)
    }
}

impl openh264::formats::YUVSource for I420Frame {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }
    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }
    fn y(&self) -> &[u8] {
        &self.y
    }
    fn u(&self) -> &[u8] {
        &self.u
    }
    fn v(&self) -> &[u8] {
        &self.v
    }
}

/// Peak signal-to-noise ratio of two planes in dB (∞ for identical planes, 0 for a size mismatch).
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let mse: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_and_psnr() {
        assert!(I420Frame::black(640, 480).is_ok());
        assert!(I420Frame::black(641, 480).is_err());
        assert!(I420Frame::black(0, 2).is_err());
        let a = vec![100u8; 64];
        let mut b = a.clone();
        assert_eq!(psnr(&a, &b), f64::INFINITY);
        b[0] = 110;
        let p = psnr(&a, &b);
        assert!((p - 46.2).abs() < 0.1, "{p}");
        assert_eq!(psnr(&a, &b[..10]), 0.0);
    }

    #[test]
    fn from_planes_removes_strides() {
        let y: Vec<u8> = (0..(8 * 2)).map(|i| i as u8).collect(); // width 4, stride 8
        let u = vec![1u8; 8];
        let v = vec![2u8; 8];
        let f = I420Frame::from_planes(4, 2, (&y, &u, &v), (8, 4, 4)).expect("frame");
        assert_eq!(f.y, vec![0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(f.u, vec![1, 1]);
        assert!(I420Frame::from_planes(4, 2, (&y[..5], &u, &v), (8, 4, 4)).is_err());
    }

    #[test]
    fn an_odd_sized_picture_is_cropped_to_even_not_refused() {
        // A browser sharing a 641x361 window sends odd-sized pictures (H.264 crops them).
        let (w, h) = (641usize, 361usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let y: Vec<u8> = (0..w * h).map(|i| (i % w) as u8).collect();
        let u = vec![100u8; cw * ch];
        let v = vec![200u8; cw * ch];
        let f = I420Frame::from_planes(w, h, (&y, &u, &v), (w, cw, cw)).expect("shown, cropped");
        assert_eq!((f.width, f.height), (640, 360));
        assert_eq!(f.y[639], 639u16 as u8, "columns kept from the left");
        assert_eq!(f.u[0], 100);
        assert_eq!(f.v[f.v.len() - 1], 200);
        assert!(I420Frame::from_planes(1, 1, (&[0], &[0], &[0]), (1, 1, 1)).is_err());
    }
}
