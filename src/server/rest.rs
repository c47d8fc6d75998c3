//! The REST control plane on the same port as the WebSocket: token minting, channel presence,
//! server-side publish, kicks, usage, plus `/healthz` and `/metrics`. Authentication is
//! `Authorization: Bearer <kid>:<secret>` with one identical 401 for every failure, so that key ids
//! cannot be probed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::hub::RestPublishError;
use super::ws::{dispatch, unix_now};
use super::{Shared, lock};
use crate::auth::jwt::MAX_PEER_METADATA_BYTES;
use crate::auth::{Action, ChannelPattern, MintRequest, SecretKey, mint};
use crate::protocol::validate::{check_channel, check_not_reserved, check_peer_id};

/// Largest accepted request body (Metered: 32 KB → 413).
const MAX_BODY_BYTES: usize = 32 * 1024;
const DEFAULT_TOKEN_TTL: u64 = 3600;
const MAX_TOKEN_TTL: u64 = 86_400;

/// A REST failure: HTTP status plus the `{"error","message"}` body.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn error(status: StatusCode, code: &'static str, message: &str) -> ApiError {
    ApiError {
        status,
        code,
        message: message.to_string(),
    }
}

fn unauthorized() -> ApiError {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid 'Authorization: Bearer <kid>:<secret>' header is required",
    )
}

fn bearer<'a>(shared: &'a Shared, headers: &HeaderMap) -> Result<&'a SecretKey, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|cred| shared.keys.secret_key_for_bearer(cred.trim()))
        .ok_or_else(unauthorized)
}

/// Reads and parses a request body, which must arrive whole within `timeout` (a client
/// trickling its body must not hold the request open).
async fn read_json<T: for<'de> Deserialize<'de>>(
    body: Body,
    timeout: std::time::Duration,
) -> Result<T, ApiError> {
    let bytes = tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY_BYTES))
        .await
        .map_err(|_| {
            error(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive in time",
            )
        })?
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "request body exceeds 32 KiB",
            )
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        // serde's message names the field and position, never echoes secrets from headers.
        error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string())
    })
}

/// Validates a channel taken from a path and checks the key's scope for `action`.
fn channel_scope(key: &SecretKey, channel: &str, action: Action) -> Result<(), ApiError> {
    if check_channel(channel).is_err() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "channel must be 1-256 bytes without control characters",
        ));
    }
    if check_not_reserved(channel).is_err() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "channel_reserved",
            "channel prefix is reserved",
        ));
    }
    if !key.actions.contains(action) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "action_not_permitted",
            &format!("key lacks the {} action", action.as_str()),
        ));
    }
    if !key.channel_patterns.matches(channel) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "channel_not_authorized",
            "channel is outside the key's channel patterns",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenRequest {
    peer_id: String,
    channels: Option<Vec<String>>,
    permissions: Option<Vec<String>>,
    expires_in_sec: Option<u64>,
    metadata: Option<Value>,
    peer_metadata: Option<Value>,
}

/// `POST /v1/tokens`
pub(crate) async fn mint_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let key = bearer(&shared, &headers)?;
    let req: TokenRequest = read_json(body, shared.settings.request_timeout).await?;
    if check_peer_id(&req.peer_id).is_err() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "peerId must be 1-128 printable ASCII characters",
        ));
    }
    if let Some(channels) = &req.channels {
        if channels.len() > 100 {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "at most 100 channels",
            ));
        }
        for ch in channels {
            if check_channel(ch).is_err() {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "invalid channel pattern",
                ));
            }
            if check_not_reserved(ch).is_err() {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "channel_reserved",
                    "channel prefix is reserved",
                ));
            }
            // A requested pattern must lie inside the key's patterns (`covers` never says yes
            // wrongly; for unusual glob pairs it may refuse, which is the safe side).
            let Ok(pattern) = ChannelPattern::parse(ch) else {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "invalid channel pattern",
                ));
            };
            if !key.channel_patterns.covers(&pattern) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "channel_not_authorized",
                    "requested channels exceed the key's channel patterns",
                ));
            }
        }
    }
    let permissions = match &req.permissions {
        None => None,
        Some(list) if list.len() > 16 => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "at most 16 permissions",
            ));
        }
        Some(list) => {
            let mut out = Vec::new();
            for name in list {
                let Some(a) = Action::parse(name) else {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "permissions must be publish, subscribe, presence or send",
                    ));
                };
                if !key.actions.contains(a) {
                    return Err(error(
                        StatusCode::FORBIDDEN,
                        "action_not_permitted",
                        "requested permissions exceed the key's actions",
                    ));
                }
                out.push(a);
            }
            Some(out)
        }
    };
    let ttl = req.expires_in_sec.unwrap_or(DEFAULT_TOKEN_TTL);
    if ttl == 0 || ttl > MAX_TOKEN_TTL {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expiresInSec must be between 1 and 86400",
        ));
    }
    let mint_req = MintRequest {
        sub: req.peer_id,
        channels: req.channels,
        permissions,
        ttl_secs: ttl,
        peer_metadata: req.peer_metadata,
        metadata: req.metadata,
    };
    match mint(key, &mint_req, unix_now()) {
        Ok((token, exp)) => Ok(Json(json!({"token": token, "expiresAt": exp})).into_response()),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &e.to_string(),
        )),
    }
}

/// `GET /v1/channels/:id/peers`
pub(crate) async fn channel_peers(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(channel): Path<String>,
) -> ApiResult {
    let key = bearer(&shared, &headers)?;
    channel_scope(key, &channel, Action::Presence)?;
    let peers = lock(&shared.core).hub.channel_peers(&key.app, &channel);
    Ok(Json(json!({"channel": channel, "peers": peers})).into_response())
}

fn present_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PublishRequest {
    #[serde(default, deserialize_with = "present_raw")]
    data: Option<Box<RawValue>>,
    from: Option<String>,
    peer_metadata: Option<Value>,
}

/// `POST /v1/channels/:id/publish` → `{"channel", "delivered"}`
pub(crate) async fn publish(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(channel): Path<String>,
    body: Body,
) -> ApiResult {
    let key = bearer(&shared, &headers)?;
    channel_scope(key, &channel, Action::Publish)?;
    let req: PublishRequest = read_json(body, shared.settings.request_timeout).await?;
    let Some(data) = req.data else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "data is required",
        ));
    };
    if crate::protocol::validate::json_deeper_than(
        data.get(),
        crate::protocol::validate::MAX_DATA_DEPTH,
    ) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "data is nested deeper than 64 levels",
        ));
    }
    let from = req.from.unwrap_or_else(|| "system".to_string());
    if check_peer_id(&from).is_err() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "from must be 1-128 printable ASCII characters",
        ));
    }
    if let Some(meta) = &req.peer_metadata {
        let too_big =
            serde_json::to_string(meta).map_or(true, |s| s.len() > MAX_PEER_METADATA_BYTES);
        if !meta.is_object() || too_big {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "peerMetadata must be a JSON object of at most 4 KiB",
            ));
        }
    }
    let mut core = lock(&shared.core);
    let mut out = Vec::new();
    let result = core.hub.rest_publish(
        &key.app,
        &channel,
        &from,
        req.peer_metadata.as_ref(),
        &data,
        &mut out,
    );
    dispatch(&mut core, &mut out, None, &shared);
    drop(core);
    match result {
        Ok(delivered) => {
            Ok(Json(json!({"channel": channel, "delivered": delivered})).into_response())
        }
        Err(RestPublishError::OverQuota) => Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            "over_message_quota",
            "message quota exhausted",
        )),
    }
}

/// `DELETE /v1/peers/:id` → every socket of the peer closes with 4020.
pub(crate) async fn kick_peer(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(peer_id): Path<String>,
) -> ApiResult {
    let key = bearer(&shared, &headers)?;
    if check_peer_id(&peer_id).is_err() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "peer id must be 1-128 printable ASCII characters",
        ));
    }
    let mut core = lock(&shared.core);
    let mut out = Vec::new();
    // Only the calling key's app: another tenant's peer of the same id is not ours to kick.
    let closed = core.hub.kick(&key.app, &peer_id, &mut out);
    dispatch(&mut core, &mut out, None, &shared);
    drop(core);
    tracing::info!(peer = %peer_id, closed, "peer kicked through REST");
    Ok(Json(json!({"peerId": peer_id, "closed": closed})).into_response())
}

/// `GET /v1/usage`
pub(crate) async fn usage(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult {
    let key = bearer(&shared, &headers)?;
    let core = lock(&shared.core);
    let cfg = core.hub.config();
    // Only the calling key's application: another tenant's traffic is not ours to see.
    let usage = core.hub.app_usage(&key.app);
    let max_conns = (cfg.max_connections > 0).then_some(cfg.max_connections);
    let over = cfg
        .message_quota
        .map_or(0, |q| usage.messages_used.saturating_sub(q));
    let app_id = if key.app.is_empty() {
        "self-hosted".to_string()
    } else {
        key.app.clone()
    };
    let body = json!({
        "appId": app_id,
        "periodStartUnix": shared.started_unix,
        "periodEndUnix": null,
        "concurrentNow": usage.connections,
        "peakConcurrent": usage.peak_connections,
        "messagesUsed": usage.messages_used,
        "overageMessages": over,
        "overageConnections": 0,
        "plan": {
            "name": "SELF_HOSTED",
            "maxConcurrentConnections": max_conns,
            "maxMessagesPerPeriod": cfg.message_quota,
            "overagesAllowed": false,
            "overagesEnabled": false,
        },
    });
    drop(core);
    Ok(Json(body).into_response())
}

/// `GET /healthz`: 200 while serving, 503 once shutdown began (for load balancers).
pub(crate) async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.shutting_down.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down"})),
        )
            .into_response();
    }
    // Never waits for the hub: a load balancer's probe must answer while the hub is busy.
    let connections = shared.live_connections.load(Ordering::Relaxed);
    Json(json!({"status": "ok", "connections": connections})).into_response()
}

/// `GET /metrics` (Prometheus text format 0.0.4).
pub(crate) async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    // Never waits for the hub: when it is busy, the previous rendering is served (at most as
    // old as the previous scrape), so a scrape cannot stall a worker behind a big fan-out.
    let render = |core: &super::Core| {
        super::metrics::render(
            core.hub.stats(),
            core.hub.connection_count(),
            core.hub.channel_count(),
            &shared.metrics,
        )
    };
    let cached = || Some(lock(&shared.last_metrics).clone()).filter(|t| !t.is_empty());
    let text = match shared.core.try_lock() {
        Ok(core) => render(&core),
        Err(_) => match cached() {
            Some(text) => text,
            None => render(&lock(&shared.core)), // the very first scrape waits once
        },
    };
    *lock(&shared.last_metrics) = text.clone();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub(crate) async fn not_found() -> ApiError {
    error(StatusCode::NOT_FOUND, "not_found", "unknown endpoint")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::body::to_bytes;

    use super::*;
    use crate::server::{Server, ServerConfig};

    async fn body(r: Response) -> String {
        let b = to_bytes(r.into_body(), 1 << 20).await.unwrap_or_default();
        String::from_utf8_lossy(&b).into_owned()
    }

    /// `/healthz` and `/metrics` must answer while the hub is busy (a big fan-out holds its
    /// lock): a load balancer's probe or a scrape that waits could stall a runtime worker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_and_metrics_answer_while_the_hub_is_busy() {
        let server = Server::start(ServerConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            crate::auth::KeyRing::default(),
        ))
        .await
        .expect("server");
        let shared = server.shared.clone();
        let first = body(metrics(State(shared.clone())).await).await;
        assert!(first.contains("meshcall_connections"), "{first}");
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let busy = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let _hub = lock(&shared.core);
                let _ = held_tx.send(());
                std::thread::sleep(Duration::from_secs(2));
            })
        };
        held_rx.recv().expect("the hub lock is held");
        let started = Instant::now();
        let health = body(healthz(State(shared.clone())).await).await;
        let scraped = body(metrics(State(shared.clone())).await).await;
        let waited = started.elapsed();
        assert!(health.contains("\"ok\""), "{health}");
        assert_eq!(scraped, first, "the previous rendering while busy");
        assert!(
            waited < Duration::from_millis(500),
            "waited {waited:?} for the hub"
        );
        busy.join().expect("thread");
    }
}
