//! Serving one JSON-RPC request from a connection: job calls (validate, enqueue, acknowledge,
//! attach) and the built-in `rpc.*` methods.

use crate::{
    Gateway,
    auth::Claims,
    hub::{Attach, Conn, final_frame},
    registry::Check,
};
use bytes::Bytes;
use jobcast_core::{Error as QueueError, JobSnapshot, NewJob, new_job_id, now_ms};
use jobcast_protocol::{
    ErrorCode, JobOptions, Request, RequestId, outbound, topics::validate_topic, validate_job_id,
};
use serde::Deserialize;
use serde_json::{json, value::RawValue};
use std::sync::Arc;

/// Everything a request needs to know about its connection.
pub struct ConnCtx {
    /// The gateway.
    pub gw: Arc<Gateway>,
    /// The connection.
    pub conn: Arc<Conn>,
    /// The token's claims.
    pub claims: Arc<Claims>,
}

/// What the session does after a request was served: send `response` (alone, or as part of
/// a batch array), then release the hold on `release` and deliver a final response the
/// snapshot already shows.
#[derive(Default)]
pub struct Reply {
    /// The immediate JSON-RPC response, if any.
    pub response: Option<String>,
    /// A held attachment to release once the response is queued.
    pub release: Option<(String, JobSnapshot)>,
}

impl Reply {
    fn respond(text: String) -> Self {
        Self {
            response: Some(text),
            release: None,
        }
    }
}

struct RpcError(ErrorCode, String);

impl RpcError {
    fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self(code, msg.into())
    }
}

fn queue_error(e: QueueError) -> RpcError {
    match e {
        QueueError::QueueFull => RpcError::new(ErrorCode::Overloaded, "queue full; retry later"),
        QueueError::Unavailable(_) => {
            RpcError::new(ErrorCode::Overloaded, "backend unavailable; retry later")
        }
        other => {
            tracing::error!(error = %other, "backend error");
            RpcError::new(ErrorCode::Internal, "internal error")
        }
    }
}

/// Serves one request.
pub async fn handle(cx: &ConnCtx, req: Request) -> Reply {
    let id = req.id.clone();
    let result = if req.method.starts_with("rpc.") {
        builtin(cx, &req).await
    } else {
        return job_call(cx, req).await;
    };
    // Notifications get no response, whatever happened.
    let Some(id) = id else {
        return Reply::default();
    };
    match result {
        Ok((value, release)) => Reply {
            response: Some(outbound::result(&id, None, &*value)),
            release,
        },
        Err(RpcError(code, msg)) => Reply::respond(outbound::simple_error(Some(&id), code, &msg)),
    }
}

#[derive(Deserialize)]
struct JobParam {
    #[serde(rename = "jobId")]
    job_id: String,
}

#[derive(Deserialize)]
struct TopicParam {
    topic: String,
}

#[derive(Deserialize)]
struct PublishParam {
    topic: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

fn params<T: for<'de> Deserialize<'de>>(req: &Request) -> Result<T, RpcError> {
    serde_json::from_str(req.params_json())
        .map_err(|e| RpcError::new(ErrorCode::InvalidParams, format!("invalid params: {e}")))
}

fn to_raw(v: serde_json::Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(&v).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

type Builtin = Result<(Box<RawValue>, Option<(String, JobSnapshot)>), RpcError>;

async fn builtin(cx: &ConnCtx, req: &Request) -> Builtin {
    let gw = &cx.gw;
    let plain = |v: serde_json::Value| Ok((to_raw(v), None));
    match req.method.as_str() {
        "rpc.ping" => plain(json!({"pong": now_ms()})),
        "rpc.status" => {
            let p: JobParam = params(req)?;
            let snap = owned_snapshot(cx, &p.job_id).await?;
            Ok((to_raw_snapshot(&snap), None))
        }
        "rpc.attach" => {
            let p: JobParam = params(req)?;
            let first = owned_snapshot(cx, &p.job_id).await?;
            let attach = gw.hub.attach(&p.job_id, &cx.conn, first.request_id.clone());
            if attach == Attach::Held && cx.conn.job_count() > gw.config.max_jobs_per_conn {
                gw.hub.detach(&p.job_id, &cx.conn);
                return Err(RpcError::new(
                    ErrorCode::Overloaded,
                    "too many attached jobs on this connection",
                ));
            }
            let listened = gw.queue.listen(&p.job_id, &gw.config.server_id).await;
            let snap = match (listened, gw.queue.snapshot(&p.job_id).await) {
                (Ok(true), Ok(Some(s))) => s,
                (Err(e), _) | (_, Err(e)) => {
                    gw.hub.detach(&p.job_id, &cx.conn);
                    return Err(queue_error(e));
                }
                _ => {
                    gw.hub.detach(&p.job_id, &cx.conn);
                    return Err(not_found());
                }
            };
            let release = (attach == Attach::Held).then(|| (p.job_id.clone(), snap.clone()));
            Ok((to_raw_snapshot(&snap), release))
        }
        "rpc.detach" => {
            let p: JobParam = params(req)?;
            let detached = gw.hub.detach(&p.job_id, &cx.conn);
            plain(json!({"detached": detached}))
        }
        "rpc.cancel" => {
            let p: JobParam = params(req)?;
            owned_snapshot(cx, &p.job_id).await?;
            match gw.queue.cancel(&p.job_id).await.map_err(queue_error)? {
                Some(c) => plain(json!({"cancelled": c.cancelled, "state": c.state})),
                None => Err(not_found()),
            }
        }
        "rpc.subscribe" => {
            let p: TopicParam = params(req)?;
            check_topic(&p.topic)?;
            if !cx.claims.may_subscribe(&p.topic) {
                return Err(RpcError::new(
                    ErrorCode::Forbidden,
                    "forbidden: token does not allow this topic",
                ));
            }
            if cx.conn.topic_count() >= gw.config.max_topics_per_conn {
                return Err(RpcError::new(
                    ErrorCode::Overloaded,
                    "too many topics on this connection",
                ));
            }
            gw.subscribe(&cx.conn, &p.topic);
            plain(json!({"topic": p.topic, "subscribed": true}))
        }
        "rpc.unsubscribe" => {
            let p: TopicParam = params(req)?;
            check_topic(&p.topic)?;
            gw.unsubscribe(&cx.conn, &p.topic);
            plain(json!({"topic": p.topic, "subscribed": false}))
        }
        "rpc.publish" => {
            let p: PublishParam = params(req)?;
            check_topic(&p.topic)?;
            if !cx.claims.may_publish(&p.topic) {
                return Err(RpcError::new(
                    ErrorCode::Forbidden,
                    "forbidden: token does not allow publishing to this topic",
                ));
            }
            let data = p.data.unwrap_or_else(|| RawValue::NULL.to_owned());
            let delivered = gw.publish(&p.topic, &data);
            plain(json!({"delivered": delivered}))
        }
        "rpc.methods" => {
            let methods = gw.registry.list().await;
            plain(json!({"methods": methods}))
        }
        _ => Err(RpcError::new(
            ErrorCode::MethodNotFound,
            format!("method not found: {}", req.method),
        )),
    }
}

fn not_found() -> RpcError {
    RpcError::new(ErrorCode::JobNotFound, "job not found")
}

fn check_topic(topic: &str) -> Result<(), RpcError> {
    validate_topic(topic)
        .map_err(|m| RpcError::new(ErrorCode::InvalidParams, format!("invalid params: {m}")))
}

fn to_raw_snapshot(s: &JobSnapshot) -> Box<RawValue> {
    serde_json::value::to_raw_value(s).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The snapshot of a job the caller owns; -32004 for unknown and foreign jobs alike.
async fn owned_snapshot(cx: &ConnCtx, job_id: &str) -> Result<JobSnapshot, RpcError> {
    if validate_job_id(job_id).is_err() {
        return Err(not_found());
    }
    match cx.gw.queue.snapshot(job_id).await.map_err(queue_error)? {
        Some(s) if s.owner == *cx.claims.sub => Ok(s),
        _ => Err(not_found()),
    }
}

/// A call of a job method.
async fn job_call(cx: &ConnCtx, req: Request) -> Reply {
    let id = req.id.clone();
    match start_job(cx, req).await {
        Ok(reply) => reply,
        Err(RpcError(code, msg)) => match id {
            Some(id) => Reply::respond(outbound::simple_error(Some(&id), code, &msg)),
            None => Reply::default(),
        },
    }
}

async fn start_job(cx: &ConnCtx, req: Request) -> Result<Reply, RpcError> {
    let gw = &cx.gw;
    if gw.is_draining() {
        return Err(RpcError::new(
            ErrorCode::Overloaded,
            "server draining; retry on another server",
        ));
    }
    if !cx.claims.may_call(&req.method) {
        return Err(RpcError::new(
            ErrorCode::Forbidden,
            "forbidden: token does not allow this method",
        ));
    }
    let options = JobOptions::parse(
        req.options.as_deref().map(RawValue::get),
        &gw.config.option_limits,
    )
    .map_err(|m| RpcError::new(ErrorCode::InvalidRequest, m))?;
    match gw.registry.check(&req.method, req.params_json()).await {
        Check::Ok => {}
        Check::NotFound => {
            return Err(RpcError::new(
                ErrorCode::MethodNotFound,
                format!("method not found: {}", req.method),
            ));
        }
        Check::InvalidParams(m) => return Err(RpcError::new(ErrorCode::InvalidParams, m)),
        Check::Unavailable => {
            return Err(RpcError::new(
                ErrorCode::Overloaded,
                "backend unavailable; retry later",
            ));
        }
    }
    let job_id = req.job_id.clone().unwrap_or_else(new_job_id);
    let params = req.params.unwrap_or_else(|| RawValue::NULL.to_owned());
    let ack = options.ack;
    let job = NewJob {
        id: job_id.clone(),
        method: req.method,
        params,
        owner: cx.claims.sub.clone(),
        request_id: req.id.clone(),
        options,
    };
    // Fire and forget: no attachment, no ack, no events.
    let Some(request_id) = req.id else {
        gw.queue
            .enqueue(job, &gw.config.server_id)
            .await
            .map_err(queue_error)?;
        return Ok(Reply::default());
    };
    let attach = gw.hub.attach(&job_id, &cx.conn, Some(request_id.clone()));
    let undo = |gw: &Gateway| {
        if attach == Attach::Held {
            gw.hub.detach(&job_id, &cx.conn);
        }
    };
    if attach == Attach::Held && cx.conn.job_count() > gw.config.max_jobs_per_conn {
        undo(gw);
        return Err(RpcError::new(
            ErrorCode::Overloaded,
            "too many attached jobs on this connection",
        ));
    }
    let enq = match gw.queue.enqueue(job, &gw.config.server_id).await {
        Ok(e) => e,
        Err(e) => {
            undo(gw);
            return Err(queue_error(e));
        }
    };
    if enq.duplicate && enq.owner != *cx.claims.sub {
        undo(gw);
        return Err(not_found());
    }
    if ack {
        let frame = outbound::accepted(&request_id, &enq.job_id, enq.state.as_str(), enq.duplicate);
        cx.conn.send(Bytes::from(frame));
    }
    // A duplicate of an ended job gets its final response from the snapshot.
    let snapshot = if enq.duplicate && enq.state.is_terminal() {
        gw.queue.snapshot(&enq.job_id).await.ok().flatten()
    } else {
        None
    };
    if attach == Attach::Held {
        finish_release(cx, &enq.job_id, snapshot.as_ref(), Some(&request_id));
    }
    Ok(Reply::default())
}

/// Releases a held attachment and, when `snapshot` shows the job ended and no final response
/// was delivered meanwhile, delivers it (exactly once).
pub fn finish_release(
    cx: &ConnCtx,
    job_id: &str,
    snapshot: Option<&JobSnapshot>,
    request_id: Option<&RequestId>,
) {
    if !cx.gw.hub.release(job_id, &cx.conn) {
        return;
    }
    let Some(outcome) = snapshot.and_then(JobSnapshot::outcome) else {
        return;
    };
    if let Some(attached_id) = cx.gw.hub.take_attachment(job_id, &cx.conn) {
        let id = attached_id.or_else(|| request_id.cloned());
        cx.conn
            .send(Bytes::from(final_frame(id.as_ref(), job_id, &outcome)));
    }
}
