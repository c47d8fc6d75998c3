//! Tunables of the peer layer. Defaults follow the official SDKs and our decisions; tests shrink
//! the timers. `loopback_only()` is the network-safety setting every test uses: ICE checks
//! would otherwise reach every local interface address.

use std::time::Duration;

use super::ladder::SCHEDULE_SECS;

/// Tunables of the peer layer: `Default` is the production set, [`PeerSettings::loopback_only`]
/// the one for tests.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// UDP sockets ICE binds; its host candidates are exactly these sockets' addresses.
    /// `0.0.0.0:0` (one socket per usable interface) in production, `127.0.0.1:0` for tests.
    pub udp_bind: Vec<String>,
    /// Cap on the WebRTC driver's sleeps, so queued handshake packets go out at once (see
    /// [`super::runtime`]). Zero disables.
    pub driver_clamp: Duration,
    /// ICE: `disconnected` after this much silence, `failed` after `ice_failed` more.
    pub ice_disconnected: Duration,
    /// ICE: further silence after `disconnected` before `failed`, which starts the ICE-restart
    /// ladder.
    pub ice_failed: Duration,
    /// ICE: keepalive interval on an otherwise quiet connection; keep it well under
    /// `ice_disconnected`, or an idle connection looks dead.
    pub ice_keepalive: Duration,
    /// Negotiation watchdogs (with `stuck_ice_timeout` below): an offer unanswered this long is
    /// withdrawn and re-made; ICE still `new`/`checking` that long after signalling settles is
    /// restarted.
    pub offer_timeout: Duration,
    /// The impolite side holds its first offer this long after the connection is created, so
    /// that a polite peer which offers at once (the JS SDK does, with its own tracks and
    /// channels) is answered instead of colliding. Glare is handled either way; avoiding it
    /// saves a rollback round and sidesteps the JS SDK's glare race (README, interop).
    pub impolite_offer_delay: Duration,
    /// How long ICE may stay `new`/`checking` after signalling settles before it is restarted.
    pub stuck_ice_timeout: Duration,
    /// ICE-restart ladder after `failed`: the wait before each attempt, and how long each attempt
    /// is given to succeed.
    pub ladder_schedule: Vec<Duration>,
    /// How long each ICE restart of the ladder gets to reach `connected`.
    pub ladder_probe: Duration,
    /// Reconcile after a signalling reconnect: how long to wait for the channel's snapshot, and
    /// how many forced re-subscribes before giving up with `ReconcileTimeout`.
    pub reconcile_deadline: Duration,
    /// Forced re-subscribes (one per `reconcile_deadline`) before `ReconcileTimeout`.
    pub max_forced_resubscribes: u32,
    /// Remote peers tracked per channel, a cap against hostile presence floods.
    pub max_remote_peers: usize,
    /// Per data channel: SCTP bytes in flight before `send` waits (backpressure).
    pub data_channel_send_buffer: usize,
    /// How long the PeerConnection of a peer that left stays open (see `RemotePeer::close`).
    pub left_linger: Duration,
    /// Capacity of each public event stream (lagging receivers are told what they missed).
    pub event_capacity: usize,
}

impl Default for PeerSettings {
    fn default() -> Self {
        PeerSettings {
            udp_bind: vec!["0.0.0.0:0".to_string()],
            driver_clamp: Duration::from_millis(2),
            ice_disconnected: Duration::from_secs(5),
            ice_failed: Duration::from_secs(25),
            ice_keepalive: Duration::from_secs(2),
            offer_timeout: Duration::from_secs(10),
            impolite_offer_delay: Duration::from_millis(150),
            stuck_ice_timeout: Duration::from_secs(8),
            ladder_schedule: SCHEDULE_SECS
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            ladder_probe: Duration::from_secs(15),
            reconcile_deadline: Duration::from_secs(10),
            max_forced_resubscribes: 2,
            max_remote_peers: 256,
            data_channel_send_buffer: 1 << 20,
            left_linger: Duration::from_secs(3),
            event_capacity: 256,
        }
    }
}

impl PeerSettings {
    /// ICE restricted to 127.0.0.1 (no other interface is ever probed). Use inside a
    /// loopback-only network namespace as well.
    pub fn loopback_only() -> Self {
        PeerSettings {
            udp_bind: vec!["127.0.0.1:0".to_string()],
            ..PeerSettings::default()
        }
    }
}
