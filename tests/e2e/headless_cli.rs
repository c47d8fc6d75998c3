//! The `meshcall join --headless` contract (README): two real processes join one room on the
//! real server, mint their own tokens (`--secret`), find each other, exchange data through the
//! server and over a data channel, print one JSON object per line, and leave cleanly after
//! `--duration`.

use crate::common;

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
        .args(["--video", "synthetic", "--size", "320x240"])
        .args(if extra.contains(&"--audio") {
            &[][..]
        } else {
            &["--audio", "synthetic"][..]
        })
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

/// The stats lines' audio fields: what each peer sends (level after processing, which stages
/// are on) and the decoded level of every remote audio stream. Ann sends espeak-ng speech from a
/// WAV file with processing forced on; Bob sends the synthetic tone (processing off by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_lines_report_sent_and_received_audio_levels() {
    let dir = tempfile::tempdir().expect("dir");
    let wav = dir.path().join("speech.wav");
    let rendered = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-w"])
        .arg(&wav)
        .arg("Good morning everyone, can you all hear me? Let us start with the numbers.")
        .status()
        .expect("espeak-ng must be installed (scripts/setup-system installs it)");
    assert!(rendered.success());
    let file_arg = format!("file:{}", wav.display());
    let server = start(config()).await;
    let origin = server.ws_origin();
    let ann_flags = ["--audio", file_arg.as_str(), "--audio-processing", "on"];
    let (ann, bob) = tokio::join!(
        run_peer_with(origin.clone(), "Ann", "ann", 7, &ann_flags),
        run_peer_with(origin.clone(), "Bob", "bob", 7, &[])
    );
    let dump = |lines: &[Value]| {
        lines
            .iter()
            .filter(|v| v["event"] == "stats")
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(ann.1 && bob.1, "both exit cleanly");
    assert!(
        has(&ann.0, |v| v["event"] == "stats"
            && v["audio_out"]["processing"] == "aec+ns+agc"
            && v["audio_out"]["level_dbfs"]
                .as_f64()
                .is_some_and(|l| l > -45.0)),
        "Ann sends processed speech\n{}",
        dump(&ann.0)
    );
    assert!(
        has(&bob.0, |v| v["event"] == "stats"
            && v["audio_out"]["processing"] == "off"
            && v["audio_out"]["level_dbfs"]
                .as_f64()
                .is_some_and(|l| l > -30.0)),
        "Bob sends the tone unprocessed\n{}",
        dump(&bob.0)
    );
    for (lines, other) in [(&bob.0, "ann"), (&ann.0, "bob")] {
        assert!(
            has(lines, |v| v["event"] == "stats"
                && v["audio_in"].as_array().is_some_and(|a| a.iter().any(
                    |s| s["peer"] == other && s["level_dbfs"].as_f64().is_some_and(|l| l > -50.0)
                ))),
            "{other}'s audio is heard\n{}",
            dump(lines)
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
        // The recovery was an ICE restart on the same connection, whose data channel lives on:
        // no second "meshcall" channel may be opened beside it. Each channel counts `p2p_seq`
        // up once a second, so two channels at once show as the sequence jumping back again
        // and again; one channel (the old one, or a new one if the old died) at most once.
        let seqs: Vec<i64> = lines
            .iter()
            .filter(|v| v["event"] == "data" && v["via"] == "p2p" && v["peer"] == other)
            .filter_map(|v| v["data"]["p2p_seq"].as_i64())
            .collect();
        let back_jumps = seqs.windows(2).filter(|w| w[1] <= w[0]).count();
        println!("{other}: p2p_seq {seqs:?}");
        assert!(
            back_jumps <= 1,
            "two data channels to {other} at once after the recovery: {seqs:?}"
        );
    }
}

/// Secrets given through the environment must not be echoed by `--help` (clap prints the
/// current value of every `env` argument unless told not to).
#[test]
fn help_never_prints_secrets_from_the_environment() {
    let secret = "sk_live=hunter2-0123456789abcdef";
    for (sub, var) in [
        ("serve", "MESHCALL_SECRET"),
        ("serve", "MESHCALL_PUBLISHABLE_KEY"),
        ("token", "MESHCALL_TOKEN_SECRET"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshcall"))
            .args([sub, "--help"])
            .env(var, secret)
            .output()
            .expect("meshcall runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{sub} --help: {text}");
        assert!(text.contains(var), "{sub} --help names {var}: {text}");
        assert!(
            !text.contains("hunter2"),
            "{sub} --help must not print {var}'s value: {text}"
        );
    }
}

/// Even at `--log trace` (every dependency's logs), neither the signing secret nor a client's
/// token (it travels in the WebSocket URL) appears in the server's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_never_show_the_secret_or_a_token() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let secret = format!("{KID}={SECRET}");
    let out = tempfile::NamedTempFile::new().expect("temp");
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_meshcall"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--secret", &secret, "--log", "trace"])
        .args(["--publishable-key", "pk_trace_hunter2_0123"])
        .stdout(out.reopen().expect("file"))
        .stderr(out.reopen().expect("file"))
        .spawn()
        .expect("serve starts");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut connected = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let (_ws, welcome) = connect(addr, "tracer", "Tracer").await;
            assert_eq!(welcome["type"], "welcome", "{welcome}");
            // A publishable key travels in the query too (`?key=`), and is the whole credential.
            let mut ws = connect_raw(addr, "key=pk_trace_hunter2_0123").await;
            assert_eq!(recv(&mut ws).await["type"], "welcome");
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = server.kill();
    let _ = server.wait();
    let log = std::fs::read_to_string(out.path()).expect("log");
    assert!(connected, "the server came up: {log}");
    assert!(
        log.len() > 1000,
        "trace logging was on: {} bytes",
        log.len()
    );
    assert!(!log.contains(SECRET), "the secret is in the log");
    assert!(!log.contains("token=ey"), "a token is in the log");
    assert!(
        !log.contains("hunter2"),
        "the publishable key is in the log"
    );
}

/// The headless peer at `--log trace`: tungstenite's client handshake logs the request line,
/// which carries the token in its query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_trace_level_does_not_log_its_token() {
    let server = start(config()).await;
    let tok = token("tracer", "Tracer");
    let out = Command::new(env!("CARGO_BIN_EXE_meshcall"))
        .args(["join", "--headless", "--server", &server.ws_origin()])
        .args(["--token", &tok, "--name", "Tracer", "--room", "trace"])
        .args(["--video", "none", "--audio", "none", "--duration", "1"])
        .args(["--log", "trace"])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("join runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("\"joined\""), "it joined: {stdout}");
    assert!(
        stderr.len() > 1000,
        "trace logging was on: {} bytes",
        stderr.len()
    );
    let signature = tok.rsplit('.').next().expect("jwt");
    assert!(
        !stderr.contains(signature) && !stdout.contains(signature),
        "the token is in the output"
    );
}

/// The picture source in use disappears mid-call (here a shared X window that is closed,
/// standing in for an unplugged camera): with no other camera on the machine the camera turns
/// off, the user is told in words, and the call goes on to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_disappears_turns_off_and_the_user_is_told() {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ConnectionExt as _, CreateWindowAux, WindowClass};
    use x11rb::wrapper::ConnectionExt as _;

    let Some(x) = common::xvfb::Xvfb::start_or_skip(&["1280x720x24"]) else {
        return;
    };
    let (conn, _) = x11rb::connect(Some(&x.display)).expect("connect to Xvfb");
    let screen = &conn.setup().roots[0];
    let win = conn.generate_id().expect("id");
    conn.create_window(
        screen.root_depth,
        win,
        screen.root,
        100,
        100,
        320,
        240,
        0,
        WindowClass::INPUT_OUTPUT,
        screen.root_visual,
        &CreateWindowAux::new().background_pixel(0x00ff00),
    )
    .expect("create window");
    conn.map_window(win).expect("map");
    conn.sync().expect("sync");

    let server = start(config()).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshcall"))
        .args(["join", "--headless", "--loopback-only", "--server"])
        .arg(server.ws_origin())
        .args(["--room", "cam-room", "--name", "Cam", "--peer-id", "cam"])
        .args(["--duration", "8", "--audio", "none", "--stats-every", "1"])
        .arg("--video")
        .arg(format!("screen:window:{win:#x}"))
        .arg("--secret")
        .arg(format!("{KID}={SECRET}"))
        .env("DISPLAY", &x.display)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("meshcall join starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen: Vec<Value> = Vec::new();
    let mut closed = false;
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await
    {
        let v: Value = serde_json::from_str(&line).expect("a JSON line");
        // Once the call runs (capture starts with the call, peers or not), close the window.
        if !closed && v["event"] == "stats" {
            conn.destroy_window(win).expect("destroy");
            conn.sync().expect("sync");
            closed = true;
        }
        seen.push(v);
    }
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after --duration")
        .expect("status");
    let dump = seen
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(closed, "the window closed during the call\n{dump}");
    assert!(status.success(), "the call went on to its end\n{dump}");
    assert!(
        has(&seen, |v| v["event"] == "error"
            && v["fatal"] == false
            && v["message"].as_str().is_some_and(|m| m
                .starts_with("Camera lost (")
                && m.ends_with("No other camera found: camera off."))),
        "the user is told\n{dump}"
    );
    assert!(
        has(&seen, |v| v["event"] == "local_media"
            && v["camera_off"] == true),
        "the camera is reported off\n{dump}"
    );
    assert!(
        has(&seen, |v| v["event"] == "left"),
        "left at the end\n{dump}"
    );
}

/// `--speaker pulse:NAME` plays the other participant's audio on that PulseAudio sink: its
/// monitor, recorded with parec while the call runs, carries the tone at a real level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_speaker_flag_plays_the_call_on_a_pulseaudio_sink() {
    let Some(pulse) = common::pulse::Pulse::start() else {
        eprintln!("SKIPPED: the pulseaudio binary is not installed (apt-get install pulseaudio)");
        return;
    };
    let pulse_server = format!("unix:{}", pulse.socket.display());
    let server = start(config()).await;
    let origin = server.ws_origin();
    let listener = Command::new(env!("CARGO_BIN_EXE_meshcall"))
        .args(["join", "--headless", "--loopback-only", "--server", &origin])
        .args(["--room", "cli-room", "--name", "Lis", "--peer-id", "lis"])
        .args(["--duration", "8", "--video", "none", "--audio", "none"])
        .args(["--speaker", "pulse:meshcall_null"])
        .arg("--secret")
        .arg(format!("{KID}={SECRET}"))
        .env("PULSE_SERVER", &pulse_server)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("meshcall join starts");
    let talker = run_peer_with(origin.clone(), "Tal", "tal", 8, &["--audio", "synthetic"]);
    let record = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let out = Command::new("parec")
            .args(["--device=meshcall_null.monitor", "--raw", "--format=s16le"])
            .args(["--rate=48000", "--channels=1"])
            .env("PULSE_SERVER", &pulse_server)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("parec runs (apt-get install pulseaudio-utils)");
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let mut out = out;
        let _ = out.start_kill();
        out.wait_with_output().await.expect("parec output").stdout
    };
    let ((_, talker_ok), pcm) = tokio::join!(talker, record);
    let mut listener = listener;
    let status = tokio::time::timeout(Duration::from_secs(15), listener.wait())
        .await
        .expect("the listener exits after --duration")
        .expect("status");
    let samples: Vec<f64> = pcm
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    let rms = (samples.iter().map(|x| x * x).sum::<f64>() / samples.len().max(1) as f64).sqrt();
    let dbfs = 20.0 * rms.max(1e-9).log10();
    println!(
        "the sink's monitor: {} samples at {dbfs:.1} dBFS",
        samples.len()
    );
    assert!(talker_ok && status.success(), "both exit cleanly");
    assert!(samples.len() > 24_000, "recorded half a second at least");
    assert!(
        dbfs > -30.0,
        "the tone is played on the sink: {dbfs:.1} dBFS"
    );
}
