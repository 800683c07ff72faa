//! The accept loop: takes TCP connections, sets TCP_NODELAY, runs the TLS handshake when TLS is
//! on, and serves HTTP/1.1 (with upgrades) on each until the gateway stops.
//!
//! Every connection must finish its TLS handshake and send a complete request head within the
//! handshake timeout, or it is closed: a peer that connects and says nothing, or trickles its
//! headers a byte at a time (slowloris), holds a socket for that long at most. Request bodies
//! are bounded by the request timeout in the router.

use crate::{Gateway, tls::Tls};
use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_service::Service;

/// Accepts until `stop`, then lets every HTTP connection finish its request in flight and
/// returns once they are closed. Upgraded WebSockets are not waited for here (the gateway
/// drains them itself).
pub(crate) async fn serve(
    gw: Arc<Gateway>,
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
) {
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning; the
                    // connections already open keep being served.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (gw, app, stop) = (gw.clone(), app.clone(), stop.clone());
        tracker.spawn(async move { connection(gw, tcp, peer, app, stop).await });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

async fn connection(
    gw: Arc<Gateway>,
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    stop: CancellationToken,
) {
    // Frames are small and latency matters: without TCP_NODELAY, a final response written
    // right after `job.accepted` waits for the peer's delayed ACK (about 40 ms).
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    let limit = gw.config.handshake_timeout;
    match &gw.config.tls {
        None => http(tcp, peer, app, limit, None, stop).await,
        Some(tls) => {
            // One deadline for the TLS handshake and the first request head together, so a
            // slow TLS handshake does not earn the request head a fresh `limit`.
            let deadline = tokio::time::Instant::now() + limit;
            let Some(stream) = tls_handshake(tls, tcp, peer, deadline).await else {
                return;
            };
            http(stream, peer, app, limit, Some(deadline), stop).await;
        }
    }
}

async fn tls_handshake(
    tls: &Tls,
    tcp: TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout_at(deadline, tls.acceptor().accept(tcp)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            metrics::counter!("jobcast_handshakes_failed_total", "reason" => "tls").increment(1);
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            metrics::counter!("jobcast_handshakes_failed_total", "reason" => "timeout")
                .increment(1);
            None
        }
    }
}

/// Serves HTTP/1.1 on `io`. A request head must arrive within `limit` (each one, so idle
/// keep-alive connections close too); the first one also by `first_head_by` when given.
async fn http<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    limit: Duration,
    first_head_by: Option<tokio::time::Instant>,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Whether a request head ever arrived: a deadline passing before that is a stalled
    // handshake; after it, an idle keep-alive connection being closed.
    let served = Arc::new(AtomicBool::new(false));
    let seen = served.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { app.call(req).await }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limit)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    let first_head = async {
        match first_head_by {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(first_head);
    let mut armed = first_head_by.is_some();
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = stop.cancelled() => {
                // Finish the request in flight, then close.
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
            _ = &mut first_head, if armed => {
                if !served.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "no request head by the handshake deadline");
                    metrics::counter!("jobcast_handshakes_failed_total", "reason" => "timeout")
                        .increment(1);
                    return;
                }
                armed = false;
            }
        }
    };
    if let Err(e) = result {
        if e.is_timeout() && !served.load(Ordering::Relaxed) {
            metrics::counter!("jobcast_handshakes_failed_total", "reason" => "timeout")
                .increment(1);
        }
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}
