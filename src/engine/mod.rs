//! The call engine: owns the MeteredPeer, the local sources and send pipelines, the
//! remote receive pipelines and the audio mixer. The UI and `meshcall join --headless` drive it
//! only through [`api::Command`]s and read [`api::Event`]s; neither touches webrtc or tokio.
//!
//! The engine is one tokio task per call. Per remote peer it runs small watcher tasks that turn
//! SDK events into engine events; every media object lives in `CallMedia` and is dropped
//! (threads joined) on leave.
//!
//! App-level data messages (documented in the README, sent server-routed so they also reach
//! peers whose P2P connection is down, always as directs to each participant and accepted only
//! as directs from a participant — a REST publish can forge the `from` of a broadcast):
//! - `{"type":"meshcall-status","mic_muted":bool,"camera_off":bool}` — on change and to each
//!   newcomer;
//! - `{"type":"meshcall-chat","text":"…"}` — chat, at most 2 000 characters;
//! - `{"type":"meshcall-bye"}` — before leaving on purpose.
//!
//! | module | what |
//! |---|---|
//! | [`api`] | the typed commands and events, and the types the UI may use |
//! | `handle` | [`EngineHandle`], [`EngineOptions`], [`EngineEvent`] and the event output |
//! | `call` | one call in the engine task: join, commands, stats and levels, leave |
//! | `call_media` | the call's senders, receivers, mixer and audio processing; opening sources |
//! | `credentials` | from the join request to a signalling origin and credential |
//! | `watch` | SDK events turned into engine events, per call and per remote peer |
//! | `messages` | meshcall's own data messages (status, chat, bye) as a typed enum |
//! | [`departures`] | who left on purpose, who may come back (the goodbye grace) |
//! | `devices` | device loss recovery and hot-plug announcements |
//! | [`local`] | "this computer": finding or starting the embedded server |
//! | `sounds` | join and leave cues |

pub mod api;
mod call;
mod call_media;
mod credentials;
pub mod departures;
mod devices;
mod handle;
pub mod local;
mod messages;
mod sounds;
mod watch;

pub use call_media::{open_audio, open_speaker, open_video};
pub use credentials::{JoinError, peer_id_from_name};
pub use handle::{EngineEvent, EngineHandle, EngineOptions, spawn};
pub use watch::explain_close_code;

/// Longest chat message accepted (characters).
pub const MAX_CHAT_CHARS: usize = 2_000;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
