//! The peer SDK: [`MeteredPeer`] and [`RemotePeer`] over webrtc-rs 0.21, with the
//! semantics of Metered's official SDKs.
//!
//! | module | what | IO? |
//! |---|---|---|
//! | [`signals`] | rtc-description / rtc-ice / track-metadata envelopes, SDP ufrag/mid/msid | pure |
//! | [`negotiation`] | politeness, offer/answer decisions, offer and stuck-ICE watchdogs | pure |
//! | [`feedback`] | receiver-report loss per outgoing SSRC (fed by the RTCP tap) | no |
//! | [`ladder`] | ICE-restart ladder | pure |
//! | [`state`] | RemotePeer state mapping and flicker filter | pure |
//! | [`reconcile`] | snapshot diffing after a signalling reconnect | pure |
//! | `connection` | one PeerConnection as an actor (FIFO, generation-tagged events) | yes |
//! | [`remote_peer`] | RemotePeer: state, streams, metadata, data channels | yes |
//! | [`local_media`] | local tracks as one leg per connection (one encoder, many peers) | no |
//! | [`metered_peer`] | MeteredPeer: presence-driven mesh, reconcile, local media fan-out | yes |
//! | [`data_channel`] | DataChannel wrapper with ordered, backpressured sends | yes |
//! | [`rtx`] | RTX retransmissions unwrapped before the NACK generator and receiver reports | pure |
//! | [`runtime`] | the capped-sleep webrtc runtime (fast connection setup) | yes |

#![warn(missing_docs)]

pub(crate) mod connection;
pub mod data_channel;
pub mod error;
pub mod events;
pub mod feedback;
pub mod ladder;
pub mod local_media;
mod media_engine;
pub mod metered_peer;
pub mod negotiation;
pub mod reconcile;
pub mod remote_peer;
pub mod rtx;
pub mod runtime;
pub mod settings;
pub mod signals;
pub mod state;

pub use data_channel::{DataChannel, DcEvent, DcMessage};
pub use error::{PeerError, PeerEventError};
pub use events::{Event, EventStream};
pub use local_media::{FixedTrack, LocalMedia, MediaLeg};
pub use metered_peer::{DataEvent, DataKind, LeftEvent, MeteredPeer, MeteredPeerState};
pub use remote_peer::{
    MAX_REMOTE_DATA_CHANNELS, MAX_REMOTE_TRACKS, RemotePeer, RemoteStreamEvent, RemoteTrack,
    RemoteTrackEvent,
};
pub use settings::PeerSettings;
pub use state::{PeerConnectionState, StateChange};
