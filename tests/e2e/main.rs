//! Integration tests that run meshcall as a process, folded into one test binary (each
//! integration-test binary links the whole crate, so every extra binary costs a link of its
//! own): the headless peer's command line and JSON lines, the Debian package, the official
//! Python SDK's conformance suite against `meshcall serve`, and screen capture under Xvfb.
//!
//! They are light on CPU (mostly waiting on child processes) and run side by side safely. The
//! timing-sensitive media, browser, device and app tests keep binaries of their own (see
//! docs/testing.md).

#[path = "../common/mod.rs"]
mod common;

mod devices_screen;
mod headless_cli;
mod packaging;
mod python_sdk_conformance;
