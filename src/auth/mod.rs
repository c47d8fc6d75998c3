//! Authentication and authorisation: keys, JWTs, actions and channel globs.
//!
//! This layer is pure: no IO, no clock (callers pass `now_unix`), no async. The server's network
//! shell feeds it the `?token=` / `?key=` query value and the `Origin` header, gets back a
//! [`Principal`] or an [`AuthError`] (whose [`AuthError::close_code`] is the 4xxx code to close
//! with before `welcome`), and afterwards asks the principal [`Principal::can`] /
//! [`Principal::may_use_channel`] for each frame. The REST layer uses
//! [`KeyRing::secret_key_for_bearer`] and [`mint`].
//!
//! - [`glob`]: channel patterns (`*`, `**`, `\` escapes), matched without backtracking.
//! - [`actions`]: `publish` / `subscribe` / `presence` / `send` and sets of them.
//! - [`error`]: [`AuthError`], why a credential was refused, and its close code.
//! - [`principal`]: the [`Principal`] every credential kind yields.
//! - [`keys`]: secret and publishable keys and the [`KeyRing`] (publishable-key lookup).
//! - [`jwt`]: token minting and the verification rules ([`KeyRing::verify_token`]).
//!
//! Dependencies run one way, top of this list first: `error`, `actions`, `glob` → `principal` →
//! `keys` → `jwt`.
//!
//! Credentials never appear in `Debug` output or error messages.

pub mod actions;
pub mod error;
pub mod glob;
pub mod jwt;
pub mod keys;
pub mod principal;

pub use actions::{Action, Actions};
pub use error::AuthError;
pub use glob::{ChannelPattern, GlobError, MAX_PATTERN_LEN, PatternSet};
pub use jwt::{
    DEFAULT_TTL_SECS, MAX_METADATA_BYTES, MAX_PEER_METADATA_BYTES, MAX_TOKEN_LEN, MAX_TTL_SECS,
    MintRequest, mint, unverified_expiry,
};
pub use keys::{KeyRing, KeyRingError, PublishableKey, Secret, SecretKey};
pub use principal::{Principal, PrincipalKind};
