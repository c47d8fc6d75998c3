//! `meshcall bench call`: end-to-end media numbers on this machine.
//!
//! 1. join → first decoded remote frame, Rust↔Rust: a sender is in the room sending the 720p30
//!    synthetic pattern; a fresh receiver joins `--runs` times and measures from calling `join()`
//!    to its first decoded picture. With `--browsers`, the same is measured side by side for
//!    Chromium↔Chromium (official JS SDK, fake camera) on the same server.
//! 2. capture → decode latency at 720p30 (p50/p99) from the stamps, same process, same clock.
//! 3. CPU of a 4-party call as one participant sees it (1 encode + 3 decodes at 720p30): this
//!    process is that participant; the three others are `meshcall join --headless --no-receive`
//!    child processes (they encode only). CPU is read from /proc over a window.
//!
//! Everything runs on 127.0.0.1 only; run it inside a loopback-only network namespace so
//! that no traffic can reach another address.
//! It prints numbers and asserts nothing.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::auth::{Actions, KeyRing, MintRequest, PatternSet, Secret, SecretKey, mint};
use crate::client::{ClientOptions, Credential};
use crate::media::receive::VideoReceiver;
use crate::media::send::{TrackSpec, VideoSendSettings, VideoSender};
use crate::media::synthetic::SyntheticVideoSource;
use crate::peer::{MeteredPeer, PeerSettings, RemotePeer};
use crate::server::{Server, ServerConfig};

#[derive(Debug, clap::Args)]
pub struct CallBenchArgs {
    /// join → first frame repetitions.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Seconds of 720p30 for the latency window and the CPU window.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Also measure Chromium↔Chromium join → first frame (needs tests/interop/js/setup.sh).
    #[arg(long)]
    pub browsers: bool,
    /// Skip the 4-party CPU measurement.
    #[arg(long)]
    pub no_cpu: bool,
    /// Instead of the above: decoded frame rate of a 720p30 call under these random UDP loss
    /// percentages (e.g. `--loss 10,20`), each held for `--loss-seconds`, with clean phases in
    /// between. Needs root inside a loopback-only network namespace (nftables).
    #[arg(long, value_delimiter = ',')]
    pub loss: Vec<u32>,
    /// Seconds each loss phase lasts.
    #[arg(long, default_value_t = 15)]
    pub loss_seconds: u64,
}

const KID: &str = "bench";
const SECRET: &str = "bench-secret-0123456789abcdef";

fn key() -> SecretKey {
    SecretKey {
        kid: KID.into(),
        secret: Secret::new(SECRET.as_bytes().to_vec()),
        channel_patterns: PatternSet::any(),
        actions: Actions::all(),
        app: String::new(),
    }
}

fn token(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    mint(
        &key(),
        &MintRequest {
            sub: sub.into(),
            ttl_secs: 3600,
            peer_metadata: Some(json!({ "username": sub })),
            ..MintRequest::default()
        },
        now,
    )
    .map(|(t, _)| t)
    .unwrap_or_default()
}

pub(crate) fn bench_peer(origin: &str, sub: &str) -> Result<MeteredPeer, String> {
    let t = token(sub);
    let cred = Credential::token_provider(move || {
        let t = t.clone();
        async move { Ok::<String, String>(t) }
    });
    MeteredPeer::new(
        ClientOptions::new(origin, cred),
        PeerSettings::loopback_only(),
    )
    .map_err(|e| e.to_string())
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub(crate) async fn first_video(remote: &RemotePeer) -> Option<Arc<crate::peer::RemoteTrack>> {
    let mut tracks = remote.on_track();
    if let Some(t) = remote
        .current_streams()
        .into_iter()
        .flat_map(|s| s.tracks)
        .find(|t| t.kind == "video")
    {
        return Some(t);
    }
    while let Some(t) = tracks.next_item().await {
        if t.track.kind == "video" {
            return Some(t.track);
        }
    }
    None
}

pub(crate) async fn wait_remote(p: &MeteredPeer, id: &str) -> Option<RemotePeer> {
    let mut joined = p.on_peer_joined();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(r) = p.remote_peer(id) {
                return r;
            }
            let _ = joined.next().await;
        }
    })
    .await
    .ok()
}

/// A peer `sub` that joined `room` sending the synthetic pattern at (width, height, fps) as its
/// camera; keep the sender alive while the video should flow.
pub(crate) async fn synthetic_sender(
    origin: &str,
    sub: &str,
    room: &str,
    (width, height, fps): (usize, usize, f32),
) -> Result<(MeteredPeer, VideoSender), String> {
    let sender = bench_peer(origin, sub)?;
    let camera = VideoSender::start(
        Box::new(SyntheticVideoSource::new(width, height, fps).map_err(|e| e.to_string())?),
        TrackSpec::unique(&format!("{sub}-video"), &format!("{sub}-cam")),
        VideoSendSettings::default(),
    )
    .map_err(|e| e.to_string())?;
    sender
        .add_media(camera.media(), Some(json!({"role":"camera"})))
        .await
        .map_err(|e| e.to_string())?;
    sender.join(room, false).await.map_err(|e| e.to_string())?;
    Ok((sender, camera))
}

/// A server on 127.0.0.1 with the bench key; returns it with the key's (kid, secret) for
/// `--secret` on child processes.
pub async fn bench_server() -> Result<(Server, &'static str, &'static str), String> {
    let mut keys = KeyRing::default();
    keys.secret_keys.push(key());
    let server = Server::start(ServerConfig::new(
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        keys,
    ))
    .await
    .map_err(|e| e.to_string())?;
    Ok((server, KID, SECRET))
}

pub async fn run(args: CallBenchArgs) -> Result<std::process::ExitCode, String> {
    if !args.loss.is_empty() {
        return loss_table(&args).await;
    }
    let (server, _, _) = bench_server().await?;
    let origin = server.ws_origin();
    println!("meshcall bench call — server {origin}, 720p30 synthetic pattern, 1.5 Mbit/s");

    // 1 + 2: a sender, fresh receivers.
    let (sender, camera) =
        synthetic_sender(&origin, "sender", "bench-ff", (1280, 720, 30.0)).await?;
    let mut ff = Vec::new();
    let mut latency = Vec::new();
    for run in 0..args.runs {
        let rx_peer = bench_peer(&origin, &format!("receiver-{run}"))?;
        let t0 = Instant::now();
        rx_peer
            .join("bench-ff", false)
            .await
            .map_err(|e| e.to_string())?;
        let Some(remote) = wait_remote(&rx_peer, "sender").await else {
            println!("run {run}: the sender never appeared");
            continue;
        };
        let Ok(Some(track)) =
            tokio::time::timeout(Duration::from_secs(20), first_video(&remote)).await
        else {
            println!("run {run}: no video track");
            continue;
        };
        let rx = VideoReceiver::start(&track).map_err(|e| e.to_string())?;
        let ok = tokio::time::timeout(Duration::from_secs(20), async {
            while rx.frames_decoded() == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .is_ok();
        if ok {
            ff.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        if run + 1 == args.runs {
            // The latency window on the last receiver.
            rx.drain_log();
            tokio::time::sleep(Duration::from_secs(args.seconds)).await;
            for r in rx.drain_log() {
                if let Some(s) = r.stamp {
                    latency.push(r.decoded_us.saturating_sub(s.capture_us) as f64 / 1000.0);
                }
            }
            println!(
                "latency window: {} frames decoded in {} s ({:.1} fps), receiver stats {:?}",
                latency.len(),
                args.seconds,
                latency.len() as f64 / args.seconds as f64,
                rx.stats()
            );
        }
        rx_peer.close().await;
        drop(rx);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ff_p50 = pct(&mut ff.clone(), 0.5);
    println!(
        "join → first decoded frame, Rust↔Rust: p50 {:.0} ms, min {:.0}, max {:.0} ({} runs: {:?})",
        ff_p50,
        pct(&mut ff.clone(), 0.0),
        pct(&mut ff.clone(), 1.0),
        ff.len(),
        ff.iter().map(|x| x.round()).collect::<Vec<_>>()
    );
    println!(
        "capture → decode 720p30: p50 {:.1} ms, p99 {:.1} ms ({} frames)",
        pct(&mut latency.clone(), 0.5),
        pct(&mut latency.clone(), 0.99),
        latency.len()
    );
    sender.close().await;
    drop(camera);

    if args.browsers {
        match browsers_first_frame(&origin, args.runs).await {
            Ok(v) if !v.is_empty() => {
                let p50 = pct(&mut v.clone(), 0.5);
                println!(
                    "join → first decoded frame, Chromium↔Chromium: p50 {:.0} ms ({} runs: {:?}); Rust/Chromium = {:.2}",
                    p50,
                    v.len(),
                    v.iter().map(|x| x.round()).collect::<Vec<_>>(),
                    ff_p50 / p50
                );
            }
            Ok(_) => println!("Chromium↔Chromium: no run produced a first frame"),
            Err(e) => println!("Chromium↔Chromium: skipped ({e})"),
        }
    }

    if !args.no_cpu {
        four_party_cpu(&origin, args.seconds).await?;
    }
    server.shutdown().await;
    Ok(std::process::ExitCode::SUCCESS)
}

/// `--loss`: meshcall↔meshcall at 720p30 through clean and lossy phases.
async fn loss_table(args: &CallBenchArgs) -> Result<std::process::ExitCode, String> {
    use super::loss::{LossRunOptions, describe, run_loss_call};
    let opts = LossRunOptions::standard(&args.loss, args.loss_seconds);
    println!(
        "meshcall bench call --loss: 1280x720@30 synthetic, random UDP loss both ways (nftables), \
         phases {:?}",
        opts.phases
            .iter()
            .map(|p| (p.loss_percent, p.duration.as_secs()))
            .collect::<Vec<_>>()
    );
    let reports = run_loss_call(&opts).await?;
    for r in &reports {
        println!("{}", describe(r));
    }
    let browsers = if args.browsers {
        let (server, _, _) = bench_server().await?;
        let b = browsers_under_loss(&server.ws_origin(), &opts.phases, &opts.table).await;
        server.shutdown().await;
        match b {
            Ok(v) => Some(v),
            Err(e) => {
                println!("Chromium↔Chromium: skipped ({e})");
                None
            }
        }
    } else {
        None
    };
    println!();
    println!(
        "| loss | meshcall 720p30: decoded fps (median, last 10 s) | min fps | longest freeze | back to ≥ 25 fps after | Chromium↔Chromium (fake camera): median fps | min fps |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, r) in reports.iter().enumerate() {
        let (cm, cmin) = browsers
            .as_ref()
            .and_then(|b| b.get(i))
            .map_or(("—".to_string(), "—".to_string()), |(m, n)| {
                (format!("{m:.1}"), n.to_string())
            });
        println!(
            "| {} % | {:.1} | {} | {:.0} ms | {} | {cm} | {cmin} |",
            r.phase.loss_percent,
            r.metrics.median_fps_last10,
            r.metrics.min_fps,
            r.metrics.longest_freeze_ms,
            match r.recovery_ms {
                Some(ms) => format!("{ms:.0} ms"),
                None if r.phase.loss_percent > 0 => "never (in 5 s)".to_string(),
                None => "—".to_string(),
            }
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// One participant (this process) in a 4-party 720p30 call; the other three are child
/// processes that only send.
async fn four_party_cpu(origin: &str, seconds: u64) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children = Vec::new();
    for i in 0..3 {
        let child = Command::new(&exe)
            .args(["join", "--headless", "--loopback-only", "--server", origin])
            .args(["--room", "bench-4", "--name", &format!("other-{i}")])
            .args(["--secret", &format!("{KID}={SECRET}")])
            .args(["--video", "synthetic", "--size", "1280x720", "--no-receive"])
            .args(["--duration", &(seconds + 20).to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| e.to_string())?;
        children.push(child);
    }
    let me = bench_peer(origin, "measured")?;
    let camera = VideoSender::start(
        Box::new(SyntheticVideoSource::new(1280, 720, 30.0).map_err(|e| e.to_string())?),
        TrackSpec::unique("bench-video", "bench-cam"),
        VideoSendSettings::default(),
    )
    .map_err(|e| e.to_string())?;
    me.add_media(camera.media(), None)
        .await
        .map_err(|e| e.to_string())?;
    me.join("bench-4", false).await.map_err(|e| e.to_string())?;
    let mut joined = me.on_peer_joined();
    let mut receivers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pending: Vec<RemotePeer> = me.remote_peers();
    while receivers.len() < 3 && Instant::now() < deadline {
        let r = match pending.pop() {
            Some(r) => r,
            None => match tokio::time::timeout(Duration::from_secs(10), joined.next_item()).await {
                Ok(Some(r)) => r,
                _ => break,
            },
        };
        if let Ok(Some(t)) = tokio::time::timeout(Duration::from_secs(15), first_video(&r)).await {
            receivers.push(VideoReceiver::start(&t).map_err(|e| e.to_string())?);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // warm-up
    let before: Vec<u64> = receivers
        .iter()
        .map(VideoReceiver::frames_decoded)
        .collect();
    let enc_before = camera.stats().frames_encoded;
    let (c0, t0) = (
        super::process_cpu_seconds(std::process::id()).unwrap_or(0.0),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (c1, secs) = (
        super::process_cpu_seconds(std::process::id()).unwrap_or(0.0),
        t0.elapsed().as_secs_f64(),
    );
    let decoded: Vec<f64> = receivers
        .iter()
        .zip(before)
        .map(|(r, b)| (r.frames_decoded() - b) as f64 / secs)
        .collect();
    let encoded = (camera.stats().frames_encoded - enc_before) as f64 / secs;
    println!(
        "4-party call, one participant (1 encode + {} decodes, 720p30): CPU {:.0} % of one core; encode {:.1} fps, decode fps {:?}; RSS {:.0} MiB",
        receivers.len(),
        (c1 - c0) / secs * 100.0,
        encoded,
        decoded
            .iter()
            .map(|d| (d * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        super::process_rss_mib(std::process::id()).unwrap_or(f64::NAN)
    );
    me.close().await;
    for mut c in children {
        let _ = c.kill().await;
    }
    Ok(())
}

/// Chromium↔Chromium join → first frame: browser A (camera) waits in the room; browser B
/// (camera) joins and reports its first decoded frame of A with `sinceJoinMs`.
/// A Chromium peer (official JS SDK, fake camera) in `room`, driven by
/// `tests/interop/js/browser-peer.mjs` (needs `tests/interop/js/setup.sh`).
fn spawn_browser(origin: &str, sub: &str, room: &str) -> Result<tokio::process::Child, String> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/js/browser-peer.mjs"
    );
    if !std::path::Path::new(script).exists() {
        return Err("tests/interop/js/browser-peer.mjs not found".into());
    }
    Command::new("node")
        .arg(script)
        .args(["--server", origin, "--token", &token(sub), "--room", room])
        .args(["--name", sub, "--camera", "--dc", "none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("node: {e}"))
}

async fn browsers_first_frame(origin: &str, runs: usize) -> Result<Vec<f64>, String> {
    let spawn = |sub: &str| spawn_browser(origin, sub, "bench-browsers");
    let mut a = spawn("browser-a")?;
    let a_out = a.stdout.take().ok_or("no stdout")?;
    let mut a_lines = BufReader::new(a_out).lines();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(l)) = a_lines.next_line().await {
            if serde_json::from_str::<Value>(&l).is_ok_and(|v| v["event"] == "joined") {
                return;
            }
        }
    })
    .await
    .map_err(|_| "browser A did not join (setup.sh run? inside unshare -n?)".to_string())?;
    tokio::spawn(async move { while let Ok(Some(_)) = a_lines.next_line().await {} });
    let mut out = Vec::new();
    for run in 0..runs {
        let mut b = spawn(&format!("browser-b{run}"))?;
        let b_out = b.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(b_out).lines();
        let got = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(l)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&l)
                    && v["event"] == "first-frame"
                    && v["peer"] == "browser-a"
                {
                    return v["sinceJoinMs"].as_f64();
                }
            }
            None
        })
        .await;
        if let Ok(Some(ms)) = got {
            out.push(ms);
        }
        let _ = b.kill().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = a.kill().await;
    Ok(out)
}

/// Chromium↔Chromium under the same loss phases as the meshcall run: browser B's decoded frames
/// of browser A (inbound-rtp `framesDecoded`, polled every second). Returns, per phase, the
/// median and the lowest per-second frame count over the phase's last 10 s.
async fn browsers_under_loss(
    origin: &str,
    phases: &[super::loss::Phase],
    table: &str,
) -> Result<Vec<(f64, u32)>, String> {
    use tokio::io::AsyncWriteExt;
    let room = "bench-browsers-loss";
    let mut a = spawn_browser(origin, "browser-a", room)?;
    let mut b = spawn_browser(origin, "browser-b", room)?;
    let mut stdin = b.stdin.take().ok_or("no stdin")?;
    let mut lines = BufReader::new(b.stdout.take().ok_or("no stdout")?).lines();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if serde_json::from_str::<Value>(&l)
                .is_ok_and(|v| v["event"] == "first-frame" && v["peer"] == "browser-a")
            {
                return;
            }
        }
    })
    .await
    .map_err(|_| "browser B never decoded A (setup.sh run? inside unshare -n?)".to_string())?;
    let mut id = 0u64;
    let shaper = super::loss::LossShaper::new(table)?;
    let mut out = Vec::new();
    for phase in phases {
        shaper.set_loss(phase.loss_percent)?;
        let mut per_second = Vec::new();
        id += 1;
        let mut last = browser_frames_of(&mut stdin, &mut lines, id).await?;
        let until = Instant::now() + phase.duration;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_secs(1)).await;
            id += 1;
            let now = browser_frames_of(&mut stdin, &mut lines, id).await?;
            per_second.push(now.saturating_sub(last) as u32);
            last = now;
        }
        let tail: Vec<u32> = per_second.iter().rev().take(10).copied().collect();
        let mut sorted = tail.clone();
        sorted.sort_unstable();
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
        out.push((f64::from(median), tail.iter().copied().min().unwrap_or(0)));
    }
    shaper.set_loss(0)?;
    let _ = a.kill().await;
    let _ = b.kill().await;
    let _ = stdin.shutdown().await;
    Ok(out)
}

/// Asks a browser peer for its stats and returns the frames it decoded from browser A.
async fn browser_frames_of(
    stdin: &mut tokio::process::ChildStdin,
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    id: u64,
) -> Result<u64, String> {
    use tokio::io::AsyncWriteExt;
    let cmd = json!({"cmd": "stats", "peer": "browser-a", "id": id}).to_string() + "\n";
    stdin
        .write_all(cmd.as_bytes())
        .await
        .map_err(|e| format!("browser stdin: {e}"))?;
    while let Ok(Some(l)) = lines.next_line().await {
        let Ok(v) = serde_json::from_str::<Value>(&l) else {
            continue;
        };
        if v["event"] == "cmd-result" && v["id"] == id {
            return Ok(v["rtp"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["type"] == "inbound-rtp" && e["kind"] == "video")
                .filter_map(|e| e["frames"].as_u64())
                .sum());
        }
    }
    Err("browser B ended".into())
}
