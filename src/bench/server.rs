//! `meshcall bench server`: starts `meshcall serve` as a child process (so its memory can be
//! read on its own from /proc), connects N real WebSocket clients on loopback, and reports
//! connections held, RSS per idle connection, saturated fan-out throughput and delivery latency
//! at half that load.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpSocket;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

use super::LatencyHistogram;
use crate::auth::{Actions, MintRequest, PatternSet, Secret, SecretKey, mint};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// WebSocket clients to open.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Subscribers per channel (fan-out factor is room_size − 1).
    #[arg(long, default_value_t = 100)]
    pub room_size: usize,
    /// Seconds of each measured phase.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Publishes in flight per publisher during the saturation phase.
    #[arg(long, default_value_t = 4)]
    pub window: usize,
    /// Loads, as fractions of the saturated publish rate, at which latency is measured.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.25,0.5")]
    pub loads: Vec<f64>,
}

#[derive(Debug, Error)]
pub enum BenchError {
    #[error("cannot start the server: {0}")]
    Spawn(std::io::Error),
    #[error("the server did not report 'listening on' within 20 s")]
    NotReady,
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("client {0} failed: {1}")]
    Client(usize, String),
}

fn rss_kib(pid: u32) -> u64 {
    super::process_rss_mib(pid).map_or(0, |m| (m * 1024.0) as u64)
}

fn cpu_secs(pid: u32) -> f64 {
    super::process_cpu_seconds(pid).unwrap_or(0.0)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Shared {
    epoch: Instant,
    delivered: AtomicU64,
    measuring: AtomicBool,
    /// Only messages stamped at or after this (µs since `epoch`) count towards latency.
    measure_from_us: AtomicU64,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(addr: SocketAddr, i: usize, token: &str) -> Result<Ws, String> {
    // Spread clients over 127.0.0.x source addresses so that >28k sockets do not run out of
    // ephemeral ports towards one destination.
    let src = IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        (1 + i / 250 / 200) as u8,
        (1 + (i / 20_000) % 250) as u8,
    ));
    let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::new(src, 0))
        .map_err(|e| e.to_string())?;
    let stream = sock.connect(addr).await.map_err(|e| e.to_string())?;
    // Like any real signalling client: small frames must not wait for Nagle.
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let url = format!("ws://{addr}/v1?token={token}");
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Waits until deliveries stop (the previous phase's backlog has drained), at most 30 s.
async fn wait_quiet(shared: &Shared) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = shared.delivered.load(Ordering::Relaxed);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = shared.delivered.load(Ordering::Relaxed);
        if now == last {
            return;
        }
        last = now;
    }
}

/// The send time stamped into a bench message: `..."data":{"t":MICROS}}`.
fn stamp(text: &str) -> Option<u64> {
    let rest = text.split("\"t\":").nth(1)?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Reads until a frame of `kind` arrives.
async fn expect(ws: &mut Ws, kind: &str) -> Result<serde_json::Value, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value =
                    serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
                if v["type"] == kind {
                    return Ok(v);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("closed".into()),
        }
    }
}

pub async fn run(args: BenchArgs) -> Result<std::process::ExitCode, BenchError> {
    crate::server::raise_fd_limit();
    let secret = format!("bench-secret-{}", rand::random::<u64>());
    let cfg_dir = std::env::temp_dir().join(format!("meshcall-bench-{}", std::process::id()));
    std::fs::create_dir_all(&cfg_dir)?;
    let cfg_path = cfg_dir.join("server.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[[secret_keys]]\nkid = \"bench\"\nsecret = \"{secret}\"\n[limits]\nmessages_per_second = 0\nconnects_per_ip_per_minute = 0\noutbox_capacity = 65536\n"
        ),
    )?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log",
            "info",
            "--config",
        ])
        .arg(&cfg_path)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(BenchError::Spawn)?;
    let pid = child.id().unwrap_or(0);
    let stderr = child.stderr.take().ok_or(BenchError::NotReady)?;
    let mut lines = BufReader::new(stderr).lines();
    let addr: SocketAddr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(a) = line
                .split("listening on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|a| a.parse().ok())
            {
                return Some(a);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or(BenchError::NotReady)?;
    // Keep draining the server's stderr so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(pid);

    let key = SecretKey {
        kid: "bench".into(),
        secret: Secret::new(secret.into_bytes()),
        channel_patterns: PatternSet::any(),
        actions: Actions::all(),
        app: String::new(),
    };
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        delivered: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
        measure_from_us: AtomicU64::new(u64::MAX),
    });
    let room_size = args.room_size.max(2);
    let rooms = args.clients.div_ceil(room_size);
    println!(
        "bench server: {} clients in {rooms} rooms of {room_size}, server pid {pid} on {addr}",
        args.clients
    );

    // Connect and subscribe everybody, 256 at a time.
    let t_connect = Instant::now();
    let mut publishers = Vec::new();
    let mut readers = Vec::new();
    let mut pending = Vec::new();
    for i in 0..args.clients {
        let req = MintRequest {
            sub: format!("c{i}"),
            ttl_secs: 3600,
            ..MintRequest::default()
        };
        let (token, _) =
            mint(&key, &req, now_unix()).map_err(|e| BenchError::Client(i, e.to_string()))?;
        pending.push(tokio::spawn(async move {
            let mut ws = connect(addr, i, &token).await?;
            expect(&mut ws, "welcome").await?;
            let room = format!("room-{}", i / room_size);
            let sub =
                serde_json::json!({"type":"subscribe","channel":room,"requestId":"s"}).to_string();
            ws.send(Message::Text(sub.into()))
                .await
                .map_err(|e| e.to_string())?;
            expect(&mut ws, "presence").await?;
            Ok::<_, String>((i, ws))
        }));
        if pending.len() == 256 || i + 1 == args.clients {
            for h in pending.drain(..) {
                let (i, ws) = h
                    .await
                    .map_err(|e| BenchError::Client(0, e.to_string()))?
                    .map_err(|e| BenchError::Client(i, e))?;
                if i % room_size == 0 {
                    publishers.push((i, ws));
                } else {
                    readers.push(ws);
                }
            }
        }
    }
    let connect_secs = t_connect.elapsed().as_secs_f64();
    let held = publishers.len() + readers.len();

    // Receivers: count deliveries and record latency from the stamp in each message. Each
    // reader owns its histogram (uncontended lock) and they are merged once at the end.
    let mut histograms = Vec::with_capacity(readers.len());
    for mut ws in readers {
        let shared = shared.clone();
        let hist = Arc::new(std::sync::Mutex::new(LatencyHistogram::default()));
        histograms.push(hist.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(t) = msg else { continue };
                let Some(sent) = stamp(t.as_str()) else {
                    continue;
                };
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                if shared.measuring.load(Ordering::Relaxed)
                    && sent >= shared.measure_from_us.load(Ordering::Relaxed)
                {
                    let now = shared.epoch.elapsed().as_micros() as u64;
                    if let Ok(mut h) = hist.lock() {
                        h.record_us(now.saturating_sub(sent));
                    }
                }
            }
        });
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid);
    let per_conn = (rss_idle.saturating_sub(rss_before)) as f64 * 1024.0 / held.max(1) as f64;

    // An unrelated connection (in no room) pings every 20 ms throughout: how long the server
    // makes a bystander wait while it fans out is the cost of any work done under its lock.
    let probe_token = mint(
        &key,
        &MintRequest {
            sub: "probe".into(),
            ttl_secs: 3600,
            ..MintRequest::default()
        },
        now_unix(),
    )
    .map_err(|e| BenchError::Client(usize::MAX, e.to_string()))?
    .0;
    let mut probe_ws = connect(addr, usize::MAX, &probe_token)
        .await
        .map_err(|e| BenchError::Client(usize::MAX, e))?;
    expect(&mut probe_ws, "welcome")
        .await
        .map_err(|e| BenchError::Client(usize::MAX, e))?;
    let probe_hist = Arc::new(std::sync::Mutex::new(LatencyHistogram::default()));
    let probe_on = Arc::new(AtomicBool::new(true));
    let probe = tokio::spawn(ping_probe(probe_ws, probe_hist.clone(), probe_on.clone()));

    // Phase 1: saturation. Each publisher keeps `window` publishes in flight (acks pace it).
    let fanout = (room_size - 1) as f64;
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let mut pubs = Vec::new();
    for (i, ws) in publishers {
        pubs.push(tokio::spawn(publisher(
            i,
            format!("room-{}", i / room_size),
            ws,
            PublisherRun {
                shared: shared.clone(),
                stop: stop.clone(),
                published: published.clone(),
                window: args.window,
                rate: None,
            },
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d0 = shared.delivered.load(Ordering::Relaxed);
    let p0 = published.load(Ordering::Relaxed);
    let (s0, c0) = (cpu_secs(pid), cpu_secs(std::process::id()));
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let sat_secs = t0.elapsed().as_secs_f64();
    let delivered_rate = (shared.delivered.load(Ordering::Relaxed) - d0) as f64 / sat_secs;
    let publish_rate = (published.load(Ordering::Relaxed) - p0) as f64 / sat_secs;
    let sat_server_cpu = (cpu_secs(pid) - s0) / sat_secs * 100.0;
    let sat_client_cpu = (cpu_secs(std::process::id()) - c0) / sat_secs * 100.0;
    probe_on.store(false, Ordering::SeqCst);
    let _ = probe.await;
    let probe_hist = probe_hist.lock().map(|h| h.clone()).unwrap_or_default();
    stop.store(true, Ordering::SeqCst);
    let mut publishers = Vec::new();
    for h in pubs {
        if let Ok(Some(p)) = h.await {
            publishers.push(p);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    shared.measuring.store(false, Ordering::SeqCst);

    // Phase 2: fractions of the saturated publish rate, paced, latency measured at each.
    let mut curve = Vec::new();
    for &fraction in &args.loads {
        let per_pub_rate = (publish_rate * fraction / publishers.len().max(1) as f64).max(1.0);
        for h in &histograms {
            if let Ok(mut h) = h.lock() {
                *h = LatencyHistogram::default();
            }
        }
        wait_quiet(&shared).await;
        stop.store(false, Ordering::SeqCst);
        shared
            .measure_from_us
            .store(shared.epoch.elapsed().as_micros() as u64, Ordering::SeqCst);
        shared.measuring.store(true, Ordering::SeqCst);
        let mut pubs = Vec::new();
        for (i, ws) in publishers.drain(..) {
            pubs.push(tokio::spawn(publisher(
                i,
                format!("room-{}", i / room_size),
                ws,
                PublisherRun {
                    shared: shared.clone(),
                    stop: stop.clone(),
                    published: published.clone(),
                    window: 1,
                    rate: Some(per_pub_rate),
                },
            )));
        }
        let d1 = shared.delivered.load(Ordering::Relaxed);
        let (s1, c1) = (cpu_secs(pid), cpu_secs(std::process::id()));
        let t1 = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        let secs = t1.elapsed().as_secs_f64();
        let delivered = (shared.delivered.load(Ordering::Relaxed) - d1) as f64 / secs;
        let server_cpu = (cpu_secs(pid) - s1) / secs * 100.0;
        let client_cpu = (cpu_secs(std::process::id()) - c1) / secs * 100.0;
        stop.store(true, Ordering::SeqCst);
        for h in pubs {
            if let Ok(Some(p)) = h.await {
                publishers.push(p);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        shared.measuring.store(false, Ordering::SeqCst);
        let mut hist = LatencyHistogram::default();
        for h in &histograms {
            if let Ok(h) = h.lock() {
                hist.merge(&h);
            }
        }
        curve.push((fraction, delivered, server_cpu, client_cpu, hist));
    }
    let rss_end = rss_kib(pid);

    println!("| metric | value |");
    println!("|---|---|");
    println!("| connections held | {held} / {} |", args.clients);
    println!("| connect+subscribe time | {connect_secs:.2} s |");
    println!(
        "| server RSS before / idle / end | {} / {} / {} MiB |",
        rss_before / 1024,
        rss_idle / 1024,
        rss_end / 1024
    );
    println!("| RSS per idle connection | {:.1} KiB |", per_conn / 1024.0);
    println!("| saturated publish rate | {publish_rate:.0} msgs/s (fan-out ×{fanout:.0}) |");
    println!("| saturated delivered rate | {delivered_rate:.0} msgs/s |");
    println!(
        "| CPU at saturation: server / bench clients | {sat_server_cpu:.0} % / {sat_client_cpu:.0} % of one core |"
    );
    println!(
        "| unrelated connection's ping→pong during saturation: p50 / p99 / max | {:.2} / {:.2} / {:.2} ms ({} pings) |",
        probe_hist.quantile_us(0.5) as f64 / 1000.0,
        probe_hist.quantile_us(0.99) as f64 / 1000.0,
        probe_hist.quantile_us(1.0) as f64 / 1000.0,
        probe_hist.count()
    );
    for (fraction, delivered, server_cpu, client_cpu, hist) in &curve {
        println!(
            "| at {:.0} % load: delivered / latency p50 / p99 / max / CPU server, clients | {delivered:.0} msgs/s / {:.2} / {:.2} / {:.2} ms / {server_cpu:.0} %, {client_cpu:.0} % ({} samples) |",
            fraction * 100.0,
            hist.quantile_us(0.5) as f64 / 1000.0,
            hist.quantile_us(0.99) as f64 / 1000.0,
            hist.quantile_us(1.0) as f64 / 1000.0,
            hist.count()
        );
    }
    let _ = child.start_kill();
    let _ = std::fs::remove_dir_all(&cfg_dir);
    Ok(std::process::ExitCode::SUCCESS)
}

/// Sends a ping every 20 ms while `on`, recording each ping→pong round trip.
async fn ping_probe(
    mut ws: Ws,
    hist: Arc<std::sync::Mutex<LatencyHistogram>>,
    on: Arc<AtomicBool>,
) {
    let mut n = 0u64;
    while on.load(Ordering::Relaxed) {
        n += 1;
        let rid = format!("p{n}");
        let ping = serde_json::json!({"type":"ping","requestId":rid}).to_string();
        let sent = Instant::now();
        if ws.send(Message::Text(ping.into())).await.is_err() {
            return;
        }
        let answered = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg
                    && t.as_str().contains(&format!("\"{rid}\""))
                {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(answered, Ok(true)) {
            return;
        }
        if let Ok(mut h) = hist.lock() {
            h.record_us(sent.elapsed().as_micros() as u64);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes stamped messages until `stop`; with `rate` it paces, otherwise it keeps `window`
/// requests in flight. Returns the socket for the next phase.
struct PublisherRun {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    published: Arc<AtomicU64>,
    window: usize,
    rate: Option<f64>,
}

async fn publisher(i: usize, room: String, mut ws: Ws, run: PublisherRun) -> Option<(usize, Ws)> {
    let PublisherRun {
        shared,
        stop,
        published,
        window,
        rate,
    } = run;
    let mut in_flight = 0usize;
    let mut seq = 0u64;
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r));
    // Independent publishers are not synchronised: start each at a random phase of its interval,
    // otherwise every publisher's fan-out lands in the same instant and the run measures the
    // queue behind one giant burst.
    let mut next = tokio::time::Instant::now()
        + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(rand::random::<f64>()));
    while !stop.load(Ordering::Relaxed) {
        if let Some(iv) = interval {
            tokio::time::sleep_until(next).await;
            next += iv;
        } else {
            while in_flight >= window {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str().contains("\"ack\"") => in_flight -= 1,
                    Some(Ok(_)) => {}
                    _ => return None,
                }
            }
        }
        seq += 1;
        let t = shared.epoch.elapsed().as_micros() as u64;
        let frame = format!(
            r#"{{"type":"publish","channel":"{room}","requestId":"{seq}","data":{{"t":{t}}}}}"#
        );
        if ws.send(Message::Text(frame.into())).await.is_err() {
            return None;
        }
        in_flight += 1;
        published.fetch_add(1, Ordering::Relaxed);
        if interval.is_some() {
            // Drain acks without blocking the pacing.
            while let Some(Some(Ok(_))) = futures_util::FutureExt::now_or_never(ws.next()) {}
        }
    }
    // Collect outstanding acks so the next phase starts clean.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while in_flight > 0 {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str().contains("\"ack\"") => in_flight -= 1,
                Some(Ok(_)) => {}
                _ => break,
            }
        }
    })
    .await;
    Some((i, ws))
}
