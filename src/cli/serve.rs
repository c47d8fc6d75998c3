//! `meshcall serve`: the signalling server from flags, `MESHCALL_*` variables and a TOML file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tracing::{error, info, warn};

use meshcall::server::Server;
use meshcall::server::config::{FileConfig, Overrides, resolve};

use super::{init_logs, runtime};

#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration file (see README). Flags and MESHCALL_* variables override it.
    #[arg(long, env = "MESHCALL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9292].
    #[arg(long, env = "MESHCALL_LISTEN")]
    pub listen: Option<String>,
    /// Secret key as KID=SECRET (all actions, channel patterns "**"). Repeatable.
    #[arg(
        long = "secret",
        env = "MESHCALL_SECRET",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub secrets: Vec<String>,
    /// Publishable key (all actions, channel patterns "**"). Repeatable.
    #[arg(
        long = "publishable-key",
        env = "MESHCALL_PUBLISHABLE_KEY",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub publishable_keys: Vec<String>,
    /// PEM certificate chain; with --tls-key serves wss:// and https://.
    #[arg(long, env = "MESHCALL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "MESHCALL_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Concurrent connection cap (0 = unlimited); over it new connections close with 4010.
    #[arg(long, env = "MESHCALL_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Connection attempts per source IP per minute (0 = unlimited); over it HTTP 429.
    #[arg(long, env = "MESHCALL_CONNECTS_PER_IP_PER_MINUTE")]
    pub connects_per_ip_per_minute: Option<u32>,
    /// Seconds of silence before the server pings a connection [default: 30].
    #[arg(long, env = "MESHCALL_KEEPALIVE_SECS")]
    pub keepalive_secs: Option<u64>,
    /// Seconds after that ping before a silent connection is dropped [default: 10].
    #[arg(long, env = "MESHCALL_KEEPALIVE_GRACE_SECS")]
    pub keepalive_grace_secs: Option<u64>,
    /// Log filter (tracing EnvFilter syntax), e.g. "info" or "meshcall=debug".
    #[arg(long, env = "MESHCALL_LOG", default_value = "info")]
    pub log: String,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
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
