//! RemotePeer connection state and the mapping from the PeerConnection's own state, with
//! the official SDKs' flicker filter: while `Reconnecting`, a `Connecting` is swallowed, so users
//! see `connected → reconnecting → connected`, never `… → connecting → …`.

use serde::Serialize;

/// A RemotePeer's state as users see it (the official SDKs' names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerConnectionState {
    /// Created; its connection has reported nothing yet.
    Idle,
    /// The first connection is being set up (ICE, DTLS). Never follows `Reconnecting`.
    Connecting,
    /// Media and data channels can flow.
    Connected,
    /// Connectivity lost (ICE restarts under way) or signalling reconnecting (the connection
    /// will be swapped). May last indefinitely once the restart ladder is spent.
    Reconnecting,
    /// Final: the member left or the MeteredPeer closed.
    Closed,
}

impl PeerConnectionState {
    /// The lower-case name, the same as the serialised form (`"connected"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            PeerConnectionState::Idle => "idle",
            PeerConnectionState::Connecting => "connecting",
            PeerConnectionState::Connected => "connected",
            PeerConnectionState::Reconnecting => "reconnecting",
            PeerConnectionState::Closed => "closed",
        }
    }
}

/// A state transition, as delivered on state streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange<T> {
    /// The state before.
    pub from: T,
    /// The state now; never equal to `from`.
    pub to: T,
}

/// The underlying PeerConnection's state, reduced to what the mapping needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcState {
    /// Created, nothing tried yet.
    New,
    /// ICE/DTLS in progress.
    Connecting,
    /// ICE and DTLS are up.
    Connected,
    /// Connectivity lost; it may come back by itself.
    Disconnected,
    /// ICE gave up; only an ICE restart helps.
    Failed,
    /// The connection was closed.
    Closed,
}

/// `new`/`connecting` → Connecting; `connected` → Connected; `disconnected`/`failed` →
/// Reconnecting; `closed` → Closed.
pub fn map_pc_state(s: PcState) -> PeerConnectionState {
    match s {
        PcState::New | PcState::Connecting => PeerConnectionState::Connecting,
        PcState::Connected => PeerConnectionState::Connected,
        PcState::Disconnected | PcState::Failed => PeerConnectionState::Reconnecting,
        PcState::Closed => PeerConnectionState::Closed,
    }
}

/// The next state, or `None` when the proposal is filtered out or changes nothing. `Closed`
/// is final.
pub fn next_state(
    current: PeerConnectionState,
    proposed: PeerConnectionState,
) -> Option<PeerConnectionState> {
    use PeerConnectionState::*;
    match (current, proposed) {
        (Closed, _) => None,
        (c, p) if c == p => None,
        (Reconnecting, Connecting) => None,
        (_, p) => Some(p),
    }
}

#[cfg(test)]
mod tests {
    use super::PeerConnectionState::*;
    use super::*;

    #[test]
    fn mapping() {
        assert_eq!(map_pc_state(PcState::New), Connecting);
        assert_eq!(map_pc_state(PcState::Connecting), Connecting);
        assert_eq!(map_pc_state(PcState::Connected), Connected);
        assert_eq!(map_pc_state(PcState::Disconnected), Reconnecting);
        assert_eq!(map_pc_state(PcState::Failed), Reconnecting);
        assert_eq!(map_pc_state(PcState::Closed), Closed);
    }

    #[test]
    fn flicker_filter_and_final_closed() {
        let table = [
            (Idle, Connecting, Some(Connecting)),
            (Connecting, Connected, Some(Connected)),
            (Connected, Reconnecting, Some(Reconnecting)),
            (Reconnecting, Connecting, None),
            (Reconnecting, Connected, Some(Connected)),
            (Connected, Connected, None),
            (Idle, Reconnecting, Some(Reconnecting)),
            (Closed, Connected, None),
            (Connected, Closed, Some(Closed)),
        ];
        for (cur, prop, want) in table {
            assert_eq!(next_state(cur, prop), want, "{cur:?} + {prop:?}");
        }
        // A realistic sequence: the user never sees connecting after reconnecting.
        let mut s = Idle;
        let mut seen = vec![s];
        for p in [
            Connecting,
            Connected,
            Reconnecting,
            Connecting,
            Connecting,
            Connected,
        ] {
            if let Some(n) = next_state(s, p) {
                s = n;
                seen.push(n);
            }
        }
        assert_eq!(
            seen,
            vec![Idle, Connecting, Connected, Reconnecting, Connected]
        );
    }
}
