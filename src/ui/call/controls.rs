//! The call screen's bars: the top bar (room, clock, troubleshooting menu), the controls
//! along the bottom (microphone, camera, share, chat, leave) and the screen/window picker.

use std::time::Duration;

use eframe::egui::{self, Color32, RichText, Ui};

use super::layout::{self, Shortcut};
use crate::engine::api::SourceChoice;
use crate::engine::api::{CallState, Command, Simulation, VideoChoice};

use super::*;

impl CallView {
    /// The screen/window picker, while open.
    pub(super) fn share_picker(&mut self, ctx: &egui::Context, actions: &mut Vec<CallAction>) {
        let mut open = self.share_picker_open;
        let mut chosen = None;
        egui::Window::new("Share your screen")
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .show(ctx, |ui| {
                let devices: Vec<(String, String)> = self
                    .screens
                    .iter()
                    .filter_map(|c| match c {
                        SourceChoice::Screen(d) => Some((d.id.clone(), d.name.clone())),
                        _ => None,
                    })
                    .collect();
                if devices.is_empty() {
                    if ui.button("Entire screen").clicked() {
                        chosen = Some(VideoChoice::Screen(String::new()));
                    }
                } else {
                    egui::ScrollArea::vertical()
                        .max_height(320.0)
                        .show(ui, |ui| {
                            for (id, name) in devices {
                                if ui.button(name).clicked() {
                                    chosen = Some(VideoChoice::Screen(id));
                                }
                            }
                        });
                }
                ui.separator();
                if ui
                    .button("Test pattern (synthetic share)")
                    .on_hover_text("Works without a display; good for trying things out")
                    .clicked()
                {
                    chosen = Some(VideoChoice::Synthetic);
                }
            });
        self.share_picker_open = open;
        if let Some(what) = chosen {
            actions.extend(self.choose_share(what));
        }
    }

    pub(super) fn top_bar(&mut self, ui: &mut Ui, actions: &mut Vec<CallAction>) {
        ui.horizontal(|ui| {
            ui.strong(&self.room);
            if let Some(t) = self.joined_at {
                let d = Duration::from_secs_f64((self.now - t).max(0.0));
                ui.label(layout::format_clock(d));
                // The clock shows seconds: repaint once a second while in the call.
                ui.ctx().request_repaint_after(Duration::from_secs(1));
            }
            let n = self.peers.len() + 1;
            ui.label(if n == 1 {
                "just you".to_string()
            } else {
                format!("{n} people")
            });
            let (text, colour) = match self.state {
                CallState::Joined => ("connected", Color32::from_rgb(80, 200, 120)),
                CallState::Joining => ("joining…", Color32::LIGHT_GRAY),
                CallState::Reconnecting => ("reconnecting…", Color32::from_rgb(255, 190, 90)),
                CallState::Idle | CallState::Left => ("not connected", Color32::GRAY),
            };
            ui.colored_label(colour, text);
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.menu_button("Troubleshoot", |ui| {
                    if ui
                        .button("Drop the signalling connection")
                        .on_hover_text("Simulates a network drop; the call should reconnect")
                        .clicked()
                    {
                        actions.push(CallAction::Send(Command::Simulate(
                            Simulation::DropSignalling,
                        )));
                        ui.close();
                    }
                    ui.separator();
                    ui.label("ICE restart on:");
                    if self.peers.is_empty() {
                        ui.weak("(nobody else is here)");
                    }
                    for (id, p) in &self.peers {
                        let label = format!("{} ({})", p.name, p.connection.as_str());
                        if ui.button(label).clicked() {
                            actions.push(CallAction::Send(Command::Simulate(
                                Simulation::RestartIce { peer: id.clone() },
                            )));
                            ui.close();
                        }
                    }
                    ui.separator();
                    ui.horizontal(|ui| {
                        ui.label("Blackhole media for");
                        ui.add(
                            egui::DragValue::new(&mut self.blackhole_secs)
                                .range(1..=120)
                                .suffix(" s"),
                        );
                        ui.label("on:");
                    });
                    if self.peers.is_empty() {
                        ui.weak("(nobody else is here)");
                    }
                    for (id, p) in &self.peers {
                        if ui
                            .button(format!("{} ", p.name))
                            .on_hover_text(
                                "Drops every packet to and from this peer; its tile should show \
                                 the reconnecting spinner, then recover",
                            )
                            .clicked()
                        {
                            actions.push(CallAction::Send(Command::Simulate(
                                Simulation::BlackholeMedia {
                                    peer: id.clone(),
                                    duration: Duration::from_secs(u64::from(self.blackhole_secs)),
                                },
                            )));
                            ui.close();
                        }
                    }
                });
            });
        });
    }

    pub(super) fn controls(&mut self, ui: &mut Ui, actions: &mut Vec<CallAction>) {
        ui.add_space(4.0);
        ui.horizontal(|ui| {
            let mic = if self.local.mic_muted {
                "Unmute (M)"
            } else {
                "Mute (M)"
            };
            if ui
                .add(egui::Button::new(mic).selected(self.local.mic_muted))
                .clicked()
            {
                actions.extend(self.shortcut(Shortcut::ToggleMic));
            }
            let cam = if self.local.camera_off {
                "Start video (V)"
            } else {
                "Stop video (V)"
            };
            if ui
                .add(egui::Button::new(cam).selected(self.local.camera_off))
                .clicked()
            {
                actions.extend(self.shortcut(Shortcut::ToggleCamera));
            }
            if self.local.sharing {
                if ui
                    .add(egui::Button::new("Stop sharing (S)").selected(true))
                    .clicked()
                {
                    actions.extend(self.shortcut(Shortcut::ToggleScreenShare));
                }
            } else {
                let open = self.share_picker_open;
                if ui
                    .add(egui::Button::new("Share screen (S)").selected(open))
                    .clicked()
                {
                    self.share_picker_open = !open;
                }
            }
            let chat = if self.unread > 0 {
                format!("Chat ({})", self.unread)
            } else {
                "Chat".to_string()
            };
            if ui
                .add(egui::Button::new(chat).selected(self.show_chat))
                .clicked()
            {
                self.show_chat = !self.show_chat;
                self.unread = 0;
            }
            if ui
                .add(egui::Button::new("Stats (I)").selected(self.show_stats))
                .clicked()
            {
                self.show_stats = !self.show_stats;
            }
            if ui.button("Settings").clicked() {
                actions.push(CallAction::Settings);
            }
            if ui
                .button("Invite a test participant")
                .on_hover_text(
                    "Adds a synthetic participant (moving pattern and tone) to this room",
                )
                .clicked()
            {
                actions.push(CallAction::Send(Command::InviteTestParticipant));
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                let leave =
                    egui::Button::new(RichText::new("Leave (Ctrl+W)").color(Color32::WHITE))
                        .fill(Color32::from_rgb(190, 40, 40));
                if ui.add(leave).clicked() {
                    actions.push(CallAction::Leave);
                }
            });
        });
        ui.add_space(4.0);
    }
}

pub(super) fn banner(ui: &mut Ui, elapsed: Duration, actions: &mut Vec<CallAction>) {
    ui.horizontal(|ui| {
        ui.label(RichText::new(layout::banner_text(elapsed)).color(Color32::WHITE));
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if layout::offer_rejoin(elapsed) && ui.button("Leave and rejoin").clicked() {
                actions.push(CallAction::Rejoin);
            }
            if ui
                .button("Retry now")
                .on_hover_text("Try the server again now instead of waiting for the next attempt")
                .clicked()
            {
                actions.push(CallAction::Send(Command::RetryNow));
            }
        });
    });
}
