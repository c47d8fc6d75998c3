//! In-process integration tests of the signalling layer, folded into one test binary (each
//! integration-test binary links the whole crate with webrtc, eframe and openh264, so every extra
//! binary costs a link of its own): the server byte by byte, TLS, abuse by many clients, the
//! signalling client and its "retry now", the reconcile deadline, a hostile peer's SDP, and the
//! desktop app's screens driven with made-up engine events (kittest).
//!
//! These tests are light on CPU and run side by side safely. Tests that measure media timing
//! or drive browsers, devices and the app keep binaries of their own, so that cargo runs them
//! one binary after another and they never compete for the two cores of a CI machine (see
//! docs/testing.md).

#[path = "../common/mod.rs"]
mod common;

mod client;
mod client_retry_now;
mod peer_fuzz;
mod reconcile_timeout;
mod server_abuse;
mod server_tls;
mod server_ws;
mod ui;
