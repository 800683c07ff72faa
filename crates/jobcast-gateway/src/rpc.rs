//! Serving one JSON-RPC request from a connection: job calls (validate, enqueue, acknowledge,
//! attach) and the built-in `rpc.*` methods.

use crate::{
    Gateway,
    auth::Grants,
    hub::{Attach, Conn, final_frame},
    submit::{self, CallError, not_found, queue_error},
};
use bytes::Bytes;
use jobcast_core::{JobSnapshot, now_ms};
use jobcast_protocol::{
    ErrorCode, Request, RequestId, outbound, topics::validate_topic, validate_job_id,
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
    /// What the token allows (the user is `conn.user`).
    pub grants: Grants,
    /// The connection's places under the admission limits, given back when it is dropped.
    pub _ticket: crate::admission::Ticket,
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
        Err(CallError(code, msg)) => Reply::respond(outbound::simple_error(Some(&id), code, &msg)),
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
    /// `rpc.subscribe`: also receive `topic.join`/`topic.leave`.
    #[serde(default)]
    presence: bool,
}

#[derive(Deserialize)]
struct PublishParam {
    topic: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

fn params<T: for<'de> Deserialize<'de>>(req: &Request) -> Result<T, CallError> {
    serde_json::from_str(req.params_json())
        .map_err(|e| CallError::new(ErrorCode::InvalidParams, format!("invalid params: {e}")))
}

fn to_raw(v: serde_json::Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(&v).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

type Builtin = Result<(Box<RawValue>, Option<(String, JobSnapshot)>), CallError>;

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
            let attach = gw
                .hub
                .attach(&p.job_id, &cx.conn, first.request_id.clone(), None);
            if attach == Attach::Held && cx.conn.job_count() > gw.config.max_jobs_per_conn {
                gw.hub.detach(&p.job_id, &cx.conn);
                return Err(CallError::new(
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
            may_subscribe(cx, &p.topic)?;
            if cx.conn.topic_count() >= gw.config.max_topics_per_conn {
                return Err(CallError::new(
                    ErrorCode::Overloaded,
                    "too many topics on this connection",
                ));
            }
            gw.subscribe(&cx.conn, &p.topic, p.presence);
            plain(json!({"topic": p.topic, "subscribed": true}))
        }
        "rpc.presence" => {
            let p: TopicParam = params(req)?;
            may_subscribe(cx, &p.topic)?;
            let presence = gw.presence(&p.topic).await.map_err(queue_error)?;
            plain(json!({
                "topic": p.topic,
                "users": presence.users,
                "connections": presence.connections,
            }))
        }
        "rpc.unsubscribe" => {
            let p: TopicParam = params(req)?;
            check_topic(&p.topic)?;
            let _ = gw.unsubscribe(&cx.conn, &p.topic);
            plain(json!({"topic": p.topic, "subscribed": false}))
        }
        "rpc.publish" => {
            let p: PublishParam = params(req)?;
            check_topic(&p.topic)?;
            if !cx.grants.may_publish(&cx.conn.user, &p.topic) {
                return Err(CallError::new(
                    ErrorCode::Forbidden,
                    "forbidden: token does not allow publishing to this topic",
                ));
            }
            let data = p.data.unwrap_or_else(|| RawValue::NULL.to_owned());
            let delivered = gw.publish(&p.topic, &data);
            metrics::counter!("jobcast_topic_pushes_total", "source" => "ws").increment(1);
            plain(json!({"delivered": delivered}))
        }
        "rpc.methods" => {
            let methods = gw.registry.list().await;
            plain(json!({"methods": methods}))
        }
        _ => Err(CallError::new(
            ErrorCode::MethodNotFound,
            format!("method not found: {}", req.method),
        )),
    }
}

/// A valid topic the token lets the caller subscribe to (and see the presence of).
fn may_subscribe(cx: &ConnCtx, topic: &str) -> Result<(), CallError> {
    check_topic(topic)?;
    if !cx.grants.may_subscribe(&cx.conn.user, topic) {
        return Err(CallError::new(
            ErrorCode::Forbidden,
            "forbidden: token does not allow this topic",
        ));
    }
    Ok(())
}

fn check_topic(topic: &str) -> Result<(), CallError> {
    validate_topic(topic)
        .map_err(|m| CallError::new(ErrorCode::InvalidParams, format!("invalid params: {m}")))
}

fn to_raw_snapshot(s: &JobSnapshot) -> Box<RawValue> {
    serde_json::value::to_raw_value(s).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The snapshot of a job the caller owns; -32004 for unknown and foreign jobs alike.
async fn owned_snapshot(cx: &ConnCtx, job_id: &str) -> Result<JobSnapshot, CallError> {
    if validate_job_id(job_id).is_err() {
        return Err(not_found());
    }
    match cx.gw.queue.snapshot(job_id).await.map_err(queue_error)? {
        Some(s) if *s.owner == *cx.conn.user => Ok(s),
        _ => Err(not_found()),
    }
}

/// A call of a job method.
async fn job_call(cx: &ConnCtx, req: Request) -> Reply {
    let id = req.id.clone();
    let method = req.method.clone();
    match start_job(cx, req).await {
        Ok((reply, outcome)) => {
            count_call(&method, outcome);
            reply
        }
        Err(CallError(code, msg)) => {
            // Names of methods nobody serves come from clients (refused for any reason:
            // not found, forbidden, bad options): keep them out of labels, whose number
            // would otherwise be the clients' to choose.
            let method = if cx.gw.registry.serves(&method) {
                &method
            } else {
                "unknown"
            };
            count_call(method, &code.code().to_string());
            match id {
                Some(id) => Reply::respond(outbound::simple_error(Some(&id), code, &msg)),
                None => Reply::default(),
            }
        }
    }
}

fn count_call(method: &str, outcome: &str) {
    crate::metrics::job_calls(method, outcome).increment(1);
}

/// Starts a job; returns the reply and the outcome for metrics (`accepted`, `duplicate`).
async fn start_job(cx: &ConnCtx, req: Request) -> Result<(Reply, &'static str), CallError> {
    let called_at = std::time::Instant::now();
    let gw = &cx.gw;
    if !cx.grants.may_call(&req.method) {
        return Err(CallError::new(
            ErrorCode::Forbidden,
            "forbidden: token does not allow this method",
        ));
    }
    let job = submit::prepare(
        gw,
        submit::Call {
            method: req.method,
            params: req.params,
            options: req.options,
            job_id: req.job_id,
            owner: cx.conn.user.to_string(),
            request_id: req.id.clone(),
        },
    )
    .await?;
    let job_id = job.id.clone();
    let ack = job.options.ack;
    // Fire and forget: no attachment, no ack, no events.
    let Some(request_id) = req.id else {
        gw.queue
            .enqueue(job, &gw.config.server_id)
            .await
            .map_err(queue_error)?;
        return Ok((Reply::default(), "accepted"));
    };
    let attach = gw
        .hub
        .attach(&job_id, &cx.conn, Some(request_id.clone()), Some(called_at));
    let undo = |gw: &Gateway| {
        if attach == Attach::Held {
            gw.hub.detach(&job_id, &cx.conn);
        }
    };
    if attach == Attach::Held && cx.conn.job_count() > gw.config.max_jobs_per_conn {
        undo(gw);
        return Err(CallError::new(
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
    if enq.duplicate && *enq.owner != *cx.conn.user {
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
    let outcome = if enq.duplicate {
        "duplicate"
    } else {
        "accepted"
    };
    Ok((Reply::default(), outcome))
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
