//! The jobcast wire protocol (see `docs/PROTOCOL.md`): JSON-RPC 2.0 request parsing and
//! validation, job options, error and close codes, and the outbound frames the server writes.
//!
//! Pure data and serde, no I/O: every client, server and test shares these definitions.
#![warn(missing_docs)]

pub mod codes;
pub mod duration;
pub mod ids;
pub mod options;
pub mod outbound;
pub mod request;
pub mod topics;

pub use codes::{CloseCode, ErrorCode};
pub use ids::{RequestId, validate_job_id};
pub use options::{Backoff, BackoffKind, JobOptions, OptionLimits};
pub use request::{Frame, Request, RequestError, parse_frame};

/// The WebSocket subprotocol name of this protocol version.
pub const SUBPROTOCOL: &str = "jobcast.v1";
