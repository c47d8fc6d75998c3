//! "This computer": with no server configured, the app runs the signalling server in-process
//! on 127.0.0.1:9292 (or joins one already listening there) and mints tokens with a local secret.
//!
//! The secret lives in the user's config directory (created once, mode 0600), so a second
//! `meshcall` window on the same machine — which finds the port taken by the first — can still
//! mint tokens the running server accepts. The server started here lives until the process ends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Mutex;
use tracing::info;

use crate::auth::{Actions, KeyRing, PatternSet, Secret, SecretKey};
use crate::server::{Server, ServerConfig};

/// The kid of the local secret.
pub const LOCAL_KID: &str = "local";

#[derive(Debug, Clone)]
pub struct LocalServerOptions {
    pub addr: SocketAddr,
    /// Where the secret file lives (default: `$XDG_CONFIG_HOME/meshcall` or `~/.config/meshcall`).
    pub config_dir: Option<PathBuf>,
}

impl Default for LocalServerOptions {
    fn default() -> Self {
        LocalServerOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 9292)),
            config_dir: None,
        }
    }
}

#[derive(Clone)]
pub struct LocalServer {
    pub origin: String,
    pub kid: String,
    pub secret: String,
    /// Set when this process started the server.
    pub server: Option<Arc<Server>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("no config directory (set HOME or XDG_CONFIG_HOME)")]
    NoConfigDir,
    #[error("local secret file {path}: {source}")]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Server(String),
}

/// The app's config directory.
pub fn config_dir(opt: Option<&PathBuf>) -> Option<PathBuf> {
    if let Some(p) = opt {
        return Some(p.clone());
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("meshcall"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config").join("meshcall"))
}

/// Reads the local secret, creating it (random, 0600) on first use.
pub fn local_secret(dir: &std::path::Path) -> Result<String, LocalError> {
    let path = dir.join("local-secret");
    let err = |source| LocalError::Secret {
        path: path.clone(),
        source,
    };
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_string();
        if s.len() >= 32 {
            return Ok(s);
        }
    }
    std::fs::create_dir_all(dir).map_err(err)?;
    let secret: String = (0..48)
        .map(|_| {
            let i = rand::random::<u8>() % 62;
            (match i {
                0..=9 => b'0' + i,
                10..=35 => b'a' + i - 10,
                _ => b'A' + i - 36,
            }) as char
        })
        .collect();
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(err)?;
        f.write_all(secret.as_bytes()).map_err(err)?;
    }
    #[cfg(not(unix))]
    std::fs::write(&path, &secret).map_err(err)?;
    Ok(secret)
}

static RUNNING: Mutex<Option<LocalServer>> = Mutex::const_new(None);

/// Uses the server already listening on `addr` (another meshcall window), or starts one here.
pub async fn ensure(opts: &LocalServerOptions) -> Result<LocalServer, LocalError> {
    let mut running = RUNNING.lock().await;
    if let Some(s) = running.as_ref()
        && s.origin == origin_of(opts.addr)
    {
        return Ok(s.clone());
    }
    let dir = config_dir(opts.config_dir.as_ref()).ok_or(LocalError::NoConfigDir)?;
    let secret = local_secret(&dir)?;
    let mut keys = KeyRing::default();
    keys.secret_keys.push(SecretKey {
        kid: LOCAL_KID.into(),
        secret: Secret::new(secret.as_bytes().to_vec()),
        channel_patterns: PatternSet::any(),
        actions: Actions::all(),
        app: String::new(),
    });
    let server = match Server::start(ServerConfig::new(opts.addr, keys)).await {
        Ok(s) => {
            info!(addr = %s.local_addr(), "started the embedded server");
            Some(Arc::new(s))
        }
        Err(e) => {
            // Taken: most likely another meshcall window. If it is something else, the join
            // fails with a clear "token refused" instead.
            if tokio::net::TcpStream::connect(opts.addr).await.is_ok() {
                info!(addr = %opts.addr, "using the server already running on this computer");
                None
            } else {
                return Err(LocalError::Server(e.to_string()));
            }
        }
    };
    let addr = server.as_ref().map_or(opts.addr, |s| s.local_addr());
    let local = LocalServer {
        origin: origin_of(addr),
        kid: LOCAL_KID.into(),
        secret,
        server,
    };
    *running = Some(local.clone());
    Ok(local)
}

fn origin_of(addr: SocketAddr) -> String {
    format!("ws://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_created_once_private_and_reused() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = local_secret(dir.path()).expect("create");
        let b = local_secret(dir.path()).expect("reuse");
        assert_eq!(a, b);
        assert_eq!(a.len(), 48);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("local-secret"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
