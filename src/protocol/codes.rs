//! Wire error codes (`error.code`) and WebSocket close codes, as enums so that a typo cannot reach
//! the wire. The lists are the codes Metered documents.

use std::fmt;

/// The `code` of an `error` frame. The connection stays open for every one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    MalformedMessage,
    UnknownType,
    InvalidChannel,
    InvalidPeerId,
    ChannelNotAuthorized,
    ChannelReserved,
    ChannelLimitExceeded,
    PeerNotFound,
    MissingData,
    ActionNotPermitted,
    OverMessageQuota,
    BackendError,
    InternalError,
}

impl ErrorCode {
    /// Every code, in documentation order (used by metrics so that zero counts are exported too).
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::MalformedMessage,
        ErrorCode::UnknownType,
        ErrorCode::InvalidChannel,
        ErrorCode::InvalidPeerId,
        ErrorCode::ChannelNotAuthorized,
        ErrorCode::ChannelReserved,
        ErrorCode::ChannelLimitExceeded,
        ErrorCode::PeerNotFound,
        ErrorCode::MissingData,
        ErrorCode::ActionNotPermitted,
        ErrorCode::OverMessageQuota,
        ErrorCode::BackendError,
        ErrorCode::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedMessage => "malformed_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::InvalidPeerId => "invalid_peer_id",
            ErrorCode::ChannelNotAuthorized => "channel_not_authorized",
            ErrorCode::ChannelReserved => "channel_reserved",
            ErrorCode::ChannelLimitExceeded => "channel_limit_exceeded",
            ErrorCode::PeerNotFound => "peer_not_found",
            ErrorCode::MissingData => "missing_data",
            ErrorCode::ActionNotPermitted => "action_not_permitted",
            ErrorCode::OverMessageQuota => "over_message_quota",
            ErrorCode::BackendError => "backend_error",
            ErrorCode::InternalError => "internal_error",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes the server sends (4000 is client-only and therefore absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CloseCode {
    /// 1001: graceful shutdown, after `going_away`.
    GoingAway,
    /// 1002: the client broke the WebSocket framing rules (RFC 6455 §7.4.1).
    ProtocolError,
    /// 1007: a text frame that is not valid UTF-8.
    InvalidPayload,
    /// 1008: generic policy violation (we use it for a consumer too slow to drain its queue).
    PolicyViolation,
    /// 1009: an inbound frame over the size limit.
    MessageTooBig,
    /// 4001: bad, malformed or unknown-key credential.
    InvalidToken,
    /// 4002: the token's `exp` is reached (sent 250 ms early).
    TokenExpired,
    /// 4003: unauthorised subscribe, only behind the `close_on_unauthorized_subscribe` switch.
    ChannelNotAuthorized,
    /// 4010: concurrent-connection cap reached.
    OverConcurrentLimit,
    /// 4011: the per-connection token bucket ran dry.
    OverMessageRate,
    /// 4012: account suspended (never emitted by a self-hosted server, kept for completeness).
    AccountSuspended,
    /// 4020: an administrator kicked the peer through `DELETE /v1/peers/:id`.
    AdminDisconnect,
}

impl CloseCode {
    pub const ALL: [CloseCode; 12] = [
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::PolicyViolation,
        CloseCode::MessageTooBig,
        CloseCode::InvalidToken,
        CloseCode::TokenExpired,
        CloseCode::ChannelNotAuthorized,
        CloseCode::OverConcurrentLimit,
        CloseCode::OverMessageRate,
        CloseCode::AccountSuspended,
        CloseCode::AdminDisconnect,
    ];

    pub fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::PolicyViolation => 1008,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InvalidToken => 4001,
            CloseCode::TokenExpired => 4002,
            CloseCode::ChannelNotAuthorized => 4003,
            CloseCode::OverConcurrentLimit => 4010,
            CloseCode::OverMessageRate => 4011,
            CloseCode::AccountSuspended => 4012,
            CloseCode::AdminDisconnect => 4020,
        }
    }

    pub fn from_code(code: u16) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The close reason text sent with the code (clients branch on the code, never on this).
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::GoingAway => "server going away",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::InvalidPayload => "invalid UTF-8",
            CloseCode::PolicyViolation => "policy violation",
            CloseCode::MessageTooBig => "message too big",
            CloseCode::InvalidToken => "invalid token",
            CloseCode::TokenExpired => "token expired",
            CloseCode::ChannelNotAuthorized => "channel not authorized",
            CloseCode::OverConcurrentLimit => "over concurrent connection limit",
            CloseCode::OverMessageRate => "over message rate",
            CloseCode::AccountSuspended => "account suspended",
            CloseCode::AdminDisconnect => "disconnected by administrator",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::parse("nope"), None);
        assert_eq!(ErrorCode::ChannelReserved.to_string(), "channel_reserved");
    }

    #[test]
    fn close_codes_round_trip() {
        let codes: Vec<u16> = CloseCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(
            codes,
            [
                1001, 1002, 1007, 1008, 1009, 4001, 4002, 4003, 4010, 4011, 4012, 4020
            ]
        );
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        assert_eq!(CloseCode::from_code(4000), None);
    }
}
