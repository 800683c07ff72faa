//! Parsing one inbound text frame into JSON-RPC requests: a single request or a batch, each
//! either a valid [`Request`] or the [`RequestError`] to answer it with.

use crate::{codes::ErrorCode, ids::RequestId, ids::validate_job_id};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Longest method name accepted.
pub const MAX_METHOD_LEN: usize = 256;

/// A valid JSON-RPC 2.0 request with jobcast's extra members.
#[derive(Debug)]
pub struct Request {
    /// `None` for a notification (no `id` member): fire and forget.
    pub id: Option<RequestId>,
    /// The method name.
    pub method: String,
    /// Params, always an object or an array when present.
    pub params: Option<Box<RawValue>>,
    /// Client-chosen job id, already validated.
    pub job_id: Option<String>,
    /// Raw `options` JSON, validated later against the server's limits.
    pub options: Option<Box<RawValue>>,
}

impl Request {
    /// Whether the request expects a response.
    pub fn is_notification(&self) -> bool {
        self.id.is_none()
    }

    /// The params JSON text, `null` when absent.
    pub fn params_json(&self) -> &str {
        self.params.as_deref().map_or("null", RawValue::get)
    }
}

/// A request that cannot be served, with the id to answer to.
#[derive(Debug)]
pub struct RequestError {
    /// The request's id; `None` when it had none (notification) — structural errors are
    /// still answered, with `id: null`.
    pub id: Option<RequestId>,
    /// The error code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
}

impl RequestError {
    fn new(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
        }
    }
}

/// One frame, parsed.
#[derive(Debug)]
pub enum Frame {
    /// A single request object (or the error answering it).
    Single(Result<Request, RequestError>),
    /// A non-empty batch.
    Batch(Vec<Result<Request, RequestError>>),
}

#[derive(Deserialize)]
struct Wire {
    jsonrpc: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Box<RawValue>>,
    method: Option<Box<RawValue>>,
    params: Option<Box<RawValue>>,
    #[serde(rename = "jobId")]
    job_id: Option<Box<RawValue>>,
    options: Option<Box<RawValue>>,
}

/// Keeps `"id": null` as `Some(null)`, so it differs from an absent id.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Largest number of requests in one batch.
pub const MAX_BATCH: usize = 1000;

/// Parses one text frame. `Err` is a frame-level error (not JSON, empty or oversized batch),
/// answered with a single error response with `id: null`.
pub fn parse_frame(text: &str) -> Result<Frame, RequestError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<Box<RawValue>> = serde_json::from_str(text).map_err(|e| {
            RequestError::new(None, ErrorCode::ParseError, format!("parse error: {e}"))
        })?;
        if items.is_empty() {
            return Err(RequestError::new(
                None,
                ErrorCode::InvalidRequest,
                "empty batch",
            ));
        }
        if items.len() > MAX_BATCH {
            return Err(RequestError::new(
                None,
                ErrorCode::InvalidRequest,
                format!("batch larger than {MAX_BATCH} requests"),
            ));
        }
        return Ok(Frame::Batch(
            items.iter().map(|raw| parse_object(raw.get())).collect(),
        ));
    }
    // A frame that is not valid JSON at all is a parse error; valid JSON of the wrong shape is
    // an invalid request.
    match serde_json::from_str::<Wire>(text) {
        Ok(w) => Ok(Frame::Single(validate(w))),
        Err(e) if e.is_data() => Ok(Frame::Single(Err(RequestError::new(
            None,
            ErrorCode::InvalidRequest,
            "invalid request: expected a JSON-RPC 2.0 request object",
        )))),
        Err(e) => Err(RequestError::new(
            None,
            ErrorCode::ParseError,
            format!("parse error: {e}"),
        )),
    }
}

fn parse_object(text: &str) -> Result<Request, RequestError> {
    match serde_json::from_str::<Wire>(text) {
        Ok(w) => validate(w),
        Err(_) => Err(RequestError::new(
            None,
            ErrorCode::InvalidRequest,
            "invalid request: expected a JSON-RPC 2.0 request object",
        )),
    }
}

fn validate(w: Wire) -> Result<Request, RequestError> {
    let id = match w.id {
        None => None,
        Some(raw) => Some(RequestId::from_raw(raw).ok_or_else(|| {
            RequestError::new(
                None,
                ErrorCode::InvalidRequest,
                "invalid request: id must be a string, a number or null",
            )
        })?),
    };
    let invalid = |msg: &str| RequestError::new(id.clone(), ErrorCode::InvalidRequest, msg);
    if w.jsonrpc.as_deref().map(RawValue::get) != Some("\"2.0\"") {
        return Err(invalid("invalid request: jsonrpc must be \"2.0\""));
    }
    let method: String = w
        .method
        .as_deref()
        .and_then(|m| serde_json::from_str(m.get()).ok())
        .ok_or_else(|| invalid("invalid request: method must be a string"))?;
    if method.is_empty() || method.len() > MAX_METHOD_LEN {
        return Err(invalid("invalid request: method must be 1-256 bytes"));
    }
    if let Some(p) = &w.params
        && !matches!(p.get().as_bytes().first(), Some(b'{' | b'['))
    {
        return Err(invalid(
            "invalid request: params must be an object or an array",
        ));
    }
    let job_id = match w.job_id {
        None => None,
        Some(raw) => {
            let s: String = serde_json::from_str(raw.get())
                .map_err(|_| invalid("invalid request: jobId must be a string"))?;
            validate_job_id(&s).map_err(|m| invalid(&format!("invalid request: {m}")))?;
            Some(s)
        }
    };
    if let Some(o) = &w.options
        && !o.get().starts_with('{')
    {
        return Err(invalid("invalid options: must be an object"));
    }
    Ok(Request {
        id,
        method,
        params: w.params,
        job_id,
        options: w.options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(s: &str) -> Result<Request, RequestError> {
        match parse_frame(s) {
            Ok(Frame::Single(r)) => r,
            other => panic!("not single: {other:?}"),
        }
    }

    fn code(s: &str) -> i32 {
        match parse_frame(s) {
            Err(e) => e.code.code(),
            Ok(Frame::Single(Err(e))) => e.code.code(),
            other => panic!("no error: {other:?}"),
        }
    }

    #[test]
    fn good_requests() {
        let r = single(r#"{"jsonrpc":"2.0","id":"r1","method":"demo.echo","params":{"a":1},"jobId":"j:1","options":{"priority":3}}"#).unwrap();
        assert_eq!(r.id.as_ref().unwrap().as_json(), "\"r1\"");
        assert_eq!(r.method, "demo.echo");
        assert_eq!(r.params_json(), r#"{"a":1}"#);
        assert_eq!(r.job_id.as_deref(), Some("j:1"));
        let n = single(r#"{"jsonrpc":"2.0","method":"x"}"#).unwrap();
        assert!(n.is_notification());
        let nul = single(r#"{"jsonrpc":"2.0","method":"x","id":null}"#).unwrap();
        assert_eq!(nul.id.unwrap().as_json(), "null");
    }

    #[test]
    fn errors() {
        assert_eq!(code("{"), -32700);
        assert_eq!(code("nope"), -32700);
        assert_eq!(code("[1,"), -32700);
        assert_eq!(code("[]"), -32600);
        assert_eq!(code("5"), -32600);
        assert_eq!(code(r#"{"id":1,"method":"x"}"#), -32600);
        assert_eq!(code(r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#), -32600);
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":1,"method":5}"#), -32600);
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#), -32600);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#),
            -32600
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"x","jobId":"a b"}"#),
            -32600
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"x","jobId":7}"#),
            -32600
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"x","options":7}"#),
            -32600
        );
    }

    #[test]
    fn error_keeps_id() {
        let e = single(r#"{"jsonrpc":"2.0","id":9,"method":7}"#).unwrap_err();
        assert_eq!(e.id.unwrap().as_json(), "9");
    }

    #[test]
    fn batches() {
        match parse_frame(
            r#"[{"jsonrpc":"2.0","id":1,"method":"a"}, 5, {"jsonrpc":"2.0","method":"b"}]"#,
        )
        .unwrap()
        {
            Frame::Batch(v) => {
                assert_eq!(v.len(), 3);
                assert!(v[0].is_ok());
                assert!(v[1].is_err());
                assert!(v[2].is_ok());
            }
            Frame::Single(_) => panic!(),
        }
    }
}
