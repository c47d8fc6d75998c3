//! The connect credential: a fixed API key or an async token provider.
//!
//! The credential travels in the connect URL's query string, so it is the one secret this
//! layer holds. It is kept inside [`Credential`] only: `Debug` is redacted, it never enters
//! an error or a log line, and provider errors are scrubbed of `token=`/`key=` values before
//! they are shown. Credentials never appear in `Debug` output, logs or errors.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Mints a token for each connect attempt. `Err` carries a human-readable reason; it is
/// scrubbed before anyone sees it.
pub type TokenProvider =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// An API key whose text cannot be read back, printed or serialised: the only way out is the
/// connect URL built inside this module. Construct it with [`Credential::api_key`] (or `.into()`).
#[derive(Clone)]
pub struct ApiKey(String);

impl From<String> for ApiKey {
    fn from(s: String) -> Self {
        ApiKey(s)
    }
}

impl From<&str> for ApiKey {
    fn from(s: &str) -> Self {
        ApiKey(s.to_string())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the client authenticates. Exactly one kind per client, so "both or neither" cannot be
/// expressed.
#[derive(Clone)]
pub enum Credential {
    /// Sent as `?key=…` on every connect, as is (publishable keys).
    ApiKey(ApiKey),
    /// Awaited before every connect and reconnect attempt, under
    /// `ClientOptions::token_provider_timeout`; the token is sent as `?token=…`.
    TokenProvider(TokenProvider),
}

impl Credential {
    /// A fixed API key, sent unchanged on every connect. An empty key is refused by
    /// `SignallingClient::new` with `InvalidOptions`.
    pub fn api_key(key: impl Into<String>) -> Self {
        Credential::ApiKey(ApiKey(key.into()))
    }

    /// Wraps an async closure, e.g. `Credential::token_provider(|| async { fetch().await })`.
    pub fn token_provider<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        Credential::TokenProvider(Arc::new(move || Box::pin(f())))
    }

    /// Construction-time check: an empty API key can never authenticate.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match self {
            Credential::ApiKey(k) if k.0.is_empty() => Err("the API key is empty".into()),
            _ => Ok(()),
        }
    }

    /// Produces the query string for one connect attempt (`key=…` or `token=…`, value
    /// percent-encoded). Errors are already scrubbed. An empty token counts as a failure
    /// (Python SDK): connecting with it would only earn a 4001 that ends the client.
    pub(crate) async fn resolve(&self, timeout: Duration) -> Result<ResolvedCredential, String> {
        match self {
            Credential::ApiKey(k) => Ok(ResolvedCredential(format!(
                "key={}",
                super::url::percent_encode(&k.0)
            ))),
            Credential::TokenProvider(p) => match tokio::time::timeout(timeout, p()).await {
                Err(_) => Err(format!("token provider timed out after {timeout:?}")),
                Ok(Err(e)) => Err(scrub(&e)),
                Ok(Ok(t)) if t.is_empty() => Err("token provider returned an empty token".into()),
                Ok(Ok(t)) => Ok(ResolvedCredential(format!(
                    "token={}",
                    super::url::percent_encode(&t)
                ))),
            },
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::ApiKey(_) => f.write_str("Credential::ApiKey(<redacted>)"),
            Credential::TokenProvider(_) => f.write_str("Credential::TokenProvider"),
        }
    }
}

/// The `key=…`/`token=…` query of one connect attempt. Redacted in `Debug`; dropped as soon as
/// the request is built.
pub(crate) struct ResolvedCredential(String);

impl ResolvedCredential {
    pub(crate) fn query(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ResolvedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResolvedCredential(<redacted>)")
    }
}

/// Masks credential-shaped substrings in text that may reach a log, an event or an error (the same
/// patterns the official SDKs scrub): query parameters `token=`/`key=` and the SDP/TURN fields
/// `ice-pwd`, `ice-ufrag`, `credential` followed by `:` or `=`. Values run to the next delimiter.
pub fn scrub(text: &str) -> String {
    const QUERY_KEYS: [&str; 2] = ["token=", "key="];
    const FIELD_KEYS: [&str; 3] = ["ice-pwd", "ice-ufrag", "credential"];
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        // token= / key= right after `?` or `&`.
        let after_sep = i > 0 && matches!(bytes[i - 1], b'?' | b'&');
        if after_sep && let Some(k) = QUERY_KEYS.iter().find(|k| starts_with_ci(rest, k)) {
            out.push_str(&rest[..k.len()]);
            out.push_str("***");
            i += k.len();
            i += value_len(&text[i..], false);
            continue;
        }
        if let Some(k) = FIELD_KEYS.iter().find(|k| starts_with_ci(rest, k)) {
            let after = &rest[k.len()..];
            // Optional quote after the name (JSON `"credential":"…"`), spaces, then `:` or `=`.
            let skip_quote = usize::from(after.starts_with('"'));
            let after_q = &after[skip_quote..];
            let spaces = after_q.len() - after_q.trim_start_matches(' ').len();
            let after_s = &after_q[spaces..];
            if after_s.starts_with(':') || after_s.starts_with('=') {
                let head = k.len() + skip_quote + spaces + 1;
                out.push_str(&rest[..head]);
                let mut j = i + head;
                // Optional spaces and an opening quote before the value.
                while text[j..].starts_with(' ') {
                    out.push(' ');
                    j += 1;
                }
                let quoted = text[j..].starts_with('"');
                if quoted {
                    out.push('"');
                    j += 1;
                }
                out.push_str("***");
                j += value_len(&text[j..], quoted);
                if quoted && text[j..].starts_with('"') {
                    out.push('"');
                    j += 1;
                }
                i = j;
                continue;
            }
        }
        // Copy one whole character.
        let ch_len = rest.chars().next().map_or(1, char::len_utf8);
        out.push_str(&rest[..ch_len]);
        i += ch_len;
    }
    out
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Length in bytes of a secret value: up to a quote when quoted, else up to whitespace, `&`,
/// `,`, `;`, `"`, `'`, `)` or `}`.
fn value_len(s: &str, quoted: bool) -> usize {
    s.char_indices()
        .find(|&(_, c)| {
            if quoted {
                c == '"'
            } else {
                c.is_whitespace() || matches!(c, '&' | ',' | ';' | '"' | '\'' | ')' | '}' | ']')
            }
        })
        .map_or(s.len(), |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let k = Credential::api_key("pk_live_supersecret");
        assert_eq!(format!("{k:?}"), "Credential::ApiKey(<redacted>)");
        let ApiKey(inner) = match &k {
            Credential::ApiKey(a) => a.clone(),
            Credential::TokenProvider(_) => unreachable!(),
        };
        assert_eq!(inner, "pk_live_supersecret");
        let p = Credential::token_provider(|| async { Ok("jwt".to_string()) });
        assert_eq!(format!("{p:?}"), "Credential::TokenProvider");
        assert_eq!(format!("{:?}", ApiKey::from("x")), "<redacted>");
    }

    #[tokio::test]
    async fn resolves_each_kind() {
        let k = Credential::api_key("pk a/b");
        let r = k.resolve(Duration::from_secs(1)).await.expect("key");
        assert_eq!(r.query(), "key=pk%20a%2Fb");
        assert_eq!(format!("{r:?}"), "ResolvedCredential(<redacted>)");

        let p = Credential::token_provider(|| async { Ok("a.b.c".to_string()) });
        let r = p.resolve(Duration::from_secs(1)).await.expect("token");
        assert_eq!(r.query(), "token=a.b.c");

        let empty = Credential::token_provider(|| async { Ok(String::new()) });
        assert!(empty.resolve(Duration::from_secs(1)).await.is_err());

        let failing = Credential::token_provider(|| async {
            Err("backend said no for https://x/v1?token=eyJsecret&x=1".to_string())
        });
        let e = failing
            .resolve(Duration::from_secs(1))
            .await
            .expect_err("fails");
        assert!(!e.contains("eyJsecret"), "{e}");

        let slow = Credential::token_provider(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok("late".to_string())
        });
        let e = slow
            .resolve(Duration::from_millis(20))
            .await
            .expect_err("times out");
        assert!(e.contains("timed out"), "{e}");
    }

    #[test]
    fn empty_api_key_is_refused() {
        assert!(Credential::api_key("").validate().is_err());
        assert!(Credential::api_key("k").validate().is_ok());
    }

    #[test]
    fn scrub_table() {
        let table: &[(&str, &str)] = &[
            ("nothing here", "nothing here"),
            ("wss://h/v1?token=abc.def", "wss://h/v1?token=***"),
            ("wss://h/v1?key=pk_1&x=2", "wss://h/v1?key=***&x=2"),
            ("a?x=1&TOKEN=zz b", "a?x=1&TOKEN=*** b"),
            // Not after ? or &: left alone (could be prose).
            ("monkey=banana", "monkey=banana"),
            ("a=ice-pwd:s3cr3t\r\n", "a=ice-pwd:***\r\n"),
            ("a=ice-ufrag:Uf r", "a=ice-ufrag:*** r"),
            (
                r#"{"credential":"p@ss","u":1}"#,
                r#"{"credential":"***","u":1}"#,
            ),
            ("credential = hunter2;", "credential = ***;"),
            ("credentials are fine", "credentials are fine"),
            ("ünï?token=é€ end", "ünï?token=*** end"),
            ("?token=", "?token=***"),
        ];
        for (input, want) in table {
            assert_eq!(scrub(input), *want, "{input}");
        }
    }
}
