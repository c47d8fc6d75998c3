//! The call screen. [`CallView`] is a plain model fed with engine [`Event`](crate::engine::api::Event)s (`apply`) and drawn
//! by `ui`, which returns what the user asked for as [`CallAction`]s; it never talks to the
//! engine itself. That split lets the tests drive the whole screen with made-up events and
//! synthetic video feeds, exactly as the engine would.
//!
//! | module | what |
//! |---|---|
//! | `state` | the model: peers, tiles, chat, notices, levels, active speaker; `apply` and shortcuts |
//! | `stage` | tiles, self-view, name tags, spinners |
//! | `controls` | top bar, bottom controls, share picker, reconnect banner |
//! | `chat` | the chat panel |
//! | `stats_overlay` | per-tile numbers |

mod chat;
mod controls;
mod stage;
mod state;
mod stats_overlay;

use std::time::Duration;

use eframe::egui::{self, Color32, Ui};

use super::layout::{self, Shortcut};
use super::video;
use crate::engine::api::Command;

use controls::banner;
use state::*;
pub use state::{CallView, ChatLine, LocalState, PeerInfo, Tile, TileStats};

/// What the user asked for on the call screen. Most are engine commands; the rest change which
/// screen is shown, so the app handles them.
#[derive(Debug, Clone, PartialEq)]
pub enum CallAction {
    Send(Command),
    /// Leave and go back to the join screen.
    Leave,
    /// Leave and join the same room again with the same settings.
    Rejoin,
    /// Open the settings (sources, resolution) that apply to the next join.
    Settings,
}

impl CallView {
    /// Draws the call screen into `ui` and returns the user's actions.
    pub fn ui(&mut self, ui: &mut Ui) -> Vec<CallAction> {
        let now = ui.input(|i| i.time);
        self.set_now(now);
        self.notices.retain(|(t, _)| now - t < NOTICE_TTL_S);
        if let Some(&(t, _)) = self.notices.first() {
            ui.ctx()
                .request_repaint_after(Duration::from_secs_f64((t + NOTICE_TTL_S - now).max(0.1)));
        }
        let mut actions = Vec::new();
        if !ui.ctx().egui_wants_keyboard_input() {
            let keys: Vec<Shortcut> = ui.input(|i| {
                i.events
                    .iter()
                    .filter_map(|e| match e {
                        egui::Event::Key {
                            key,
                            pressed: true,
                            repeat: false,
                            modifiers,
                            ..
                        } => layout::shortcut(*key, *modifiers),
                        _ => None,
                    })
                    .collect()
            });
            for k in keys {
                actions.extend(self.shortcut(k));
            }
        }
        egui::Panel::top("call_top").show(ui, |ui| self.top_bar(ui, &mut actions));
        if let Some(elapsed) = self.reconnecting_for() {
            egui::Panel::top("call_banner")
                .frame(
                    egui::Frame::new()
                        .fill(Color32::from_rgb(120, 84, 0))
                        .inner_margin(8.0),
                )
                .show(ui, |ui| banner(ui, elapsed, &mut actions));
            // The elapsed counter ticks once a second, not every frame.
            ui.ctx().request_repaint_after(Duration::from_secs(1));
        }
        if self.muted_hint() {
            egui::Panel::top("muted_hint")
                .frame(
                    egui::Frame::new()
                        .fill(Color32::from_rgb(150, 40, 40))
                        .inner_margin(8.0),
                )
                .show(ui, |ui| {
                    ui.colored_label(Color32::WHITE, "You are muted — press M to talk");
                });
            ui.ctx().request_repaint_after(Duration::from_millis(500));
        }
        if !self.notices.is_empty() {
            egui::Panel::top("call_notices").show(ui, |ui| {
                let mut dismiss = None;
                for (i, (_, text)) in self.notices.iter().enumerate() {
                    ui.horizontal(|ui| {
                        ui.colored_label(Color32::from_rgb(255, 190, 90), text.as_str());
                        if ui.small_button("Dismiss").clicked() {
                            dismiss = Some(i);
                        }
                    });
                }
                if let Some(i) = dismiss {
                    self.notices.remove(i);
                }
            });
        }
        egui::Panel::bottom("call_controls").show(ui, |ui| self.controls(ui, &mut actions));
        for (peer, volume) in std::mem::take(&mut self.volume_changes) {
            self.volumes.insert(peer.clone(), volume);
            actions.push(CallAction::Send(Command::SetPeerVolume { peer, volume }));
        }
        if self.share_picker_open {
            let ctx = ui.ctx().clone();
            self.share_picker(&ctx, &mut actions);
        }
        if self.show_chat {
            egui::Panel::right("call_chat")
                .default_size(280.0)
                .show(ui, |ui| self.chat_panel(ui, &mut actions));
        }
        egui::CentralPanel::default()
            .frame(
                egui::Frame::new()
                    .fill(Color32::from_gray(18))
                    .inner_margin(8.0),
            )
            .show(ui, |ui| self.stage(ui));
        actions
    }
}
