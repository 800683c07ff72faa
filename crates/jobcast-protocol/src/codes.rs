//! JSON-RPC error codes and WebSocket close codes used by jobcast (PROTOCOL.md §5).

use serde::{Deserialize, Serialize};

/// Every JSON-RPC error code the server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "i32", try_from = "i32")]
pub enum ErrorCode {
    /// -32700: the frame is not JSON.
    ParseError,
    /// -32600: not a valid JSON-RPC 2.0 request (bad `jobId`, bad `options`, …).
    InvalidRequest,
    /// -32601: no live worker serves the method.
    MethodNotFound,
    /// -32602: params fail the worker's declared JSON Schema.
    InvalidParams,
    /// -32603: internal error.
    Internal,
    /// -32000: the job failed after its last attempt.
    JobFailed,
    /// -32001: the job's last attempt timed out.
    JobTimedOut,
    /// -32002: the job was cancelled.
    JobCancelled,
    /// -32003: rate limited.
    RateLimited,
    /// -32004: job not found (or not yours).
    JobNotFound,
    /// -32005: overloaded (queue full, backend unavailable, draining).
    Overloaded,
    /// -32006: the token does not allow this method or topic.
    Forbidden,
}

impl ErrorCode {
    /// The numeric code on the wire.
    pub const fn code(self) -> i32 {
        match self {
            Self::ParseError => -32700,
            Self::InvalidRequest => -32600,
            Self::MethodNotFound => -32601,
            Self::InvalidParams => -32602,
            Self::Internal => -32603,
            Self::JobFailed => -32000,
            Self::JobTimedOut => -32001,
            Self::JobCancelled => -32002,
            Self::RateLimited => -32003,
            Self::JobNotFound => -32004,
            Self::Overloaded => -32005,
            Self::Forbidden => -32006,
        }
    }

    /// Every code, for exhaustive tests and documentation.
    pub const ALL: [ErrorCode; 12] = [
        Self::ParseError,
        Self::InvalidRequest,
        Self::MethodNotFound,
        Self::InvalidParams,
        Self::Internal,
        Self::JobFailed,
        Self::JobTimedOut,
        Self::JobCancelled,
        Self::RateLimited,
        Self::JobNotFound,
        Self::Overloaded,
        Self::Forbidden,
    ];
}

impl From<ErrorCode> for i32 {
    fn from(c: ErrorCode) -> i32 {
        c.code()
    }
}

impl TryFrom<i32> for ErrorCode {
    type Error = String;
    fn try_from(v: i32) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.code() == v)
            .ok_or_else(|| format!("unknown jobcast error code {v}"))
    }
}

/// WebSocket close codes the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: normal closure.
    Normal,
    /// 1001: going away (no pong within two heartbeat intervals, or server shutdown).
    GoingAway,
    /// 1002: protocol error.
    ProtocolError,
    /// 1007: a text frame was not valid UTF-8.
    InvalidPayload,
    /// 1008: policy violation (for example a slow consumer whose outbound queue overflowed).
    PolicyViolation,
    /// 1009: a frame or message over the size limit.
    TooBig,
    /// 1011: internal error.
    Internal,
    /// 1012: the server is restarting or draining; reconnect.
    ServiceRestart,
    /// 1013: try again later.
    TryAgainLater,
}

impl CloseCode {
    /// The numeric close code.
    pub const fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::ProtocolError => 1002,
            Self::InvalidPayload => 1007,
            Self::PolicyViolation => 1008,
            Self::TooBig => 1009,
            Self::Internal => 1011,
            Self::ServiceRestart => 1012,
            Self::TryAgainLater => 1013,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::try_from(c.code()), Ok(c));
        }
        assert!(ErrorCode::try_from(1).is_err());
    }
}
