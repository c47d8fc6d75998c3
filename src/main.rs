//! The `meshcall` command line: with no command it opens the desktop app; `serve` runs the
//! signalling server, `token` mints a JWT, `join` opens the app straight into a call (or runs
//! the scriptable peer with `--headless`), `bench` measures. The flags documented in the README under "CLI contract" are relied on by
//! outside test harnesses and must stay stable.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing::{error, info, warn};

use meshcall::auth::{Action, Actions, KeyRing, MintRequest, PatternSet, Secret, SecretKey, mint};
use meshcall::server::Server;
use meshcall::server::config::{FileConfig, Overrides, resolve};

#[derive(Parser)]
#[command(
    name = "meshcall",
    version,
    about = "Native video calls and a Metered-compatible signalling server"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the signalling server (WebSocket at /v1, REST at /v1/…, /healthz, /metrics).
    Serve(ServeArgs),
    /// Mint a JWT for a peer and print it.
    Token(TokenArgs),
    /// Join a room: opens the app straight into the call. With --headless: a scriptable peer
    /// printing one JSON line per event.
    Join(JoinArgs),
    /// Benchmarks that print numbers.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file (see README). Flags and MESHCALL_* variables override it.
    #[arg(long, env = "MESHCALL_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9292].
    #[arg(long, env = "MESHCALL_LISTEN")]
    listen: Option<String>,
    /// Secret key as KID=SECRET (all actions, channel patterns "**"). Repeatable.
    #[arg(
        long = "secret",
        env = "MESHCALL_SECRET",
        hide_env_values = true,
        value_delimiter = ','
    )]
    secrets: Vec<String>,
    /// Publishable key (all actions, channel patterns "**"). Repeatable.
    #[arg(
        long = "publishable-key",
        env = "MESHCALL_PUBLISHABLE_KEY",
        hide_env_values = true,
        value_delimiter = ','
    )]
    publishable_keys: Vec<String>,
    /// PEM certificate chain; with --tls-key serves wss:// and https://.
    #[arg(long, env = "MESHCALL_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "MESHCALL_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Concurrent connection cap (0 = unlimited); over it new connections close with 4010.
    #[arg(long, env = "MESHCALL_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Connection attempts per source IP per minute (0 = unlimited); over it HTTP 429.
    #[arg(long, env = "MESHCALL_CONNECTS_PER_IP_PER_MINUTE")]
    connects_per_ip_per_minute: Option<u32>,
    /// Seconds of silence before the server pings a connection [default: 30].
    #[arg(long, env = "MESHCALL_KEEPALIVE_SECS")]
    keepalive_secs: Option<u64>,
    /// Seconds after that ping before a silent connection is dropped [default: 10].
    #[arg(long, env = "MESHCALL_KEEPALIVE_GRACE_SECS")]
    keepalive_grace_secs: Option<u64>,
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "meshcall=debug".
    #[arg(long, env = "MESHCALL_LOG", default_value = "info")]
    log: String,
}

#[derive(Args)]
struct TokenArgs {
    /// The signing secret (with --kid), instead of --config.
    #[arg(long, env = "MESHCALL_TOKEN_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Key id put in the JWT header.
    #[arg(long, default_value = "dev")]
    kid: String,
    /// Take the signing key from this server config (first secret key, or --kid).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Peer id (the JWT `sub`).
    #[arg(long)]
    sub: String,
    /// Channel or channel glob the token grants. Repeatable; none = the key's patterns.
    #[arg(long = "channel")]
    channels: Vec<String>,
    /// Display name, stored as peerMetadata.username.
    #[arg(long)]
    name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// Comma-separated subset of publish,subscribe,presence,send [default: all the key has].
    #[arg(long, value_delimiter = ',')]
    permissions: Vec<String>,
    /// Extra peerMetadata as a JSON object (merged; --name wins for username).
    #[arg(long)]
    peer_metadata_json: Option<String>,
    /// Private connection metadata (e.g. iceServers) as a JSON object.
    #[arg(long)]
    metadata_json: Option<String>,
}

#[derive(Args)]
struct JoinArgs {
    /// Run without a window and print JSON lines.
    #[arg(long)]
    headless: bool,
    /// Server origin, e.g. ws://127.0.0.1:9292 (the SDK adds /v1).
    #[arg(long, default_value = "ws://127.0.0.1:9292")]
    server: String,
    /// Room (channel) to join [default: lobby; the app: the last room used].
    #[arg(long)]
    room: Option<String>,
    /// Display name (peerMetadata.username when minting); required with --headless.
    #[arg(long)]
    name: Option<String>,
    /// Use the server built into meshcall on this machine (started if not running) and mint
    /// locally; --server is ignored. The app's default when no credential is given.
    #[arg(long, conflicts_with_all = ["token", "key", "secret"])]
    this_computer: bool,
    /// A JWT to connect with.
    #[arg(long, conflicts_with_all = ["key", "secret"])]
    token: Option<String>,
    /// A publishable key to connect with.
    #[arg(long, conflicts_with_all = ["token", "secret"])]
    key: Option<String>,
    /// KID=SECRET: mint a fresh token locally on every connect.
    #[arg(long, conflicts_with_all = ["token", "key"])]
    secret: Option<String>,
    /// Peer id to mint with --secret [default: derived from --name plus a random suffix].
    #[arg(long)]
    peer_id: Option<String>,
    /// Leave cleanly after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Restrict ICE to 127.0.0.1 (tests and single-machine demos).
    #[arg(long)]
    loopback_only: bool,
    /// Video to send: synthetic (stamped test pattern), camera[:ID], screen[:ID] or none
    /// [default: none headless; the app: the last choice, else synthetic].
    #[arg(long)]
    video: Option<String>,
    /// Audio to send: synthetic (440 Hz tone + beeps), mic[:ID], file:PATH.wav (looped) or
    /// none [default: none headless; the app: the last choice, else synthetic].
    #[arg(long)]
    audio: Option<String>,
    /// Where the mixed remote audio is played (--headless): default (the system's speaker),
    /// pulse:NAME (a PulseAudio sink), another listed speaker id, or none [default: none]. The
    /// app chooses its speaker in Settings.
    #[arg(long)]
    speaker: Option<String>,
    /// Echo cancellation, noise suppression and automatic gain on the sent audio: on or off
    /// [default: on for a microphone, off for the synthetic tone and files].
    #[arg(long, value_parser = ["on", "off"])]
    audio_processing: Option<String>,
    /// Video size WIDTHxHEIGHT [default: 640x480 headless; the app: the last choice].
    #[arg(long)]
    size: Option<String>,
    /// Video frame rate [default: 30].
    #[arg(long)]
    fps: Option<f32>,
    /// Troubleshooting actions after joining, e.g. drop-signalling@10s, restart-ice@5s,
    /// restart-ice:PEER@5s, blackhole-media:PEER@10s/8s (at 10 s, for 8 s; repeatable).
    #[arg(long)]
    simulate: Vec<String>,
    /// Print a `stats` line every N seconds.
    #[arg(long)]
    stats_every: Option<f64>,
    /// Do not decode remote video (send-only bots, load generators).
    #[arg(long)]
    no_receive: bool,
    /// Log filter for stderr (stdout carries only JSON lines).
    #[arg(long, env = "MESHCALL_LOG", default_value = "warn")]
    log: String,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Open N WebSocket clients against a fresh server and measure memory, fan-out and latency.
    Server(meshcall::bench::server::BenchArgs),
    /// H.264 and Opus encode/decode speed on synthetic camera-like content.
    Media(meshcall::bench::media::MediaBenchArgs),
    /// End-to-end call media: join → first frame, capture → decode latency, 4-party CPU
    /// (run inside a loopback-only network namespace).
    Call(meshcall::bench::call::CallBenchArgs),
    /// The desktop app: frame time with N 720p30 tiles, CPU and RSS; `--call` for the whole
    /// app in a 4-party call (needs a display, e.g. `xvfb-run -a`).
    Ui(meshcall::bench::ui::UiBenchArgs),
}

fn init_logs(filter: &str) {
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Whatever the filter asks for: tungstenite's handshake logs its whole request line at
    // trace level, and a client's request line carries the token in its query.
    let no_secrets = filter_fn(|meta| {
        !(meta.target().starts_with("tungstenite::handshake")
            && *meta.level() == tracing::Level::TRACE)
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(filter.and(no_secrets));
    tracing_subscriber::registry().with(layer).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        init_logs("warn");
        return match meshcall::ui::run(meshcall::ui::AppOptions::default()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    };
    let result = match command {
        Command::Serve(args) => serve(args),
        Command::Token(args) => token(args),
        Command::Join(args) => join(args),
        Command::Bench {
            what: BenchCommand::Server(args),
        } => runtime().and_then(|rt| {
            rt.block_on(meshcall::bench::server::run(args))
                .map_err(Into::into)
        }),
        Command::Bench {
            what: BenchCommand::Media(args),
        } => meshcall::bench::media::run(args).map_err(Into::into),
        Command::Bench {
            what: BenchCommand::Ui(args),
        } => meshcall::bench::ui::run(args).map_err(anyhow::Error::msg),
        Command::Bench {
            what: BenchCommand::Call(args),
        } => runtime().and_then(|rt| {
            rt.block_on(meshcall::bench::call::run(args))
                .map_err(anyhow::Error::msg)
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logs(&args.log);
    let file = match &args.config {
        Some(path) => match FileConfig::load(path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
        },
        None => FileConfig::default(),
    };
    let overrides = Overrides {
        listen: args.listen,
        secrets: args.secrets,
        publishable_keys: args.publishable_keys,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        max_connections: args.max_connections,
        connects_per_ip_per_minute: args.connects_per_ip_per_minute,
        keepalive_interval_secs: args.keepalive_secs,
        keepalive_grace_secs: args.keepalive_grace_secs,
    };
    let (cfg, dev) = match resolve(file, overrides) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: invalid configuration: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let rt = runtime()?;
    rt.block_on(async move {
        let server = match Server::start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                error!("{e}");
                return Ok(ExitCode::from(1));
            }
        };
        if let Some(dev) = dev {
            // Dev mode: the only time these are ever shown.
            warn!("no keys configured: running in dev mode with throw-away credentials");
            eprintln!(
                "dev credentials (valid until this server stops):\n  secret key:      {}={}\n  publishable key: {}\n  mint a token:    meshcall token --kid {} --secret {} --sub alice --channel lobby --name Alice",
                dev.kid, dev.secret, dev.publishable_key, dev.kid, dev.secret
            );
        }
        info!("listening on {} (WebSocket {}/v1)", server.local_addr(), server.ws_origin());
        shutdown_signal().await;
        info!("shutdown requested");
        server.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn join(args: JoinArgs) -> anyhow::Result<ExitCode> {
    use meshcall::headless::{HeadlessAuth, HeadlessOptions};
    init_logs(&args.log);
    if !args.headless {
        return join_app(args);
    }
    if args.this_computer {
        anyhow::bail!(
            "--this-computer is for the app; the headless peer takes --token, --key or --secret"
        );
    }
    let Some(name) = args.name.clone() else {
        anyhow::bail!("--headless needs --name");
    };
    let room = args.room.clone().unwrap_or_else(|| "lobby".to_string());
    let auth = match (args.token, args.key, args.secret) {
        (Some(t), _, _) => HeadlessAuth::Token(t),
        (_, Some(k), _) => HeadlessAuth::Key(k),
        (_, _, Some(s)) => {
            let (kid, secret) = s.split_once('=').context("--secret must be KID=SECRET")?;
            HeadlessAuth::Secret {
                kid: kid.to_string(),
                secret: secret.to_string(),
            }
        }
        _ => anyhow::bail!("give one of --token, --key or --secret KID=SECRET"),
    };
    let duration = match args.duration {
        Some(d) if !(d.is_finite() && d > 0.0) => {
            anyhow::bail!("--duration must be a positive number of seconds")
        }
        Some(d) => Some(std::time::Duration::from_secs_f64(d)),
        None => None,
    };
    let video = parse_video(args.video.as_deref().unwrap_or("none"))?;
    let audio = parse_audio(args.audio.as_deref().unwrap_or("none"))?;
    let (width, height) = parse_size(args.size.as_deref().unwrap_or("640x480"))?;
    let fps = check_fps(args.fps.unwrap_or(30.0))?;
    let simulate = args
        .simulate
        .iter()
        .map(|s| meshcall::headless::parse_simulation(s).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let stats_interval = match args.stats_every {
        Some(s) if !(s.is_finite() && s >= 0.5) => {
            anyhow::bail!("--stats-every must be at least 0.5 seconds")
        }
        s => s.map(std::time::Duration::from_secs_f64),
    };
    let mut opts = HeadlessOptions::new(&args.server, &room, &name, auth);
    opts.peer_id = args.peer_id;
    opts.duration = duration;
    opts.loopback_only = args.loopback_only;
    opts.video = video;
    opts.audio = audio;
    opts.speaker = parse_speaker(args.speaker.as_deref().unwrap_or("none"))?;
    opts.audio_processing = args.audio_processing.as_deref().map(|v| {
        if v == "on" {
            meshcall::media::processing::ProcessingSettings::ON
        } else {
            meshcall::media::processing::ProcessingSettings::OFF
        }
    });
    opts.width = width;
    opts.height = height;
    opts.fps = fps;
    opts.simulate = simulate;
    opts.stats_interval = stats_interval;
    opts.receive_video = !args.no_receive;
    let rt = runtime()?;
    match rt.block_on(meshcall::headless::run(opts)) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(3))
        }
    }
}

fn check_fps(fps: f32) -> anyhow::Result<f32> {
    if !(fps.is_finite() && (1.0..=60.0).contains(&fps)) {
        anyhow::bail!("--fps must be between 1 and 60");
    }
    Ok(fps)
}

/// `meshcall join` without `--headless`: the app, straight into the call. Flags override the
/// remembered join form for this run (and are remembered afterwards, except credentials).
fn join_app(args: JoinArgs) -> anyhow::Result<ExitCode> {
    use meshcall::engine::api::{AudioChoice, VideoChoice};
    use meshcall::ui::join::{AudioSource, AuthMode, VideoSource};
    if args.duration.is_some()
        || !args.simulate.is_empty()
        || args.stats_every.is_some()
        || args.no_receive
        || args.speaker.is_some()
    {
        anyhow::bail!(
            "--duration, --simulate, --stats-every, --no-receive and --speaker need --headless \
             (the app chooses its speaker in Settings)"
        );
    }
    let mut o = meshcall::ui::FormOverrides {
        room: args.room,
        name: args.name,
        loopback_only: args.loopback_only,
        ..Default::default()
    };
    if let Some(t) = args.token {
        o.mode = Some(AuthMode::Token);
        o.token = Some(t);
        o.server = Some(args.server.clone());
    } else if let Some(k) = args.key {
        o.mode = Some(AuthMode::PublishableKey);
        o.key = Some(k);
        o.server = Some(args.server.clone());
    } else if let Some(s) = args.secret {
        let (kid, secret) = s.split_once('=').context("--secret must be KID=SECRET")?;
        // Minted locally; the form shows it as a key-based join to the given server.
        o.mode = Some(AuthMode::PublishableKey);
        o.secret = Some((kid.to_string(), secret.to_string()));
        o.server = Some(args.server.clone());
    } else {
        // --this-computer, or no credential at all: the embedded server.
        o.mode = Some(AuthMode::ThisComputer);
        o.room = o.room.or_else(|| Some("lobby".to_string()));
    }
    if let Some(v) = &args.video {
        match parse_video(v)? {
            VideoChoice::None => o.video = Some(VideoSource::None),
            VideoChoice::Synthetic => o.video = Some(VideoSource::TestPattern),
            VideoChoice::Camera(id) => {
                o.video = Some(VideoSource::Camera);
                o.camera_id = Some(id);
            }
            VideoChoice::Screen(_) => {
                anyhow::bail!(
                    "the app shares screens from the call screen; use --video synthetic, camera or none"
                )
            }
        }
    }
    if let Some(a) = &args.audio {
        o.audio = Some(match parse_audio(a)? {
            AudioChoice::None => AudioSource::None,
            AudioChoice::Synthetic => AudioSource::TestTone,
            AudioChoice::Microphone(_) => AudioSource::Microphone,
            AudioChoice::File(_) => {
                anyhow::bail!("the app takes a microphone or the tone; file:PATH is for --headless")
            }
        });
    }
    if let Some(s) = &args.size {
        o.size = Some(parse_size(s)?);
    }
    if let Some(f) = args.fps {
        o.fps = Some(check_fps(f)?);
    }
    meshcall::ui::run(meshcall::ui::AppOptions {
        overrides: o,
        auto_join: true,
    })?;
    Ok(ExitCode::SUCCESS)
}

fn parse_video(s: &str) -> anyhow::Result<meshcall::engine::api::VideoChoice> {
    use meshcall::engine::api::VideoChoice;
    Ok(match s.split_once(':') {
        None if s == "none" => VideoChoice::None,
        None if s == "synthetic" => VideoChoice::Synthetic,
        None if s == "camera" => VideoChoice::Camera("0".into()),
        None if s == "screen" => VideoChoice::Screen(String::new()),
        Some(("camera", id)) => VideoChoice::Camera(id.into()),
        Some(("screen", id)) => VideoChoice::Screen(id.into()),
        _ => anyhow::bail!("--video must be synthetic, camera[:ID], screen[:ID] or none"),
    })
}

fn parse_audio(s: &str) -> anyhow::Result<meshcall::engine::api::AudioChoice> {
    use meshcall::engine::api::AudioChoice;
    Ok(match s.split_once(':') {
        None if s == "none" => AudioChoice::None,
        None if s == "synthetic" => AudioChoice::Synthetic,
        None if s == "mic" => AudioChoice::Microphone(None),
        Some(("mic", id)) => AudioChoice::Microphone(Some(id.into())),
        Some(("file", path)) if !path.is_empty() => AudioChoice::File(path.into()),
        _ => anyhow::bail!("--audio must be synthetic, mic[:ID], file:PATH.wav or none"),
    })
}

fn parse_speaker(s: &str) -> anyhow::Result<meshcall::engine::api::SpeakerChoice> {
    use meshcall::engine::api::SpeakerChoice;
    Ok(match s.split_once(':') {
        None if s == "none" => SpeakerChoice::None,
        None if s == "default" => SpeakerChoice::Speaker(None),
        // cpal names PulseAudio sinks `pulseaudio:NAME`.
        Some(("pulse", name)) if !name.is_empty() => {
            SpeakerChoice::Speaker(Some(format!("pulseaudio:{name}")))
        }
        Some((_, id)) if !id.is_empty() => SpeakerChoice::Speaker(Some(s.to_string())),
        _ => anyhow::bail!("--speaker must be default, pulse:NAME, a speaker id or none"),
    })
}

fn parse_size(s: &str) -> anyhow::Result<(usize, usize)> {
    let (w, h) = s
        .split_once('x')
        .context("--size must be WIDTHxHEIGHT, e.g. 1280x720")?;
    let (w, h): (usize, usize) = (w.parse()?, h.parse()?);
    if !(16..=3840).contains(&w) || !(16..=2160).contains(&h) || w % 2 == 1 || h % 2 == 1 {
        anyhow::bail!("--size must be even, between 16x16 and 3840x2160");
    }
    Ok((w, h))
}

fn parse_object(
    flag: &str,
    text: &str,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => anyhow::bail!("{flag} must be a JSON object"),
        Err(e) => anyhow::bail!("{flag} is not valid JSON: {e}"),
    }
}

fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let key = match (&args.secret, &args.config) {
        (Some(secret), _) => SecretKey {
            kid: args.kid.clone(),
            secret: Secret::new(secret.as_bytes().to_vec()),
            channel_patterns: PatternSet::any(),
            actions: Actions::all(),
            app: String::new(),
        },
        (None, Some(path)) => {
            let file = FileConfig::load(path)?;
            let (cfg, _) = resolve(file, Overrides::default())?;
            let mut ring: KeyRing = cfg.keys;
            let idx = ring
                .secret_keys
                .iter()
                .position(|k| args.kid == "dev" || k.kid == args.kid)
                .with_context(|| {
                    format!(
                        "no secret key with kid '{}' in {}",
                        args.kid,
                        path.display()
                    )
                })?;
            ring.secret_keys.swap_remove(idx)
        }
        (None, None) => anyhow::bail!("give --secret SECRET (with --kid) or --config FILE"),
    };
    let mut peer_metadata = match &args.peer_metadata_json {
        Some(text) => parse_object("--peer-metadata-json", text)?,
        None => serde_json::Map::new(),
    };
    if let Some(name) = &args.name {
        peer_metadata.insert("username".into(), serde_json::Value::String(name.clone()));
    }
    let metadata = match &args.metadata_json {
        Some(text) => Some(serde_json::Value::Object(parse_object(
            "--metadata-json",
            text,
        )?)),
        None => None,
    };
    let permissions = if args.permissions.is_empty() {
        None
    } else {
        let mut list = Vec::new();
        for p in &args.permissions {
            list.push(Action::parse(p).with_context(|| {
                format!("unknown permission '{p}' (allowed: publish, subscribe, presence, send)")
            })?);
        }
        Some(list)
    };
    if args.ttl == 0 {
        anyhow::bail!("--ttl must be at least 1 second");
    }
    let req = MintRequest {
        sub: args.sub,
        channels: (!args.channels.is_empty()).then_some(args.channels),
        permissions,
        ttl_secs: args.ttl,
        peer_metadata: (!peer_metadata.is_empty())
            .then_some(serde_json::Value::Object(peer_metadata)),
        metadata,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (token, _exp) = mint(&key, &req, now).map_err(|e| anyhow::anyhow!("cannot mint: {e}"))?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
