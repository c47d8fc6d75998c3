//! The engine's outside: [`EngineHandle`] (commands in, events out), its options, and the
//! event output the call task writes to.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use super::api::*;
use super::call::*;
use super::local;

/// Events buffered towards the UI.
pub(super) const EVENT_QUEUE: usize = 4_096;

/// Engine-wide options (not per call).
#[derive(Clone, Default)]
pub struct EngineOptions {
    /// Called after every event and every new remote frame (the UI's `request_repaint`).
    pub notify: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Headless: send a server data message and a P2P data-channel ping this often, and report
    /// every message received as [`EngineEvent::Data`].
    pub keepalive_data: Option<Duration>,
    /// Where "this computer" looks for / starts the embedded server.
    pub local: local::LocalServerOptions,
    /// During a call, list the devices this often and announce new ones (the app: every few
    /// seconds; `None`: never, for bots and tests that do not want the scans).
    pub device_scan_every: Option<Duration>,
}

/// Everything the engine reports: the UI vocabulary plus the headless peer's extras.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    Call(Event),
    /// A data message (headless contract): via `server` or `p2p`.
    Data {
        peer: String,
        via: &'static str,
        /// Server messages: `broadcast` or `direct`.
        kind: Option<String>,
        data: Value,
    },
    DataChannelOpen {
        peer: String,
        label: String,
    },
}

/// The UI's end of the engine.
pub struct EngineHandle {
    cmd: mpsc::Sender<Command>,
    events: Mutex<mpsc::Receiver<EngineEvent>>,
}

impl EngineHandle {
    /// Queues a command; false if the engine is gone or flooded.
    pub fn send(&self, c: Command) -> bool {
        self.cmd.try_send(c).is_ok()
    }

    /// The next event, without blocking (call every UI frame until `None`).
    pub fn try_recv(&self) -> Option<EngineEvent> {
        self.events.lock().ok()?.try_recv().ok()
    }

    /// The command sender and event receiver, for async drivers (the headless peer).
    pub fn into_parts(self) -> (mpsc::Sender<Command>, mpsc::Receiver<EngineEvent>) {
        let rx = match self.events.into_inner() {
            Ok(rx) => rx,
            Err(p) => p.into_inner(),
        };
        (self.cmd, rx)
    }
}

/// Starts an engine on `rt`.
pub fn spawn(rt: &tokio::runtime::Handle, options: EngineOptions) -> EngineHandle {
    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
    let out = Out {
        tx: ev_tx,
        notify: options.notify.clone(),
    };
    rt.spawn(run(cmd_rx, out, options));
    EngineHandle {
        cmd: cmd_tx,
        events: Mutex::new(ev_rx),
    }
}

/// Event output: a bounded queue plus the repaint hook.
#[derive(Clone)]
pub(super) struct Out {
    pub(super) tx: mpsc::Sender<EngineEvent>,
    pub(super) notify: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Out {
    pub(super) async fn call(&self, e: Event) {
        self.send(EngineEvent::Call(e)).await;
    }
    pub(super) async fn send(&self, e: EngineEvent) {
        let _ = self.tx.send(e).await;
        self.poke();
    }
    /// From non-async contexts (decoder thread callbacks): drop rather than block.
    /// A problem worth telling the user that does not end the call.
    pub(super) async fn notice(&self, kind: ErrorKind, message: String) {
        self.call(Event::Error {
            kind,
            message,
            close_code: None,
            fatal: false,
        })
        .await;
    }

    /// An error that ended the call (or kept it from starting).
    pub(super) async fn fatal(&self, kind: ErrorKind, message: String, close_code: Option<u16>) {
        self.call(Event::Error {
            kind,
            message,
            close_code,
            fatal: true,
        })
        .await;
    }

    pub(super) fn try_call(&self, e: Event) {
        let _ = self.tx.try_send(EngineEvent::Call(e));
        self.poke();
    }
    pub(super) fn poke(&self) {
        if let Some(n) = &self.notify {
            n();
        }
    }
}
