//! The per-tile statistics overlay (the `I` key): resolution, frame rate, bit rate, loss,
//! round-trip time.

use eframe::egui::{self, Color32, CornerRadius, FontId, Rect, pos2, vec2};

use super::layout::{self, Quality};

use super::stage::badge;
use super::*;

impl CallView {
    pub(super) fn stats_overlay(
        &self,
        painter: &egui::Painter,
        rect: Rect,
        peer: &str,
        stream: &str,
        quality: Option<Quality>,
    ) {
        let Some(s) = self.stats.get(&(peer.to_string(), stream.to_string())) else {
            return;
        };
        let rtt = self
            .send_rtt_ms
            .map_or_else(|| "–".to_string(), |r| format!("{r:.0} ms"));
        let text = format!(
            "{}×{}  {:.0} fps\n{}\nRTT {}  loss {:.1} %\njitter {:.0} ms",
            s.now.width,
            s.now.height,
            s.now.fps,
            layout::format_bitrate(s.now.bitrate_bps),
            rtt,
            s.loss * 100.0,
            s.now.jitter_ms
        );
        let font = FontId::monospace(11.0);
        let galley = painter.layout_no_wrap(text, font, Color32::WHITE);
        let pos = pos2(rect.right() - galley.size().x - 14.0, rect.top() + 8.0);
        let bg = Rect::from_min_size(pos - vec2(6.0, 4.0), galley.size() + vec2(12.0, 26.0));
        painter.rect_filled(bg, CornerRadius::same(6), Color32::from_black_alpha(170));
        painter.galley(pos, galley, Color32::WHITE);
        if let Some(q) = quality {
            let colour = match q {
                Quality::Good => Color32::from_rgb(50, 150, 80),
                Quality::Fair => Color32::from_rgb(180, 130, 20),
                Quality::Poor => Color32::from_rgb(170, 50, 40),
            };
            badge(
                painter,
                pos2(bg.left() + 6.0, bg.bottom() - 20.0),
                q.label(),
                colour,
            );
        }
    }
}
