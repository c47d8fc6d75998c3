//! The Metered Realtime Messaging wire protocol: frames, validation, error and close codes.
//!
//! Pure: no IO, no clocks. Both the server and the client SDK build on it, so the wire
//! rules live in exactly one place.

pub mod codes;
pub mod frames;
pub mod server_frames;
pub mod validate;

pub use codes::{CloseCode, ErrorCode};
pub use frames::{
    ClientFrame, FrameError, FrameKind, PresenceEntry, ServerFrame, parse_client_frame,
};
