//! One WebSocket connection's life: the welcome, reading frames and serving requests
//! concurrently (bounded per connection), writing the outbound queue, heartbeats and the
//! dead-peer close, and closing with the right code.

use crate::rpc::{self, ConnCtx, Reply};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, stream::FuturesUnordered};
use jobcast_protocol::{CloseCode, ErrorCode, Frame, outbound, parse_frame};
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
};
use tokio_websockets::{Message, WebSocketStream, proto::CloseCode as WsClose};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Most outbound frames written before one flush.
const WRITE_BATCH: usize = 64;

/// Runs the session until the peer goes away, the server shuts down, or the hub asks to close.
pub async fn run<S>(cx: Arc<ConnCtx>, mut ws: WebSocketStream<S>, mut out: mpsc::Receiver<Bytes>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let gw = cx.gw.clone();
    let heartbeat = gw.config.heartbeat;
    let welcome = outbound::welcome(
        &format!("c_{}_{}", gw.config.server_id, cx.conn.id),
        &cx.claims.sub,
        &gw.config.server_id,
        heartbeat.as_millis() as u64,
    );
    // A peer gone before the welcome still goes through the cleanup below.
    let close = if ws.send(Message::text(welcome)).await.is_ok() {
        metrics::counter!("jobcast_messages_sent_total").increment(1);
        pump(&cx, &mut ws, &mut out).await
    } else {
        None
    };
    // Free what was queued for this connection now, not after the close handshake (a slow
    // consumer's queue can be large, and it is not reading its close frame either).
    drop(out);
    let code = close.map_or_else(|| "none".to_owned(), |(c, _)| c.code().to_string());
    metrics::counter!("jobcast_connections_closed_total", "code" => code).increment(1);
    metrics::gauge!("jobcast_connections").decrement(1.0);
    gw.forget(&cx.conn);
    if let Some((code, reason)) = close {
        let msg = Message::close(
            Some(WsClose::try_from(code.code()).unwrap_or(WsClose::NORMAL_CLOSURE)),
            reason,
        );
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            if ws.send(msg).await.is_ok() {
                // Wait briefly for the peer's close reply so the close handshake completes.
                while let Some(Ok(_)) = ws.next().await {}
            }
        })
        .await;
    }
}

/// A connection's message budget: a token bucket refilled at `rate` per second up to `burst`.
struct Budget {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Budget {
    fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            rate,
            burst,
            last: Instant::now(),
        }
    }

    /// Takes one message's token, or says in how many ms one will be there.
    fn take(&mut self) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.rate) * 1000.0).ceil() as u64)
        }
    }
}

/// Answers every request in a message over the budget with -32003 and `retryAfterMs`
/// (notifications get nothing; an unreadable message is answered with a `null` id).
fn rate_limited(cx: &Arc<ConnCtx>, text: &str, wait_ms: u64) {
    metrics::counter!("jobcast_rate_limited_total").increment(1);
    let data = serde_json::value::to_raw_value(&serde_json::json!({"retryAfterMs": wait_ms}))
        .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned());
    let refuse = |id: Option<&jobcast_protocol::RequestId>| {
        outbound::error(
            id,
            None,
            outbound::ErrorObject {
                code: ErrorCode::RateLimited,
                message: "rate limited; retry later",
                data: Some(&data),
            },
        )
    };
    let (items, batch) = match parse_frame(text) {
        Ok(Frame::Single(item)) => (vec![item], false),
        Ok(Frame::Batch(items)) => (items, true),
        // Unreadable: answered with a null id, as JSON-RPC does for parse errors.
        Err(_) => {
            cx.conn.send(Bytes::from(refuse(None)));
            return;
        }
    };
    // Notifications (no id) get nothing.
    let answers: Vec<String> = items
        .iter()
        .filter_map(|i| i.as_ref().map_or_else(|e| e.id.as_ref(), |r| r.id.as_ref()))
        .map(|id| refuse(Some(id)))
        .collect();
    if answers.is_empty() {
        return;
    }
    let frame = if batch {
        outbound::batch(&answers)
    } else {
        answers.concat()
    };
    cx.conn.send(Bytes::from(frame));
}

/// Moves frames both ways until the connection ends; returns the close code to send, if any.
async fn pump<S>(
    cx: &Arc<ConnCtx>,
    ws: &mut WebSocketStream<S>,
    out: &mut mpsc::Receiver<Bytes>,
) -> Option<(CloseCode, &'static str)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let gw = &cx.gw;
    let heartbeat = gw.config.heartbeat;
    let mut close = None;
    let mut tasks: FuturesUnordered<Task> = FuturesUnordered::new();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let mut last_seen = Instant::now();
    let shutdown = gw.shutdown.clone();
    let max_in_flight = gw.config.max_in_flight;
    let mut budget = Budget::new(gw.config.rate_per_sec, gw.config.rate_burst);
    loop {
        tokio::select! {
            biased;
            _ = cx.conn.kill.cancelled() => {
                close = *cx.conn.kill_code.lock();
                break;
            }
            _ = shutdown.cancelled() => {
                close = Some((CloseCode::ServiceRestart, "server restarting; reconnect"));
                break;
            }
            Some(frame) = out.recv() => {
                // A peer that stops reading blocks this write; its queue then fills and the
                // hub closes it as a slow consumer, which must end the write too.
                tokio::select! {
                    r = write_batch(ws, out, frame) => if r.is_err() { break },
                    _ = cx.conn.kill.cancelled() => {
                        close = *cx.conn.kill_code.lock();
                        break;
                    }
                }
            }
            Some(()) = tasks.next(), if !tasks.is_empty() => {}
            msg = ws.next(), if tasks.len() < max_in_flight => {
                match msg {
                    Some(Ok(m)) => {
                        last_seen = Instant::now();
                        if let Some(text) = m.as_text() {
                            metrics::counter!("jobcast_messages_received_total").increment(1);
                            match budget.take() {
                                Ok(()) => on_text(cx, text, &mut tasks),
                                Err(wait_ms) => rate_limited(cx, text, wait_ms),
                            }
                        } else if m.is_binary() {
                            let err = outbound::simple_error(None, ErrorCode::InvalidRequest, "binary frames are not supported; send JSON text");
                            cx.conn.send(Bytes::from(err));
                        } else if m.is_close() {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(conn_id = cx.conn.id, error = %e, "read error");
                        // The library queued a close frame (1007, 1009 or 1002); send it.
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
                        if let tokio_websockets::Error::PayloadTooLong { .. } = e {
                            // A fragmented message over the limit gets no close frame from the
                            // library; send one (refused harmlessly when one was queued).
                            close = Some((CloseCode::TooBig, "message too big"));
                        }
                        break;
                    }
                    None => break,
                }
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > heartbeat * 2 {
                    close = Some((CloseCode::GoingAway, "no pong within two heartbeat intervals"));
                    break;
                }
                if ws.send(Message::ping(Bytes::new())).await.is_err() {
                    break;
                }
            }
        }
    }
    close
}

async fn write_batch<S>(
    ws: &mut WebSocketStream<S>,
    out: &mut mpsc::Receiver<Bytes>,
    first: Bytes,
) -> Result<(), tokio_websockets::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.feed(Message::text(first)).await?;
    let mut n = 1;
    for _ in 1..WRITE_BATCH {
        match out.try_recv() {
            Ok(f) => {
                ws.feed(Message::text(f)).await?;
                n += 1;
            }
            Err(_) => break,
        }
    }
    metrics::counter!("jobcast_messages_sent_total").increment(n);
    ws.flush().await
}

fn on_text(cx: &Arc<ConnCtx>, text: &str, tasks: &mut FuturesUnordered<Task>) {
    match parse_frame(text) {
        Err(e) => {
            cx.conn.send(Bytes::from(outbound::simple_error(
                e.id.as_ref(),
                e.code,
                &e.message,
            )));
        }
        Ok(Frame::Single(Err(e))) => {
            cx.conn.send(Bytes::from(outbound::simple_error(
                e.id.as_ref(),
                e.code,
                &e.message,
            )));
        }
        Ok(Frame::Single(Ok(req))) => {
            let cx = cx.clone();
            tasks.push(Box::pin(async move {
                let reply = rpc::handle(&cx, req).await;
                deliver(&cx, reply);
            }));
        }
        Ok(Frame::Batch(items)) => {
            let cx = cx.clone();
            tasks.push(Box::pin(async move {
                let mut replies = Vec::with_capacity(items.len());
                let mut pending = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Ok(req) => pending.push((i, req)),
                        Err(e) => replies.push((
                            i,
                            Reply {
                                response: Some(outbound::simple_error(
                                    e.id.as_ref(),
                                    e.code,
                                    &e.message,
                                )),
                                release: None,
                            },
                        )),
                    }
                }
                let served = futures_util::future::join_all(pending.into_iter().map(|(i, req)| {
                    let cx = cx.clone();
                    async move { (i, rpc::handle(&cx, req).await) }
                }))
                .await;
                replies.extend(served);
                replies.sort_by_key(|(i, _)| *i);
                let responses: Vec<String> = replies
                    .iter_mut()
                    .filter_map(|(_, r)| r.response.take())
                    .collect();
                if !responses.is_empty() {
                    cx.conn.send(Bytes::from(outbound::batch(&responses)));
                }
                for (_, r) in replies {
                    release(&cx, r);
                }
            }));
        }
    }
}

fn deliver(cx: &ConnCtx, mut reply: Reply) {
    if let Some(text) = reply.response.take() {
        cx.conn.send(Bytes::from(text));
    }
    release(cx, reply);
}

fn release(cx: &ConnCtx, reply: Reply) {
    if let Some((job_id, snapshot)) = reply.release {
        let rid = snapshot.request_id.clone();
        rpc::finish_release(cx, &job_id, Some(&snapshot), rid.as_ref());
    }
}
