//! Table-style tests of the hub's transitions. Time is injected, so nothing here sleeps.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::hub::{ConnId, Hub, HubConfig, Output};
use crate::auth::{Action, Actions, PatternSet, Principal, PrincipalKind};
use crate::protocol::CloseCode;

fn principal(peer: &str, meta: Option<Value>) -> Principal {
    Principal {
        peer_id: peer.to_string(),
        kind: PrincipalKind::Token,
        key_id: "k1".into(),
        key_patterns: PatternSet::any(),
        token_channels: None,
        permissions: Actions::all(),
        peer_metadata: meta,
        metadata: None,
        expires_at: Some(2_000_000_000),
        app: String::new(),
    }
}

struct World {
    hub: Hub,
    now: Instant,
    out: Vec<Output>,
}

impl World {
    fn new(cfg: HubConfig) -> Self {
        World {
            hub: Hub::new(cfg),
            now: Instant::now(),
            out: Vec::new(),
        }
    }

    fn join(&mut self, p: Principal) -> ConnId {
        let id = self
            .hub
            .connect(p, self.now, 1_700_000_000, &mut self.out)
            .expect("admitted");
        self.out.clear();
        id
    }

    fn text(&mut self, conn: ConnId, v: Value) -> Vec<Output> {
        self.hub
            .handle_text(conn, &v.to_string(), self.now, &mut self.out);
        std::mem::take(&mut self.out)
    }

    fn sub(&mut self, conn: ConnId, channel: &str) -> Vec<Output> {
        self.text(
            conn,
            json!({"type":"subscribe","channel":channel,"requestId":"s"}),
        )
    }
}

/// (conn, parsed frame) for every frame output; closes as {"close": code}.
fn frames(out: &[Output]) -> Vec<(ConnId, Value)> {
    out.iter()
        .map(|o| match o {
            Output::Frame { conn, text, .. } => (
                *conn,
                serde_json::from_str(text).expect("server frames are JSON"),
            ),
            Output::Close { conn, code } => (*conn, json!({"close": code.code()})),
        })
        .collect()
}

fn only(out: &[Output], conn: ConnId) -> Vec<Value> {
    frames(out)
        .into_iter()
        .filter(|(c, _)| *c == conn)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn welcome_is_first_and_complete() {
    let mut w = World::new(HubConfig::default());
    let mut p = principal("alice", None);
    p.metadata = Some(json!({"iceServers":[{"urls":"stun:x"}]}));
    let id = w
        .hub
        .connect(p, w.now, 1_700_000_123, &mut w.out)
        .expect("admitted");
    let f = only(&w.out, id);
    assert_eq!(
        f,
        vec![
            json!({"type":"welcome","peerId":"alice","expiresAt":2_000_000_000u64,
            "serverTime":1_700_000_123u64,"maxMessageSize":65536,
            "metadata":{"iceServers":[{"urls":"stun:x"}]}})
        ]
    );
}

#[test]
fn subscribe_acks_then_snapshots_then_diffs_others() {
    let mut w = World::new(HubConfig::default());
    let a = w.join(principal("alice", Some(json!({"username":"Alice"}))));
    let b = w.join(principal("bob", Some(json!({"username":"Bob"}))));
    let out = w.sub(a, "room");
    assert_eq!(
        only(&out, a),
        vec![
            json!({"type":"ack","requestId":"s"}),
            json!({"type":"presence","channel":"room","joined":[],"left":[]}),
        ]
    );
    let out = w.sub(b, "room");
    assert_eq!(
        only(&out, b),
        vec![
            json!({"type":"ack","requestId":"s"}),
            json!({"type":"presence","channel":"room",
                "joined":[{"peerId":"alice","metadata":{"username":"Alice"}}],"left":[]}),
        ]
    );
    assert_eq!(
        only(&out, a),
        vec![json!({"type":"presence","channel":"room",
            "joined":[{"peerId":"bob","metadata":{"username":"Bob"}}],"left":[]})]
    );
    // Re-subscribe: ack + fresh snapshot, nothing to others.
    let out = w.sub(b, "room");
    assert_eq!(only(&out, b).len(), 2);
    assert!(only(&out, a).is_empty());
    // Leaving: unsubscribe acks and tells alice.
    let out = w.text(
        b,
        json!({"type":"unsubscribe","channel":"room","requestId":"u"}),
    );
    assert_eq!(only(&out, b), vec![json!({"type":"ack","requestId":"u"})]);
    assert_eq!(
        only(&out, a),
        vec![json!({"type":"presence","channel":"room","joined":[],"left":[{"peerId":"bob"}]})]
    );
    // Unsubscribing again is an idempotent ack.
    let out = w.text(
        b,
        json!({"type":"unsubscribe","channel":"room","requestId":"u2"}),
    );
    assert_eq!(
        frames(&out),
        vec![(b, json!({"type":"ack","requestId":"u2"}))]
    );
}

#[test]
fn presence_is_reference_counted_per_peer() {
    let mut w = World::new(HubConfig::default());
    let watcher = w.join(principal("watcher", None));
    w.sub(watcher, "room");
    let a1 = w.join(principal("alice", None));
    let a2 = w.join(principal("alice", None));
    let out = w.sub(a1, "room");
    assert_eq!(only(&out, watcher).len(), 1, "first alice connection joins");
    let out = w.sub(a2, "room");
    assert!(
        only(&out, watcher).is_empty(),
        "second connection is no new join"
    );
    // The snapshot for a2 does not list alice herself.
    assert_eq!(
        only(&out, a2)[1],
        json!({"type":"presence","channel":"room","joined":[{"peerId":"watcher"}],"left":[]})
    );
    assert_eq!(w.hub.channel_peers("", "room").len(), 2);
    let mut out = Vec::new();
    w.hub.disconnect(a1, &mut out);
    assert!(out.is_empty(), "alice still has a connection");
    w.hub.disconnect(a2, &mut out);
    assert_eq!(
        only(&out, watcher),
        vec![json!({"type":"presence","channel":"room","joined":[],"left":[{"peerId":"alice"}]})]
    );
    // Disconnect is idempotent.
    let mut out = Vec::new();
    w.hub.disconnect(a2, &mut out);
    assert!(out.is_empty());
}

#[test]
fn publish_excludes_only_the_sending_connection_and_stamps_metadata_on_opt_in() {
    let mut w = World::new(HubConfig::default());
    let a1 = w.join(principal("alice", Some(json!({"username":"Alice"}))));
    let a2 = w.join(principal("alice", Some(json!({"username":"Alice"}))));
    let opt_in = w.join(principal("bob", None));
    let plain = w.join(principal("carol", None));
    w.sub(a1, "room");
    w.sub(a2, "room");
    w.text(
        opt_in,
        json!({"type":"subscribe","channel":"room","includeSenderMetadata":true}),
    );
    w.sub(plain, "room");
    let out = w.text(
        a1,
        json!({"type":"publish","channel":"room","data":{"n":1},"requestId":"p"}),
    );
    assert_eq!(only(&out, a1), vec![json!({"type":"ack","requestId":"p"})]);
    assert_eq!(
        only(&out, a2),
        vec![json!({"type":"message","channel":"room","from":"alice","data":{"n":1}})]
    );
    assert_eq!(
        only(&out, opt_in),
        vec![
            json!({"type":"message","channel":"room","from":"alice","data":{"n":1},
            "fromMetadata":{"username":"Alice"}})
        ]
    );
    assert_eq!(
        only(&out, plain),
        vec![json!({"type":"message","channel":"room","from":"alice","data":{"n":1}})]
    );
    // Publishing needs no subscription; null data is legal.
    let outsider = w.join(principal("dave", None));
    let out = w.text(
        outsider,
        json!({"type":"publish","channel":"room","data":null}),
    );
    assert_eq!(only(&out, plain)[0]["data"], Value::Null);
    assert!(only(&out, outsider).is_empty(), "no requestId, no ack");
}

#[test]
fn send_reaches_every_connection_of_the_target_except_the_sender() {
    let mut w = World::new(HubConfig::default());
    let a1 = w.join(principal("alice", Some(json!({"username":"Alice"}))));
    let a2 = w.join(principal("alice", None));
    let b1 = w.join(principal("bob", None));
    let b2 = w.join(principal("bob", None));
    let out = w.text(
        a1,
        json!({"type":"send","to":"bob","data":"hi","requestId":"s1"}),
    );
    assert_eq!(only(&out, a1), vec![json!({"type":"ack","requestId":"s1"})]);
    let direct =
        json!({"type":"direct","from":"alice","data":"hi","fromMetadata":{"username":"Alice"}});
    assert_eq!(only(&out, b1), vec![direct.clone()]);
    assert_eq!(only(&out, b2), vec![direct]);
    // To self: the other tab gets it, the sending connection does not.
    let out = w.text(a1, json!({"type":"send","to":"alice","data":1}));
    assert_eq!(only(&out, a2).len(), 1);
    assert!(only(&out, a1).is_empty());
    let out = w.text(
        a1,
        json!({"type":"send","to":"nobody","data":1,"requestId":"s2"}),
    );
    assert_eq!(only(&out, a1)[0]["code"], "peer_not_found");
    assert_eq!(only(&out, a1)[0]["requestId"], "s2");
    // Without peerMetadata there is no fromMetadata.
    let out = w.text(b1, json!({"type":"send","to":"alice","data":2}));
    assert_eq!(
        only(&out, a1),
        vec![json!({"type":"direct","from":"bob","data":2})]
    );
}

#[test]
fn errors_follow_the_documented_precedence() {
    let mut w = World::new(HubConfig::default());
    let mut limited = principal("lim", None);
    limited.token_channels = Some(PatternSet::parse(&["allowed-*"]).expect("glob"));
    limited.permissions = Actions::none()
        .with(Action::Subscribe)
        .with(Action::Presence);
    let l = w.join(limited);
    let table: &[(Value, &str)] = &[
        (
            json!({"type":"subscribe","channel":"","requestId":"r"}),
            "invalid_channel",
        ),
        (
            json!({"type":"subscribe","channel":"a\u{1}","requestId":"r"}),
            "invalid_channel",
        ),
        (
            json!({"type":"subscribe","channel":"rooms/*","requestId":"r"}),
            "invalid_channel",
        ),
        (
            json!({"type":"subscribe","channel":"_Metered/x","requestId":"r"}),
            "channel_reserved",
        ),
        (
            json!({"type":"subscribe","channel":"other","requestId":"r"}),
            "channel_not_authorized",
        ),
        (
            json!({"type":"publish","channel":"allowed-1","data":1,"requestId":"r"}),
            "action_not_permitted",
        ),
        (
            json!({"type":"publish","channel":"_system/x","requestId":"r"}),
            "channel_reserved",
        ),
        (
            json!({"type":"send","to":"","data":1,"requestId":"r"}),
            "invalid_peer_id",
        ),
        (
            json!({"type":"send","to":"bob","data":1,"requestId":"r"}),
            "action_not_permitted",
        ),
        (json!({"type":"hello","requestId":"r"}), "unknown_type"),
    ];
    for (frame, code) in table {
        let out = w.text(l, frame.clone());
        let f = only(&out, l);
        assert_eq!(f.len(), 1, "{frame}");
        assert_eq!(f[0]["type"], "error", "{frame}");
        assert_eq!(f[0]["code"], *code, "{frame}");
        assert_eq!(f[0]["requestId"], "r", "{frame}");
    }
    // The connection is still usable after all those errors: an error frame never closes it.
    let out = w.sub(l, "allowed-1");
    assert_eq!(only(&out, l)[0], json!({"type":"ack","requestId":"s"}));

    let a = w.join(principal("alice", None));
    let out = w.text(
        a,
        json!({"type":"publish","channel":"room","requestId":"r"}),
    );
    assert_eq!(only(&out, a)[0]["code"], "missing_data");
    let out = w.text(a, json!({"type":"send","to":"lim","requestId":"r"}));
    assert_eq!(only(&out, a)[0]["code"], "missing_data");
    let out = w.text(a, json!({"type":"ping","requestId":"pp"}));
    assert_eq!(only(&out, a), vec![json!({"type":"pong","requestId":"pp"})]);
    let out = w.text(a, json!({"type":"ping"}));
    assert_eq!(only(&out, a), vec![json!({"type":"pong"})]);
    let mut out = Vec::new();
    w.hub.handle_text(a, "{not json", w.now, &mut out);
    assert_eq!(only(&out, a)[0]["code"], "malformed_message");
    assert!(only(&out, a)[0].get("requestId").is_none());
    w.hub.handle_binary(a, 10, w.now, &mut out);
    assert_eq!(only(&out, a)[1]["code"], "malformed_message");
}

#[test]
fn close_on_unauthorized_subscribe_switch() {
    let mut w = World::new(HubConfig {
        close_on_unauthorized_subscribe: true,
        ..HubConfig::default()
    });
    let mut p = principal("p", None);
    p.token_channels = Some(PatternSet::parse(&["mine"]).expect("glob"));
    let c = w.join(p);
    let out = w.sub(c, "theirs");
    assert_eq!(
        out,
        vec![Output::Close {
            conn: c,
            code: CloseCode::ChannelNotAuthorized
        }]
    );
    assert!(!w.hub.is_connected(c));
}

#[test]
fn presence_action_gates_presence_frames_only() {
    let mut w = World::new(HubConfig::default());
    let mut quiet = principal("quiet", None);
    quiet.permissions = Actions::all().intersect(Actions::none().with(Action::Subscribe));
    let q = w.join(quiet);
    let out = w.sub(q, "room");
    assert_eq!(only(&out, q), vec![json!({"type":"ack","requestId":"s"})]);
    let a = w.join(principal("alice", None));
    let out = w.sub(a, "room");
    assert!(only(&out, q).is_empty(), "no diffs without presence");
    assert_eq!(
        only(&out, a)[1]["joined"],
        json!([{"peerId":"quiet"}]),
        "but the quiet peer is still announced"
    );
}

#[test]
fn channel_limit_per_connection() {
    let mut w = World::new(HubConfig {
        max_channels_per_connection: 3,
        ..HubConfig::default()
    });
    let c = w.join(principal("p", None));
    for i in 0..3 {
        let out = w.sub(c, &format!("c{i}"));
        assert_eq!(only(&out, c)[0]["type"], "ack");
    }
    let out = w.sub(c, "c3");
    assert_eq!(only(&out, c)[0]["code"], "channel_limit_exceeded");
    let out = w.sub(c, "c1");
    assert_eq!(
        only(&out, c)[0]["type"],
        "ack",
        "re-subscribing a held channel is fine"
    );
}

#[test]
fn rate_limit_closes_with_4011_and_size_limit_with_1009() {
    let mut w = World::new(HubConfig {
        rate_per_sec: 100.0,
        rate_burst: 200.0,
        ..HubConfig::default()
    });
    let watcher = w.join(principal("watcher", None));
    w.sub(watcher, "room");
    let c = w.join(principal("fast", None));
    w.sub(c, "room"); // one token
    let mut closed_at = None;
    for i in 0..300 {
        let out = w.text(c, json!({"type":"ping"}));
        if out.iter().any(|o| {
            matches!(
                o,
                Output::Close {
                    code: CloseCode::OverMessageRate,
                    ..
                }
            )
        }) {
            closed_at = Some(i);
            assert_eq!(
                only(&out, watcher),
                vec![
                    json!({"type":"presence","channel":"room","joined":[],"left":[{"peerId":"fast"}]})
                ]
            );
            break;
        }
    }
    assert_eq!(
        closed_at,
        Some(199),
        "burst of 200 frames, the 201st closes"
    );
    assert!(
        w.text(c, json!({"type":"ping"})).is_empty(),
        "closed connection is ignored"
    );

    let big = w.join(principal("big", None));
    let mut out = Vec::new();
    let text = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(65_536));
    w.hub.handle_text(big, &text, w.now, &mut out);
    assert_eq!(
        out,
        vec![Output::Close {
            conn: big,
            code: CloseCode::MessageTooBig
        }]
    );
    // Tokens come back with time.
    let c2 = w.join(principal("steady", None));
    for i in 0..1000u64 {
        w.now += Duration::from_millis(10);
        let out = w.text(c2, json!({"type":"ping"}));
        assert_eq!(out.len(), 1, "frame {i} at 100/s must pass");
    }
}

#[test]
fn concurrent_cap_kick_and_shutdown() {
    let mut w = World::new(HubConfig {
        max_connections: 2,
        ..HubConfig::default()
    });
    let a = w.join(principal("alice", None));
    let b = w.join(principal("bob", None));
    let mut out = Vec::new();
    assert_eq!(
        w.hub.connect(principal("carol", None), w.now, 0, &mut out),
        Err(CloseCode::OverConcurrentLimit)
    );
    assert!(out.is_empty());
    w.sub(a, "room");
    w.sub(b, "room");
    let mut out = Vec::new();
    assert_eq!(w.hub.kick("", "bob", &mut out), 1);
    assert_eq!(
        frames(&out),
        vec![
            (b, json!({"close":4020})),
            (
                a,
                json!({"type":"presence","channel":"room","joined":[],"left":[{"peerId":"bob"}]})
            ),
        ]
    );
    assert_eq!(w.hub.kick("", "bob", &mut out), 0);
    let mut out = Vec::new();
    w.hub.going_away(2500, &mut out);
    w.hub.close_all(CloseCode::GoingAway, &mut out);
    assert_eq!(
        frames(&out),
        vec![
            (a, json!({"type":"going_away","retryAfterMs":2500})),
            (a, json!({"close":1001})),
        ]
    );
    assert_eq!(w.hub.connection_count(), 0);
    assert_eq!(w.hub.channel_count(), 0);
    assert_eq!(w.hub.stats().peak_connections, 2);
}

#[test]
fn a_draining_server_sends_no_presence_left() {
    let mut w = World::new(HubConfig::default());
    let a = w.join(principal("alice", None));
    let b = w.join(principal("bob", None));
    let c = w.join(principal("carol", None));
    for x in [a, b, c] {
        w.sub(x, "room");
    }
    let mut out = Vec::new();
    w.hub.going_away(1000, &mut out);
    // bob reconnects early (as told), then the server closes the rest
    w.hub.disconnect(b, &mut out);
    w.hub.close_all(CloseCode::GoingAway, &mut out);
    let presence: Vec<_> = frames(&out)
        .into_iter()
        .filter(|(_, f)| f["type"] == "presence")
        .collect();
    assert!(presence.is_empty(), "{presence:?}");
    assert_eq!(w.hub.connection_count(), 0);
}

#[test]
fn token_expiry_closes_with_4002() {
    let mut w = World::new(HubConfig::default());
    let a = w.join(principal("alice", None));
    let mut out = Vec::new();
    w.hub.token_expired(a, &mut out);
    assert_eq!(
        out,
        vec![Output::Close {
            conn: a,
            code: CloseCode::TokenExpired
        }]
    );
}

#[test]
fn quota_soft_drops_publish_and_send() {
    let mut w = World::new(HubConfig {
        message_quota: Some(2),
        ..HubConfig::default()
    });
    let a = w.join(principal("alice", None));
    let b = w.join(principal("bob", None));
    w.sub(b, "room");
    let out = w.text(
        a,
        json!({"type":"publish","channel":"room","data":1,"requestId":"1"}),
    );
    assert_eq!(only(&out, b).len(), 1);
    let out = w.text(
        a,
        json!({"type":"send","to":"bob","data":1,"requestId":"2"}),
    );
    assert_eq!(only(&out, b).len(), 1);
    let out = w.text(
        a,
        json!({"type":"publish","channel":"room","data":1,"requestId":"3"}),
    );
    assert_eq!(only(&out, a)[0]["code"], "over_message_quota");
    assert!(only(&out, b).is_empty());
    assert!(w.hub.is_connected(a), "the connection stays");
    assert_eq!(w.hub.stats().messages_used, 3);
}

#[test]
fn usage_and_the_message_quota_are_counted_per_app() {
    let mut w = World::new(HubConfig {
        message_quota: Some(2),
        ..HubConfig::default()
    });
    let in_app = |peer: &str, app: &str| Principal {
        app: app.into(),
        ..principal(peer, None)
    };
    let a1 = w.join(in_app("alice", "team-a"));
    let a2 = w.join(in_app("amir", "team-a"));
    let b1 = w.join(in_app("bea", "team-b"));
    w.sub(a2, "room");
    // Team A spends its whole quota…
    for i in 0..3 {
        w.text(
            a1,
            json!({"type":"publish","channel":"room","data":i,"requestId":format!("{i}")}),
        );
    }
    // …which must not touch team B's.
    w.sub(b1, "room");
    let b2 = w.join(in_app("ben", "team-b"));
    w.sub(b2, "room");
    let out = w.text(
        b1,
        json!({"type":"publish","channel":"room","data":1,"requestId":"b"}),
    );
    assert_eq!(only(&out, b2).len(), 1, "team B still has its quota");
    let a = w.hub.app_usage("team-a");
    assert_eq!(
        (a.connections, a.peak_connections, a.messages_used),
        (2, 2, 3)
    );
    let b = w.hub.app_usage("team-b");
    assert_eq!(
        (b.connections, b.peak_connections, b.messages_used),
        (2, 2, 1)
    );
    w.hub.disconnect(b2, &mut w.out);
    let b = w.hub.app_usage("team-b");
    assert_eq!((b.connections, b.peak_connections), (1, 2));
    assert_eq!(w.hub.app_usage("nobody").messages_used, 0);
    // The server-wide totals are still kept for the metrics.
    assert_eq!(w.hub.stats().messages_used, 4);
}

#[test]
fn newcomer_diff_reaches_members_before_its_first_direct() {
    let mut w = World::new(HubConfig::default());
    let old = w.join(principal("old", None));
    w.sub(old, "room");
    let new = w.join(principal("new", None));
    let mut all = w.sub(new, "room");
    all.extend(w.text(new, json!({"type":"send","to":"old","data":{"sdp":"x"}})));
    let seen: Vec<String> = only(&all, old)
        .iter()
        .map(|f| f["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(seen, ["presence", "direct"]);
}

#[test]
fn send_requires_shared_channel_switch() {
    let mut w = World::new(HubConfig {
        send_requires_shared_channel: true,
        ..HubConfig::default()
    });
    let a = w.join(principal("alice", None));
    let b = w.join(principal("bob", None));
    let out = w.text(
        a,
        json!({"type":"send","to":"bob","data":1,"requestId":"r"}),
    );
    assert_eq!(only(&out, a)[0]["code"], "peer_not_found");
    w.sub(a, "room");
    w.sub(b, "room");
    let out = w.text(
        a,
        json!({"type":"send","to":"bob","data":1,"requestId":"r"}),
    );
    assert_eq!(only(&out, b).len(), 1);
}

#[test]
fn rest_publish_reaches_everybody_with_its_own_sender() {
    let mut w = World::new(HubConfig::default());
    let a = w.join(principal("alice", None));
    w.text(
        a,
        json!({"type":"subscribe","channel":"room","includeSenderMetadata":true}),
    );
    let data = serde_json::value::RawValue::from_string("\"hello\"".into()).expect("raw");
    let meta = json!({"kind":"bot"});
    let mut out = Vec::new();
    assert_eq!(
        w.hub
            .rest_publish("", "room", "system", Some(&meta), &data, &mut out),
        Ok(1)
    );
    assert_eq!(
        only(&out, a),
        vec![
            json!({"type":"message","channel":"room","from":"system","data":"hello","fromMetadata":{"kind":"bot"}})
        ]
    );
    assert_eq!(
        w.hub
            .rest_publish("", "empty", "system", None, &data, &mut out),
        Ok(0)
    );
}

#[test]
fn a_connection_admitted_while_draining_still_hears_going_away() {
    let mut w = World::new(HubConfig::default());
    let a = w.join(principal("a", None));
    w.hub.going_away(2_500, &mut w.out);
    assert_eq!(only(&w.out, a)[0]["type"], "going_away");
    w.out.clear();
    // A socket that passed the upgrade just before the drain began is admitted afterwards.
    let late = w
        .hub
        .connect(principal("late", None), w.now, 1_700_000_000, &mut w.out)
        .expect("admitted");
    let got = only(&w.out, late);
    assert_eq!(got[0]["type"], "welcome");
    assert_eq!(
        got.get(1).map(|f| f["type"].clone()),
        Some(json!("going_away"))
    );
    assert_eq!(got[1]["retryAfterMs"], 2_500);
}

#[test]
fn a_big_channel_snapshot_is_capped_counts_the_rest_and_is_built_once_per_change() {
    let cfg = HubConfig {
        max_snapshot_bytes: 100_000,
        rate_per_sec: 0.0,
        ..HubConfig::default()
    };
    let mut w = World::new(cfg);
    let meta = json!({"name": "x".repeat(4_000)});
    for i in 0..300 {
        let c = w.join(principal(&format!("p{i:03}"), Some(meta.clone())));
        w.sub(c, "big");
    }
    let newcomer = w.join(principal("zz-newcomer", None));
    let out = w.sub(newcomer, "big");
    let snap = only(&out, newcomer)
        .into_iter()
        .find(|f| f["type"] == "presence")
        .expect("snapshot");
    let text_len = out
        .iter()
        .find_map(|o| match o {
            Output::Frame { conn, text, .. }
                if *conn == newcomer && text.contains("\"joined\"") =>
            {
                Some(text.len())
            }
            _ => None,
        })
        .expect("snapshot text");
    assert!(text_len <= 100_000, "snapshot of {text_len} bytes");
    let listed = snap["joined"].as_array().expect("joined").len();
    assert!(listed > 10 && listed < 300, "{listed} listed");
    assert_eq!(
        snap["omitted"].as_u64(),
        Some(300 - listed as u64),
        "peers beyond the cap are counted"
    );
    assert_eq!(snap["joined"][0]["peerId"], "p000", "in peer-id order");
    // Re-subscribing in a loop reuses the serialised member list.
    let built = w.hub.stats().snapshots_built;
    for _ in 0..50 {
        w.sub(newcomer, "big");
    }
    assert_eq!(w.hub.stats().snapshots_built, built, "no re-serialisation");
    // A membership change invalidates it.
    let extra = w.join(principal("extra", None));
    w.sub(extra, "big");
    w.sub(newcomer, "big");
    assert!(w.hub.stats().snapshots_built > built);
}

#[test]
fn an_uncapped_snapshot_is_the_plain_wire_frame() {
    let mut w = World::new(HubConfig::default());
    let a = w.join(principal("a", Some(json!({"n": 1}))));
    w.sub(a, "room");
    let b = w.join(principal("b", None));
    let out = w.sub(b, "room");
    let text = out
        .iter()
        .find_map(|o| match o {
            Output::Frame { conn, text, .. } if *conn == b && text.contains("presence") => {
                Some(text.to_string())
            }
            _ => None,
        })
        .expect("snapshot");
    assert_eq!(
        text,
        r#"{"type":"presence","channel":"room","joined":[{"peerId":"a","metadata":{"n":1}}],"left":[]}"#
    );
}
