//! The WebRTC envelopes that ride `send`/`direct` frames, and the bits of SDP the SDK reads.
//! Pure: parse and build JSON values; no PeerConnection in sight.
//!
//! Shapes must match the official SDKs byte for byte:
//! `{"type":"rtc-description","description":{"type":"offer"|"answer","sdp":…}}`,
//! `{"type":"rtc-ice","candidate":{candidate,sdpMid,sdpMLineIndex,usernameFragment}|null}`,
//! `{"__meteredTrackMeta":{"trackId","metadata"?,"kind"?,"streamId"?}}`.

use serde_json::{Map, Value, json};

/// Longest inbound candidate string accepted (a cap against candidate floods).
pub const MAX_CANDIDATE_LEN: usize = 1000;
/// Inbound candidates accepted per remote description (a cap against candidate floods).
pub const MAX_CANDIDATES_PER_DESCRIPTION: usize = 200;
/// Longest id (stream, track, kind, ufrag) taken from a peer.
pub const MAX_ID_LEN: usize = 256;
/// Entries read from one SDP's msid lines.
pub const MAX_MSID_ENTRIES: usize = 256;

/// The `type` of an `rtc-description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpKind {
    /// An offer: starts a negotiation round.
    Offer,
    /// The answer to the other side's offer.
    Answer,
}

impl SdpKind {
    /// The wire value: `"offer"` or `"answer"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SdpKind::Offer => "offer",
            SdpKind::Answer => "answer",
        }
    }
}

/// A browser-style `RTCIceCandidateInit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The `candidate:…` attribute text; never empty (an empty one is end-of-candidates).
    pub candidate: String,
    /// The `a=mid` of the media section the candidate is for.
    pub sdp_mid: Option<String>,
    /// That media section's index in the SDP, from 0.
    pub sdp_mline_index: Option<u16>,
    /// The ICE ufrag the candidate belongs to; lets the receiver drop candidates from before an
    /// ICE restart. `None` when the sender did not say.
    pub username_fragment: Option<String>,
}

/// Track metadata as sent before the track's media.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackMeta {
    /// The sender's track id, as in its SDP's msid; receivers key the metadata by it.
    pub track_id: String,
    /// `None` is the "clear" message.
    pub metadata: Option<Value>,
    /// `"audio"`/`"video"`; with `stream_id`, the fallback match for a receiver that sees
    /// generated track ids instead of the sender's.
    pub kind: Option<String>,
    /// The sender's msid stream id, for the same fallback.
    pub stream_id: Option<String>,
}

/// What a `direct` frame's `data` turned out to be, in the priority order the official SDKs
/// classify it.
#[derive(Debug, Clone, PartialEq)]
pub enum DirectPayload {
    /// An `rtc-description`: an offer or answer for the sender's connection to us.
    Description {
        /// Offer or answer.
        kind: SdpKind,
        /// The full SDP text. It holds ICE credentials: never log it.
        sdp: String,
    },
    /// `None` is the end-of-candidates marker (`null` or `{"candidate":""}`).
    Candidate(Option<Candidate>),
    /// A `__meteredTrackMeta` message: labels (or clears) one of the sender's tracks.
    TrackMeta(TrackMeta),
    /// Anything else is application data.
    App(Value),
}

fn short_str(v: Option<&Value>) -> Result<Option<String>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_ID_LEN => Ok(Some(s.clone())),
        _ => Err(()),
    }
}

fn parse_candidate(v: &Value) -> Option<Option<Candidate>> {
    match v {
        Value::Null => Some(None),
        Value::Object(o) => {
            let candidate = o.get("candidate")?.as_str()?;
            if candidate.is_empty() {
                return Some(None);
            }
            let sdp_mid = match o.get("sdpMid") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return None,
            };
            let sdp_mline_index = match o.get("sdpMLineIndex") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => Some(u16::try_from(n.as_u64()?).ok()?),
                Some(_) => return None,
            };
            let username_fragment = match o.get("usernameFragment") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.len() <= MAX_ID_LEN => Some(s.clone()),
                Some(_) => return None,
            };
            Some(Some(Candidate {
                candidate: candidate.to_string(),
                sdp_mid,
                sdp_mline_index,
                username_fragment,
            }))
        }
        _ => None,
    }
}

fn parse_track_meta(v: &Value) -> Option<TrackMeta> {
    let o = v.as_object()?;
    let track_id = o.get("trackId")?.as_str()?;
    if track_id.is_empty() || track_id.len() > MAX_ID_LEN {
        return None;
    }
    let metadata = match o.get("metadata") {
        None | Some(Value::Null) => None,
        Some(m @ Value::Object(_)) => Some(m.clone()),
        Some(_) => return None,
    };
    Some(TrackMeta {
        track_id: track_id.to_string(),
        metadata,
        kind: short_str(o.get("kind")).ok()?,
        stream_id: short_str(o.get("streamId")).ok()?,
    })
}

/// Classifies a `direct` frame's `data`. Anything that fails the strict parse of a signal or
/// of track metadata is application data, as in the official SDKs.
pub fn classify_direct(data: &Value) -> DirectPayload {
    if let Some(o) = data.as_object() {
        match o.get("type").and_then(Value::as_str) {
            Some("rtc-description") => {
                if let Some(d) = o.get("description").and_then(Value::as_object) {
                    let kind = match d.get("type").and_then(Value::as_str) {
                        Some("offer") => Some(SdpKind::Offer),
                        Some("answer") => Some(SdpKind::Answer),
                        _ => None,
                    };
                    if let (Some(kind), Some(sdp)) = (kind, d.get("sdp").and_then(Value::as_str)) {
                        return DirectPayload::Description {
                            kind,
                            sdp: sdp.to_string(),
                        };
                    }
                }
            }
            Some("rtc-ice") => {
                if let Some(c) = o.get("candidate").and_then(parse_candidate) {
                    return DirectPayload::Candidate(c);
                }
            }
            _ => {}
        }
        if let Some(meta) = o.get("__meteredTrackMeta").and_then(parse_track_meta) {
            return DirectPayload::TrackMeta(meta);
        }
    }
    DirectPayload::App(data.clone())
}

/// The `rtc-description` envelope for a `send` to the peer.
pub fn description_json(kind: SdpKind, sdp: &str) -> Value {
    json!({"type": "rtc-description", "description": {"type": kind.as_str(), "sdp": sdp}})
}

/// The `rtc-ice` envelope; `None` gives the end-of-candidates marker (`"candidate": null`).
/// Unknown `sdpMid`/`sdpMLineIndex` are sent as `null`, an unknown `usernameFragment` is left
/// out.
pub fn candidate_json(c: Option<&Candidate>) -> Value {
    match c {
        None => json!({"type": "rtc-ice", "candidate": null}),
        Some(c) => {
            let mut o = Map::new();
            o.insert("candidate".into(), Value::String(c.candidate.clone()));
            o.insert(
                "sdpMid".into(),
                c.sdp_mid.clone().map_or(Value::Null, Value::String),
            );
            o.insert(
                "sdpMLineIndex".into(),
                c.sdp_mline_index.map_or(Value::Null, |i| json!(i)),
            );
            if let Some(u) = &c.username_fragment {
                o.insert("usernameFragment".into(), Value::String(u.clone()));
            }
            json!({"type": "rtc-ice", "candidate": Value::Object(o)})
        }
    }
}

/// The `__meteredTrackMeta` envelope; `None` fields are left out (no `metadata` = clear).
pub fn track_meta_json(m: &TrackMeta) -> Value {
    let mut o = Map::new();
    o.insert("trackId".into(), Value::String(m.track_id.clone()));
    if let Some(meta) = &m.metadata {
        o.insert("metadata".into(), meta.clone());
    }
    if let Some(k) = &m.kind {
        o.insert("kind".into(), Value::String(k.clone()));
    }
    if let Some(s) = &m.stream_id {
        o.insert("streamId".into(), Value::String(s.clone()));
    }
    json!({"__meteredTrackMeta": Value::Object(o)})
}

/// The first `a=ice-ufrag:` of an SDP (session or media level), if sane.
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .filter(|u| !u.is_empty() && u.len() <= MAX_ID_LEN)
}

/// The first media section's `a=mid:` (the bundle tag candidates are attached to).
pub fn first_mid(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .filter(|m| !m.is_empty() && m.len() <= MAX_ID_LEN)
}

/// Per media section: its mid and the (stream id, track id) its `a=msid:` (or legacy
/// `a=ssrc:N msid:`) line signals. A stream id of `-` means "no stream".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsidEntry {
    /// The section's `a=mid`; `None` when it has none.
    pub mid: Option<String>,
    /// The stream id; `None` for `-`.
    pub stream_id: Option<String>,
    /// The track id the sender signalled (the key of its track metadata).
    pub track_id: String,
}

/// One entry per media section that signals an msid (the first such line of the section), at
/// most [`MAX_MSID_ENTRIES`]; lines with ids over [`MAX_ID_LEN`] are skipped.
pub fn msid_entries(sdp: &str) -> Vec<MsidEntry> {
    let mut out: Vec<MsidEntry> = Vec::new();
    let mut mid: Option<String> = None;
    let mut section_has_entry = false;
    for line in sdp.lines().map(str::trim_end) {
        if line.starts_with("m=") {
            mid = None;
            section_has_entry = false;
            continue;
        }
        if let Some(m) = line.strip_prefix("a=mid:") {
            if m.len() <= MAX_ID_LEN {
                mid = Some(m.to_string());
                // A msid seen before the mid line in this section gets the mid now.
                if section_has_entry && let Some(last) = out.last_mut() {
                    last.mid = mid.clone();
                }
            }
            continue;
        }
        let msid = line.strip_prefix("a=msid:").or_else(|| {
            line.strip_prefix("a=ssrc:")
                .and_then(|rest| rest.split_once(' '))
                .and_then(|(_, attr)| attr.strip_prefix("msid:"))
        });
        if let Some(value) = msid {
            if section_has_entry || out.len() >= MAX_MSID_ENTRIES {
                continue;
            }
            let mut parts = value.split_whitespace();
            let (Some(stream), Some(track)) = (parts.next(), parts.next()) else {
                continue;
            };
            if stream.len() > MAX_ID_LEN || track.len() > MAX_ID_LEN {
                continue;
            }
            out.push(MsidEntry {
                mid: mid.clone(),
                stream_id: (stream != "-").then(|| stream.to_string()),
                track_id: track.to_string(),
            });
            section_has_entry = true;
        }
    }
    out
}

/// Mids of the media sections in which the SDP's author sends media (`sendrecv`/`sendonly`,
/// the default when no direction is given, and a non-zero port). A track whose mid drops out
/// of this set has been removed by its sender.
pub fn sending_mids(sdp: &str) -> std::collections::HashSet<String> {
    let mut out = std::collections::HashSet::new();
    let mut section: Option<(bool, Option<String>, bool)> = None; // (is_media, mid, sending)
    let flush = |s: Option<(bool, Option<String>, bool)>,
                 out: &mut std::collections::HashSet<String>| {
        if let Some((true, Some(mid), true)) = s {
            out.insert(mid);
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            flush(section.take(), &mut out);
            let mut parts = m.split_whitespace();
            let kind = parts.next().unwrap_or("");
            let port = parts.next().unwrap_or("0");
            let media = matches!(kind, "audio" | "video") && port != "0";
            section = Some((media, None, true));
            continue;
        }
        let Some((_, mid, sending)) = section.as_mut() else {
            continue;
        };
        if let Some(m) = line.strip_prefix("a=mid:") {
            *mid = Some(m.to_string());
        } else if line == "a=recvonly" || line == "a=inactive" {
            *sending = false;
        }
    }
    flush(section, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_signals_meta_and_app_data() {
        let d = classify_direct(
            &json!({"type":"rtc-description","description":{"type":"offer","sdp":"v=0"}}),
        );
        assert_eq!(
            d,
            DirectPayload::Description {
                kind: SdpKind::Offer,
                sdp: "v=0".into()
            }
        );
        let d = classify_direct(&json!({"type":"rtc-ice","candidate":null}));
        assert_eq!(d, DirectPayload::Candidate(None));
        let d = classify_direct(&json!({"type":"rtc-ice","candidate":{"candidate":""}}));
        assert_eq!(d, DirectPayload::Candidate(None));
        let d = classify_direct(
            &json!({"type":"rtc-ice","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}),
        );
        match d {
            DirectPayload::Candidate(Some(c)) => {
                assert_eq!(c.sdp_mid.as_deref(), Some("0"));
                assert_eq!(c.sdp_mline_index, Some(0));
                assert_eq!(c.username_fragment.as_deref(), Some("abcd"));
            }
            other => panic!("{other:?}"),
        }
        let d = classify_direct(
            &json!({"__meteredTrackMeta":{"trackId":"t1","metadata":{"role":"screen"},"kind":"video","streamId":"s1"}}),
        );
        assert_eq!(
            d,
            DirectPayload::TrackMeta(TrackMeta {
                track_id: "t1".into(),
                metadata: Some(json!({"role":"screen"})),
                kind: Some("video".into()),
                stream_id: Some("s1".into())
            })
        );
        // Clear message.
        assert!(matches!(
            classify_direct(&json!({"__meteredTrackMeta":{"trackId":"t1"}})),
            DirectPayload::TrackMeta(TrackMeta { metadata: None, .. })
        ));
        // Anything malformed falls through to app data.
        for v in [
            json!({"type":"rtc-description","description":{"type":"pranswer","sdp":"v=0"}}),
            json!({"type":"rtc-description","description":{"type":"offer","sdp":5}}),
            json!({"type":"rtc-ice","candidate":"x"}),
            json!({"type":"rtc-ice","candidate":{"candidate":"c","sdpMLineIndex":true}}),
            json!({"__meteredTrackMeta":{"trackId":""}}),
            json!({"__meteredTrackMeta":{"trackId":"t","metadata":"role"}}),
            json!({"__meteredTrackMeta":{"trackId":"t","kind":"x".repeat(257)}}),
            json!("hello"),
            json!([1, 2]),
        ] {
            assert_eq!(classify_direct(&v), DirectPayload::App(v.clone()), "{v}");
        }
    }

    #[test]
    fn builds_the_exact_envelopes() {
        assert_eq!(
            description_json(SdpKind::Answer, "v=0\r\n").to_string(),
            r#"{"description":{"sdp":"v=0\r\n","type":"answer"},"type":"rtc-description"}"#
        );
        assert_eq!(
            candidate_json(None),
            json!({"type":"rtc-ice","candidate":null})
        );
        let c = Candidate {
            candidate: "candidate:x".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        };
        assert_eq!(
            candidate_json(Some(&c)),
            json!({"type":"rtc-ice","candidate":{"candidate":"candidate:x","sdpMid":"0","sdpMLineIndex":0}})
        );
        // Round trip through the classifier.
        assert_eq!(
            classify_direct(&candidate_json(Some(&c))),
            DirectPayload::Candidate(Some(c))
        );
        let m = TrackMeta {
            track_id: "t".into(),
            metadata: Some(json!({"role":"camera"})),
            kind: Some("video".into()),
            stream_id: None,
        };
        assert_eq!(
            track_meta_json(&m),
            json!({"__meteredTrackMeta":{"trackId":"t","metadata":{"role":"camera"},"kind":"video"}})
        );
        assert_eq!(
            classify_direct(&track_meta_json(&m)),
            DirectPayload::TrackMeta(m)
        );
    }

    #[test]
    fn sending_mids_follow_direction_and_port() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=sendonly\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:4\r\na=inactive\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:5\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:6\r\n";
        let mut got: Vec<String> = sending_mids(sdp).into_iter().collect();
        got.sort();
        assert_eq!(got, vec!["0", "2", "5"]);
    }

    #[test]
    fn reads_ufrag_mid_and_msid() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\na=group:BUNDLE 0 1\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ice-ufrag:ABCD\r\na=msid:streamA trackA\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:- trackB\r\na=mid:1\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=ssrc:1234 msid:streamC trackC\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:3\r\n";
        assert_eq!(ice_ufrag(sdp), Some("ABCD"));
        assert_eq!(first_mid(sdp), Some("0"));
        assert_eq!(
            msid_entries(sdp),
            vec![
                MsidEntry {
                    mid: Some("0".into()),
                    stream_id: Some("streamA".into()),
                    track_id: "trackA".into()
                },
                MsidEntry {
                    mid: Some("1".into()),
                    stream_id: None,
                    track_id: "trackB".into()
                },
                MsidEntry {
                    mid: Some("2".into()),
                    stream_id: Some("streamC".into()),
                    track_id: "trackC".into()
                },
            ]
        );
        assert_eq!(ice_ufrag("v=0\r\n"), None);
        assert_eq!(ice_ufrag(&format!("a=ice-ufrag:{}", "u".repeat(257))), None);
    }
}
