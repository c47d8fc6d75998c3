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
//! | [`client`] | SDK signalling: `SignallingClient` (credential, acks, heartbeat, reconnect, replay) | cores pure, shell IO |
//! | [`peer`] | MeteredPeer / RemotePeer over webrtc-rs: negotiation, ICE ladder, reconcile | cores pure, shells IO |
//! | [`media`] | frames, stamp, synthetic sources, H.264 and Opus codecs (pipelines to come) | CPU only |
//! | [`headless`] | `meshcall join --headless`: a scriptable peer printing JSON lines | yes |
//! | [`bench`] | load generators behind `meshcall bench …` | yes |
//! | [`ui`] | the desktop app (eframe/wgpu): join and call screens, GPU video tiles; drives [`engine`] only through its handle | UI thread only |
//!
//! Pure cores take time as an argument and return what to do; thin tokio shells do the IO.
//! Specifications live in `../shared/spec/` (protocol.md for the wire).

pub mod auth;
pub mod bench;
pub mod client;
pub mod engine;
pub mod headless;
pub mod media;
pub mod peer;
pub mod protocol;
pub mod server;
pub mod ui;
