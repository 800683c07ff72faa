//! Operator routes: `/healthz` and `/readyz` (open, for probes), `/stats` and `/metrics`
//! (behind the API key), and `/openapi.json`.

use super::{ApiKey, OPENAPI, problem};
use crate::Gateway;
use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
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
pub async fn metrics(_: ApiKey, State(gw): State<Arc<Gateway>>) -> Response {
    // Queue depths are read at scrape time.
    if let Ok(c) = gw.queue.counts().await {
        for (state, n) in [
            ("queued", c.queued),
            ("delayed", c.delayed),
            ("active", c.active),
            ("completed", c.completed),
            ("failed", c.failed),
            ("cancelled", c.cancelled),
        ] {
            metrics::gauge!("jobcast_queue_jobs", "state" => state).set(n as f64);
        }
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

/// `GET /stats[?scope=cluster]`: this gateway's stats, or every live gateway's summed.
pub async fn stats(_: ApiKey, State(gw): State<Arc<Gateway>>, uri: axum::http::Uri) -> Response {
    let cluster = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "scope=cluster"));
    let v = if cluster {
        crate::stats::cluster(&gw).await
    } else {
        crate::stats::local(&gw).await
    };
    axum::Json(v).into_response()
}
