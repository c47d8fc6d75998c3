//! The signalling server: a pure hub ([`hub`]) inside a thin tokio/axum shell (`ws` for the
//! WebSocket endpoint, `rest` for the control plane), configured by [`config`].
//!
//! [`Server::start`] binds, spawns and returns a handle; the CLI (`meshcall serve`), the tests
//! and the desktop app's embedded mode all start the server the same way.

pub mod config;
mod first_bytes;
pub mod hub;
pub mod limits;
pub mod metrics;
mod outbox;
mod rest;
mod ws;

#[cfg(test)]
mod hub_tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::routing::{delete, get, post};
use axum_server::accept::NoDelayAcceptor;
use rand::Rng;
use thiserror::Error;
use tokio::sync::Notify;
use tracing::info;

use crate::auth::KeyRing;
use crate::protocol::CloseCode;
use hub::{ConnId, Hub};
use limits::ConnectRateLimiter;
use metrics::ShellMetrics;

pub use config::{ServerConfig, TlsConfig};

/// Network-shell settings (the hub has its own [`hub::HubConfig`]).
#[derive(Debug, Clone)]
pub struct ShellSettings {
    /// WebSocket ping after this much inbound silence (30 s by default).
    pub keepalive_interval: Duration,
    /// Drop the connection when nothing arrives this long after the ping (10 s by default);
    /// presence `left` follows.
    pub keepalive_grace: Duration,
    /// Frames queued per connection before it counts as a slow consumer.
    pub outbox_capacity: usize,
    /// Transport cap on one inbound message; frames above the hub's limit but below this one get
    /// a clean 1009 from the hub.
    pub max_inbound_message_bytes: usize,
    /// Per-IP connection attempts per minute (HTTP 429 above); 0 disables.
    pub connects_per_ip_per_minute: u32,
    /// Time between `going_away` and the 1001 close on shutdown.
    pub shutdown_drain: Duration,
    /// A request's headers (the WebSocket upgrade or a REST call) must have arrived this long
    /// after the connection opened or the previous request; a client trickling them
    /// (slowloris) is cut off.
    pub header_read_timeout: Duration,
    /// After the server closes a connection, the client has this long to complete the close
    /// handshake; then the TCP connection is dropped, whatever the client is doing.
    pub close_timeout: Duration,
    /// Bytes queued per connection before it counts as a slow consumer (closed with 1008).
    pub outbox_bytes: usize,
    /// Load balancers whose `X-Forwarded-For` / `Forwarded` headers name the client for the
    /// per-source connect budget (empty: headers ignored, the TCP peer is the source).
    pub trusted_proxies: limits::TrustedProxies,
    /// A REST request's body must have arrived this long after its headers (HTTP 408).
    pub request_timeout: Duration,
}

impl Default for ShellSettings {
    fn default() -> Self {
        ShellSettings {
            keepalive_interval: Duration::from_secs(30),
            keepalive_grace: Duration::from_secs(10),
            outbox_capacity: 1024,
            max_inbound_message_bytes: 1 << 20,
            connects_per_ip_per_minute: 60,
            shutdown_drain: Duration::from_millis(500),
            header_read_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            outbox_bytes: 4 << 20,
            trusted_proxies: limits::TrustedProxies::default(),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Wires hyper's timer so its HTTP/1 header-read timeout applies (without a timer hyper never
/// times out a request that trickles in).
fn http_timeouts(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    shell: &ShellSettings,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(shell.header_read_timeout);
}

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// The hub plus the per-connection outbound queues, under one lock so that outputs are queued in
/// exactly the order the hub decided them.
pub(crate) struct Core {
    pub(crate) hub: Hub,
    pub(crate) outboxes: HashMap<ConnId, outbox::Outbox>,
}

pub(crate) struct Shared {
    pub(crate) core: Mutex<Core>,
    pub(crate) keys: KeyRing,
    pub(crate) connect_limiter: Mutex<ConnectRateLimiter>,
    pub(crate) settings: ShellSettings,
    pub(crate) metrics: ShellMetrics,
    pub(crate) started_unix: u64,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) live_connections: AtomicUsize,
    pub(crate) all_closed: Notify,
    /// The hub's frame size limit, for the shell's parse-before-lock.
    pub(crate) max_frame_bytes: usize,
    /// The last `/metrics` text, served when the hub is busy.
    pub(crate) last_metrics: Mutex<String>,
}

/// Locks a mutex, recovering from poisoning: the protected state stays consistent because no
/// code path panics while holding these locks, and a poisoned lock must not take the server down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running server.
pub struct Server {
    local_addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds and starts serving. Port 0 picks a free port; see [`Server::local_addr`].
    pub async fn start(cfg: ServerConfig) -> Result<Server, ServerError> {
        let listener =
            std::net::TcpListener::bind(cfg.listen).map_err(|source| ServerError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServerError::Bind {
                addr: cfg.listen,
                source,
            })?;
        raise_fd_limit();
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                hub: Hub::new(cfg.hub.clone()),
                outboxes: HashMap::new(),
            }),
            keys: cfg.keys,
            connect_limiter: Mutex::new(ConnectRateLimiter::new(
                cfg.shell.connects_per_ip_per_minute,
                Duration::from_secs(60),
            )),
            settings: cfg.shell.clone(),
            metrics: ShellMetrics::default(),
            started_unix: ws::unix_now(),
            shutting_down: AtomicBool::new(false),
            live_connections: AtomicUsize::new(0),
            all_closed: Notify::new(),
            max_frame_bytes: cfg.hub.max_frame_bytes,
            last_metrics: Mutex::new(String::new()),
        });
        let app = Router::new()
            .route("/v1", get(ws::upgrade))
            .route("/v1/", get(ws::upgrade))
            .route("/v1/tokens", post(rest::mint_token))
            .route("/v1/channels/{id}/peers", get(rest::channel_peers))
            .route("/v1/channels/{id}/publish", post(rest::publish))
            .route("/v1/peers/{id}", delete(rest::kick_peer))
            .route("/v1/usage", get(rest::usage))
            .route("/healthz", get(rest::healthz))
            .route("/metrics", get(rest::metrics))
            .fallback(rest::not_found)
            .with_state(shared.clone());
        let make = app.into_make_service_with_connect_info::<SocketAddr>();
        let handle = axum_server::Handle::new();
        let tls = cfg.tls.is_some();
        let task = match cfg.tls {
            None => {
                // TCP_NODELAY: signalling is bursts of small frames (ack then snapshot, SDP then
                // ICE); Nagle + delayed ACK would hold the second one back ~40 ms.
                let mut server = axum_server::from_tcp(listener)
                    .map_err(|source| ServerError::Bind {
                        addr: local_addr,
                        source,
                    })?
                    .acceptor(first_bytes::FirstBytesDeadline::new(
                        NoDelayAcceptor::new(),
                        cfg.shell.header_read_timeout,
                    ))
                    .handle(handle.clone());
                http_timeouts(server.http_builder(), &cfg.shell);
                tokio::spawn(async move {
                    if let Err(e) = server.serve(make).await {
                        tracing::error!(error = %e, "server stopped with an error");
                    }
                })
            }
            Some(tls) => {
                // One crypto provider for the whole process (ring, shared with webrtc-rs);
                // installing twice is harmless.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let rustls_cfg =
                    axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                        .await
                        .map_err(|e| {
                            ServerError::Tls(format!(
                                "{} / {}: {e}",
                                tls.cert.display(),
                                tls.key.display()
                            ))
                        })?;
                let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls_cfg)
                    .acceptor(NoDelayAcceptor::new());
                let mut server = axum_server::from_tcp(listener)
                    .map_err(|source| ServerError::Bind {
                        addr: local_addr,
                        source,
                    })?
                    .acceptor(first_bytes::FirstBytesDeadline::new(
                        acceptor,
                        cfg.shell.header_read_timeout,
                    ))
                    .handle(handle.clone());
                http_timeouts(server.http_builder(), &cfg.shell);
                tokio::spawn(async move {
                    if let Err(e) = server.serve(make).await {
                        tracing::error!(error = %e, "server stopped with an error");
                    }
                })
            }
        };
        Ok(Server {
            local_addr,
            tls,
            shared,
            handle,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `ws://HOST:PORT` or `wss://HOST:PORT`: the origin clients are given (they add `/v1`).
    pub fn ws_origin(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Open WebSocket connections right now.
    pub fn connection_count(&self) -> usize {
        lock(&self.shared.core).hub.connection_count()
    }

    /// WebSocket connections whose task is still running (a connection the hub has closed
    /// counts until its socket is gone).
    pub fn open_sockets(&self) -> usize {
        self.shared.live_connections.load(Ordering::SeqCst)
    }

    /// Graceful shutdown: refuse new upgrades, send `going_away` with a jittered
    /// `retryAfterMs`, wait the drain time, close everybody with 1001, stop listening.
    pub async fn shutdown(self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let retry_after_ms = rand::rng().random_range(1000..=5000);
        {
            let mut core = lock(&self.shared.core);
            let mut out = Vec::new();
            core.hub.going_away(retry_after_ms, &mut out);
            ws::dispatch(&mut core, &mut out, None, &self.shared);
        }
        info!(retry_after_ms, "going away");
        tokio::time::sleep(self.shared.settings.shutdown_drain).await;
        {
            let mut core = lock(&self.shared.core);
            let mut out = Vec::new();
            core.hub.close_all(CloseCode::GoingAway, &mut out);
            ws::dispatch(&mut core, &mut out, None, &self.shared);
        }
        let wait_closed = async {
            loop {
                let notified = self.shared.all_closed.notified();
                if self.shared.live_connections.load(Ordering::SeqCst) == 0 {
                    break;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), wait_closed).await;
        self.handle.graceful_shutdown(Some(Duration::from_secs(1)));
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
        info!("server stopped");
    }
}

/// Each connection is a file descriptor: lift the soft limit to the hard one so that tens of
/// thousands of sockets fit (the benchmark client uses it too). Failure only means the old
/// limit stays.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        // Privileged processes may also lift the hard limit; everybody else gets soft = hard.
        let wanted: libc::rlim_t = 1 << 20;
        if lim.rlim_max < wanted {
            let up = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: wanted,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &up) == 0 {
                return;
            }
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
