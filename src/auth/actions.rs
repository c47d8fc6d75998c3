//! The four operations a credential may grant.
//!
//! Keys call the list `actions`, tokens and the REST token body call it `permissions`; both are
//! subsets of `publish`, `subscribe`, `presence`, `send`. A connection's effective set is the
//! intersection of what its token claims and what its signing key allows, so the set type is a
//! tiny bitset with cheap intersection rather than a `Vec`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::AuthError;

/// One grantable operation. Serialises as its lowercase wire name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// `publish` frames and REST publish.
    Publish,
    /// `subscribe` frames.
    Subscribe,
    /// Receiving `presence` frames (and the REST peer list).
    Presence,
    /// Direct `send` frames to a peer.
    Send,
}

impl Action {
    /// Every action, in the order the documentation lists them (also the order of
    /// [`Actions::names`]).
    pub const ALL: [Action; 4] = [
        Action::Publish,
        Action::Subscribe,
        Action::Presence,
        Action::Send,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Presence => "presence",
            Action::Send => "send",
        }
    }

    /// Parses a wire name. Exact and case-sensitive, as the wire format is: accepting
    /// `"Publish"` here would let a token mean something another server refuses.
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Action`]s.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions(u8);

impl Actions {
    /// All four actions.
    pub fn all() -> Self {
        Action::ALL.into_iter().collect()
    }

    /// The empty set (also the `Default`).
    pub fn none() -> Self {
        Actions(0)
    }

    /// Whether `a` is in the set.
    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    /// The set plus `a`.
    pub fn with(self, a: Action) -> Self {
        Actions(self.0 | a.bit())
    }

    /// The set minus `a` (e.g. publishable keys default to everything but `send`).
    pub fn without(self, a: Action) -> Self {
        Actions(self.0 & !a.bit())
    }

    /// Actions present in both sets: how a token's claim is narrowed by its key.
    pub fn intersect(self, o: Actions) -> Self {
        Actions(self.0 & o.0)
    }

    /// Actions present in either set.
    pub fn union(self, o: Actions) -> Self {
        Actions(self.0 | o.0)
    }

    /// True for the empty set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses wire names. Duplicates are harmless; an unknown name fails the whole list with
    /// `InvalidClaim("permissions")`, because silently dropping it could hide a typo that was
    /// meant to restrict (or grant) something.
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, AuthError> {
        names.iter().try_fold(Actions::none(), |set, name| {
            Action::parse(name.as_ref())
                .map(|a| set.with(a))
                .ok_or(AuthError::InvalidClaim("permissions"))
        })
    }

    /// The members, in [`Action::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    /// The members' wire names, in [`Action::ALL`] order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Action::as_str).collect()
    }
}

/// Shows the member names rather than the raw bits, so logs are readable.
impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<Action> for Actions {
    fn from_iter<T: IntoIterator<Item = Action>>(iter: T) -> Self {
        iter.into_iter().fold(Actions::none(), Actions::with)
    }
}

impl From<&[Action]> for Actions {
    fn from(list: &[Action]) -> Self {
        list.iter().copied().collect()
    }
}

/// Serialised as a list of wire names (the shape of `actions` in configuration and
/// `permissions` in tokens).
impl Serialize for Actions {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Actions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        Actions::from_names(&names).map_err(|_| {
            serde::de::Error::custom(
                "unknown action; expected publish, subscribe, presence or send",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        let cases = [
            ("publish", Some(Action::Publish)),
            ("subscribe", Some(Action::Subscribe)),
            ("presence", Some(Action::Presence)),
            ("send", Some(Action::Send)),
            ("Publish", None),
            ("SEND", None),
            (" send", None),
            ("", None),
            ("admin", None),
        ];
        for (s, want) in cases {
            assert_eq!(Action::parse(s), want, "{s:?}");
        }
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
            assert_eq!(a.to_string(), a.as_str());
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                format!("\"{}\"", a.as_str())
            );
        }
    }

    #[test]
    fn from_names_table() {
        let ok: [(&[&str], Vec<&str>); 5] = [
            (&[], vec![]),
            (&["send"], vec!["send"]),
            (&["send", "publish"], vec!["publish", "send"]),
            (&["publish", "publish"], vec!["publish"]),
            (
                &["presence", "send", "subscribe", "publish"],
                vec!["publish", "subscribe", "presence", "send"],
            ),
        ];
        for (input, names) in ok {
            assert_eq!(
                Actions::from_names(input).unwrap().names(),
                names,
                "{input:?}"
            );
        }
        for bad in [&["publish", "admin"][..], &["Publish"], &[""]] {
            assert_eq!(
                Actions::from_names(bad),
                Err(AuthError::InvalidClaim("permissions")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn set_operations() {
        let all = Actions::all();
        assert_eq!(all.names(), ["publish", "subscribe", "presence", "send"]);
        assert!(Action::ALL.iter().all(|a| all.contains(*a)));
        assert!(Actions::none().is_empty());
        assert_eq!(Actions::default(), Actions::none());

        let ps = Actions::none()
            .with(Action::Publish)
            .with(Action::Subscribe);
        assert!(ps.contains(Action::Publish) && !ps.contains(Action::Send));
        let sp = Actions::from(&[Action::Send, Action::Publish][..]);
        assert_eq!(ps.intersect(sp).names(), ["publish"]);
        assert_eq!(ps.union(sp).names(), ["publish", "subscribe", "send"]);
        assert_eq!(
            all.without(Action::Send).names(),
            ["publish", "subscribe", "presence"]
        );
        assert_eq!(format!("{ps:?}"), "{Publish, Subscribe}");
    }

    #[test]
    fn serde_round_trip() {
        let set = Actions::none().with(Action::Send).with(Action::Presence);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["presence","send"]"#);
        assert_eq!(serde_json::from_str::<Actions>(&json).unwrap(), set);
        assert!(serde_json::from_str::<Actions>(r#"["fly"]"#).is_err());
    }
}
