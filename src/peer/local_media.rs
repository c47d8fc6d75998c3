//! Local media as the MeteredPeer fans it out.
//!
//! webrtc-rs 0.21 binds a `TrackLocal` to exactly one PeerConnection (a second `add_track` of the
//! same object silently rebinds it), so a track sent to a mesh needs one *leg* per connection.
//! [`LocalMedia`] is what the SDK asks for a leg every time it (re)builds a connection to a peer;
//! the media layer implements it so that one encoder feeds every leg (encoding once per
//! peer would multiply the CPU cost by the number of peers).
//! A plain `TrackLocal` still works through [`FixedTrack`] for single-peer use and tests.

use std::sync::Arc;

use webrtc::media_stream::track_local::TrackLocal;
use webrtc::rtp_transceiver::RtpSender;

use super::error::PeerError;
use super::remote_peer::RemotePeer;

/// Called once the leg has been added to its connection: the sender reports the negotiated
/// payload type (after negotiation), the peer its connection state.
pub type OnAttached = Box<dyn FnOnce(Arc<dyn RtpSender>, RemotePeer) + Send>;

/// One connection's copy of a local track.
pub struct MediaLeg {
    /// The track to add to this one connection. Give every leg its own object: webrtc-rs
    /// would move a shared one to the newest connection.
    pub track: Arc<dyn TrackLocal>,
    /// Run once the leg is on its connection (see [`OnAttached`]); not run if adding failed.
    pub on_attached: OnAttached,
}

/// A local track the MeteredPeer sends to every current and future remote peer.
pub trait LocalMedia: Send + Sync {
    /// The track id every leg carries (receivers key `__meteredTrackMeta` by it).
    fn track_id(&self) -> String;
    /// The msid stream id, if any (tracks of one stream share it).
    fn stream_id(&self) -> Option<String>;
    /// `"audio"` or `"video"`.
    fn kind(&self) -> String;
    /// A fresh leg for one connection to `peer`.
    fn new_leg(&self, peer: &RemotePeer) -> Result<MediaLeg, PeerError>;
}

/// A caller-made `TrackLocal` used as is: every connection gets the same object, so only the
/// most recently attached connection receives its media. Use the media layer's senders for a
/// mesh.
pub struct FixedTrack {
    track: Arc<dyn TrackLocal>,
    track_id: String,
    stream_id: Option<String>,
    kind: String,
}

impl FixedTrack {
    /// Reads the track's id, stream id (`None` when empty) and kind once, up front.
    pub async fn new(track: Arc<dyn TrackLocal>) -> FixedTrack {
        let track_id = track.track_id().await.to_string();
        let stream_id = {
            let s = track.stream_id().await.to_string();
            (!s.is_empty()).then_some(s)
        };
        let kind = track.kind().await.to_string().to_lowercase();
        FixedTrack {
            track,
            track_id,
            stream_id,
            kind,
        }
    }
}

impl LocalMedia for FixedTrack {
    fn track_id(&self) -> String {
        self.track_id.clone()
    }
    fn stream_id(&self) -> Option<String> {
        self.stream_id.clone()
    }
    fn kind(&self) -> String {
        self.kind.clone()
    }
    fn new_leg(&self, _peer: &RemotePeer) -> Result<MediaLeg, PeerError> {
        Ok(MediaLeg {
            track: self.track.clone(),
            on_attached: Box::new(|_, _| {}),
        })
    }
}
