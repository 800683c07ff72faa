//! The `/v1` server API for other services, behind the API key: submit, read and cancel jobs;
//! publish to a topic; push to all of a user's connections; broadcast to every connection.
//! Every push reaches every gateway (through the bus) and is serialized once.

use super::{Problem, require_api_key};
use crate::{
    Gateway,
    submit::{self, CallError, not_found, queue_error},
};
use axum::{
    extract::{
        Path, Query, State,
        rejection::{BytesRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use jobcast_core::{BROADCAST_TOPIC, JobSnapshot, JobState};
use jobcast_protocol::{
    ErrorCode, outbound,
    topics::{user_topic, validate_topic},
    validate_job_id,
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{json, value::RawValue};
use std::sync::Arc;

/// Parses a JSON body, or answers 400 with what is wrong.
fn body<T: DeserializeOwned>(bytes: Result<Bytes, BytesRejection>) -> Result<T, Problem> {
    // Too large (413) and unreadable bodies are problems too.
    let bytes = bytes.map_err(|r| Problem::new(r.status(), r.body_text()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

fn accepted(v: serde_json::Value) -> Response {
    (StatusCode::ACCEPTED, axum::Json(v)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
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
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(p) = require_api_key(&gw, &headers) {
        return p.into_response();
    }
    let b: SubmitBody = match body(bytes) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    match submit_inner(&gw, b).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn submit_inner(gw: &Gateway, b: SubmitBody) -> Result<Response, CallError> {
    let invalid = |m: &str| CallError::new(ErrorCode::InvalidRequest, m);
    if b.method.is_empty() || b.method.starts_with("rpc.") {
        return Err(invalid("method must name a job method (not rpc.*)"));
    }
    if let Some(p) = &b.params
        && !matches!(p.get().trim_start().as_bytes().first(), Some(b'{' | b'['))
    {
        return Err(invalid("params must be an object or an array"));
    }
    if let Some(id) = &b.job_id {
        validate_job_id(id).map_err(invalid)?;
    }
    let owner = b.user_id.unwrap_or_default();
    let job = submit::prepare(
        gw,
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
    // No connection of this gateway waits for it: nobody needs its events here.
    let enq = gw.queue.enqueue(job, "").await.map_err(queue_error)?;
    if enq.duplicate && enq.owner != owner {
        return Err(CallError::new(
            ErrorCode::InvalidRequest,
            "jobId already names another user's job",
        ));
    }
    Ok(accepted(json!({
        "jobId": enq.job_id,
        "state": enq.state,
        "duplicate": enq.duplicate,
    })))
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
    let s = s.ok_or_else(|| Problem::new(StatusCode::BAD_REQUEST, "state is required"))?;
    JobState::ALL
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "state must be queued, delayed, active, completed, failed or cancelled",
            )
        })
}

/// `GET /v1/jobs?state=S[&offset=N][&limit=N]` → `{"state","offset","jobs":[snapshot…]}` in the
/// order of [`jobcast_core::JobQueue::list`]; `limit` defaults to 50, at most 1000.
pub async fn list_jobs(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> Response {
    if let Err(p) = require_api_key(&gw, &headers) {
        return p.into_response();
    }
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return Problem::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let state = match parse_state(q.state.as_deref()) {
        Ok(s) => s,
        Err(p) => return p.into_response(),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    match gw.queue.list(state, q.offset, limit).await {
        Ok(jobs) => axum::Json(json!({
            "state": state,
            "offset": q.offset,
            "jobs": jobs.iter().map(snapshot_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => queue_error(e).into_response(),
    }
}

/// `DELETE /v1/jobs?state=completed|failed|cancelled[&olderThan=24h]` → `{"purged": n}`.
pub async fn purge_jobs(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    query: Result<Query<JobsQuery>, QueryRejection>,
) -> Response {
    if let Err(p) = require_api_key(&gw, &headers) {
        return p.into_response();
    }
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return Problem::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let state = match parse_state(q.state.as_deref()) {
        Ok(s) if s.is_terminal() => s,
        Ok(_) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "only ended jobs are purged: state must be completed, failed or cancelled",
            )
            .into_response();
        }
        Err(p) => return p.into_response(),
    };
    let age = match q.older_than.as_deref().map(parse_age).transpose() {
        Ok(a) => a.unwrap_or(0),
        Err(p) => return p.into_response(),
    };
    let before = jobcast_core::now_ms().saturating_sub(age);
    match gw.queue.purge(state, before).await {
        Ok(n) => axum::Json(json!({"purged": n})).into_response(),
        Err(e) => queue_error(e).into_response(),
    }
}

/// `30s`, `10m`, `24h`, `7d` or plain milliseconds, in milliseconds.
fn parse_age(s: &str) -> Result<u64, Problem> {
    let bad = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "olderThan must look like 30s, 10m, 24h or 7d",
        )
    };
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms).ok_or_else(bad)
}

/// `POST /v1/jobs/{jobId}/retry` → `{"retried","state"}`: a failed or cancelled job runs again
/// from its first attempt.
pub async fn retry_job(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Response {
    per_job(
        &gw,
        &headers,
        &job_id,
        gw.queue.retry(&job_id),
        |r| json!({"retried": r.retried, "state": r.state}),
    )
    .await
}

/// The shape of every per-job route: the API key, then one queue call on a valid id, whose
/// answer is shown by `show`; unknown (or invalid) ids are 404 with -32004.
async fn per_job<T>(
    gw: &Gateway,
    headers: &HeaderMap,
    job_id: &str,
    op: impl std::future::Future<Output = jobcast_core::Result<Option<T>>>,
    show: impl FnOnce(T) -> serde_json::Value,
) -> Response {
    if let Err(p) = require_api_key(gw, headers) {
        return p.into_response();
    }
    if validate_job_id(job_id).is_err() {
        return not_found().into_response();
    }
    match op.await {
        Ok(Some(v)) => axum::Json(show(v)).into_response(),
        Ok(None) => not_found().into_response(),
        Err(e) => queue_error(e).into_response(),
    }
}

/// `GET /v1/jobs/{jobId}` → the job snapshot, with `userId` (its owner; absent for none).
pub async fn job_snapshot(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Response {
    per_job(&gw, &headers, &job_id, gw.queue.snapshot(&job_id), |s| {
        snapshot_json(&s)
    })
    .await
}

/// `DELETE /v1/jobs/{jobId}` → `{"cancelled","state"}`, as `rpc.cancel`.
pub async fn cancel_job(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Response {
    per_job(
        &gw,
        &headers,
        &job_id,
        gw.queue.cancel(&job_id),
        |c| json!({"cancelled": c.cancelled, "state": c.state}),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    topic: String,
    data: Box<RawValue>,
}

/// `POST /v1/publish` → 202 `{"topic","published":true,"delivered":n}` (n: receivers on
/// this gateway; every other gateway delivers to its own).
pub async fn publish(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(p) = require_api_key(&gw, &headers) {
        return p.into_response();
    }
    let b: PublishBody = match body(bytes) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    if let Err(m) = validate_topic(&b.topic) {
        return Problem::new(StatusCode::BAD_REQUEST, m).into_response();
    }
    let delivered = gw.publish(&b.topic, &b.data);
    metrics::counter!("jobcast_topic_pushes_total", "source" => "http").increment(1);
    accepted(json!({"topic": b.topic, "published": true, "delivered": delivered}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushBody {
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
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "method must be 1-128 visible characters, not starting with rpc., job. or topic.",
        ));
    }
    if !matches!(
        data.get().trim_start().as_bytes().first(),
        Some(b'{' | b'[')
    ) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "with a method, data becomes the notification's params and must be an object or an array",
        ));
    }
    Ok(Bytes::from(outbound::notification(method, data)))
}

/// `POST /v1/users/{userId}/send` → 202: every connection of the user, on every gateway, gets
/// `topic.message` on `user:<userId>` — or, with `method`, the notification
/// `{"method": method, "params": data}`.
pub async fn send_to_user(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(p) = require_api_key(&gw, &headers) {
        return p.into_response();
    }
    let b: PushBody = match body(bytes) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let topic = user_topic(&user_id);
    if let Err(m) = validate_topic(&topic) {
        return Problem::new(StatusCode::BAD_REQUEST, m).into_response();
    }
    let delivered = match &b.method {
        None => gw.publish(&topic, &b.data),
        Some(m) => match notification(m, &b.data) {
            Ok(frame) => gw.push(&topic, frame),
            Err(p) => return p.into_response(),
        },
    };
    metrics::counter!("jobcast_topic_pushes_total", "source" => "http").increment(1);
    accepted(json!({"userId": user_id, "delivered": delivered}))
}

/// `POST /v1/broadcast` → 202: every connection on every gateway gets `{"method":
/// "broadcast", "params": {"data": data}}`, or with `method`, `{"method", "params": data}`.
pub async fn broadcast(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(p) = require_api_key(&gw, &headers) {
        return p.into_response();
    }
    let b: PushBody = match body(bytes) {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let frame = match &b.method {
        None => Bytes::from(outbound::broadcast(&b.data)),
        Some(m) => match notification(m, &b.data) {
            Ok(f) => f,
            Err(p) => return p.into_response(),
        },
    };
    let delivered = gw.push(BROADCAST_TOPIC, frame);
    metrics::counter!("jobcast_topic_pushes_total", "source" => "http").increment(1);
    accepted(json!({"delivered": delivered}))
}
