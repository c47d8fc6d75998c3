//! Server configuration: a TOML file, overridden by CLI flags and `MESHCALL_*` environment
//! variables (clap handles the latter), with a documented dev mode when no key is configured.
//!
//! Every error names the offending field, so that `meshcall serve` can print it and exit 2.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;
use thiserror::Error;

use super::ShellSettings;
use super::hub::HubConfig;
use crate::auth::{Actions, KeyRing, KeyRingError, PatternSet, PublishableKey, Secret, SecretKey};

/// The default listen address (Metered's docs show a local server on port 9292).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9292";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Everything [`super::Server::start`] needs.
#[derive(Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub keys: KeyRing,
    pub hub: HubConfig,
    pub shell: ShellSettings,
    pub tls: Option<TlsConfig>,
}

impl ServerConfig {
    /// A config for tests and embedding: the given keys, default limits, `listen` as given.
    pub fn new(listen: SocketAddr, keys: KeyRing) -> Self {
        ServerConfig {
            listen,
            keys,
            hub: HubConfig::default(),
            shell: ShellSettings::default(),
            tls: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Credentials invented in dev mode, printed once at start (that print is deliberate; `Debug`
/// redacts the secret so a stray log line does not repeat it).
pub struct DevCredentials {
    pub kid: String,
    pub secret: String,
    pub publishable_key: String,
}

impl std::fmt::Debug for DevCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCredentials")
            .field("kid", &self.kid)
            .field("secret", &"<redacted>")
            .field("publishable_key", &self.publishable_key)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    #[serde(default)]
    pub secret_keys: Vec<FileSecretKey>,
    #[serde(default)]
    pub publishable_keys: Vec<FilePublishableKey>,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub policy: FilePolicy,
    pub tls: Option<FileTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSecretKey {
    pub kid: String,
    pub secret: String,
    pub channel_patterns: Option<Vec<String>>,
    pub actions: Option<Vec<String>>,
    /// The application (tenant) the key belongs to; absent: the default app.
    pub app: Option<String>,
}

impl std::fmt::Debug for FileSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSecretKey")
            .field("kid", &self.kid)
            .field("secret", &"<redacted>")
            .field("channel_patterns", &self.channel_patterns)
            .field("actions", &self.actions)
            .field("app", &self.app)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePublishableKey {
    pub key: String,
    pub channel_patterns: Option<Vec<String>>,
    pub actions: Option<Vec<String>>,
    pub allowed_origins: Option<Vec<String>>,
    pub app: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_message_bytes: Option<usize>,
    pub max_channels_per_connection: Option<usize>,
    pub messages_per_second: Option<f64>,
    pub message_burst: Option<f64>,
    pub max_connections: Option<usize>,
    pub connects_per_ip_per_minute: Option<u32>,
    pub message_quota: Option<u64>,
    pub keepalive_interval_secs: Option<u64>,
    pub keepalive_grace_secs: Option<u64>,
    pub outbox_capacity: Option<usize>,
    pub outbox_bytes: Option<usize>,
    pub close_timeout_secs: Option<u64>,
    pub header_read_timeout_secs: Option<u64>,
    pub request_timeout_secs: Option<u64>,
    pub max_snapshot_bytes: Option<usize>,
    /// Load balancers (addresses or CIDR blocks) whose forwarding headers name the client.
    pub trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePolicy {
    #[serde(default)]
    pub close_on_unauthorized_subscribe: bool,
    #[serde(default)]
    pub send_requires_shared_channel: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The key string is the whole credential: `Debug` shows only a redacted prefix.
impl fmt::Debug for FilePublishableKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilePublishableKey")
            .field("key", &redact(&self.key))
            .field("channel_patterns", &self.channel_patterns)
            .field("actions", &self.actions)
            .field("allowed_origins", &self.allowed_origins)
            .field("app", &self.app)
            .finish()
    }
}

/// The first few characters of a credential and its length, for logs and `Debug`.
fn redact(key: &str) -> String {
    let prefix: String = key.chars().take(4).collect();
    format!("{prefix}… ({} chars)", key.chars().count())
}

/// CLI / environment overrides; `None` and empty lists leave the file's value alone.
#[derive(Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    /// `KID=SECRET`, all actions, patterns `**`.
    pub secrets: Vec<String>,
    /// All actions, patterns `**`, any origin.
    pub publishable_keys: Vec<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_connections: Option<usize>,
    pub connects_per_ip_per_minute: Option<u32>,
    pub keepalive_interval_secs: Option<u64>,
    pub keepalive_grace_secs: Option<u64>,
}

/// `secrets` and `publishable_keys` hold credentials: `Debug` shows only their kids and
/// redacted prefixes.
impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self
            .secrets
            .iter()
            .map(|s| s.split_once('=').map_or("?", |(kid, _)| kid))
            .collect();
        let pks: Vec<String> = self.publishable_keys.iter().map(|k| redact(k)).collect();
        f.debug_struct("Overrides")
            .field("listen", &self.listen)
            .field("secret_kids", &kids)
            .field("publishable_keys", &pks)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("max_connections", &self.max_connections)
            .field(
                "connects_per_ip_per_minute",
                &self.connects_per_ip_per_minute,
            )
            .field("keepalive_interval_secs", &self.keepalive_interval_secs)
            .field("keepalive_grace_secs", &self.keepalive_grace_secs)
            .finish()
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses the file. A syntax error is reported by line and column with the parser's
    /// explanation, never with the offending line quoted: that line may hold a secret.
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| {
            let place = e.span().map(|span| {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}: ")
            });
            format!("{}{}", place.unwrap_or_default(), e.message().trim())
        })
    }
}

fn patterns(field: &str, list: Option<&[String]>) -> Result<PatternSet, ConfigError> {
    match list {
        None => Ok(PatternSet::any()),
        Some(list) => PatternSet::parse(list).map_err(|e| invalid(field, e.to_string())),
    }
}

fn actions(field: &str, list: Option<&[String]>) -> Result<Actions, ConfigError> {
    match list {
        None => Ok(Actions::all()),
        Some(list) => Actions::from_names(list).map_err(|_| {
            invalid(
                field,
                "unknown action (allowed: publish, subscribe, presence, send)",
            )
        }),
    }
}

fn parse_secret_flag(i: usize, flag: &str) -> Result<SecretKey, ConfigError> {
    let field = format!("--secret[{i}]");
    let Some((kid, secret)) = flag.split_once('=') else {
        return Err(invalid(field, "expected KID=SECRET"));
    };
    secret_key(&field, kid, secret, None, None)
}

fn secret_key(
    field: &str,
    kid: &str,
    secret: &str,
    pats: Option<&[String]>,
    acts: Option<&[String]>,
) -> Result<SecretKey, ConfigError> {
    // ':' separates the kid from the secret in REST's `Bearer kid:secret`: a kid holding one
    // could sign tokens but never authenticate a REST call.
    if kid.is_empty() || kid.len() > 128 || !kid.bytes().all(|b| b.is_ascii_graphic() && b != b':')
    {
        return Err(invalid(
            format!("{field}.kid"),
            "must be 1-128 printable ASCII characters without spaces or ':'",
        ));
    }
    if secret.len() < 16 {
        return Err(invalid(
            format!("{field}.secret"),
            "must be at least 16 bytes long",
        ));
    }
    Ok(SecretKey {
        kid: kid.to_string(),
        secret: Secret::new(secret.as_bytes().to_vec()),
        channel_patterns: patterns(&format!("{field}.channel_patterns"), pats)?,
        actions: actions(&format!("{field}.actions"), acts)?,
        app: String::new(),
    })
}

fn publishable_key(field: &str, f: &FilePublishableKey) -> Result<PublishableKey, ConfigError> {
    if f.key.len() < 8 || f.key.len() > 256 || !f.key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            format!("{field}.key"),
            "must be 8-256 printable ASCII characters without spaces",
        ));
    }
    Ok(PublishableKey {
        key: f.key.clone(),
        channel_patterns: patterns(
            &format!("{field}.channel_patterns"),
            f.channel_patterns.as_deref(),
        )?,
        actions: actions(&format!("{field}.actions"), f.actions.as_deref())?,
        allowed_origins: f.allowed_origins.clone(),
        app: app_name(&format!("{field}.app"), f.app.as_deref())?,
    })
}

/// An application name: 1-64 printable ASCII characters (it scopes peer ids and channels).
fn app_name(field: &str, app: Option<&str>) -> Result<String, ConfigError> {
    match app {
        None => Ok(String::new()),
        Some(a) if !a.is_empty() && a.len() <= 64 && a.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(a.to_string())
        }
        Some(_) => Err(invalid(
            field,
            "must be 1-64 printable ASCII characters without spaces",
        )),
    }
}

/// Merges file and overrides into a runnable config. Returns the invented credentials when no
/// key at all was configured (dev mode).
pub fn resolve(
    file: FileConfig,
    o: Overrides,
) -> Result<(ServerConfig, Option<DevCredentials>), ConfigError> {
    let listen_text = o
        .listen
        .clone()
        .or(file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        invalid(
            "listen",
            format!("'{listen_text}' is not an IP:PORT address"),
        )
    })?;

    let mut keys = KeyRing::default();
    for (i, k) in file.secret_keys.iter().enumerate() {
        keys.secret_keys.push(
            secret_key(
                &format!("secret_keys[{i}]"),
                &k.kid,
                &k.secret,
                k.channel_patterns.as_deref(),
                k.actions.as_deref(),
            )
            .and_then(|mut key| {
                key.app = app_name(&format!("secret_keys[{i}].app"), k.app.as_deref())?;
                Ok(key)
            })?,
        );
    }
    for (i, flag) in o.secrets.iter().enumerate() {
        keys.secret_keys.push(parse_secret_flag(i, flag)?);
    }
    for (i, k) in file.publishable_keys.iter().enumerate() {
        keys.publishable_keys
            .push(publishable_key(&format!("publishable_keys[{i}]"), k)?);
    }
    for (i, k) in o.publishable_keys.iter().enumerate() {
        let f = FilePublishableKey {
            key: k.clone(),
            channel_patterns: None,
            actions: None,
            allowed_origins: None,
            app: None,
        };
        keys.publishable_keys
            .push(publishable_key(&format!("--publishable-key[{i}]"), &f)?);
    }
    let mut kids: Vec<&str> = keys.secret_keys.iter().map(|k| k.kid.as_str()).collect();
    kids.sort_unstable();
    if let Some(w) = kids.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid(
            "secret_keys",
            format!("kid '{}' is configured twice", w[0]),
        ));
    }

    // What the ring itself refuses (a publishable key configured twice would silently send the
    // second entry's clients into the first one's app and scope).
    keys.validate().map_err(|e| {
        let field = match e {
            KeyRingError::BadPublishableKey(_) => "publishable_keys",
            _ => "secret_keys",
        };
        invalid(field, e.to_string())
    })?;

    let dev = if keys.secret_keys.is_empty() && keys.publishable_keys.is_empty() {
        let mut rng = rand::rng();
        let secret: String = (0..32)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect();
        let pk: String = (0..12)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect();
        let dev = DevCredentials {
            kid: "dev".into(),
            secret,
            publishable_key: format!("pk_dev_{pk}"),
        };
        keys.secret_keys
            .push(secret_key("dev", &dev.kid, &dev.secret, None, None)?);
        keys.publishable_keys.push(PublishableKey {
            key: dev.publishable_key.clone(),
            channel_patterns: PatternSet::any(),
            actions: Actions::all(),
            allowed_origins: None,
            app: String::new(),
        });
        Some(dev)
    } else {
        None
    };

    let l = &file.limits;
    let mut hub = HubConfig::default();
    if let Some(v) = l.max_message_bytes {
        if !(1024..=1 << 20).contains(&v) {
            return Err(invalid(
                "limits.max_message_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        hub.max_frame_bytes = v;
    }
    if let Some(v) = l.max_channels_per_connection {
        if v == 0 {
            return Err(invalid(
                "limits.max_channels_per_connection",
                "must be at least 1",
            ));
        }
        hub.max_channels_per_connection = v;
    }
    if let Some(v) = l.messages_per_second {
        if !v.is_finite() || v < 0.0 {
            return Err(invalid(
                "limits.messages_per_second",
                "must be 0 (off) or positive",
            ));
        }
        hub.rate_per_sec = v;
    }
    if let Some(v) = l.message_burst {
        if !v.is_finite() || v < 1.0 {
            return Err(invalid("limits.message_burst", "must be at least 1"));
        }
        hub.rate_burst = v;
    }
    hub.max_connections = o.max_connections.or(l.max_connections).unwrap_or(0);
    hub.message_quota = l.message_quota;
    hub.close_on_unauthorized_subscribe = file.policy.close_on_unauthorized_subscribe;
    hub.send_requires_shared_channel = file.policy.send_requires_shared_channel;

    let mut shell = ShellSettings::default();
    if let Some(v) = o
        .connects_per_ip_per_minute
        .or(l.connects_per_ip_per_minute)
    {
        shell.connects_per_ip_per_minute = v;
    }
    if let Some(v) = o.keepalive_interval_secs.or(l.keepalive_interval_secs) {
        if v == 0 {
            return Err(invalid(
                "limits.keepalive_interval_secs",
                "must be at least 1",
            ));
        }
        shell.keepalive_interval = Duration::from_secs(v);
    }
    if let Some(v) = o.keepalive_grace_secs.or(l.keepalive_grace_secs) {
        if v == 0 {
            return Err(invalid("limits.keepalive_grace_secs", "must be at least 1"));
        }
        shell.keepalive_grace = Duration::from_secs(v);
    }
    if let Some(v) = l.outbox_capacity {
        if v < 16 {
            return Err(invalid("limits.outbox_capacity", "must be at least 16"));
        }
        shell.outbox_capacity = v;
    }
    if let Some(v) = l.outbox_bytes {
        if v < 65_536 || v < hub.max_frame_bytes {
            return Err(invalid(
                "limits.outbox_bytes",
                "must be at least 65536 and at least max_message_bytes",
            ));
        }
        shell.outbox_bytes = v;
    }
    if let Some(v) = l.close_timeout_secs {
        if v == 0 {
            return Err(invalid("limits.close_timeout_secs", "must be at least 1"));
        }
        shell.close_timeout = Duration::from_secs(v);
    }
    if let Some(v) = &l.trusted_proxies {
        shell.trusted_proxies = super::limits::TrustedProxies::parse(v)
            .map_err(|e| invalid("limits.trusted_proxies", e))?;
    }
    if let Some(v) = l.max_snapshot_bytes {
        if v < 4_096 {
            return Err(invalid(
                "limits.max_snapshot_bytes",
                "must be at least 4096",
            ));
        }
        hub.max_snapshot_bytes = v;
    }
    if let Some(v) = l.request_timeout_secs {
        if v == 0 {
            return Err(invalid("limits.request_timeout_secs", "must be at least 1"));
        }
        shell.request_timeout = Duration::from_secs(v);
    }
    if let Some(v) = l.header_read_timeout_secs {
        if v == 0 {
            return Err(invalid(
                "limits.header_read_timeout_secs",
                "must be at least 1",
            ));
        }
        shell.header_read_timeout = Duration::from_secs(v);
    }
    shell.max_inbound_message_bytes = (hub.max_frame_bytes * 2).max(1 << 20);

    let tls = match (
        o.tls_cert.or(file.tls.as_ref().map(|t| t.cert.clone())),
        o.tls_key.or(file.tls.as_ref().map(|t| t.key.clone())),
    ) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(TlsConfig { cert, key }),
        (Some(_), None) => return Err(invalid("tls.key", "a certificate needs its private key")),
        (None, Some(_)) => return Err(invalid("tls.cert", "a private key needs its certificate")),
    };
    Ok((
        ServerConfig {
            listen,
            keys,
            hub,
            shell,
            tls,
        },
        dev,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[test]
    fn no_config_is_dev_mode() {
        let (cfg, dev) = resolve(FileConfig::default(), Overrides::default()).expect("dev mode");
        let dev = dev.expect("dev credentials");
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert!(dev.publishable_key.starts_with("pk_dev_"));
        assert_eq!(dev.secret.len(), 64);
        assert_eq!(cfg.keys.secret_keys.len(), 1);
        assert_eq!(cfg.keys.publishable_keys.len(), 1);
    }

    #[test]
    fn file_and_overrides_merge() {
        let file = FileConfig::parse(
            r#"
            listen = "127.0.0.1:7000"
            [[secret_keys]]
            kid = "sk_id_a"
            secret = "0123456789abcdef0123"
            channel_patterns = ["app/**"]
            actions = ["publish", "subscribe"]
            [[publishable_keys]]
            key = "pk_live_abcdef"
            allowed_origins = ["https://example.test"]
            [limits]
            max_connections = 10
            messages_per_second = 50
            [policy]
            send_requires_shared_channel = true
            "#,
        )
        .expect("valid toml");
        let o = Overrides {
            listen: Some("127.0.0.1:0".into()),
            secrets: vec!["k2=fedcba9876543210fedcba".into()],
            max_connections: Some(20),
            ..Overrides::default()
        };
        let (cfg, dev) = resolve(file, o).expect("valid");
        assert!(dev.is_none());
        assert_eq!(cfg.listen.port(), 0);
        assert_eq!(cfg.keys.secret_keys.len(), 2);
        assert!(!cfg.keys.secret_keys[0].channel_patterns.matches("other/x"));
        assert!(cfg.keys.secret_keys[1].channel_patterns.matches("other/x"));
        assert_eq!(cfg.hub.max_connections, 20);
        assert_eq!(cfg.hub.rate_per_sec, 50.0);
        assert!(cfg.hub.send_requires_shared_channel);
    }

    #[test]
    fn keys_carry_their_app_and_limits_their_values() {
        let file = FileConfig::parse(
            r#"
            [[secret_keys]]
            kid = "a"
            secret = "0123456789abcdef"
            app = "team-a"
            [[secret_keys]]
            kid = "b"
            secret = "0123456789abcdef"
            [[publishable_keys]]
            key = "pk_live_12345678"
            app = "team-a"
            [limits]
            outbox_bytes = 1048576
            close_timeout_secs = 3
            max_snapshot_bytes = 65536
            trusted_proxies = ["10.0.0.0/8", "::1"]
            "#,
        )
        .expect("toml");
        let (cfg, _) = resolve(file, Overrides::default()).expect("valid");
        let apps: Vec<&str> = cfg
            .keys
            .secret_keys
            .iter()
            .map(|k| k.app.as_str())
            .collect();
        assert_eq!(apps, ["team-a", ""], "no app: the default one");
        assert_eq!(cfg.keys.publishable_keys[0].app, "team-a");
        assert_eq!(cfg.shell.outbox_bytes, 1 << 20);
        assert_eq!(cfg.shell.close_timeout, Duration::from_secs(3));
        assert_eq!(cfg.hub.max_snapshot_bytes, 65_536);
        assert!(
            cfg.shell
                .trusted_proxies
                .contains("10.2.3.4".parse().expect("ip"))
        );
    }

    #[test]
    fn bad_config_names_the_field() {
        let bad = |text: &str| {
            field_of(
                resolve(FileConfig::parse(text).expect("toml"), Overrides::default())
                    .expect_err("invalid"),
            )
        };
        assert_eq!(bad(r#"listen = "nowhere""#), "listen");
        assert_eq!(
            bad("[[secret_keys]]\nkid = \"a\"\nsecret = \"short\""),
            "secret_keys[0].secret"
        );
        assert_eq!(
            bad("[[secret_keys]]\nkid = \"a\"\nsecret = \"0123456789abcdef\"\nactions = [\"fly\"]"),
            "secret_keys[0].actions"
        );
        assert_eq!(
            bad(
                "[[secret_keys]]\nkid = \"a\"\nsecret = \"0123456789abcdef\"\nchannel_patterns = [\"x\\\\\"]"
            ),
            "secret_keys[0].channel_patterns"
        );
        assert_eq!(
            bad("[limits]\nmax_message_bytes = 10"),
            "limits.max_message_bytes"
        );
        assert_eq!(
            bad("[[secret_keys]]\nkid = \"a\"\nsecret = \"0123456789abcdef\"\napp = \"two words\""),
            "secret_keys[0].app"
        );
        assert_eq!(bad("[limits]\noutbox_bytes = 1000"), "limits.outbox_bytes");
        assert_eq!(
            bad("[limits]\ntrusted_proxies = [\"lb.internal\"]"),
            "limits.trusted_proxies"
        );
        assert_eq!(
            bad("[limits]\nclose_timeout_secs = 0"),
            "limits.close_timeout_secs"
        );
        let e = resolve(
            FileConfig::default(),
            Overrides {
                secrets: vec!["nokey".into()],
                ..Overrides::default()
            },
        )
        .expect_err("invalid");
        assert_eq!(field_of(e), "--secret[0]");
        // Unknown keys are refused by the TOML layer, with the key's name in the message.
        let e = FileConfig::parse("[limits]\nmax_conections = 3").expect_err("typo");
        assert!(e.contains("max_conections"), "{e}");
    }

    #[test]
    fn a_parse_error_names_the_place_but_never_quotes_the_line() {
        // The broken line holds a secret: the message must say where, not echo it.
        let text = "[server]\nlisten = \"127.0.0.1:9292\"\nsecret_keys = [ { kid = \"a\", secret = \"hunter2-0123456789\" \n";
        let e = FileConfig::parse(text).expect_err("broken");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn key_rings_that_could_never_work_are_refused() {
        // A kid with ':' could sign tokens but never authenticate REST ("Bearer kid:secret").
        let text = "[[secret_keys]]\nkid = \"team:a\"\nsecret = \"0123456789abcdef0\"\n";
        let e = resolve(
            FileConfig::parse(text).expect("parses"),
            Overrides::default(),
        )
        .expect_err("a kid with ':' is refused");
        assert!(e.to_string().contains("secret_keys[0].kid"), "{e}");
        // The same publishable key twice would send the second one's clients into the first
        // one's app and scope.
        let text = "[[publishable_keys]]\nkey = \"pk_live_same_key\"\napp = \"a\"\n\
                    [[publishable_keys]]\nkey = \"pk_live_same_key\"\napp = \"b\"\n";
        let e = resolve(
            FileConfig::parse(text).expect("parses"),
            Overrides::default(),
        )
        .expect_err("a duplicate publishable key is refused");
        assert!(e.to_string().contains("configured twice"), "{e}");
        assert!(!e.to_string().contains("pk_live_same_key"), "redacted: {e}");
        // The flag form too.
        let o = Overrides {
            publishable_keys: vec!["pk_flag_1234".into(), "pk_flag_1234".into()],
            ..Overrides::default()
        };
        assert!(resolve(FileConfig::default(), o).is_err());
    }

    #[test]
    fn debug_output_never_shows_a_publishable_key_or_a_secret_flag() {
        let text = "[[publishable_keys]]\nkey = \"pk_live_hunter2key\"\n";
        let f = FileConfig::parse(text).expect("valid");
        let shown = format!("{f:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let o = Overrides {
            secrets: vec!["kid=hunter2-0123456789".into()],
            publishable_keys: vec!["pk_hunter2_flag".into()],
            ..Overrides::default()
        };
        let shown = format!("{o:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let text = "listen = \"127.0.0.1:9292\"\n[[secret_keys]]\nkid = \"a\"\nsecret = \"hunter2-0123456789\"\n";
        let f = FileConfig::parse(text).expect("valid");
        let shown = format!("{f:?}");
        assert!(shown.contains("\"a\""), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let dev = DevCredentials {
            kid: "dev".into(),
            secret: "hunter2-0123456789".into(),
            publishable_key: "pk_dev_1234567890abcdef".into(),
        };
        let shown = format!("{dev:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
