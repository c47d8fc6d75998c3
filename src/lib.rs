//! meshcall: a native video-call application, the Rust SDK it is built on, and the
//! self-hostable, Metered-compatible signalling server it runs on.
//!
//! # Module map
//!
//! Layers, lowest first; a layer never imports one above it.
//!
//! | module | what it is | IO? |
//! |---|---|---|
//! | [`protocol`] | wire frames, strict parser, validation, error and close codes | pure |
//! | [`auth`] | JWT minting/verification, secret and publishable keys, channel globs | pure |
//! | [`server`] | hub state machine ([`server::hub`]) + axum WebSocket/REST shell | shell only |
//! | [`client`] | SDK signalling: `SignallingClient`; a sans-IO session (acks, replay, heartbeat, watchdog) run by a driver task (socket, reconnect) | cores pure, shell IO |
//! | [`peer`] | MeteredPeer / RemotePeer over webrtc-rs: negotiation, ICE ladder, reconcile | cores pure, shells IO |
//! | [`media`] | frames, stamp, synthetic and device sources, H.264 and Opus codecs, audio processing, send/receive pipelines, mixer and playout | codecs CPU only; devices and pipelines on their own threads |
//! | [`engine`] | the call service: one call's MeteredPeer, sources, pipelines and mixer, driven by typed commands and events | yes |
//! | [`headless`] | `meshcall join --headless`: a scriptable peer on [`engine`], printing JSON lines | yes |
//! | [`ui`] | the desktop app (eframe/wgpu): join and call screens, GPU video tiles; drives [`engine`] only through its handle | UI thread only |
//! | `bench` | load generators and measurements behind `meshcall bench …` (server, media, call, loss, ui); the `bench` feature, on by default | yes |
//!
//! Pure cores take time as an argument and return what to do; thin tokio shells do the IO.
//! The binary's subcommands live in `src/cli/` (not part of the library).
//!
//! Where to read on, in the repository: `docs/architecture.md` (layers, the two main data paths,
//! where reconnect state lives), `docs/protocol.md` (the wire protocol and the server's limits),
//! `docs/sdk-semantics.md` (negotiation, ICE ladder, reconcile), `docs/decisions/` (why the
//! choices a reader would question were made), `docs/testing.md`, and `CONTRIBUTING.md`.

pub mod auth;
#[cfg(feature = "bench")]
pub mod bench;
pub mod client;
pub mod engine;
pub mod headless;
pub mod media;
pub mod peer;
pub mod protocol;
pub mod server;
pub mod ui;

#[cfg(test)]
mod layering_tests;
