//! Client configuration and its construction-time checks.

use std::sync::Arc;
use std::time::Duration;

use super::backoff::ReconnectPolicy;
use super::credential::Credential;

/// Everything a [`SignallingClient`](super::SignallingClient) needs. Defaults follow the
/// official SDKs and are set by [`ClientOptions::new`].
#[derive(Clone)]
pub struct ClientOptions {
    /// Server origin, e.g. `wss://rms.example.com` or `ws://127.0.0.1:9292` (the client adds
    /// `/v1`).
    pub url: String,
    /// API key or token provider; resolved afresh for every connect attempt.
    pub credential: Credential,
    /// `None` disables automatic reconnects.
    pub reconnect: Option<ReconnectPolicy>,
    /// No inbound frame for this long → close 4000 and reconnect; a `ping` goes out after
    /// `max(1 s, inactivity_timeout / 3)` of silence. `Duration::ZERO` disables both.
    pub inactivity_timeout: Duration,
    /// Cap on one token-provider call.
    pub token_provider_timeout: Duration,
    /// Re-subscribe every tracked channel after each reconnect welcome.
    pub auto_resubscribe: bool,
    /// Cap on waiting for a request's `ack`/`error`.
    pub ack_timeout: Duration,
    /// Cap on the WebSocket opening handshake, and separately on the wait for `welcome` after it.
    pub welcome_timeout: Duration,
    /// Pause between retries of a failed re-subscribe (3 retries, as in the official SDKs). 2 s by
    /// default; tests shorten it.
    pub resubscribe_retry_interval: Duration,
    /// TLS settings for `wss:`. `None` uses the bundled Mozilla root store (webpki-roots); set
    /// it to trust a private CA or a test certificate.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientOptions {
    /// The SDK defaults: reconnect with the default policy, 60 s inactivity, 10 s token
    /// provider, 15 s ack and 10 s welcome timeouts, auto re-subscribe on, built-in roots.
    /// Nothing is checked here; `SignallingClient::new` validates the result.
    pub fn new(url: impl Into<String>, credential: Credential) -> Self {
        ClientOptions {
            url: url.into(),
            credential,
            reconnect: Some(ReconnectPolicy::default()),
            inactivity_timeout: Duration::from_secs(60),
            token_provider_timeout: Duration::from_secs(10),
            auto_resubscribe: true,
            ack_timeout: Duration::from_secs(15),
            welcome_timeout: Duration::from_secs(10),
            resubscribe_retry_interval: Duration::from_secs(2),
            tls: None,
        }
    }

    /// Everything but the URL (checked by the caller, which keeps the parsed origin).
    pub(crate) fn validate(&self) -> Result<(), String> {
        self.credential.validate()?;
        if let Some(p) = &self.reconnect {
            p.validate()?;
        }
        for (name, d) in [
            ("token_provider_timeout", self.token_provider_timeout),
            ("ack_timeout", self.ack_timeout),
            ("welcome_timeout", self.welcome_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be > 0"));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for ClientOptions {
    /// Never prints the credential (its own `Debug` is redacted too) or the TLS internals.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("url", &super::credential::scrub(&self.url))
            .field("credential", &self.credential)
            .field("reconnect", &self.reconnect)
            .field("inactivity_timeout", &self.inactivity_timeout)
            .field("token_provider_timeout", &self.token_provider_timeout)
            .field("auto_resubscribe", &self.auto_resubscribe)
            .field("ack_timeout", &self.ack_timeout)
            .field("welcome_timeout", &self.welcome_timeout)
            .field(
                "resubscribe_retry_interval",
                &self.resubscribe_retry_interval,
            )
            .field("tls", &self.tls.as_ref().map(|_| "custom"))
            .finish()
    }
}
