//! The `/v1` server API for other services, behind the API key: submit, read and cancel jobs;
//! publish to a topic; push to all of a user's connections; broadcast to every connection.
//! Every push reaches every gateway (through the bus) and is serialized once.

use super::{ApiKey, JsonBody, Problem, QueryParams};
use crate::{
    Gateway,
    submit::{self, CallError, not_found, queue_error},
};
use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use jobcast_core::{BROADCAST_TOPIC, JobSnapshot, JobState};
use jobcast_protocol::duration::parse_duration;
use jobcast_protocol::{
    ErrorCode, outbound,
    topics::{user_topic, validate_topic},
    validate_job_id,
};
use serde::Deserialize;
use serde_json::{json, value::RawValue};
use std::sync::Arc;

fn accepted(v: serde_json::Value) -> Response {
    (StatusCode::ACCEPTED, Json(v)).into_response()
}

/// What a handler answers: a JSON body, or a problem.
type Answer = Result<Response, Problem>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubmitBody {
    method: String,
    #[serde(default)]
    params: Option<Box<RawValue>>,
    #[serde(default, rename = "jobId")]
    job_id: Option<String>,
    #[serde(default)]
    options: Option<Box<RawValue>>,
    /// The user who owns the job (may attach to it over WebSocket); none when absent.
    #[serde(default, rename = "userId")]
    user_id: Option<String>,
}

/// `POST /v1/jobs` → 202 `{"jobId","state","duplicate"}`.
pub async fn submit_job(
    _: ApiKey,
    State(gw): State<Arc<Gateway>>,
    JsonBody(b): JsonBody<SubmitBody>,
) -> Answer {
    let invalid = |m: &str| CallError::new(ErrorCode::InvalidRequest, m);
    if b.method.is_empty() || b.method.starts_with("rpc.") {
        return Err(invalid("method must name a job method (not rpc.*)").into());
    }
    if let Some(p) = &b.params
        && !is_structured(p)
    {
        return Err(invalid("params must be an object or an array").into());
    }
    if let Some(id) = &b.job_id {
        validate_job_id(id).map_err(invalid)?;
    }
    let owner = b.user_id.unwrap_or_default();
    let job = submit::prepare(
        &gw,
        submit::Call {
            method: b.method,
            params: b.params,
            options: b.options,
            job_id: b.job_id,
            owner: owner.clone(),
            request_id: None,
        },
    )
    .await?;
    // The server API is trusted: its jobs do not count against a user's pending-job limit.
    let job = jobcast_core::NewJob {
        max_open_per_owner: 0,
        ..job
    };
    // No connection of this gateway waits for it: nobody needs its events here.
    let enq = gw.queue.enqueue(job, "").await.map_err(queue_error)?;
    if enq.duplicate && enq.owner != owner {
        return Err(invalid("jobId already names another user's job").into());
    }
    Ok(accepted(json!({
        "jobId": enq.job_id,
        "state": enq.state,
        "duplicate": enq.duplicate,
    })))
}

/// Whether raw JSON is an object or an array (what JSON-RPC allows as params).
fn is_structured(v: &RawValue) -> bool {
    matches!(v.get().trim_start().as_bytes().first(), Some(b'{' | b'['))
}

/// A snapshot as the server API shows it: with `userId`, the owner (absent for none).
fn snapshot_json(s: &JobSnapshot) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if !s.owner.is_empty() {
        v["userId"] = s.owner.clone().into();
    }
    v
}

/// The query of the list and purge routes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    state: Option<String>,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
    /// Purge: only jobs that ended at least this long ago (`30s`, `10m`, `24h`, `7d`).
    #[serde(rename = "olderThan")]
    older_than: Option<String>,
}

fn parse_state(s: Option<&str>) -> Result<JobState, Problem> {
    let s = s.ok_or_else(|| Problem::bad_request("state is required"))?;
    JobState::ALL
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| {
            Problem::bad_request(
                "state must be queued, delayed, active, completed, failed or cancelled",
            )
        })
}

/// `GET /v1/jobs?state=S[&offset=N][&limit=N]` → `{"state","offset","jobs":[snapshot…]}` in the
/// order of [`jobcast_core::JobQueue::list`]; `limit` defaults to 50, at most 1000.
pub async fn list_jobs(
    _: ApiKey,
    State(gw): State<Arc<Gateway>>,
    QueryParams(q): QueryParams<JobsQuery>,
) -> Answer {
    let state = parse_state(q.state.as_deref())?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let jobs = gw
        .queue
        .list(state, q.offset, limit)
        .await
        .map_err(queue_error)?;
    Ok(Json(json!({
        "state": state,
        "offset": q.offset,
        "jobs": jobs.iter().map(snapshot_json).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `DELETE /v1/jobs?state=completed|failed|cancelled[&olderThan=24h]` → `{"purged": n}`.
pub async fn purge_jobs(
    _: ApiKey,
    State(gw): State<Arc<Gateway>>,
    QueryParams(q): QueryParams<JobsQuery>,
) -> Answer {
    let state = parse_state(q.state.as_deref())?;
    if !state.is_terminal() {
        return Err(Problem::bad_request(
            "only ended jobs are purged: state must be completed, failed or cancelled",
        ));
    }
    let age = match q.older_than.as_deref() {
        Some(a) => {
            parse_duration(a).map_err(|e| Problem::bad_request(format!("olderThan: {e}")))?
        }
        None => std::time::Duration::ZERO,
    };
    let before = jobcast_core::now_ms().saturating_sub(age.as_millis() as u64);
    let purged = gw.queue.purge(state, before).await.map_err(queue_error)?;
    Ok(Json(json!({"purged": purged})).into_response())
}

/// `POST /v1/jobs/{jobId}/retry` → `{"retried","state"}`: a failed or cancelled job runs again
/// from its first attempt.
pub async fn retry_job(
    _: ApiKey,
    State(gw): State<Arc<Gateway>>,
    Path(job_id): Path<String>,
) -> Answer {
    let r = per_job(&job_id, gw.queue.retry(&job_id)).await?;
    Ok(Json(json!({"retried": r.retried, "state": r.state})).into_response())
}

/// `GET /v1/jobs/{jobId}` → the job snapshot, with `userId` (its owner; absent for none).
pub async fn job_snapshot(
    _: ApiKey,
    State(gw): State<Arc<Gateway>>,
    Path(job_id): Path<String>,
) -> Answer {
    let s = per_job(&job_id, gw.queue.snapshot(&job_id)).await?;
    Ok(Json(snapshot_json(&s)).into_response())
}

/// `DELETE /v1/jobs/{jobId}` → `{"cancelled","state"}`, as `rpc.cancel`.
pub async fn cancel_job(
    _: ApiKey,
    State(gw): State<Arc<Gateway>>,
    Path(job_id): Path<String>,
) -> Answer {
    let c = per_job(&job_id, gw.queue.cancel(&job_id)).await?;
    Ok(Json(json!({"cancelled": c.cancelled, "state": c.state})).into_response())
}

/// One queue call on a job id: invalid and unknown ids alike are 404 with -32004.
async fn per_job<T>(
    job_id: &str,
    op: impl std::future::Future<Output = jobcast_core::Result<Option<T>>>,
) -> Result<T, Problem> {
    validate_job_id(job_id).map_err(|_| not_found())?;
    Ok(op.await.map_err(queue_error)?.ok_or_else(not_found)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PublishBody {
    topic: String,
    data: Box<RawValue>,
}

/// `POST /v1/publish` → 202 `{"topic","published":true,"delivered":n}` (n: receivers on
/// this gateway; every other gateway delivers to its own).
pub async fn publish(
    _: ApiKey,
    State(gw): State<Arc<Gateway>>,
    JsonBody(b): JsonBody<PublishBody>,
) -> Answer {
    validate_topic(&b.topic).map_err(Problem::bad_request)?;
    let delivered = gw.publish(&b.topic, &b.data);
    metrics::counter!("jobcast_topic_pushes_total", "source" => "http").increment(1);
    Ok(accepted(
        json!({"topic": b.topic, "published": true, "delivered": delivered}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PushBody {
    #[serde(default)]
    method: Option<String>,
    data: Box<RawValue>,
}

/// A notification frame `{"method": M, "params": data}` for a push with its own method.
fn notification(method: &str, data: &RawValue) -> Result<Bytes, Problem> {
    let reserved = ["rpc.", "job.", "topic."];
    if method.is_empty()
        || method.len() > 128
        || reserved.iter().any(|p| method.starts_with(p))
        || method.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Problem::bad_request(
            "method must be 1-128 visible characters, not starting with rpc., job. or topic.",
        ));
    }
    if !is_structured(data) {
        return Err(Problem::bad_request(
            "with a method, data becomes the notification's params and must be an object or an array",
        ));
    }
    Ok(Bytes::from(outbound::notification(method, data)))
}

/// `POST /v1/users/{userId}/send` → 202: every connection of the user, on every gateway, gets
/// `topic.message` on `user:<userId>` — or, with `method`, the notification
/// `{"method": method, "params": data}`.
pub async fn send_to_user(
    _: ApiKey,
    State(gw): State<Arc<Gateway>>,
    Path(user_id): Path<String>,
    JsonBody(b): JsonBody<PushBody>,
) -> Answer {
    let topic = user_topic(&user_id);
    validate_topic(&topic).map_err(Problem::bad_request)?;
    let delivered = match &b.method {
        None => gw.publish(&topic, &b.data),
        Some(m) => gw.push(&topic, notification(m, &b.data)?),
    };
    metrics::counter!("jobcast_topic_pushes_total", "source" => "http").increment(1);
    Ok(accepted(json!({"userId": user_id, "delivered": delivered})))
}

/// `POST /v1/broadcast` → 202: every connection on every gateway gets `{"method":
/// "broadcast", "params": {"data": data}}`, or with `method`, `{"method", "params": data}`.
pub async fn broadcast(
    _: ApiKey,
    State(gw): State<Arc<Gateway>>,
    JsonBody(b): JsonBody<PushBody>,
) -> Answer {
    let frame = match &b.method {
        None => Bytes::from(outbound::broadcast(&b.data)),
        Some(m) => notification(m, &b.data)?,
    };
    let delivered = gw.push(BROADCAST_TOPIC, frame);
    metrics::counter!("jobcast_topic_pushes_total", "source" => "http").increment(1);
    Ok(accepted(json!({"delivered": delivered})))
}
