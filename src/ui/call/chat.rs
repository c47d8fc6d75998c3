//! The chat panel: the conversation, unread count and the input line.

use eframe::egui::{self, Key, RichText, Ui};

use crate::engine::api::Command;

use super::*;

impl CallView {
    pub(super) fn chat_panel(&mut self, ui: &mut Ui, actions: &mut Vec<CallAction>) {
        ui.heading("Chat");
        let input_h = 36.0;
        egui::ScrollArea::vertical()
            .max_height((ui.available_height() - input_h).max(40.0))
            .stick_to_bottom(true)
            .show(ui, |ui| {
                if self.chat.is_empty() {
                    ui.weak("No messages yet.");
                }
                for line in &self.chat {
                    let who = if line.mine { "You" } else { line.name.as_str() };
                    ui.label(RichText::new(who).strong());
                    ui.label(&line.text);
                    ui.add_space(4.0);
                }
            });
        ui.separator();
        ui.horizontal(|ui| {
            let label = ui.label("Message");
            let edit = ui
                .add(
                    egui::TextEdit::singleline(&mut self.chat_input)
                        .hint_text("Say something")
                        .desired_width(ui.available_width() - 60.0),
                )
                .labelled_by(label.id);
            let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
            if (ui.button("Send").clicked() || enter) && !self.chat_input.trim().is_empty() {
                let text: String = self
                    .chat_input
                    .trim()
                    .chars()
                    .take(crate::engine::MAX_CHAT_CHARS)
                    .collect();
                self.chat_input.clear();
                actions.push(CallAction::Send(Command::SendChat(text.clone())));
                self.push_chat(ChatLine {
                    name: self.self_name.clone(),
                    text,
                    mine: true,
                });
                edit.request_focus();
            }
        });
    }
}
