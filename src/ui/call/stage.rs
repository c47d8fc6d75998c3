//! The stage: the grid of video tiles and the self-view, with each tile's name tag, speaking
//! border, muted badge and "reconnecting" spinner.

use std::time::Duration;

use eframe::egui::{
    self, Align2, Color32, CornerRadius, FontId, Pos2, Rect, Sense, Stroke, StrokeKind, Ui, Vec2,
    pos2, vec2,
};

use super::layout::{self, Quality};
use super::video;
use crate::engine::api::PeerConnectionState;
use crate::engine::api::StreamRole;

use super::*;

impl CallView {
    /// The video area: grid or spotlight, plus the self-view.
    pub(super) fn stage(&mut self, ui: &mut Ui) {
        let area = ui.available_rect_before_wrap();
        ui.allocate_rect(area, Sense::hover());
        let mut spinning = false;
        let tiles = self.visible_tiles();
        let screen = tiles.iter().position(|t| t.role == StreamRole::Screen);
        let mut placed: Vec<(usize, Rect, bool)> = Vec::new();
        if tiles.is_empty() {
            // Alone: the self-view is the stage, with a hint.
            let r = layout::fit_rect(area.shrink(24.0), layout::TILE_ASPECT);
            let painter = ui.painter_at(area);
            self.draw_self(ui, &painter, r);
            painter.text(
                pos2(r.center().x, r.top() - 4.0),
                Align2::CENTER_BOTTOM,
                "Waiting for others to join… (or invite a test participant)",
                FontId::proportional(15.0),
                Color32::LIGHT_GRAY,
            );
            return;
        }
        // Where the self-view goes: a strip slot beside a screen share, a spare grid cell,
        // or floating in the corner.
        let self_rect;
        match screen {
            Some(s) => {
                let spot = layout::spotlight(tiles.len(), area);
                placed.push((s, spot.main, true));
                let mut strip = spot.strip.into_iter();
                for i in (0..tiles.len()).filter(|i| *i != s) {
                    if let Some(r) = strip.next() {
                        placed.push((i, r, false));
                    }
                }
                self_rect = strip.next().unwrap_or_else(|| layout::self_view_rect(area));
            }
            None => {
                let n = tiles.len();
                let in_grid = layout::self_in_grid(n, area.size());
                let mut rects = layout::grid_rects(n + usize::from(in_grid), area);
                // Floating: in the corner of the tiles themselves, not of the (taller or
                // wider) stage, so it never hangs off a tile's edge.
                let bbox = rects.iter().copied().reduce(Rect::union).unwrap_or(area);
                self_rect = match rects.pop() {
                    Some(r) if in_grid => r,
                    Some(r) => {
                        rects.push(r);
                        layout::self_view_rect(bbox)
                    }
                    None => layout::self_view_rect(area),
                };
                placed.extend(rects.into_iter().enumerate().map(|(i, r)| (i, r, false)));
            }
        }
        let painter = ui.painter_at(area);
        let mut volume_changes = Vec::new();
        for (i, rect, big) in placed {
            let t = tiles[i];
            spinning |= self.draw_tile(ui, &painter, t, rect, big, &mut volume_changes);
        }
        self.draw_self(ui, &painter, self_rect);
        self.volume_changes.extend(volume_changes);
        if spinning {
            // ~20 fps for the spinner only while something is connecting; idle calls do not
            // repaint at all between frames and events.
            ui.ctx().request_repaint_after(Duration::from_millis(50));
        }
    }

    pub(super) fn draw_self(&self, ui: &Ui, painter: &egui::Painter, rect: Rect) {
        painter.rect_filled(rect, CornerRadius::same(8), Color32::from_gray(40));
        let frame = (!self.local.camera_off)
            .then(|| self.local_preview.as_ref().and_then(|v| v.0.latest()))
            .flatten();
        match frame {
            Some(f) => {
                // No polling: the engine pokes the UI for every captured picture too.
                let aspect = f.frame.width as f32 / f.frame.height.max(1) as f32;
                video::paint_video(
                    painter,
                    layout::fit_rect(rect, aspect),
                    &self.local_token,
                    f,
                );
            }
            None => {
                avatar(painter, rect, &self.self_name, self.local_level);
            }
        }
        let tag = format!("{} (you)", self.self_name);
        name_tag(painter, rect, &tag, false, self.local.mic_muted);
        painter.rect_stroke(
            rect,
            CornerRadius::same(8),
            Stroke::new(1.0, Color32::from_gray(90)),
            StrokeKind::Inside,
        );
        let r = ui.interact(rect, egui::Id::unique("meshcall_self_view"), Sense::hover());
        let label = format!("{} (you)", self.self_name);
        r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Group, true, &label));
    }

    /// Draws one tile; returns whether it shows a spinner.
    pub(super) fn draw_tile(
        &self,
        ui: &Ui,
        painter: &egui::Painter,
        t: &Tile,
        rect: Rect,
        big: bool,
        volume_changes: &mut Vec<(String, f32)>,
    ) -> bool {
        let peer = self.peer(&t.peer);
        let name = self.tile_name(t);
        painter.rect_filled(rect, CornerRadius::same(8), Color32::from_gray(34));
        let camera_off = peer.is_some_and(|p| p.camera_off) && t.role == StreamRole::Camera;
        let frame = (!camera_off)
            .then(|| t.video.as_ref().and_then(|v| v.0.latest()))
            .flatten();
        match frame {
            Some(f) => {
                let aspect = f.frame.width as f32 / f.frame.height.max(1) as f32;
                video::paint_video(painter, layout::fit_rect(rect, aspect), &t.token, f);
            }
            None => avatar(painter, rect, &name, peer.map_or(0.0, |p| p.level)),
        }
        // Badges along the top.
        let mut x = rect.left() + 8.0;
        if t.role == StreamRole::Screen {
            x = badge(
                painter,
                pos2(x, rect.top() + 8.0),
                "Screen",
                Color32::from_rgb(40, 90, 200),
            ) + 6.0;
        }
        if camera_off {
            x = badge(
                painter,
                pos2(x, rect.top() + 8.0),
                "Camera off",
                Color32::from_gray(70),
            ) + 6.0;
        }
        // A receive pipeline that failed (a bug) says so rather than freezing silently.
        let video_failed = t
            .video
            .as_ref()
            .is_some_and(|v| v.0.stats().failed.is_some());
        if video_failed {
            x = badge(
                painter,
                pos2(x, rect.top() + 8.0),
                "Video stopped (error)",
                Color32::from_rgb(170, 50, 40),
            ) + 6.0;
        }
        let quality = t
            .stream_id
            .as_deref()
            .and_then(|s| self.quality_of(&t.peer, s));
        if quality == Some(Quality::Poor) && !self.show_stats {
            badge(
                painter,
                pos2(x, rect.top() + 8.0),
                "Poor connection",
                Color32::from_rgb(170, 50, 40),
            );
        }
        name_tag(painter, rect, &name, big, peer.is_some_and(|p| p.mic_muted));
        if self.show_stats
            && let Some(s) = t.stream_id.as_deref()
        {
            self.stats_overlay(painter, rect, &t.peer, s, quality);
        }
        // Active speaker: a green border.
        let speaking = self.active_speaker() == Some(t.peer.as_str());
        let border = if speaking {
            Stroke::new(3.0, Color32::from_rgb(60, 200, 110))
        } else {
            Stroke::new(1.0, Color32::from_gray(60))
        };
        painter.rect_stroke(rect, CornerRadius::same(8), border, StrokeKind::Inside);
        let busy = peer.is_some_and(PeerInfo::busy);
        if busy {
            painter.rect_filled(rect, CornerRadius::same(8), Color32::from_black_alpha(140));
            let what = match peer.map(|p| p.connection) {
                Some(PeerConnectionState::Reconnecting) => "Reconnecting…",
                _ => "Connecting…",
            };
            spinner(painter, rect.center(), 18.0, self.now);
            painter.text(
                rect.center() + vec2(0.0, 32.0),
                Align2::CENTER_TOP,
                what,
                FontId::proportional(14.0),
                Color32::WHITE,
            );
        }
        // An accessible description of the tile (screen readers and the UI tests).
        let mut label = name;
        if t.role == StreamRole::Screen {
            label.push_str(", screen");
        }
        if peer.is_some_and(|p| p.mic_muted) {
            label.push_str(", muted");
        }
        if camera_off {
            label.push_str(", camera off");
        }
        if video_failed {
            label.push_str(", video stopped");
        }
        if busy {
            label.push_str(", connecting");
        }
        if speaking {
            label.push_str(", speaking");
        }
        let id = egui::Id::unique((
            "meshcall_tile",
            &t.peer,
            t.stream_id.as_deref().unwrap_or(""),
        ));
        let r = ui.interact(rect, id, Sense::click());
        r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Group, true, &label));
        // Right-click: this participant's volume (applied in the mixer, for this session).
        r.context_menu(|ui| {
            let mut percent = self.volumes.get(&t.peer).copied().unwrap_or(1.0) * 100.0;
            let slider = egui::Slider::new(&mut percent, 0.0..=200.0)
                .suffix(" %")
                .step_by(5.0)
                .text("Volume");
            if ui.add(slider).changed() {
                volume_changes.push((t.peer.clone(), percent / 100.0));
            }
        });
        busy
    }
}

/// A circle with initials, ringed by the audio level.
pub(super) fn avatar(painter: &egui::Painter, rect: Rect, name: &str, level: f32) {
    let r = (rect.height().min(rect.width()) * 0.18).clamp(14.0, 64.0);
    let c = rect.center();
    let level = level.clamp(0.0, 1.0);
    if level >= SPEAKING_LEVEL {
        // Ring width follows loudness (RMS ×4, so normal speech fills most of it).
        let w = 2.0 + (level * 4.0).min(1.0) * r * 0.35;
        painter.circle_stroke(
            c,
            r + 4.0 + w / 2.0,
            Stroke::new(w, Color32::from_rgb(60, 200, 110)),
        );
    }
    painter.circle_filled(c, r, avatar_colour(name));
    painter.text(
        c,
        Align2::CENTER_CENTER,
        layout::initials(name),
        FontId::proportional(r * 0.8),
        Color32::WHITE,
    );
}

/// A stable colour per name, so people keep "their" colour across calls.
pub(super) fn avatar_colour(name: &str) -> Color32 {
    let h = name.bytes().fold(2166136261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    });
    let palette = [
        Color32::from_rgb(92, 107, 192),
        Color32::from_rgb(0, 137, 123),
        Color32::from_rgb(194, 24, 91),
        Color32::from_rgb(245, 124, 0),
        Color32::from_rgb(123, 31, 162),
        Color32::from_rgb(56, 142, 60),
    ];
    palette[(h as usize) % palette.len()]
}

/// The name pill in a tile's bottom-left corner, with a red "muted" pill after it when the
/// person's microphone is off (text rather than an emoji: egui's default fonts carry none).
pub(super) fn name_tag(painter: &egui::Painter, rect: Rect, text: &str, big: bool, muted: bool) {
    let font = FontId::proportional(if big { 15.0 } else { 13.0 });
    let galley = painter.layout_no_wrap(text.to_string(), font, Color32::WHITE);
    let pad = vec2(8.0, 4.0);
    let max_w = (rect.width() - if muted { 76.0 } else { 16.0 }).max(20.0);
    let size = vec2(
        (galley.size().x + pad.x * 2.0).min(max_w),
        galley.size().y + pad.y * 2.0,
    );
    let bg = Rect::from_min_size(pos2(rect.left() + 8.0, rect.bottom() - 8.0 - size.y), size);
    painter.rect_filled(bg, CornerRadius::same(6), Color32::from_black_alpha(160));
    painter
        .with_clip_rect(bg.intersect(painter.clip_rect()))
        .galley(bg.min + pad, galley, Color32::WHITE);
    if muted {
        let g = painter.layout_no_wrap(
            "muted".to_string(),
            FontId::proportional(12.0),
            Color32::WHITE,
        );
        let r = Rect::from_min_size(
            pos2(bg.right() + 4.0, bg.center().y - (g.size().y + 6.0) / 2.0),
            g.size() + vec2(12.0, 6.0),
        );
        painter.rect_filled(r, CornerRadius::same(6), Color32::from_rgb(190, 40, 40));
        painter.galley(r.min + vec2(6.0, 3.0), g, Color32::WHITE);
    }
}

/// A coloured pill; returns its right edge.
pub(super) fn badge(painter: &egui::Painter, at: Pos2, text: &str, fill: Color32) -> f32 {
    let galley =
        painter.layout_no_wrap(text.to_string(), FontId::proportional(12.0), Color32::WHITE);
    let rect = Rect::from_min_size(at, galley.size() + vec2(12.0, 6.0));
    painter.rect_filled(rect, CornerRadius::same(5), fill);
    painter.galley(at + vec2(6.0, 3.0), galley, Color32::WHITE);
    rect.right()
}

/// A spinner drawn from the UI clock. Unlike `egui::Spinner` it does not ask for a repaint
/// itself: the caller asks for ~20 fps only while something is connecting.
pub(super) fn spinner(painter: &egui::Painter, c: Pos2, r: f32, time: f64) {
    let start = (time * 4.0) as f32;
    let points: Vec<Pos2> = (0..=24)
        .map(|i| {
            let a = start + i as f32 / 24.0 * std::f32::consts::TAU * 0.7;
            c + Vec2::angled(a) * r
        })
        .collect();
    painter.line(points, Stroke::new(3.0, Color32::WHITE));
}
