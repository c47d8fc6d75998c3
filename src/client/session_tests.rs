//! The session's timers and frame handling, driven with virtual time: no socket, no sleeping.

use super::*;
use serde_json::json;

const ACK: Duration = Duration::from_secs(15);
const IDLE: Duration = Duration::from_secs(60);
const RETRY: Duration = Duration::from_secs(2);

fn config() -> SessionConfig {
    SessionConfig {
        ack_timeout: ACK,
        inactivity_timeout: IDLE,
        resubscribe_retry_interval: RETRY,
    }
}

/// Everything the session asks for, in order.
fn drain(s: &mut Session<u32>) -> Vec<Output<u32>> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

fn sent(outputs: &[Output<u32>]) -> Vec<Value> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Send(t) => Some(serde_json::from_str(t).expect("json")),
            _ => None,
        })
        .collect()
}

fn tracked(channels: &'static [&'static str]) -> impl Fn(&str) -> Option<bool> {
    move |c| channels.contains(&c).then_some(false)
}

#[test]
fn outbound_frames_are_compact_and_ordered() {
    let data = json!({"k": [1, "two"]});
    let table: Vec<(OutFrame<'_>, &str)> = vec![
        (
            OutFrame::Subscribe {
                channel: "room",
                request_id: "r1",
                include_sender_metadata: false,
            },
            r#"{"type":"subscribe","channel":"room","requestId":"r1"}"#,
        ),
        (
            OutFrame::Subscribe {
                channel: "room",
                request_id: "r1",
                include_sender_metadata: true,
            },
            r#"{"type":"subscribe","channel":"room","requestId":"r1","includeSenderMetadata":true}"#,
        ),
        (
            OutFrame::Unsubscribe {
                channel: "room",
                request_id: "r2",
            },
            r#"{"type":"unsubscribe","channel":"room","requestId":"r2"}"#,
        ),
        (
            OutFrame::Publish {
                channel: "room",
                data: &data,
                request_id: "r3",
            },
            r#"{"type":"publish","channel":"room","data":{"k":[1,"two"]},"requestId":"r3"}"#,
        ),
        (
            OutFrame::Send {
                to: "bob",
                data: &data,
                request_id: "r4",
            },
            r#"{"type":"send","to":"bob","data":{"k":[1,"two"]},"requestId":"r4"}"#,
        ),
        (OutFrame::Ping, r#"{"type":"ping"}"#),
    ];
    for (frame, want) in table {
        assert_eq!(frame.to_text().expect("serialises"), want);
    }
    // Every outbound frame is one the server's own strict parser accepts.
    let text = OutFrame::Publish {
        channel: "room",
        data: &data,
        request_id: &new_request_id(),
    }
    .to_text()
    .expect("serialises");
    assert!(crate::protocol::parse_client_frame(&text).is_ok());
}

#[test]
fn request_ids_are_uuid_v4() {
    let a = new_request_id();
    let b = new_request_id();
    assert_ne!(a, b);
    let parsed = uuid::Uuid::parse_str(&a).expect("uuid");
    assert_eq!(parsed.get_version_num(), 4);
}

#[test]
fn a_request_is_sent_then_answered_by_its_ack_and_a_late_ack_is_ignored() {
    let t0 = Instant::now();
    let mut s: Session<u32> = Session::new(config(), t0, vec![]);
    s.handle_request("r1".into(), "{\"x\":1}".into(), 7, t0);
    let out = drain(&mut s);
    assert!(matches!(&out[..], [Output::Send(t)] if t == "{\"x\":1}"));
    s.handle_frame(
        r#"{"type":"ack","requestId":"r1"}"#,
        t0 + Duration::from_millis(5),
    );
    let out = drain(&mut s);
    assert!(matches!(&out[..], [Output::Reply(7, Ok(()))]), "{out:?}");
    s.handle_frame(
        r#"{"type":"ack","requestId":"r1"}"#,
        t0 + Duration::from_millis(6),
    );
    assert!(drain(&mut s).is_empty());
}

#[test]
fn a_request_without_an_answer_times_out_at_the_ack_deadline() {
    let t0 = Instant::now();
    let mut s: Session<u32> = Session::new(config(), t0, vec![]);
    s.handle_request("r1".into(), "{}".into(), 1, t0);
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0 + ACK));
    s.handle_timeout(t0 + ACK - Duration::from_millis(1), tracked(&[]));
    assert!(drain(&mut s).is_empty(), "nothing due before the deadline");
    s.handle_timeout(t0 + ACK, tracked(&[]));
    let out = drain(&mut s);
    assert!(
        matches!(&out[..], [Output::Reply(1, Err(ClientError::AckTimeout))]),
        "{out:?}"
    );
}

#[test]
fn a_server_error_answers_its_request_and_an_unsolicited_one_becomes_an_event() {
    let t0 = Instant::now();
    let mut s: Session<u32> = Session::new(config(), t0, vec![]);
    s.handle_request("r1".into(), "{}".into(), 3, t0);
    drain(&mut s);
    s.handle_frame(
        r#"{"type":"error","code":"not_subscribed","requestId":"r1","message":"no"}"#,
        t0,
    );
    let out = drain(&mut s);
    assert!(
        matches!(&out[..], [Output::Reply(3, Err(ClientError::Server { code, .. }))] if code == "not_subscribed"),
        "{out:?}"
    );
    s.handle_frame(
        r#"{"type":"error","code":"rate_limited","message":"slow"}"#,
        t0,
    );
    let out = drain(&mut s);
    assert!(
        matches!(&out[..], [Output::Event(ClientEvent::ServerError { code, .. })] if code == "rate_limited"),
        "{out:?}"
    );
    // An old server's answer to our keep-alive ping is not worth an event.
    s.handle_frame(
        r#"{"type":"error","code":"unknown_type","message":"?"}"#,
        t0,
    );
    assert!(drain(&mut s).is_empty());
}

#[test]
fn the_watchdog_closes_4000_after_the_inactivity_timeout_with_pings_before_it() {
    let t0 = Instant::now();
    let mut s: Session<u32> = Session::new(config(), t0, vec![]);
    let mut now = t0;
    let mut pings = 0;
    let closed_at = loop {
        let next = s.poll_timeout().expect("timed");
        assert!(next >= now, "timeouts never go back in time");
        now = next;
        s.handle_timeout(now, tracked(&[]));
        let out = drain(&mut s);
        pings += sent(&out).iter().filter(|f| f["type"] == "ping").count();
        if let Some(Output::Close { code, reason }) =
            out.iter().find(|o| matches!(o, Output::Close { .. }))
        {
            assert_eq!((*code, reason.as_str()), (INACTIVITY_CLOSE, "inactivity"));
            break now;
        }
        assert!(now - t0 < IDLE * 2, "the watchdog never fired");
    };
    assert_eq!(closed_at, t0 + IDLE);
    // A ping every third of the timeout: at 20 s and 40 s.
    assert_eq!(pings, 2);
    assert_eq!(s.poll_timeout(), None, "nothing after the close");
}

#[test]
fn any_inbound_frame_postpones_the_watchdog_and_the_ping() {
    let t0 = Instant::now();
    let mut s: Session<u32> = Session::new(config(), t0, vec![]);
    let later = t0 + Duration::from_secs(50);
    s.handle_frame(r#"{"type":"pong"}"#, later);
    s.handle_timeout(t0 + IDLE, tracked(&[]));
    let out = drain(&mut s);
    assert!(
        !out.iter().any(|o| matches!(o, Output::Close { .. })),
        "{out:?}"
    );
    assert_eq!(s.poll_timeout(), Some(later + IDLE / 3));
    // A ping or binary frame counts as life too.
    s.handle_liveness(later + Duration::from_secs(10));
    assert_eq!(
        s.poll_timeout(),
        Some(later + Duration::from_secs(10) + IDLE / 3)
    );
}

#[test]
fn while_the_app_is_not_reading_silence_is_not_held_against_the_server() {
    let t0 = Instant::now();
    let mut s: Session<u32> = Session::new(config(), t0, vec![]);
    s.set_reading(false, t0 + Duration::from_secs(1));
    assert_eq!(s.poll_timeout(), None, "no ping or watchdog while paused");
    s.handle_timeout(t0 + IDLE * 3, tracked(&[]));
    assert!(drain(&mut s).is_empty());
    let back = t0 + IDLE * 3;
    s.set_reading(true, back);
    assert_eq!(s.poll_timeout(), Some(back + IDLE / 3));
    s.handle_timeout(back + IDLE - Duration::from_millis(1), tracked(&[]));
    assert!(
        !drain(&mut s)
            .iter()
            .any(|o| matches!(o, Output::Close { .. }))
    );
}

#[test]
fn a_zero_inactivity_timeout_disables_ping_and_watchdog() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.inactivity_timeout = Duration::ZERO;
    let mut s: Session<u32> = Session::new(cfg, t0, vec![]);
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t0 + Duration::from_secs(3600), tracked(&[]));
    assert!(drain(&mut s).is_empty());
}

#[test]
fn replay_resubscribes_tracked_channels_in_order_and_skips_those_left_meanwhile() {
    let t0 = Instant::now();
    let mut s: Session<u32> = Session::new(config(), t0, vec!["a".into(), "b".into(), "c".into()]);
    assert_eq!(s.poll_timeout(), Some(t0), "replay is due at once");
    s.handle_timeout(t0, |c| match c {
        "a" => Some(true),
        "c" => Some(false),
        _ => None,
    });
    let frames = sent(&drain(&mut s));
    let channels: Vec<&str> = frames
        .iter()
        .map(|f| f["channel"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(channels, ["a", "c"]);
    assert_eq!(frames[0]["includeSenderMetadata"], true);
    assert!(frames[1].get("includeSenderMetadata").is_none());
    // Acked replays produce nothing for the application.
    for f in &frames {
        let id = f["requestId"].as_str().unwrap_or("");
        s.handle_frame(&format!(r#"{{"type":"ack","requestId":"{id}"}}"#), t0);
    }
    assert!(drain(&mut s).is_empty());
}

#[test]
fn a_refused_replay_is_retried_three_times_then_left_for_the_next_reconnect() {
    let t0 = Instant::now();
    let mut s: Session<u32> = Session::new(config(), t0, vec!["room".into()]);
    let mut sent_at = Vec::new();
    for _ in 0..20 {
        let Some(now) = s.poll_timeout() else { break };
        // The first keep-alive ping is due at a third of the inactivity timeout; every retry
        // comes well before it.
        if now >= t0 + IDLE / 3 {
            break;
        }
        s.handle_timeout(now, tracked(&["room"]));
        for f in sent(&drain(&mut s))
            .iter()
            .filter(|f| f["type"] == "subscribe")
        {
            sent_at.push(now - t0);
            let id = f["requestId"].as_str().unwrap_or("");
            s.handle_frame(
                &format!(
                    r#"{{"type":"error","code":"internal","requestId":"{id}","message":"x"}}"#
                ),
                now,
            );
            assert!(
                drain(&mut s).is_empty(),
                "a replay failure is not the app's event"
            );
        }
    }
    let want: Vec<Duration> = (0..=RESUBSCRIBE_RETRIES).map(|i| RETRY * i).collect();
    assert_eq!(sent_at, want);
}

#[test]
fn an_unanswered_replay_is_retried_after_its_ack_deadline() {
    let t0 = Instant::now();
    let mut s: Session<u32> = Session::new(config(), t0, vec!["room".into()]);
    s.handle_timeout(t0, tracked(&["room"]));
    assert_eq!(sent(&drain(&mut s)).len(), 1);
    assert_eq!(s.poll_timeout(), Some(t0 + ACK));
    s.handle_timeout(t0 + ACK, tracked(&["room"]));
    assert!(drain(&mut s).is_empty(), "the expiry itself sends nothing");
    assert_eq!(s.poll_timeout(), Some(t0 + ACK + RETRY));
    s.handle_timeout(t0 + ACK + RETRY, tracked(&["room"]));
    let frames = sent(&drain(&mut s));
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["type"], "subscribe");
}

#[test]
fn frames_become_events_in_order_and_going_away_raises_the_backoff_floor_first() {
    let t0 = Instant::now();
    let mut s: Session<u32> = Session::new(config(), t0, vec![]);
    s.handle_frame(
        r#"{"type":"presence","channel":"room","joined":[{"peerId":"bob","metadata":{"n":1}}],"left":[]}"#,
        t0,
    );
    s.handle_frame(
        r#"{"type":"message","channel":"room","from":"bob","data":1}"#,
        t0,
    );
    s.handle_frame(r#"{"type":"direct","from":"bob","data":{"sdp":"x"}}"#, t0);
    s.handle_frame("not json", t0);
    s.handle_frame(r#"{"type":"going_away","retryAfterMs":1500}"#, t0);
    let out = drain(&mut s);
    assert!(
        matches!(&out[0], Output::Event(ClientEvent::Presence { joined, .. }) if joined[0].peer_id == "bob")
    );
    assert!(matches!(&out[1], Output::Event(ClientEvent::Message { from, .. }) if from == "bob"));
    assert!(matches!(&out[2], Output::Event(ClientEvent::Direct { .. })));
    assert!(matches!(&out[3], Output::RaiseBackoffFloor(d) if *d == Duration::from_millis(1500)));
    assert!(matches!(
        &out[4],
        Output::Event(ClientEvent::GoingAway {
            retry_after_ms: 1500
        })
    ));
    assert_eq!(out.len(), 5, "the malformed frame was dropped: {out:?}");
}

#[test]
fn finishing_answers_every_waiting_caller_by_how_the_connection_ended() {
    let t0 = Instant::now();
    for (by_app, want_closed) in [(true, true), (false, false)] {
        let mut s: Session<u32> = Session::new(config(), t0, vec!["room".into()]);
        s.handle_request("r1".into(), "{}".into(), 1, t0);
        s.handle_request("r2".into(), "{}".into(), 2, t0);
        drain(&mut s);
        s.finish(by_app);
        let out = drain(&mut s);
        let mut answered: Vec<u32> = out
            .iter()
            .map(|o| match o {
                Output::Reply(r, Err(ClientError::Closed)) if want_closed => *r,
                Output::Reply(r, Err(ClientError::Disconnected)) if !want_closed => *r,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        answered.sort();
        assert_eq!(answered, [1, 2]);
        assert_eq!(s.poll_timeout(), None);
        // A request after the end is refused, not sent.
        s.handle_request("r3".into(), "{}".into(), 3, t0);
        assert!(matches!(
            &drain(&mut s)[..],
            [Output::Reply(3, Err(ClientError::NotConnected))]
        ));
    }
}

#[test]
fn a_request_id_clash_is_refused_rather_than_crossing_replies() {
    let t0 = Instant::now();
    let mut s: Session<u32> = Session::new(config(), t0, vec![]);
    s.handle_request("same".into(), "{}".into(), 1, t0);
    s.handle_request("same".into(), "{}".into(), 2, t0);
    let out = drain(&mut s);
    assert!(matches!(&out[0], Output::Send(_)));
    assert!(matches!(
        &out[1],
        Output::Reply(2, Err(ClientError::NotConnected))
    ));
    assert_eq!(out.len(), 2);
}
