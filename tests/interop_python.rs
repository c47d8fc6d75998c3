//! Interop with the official Python SDK (`metered-realtime[webrtc]`, aiortc) from Rust: a Rust
//! MeteredPeer and `tests/interop/python/python_peer.py` join one room on the real server.
//! The venv is prepared outside the network namespace by `tests/interop/python/setup.sh`
//! (`scripts/test` does it); this test runs inside the loopback-only namespace.

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
    DataKind, DcEvent, DcMessage, MeteredPeer, PeerConnectionState, PeerSettings,
};

fn python() -> String {
    let venv = std::env::var("MESHCALL_PYVENV_WEBRTC").unwrap_or_else(|_| {
        format!(
            "{}/.cache/meshcall/pyvenv-webrtc",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into())
        )
    });
    format!("{venv}/bin/python")
}

struct PyPeer {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl PyPeer {
    async fn spawn(origin: &str, token: &str, room: &str, name: &str, video: bool) -> PyPeer {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/python/python_peer.py"
        );
        let mut cmd = Command::new(python());
        cmd.arg(script)
            .args([
                "--server", origin, "--token", token, "--room", room, "--name", name,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if video {
            cmd.arg("--video");
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} (run tests/interop/python/setup.sh first): {e}",
                python()
            )
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
        PyPeer {
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
                    "python peer exited while waiting for {what}; saw: {:?}",
                    self.seen
                ),
                Err(_) => panic!(
                    "timed out waiting for {what}; python said: {:#?}",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_official_python_sdk_interoperate() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    // "python" < "rust": the Python side is polite and opens the data channel (lower id opens).
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
    rust.join("interop", true).await.expect("rust joins");

    let t0 = Instant::now();
    let mut py = PyPeer::spawn(
        &origin,
        &token("python", "Python"),
        "interop",
        "Python",
        true,
    )
    .await;
    py.expect("python joined", 30, |v| v["event"] == "joined")
        .await;

    // Presence both ways, with names.
    let remote = tokio::time::timeout(Duration::from_secs(10), joined.next_item())
        .await
        .expect("python appears")
        .expect("peer");
    assert_eq!(remote.id(), "python");
    assert_eq!(
        remote.metadata().and_then(|m| m.get("username").cloned()),
        Some(json!("Python"))
    );
    let pj = py
        .expect("rust seen by python", 10, |v| {
            v["event"] == "peer-joined" && v["peer"] == "rust"
        })
        .await;
    assert_eq!(pj["metadata"]["username"], "Rust");

    let mut streams = remote.on_stream_added();
    let mut channels = remote.on_data_channel();

    // The Python camera arrives with its metadata, and RTP flows.
    let stream = tokio::time::timeout(Duration::from_secs(20), streams.next_item())
        .await
        .expect("python's camera stream arrives")
        .expect("stream");
    assert_eq!(
        stream.metadata.as_ref().and_then(|m| m.get("role")),
        Some(&json!("camera")),
        "{stream:?}"
    );
    let mut rtp = stream.tracks[0].take_rtp().expect("rtp receiver");
    let first = tokio::time::timeout(Duration::from_secs(10), rtp.recv())
        .await
        .expect("RTP within 10 s");
    assert!(first.is_some());
    tokio::spawn(async move { while rtp.recv().await.is_some() {} });

    // Connected, measured from the Python peer's start.
    let mut states = remote.state_changes();
    tokio::time::timeout(Duration::from_secs(20), async {
        while remote.state() != PeerConnectionState::Connected {
            let _ = states.next().await;
        }
    })
    .await
    .expect("rust↔python connected");
    let pc = py
        .expect("python connected", 20, |v| {
            v["event"] == "state-change" && v["peer"] == "rust" && v["to"] == "connected"
        })
        .await;
    println!(
        "Rust↔Python: python start → connected {:.0} ms; python peer-joined → connected {} ms",
        t0.elapsed().as_secs_f64() * 1000.0,
        pc["since_peer_joined_ms"]
    );

    // P2P: python opens "meshcall" and sends {"p2p_seq":n}; we answer on it.
    let dc = tokio::time::timeout(Duration::from_secs(20), channels.next_item())
        .await
        .expect("python's data channel")
        .expect("dc");
    assert_eq!(dc.label(), "meshcall");
    let mut dc_events = dc.events();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(DcEvent::Message(DcMessage::Text(t))) = dc_events.next_item().await
                && t.contains("p2p_seq")
            {
                return;
            }
        }
    })
    .await
    .expect("p2p data from python");
    dc.wait_open().await.expect("open");
    dc.send_text(json!({"from_rust": 1}).to_string())
        .await
        .expect("p2p send");
    py.expect("p2p data at python", 10, |v| {
        v["event"] == "data" && v["via"] == "p2p" && v["data"]["from_rust"] == 1
    })
    .await;

    // Server-routed both ways.
    let d = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(d) = data.next_item().await
                && d.from == "python"
                && d.kind == DataKind::Broadcast
            {
                return d;
            }
        }
    })
    .await
    .expect("python's broadcast");
    assert_eq!(
        d.from_metadata.and_then(|m| m.get("username").cloned()),
        Some(json!("Python"))
    );
    rust.send(json!({"hello":"python"}))
        .await
        .expect("broadcast");
    py.expect("broadcast at python", 10, |v| {
        v["event"] == "data" && v["via"] == "server" && v["data"]["hello"] == "python"
    })
    .await;
    rust.send_to("python", json!({"direct":"hi"}))
        .await
        .expect("direct");
    py.expect("direct at python", 10, |v| {
        v["event"] == "data" && v["data"]["direct"] == "hi"
    })
    .await;

    // Python's WebSocket drops and comes back: the Rust peer (data channels only on its side)
    // sees it leave and re-join, negotiates a fresh connection and gets P2P data again.
    let mut left = rust.on_peer_left();
    py.command(json!({"cmd":"reconnect"})).await;
    let gone = tokio::time::timeout(Duration::from_secs(10), left.next_item())
        .await
        .expect("left")
        .expect("peer");
    assert_eq!(gone.id(), "python");
    let back = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(p) = rust.remote_peer("python")
                && p != gone
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("python re-joins");
    let mut channels = back.on_data_channel();
    let dc2 = tokio::time::timeout(Duration::from_secs(30), channels.next_item())
        .await
        .expect("a new data channel after the reconnect")
        .expect("dc");
    let mut ev2 = dc2.events();
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(DcEvent::Message(DcMessage::Text(t))) = ev2.next_item().await
                && t.contains("p2p_seq")
            {
                return;
            }
        }
    })
    .await
    .expect("p2p data after python's reconnect");
    assert_eq!(back.state(), PeerConnectionState::Connected);

    // Python: the Rust side's own WebSocket drops. Its RemotePeer for the other side survives
    // (same object, fresh pc, `connection_reset`); the other side sees Rust leave and re-join
    // and opens a new data channel, which arrives on that same RemotePeer.
    let before = rust.remote_peer("python").expect("known before the drop");
    let pc_before = before.pc().expect("pc");
    let mut resets = before.on_connection_reset();
    let mut dcs3 = before.on_data_channel();
    rust.simulate_signalling_drop();
    tokio::time::timeout(Duration::from_secs(20), resets.next_item())
        .await
        .expect("reconcile swapped the connection")
        .expect("reset");
    let after = rust.remote_peer("python").expect("survivor");
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

    let mut ev3 = dc3.events();
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(DcEvent::Message(DcMessage::Text(t))) = ev3.next_item().await
                && t.contains("p2p_seq")
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

    py.command(json!({"cmd":"leave"})).await;
    py.expect("python left", 10, |v| v["event"] == "left").await;
    rust.close().await;
}
