//! `meshcall token`: mint a JWT for a peer with a secret key (given, or from a server config).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use meshcall::auth::{Action, Actions, KeyRing, MintRequest, PatternSet, Secret, SecretKey, mint};
use meshcall::server::config::{FileConfig, Overrides, resolve};

#[derive(Args)]
pub struct TokenArgs {
    /// The signing secret (with --kid), instead of --config.
    #[arg(long, env = "MESHCALL_TOKEN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Key id put in the JWT header.
    #[arg(long, default_value = "dev")]
    pub kid: String,
    /// Take the signing key from this server config (first secret key, or --kid).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Peer id (the JWT `sub`).
    #[arg(long)]
    pub sub: String,
    /// Channel or channel glob the token grants. Repeatable; none = the key's patterns.
    #[arg(long = "channel")]
    pub channels: Vec<String>,
    /// Display name, stored as peerMetadata.username.
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// Comma-separated subset of publish,subscribe,presence,send [default: all the key has].
    #[arg(long, value_delimiter = ',')]
    pub permissions: Vec<String>,
    /// Extra peerMetadata as a JSON object (merged; --name wins for username).
    #[arg(long)]
    pub peer_metadata_json: Option<String>,
    /// Private connection metadata (e.g. iceServers) as a JSON object.
    #[arg(long)]
    pub metadata_json: Option<String>,
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
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
