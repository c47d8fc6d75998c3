//! Server origin validation and the connect URL.
//!
//! The credential rides in the query string, so plain `ws:` would send it in clear text: only
//! `wss:` is accepted, except `ws:` to the loopback names `localhost`, `127.0.0.1` and `::1`, as in
//! the official SDKs. The configured URL must be a bare origin: the SDK appends `/v1` itself, and a
//! path, query, fragment or userinfo there is almost always a copy-paste mistake that would
//! otherwise fail later and more confusingly.
//!
//! Pure: parsing and formatting only, no DNS.

use std::fmt;
use std::net::Ipv6Addr;

/// `ws` or `wss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain WebSocket: accepted only for the loopback names, since the credential rides in
    /// the URL.
    Ws,
    /// WebSocket over TLS; the only choice for any other host.
    Wss,
}

impl Scheme {
    /// The lower-case scheme name, without `://`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        }
    }
}

/// A validated, normalised origin: lower-case scheme and host, IPv6 in brackets, port kept only
/// when one was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `Ws` only if the host is `localhost`, `127.0.0.1` or `::1`.
    pub scheme: Scheme,
    /// Lower-case host name or IP literal, without brackets.
    pub host: String,
    /// The port as written, if any.
    pub port: Option<u16>,
}

impl Origin {
    /// The port to dial.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(self.scheme.default_port())
    }

    /// `[::1]` for IPv6 literals, the host itself otherwise (URL authority form).
    fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// `<origin>/v1?<credential query>`. The result holds the credential: it goes straight to
    /// the WebSocket request and never into a log or an error.
    pub fn connect_url(&self, credential_query: &str) -> String {
        format!("{self}/v1?{credential_query}")
    }
}

impl fmt::Display for Origin {
    /// `scheme://host[:port]`, safe to log (no credential).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host_for_url())?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// Why a URL was refused (the text is safe to show: it never echoes the URL).
pub type UrlError = &'static str;

/// Parses and checks a server origin such as `wss://rms.example.com` or `ws://127.0.0.1:9292`.
pub fn parse_origin(url: &str) -> Result<Origin, UrlError> {
    let url = url.trim();
    let (scheme_text, rest) = url
        .split_once("://")
        .ok_or("the URL must start with wss:// (or ws:// for localhost)")?;
    let scheme = if scheme_text.eq_ignore_ascii_case("wss") {
        Scheme::Wss
    } else if scheme_text.eq_ignore_ascii_case("ws") {
        Scheme::Ws
    } else {
        return Err("the URL scheme must be wss (or ws for localhost)");
    };
    // A single trailing slash is the only path allowed.
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') {
        return Err("the URL must be an origin without a path (the SDK adds /v1)");
    }
    if authority.contains('?') || authority.contains('#') {
        return Err("the URL must not contain a query or a fragment");
    }
    if authority.contains('@') {
        return Err("the URL must not contain user information");
    }
    if authority.is_empty() {
        return Err("the URL has no host");
    }
    let (host, port_text) = if let Some(after) = authority.strip_prefix('[') {
        let (inside, tail) = after.split_once(']').ok_or("unterminated IPv6 literal")?;
        let ip: Ipv6Addr = inside.parse().map_err(|_| "invalid IPv6 literal")?;
        let port = match tail {
            "" => None,
            t => Some(
                t.strip_prefix(':')
                    .ok_or("invalid text after the IPv6 literal")?,
            ),
        };
        (ip.to_string(), port)
    } else {
        let (h, p) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if h.is_empty() {
            return Err("the URL has no host");
        }
        if h.contains(':') {
            return Err("IPv6 hosts must be written in brackets");
        }
        let valid = h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid || h.starts_with('.') || h.starts_with('-') || h.contains("..") {
            return Err("invalid host name (use punycode for international names)");
        }
        (h.to_ascii_lowercase(), p)
    };
    let port = match port_text {
        None => None,
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err("invalid port");
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err("invalid port"),
                Ok(n) => Some(n),
            }
        }
    };
    let origin = Origin { scheme, host, port };
    if origin.scheme == Scheme::Ws && !is_loopback_name(&origin.host) {
        return Err("plain ws:// is only allowed for localhost, 127.0.0.1 and ::1");
    }
    Ok(origin)
}

/// Exactly the three names the official SDKs accept for `ws:` (IPv6 hosts are already in
/// canonical form here, so `0:0::1` reads as `::1`).
fn is_loopback_name(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// Percent-encodes everything but the RFC 3986 unreserved set (`A-Z a-z 0-9 - . _ ~`), like
/// `encodeURIComponent` / `quote(safe="")`, so a credential can never break out of its query
/// parameter.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_origins_are_normalised() {
        let table: &[(&str, &str, u16)] = &[
            ("wss://rms.metered.ca", "wss://rms.metered.ca", 443),
            ("wss://rms.metered.ca/", "wss://rms.metered.ca", 443),
            (
                "WSS://RMS.Example.COM:8443",
                "wss://rms.example.com:8443",
                8443,
            ),
            ("ws://localhost:9292", "ws://localhost:9292", 9292),
            ("ws://LOCALHOST", "ws://localhost", 80),
            ("ws://127.0.0.1:1", "ws://127.0.0.1:1", 1),
            ("ws://[::1]:9292/", "ws://[::1]:9292", 9292),
            ("ws://[0:0:0:0:0:0:0:1]", "ws://[::1]", 80),
            ("wss://[2001:DB8::1]:443", "wss://[2001:db8::1]:443", 443),
            ("wss://10.0.0.1", "wss://10.0.0.1", 443),
            ("  wss://host.example  ", "wss://host.example", 443),
        ];
        for (input, want, port) in table {
            let o = parse_origin(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(o.to_string(), *want, "{input}");
            assert_eq!(o.effective_port(), *port, "{input}");
        }
    }

    #[test]
    fn refused_urls() {
        let table: &[&str] = &[
            "",
            "rms.metered.ca",
            "https://rms.metered.ca",
            "http://localhost",
            "ws://rms.metered.ca",
            "ws://127.0.0.2:80",
            "ws://10.0.0.1",
            "ws://[::2]",
            "ws://localhost.evil.com",
            "wss://host/v1",
            "wss://host//",
            "wss://host?token=x",
            "wss://host/?x",
            "wss://host#frag",
            "wss://user:pw@host",
            "wss://",
            "wss://:443",
            "wss://host:",
            "wss://host:0",
            "wss://host:65536",
            "wss://host:12a",
            "wss://::1",
            "wss://[::1",
            "wss://[::1]x",
            "wss://[nope]",
            "wss://ho st",
            "wss://hö.st",
            "wss://.host",
            "wss://a..b",
        ];
        for input in table {
            assert!(parse_origin(input).is_err(), "should refuse {input:?}");
        }
    }

    #[test]
    fn errors_never_echo_the_url() {
        let e = parse_origin("wss://h/v1?token=secret").expect_err("refused");
        assert!(!e.contains("secret"));
    }

    #[test]
    fn connect_url_and_encoding() {
        let o = parse_origin("ws://127.0.0.1:9292").expect("ok");
        assert_eq!(
            o.connect_url("token=a.b"),
            "ws://127.0.0.1:9292/v1?token=a.b"
        );
        let table: &[(&str, &str)] = &[
            ("abcXYZ019-._~", "abcXYZ019-._~"),
            ("a b", "a%20b"),
            ("a+b/c=d&e?f#g", "a%2Bb%2Fc%3Dd%26e%3Ff%23g"),
            ("é", "%C3%A9"),
            ("", ""),
        ];
        for (input, want) in table {
            assert_eq!(percent_encode(input), *want, "{input}");
        }
    }
}
