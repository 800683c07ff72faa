//! Turning a call into a job, shared by WebSocket calls and `POST /v1/jobs`: the checks every
//! entry point makes (not draining, valid options, a live worker serves the method, params fit
//! its schema) and the call errors with their JSON-RPC codes.

use crate::{Gateway, registry::Check};
use jobcast_core::{Error as QueueError, NewJob, new_job_id};
use jobcast_protocol::{ErrorCode, JobOptions, RequestId};
use serde_json::value::RawValue;

/// A refused call: its JSON-RPC code and message.
#[derive(Debug)]
pub struct CallError(pub ErrorCode, pub String);

impl CallError {
    /// An error with `code` and `msg`.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self(code, msg.into())
    }
}

/// The error a client sees for a backend failure (details are logged, not shown).
pub fn queue_error(e: QueueError) -> CallError {
    match e {
        QueueError::QueueFull => CallError::new(ErrorCode::Overloaded, "queue full; retry later"),
        QueueError::OwnerFull => CallError::new(
            ErrorCode::Overloaded,
            "too many pending jobs for this user; retry when one ends",
        ),
        QueueError::Unavailable(_) => {
            CallError::new(ErrorCode::Overloaded, "backend unavailable; retry later")
        }
        other => {
            tracing::error!(error = %other, "backend error");
            CallError::new(ErrorCode::Internal, "internal error")
        }
    }
}

/// -32004, for unknown and foreign jobs alike.
pub fn not_found() -> CallError {
    CallError::new(ErrorCode::JobNotFound, "job not found")
}

/// A call as it arrived, before any check.
pub struct Call {
    /// The method.
    pub method: String,
    /// Params (object or array), if any.
    pub params: Option<Box<RawValue>>,
    /// The raw `options` member, if any.
    pub options: Option<Box<RawValue>>,
    /// A client-chosen job id (already validated), if any.
    pub job_id: Option<String>,
    /// Who owns the job.
    pub owner: String,
    /// The request id final responses use, if any.
    pub request_id: Option<RequestId>,
}

/// Checks `call` and returns the job to enqueue.
pub async fn prepare(gw: &Gateway, call: Call) -> Result<NewJob, CallError> {
    if gw.is_draining() {
        return Err(CallError::new(
            ErrorCode::Overloaded,
            "server draining; retry on another server",
        ));
    }
    let options = JobOptions::parse(
        call.options.as_deref().map(RawValue::get),
        &gw.config.option_limits,
    )
    .map_err(|m| CallError::new(ErrorCode::InvalidRequest, m))?;
    let params_json = call.params.as_deref().map_or("null", RawValue::get);
    match gw.registry.check(&call.method, params_json).await {
        Check::Ok => {}
        Check::NotFound => {
            return Err(CallError::new(
                ErrorCode::MethodNotFound,
                format!("method not found: {}", call.method),
            ));
        }
        Check::InvalidParams(m) => return Err(CallError::new(ErrorCode::InvalidParams, m)),
        Check::Unavailable => {
            return Err(CallError::new(
                ErrorCode::Overloaded,
                "backend unavailable; retry later",
            ));
        }
    }
    Ok(NewJob {
        id: call.job_id.unwrap_or_else(new_job_id),
        method: call.method,
        params: call.params.unwrap_or_else(|| RawValue::NULL.to_owned()),
        owner: call.owner,
        request_id: call.request_id,
        options,
        max_open_per_owner: gw.config.max_pending_per_user,
    })
}
