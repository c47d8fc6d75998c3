//! `meshcall join`: the app straight into a call, or with `--headless` the scriptable peer that
//! prints one JSON line per event.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use meshcall::engine::api::{AudioChoice, SpeakerChoice, VideoChoice};

use super::{init_logs, runtime};

#[derive(Args)]
pub struct JoinArgs {
    /// Run without a window and print JSON lines.
    #[arg(long)]
    pub headless: bool,
    /// Server origin, e.g. ws://127.0.0.1:9292 (the SDK adds /v1).
    #[arg(long, default_value = "ws://127.0.0.1:9292")]
    pub server: String,
    /// Room (channel) to join [default: lobby; the app: the last room used].
    #[arg(long)]
    pub room: Option<String>,
    /// Display name (peerMetadata.username when minting); required with --headless.
    #[arg(long)]
    pub name: Option<String>,
    /// Use the server built into meshcall on this machine (started if not running) and mint
    /// locally; --server is ignored. The app's default when no credential is given.
    #[arg(long, conflicts_with_all = ["token", "key", "secret"])]
    pub this_computer: bool,
    /// A JWT to connect with.
    #[arg(long, conflicts_with_all = ["key", "secret"])]
    pub token: Option<String>,
    /// A publishable key to connect with.
    #[arg(long, conflicts_with_all = ["token", "secret"])]
    pub key: Option<String>,
    /// KID=SECRET: mint a fresh token locally on every connect.
    #[arg(long, conflicts_with_all = ["token", "key"])]
    pub secret: Option<String>,
    /// Peer id to mint with --secret [default: derived from --name plus a random suffix].
    #[arg(long)]
    pub peer_id: Option<String>,
    /// Leave cleanly after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Restrict ICE to 127.0.0.1 (tests and single-machine demos).
    #[arg(long)]
    pub loopback_only: bool,
    /// Video to send: synthetic (stamped test pattern), camera[:ID], screen[:ID] or none
    /// [default: none headless; the app: the last choice, else synthetic].
    #[arg(long)]
    pub video: Option<String>,
    /// Audio to send: synthetic (440 Hz tone + beeps), mic[:ID], file:PATH.wav (looped) or
    /// none [default: none headless; the app: the last choice, else synthetic].
    #[arg(long)]
    pub audio: Option<String>,
    /// Where the mixed remote audio is played (--headless): default (the system's speaker),
    /// pulse:NAME (a PulseAudio sink), another listed speaker id, or none [default: none]. The
    /// app chooses its speaker in Settings.
    #[arg(long)]
    pub speaker: Option<String>,
    /// Echo cancellation, noise suppression and automatic gain on the sent audio: on or off
    /// [default: on for a microphone, off for the synthetic tone and files].
    #[arg(long, value_parser = ["on", "off"])]
    pub audio_processing: Option<String>,
    /// Video size WIDTHxHEIGHT [default: 640x480 headless; the app: the last choice].
    #[arg(long)]
    pub size: Option<String>,
    /// Video frame rate [default: 30].
    #[arg(long)]
    pub fps: Option<f32>,
    /// Troubleshooting actions after joining, e.g. drop-signalling@10s, restart-ice@5s,
    /// restart-ice:PEER@5s, blackhole-media:PEER@10s/8s (at 10 s, for 8 s; repeatable).
    #[arg(long)]
    pub simulate: Vec<String>,
    /// Print a `stats` line every N seconds.
    #[arg(long)]
    pub stats_every: Option<f64>,
    /// Do not decode remote video (send-only bots, load generators).
    #[arg(long)]
    pub no_receive: bool,
    /// Log filter for stderr (stdout carries only JSON lines).
    #[arg(long, env = "MESHCALL_LOG", default_value = "warn")]
    pub log: String,
}

pub fn run(args: JoinArgs) -> anyhow::Result<ExitCode> {
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
    let video = args
        .video
        .as_deref()
        .unwrap_or("none")
        .parse::<VideoChoice>()?;
    let audio = args
        .audio
        .as_deref()
        .unwrap_or("none")
        .parse::<AudioChoice>()?;
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
    opts.speaker = args
        .speaker
        .as_deref()
        .unwrap_or("none")
        .parse::<SpeakerChoice>()?;
    opts.audio_processing = args.audio_processing.as_deref().map(|v| {
        if v == "on" {
            meshcall::engine::api::ProcessingSettings::ON
        } else {
            meshcall::engine::api::ProcessingSettings::OFF
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
        match v.parse::<VideoChoice>()? {
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
        o.audio = Some(match a.parse::<AudioChoice>()? {
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
