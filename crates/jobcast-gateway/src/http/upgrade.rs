//! `GET /ws`: credentials (header, subprotocol, query), refusals as plain HTTP before the
//! upgrade, the RFC 6455 handshake, and handing the upgraded stream to a session.

use super::problem;
use crate::{Gateway, auth, hub::Conn, rpc::ConnCtx, session, ws::WsStream};
use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use base64::Engine;
use hyper_util::rt::TokioIo;
use jobcast_protocol::CloseCode;
use std::sync::Arc;

/// Finds the token: `Authorization: Bearer`, then `Sec-WebSocket-Protocol: bearer.<jwt>`,
/// then `?token=`.
fn credentials(headers: &HeaderMap, query: &[(String, String)]) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    {
        return Some(t.trim().to_owned());
    }
    for v in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        if let Ok(s) = v.to_str() {
            for p in s.split(',').map(str::trim) {
                if let Some(t) = p.strip_prefix("bearer.") {
                    return Some(t.to_owned());
                }
            }
        }
    }
    query
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.clone())
}

fn offers_subprotocol(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|p| p.trim() == jobcast_protocol::SUBPROTOCOL)
            })
        })
}

fn accept_key(key: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
    })
}

pub async fn upgrade(state: State<Arc<Gateway>>, req: Request) -> Response {
    let resp = handshake(state, req).await;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        metrics::counter!("jobcast_connections_opened_total").increment(1);
        metrics::gauge!("jobcast_connections").increment(1.0);
    } else {
        let status = resp.status().as_u16().to_string();
        metrics::counter!("jobcast_upgrades_refused_total", "status" => status).increment(1);
    }
    resp
}

async fn handshake(State(gw): State<Arc<Gateway>>, mut req: Request) -> Response {
    let headers = req.headers();
    if !header_has(headers, header::UPGRADE, "websocket")
        || !header_has(headers, header::CONNECTION, "upgrade")
    {
        return problem(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket only",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        let mut r = problem(
            StatusCode::UPGRADE_REQUIRED,
            "WebSocket version 13 required",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
    else {
        return problem(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    if gw.is_draining() {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "server draining; connect to another server",
        );
    }
    let query: Vec<(String, String)> = req.uri().query().map(url_decode_pairs).unwrap_or_default();
    let Some(token) = credentials(headers, &query) else {
        return problem(StatusCode::UNAUTHORIZED, "missing token");
    };
    let claims = match auth::verify(&gw.config.auth, &token) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade refused");
            return problem(StatusCode::UNAUTHORIZED, "invalid or expired token");
        }
    };
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let user_type = claims
        .user_type
        .as_deref()
        .or_else(|| {
            query
                .iter()
                .find(|(k, _)| k == "userType")
                .map(|(_, v)| v.as_str())
        })
        .unwrap_or("default");
    let ticket = match gw.admission.admit(
        &gw.config.limits,
        origin,
        ip,
        claims.sub.as_str().into(),
        user_type.into(),
    ) {
        Ok(t) => t,
        Err((status, detail)) => return problem(status, detail),
    };
    let subprotocol = offers_subprotocol(headers);
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return problem(StatusCode::BAD_REQUEST, "connection cannot be upgraded");
    };
    let conn = Conn::new(
        gw.hub.next_conn_id(),
        ticket.user().clone(),
        gw.config.outbound_queue,
    );
    let cx = Arc::new(ConnCtx {
        gw: gw.clone(),
        conn,
        grants: claims.into_grants(),
        _ticket: ticket,
    });
    let max = gw.config.max_message_bytes;
    // The task holds the context, the pending upgrade and then the session (which owns the
    // context): nothing else lives as long as the connection.
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                metrics::gauge!("jobcast_connections").decrement(1.0);
                return;
            }
        };
        let gw = &cx.gw;
        gw.hub.add_conn(cx.conn.clone());
        if gw.shutdown.is_cancelled() {
            // Stopped while this one was upgrading, so the stop did not see it.
            cx.conn.close(CloseCode::ServiceRestart, crate::RESTARTING);
        }
        gw.subscribe(
            &cx.conn,
            &jobcast_protocol::topics::user_topic(&cx.conn.user),
            false,
        );
        session::run(cx, WsStream::new(TokioIo::new(upgraded), max)).await;
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept_key(&key)) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if subprotocol {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(jobcast_protocol::SUBPROTOCOL),
        );
    }
    resp
}

/// Decodes `a=b&c=d` with percent-escapes and `+` as space.
fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_key() {
        // RFC 6455 §1.3 example.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn query_decoding() {
        let q = url_decode_pairs("token=a%2Eb&deviceId=x+y&bad=%zz&end=%4");
        assert_eq!(q[0], ("token".into(), "a.b".into()));
        assert_eq!(q[1].1, "x y");
        assert_eq!(q[2].1, "%zz");
        assert_eq!(q[3].1, "%4");
    }
}
