//! The HTTP surface, one module per concern: [`upgrade`] (`GET /ws`), [`ops`] (health,
//! readiness, stats, metrics), [`api`] (the `/v1` server API). Shared here: the route table,
//! `application/problem+json` errors, and the API key check.

mod api;
mod ops;
mod upgrade;

use crate::{Gateway, submit::CallError};
use axum::{
    Router,
    extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Query, Request},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use jobcast_protocol::ErrorCode;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The OpenAPI 3.1 description of every route, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Every route as `(method, path)`, as the router serves them and `openapi.json` lists them.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/ws"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/stats"),
    ("get", "/openapi.json"),
    ("post", "/v1/jobs"),
    ("get", "/v1/jobs"),
    ("delete", "/v1/jobs"),
    ("get", "/v1/jobs/{jobId}"),
    ("delete", "/v1/jobs/{jobId}"),
    ("post", "/v1/jobs/{jobId}/retry"),
    ("post", "/v1/publish"),
    ("post", "/v1/users/{userId}/send"),
    ("post", "/v1/broadcast"),
];

/// An RFC 9457 problem response.
pub fn problem(status: StatusCode, detail: &str) -> Response {
    problem_json(status, detail, None)
}

/// A refusal, answered as a problem response: every handler's error type.
pub struct Problem {
    status: StatusCode,
    detail: String,
    /// The JSON-RPC code a WebSocket client would have seen for the same refusal.
    code: Option<ErrorCode>,
}

impl Problem {
    /// A refusal with `status` and `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            code: None,
        }
    }

    /// 400 with `detail`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        problem_json(self.status, &self.detail, self.code)
    }
}

/// A call refused the way a WebSocket call would be: the HTTP status of its class, and its
/// JSON-RPC code.
impl From<CallError> for Problem {
    fn from(e: CallError) -> Self {
        let status = match e.0 {
            ErrorCode::ParseError | ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::MethodNotFound | ErrorCode::InvalidParams => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::JobNotFound => StatusCode::NOT_FOUND,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            detail: e.1,
            code: Some(e.0),
        }
    }
}

/// Extractor: the request carries one of the configured API keys (401 otherwise). Put it
/// first in a handler's arguments, so nothing else is read before the key is checked.
pub struct ApiKey;

impl FromRequestParts<Arc<Gateway>> for ApiKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, Problem> {
        if gw.config.api_keys.is_empty() {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "the server API is disabled: start the gateway with --api-key",
            ));
        }
        if api_key_ok(gw, &parts.headers) {
            Ok(ApiKey)
        } else {
            Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key",
            ))
        }
    }
}

/// Extractor: a JSON body; one that is too large (413), unreadable or not the expected JSON
/// (400) is a problem.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| Problem::new(r.status(), r.body_text()))?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| Problem::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Extractor: query parameters; ones that do not fit `T` are a 400 problem.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| QueryParams(q))
            .map_err(|e| Problem::bad_request(e.body_text()))
    }
}

fn problem_json(status: StatusCode, detail: &str, code: Option<ErrorCode>) -> Response {
    let mut body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let Some(code) = code {
        // The JSON-RPC code a WebSocket client would have seen for the same refusal.
        body["code"] = code.code().into();
    }
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// The gateway's routes (see [`ROUTES`]).
pub fn router(gw: Arc<Gateway>) -> Router {
    let body_limit = gw.config.max_message_bytes;
    Router::new()
        .route("/ws", get(upgrade::upgrade))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/stats", get(ops::stats))
        .route("/openapi.json", get(ops::openapi))
        .route(
            "/v1/jobs",
            post(api::submit_job)
                .get(api::list_jobs)
                .delete(api::purge_jobs),
        )
        .route("/v1/jobs/{jobId}/retry", post(api::retry_job))
        .route(
            "/v1/jobs/{jobId}",
            get(api::job_snapshot).delete(api::cancel_job),
        )
        .route("/v1/publish", post(api::publish))
        .route("/v1/users/{userId}/send", post(api::send_to_user))
        .route("/v1/broadcast", post(api::broadcast))
        .method_not_allowed_fallback(|| async {
            problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            gw.config.request_timeout,
            request_timeout,
        ))
        .with_state(gw)
}

/// Answers 408 to a request not served in time (a body trickled in slowly, for one).
async fn request_timeout(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => problem(StatusCode::REQUEST_TIMEOUT, "request not completed in time"),
    }
}

/// Compares in time independent of where the strings differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `Authorization: Bearer <api key>` against every configured key.
fn api_key_ok(gw: &Gateway, headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Check every key, so timing does not tell which one matched.
    gw.config.api_keys.iter().fold(false, |ok, k| {
        constant_time_eq(k.as_bytes(), given.trim().as_bytes()) | ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                    documented.push((method.clone(), path.clone()));
                }
            }
        }
        let mut served: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }
}
