//! Channel globs, with the semantics Metered documents for key and token channel lists.
//!
//! Keys carry `channelPatterns` and tokens carry a `channels` claim; both are lists of globs:
//!
//! | Glob | Matches |
//! |---|---|
//! | `*` | any run (possibly empty) of characters except `/` |
//! | `**` | any run of characters, `/` included |
//! | `\x` | the character `x` literally (`\*` a star, `\\` a backslash) |
//!
//! A pattern is anchored to the whole channel name and is case-sensitive, because channel names
//! are. Every other character stands for itself.
//!
//! Patterns come from tokens that anyone holding a key can sign, and they are checked on every
//! subscribe and publish, so the matcher must never backtrack exponentially: `*a*a*a*a*b`
//! against a long run of `a`s is the classic trap. [`ChannelPattern::matches`] is a dynamic
//! programme over (pattern token × channel byte) that runs in O(tokens × bytes) time and
//! O(bytes) memory, whatever the input.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Longest pattern accepted, in bytes of its source text. The same bound as a channel name
/// (`MAX_CHANNEL_LEN`): patterns describe channels, and a bound keeps the matcher's cost
/// (tokens × channel bytes) small and predictable.
pub const MAX_PATTERN_LEN: usize = 256;

/// Why a pattern could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GlobError {
    /// The pattern ends in a `\` with nothing left to escape. Refused rather than read as a
    /// literal backslash so that a truncated pattern cannot silently mean something else.
    #[error("channel pattern ends with a lone escape character `\\`")]
    TrailingEscape,
    /// An empty pattern could only match the empty channel, which is never valid.
    #[error("channel pattern is empty")]
    Empty,
    /// Longer than [`MAX_PATTERN_LEN`] bytes.
    #[error("channel pattern is longer than 256 bytes")]
    TooLong,
}

/// One element of a parsed pattern.
///
/// Literals are kept as single UTF-8 bytes rather than `char`s: matching then needs no decoding
/// and no allocation for the channel. This is exact, not an approximation: `/` is ASCII and never
/// occurs inside a multi-byte UTF-8 sequence, and every literal run in a pattern starts with a
/// lead byte (a pattern is itself valid UTF-8), which can only line up with a character boundary
/// of the channel. So every span a wildcard consumes is a whole number of characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// `*`: any run of bytes other than `/`.
    Star,
    /// `**`: any run of bytes.
    DoubleStar,
}

/// A parsed channel glob.
///
/// Keeps its source text so it can be shown in logs, re-serialised into a token and compared.
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelPattern {
    source: String,
    tokens: Vec<Token>,
    /// The unescaped text when the pattern has no wildcard: matching is then a plain string
    /// comparison (the common case of a token granting exact channels).
    literal: Option<String>,
    /// How many literal bytes a matching channel must contain at least: a cheap early reject.
    min_len: usize,
}

impl ChannelPattern {
    /// Parses a glob. Runs of adjacent wildcards are merged (`*` `*` → `*`, anything with a `**`
    /// → `**`), which describes the same set of channels with fewer matcher steps.
    pub fn parse(p: &str) -> Result<Self, GlobError> {
        if p.is_empty() {
            return Err(GlobError::Empty);
        }
        if p.len() > MAX_PATTERN_LEN {
            return Err(GlobError::TooLong);
        }
        let mut tokens = Vec::with_capacity(p.len());
        let mut literal = String::with_capacity(p.len());
        let mut has_wildcard = false;
        let mut chars = p.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let escaped = chars.next().ok_or(GlobError::TrailingEscape)?;
                    push_literal(&mut tokens, escaped);
                    literal.push(escaped);
                }
                '*' => {
                    has_wildcard = true;
                    let wild = if chars.next_if_eq(&'*').is_some() {
                        Token::DoubleStar
                    } else {
                        Token::Star
                    };
                    push_wildcard(&mut tokens, wild);
                }
                other => {
                    push_literal(&mut tokens, other);
                    literal.push(other);
                }
            }
        }
        let min_len = tokens
            .iter()
            .filter(|t| matches!(t, Token::Byte(_)))
            .count();
        Ok(ChannelPattern {
            source: p.to_owned(),
            tokens,
            literal: (!has_wildcard).then_some(literal),
            min_len,
        })
    }

    /// The pattern exactly as written (escapes included).
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True when the pattern has no wildcard, i.e. it names exactly one channel.
    pub fn is_literal(&self) -> bool {
        self.literal.is_some()
    }

    /// The single channel a wildcard-free pattern names, escapes removed.
    pub fn literal(&self) -> Option<&str> {
        self.literal.as_deref()
    }

    /// Whether `channel` (the whole name) matches this pattern.
    ///
    /// Cost is O(pattern tokens × channel bytes) at worst, so callers should validate the channel
    /// (`check_channel`, ≤ 256 bytes) before asking, as the hub does anyway (an invalid channel
    /// is reported before any authorisation check).
    pub fn matches(&self, channel: &str) -> bool {
        if let Some(lit) = &self.literal {
            return lit == channel;
        }
        if channel.len() < self.min_len {
            return false;
        }
        run_dp(
            &self.tokens,
            channel.as_bytes(),
            |want, &have| want == have,
            |&b| b != b'/',
        )
    }

    /// Whether every channel matched by `other` is also matched by `self`.
    ///
    /// Needed where a caller asks for a pattern rather than a channel: the REST token endpoint
    /// must refuse `channels` that are not within the signing key's patterns, and pattern
    /// subscriptions (not supported yet) would have to be covered by a granted pattern.
    ///
    /// The test is *sound but not complete*: `true` guarantees coverage; `false` may occasionally
    /// be returned for an exotic pair that is in fact covered. That is the safe direction for an
    /// authorisation check. It aligns `other`'s tokens under `self`'s: a literal byte covers the
    /// same literal byte, `*` covers any run of non-`/` literals and `*`s, `**` covers anything.
    pub fn covers(&self, other: &ChannelPattern) -> bool {
        if let Some(lit) = &other.literal {
            return self.matches(lit);
        }
        run_dp(
            &self.tokens,
            &other.tokens,
            |want, have| *have == Token::Byte(want),
            |have| match *have {
                Token::Byte(b) => b != b'/',
                Token::Star => true,
                Token::DoubleStar => false,
            },
        )
    }
}

/// Appends a literal character as its UTF-8 bytes.
fn push_literal(tokens: &mut Vec<Token>, c: char) {
    let mut buf = [0u8; 4];
    tokens.extend(c.encode_utf8(&mut buf).bytes().map(Token::Byte));
}

/// Appends a wildcard, merging it with a wildcard just before it.
fn push_wildcard(tokens: &mut Vec<Token>, wild: Token) {
    match tokens.last_mut() {
        Some(last @ (Token::Star | Token::DoubleStar)) => {
            if wild == Token::DoubleStar {
                *last = Token::DoubleStar;
            }
        }
        _ => tokens.push(wild),
    }
}

/// The matcher: `reach[j]` is true when the pattern tokens seen so far can consume exactly the
/// first `j` items of `text`. One pass per token, so the cost is O(tokens × items) with no
/// backtracking at all.
///
/// `lit_eq(b, item)` says whether the literal byte `b` consumes `item`; `star_ok(item)` says
/// whether a single `*` may consume `item` (`**` consumes anything).
fn run_dp<I>(
    tokens: &[Token],
    text: &[I],
    lit_eq: impl Fn(u8, &I) -> bool,
    star_ok: impl Fn(&I) -> bool,
) -> bool {
    let n = text.len();
    let mut reach = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    reach[0] = true;
    for token in tokens {
        match *token {
            Token::Byte(b) => {
                next[0] = false;
                for j in 0..n {
                    next[j + 1] = reach[j] && lit_eq(b, &text[j]);
                }
            }
            Token::Star => {
                next[0] = reach[0];
                for j in 1..=n {
                    next[j] = reach[j] || (next[j - 1] && star_ok(&text[j - 1]));
                }
            }
            Token::DoubleStar => {
                next[0] = reach[0];
                for j in 1..=n {
                    next[j] = reach[j] || next[j - 1];
                }
            }
        }
        std::mem::swap(&mut reach, &mut next);
        if !reach.contains(&true) {
            return false;
        }
    }
    reach[n]
}

/// Escapes `literal` so that the resulting pattern matches exactly that channel and nothing
/// else (useful when minting a token for a channel whose name contains `*` or `\`).
pub fn escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if c == '*' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl fmt::Debug for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ChannelPattern").field(&self.source).finish()
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for ChannelPattern {
    type Err = GlobError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelPattern::parse(s)
    }
}

/// Serialised as its source string, so configuration files can hold patterns directly.
impl Serialize for ChannelPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for ChannelPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChannelPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A list of patterns; a channel is allowed when any of them matches.
///
/// An empty set matches nothing: a token with `"channels": []` grants no channel at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PatternSet(Vec<ChannelPattern>);

impl PatternSet {
    /// Parses every pattern; the first failure is returned.
    pub fn parse<S: AsRef<str>>(ps: &[S]) -> Result<Self, GlobError> {
        ps.iter()
            .map(|p| ChannelPattern::parse(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(PatternSet)
    }

    /// The set that allows every channel (`**`), for keys configured without restrictions.
    pub fn any() -> Self {
        PatternSet(vec![ChannelPattern {
            source: "**".to_owned(),
            tokens: vec![Token::DoubleStar],
            literal: None,
            min_len: 0,
        }])
    }

    /// Whether any pattern matches `ch`.
    pub fn matches(&self, ch: &str) -> bool {
        self.0.iter().any(|p| p.matches(ch))
    }

    /// Whether some pattern of the set covers every channel `pattern` matches
    /// (see [`ChannelPattern::covers`]; sound, conservative).
    pub fn covers(&self, pattern: &ChannelPattern) -> bool {
        self.0.iter().any(|p| p.covers(pattern))
    }

    /// The patterns' source texts, in order.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(ChannelPattern::as_str)
    }

    /// The parsed patterns, in order.
    pub fn iter(&self) -> impl Iterator<Item = &ChannelPattern> {
        self.0.iter()
    }

    /// True when the set holds no pattern (and so matches nothing).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<Vec<ChannelPattern>> for PatternSet {
    fn from(v: Vec<ChannelPattern>) -> Self {
        PatternSet(v)
    }
}

impl FromIterator<ChannelPattern> for PatternSet {
    fn from_iter<T: IntoIterator<Item = ChannelPattern>>(iter: T) -> Self {
        PatternSet(iter.into_iter().collect())
    }
}

/// Serialised as a list of source strings.
impl Serialize for PatternSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.patterns())
    }
}

impl<'de> Deserialize<'de> for PatternSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<ChannelPattern>::deserialize(d).map(PatternSet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, Instant};

    fn pat(p: &str) -> ChannelPattern {
        ChannelPattern::parse(p).unwrap()
    }

    #[test]
    fn documented_examples() {
        // (pattern, channel, expected) — the examples from Metered's channel documentation.
        let cases = [
            ("app_abc/*", "app_abc/room-1", true),
            ("app_abc/*", "app_abc/sub/deep", false),
            ("app_abc/*", "other/x", false),
            ("app_abc/**", "app_abc/room-1", true),
            ("app_abc/**", "app_abc/sub/deep", true),
            ("app_abc/**", "other/x", false),
            ("**", "app_abc/room-1", true),
            ("**", "app_abc/sub/deep", true),
            ("**", "other/x", true),
            ("**", "x", true),
            ("app_abc/room-*", "app_abc/room-1", true),
            ("app_abc/room-*", "app_abc/sub/deep", false),
            ("app_abc/room-*", "other/x", false),
            ("room-*", "room-42", true),
            ("room-*", "admin-1", false),
        ];
        for (p, ch, want) in cases {
            assert_eq!(pat(p).matches(ch), want, "{p} vs {ch}");
        }
    }

    #[test]
    fn wildcard_edges() {
        let cases = [
            // `*` may match the empty run.
            ("room-*", "room-", true),
            ("a*b", "ab", true),
            ("*", "", true),
            ("a/*/b", "a//b", true),
            ("**", "", true),
            // `*` never crosses `/`, `**` does.
            ("*", "a/b", false),
            ("a*", "a/", false),
            ("a/**", "a/", true),
            ("a/**/z", "a/b/c/z", true),
            ("a/**/z", "a/z", false),
            ("**/z", "z", false),
            ("**z", "z", true),
            ("*/*", "a/b", true),
            ("*/*", "a/b/c", false),
            // Merged runs behave like their merged form.
            ("a***b", "a/x/b", true),
            ("a**b", "a/x/b", true),
            ("a*b", "a/x/b", false),
            // Non-ASCII literals around wildcards.
            ("café/*", "café/x", true),
            ("*é", "ééé", true),
            ("*é", "éée", false),
            ("ü*ü", "üü", true),
        ];
        for (p, ch, want) in cases {
            assert_eq!(pat(p).matches(ch), want, "{p} vs {ch}");
        }
    }

    #[test]
    fn escapes() {
        let cases = [
            (r"a\*", "a*", true),
            (r"a\*", "ab", false),
            (r"a\*", "a", false),
            (r"a\\", r"a\", true),
            (r"a\\*", r"a\xyz", true),
            (r"a\\*", "axyz", false),
            (r"\*\*", "**", true),
            (r"\*\*", "ab", false),
            (r"\a\b", "ab", true),
            (r"x\**", "x*yz", true),
            (r"x\**", "xyz", false),
        ];
        for (p, ch, want) in cases {
            assert_eq!(pat(p).matches(ch), want, "{p} vs {ch}");
        }
        assert!(pat(r"a\*").is_literal());
        assert_eq!(pat(r"a\*b\\").literal(), Some(r"a*b\"));
        assert!(!pat(r"a\\*").is_literal());
    }

    #[test]
    fn case_sensitive_and_anchored() {
        let cases = [
            ("Room-*", "room-1", false),
            ("room-*", "ROOM-1", false),
            ("room-1", "room-1", true),
            ("room-1", "Room-1", false),
            ("room", "room-1", false),
            ("room", "my-room", false),
            ("room-*", "x/room-1", false),
            ("*-1", "room-1/x", false),
            ("oom-1", "room-1", false),
        ];
        for (p, ch, want) in cases {
            assert_eq!(pat(p).matches(ch), want, "{p} vs {ch}");
        }
    }

    #[test]
    fn parse_errors() {
        let cases: [(&str, GlobError); 4] = [
            ("", GlobError::Empty),
            (r"abc\", GlobError::TrailingEscape),
            (r"\", GlobError::TrailingEscape),
            (&"a".repeat(MAX_PATTERN_LEN + 1), GlobError::TooLong),
        ];
        for (p, want) in cases {
            assert_eq!(ChannelPattern::parse(p).unwrap_err(), want, "{p:?}");
        }
        assert!(ChannelPattern::parse(&"a".repeat(MAX_PATTERN_LEN)).is_ok());
        assert!(ChannelPattern::parse(r"abc\\").is_ok());
        assert_eq!(
            PatternSet::parse(&["ok/*", r"bad\"]).unwrap_err(),
            GlobError::TrailingEscape
        );
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let text = "a".repeat(256);
        let patterns = [
            "*a*a*a*a*a*a*b",
            "**a**a**a**a**a**a**b",
            "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b",
        ];
        let start = Instant::now();
        for p in patterns {
            for _ in 0..100 {
                assert!(!pat(p).matches(&text));
            }
        }
        // Generous bound: a backtracking matcher would take astronomically long here.
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(pat("*a*a*a*a*a*a*a").matches(&text));
    }

    #[test]
    fn pattern_set() {
        let set = PatternSet::parse(&["app/*", "lobby"]).unwrap();
        assert!(set.matches("app/x"));
        assert!(set.matches("lobby"));
        assert!(!set.matches("app/x/y"));
        assert!(!set.matches("lobby2"));
        assert_eq!(set.patterns().collect::<Vec<_>>(), ["app/*", "lobby"]);
        assert_eq!(set.len(), 2);
        assert!(!set.is_empty());

        let empty = PatternSet::parse::<&str>(&[]).unwrap();
        assert!(empty.is_empty());
        assert!(!empty.matches("anything"));
        assert!(PatternSet::default().is_empty());

        let any = PatternSet::any();
        assert_eq!(any.patterns().collect::<Vec<_>>(), ["**"]);
        assert!(any.matches("a/b/c"));
        assert_eq!(any, PatternSet::parse(&["**"]).unwrap());
    }

    #[test]
    fn serde_round_trip() {
        let set = PatternSet::parse(&["app/*", r"x\*"]).unwrap();
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["app/*","x\\*"]"#);
        let back: PatternSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
        assert!(serde_json::from_str::<PatternSet>(r#"["ok", ""]"#).is_err());
    }

    #[test]
    fn covers_table() {
        // (granted, requested, covered)
        let cases = [
            ("**", "anything/**", true),
            ("**", "x", true),
            ("app/**", "app/*", true),
            ("app/**", "app/room-*", true),
            ("app/**", "app/a/**", true),
            ("app/**", "other/*", false),
            ("app/**", "**", false),
            ("app/*", "app/room-*", true),
            ("app/*", "app/room-1", true),
            ("app/*", "app/**", false),
            ("app/*", "app/*/x", false),
            ("app/*", "app/*", true),
            ("app/room-*", "app/*", false),
            ("app/room-1", "app/room-1", true),
            ("app/room-1", "app/room-*", false),
            ("*", "a*b*c", true),
            ("*", "a/*", false),
            (r"a\*", r"a\*", true),
            ("a*", r"a\*", true),
            (r"a\*", "a*", false),
        ];
        for (granted, requested, want) in cases {
            assert_eq!(
                pat(granted).covers(&pat(requested)),
                want,
                "{granted} covers {requested}"
            );
        }
        let set = PatternSet::parse(&["a/*", "b/**"]).unwrap();
        assert!(set.covers(&pat("b/x/*")));
        assert!(!set.covers(&pat("c")));
    }

    /// Straightforward backtracking matcher over chars, used as the reference in property tests
    /// (only on short inputs, where its exponential worst case does not matter).
    fn reference(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('\\', rest)) => match (rest.split_first(), s.split_first()) {
                (Some((pc, prest)), Some((sc, srest))) => pc == sc && reference(prest, srest),
                _ => false,
            },
            Some(('*', rest)) => {
                let (double, rest) = match rest.split_first() {
                    Some(('*', r)) => (true, r),
                    _ => (false, rest),
                };
                for k in 0..=s.len() {
                    if reference(rest, &s[k..]) {
                        return true;
                    }
                    if k < s.len() && !double && s[k] == '/' {
                        break;
                    }
                }
                false
            }
            Some((pc, rest)) => match s.split_first() {
                Some((sc, srest)) => pc == sc && reference(rest, srest),
                None => false,
            },
        }
    }

    proptest! {
        #[test]
        fn never_panics(p in any::<String>(), ch in any::<String>()) {
            if let Ok(compiled) = ChannelPattern::parse(&p) {
                let _ = compiled.matches(&ch);
                let _ = compiled.matches(&p);
                if let Ok(other) = ChannelPattern::parse(&ch) {
                    let _ = compiled.covers(&other);
                }
            }
        }

        #[test]
        fn agrees_with_reference(p in "[ab/*\\\\é]{1,10}", ch in "[ab/*\\\\é]{0,10}") {
            if let Ok(compiled) = ChannelPattern::parse(&p) {
                let pc: Vec<char> = p.chars().collect();
                let sc: Vec<char> = ch.chars().collect();
                prop_assert_eq!(compiled.matches(&ch), reference(&pc, &sc), "{} vs {}", p, ch);
            }
        }

        #[test]
        fn escaped_literal_matches_only_itself(
            lit in "[a-z/*\\\\]{1,20}",
            other in "[a-z/*\\\\]{0,20}",
        ) {
            let compiled = ChannelPattern::parse(&escape(&lit)).unwrap();
            prop_assert!(compiled.is_literal());
            prop_assert!(compiled.matches(&lit));
            prop_assert_eq!(compiled.matches(&other), other == lit);
        }

        /// Soundness of `covers`: whenever it says yes, every channel the requested pattern
        /// matches is matched by the granted one.
        #[test]
        fn covers_is_sound(g in "[ab/*]{1,6}", r in "[ab/*]{1,6}", ch in "[ab/]{0,8}") {
            let (g, r) = (pat(&g), pat(&r));
            if g.covers(&r) && r.matches(&ch) {
                prop_assert!(g.matches(&ch), "{:?} covers {:?} but not {}", g, r, ch);
            }
        }
    }
}
