//! A machine-readable stamp in the picture: frame number (32 bits), capture time (48 bits of µs)
//! and an 8-bit check, drawn as 3 rows of 30 luma blocks of 16×16 pixels (black = 0, white = 1)
//! in the top-left corner (480 × 48 pixels, so it fits a 640×480 frame). Big blocks on the macroblock grid survive H.264 at ordinary bitrates, so the
//! receiver can read back exactly which frame it got and when it was captured — the basis of
//! glass-to-glass latency and frame-loss measurements.

use super::frame::I420Frame;

const BLOCK: usize = 16;
const COLS: usize = 30;
const ROWS: usize = 3;
/// Pixels the stamp needs: 480 × 48.
pub const STAMP_WIDTH: usize = BLOCK * COLS;
pub const STAMP_HEIGHT: usize = BLOCK * ROWS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub frame: u32,
    /// Capture time in µs (only the low 48 bits are carried: ~8.9 years).
    pub capture_us: u64,
}

fn check(frame: u32, us: u64) -> u8 {
    let mut x = u64::from(frame) ^ (us << 7) ^ 0x5A;
    let mut c = 0u8;
    for _ in 0..11 {
        c ^= x as u8;
        x >>= 8;
    }
    c
}

fn bits(s: Stamp) -> [bool; COLS * ROWS] {
    let us = s.capture_us & ((1 << 48) - 1);
    let value: u128 =
        u128::from(s.frame) | (u128::from(us) << 32) | (u128::from(check(s.frame, us)) << 80);
    let mut out = [false; COLS * ROWS];
    for (i, b) in out.iter_mut().enumerate() {
        *b = (value >> i) & 1 == 1;
    }
    out
}

/// Draws the stamp; frames narrower than [`STAMP_WIDTH`] or lower than [`STAMP_HEIGHT`] are left
/// untouched (returns false).
pub fn draw(frame: &mut I420Frame, s: Stamp) -> bool {
    if frame.width < STAMP_WIDTH || frame.height < STAMP_HEIGHT {
        return false;
    }
    for (i, bit) in bits(s).iter().enumerate() {
        let (bx, by) = (i % COLS, i / COLS);
        let value = if *bit { 235 } else { 16 };
        for row in by * BLOCK..(by + 1) * BLOCK {
            let start = row * frame.width + bx * BLOCK;
            frame.y[start..start + BLOCK].fill(value);
        }
    }
    // Neutral chroma under the stamp keeps it readable after colour subsampling.
    let cw = frame.width / 2;
    for row in 0..STAMP_HEIGHT / 2 {
        frame.u[row * cw..row * cw + STAMP_WIDTH / 2].fill(128);
        frame.v[row * cw..row * cw + STAMP_WIDTH / 2].fill(128);
    }
    true
}

/// Reads a stamp back (the centre 8×8 of each block, thresholded); `None` when the frame is too
/// small or the check does not match (a damaged or missing stamp).
pub fn read(frame: &I420Frame) -> Option<Stamp> {
    if frame.width < STAMP_WIDTH || frame.height < STAMP_HEIGHT {
        return None;
    }
    let mut value: u128 = 0;
    for i in 0..COLS * ROWS {
        let (bx, by) = (i % COLS, i / COLS);
        let mut sum = 0u32;
        for row in by * BLOCK + 4..by * BLOCK + 12 {
            let start = row * frame.width + bx * BLOCK + 4;
            sum += frame.y[start..start + 8]
                .iter()
                .map(|p| u32::from(*p))
                .sum::<u32>();
        }
        if sum / 64 >= 126 {
            value |= 1 << i;
        }
    }
    let frame_no = (value & 0xFFFF_FFFF) as u32;
    let us = ((value >> 32) & ((1 << 48) - 1)) as u64;
    let c = ((value >> 80) & 0xFF) as u8;
    (c == check(frame_no, us)).then_some(Stamp {
        frame: frame_no,
        capture_us: us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage_detection() {
        let mut f = I420Frame::black(1280, 720).expect("frame");
        let s = Stamp {
            frame: 123_456,
            capture_us: 98_765_432_101,
        };
        assert!(draw(&mut f, s));
        assert_eq!(read(&f), Some(s));
        // Mild noise everywhere is fine …
        for (i, p) in f.y.iter_mut().enumerate() {
            *p = p.saturating_add((i % 7) as u8 * 3);
        }
        assert_eq!(read(&f), Some(s));
        // … a flipped block is detected.
        for row in 4..12 {
            let start = row * f.width + 4;
            for p in &mut f.y[start..start + 8] {
                *p = 255 - *p;
            }
        }
        assert_eq!(read(&f), None);
        let mut small = I420Frame::black(320, 240).expect("frame");
        assert!(!draw(&mut small, s));
        assert_eq!(read(&small), None);
    }
}
