//! Operator routes: `/healthz` and `/readyz` (open, for probes), `/stats` and `/metrics`
//! (behind the API key), and `/openapi.json`.

use super::{OPENAPI, problem, require_api_key};
use crate::Gateway;
use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use std::sync::Arc;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    let mut r = OPENAPI.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(p) = require_api_key(&gw, &headers) {
        return p.into_response();
    }
    let mut r = crate::metrics::render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// `GET /readyz`: the backend is reachable and the gateway is not draining.
pub async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.is_draining() {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    if !gw.queue.is_ready() {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "backend not reachable");
    }
    axum::Json(serde_json::json!({"status": "ready"})).into_response()
}

/// `GET /stats`: connections by user type and queue depths (PROTOCOL.md §6).
pub async fn stats(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(p) = require_api_key(&gw, &headers) {
        return p.into_response();
    }
    let conns = gw.hub.conns();
    let mut by_type = std::collections::BTreeMap::<String, u64>::new();
    for c in &conns {
        *by_type
            .entry(c.user_type.clone().unwrap_or_else(|| "default".into()))
            .or_default() += 1;
    }
    let queue = match gw.queue.counts().await {
        Ok(c) => serde_json::to_value(c).unwrap_or_default(),
        Err(e) => serde_json::json!({"error": e.to_string()}),
    };
    axum::Json(serde_json::json!({
        "serverId": gw.config.server_id,
        "totalConnections": conns.len(),
        "uniqueUsers": gw.hub.unique_users(),
        "byUserType": by_type,
        "uptime": gw.started.elapsed().as_secs(),
        "queue": queue,
    }))
    .into_response()
}
