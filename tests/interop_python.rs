//! Interop with the official Python SDK (`metered-realtime[webrtc]`, aiortc) from Rust: a Rust
//! MeteredPeer and `tests/interop/python/python_peer.py` join one room on the real server.
//! The venv is prepared outside the network namespace by `tests/interop/python/setup.sh`
//! (`scripts/test` does it); this test runs inside the loopback-only namespace.

mod common;

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::process::Command;

use common::interop::{
    JsonLinesPeer, rust_peer, rust_side_drop_keeps_the_remote_peer, text_containing, wait_connected,
};
use common::*;
use meshcall::peer::{DataKind, PeerConnectionState};

fn python() -> String {
    let venv = std::env::var("MESHCALL_PYVENV_WEBRTC").unwrap_or_else(|_| {
        format!(
            "{}/.cache/meshcall/pyvenv-webrtc",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into())
        )
    });
    format!("{venv}/bin/python")
}

fn python_peer(origin: &str, token: &str, room: &str, name: &str) -> JsonLinesPeer {
    let mut cmd = Command::new(python());
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/python/python_peer.py"
    ))
    .args([
        "--server", origin, "--token", token, "--room", room, "--name", name, "--video",
    ]);
    JsonLinesPeer::spawn(cmd, "python", "run tests/interop/python/setup.sh first")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_official_python_sdk_interoperate() {
    let server = start(config()).await;
    let origin = server.ws_origin();
    // "python" < "rust": the Python side is polite and opens the data channel (lower id opens).
    let rust = rust_peer(&origin, token("rust", "Rust"));
    let mut joined = rust.on_peer_joined();
    let mut data = rust.on_data();
    rust.join("interop", true).await.expect("rust joins");

    let t0 = Instant::now();
    let mut py = python_peer(&origin, &token("python", "Python"), "interop", "Python");

    // Presence both ways, with names.
    let remote = tokio::time::timeout(Duration::from_secs(60), joined.next_item())
        .await
        .expect("python appears")
        .expect("peer");
    assert_eq!(remote.id(), "python");
    // Subscribe at once: the stream can arrive before the other process reports anything.
    let mut streams = remote.on_stream_added();
    let mut channels = remote.on_data_channel();
    py.expect("python joined", 30, |v| v["event"] == "joined")
        .await;
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

    // The Python camera arrives with its metadata, and RTP flows.
    // Prefer a stream that is already live (it may have arrived before we subscribed).
    let live = remote.current_streams().into_iter().next();
    let stream = async {
        match live {
            Some(s) => Some(s),
            None => streams.next_item().await,
        }
    };
    let stream = tokio::time::timeout(Duration::from_secs(20), stream)
        .await
        .expect("python's camera stream arrives")
        .expect("stream");
    assert_eq!(
        stream.metadata.as_ref().and_then(|m| m.get("role")),
        Some(&json!("camera")),
        "{stream:?}"
    );
    let mut rtp = stream.tracks[0].take_rtp().expect("rtp receiver");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), rtp.recv())
            .await
            .expect("RTP")
            .is_some()
    );
    tokio::spawn(async move { while rtp.recv().await.is_some() {} });

    wait_connected(&remote, 20).await;
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
    let dc = common::interop::meshcall_channel(&remote, &mut channels, 20).await;
    assert_eq!(dc.label(), "meshcall");
    let mut dc_events = dc.events();
    text_containing(&mut dc_events, "p2p_seq", 10).await;
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
    let dc2 = common::interop::meshcall_channel(&back, &mut channels, 30).await;
    let mut ev2 = dc2.events();
    text_containing(&mut ev2, "p2p_seq", 15).await;
    assert_eq!(back.state(), PeerConnectionState::Connected);

    // Then the Rust side's own WebSocket drops: same RemotePeer, fresh pc, data again.
    rust_side_drop_keeps_the_remote_peer(&rust, &mut py, "python", None, "p2p_seq").await;

    py.command(json!({"cmd":"leave"})).await;
    py.expect("python left", 10, |v| v["event"] == "left").await;
    rust.close().await;
}
