//! The frames the server writes, each serialized once into a `String` that the gateway shares
//! with every receiver. Raw JSON values (params, results, progress, topic data) are copied as
//! they are, never re-parsed.

use crate::{codes::ErrorCode, ids::RequestId};
use serde::Serialize;
use serde_json::value::RawValue;

fn to_json<T: Serialize>(v: &T) -> String {
    // Serializing these plain structs cannot fail; a placeholder keeps the type infallible.
    serde_json::to_string(v).unwrap_or_else(|_| String::from("{}"))
}

#[derive(Serialize)]
struct Notification<'a, P: Serialize> {
    jsonrpc: &'static str,
    method: &'a str,
    params: P,
}

/// A JSON-RPC notification `{"jsonrpc":"2.0","method":…,"params":…}`.
pub fn notification<P: Serialize>(method: &str, params: P) -> String {
    to_json(&Notification {
        jsonrpc: "2.0",
        method,
        params,
    })
}

/// `rpc.welcome`, sent right after the upgrade.
pub fn welcome(connection_id: &str, user_id: &str, server_id: &str, heartbeat_ms: u64) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct P<'a> {
        connection_id: &'a str,
        user_id: &'a str,
        server_id: &'a str,
        heartbeat_ms: u64,
        protocol: &'static str,
    }
    notification(
        "rpc.welcome",
        P {
            connection_id,
            user_id,
            server_id,
            heartbeat_ms,
            protocol: crate::SUBPROTOCOL,
        },
    )
}

/// `job.accepted`.
pub fn accepted(request_id: &RequestId, job_id: &str, state: &str, duplicate: bool) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct P<'a> {
        request_id: &'a RawValue,
        job_id: &'a str,
        state: &'a str,
        duplicate: bool,
    }
    notification(
        "job.accepted",
        P {
            request_id: request_id.as_raw(),
            job_id,
            state,
            duplicate,
        },
    )
}

/// `job.progress`. `request_id` is the id of the request the receiver attached with.
pub fn progress(job_id: &str, request_id: Option<&RequestId>, progress: &RawValue) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct P<'a> {
        job_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a RawValue>,
        progress: &'a RawValue,
    }
    notification(
        "job.progress",
        P {
            job_id,
            request_id: request_id.map(RequestId::as_raw),
            progress,
        },
    )
}

/// `topic.message`.
pub fn topic_message(topic: &str, data: &RawValue) -> String {
    #[derive(Serialize)]
    struct P<'a> {
        topic: &'a str,
        data: &'a RawValue,
    }
    notification("topic.message", P { topic, data })
}

/// `broadcast`: a push to every connection (`POST /v1/broadcast` without a method).
pub fn broadcast(data: &RawValue) -> String {
    #[derive(Serialize)]
    struct P<'a> {
        data: &'a RawValue,
    }
    notification("broadcast", P { data })
}

#[derive(Serialize)]
struct Success<'a, R: Serialize> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    #[serde(rename = "jobId", skip_serializing_if = "Option::is_none")]
    job_id: Option<&'a str>,
    result: R,
}

/// A success response; `job_id` is set for a job's final response.
pub fn result<R: Serialize>(id: &RequestId, job_id: Option<&str>, result: R) -> String {
    to_json(&Success {
        jsonrpc: "2.0",
        id: id.as_raw(),
        job_id,
        result,
    })
}

/// The `error` member of a response.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorObject<'a> {
    /// The code.
    pub code: ErrorCode,
    /// The message.
    pub message: &'a str,
    /// Extra data (`attempts`, `reason`, `retryAfterMs`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct Failure<'a> {
    jsonrpc: &'static str,
    id: &'a RawValue,
    #[serde(rename = "jobId", skip_serializing_if = "Option::is_none")]
    job_id: Option<&'a str>,
    error: ErrorObject<'a>,
}

/// An error response; `id` is `null` when `None`.
pub fn error(id: Option<&RequestId>, job_id: Option<&str>, error: ErrorObject<'_>) -> String {
    let null = RequestId::null();
    to_json(&Failure {
        jsonrpc: "2.0",
        id: id.unwrap_or(&null).as_raw(),
        job_id,
        error,
    })
}

/// An error response with only a code and a message.
pub fn simple_error(id: Option<&RequestId>, code: ErrorCode, message: &str) -> String {
    error(
        id,
        None,
        ErrorObject {
            code,
            message,
            data: None,
        },
    )
}

/// Joins already serialized responses into one batch array frame.
pub fn batch(responses: &[String]) -> String {
    let mut out = String::with_capacity(responses.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, r) in responses.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn shapes() {
        let id = RequestId::string("req-1");
        let v: Value = serde_json::from_str(&accepted(&id, "j_1", "queued", false)).unwrap();
        assert_eq!(v["method"], "job.accepted");
        assert_eq!(v["params"]["requestId"], "req-1");
        let raw = RawValue::from_string("{\"x\":1}".into()).unwrap();
        let v: Value = serde_json::from_str(&result(&id, Some("j_1"), &*raw)).unwrap();
        assert_eq!(v["jobId"], "j_1");
        assert_eq!(v["result"]["x"], 1);
        let v: Value =
            serde_json::from_str(&simple_error(None, ErrorCode::ParseError, "bad")).unwrap();
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["error"]["code"], -32700);
        assert_eq!(batch(&["1".into(), "2".into()]), "[1,2]");
    }
}
