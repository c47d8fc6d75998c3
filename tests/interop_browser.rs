//! Interop with the official browser SDK (`@metered-ca/realtime` 1.2.0) in Debian's headless
//! Chromium, driven by `tests/interop/js/browser-peer.mjs` (playwright-core). A Rust MeteredPeer
//! with data channels only and a browser with a fake camera join one room on the real server.
//! `tests/interop/js/setup.sh` installs Chromium and the npm packages outside the namespace
//! (`scripts/test` does); this test runs inside the loopback-only namespace.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use common::*;
use meshcall::client::{ClientOptions, Credential};
use meshcall::peer::{
    DataKind, DcEvent, DcMessage, MeteredPeer, PeerConnectionState, PeerSettings, RemotePeer,
};

struct Proc {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Proc {
    async fn spawn(origin: &str, token: &str, room: &str, name: &str) -> Proc {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/js/browser-peer.mjs"
        );
        let mut cmd = Command::new("node");
        cmd.arg(script)
            .args([
                "--server", origin, "--token", token, "--room", room, "--name", name,
            ])
            .args(["--camera", "--dc", "joined"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start node (run tests/interop/js/setup.sh first): {e}")
        });
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).await.is_err()
                {
                    break;
                }
            }
        });
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line matching `pred` (earlier matching lines count too).
    async fn expect(&mut self, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(v)) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Ok(None) => panic!(
                    "browser peer exited while waiting for {what}; saw: {:?}",
                    self.seen
                ),
                Err(_) => panic!(
                    "timed out waiting for {what}; browser said: {:#?}",
                    self.seen
                ),
            }
        }
    }

    async fn command(&mut self, v: Value) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(format!("{v}\n").as_bytes()).await;
            let _ = stdin.flush().await;
        }
    }
}

async fn wait_connected(p: &RemotePeer, secs: u64) {
    let mut states = p.state_changes();
    tokio::time::timeout(Duration::from_secs(secs), async {
        while p.state() != PeerConnectionState::Connected {
            let _ = states.next().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} not connected within {secs} s", p.id()));
}

async fn p2p_message(
    dcs: &mut meshcall::peer::EventStream<meshcall::peer::DataChannel>,
    secs: u64,
) -> meshcall::peer::DataChannel {
    let dc = tokio::time::timeout(Duration::from_secs(secs), dcs.next_item())
        .await
        .expect("the browser's data channel")
        .expect("dc");
    assert_eq!(dc.label(), "meshcall");
    dc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_official_js_sdk_in_chromium_interoperate() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    // "browser" < "rust": the browser is polite; it opens "meshcall" at peer-joined.
    let rust_token = token("rust", "Rust");
    let rust = MeteredPeer::new(
        ClientOptions::new(
            origin.clone(),
            Credential::token_provider(move || {
                let t = rust_token.clone();
                async move { Ok::<String, String>(t) }
            }),
        ),
        PeerSettings::loopback_only(),
    )
    .expect("options");
    let mut joined = rust.on_peer_joined();
    let mut data = rust.on_data();
    rust.join("browser-interop", true)
        .await
        .expect("rust joins");

    let mut browser = Proc::spawn(
        &origin,
        &token("browser", "Browser"),
        "browser-interop",
        "Browser",
    )
    .await;
    let t_join = Instant::now();
    browser
        .expect("browser joined", 60, |v| v["event"] == "joined")
        .await;

    // Presence both ways with names.
    let remote = tokio::time::timeout(Duration::from_secs(10), joined.next_item())
        .await
        .expect("browser appears")
        .expect("peer");
    assert_eq!(remote.id(), "browser");
    assert_eq!(
        remote.metadata().and_then(|m| m.get("username").cloned()),
        Some(json!("Browser"))
    );
    let pj = browser
        .expect("rust seen by the browser", 10, |v| {
            v["event"] == "peer-joined" && v["peer"] == "rust"
        })
        .await;
    assert_eq!(pj["name"], "Rust");
    let mut streams = remote.on_stream_added();
    let mut dcs = remote.on_data_channel();

    wait_connected(&remote, 30).await;
    let connected_ms = t_join.elapsed().as_secs_f64() * 1000.0;
    let bc = browser
        .expect("browser connected", 30, |v| {
            v["event"] == "state-change" && v["peer"] == "rust" && v["to"] == "connected"
        })
        .await;
    println!(
        "Rust↔Chromium: browser join → Rust connected {connected_ms:.0} ms; browser's own sinceJoinMs {}",
        bc["sinceJoinMs"]
    );

    // The browser's camera reaches Rust as its own stream with role metadata, and RTP flows.
    let stream = tokio::time::timeout(Duration::from_secs(20), streams.next_item())
        .await
        .expect("the browser's camera stream")
        .expect("stream");
    assert_eq!(
        stream.metadata.as_ref().and_then(|m| m.get("role")),
        Some(&json!("camera")),
        "{stream:?}"
    );
    let video = stream
        .tracks
        .iter()
        .find(|t| t.kind == "video")
        .expect("a video track");
    let mut rtp = video.take_rtp().expect("rtp");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), rtp.recv())
            .await
            .expect("RTP within 10 s")
            .is_some()
    );
    tokio::spawn(async move { while rtp.recv().await.is_some() {} });

    // P2P both ways on the browser's channel.
    let dc = p2p_message(&mut dcs, 20).await;
    dc.wait_open().await.expect("open");
    let mut dc_events = dc.events();
    browser
        .command(json!({"cmd":"dc-send","peer":"rust","data":{"from_browser":1}}))
        .await;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(DcEvent::Message(DcMessage::Text(t))) = dc_events.next_item().await
                && t.contains("from_browser")
            {
                return;
            }
        }
    })
    .await
    .expect("p2p data from the browser");
    dc.send_text(json!({"from_rust": 1}).to_string())
        .await
        .expect("p2p send");
    browser
        .expect("p2p data at the browser", 10, |v| {
            v["event"] == "dc-message" && v["data"]["from_rust"] == 1
        })
        .await;

    // Server-routed both ways.
    browser
        .command(json!({"cmd":"send","data":{"hello":"from browser"}}))
        .await;
    let d = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(d) = data.next_item().await
                && d.from == "browser"
                && d.kind == DataKind::Broadcast
            {
                return d;
            }
        }
    })
    .await
    .expect("the browser's broadcast");
    assert_eq!(d.data, json!({"hello":"from browser"}));
    rust.send_to("browser", json!({"direct":"hi"}))
        .await
        .expect("direct");
    browser
        .expect("direct at the browser", 10, |v| {
            v["event"] == "data" && v["kind"] == "direct" && v["data"]["direct"] == "hi"
        })
        .await;

    // The browser's WebSocket drops: it reconciles (new pc), the Rust data-channel-only peer sees
    // it leave and come back, negotiates a fresh connection and gets P2P data again.
    let mut left = rust.on_peer_left();
    browser.command(json!({"cmd":"reconnect"})).await;
    let gone = tokio::time::timeout(Duration::from_secs(10), left.next_item())
        .await
        .expect("left")
        .expect("peer");
    assert_eq!(gone.id(), "browser");
    let back = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(p) = rust.remote_peer("browser")
                && p != gone
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the browser re-joins");
    let mut dcs = back.on_data_channel();
    wait_connected(&back, 30).await;
    let dc2 = p2p_message(&mut dcs, 30).await;
    dc2.wait_open().await.expect("open again");
    let mut ev2 = dc2.events();
    browser
        .command(json!({"cmd":"dc-send","peer":"rust","data":{"after_reconnect":true}}))
        .await;
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(DcEvent::Message(DcMessage::Text(t))) = ev2.next_item().await
                && t.contains("after_reconnect")
            {
                return;
            }
        }
    })
    .await
    .expect("p2p data after the browser's reconnect");

    // Chromium: the Rust side's own WebSocket drops. Its RemotePeer for the other side survives
    // (same object, fresh pc, `connection_reset`); the other side sees Rust leave and re-join
    // and opens a new data channel, which arrives on that same RemotePeer.
    let before = rust.remote_peer("browser").expect("known before the drop");
    let pc_before = before.pc().expect("pc");
    let mut resets = before.on_connection_reset();
    let mut dcs3 = before.on_data_channel();
    rust.simulate_signalling_drop();
    tokio::time::timeout(Duration::from_secs(20), resets.next_item())
        .await
        .expect("reconcile swapped the connection")
        .expect("reset");
    let after = rust.remote_peer("browser").expect("survivor");
    assert!(after == before, "the same RemotePeer object after the drop");
    assert!(
        !std::sync::Arc::ptr_eq(&pc_before, &after.pc().expect("pc")),
        "a fresh PeerConnection"
    );
    let dc3 = tokio::time::timeout(Duration::from_secs(30), dcs3.next_item())
        .await
        .expect("a data channel on the survivor after Rust's reconnect")
        .expect("dc");
    assert_eq!(dc3.label(), "meshcall");
    dc3.wait_open().await.expect("open");
    let probe = json!({"cmd":"dc-send","peer":"rust","data":{"after_rust_drop":true}});
    let _ = tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ev3 = dc3.events();
    browser.command(probe).await;
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(DcEvent::Message(DcMessage::Text(t))) = ev3.next_item().await
                && t.contains("after_rust_drop")
            {
                return;
            }
        }
    })
    .await
    .expect("p2p data on the survivor after Rust's reconnect");
    let mut st = after.state_changes();
    tokio::time::timeout(Duration::from_secs(15), async {
        while after.state() != PeerConnectionState::Connected {
            let _ = st.next().await;
        }
    })
    .await
    .expect("survivor connected again");

    browser.command(json!({"cmd":"leave"})).await;
    browser
        .expect("browser left", 15, |v| v["event"] == "left")
        .await;
    rust.close().await;
}

/// Chromium↔Chromium through our server (the JS SDK against itself), as a baseline for the
/// join→connected numbers and a check of the server against the official browser SDK.
#[test]
fn two_browsers_through_meshcall() {
    let out = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/js/two_browsers.sh"
        ))
        .env("MESHCALL", env!("CARGO_BIN_EXE_meshcall"))
        .output()
        .expect("two_browsers.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("TIMING") || l.starts_with("KNOWN") || l.contains("passed,"))
    {
        println!("{line}");
    }
    let fails: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert!(
        out.status.success(),
        "two_browsers.sh failed: {:?}\n{}\n{}",
        out.status.code(),
        fails.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
}
