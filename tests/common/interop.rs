//! Helpers shared by the interop tests: an official-SDK peer running as a child process that
//! speaks JSON lines (stdout events, stdin commands), and the phases both interop tests run.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use meshcall::client::{ClientOptions, Credential};
use meshcall::peer::{
    DcEvent, DcMessage, MeteredPeer, PeerConnectionState, PeerSettings, RemotePeer,
};

/// A peer process (browser driver or Python SDK script) and everything it printed so far.
pub struct JsonLinesPeer {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    what: &'static str,
}

impl JsonLinesPeer {
    /// Starts `cmd` with piped stdin/stdout; `what` names it in failure messages.
    pub fn spawn(mut cmd: Command, what: &'static str, setup_hint: &str) -> JsonLinesPeer {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {what} peer ({setup_hint}): {e}"));
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
        JsonLinesPeer {
            child,
            lines: rx,
            seen: Vec::new(),
            what,
        }
    }

    /// Waits for a line matching `pred` (lines seen earlier count too).
    pub async fn expect(&mut self, desc: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
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
                    "{} peer exited while waiting for {desc}; saw: {:?}",
                    self.what, self.seen
                ),
                Err(_) => panic!(
                    "timed out waiting for {desc}; the {} peer said: {:#?}",
                    self.what, self.seen
                ),
            }
        }
    }

    /// Every line received so far, without waiting (takes in what has arrived since the last
    /// call); for harnesses that watch something else (the screen) while the peer runs.
    pub fn poll(&mut self) -> &[Value] {
        while let Ok(v) = self.lines.try_recv() {
            self.seen.push(v);
        }
        &self.seen
    }

    /// The child's process id (None once it has been reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits up to `secs` for the process to exit; None if it is still running.
    pub async fn wait_exit(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(Duration::from_secs(secs), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// One JSON command on stdin.
    pub async fn command(&mut self, v: Value) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(format!("{v}\n").as_bytes()).await;
            let _ = stdin.flush().await;
        }
    }
}

/// A Rust MeteredPeer (ICE on 127.0.0.1) with a fixed token.
pub fn rust_peer(origin: &str, token: String) -> MeteredPeer {
    MeteredPeer::new(
        ClientOptions::new(
            origin,
            Credential::token_provider(move || {
                let t = token.clone();
                async move { Ok::<String, String>(t) }
            }),
        ),
        PeerSettings::loopback_only(),
    )
    .expect("options")
}

pub async fn wait_connected(p: &RemotePeer, secs: u64) {
    let mut states = p.state_changes();
    tokio::time::timeout(Duration::from_secs(secs), async {
        while p.state() != PeerConnectionState::Connected {
            let _ = states.next().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} not connected within {secs} s", p.id()));
}

/// Waits for a text message containing `needle` on a channel's event stream.
pub async fn text_containing(
    events: &mut meshcall::peer::EventStream<DcEvent>,
    needle: &str,
    secs: u64,
) {
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            if let Some(DcEvent::Message(DcMessage::Text(t))) = events.next_item().await
                && t.contains(needle)
            {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no p2p message containing {needle} within {secs} s"));
}

/// The Rust side's own WebSocket drops. Its RemotePeer for `other` survives (same object, fresh
/// pc, `connection_reset`); the other side sees Rust leave and re-join and opens a new data
/// channel "meshcall", which arrives on that same RemotePeer and carries a message containing
/// `needle` (after `probe` is sent to the other peer, if given).
pub async fn rust_side_drop_keeps_the_remote_peer(
    rust: &MeteredPeer,
    other: &mut JsonLinesPeer,
    other_id: &str,
    probe: Option<Value>,
    needle: &str,
) {
    let before = rust.remote_peer(other_id).expect("known before the drop");
    let pc_before = before.pc().expect("pc");
    let mut resets = before.on_connection_reset();
    let mut dcs = before.on_data_channel();
    rust.simulate_signalling_drop();
    tokio::time::timeout(Duration::from_secs(20), resets.next_item())
        .await
        .expect("reconcile swapped the connection")
        .expect("reset");
    let after = rust.remote_peer(other_id).expect("survivor");
    assert!(after == before, "the same RemotePeer object after the drop");
    assert!(
        !Arc::ptr_eq(&pc_before, &after.pc().expect("pc")),
        "a fresh PeerConnection"
    );
    let dc = tokio::time::timeout(Duration::from_secs(30), dcs.next_item())
        .await
        .expect("a data channel on the survivor after Rust's reconnect")
        .expect("dc");
    assert_eq!(dc.label(), "meshcall");
    let mut events = dc.events();
    if let Some(p) = probe {
        dc.wait_open().await.expect("open");
        other.command(p).await;
    }
    text_containing(&mut events, needle, 15).await;
    wait_connected(&after, 15).await;
}

/// The data channel "meshcall" the other side opens on `remote`: one already open on the current
/// connection, or the next one announced on `dcs` (subscribe before it can arrive).
pub async fn meshcall_channel(
    remote: &RemotePeer,
    dcs: &mut meshcall::peer::EventStream<meshcall::peer::DataChannel>,
    secs: u64,
) -> meshcall::peer::DataChannel {
    let live = remote
        .current_data_channels()
        .into_iter()
        .find(|d| d.label() == "meshcall");
    let dc = tokio::time::timeout(Duration::from_secs(secs), async {
        match live {
            Some(d) => Some(d),
            None => loop {
                match dcs.next_item().await {
                    Some(d) if d.label() == "meshcall" => break Some(d),
                    Some(_) => continue,
                    None => break None,
                }
            },
        }
    })
    .await
    .expect("the other side's data channel \"meshcall\"")
    .expect("dc");
    assert_eq!(dc.label(), "meshcall");
    dc
}

/// A Chromium peer (official JS SDK, fake camera) driven by `tests/interop/js/browser-peer.mjs`.
pub fn browser_peer(origin: &str, token: &str, room: &str, name: &str) -> JsonLinesPeer {
    let mut cmd = Command::new("node");
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/js/browser-peer.mjs"
    ))
    .args([
        "--server", origin, "--token", token, "--room", room, "--name", name,
    ])
    .args(["--camera", "--dc", "joined"]);
    JsonLinesPeer::spawn(cmd, "browser", "run tests/interop/js/setup.sh first")
}

/// A Rust peer ("rust") sending the 640x480@30 synthetic pattern as its camera (role
/// metadata set), not yet joined. Keep the sender alive for as long as the video should flow.
pub async fn rust_peer_with_camera(
    origin: &str,
) -> (MeteredPeer, meshcall::media::send::VideoSender) {
    use meshcall::media::send::{TrackSpec, VideoSendSettings, VideoSender};
    use meshcall::media::synthetic::SyntheticVideoSource;
    let rust = rust_peer(origin, super::token("rust", "Rust"));
    let camera = VideoSender::start(
        Box::new(SyntheticVideoSource::new(640, 480, 30.0).expect("source")),
        TrackSpec::unique("rust-video", "rust-camera"),
        VideoSendSettings::default(),
    )
    .expect("video sender");
    rust.add_media(camera.media(), Some(serde_json::json!({"role": "camera"})))
        .await
        .expect("add video");
    (rust, camera)
}
