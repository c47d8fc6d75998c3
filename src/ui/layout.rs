//! Pure layout and wording decisions of the call screen: grid shape for N tiles, the spotlight
//! split for a screen share, the reconnect banner text, keyboard shortcuts and the quality badge.
//! Kept free of egui state (only plain `Rect`/`Vec2` maths) so every rule has a unit test.

use std::time::Duration;

use eframe::egui::{Key, Modifiers, Pos2, Rect, Vec2, pos2, vec2};

/// The aspect every tile is fitted to: most cameras and screens are 16:9, and a fixed tile aspect
/// keeps the grid calm when a peer's resolution changes mid-call.
pub const TILE_ASPECT: f32 = 16.0 / 9.0;

/// Space between tiles, in points.
pub const GAP: f32 = 8.0;

/// Columns × rows for `n` tiles in `area`: the shape whose 16:9 tiles come out largest; among
/// equally large ones, the one with fewer empty cells. 1 → 1×1, 2 → 2×1 on a wide window
/// (1×2 on a tall one), 4 → 2×2, 7 → 3×3 or 4×2 depending on the window.
pub fn grid_shape(n: usize, area: Vec2) -> (usize, usize) {
    if n == 0 {
        return (0, 0);
    }
    let mut best = (1, n);
    let mut best_area = -1.0f32;
    for cols in 1..=n {
        let rows = n.div_ceil(cols);
        let size = tile_size(area, cols, rows);
        let a = size.x * size.y;
        // Strictly larger wins; ties keep the earlier (fewer columns, so fewer empty cells).
        if a > best_area + 0.5 {
            best_area = a;
            best = (cols, rows);
        }
    }
    best
}

/// The largest 16:9 tile that fits `cols × rows` cells (with gaps) inside `area`.
fn tile_size(area: Vec2, cols: usize, rows: usize) -> Vec2 {
    let cw = ((area.x - GAP * (cols as f32 - 1.0)) / cols as f32).max(1.0);
    let ch = ((area.y - GAP * (rows as f32 - 1.0)) / rows as f32).max(1.0);
    fit_aspect(vec2(cw, ch), TILE_ASPECT)
}

/// The largest size of aspect `aspect` (w / h) inside `avail`.
pub fn fit_aspect(avail: Vec2, aspect: f32) -> Vec2 {
    if avail.x <= 0.0 || avail.y <= 0.0 || !aspect.is_finite() || aspect <= 0.0 {
        return Vec2::ZERO;
    }
    if avail.x / avail.y > aspect {
        vec2(avail.y * aspect, avail.y)
    } else {
        vec2(avail.x, avail.x / aspect)
    }
}

/// `rect` shrunk to the largest centred rectangle of `aspect` (letterboxing a video in its tile).
pub fn fit_rect(rect: Rect, aspect: f32) -> Rect {
    Rect::from_center_size(rect.center(), fit_aspect(rect.size(), aspect))
}

/// The rectangles of `n` tiles in `area`, row by row; the grid is centred and an incomplete last
/// row is centred too (the way people expect a 3-of-4 row to look).
pub fn grid_rects(n: usize, area: Rect) -> Vec<Rect> {
    let (cols, rows) = grid_shape(n, area.size());
    if cols == 0 {
        return Vec::new();
    }
    let size = tile_size(area.size(), cols, rows);
    let total_h = size.y * rows as f32 + GAP * (rows as f32 - 1.0);
    let top = area.top() + (area.height() - total_h) / 2.0;
    let mut out = Vec::with_capacity(n);
    for row in 0..rows {
        let in_row = (n - row * cols).min(cols);
        let row_w = size.x * in_row as f32 + GAP * (in_row as f32 - 1.0);
        let left = area.left() + (area.width() - row_w) / 2.0;
        for col in 0..in_row {
            let min = pos2(
                left + col as f32 * (size.x + GAP),
                top + row as f32 * (size.y + GAP),
            );
            out.push(Rect::from_min_size(min, size));
        }
    }
    out
}

/// The spotlight layout: one large tile for the screen share and a strip for the `others`.
#[derive(Debug, Clone, PartialEq)]
pub struct Spotlight {
    pub main: Rect,
    pub strip: Vec<Rect>,
}

/// Splits `area` into a spotlight and a strip of `others` small tiles. The strip goes along the
/// bottom (about a fifth of the height, 90–180 points); with no others the spotlight takes all.
pub fn spotlight(others: usize, area: Rect) -> Spotlight {
    if others == 0 {
        return Spotlight {
            main: fit_rect(area, TILE_ASPECT),
            strip: Vec::new(),
        };
    }
    let strip_h = (area.height() * 0.2)
        .clamp(90.0, 180.0)
        .min(area.height() / 2.0);
    let main_area = Rect::from_min_max(area.min, pos2(area.right(), area.bottom() - strip_h - GAP));
    let strip_area = Rect::from_min_max(pos2(area.left(), area.bottom() - strip_h), area.max);
    // Strip tiles: 16:9 at the strip height, shrunk together if they do not fit the width.
    let mut size = vec2(strip_h * TILE_ASPECT, strip_h);
    let needed = size.x * others as f32 + GAP * (others as f32 - 1.0);
    if needed > strip_area.width() {
        let w = ((strip_area.width() - GAP * (others as f32 - 1.0)) / others as f32).max(1.0);
        size = vec2(w, w / TILE_ASPECT);
    }
    let row_w = size.x * others as f32 + GAP * (others as f32 - 1.0);
    let left = strip_area.left() + (strip_area.width() - row_w) / 2.0;
    let top = strip_area.top() + (strip_area.height() - size.y) / 2.0;
    let strip = (0..others)
        .map(|i| Rect::from_min_size(pos2(left + i as f32 * (size.x + GAP), top), size))
        .collect();
    Spotlight {
        main: fit_rect(main_area, TILE_ASPECT),
        strip,
    }
}

/// Whether the self-view can take a grid cell of its own: when the grid for `n` remote tiles
/// has a spare cell anyway (3 → 2×2, 7 → 3×3), adding it costs the others nothing; otherwise
/// it floats in the corner so remote tiles keep their size.
pub fn self_in_grid(n: usize, area: Vec2) -> bool {
    n > 0 && grid_shape(n + 1, area) == grid_shape(n, area)
}

/// The small self-view in the corner of the video area.
pub fn self_view_rect(area: Rect) -> Rect {
    let w = (area.width() * 0.18).clamp(120.0, 240.0);
    let size = vec2(w, w / TILE_ASPECT);
    Rect::from_min_size(
        Pos2::new(area.right() - size.x - GAP, area.bottom() - size.y - GAP),
        size,
    )
}

/// After this long offline the banner offers "leave and rejoin": the SDK's own retries are
/// clearly not getting through (users want a manual way out).
pub const REJOIN_AFTER: Duration = Duration::from_secs(30);

/// The reconnect banner's text for a signalling outage that has lasted `elapsed`.
pub fn banner_text(elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    let t = if s < 60 {
        format!("{s} s")
    } else {
        format!("{}:{:02} min", s / 60, s % 60)
    };
    if elapsed >= REJOIN_AFTER {
        format!("Still reconnecting after {t}. Leaving and rejoining usually helps.")
    } else {
        format!("Connection to the server lost, reconnecting… ({t})")
    }
}

/// Whether the banner should offer "leave and rejoin".
pub fn offer_rejoin(elapsed: Duration) -> bool {
    elapsed >= REJOIN_AFTER
}

/// What a key press does on the call screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    ToggleMic,
    ToggleCamera,
    ToggleScreenShare,
    ToggleStats,
    Leave,
}

/// The call screen's keyboard map: M mic, V camera, S screen share, I stats, Ctrl+W (⌘W) leave.
/// Letters only without modifiers, so Ctrl+S or Alt+M stay free for the system.
pub fn shortcut(key: Key, m: Modifiers) -> Option<Shortcut> {
    let plain = !(m.ctrl || m.command || m.alt || m.mac_cmd);
    match key {
        Key::M if plain => Some(Shortcut::ToggleMic),
        Key::V if plain => Some(Shortcut::ToggleCamera),
        Key::S if plain => Some(Shortcut::ToggleScreenShare),
        Key::I if plain => Some(Shortcut::ToggleStats),
        Key::W if (m.ctrl || m.command) && !m.alt => Some(Shortcut::Leave),
        _ => None,
    }
}

/// A tile's quality badge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Quality {
    Good,
    Fair,
    Poor,
}

impl Quality {
    pub fn label(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Fair => "fair",
            Quality::Poor => "poor",
        }
    }
}

/// The weakest-link quality of a stream (averages hide the bad link, so the worst
/// metric decides). `loss` is a fraction 0..1 over the last interval, `rtt_ms` and `jitter_ms` as
/// measured; `fps` of 0 with packets flowing means frozen video. Thresholds as used by Ant Media's
/// conference app: poor at RTT ≥ 150 ms, loss ≥ 2.5 % or jitter ≥ 80 ms; fair at half those.
pub fn quality(loss: f64, rtt_ms: Option<f64>, jitter_ms: f64, fps: f64) -> Quality {
    let rtt = rtt_ms.unwrap_or(0.0);
    let mut q = Quality::Good;
    if loss >= 0.01 || rtt >= 75.0 || jitter_ms >= 40.0 || fps < 10.0 {
        q = Quality::Fair;
    }
    if loss >= 0.025 || rtt >= 150.0 || jitter_ms >= 80.0 || fps < 2.0 {
        q = Quality::Poor;
    }
    q
}

/// A bit rate for people: "850 kbit/s", "1.5 Mbit/s".
pub fn format_bitrate(bps: u64) -> String {
    if bps >= 1_000_000 {
        format!("{:.1} Mbit/s", bps as f64 / 1e6)
    } else {
        format!("{} kbit/s", bps / 1000)
    }
}

/// Call length for the top bar: "4:07", "1:02:03".
pub fn format_clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Up to two initials for an avatar ("Ada Lovelace" → "AL", "bob" → "B").
pub fn initials(name: &str) -> String {
    name.split_whitespace()
        .filter_map(|w| w.chars().next())
        .take(2)
        .flat_map(char::to_uppercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIDE: Vec2 = Vec2::new(1280.0, 720.0);

    #[test]
    fn grid_shapes_for_common_counts() {
        assert_eq!(grid_shape(0, WIDE), (0, 0));
        assert_eq!(grid_shape(1, WIDE), (1, 1));
        assert_eq!(grid_shape(2, WIDE), (2, 1));
        assert_eq!(grid_shape(3, WIDE), (2, 2));
        assert_eq!(grid_shape(4, WIDE), (2, 2));
        assert_eq!(grid_shape(7, WIDE), (3, 3));
        assert_eq!(grid_shape(9, WIDE), (3, 3));
        // A tall window stacks two tiles.
        assert_eq!(grid_shape(2, vec2(500.0, 900.0)), (1, 2));
        // A very wide, short window puts 7 in a 4×2.
        assert_eq!(grid_shape(7, vec2(1900.0, 500.0)), (4, 2));
    }

    #[test]
    fn grid_rects_fit_do_not_overlap_and_centre_the_last_row() {
        let area = Rect::from_min_size(pos2(10.0, 20.0), WIDE);
        for n in 1..=12 {
            let rects = grid_rects(n, area);
            assert_eq!(rects.len(), n);
            for (i, r) in rects.iter().enumerate() {
                assert!(
                    area.expand(0.01).contains_rect(*r),
                    "n={n} tile {i} outside"
                );
                assert!((r.width() / r.height() - TILE_ASPECT).abs() < 0.01);
                for s in &rects[i + 1..] {
                    assert!(!r.shrink(0.01).intersects(*s), "n={n} overlap");
                }
            }
        }
        // 7 in 3×3: the last row has one tile, centred horizontally.
        let rects = grid_rects(7, area);
        assert!((rects[6].center().x - area.center().x).abs() < 0.01);
    }

    #[test]
    fn spotlight_gives_the_share_most_of_the_space() {
        let area = Rect::from_min_size(Pos2::ZERO, WIDE);
        let s = spotlight(3, area);
        assert_eq!(s.strip.len(), 3);
        assert!(s.main.area() > 4.0 * s.strip.iter().map(|r| r.area()).sum::<f32>());
        for r in &s.strip {
            assert!(!r.intersects(s.main));
            assert!(area.expand(0.01).contains_rect(*r));
        }
        // Many others shrink to fit the width.
        let s = spotlight(12, area);
        assert!(s.strip.iter().all(|r| area.expand(0.01).contains_rect(*r)));
        // None: the spotlight fills the area (fitted to 16:9).
        let s = spotlight(0, area);
        assert!(s.strip.is_empty());
        assert!((s.main.width() - 1280.0).abs() < 0.01);
    }

    #[test]
    fn self_view_takes_a_spare_cell_only() {
        assert!(!self_in_grid(0, WIDE));
        assert!(
            !self_in_grid(1, WIDE),
            "1 → floating, the remote tile stays full size"
        );
        assert!(!self_in_grid(2, WIDE));
        assert!(self_in_grid(3, WIDE), "2×2 has a spare cell");
        assert!(!self_in_grid(4, WIDE));
        assert!(self_in_grid(7, WIDE), "3×3 has spare cells");
    }

    #[test]
    fn fit_rect_letterboxes() {
        let r = fit_rect(Rect::from_min_size(Pos2::ZERO, vec2(400.0, 400.0)), 2.0);
        assert_eq!(r.size(), vec2(400.0, 200.0));
        assert_eq!(r.center(), pos2(200.0, 200.0));
        assert_eq!(fit_aspect(vec2(0.0, 10.0), 1.0), Vec2::ZERO);
        assert_eq!(fit_aspect(vec2(10.0, 10.0), f32::NAN), Vec2::ZERO);
    }

    #[test]
    fn banner_text_counts_and_offers_rejoin_after_30_s() {
        assert_eq!(
            banner_text(Duration::from_secs(4)),
            "Connection to the server lost, reconnecting… (4 s)"
        );
        assert!(!offer_rejoin(Duration::from_secs(29)));
        assert!(offer_rejoin(Duration::from_secs(30)));
        assert!(
            banner_text(Duration::from_secs(95)).starts_with("Still reconnecting after 1:35 min")
        );
    }

    #[test]
    fn keyboard_map() {
        let none = Modifiers::NONE;
        assert_eq!(shortcut(Key::M, none), Some(Shortcut::ToggleMic));
        assert_eq!(shortcut(Key::V, none), Some(Shortcut::ToggleCamera));
        assert_eq!(shortcut(Key::S, none), Some(Shortcut::ToggleScreenShare));
        assert_eq!(shortcut(Key::I, none), Some(Shortcut::ToggleStats));
        assert_eq!(shortcut(Key::W, Modifiers::CTRL), Some(Shortcut::Leave));
        assert_eq!(shortcut(Key::W, Modifiers::COMMAND), Some(Shortcut::Leave));
        assert_eq!(shortcut(Key::W, none), None);
        assert_eq!(
            shortcut(Key::S, Modifiers::CTRL),
            None,
            "Ctrl+S is not share"
        );
        assert_eq!(shortcut(Key::M, Modifiers::ALT), None);
        assert_eq!(shortcut(Key::Q, none), None);
    }

    #[test]
    fn quality_is_the_weakest_link() {
        assert_eq!(quality(0.0, Some(20.0), 5.0, 30.0), Quality::Good);
        assert_eq!(quality(0.03, Some(20.0), 5.0, 30.0), Quality::Poor);
        assert_eq!(quality(0.0, Some(200.0), 5.0, 30.0), Quality::Poor);
        assert_eq!(quality(0.0, None, 50.0, 30.0), Quality::Fair);
        assert_eq!(quality(0.0, None, 5.0, 0.0), Quality::Poor);
    }

    #[test]
    fn formatting() {
        assert_eq!(format_bitrate(850_000), "850 kbit/s");
        assert_eq!(format_bitrate(1_500_000), "1.5 Mbit/s");
        assert_eq!(format_clock(Duration::from_secs(247)), "4:07");
        assert_eq!(format_clock(Duration::from_secs(3723)), "1:02:03");
        assert_eq!(initials("Ada  Lovelace"), "AL");
        assert_eq!(initials("bob"), "B");
        assert_eq!(initials(""), "");
    }
}
