//! The `meshcall join --headless` contract (README): two real processes join one room on the
//! real server, mint their own tokens (`--secret`), find each other, exchange data through the
//! server and over a data channel, print one JSON object per line, and leave cleanly after
//! `--duration`.

mod common;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use common::*;

async fn run_peer(origin: String, name: &'static str, id: &'static str) -> (Vec<Value>, bool) {
    run_peer_with(origin, name, id, 6, &[]).await
}

/// A headless peer in `cli-room` for `secs` seconds with `extra` flags; its JSON lines and
/// whether it exited 0.
async fn run_peer_with(
    origin: String,
    name: &'static str,
    id: &'static str,
    secs: u64,
    extra: &[&str],
) -> (Vec<Value>, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshcall"))
        .args([
            "join",
            "--headless",
            "--loopback-only",
            "--server",
            &origin,
            "--room",
            "cli-room",
        ])
        .args([
            "--name",
            name,
            "--peer-id",
            id,
            "--duration",
            &secs.to_string(),
        ])
        .args(extra)
        .args([
            "--video",
            "synthetic",
            "--audio",
            "synthetic",
            "--size",
            "320x240",
        ])
        .args(["--stats-every", "1"])
        .arg("--secret")
        .arg(format!("{KID}={SECRET}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("meshcall join starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut out = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
    {
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["event"].is_string(), "every line has an event: {line}");
        out.push(v);
    }
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after --duration")
        .expect("status");
    (out, status.success())
}

fn has(lines: &[Value], pred: impl Fn(&Value) -> bool) -> bool {
    lines.iter().any(pred)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_headless_peers_find_each_other_and_exchange_data() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let (ann, bob) = tokio::join!(
        run_peer(origin.clone(), "Ann", "ann"),
        run_peer(origin.clone(), "Bob", "bob")
    );
    for ((lines, ok), (me, other, other_name)) in
        [(ann, ("ann", "bob", "Bob")), (bob, ("bob", "ann", "Ann"))]
    {
        let dump = || {
            lines
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(ok, "{me} exited with an error:\n{}", dump());
        assert!(
            has(&lines, |v| v["event"] == "joined" && v["peer"] == me),
            "{me}: joined\n{}",
            dump()
        );
        assert!(
            has(&lines, |v| v["event"] == "peer-joined"
                && v["peer"] == other
                && v["metadata"]["username"] == other_name),
            "{me}: peer-joined with the other's name\n{}",
            dump()
        );
        assert!(
            has(&lines, |v| v["event"] == "state-change"
                && v["peer"] == other
                && v["to"] == "connected"),
            "{me}: connected to {other}\n{}",
            dump()
        );
        assert!(
            has(&lines, |v| v["event"] == "dc-open" && v["peer"] == other),
            "{me}: data channel\n{}",
            dump()
        );
        assert!(
            has(&lines, |v| v["event"] == "data"
                && v["via"] == "server"
                && v["peer"] == other
                && v["data"]["seq"].is_u64()),
            "{me}: server-routed data from {other}\n{}",
            dump()
        );
        assert!(
            has(&lines, |v| v["event"] == "data"
                && v["via"] == "p2p"
                && v["peer"] == other
                && v["data"]["p2p_seq"].is_u64()),
            "{me}: p2p data from {other}\n{}",
            dump()
        );
        assert!(
            has(&lines, |v| v["event"] == "stream-added"
                && v["peer"] == other
                && v["metadata"]["role"] == "camera"
                && v["kinds"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|x| x == "video"))),
            "{me}: the other's camera stream\n{}",
            dump()
        );
        // Decoded video: a first frame with a measured capture→decode latency (both
        // processes share the machine's monotonic clock only through the stamp, so the
        // latency is reported only when plausible; the frame itself must be there).
        let first = lines
            .iter()
            .find(|v| v["event"] == "first-frame" && v["peer"] == other)
            .unwrap_or_else(|| panic!("{me}: first decoded frame from {other}\n{}", dump()));
        assert!(
            first["since_join_ms"]
                .as_f64()
                .is_some_and(|t| t > 0.0 && t < 5000.0)
        );
        assert!(
            has(&lines, |v| v["event"] == "stats"
                && v["video_in"].as_array().is_some_and(|a| a.iter().any(
                    |s| s["peer"] == other
                        && s["frames_decoded"].as_u64().is_some_and(|n| n > 30)
                        && s["width"] == 320
                ))),
            "{me}: stats show decoded 320x240 video from {other}\n{}",
            dump()
        );
        assert!(
            has(&lines, |v| v["event"] == "left"),
            "{me}: left cleanly\n{}",
            dump()
        );
    }
}

#[tokio::test]
async fn a_refused_token_is_a_fatal_error_with_a_non_zero_exit() {
    let server = start(config()).await;
    let out = Command::new(env!("CARGO_BIN_EXE_meshcall"))
        .args([
            "join",
            "--headless",
            "--loopback-only",
            "--server",
            &server.ws_origin(),
        ])
        .args(["--room", "r", "--name", "Eve", "--token", "not-a-jwt"])
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let line = lines
        .iter()
        .find(|v| v["event"] == "error")
        .cloned()
        .unwrap_or_else(|| panic!("an error line in {stdout}"));
    assert_eq!(line["fatal"], true);
    assert!(
        line["message"].as_str().unwrap_or("").contains("4001"),
        "{line}"
    );
}

/// `--simulate blackhole-media:PEER@T/LEN`: the action is announced, both sides see their
/// connection go `reconnecting` (ICE notices after 5 s of silence) and come back `connected`
/// through the ICE-restart ladder once the blackhole ends; both exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blackhole_flag_takes_one_connection_down_and_it_recovers() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    let a = tokio::spawn(run_peer_with(
        origin.clone(),
        "Ana",
        "bh-cli-a",
        16,
        &["--simulate", "blackhole-media:bh-cli-b@3s/4s"],
    ));
    let b = tokio::spawn(run_peer_with(origin, "Bo", "bh-cli-b", 16, &[]));
    let ((a_lines, a_ok), (b_lines, b_ok)) = (a.await.expect("a"), b.await.expect("b"));
    assert!(a_ok && b_ok, "both exit 0");
    assert!(
        has(&a_lines, |v| v["event"] == "simulate"
            && v["action"] == "blackhole-media"
            && v["peer"] == "bh-cli-b"
            && v["seconds"] == 4.0),
        "the action is announced: {a_lines:#?}"
    );
    let sim_at = a_lines
        .iter()
        .find(|v| v["event"] == "simulate")
        .and_then(|v| v["t_ms"].as_f64())
        .expect("simulate t_ms");
    for (lines, other) in [(&a_lines, "bh-cli-b"), (&b_lines, "bh-cli-a")] {
        let state_at = |to: &str| {
            lines
                .iter()
                .filter(|v| v["event"] == "state-change" && v["peer"] == other && v["to"] == to)
                .filter_map(|v| v["t_ms"].as_f64())
                .collect::<Vec<f64>>()
        };
        let down = state_at("reconnecting");
        let up = state_at("connected");
        let down_at = down
            .first()
            .copied()
            .unwrap_or_else(|| panic!("{other} never went reconnecting: {lines:#?}"));
        assert!(
            up.iter().any(|t| *t > down_at),
            "{other} came back connected after going down at {down_at} ms: {lines:#?}"
        );
        println!(
            "{other}: down at {down_at:.0} ms (blackhole at {sim_at:.0} ms), up again at {:?}",
            up.iter().find(|t| **t > down_at)
        );
    }
}
