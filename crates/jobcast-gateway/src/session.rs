//! One WebSocket connection's life: the welcome, reading messages and serving requests
//! concurrently (bounded per connection), writing what the connection's outbox holds (frames,
//! the heartbeat's pings), and closing with the right code.

use crate::{
    conn::CloseRequest,
    rpc::{self, ConnCtx, Reply},
    ws::{ReadError, WsStream, codec::Incoming},
};
use bytes::Bytes;
use futures_util::{StreamExt, stream::FuturesUnordered};
use jobcast_protocol::{CloseCode, ErrorCode, Frame, outbound, parse_frame};
use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::io::{AsyncRead, AsyncWrite};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Most outbound frames written before one flush.
const WRITE_BATCH: usize = 64;

/// Runs the session until the peer goes away, the server shuts down, or the hub asks to close.
pub async fn run<S>(cx: Arc<ConnCtx>, mut ws: WsStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let gw = cx.gw.clone();
    // Encoded straight into the write buffer: a local String would live as long as the session.
    ws.feed_text(
        outbound::welcome(
            &format!("c_{}_{}", gw.config.server_id, cx.conn.id),
            &cx.claims.sub,
            &gw.config.server_id,
            gw.config.heartbeat.as_millis() as u64,
        )
        .as_bytes(),
    );
    // A peer gone before the welcome still goes through the cleanup below.
    let close = if ws.flush().await.is_ok() {
        metrics::counter!("jobcast_messages_sent_total").increment(1);
        pump(&cx, &mut ws).await
    } else {
        None
    };
    // Free what was queued for this connection now, not after the close handshake (a slow
    // consumer's queue can be large, and it is not reading its close frame either).
    cx.conn.shut(CloseCode::Normal, "closed");
    let code = close.map_or_else(|| "none".to_owned(), |(c, _)| c.code().to_string());
    metrics::counter!("jobcast_connections_closed_total", "code" => code).increment(1);
    metrics::gauge!("jobcast_connections").decrement(1.0);
    gw.forget(&cx.conn);
    if let Some((code, reason)) = close {
        ws.feed_close(code.code(), reason);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            if ws.flush().await.is_ok() {
                // Wait briefly for the peer's close reply so the close handshake completes.
                let mut rest = VecDeque::new();
                while let Ok(true) = ws.read(&mut rest).await {
                    if rest.iter().any(|m| matches!(m, Incoming::Close(_))) {
                        break;
                    }
                    rest.clear();
                }
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
async fn pump<S>(cx: &Arc<ConnCtx>, ws: &mut WsStream<S>) -> Option<CloseRequest>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let max_in_flight = cx.gw.config.max_in_flight;
    let mut budget = Budget::new(cx.gw.config.rate_per_sec, cx.gw.config.rate_burst);
    // Requests being served; made on the first request (an idle connection holds none).
    let mut tasks: Option<FuturesUnordered<Task>> = None;
    let in_flight = |t: &Option<FuturesUnordered<Task>>| t.as_ref().map_or(0, |t| t.len());
    // Messages read but not yet served (a read can bring many; they wait here while the
    // connection has `max_in_flight` requests running).
    let mut inbox: VecDeque<Incoming> = VecDeque::new();
    loop {
        while in_flight(&tasks) < max_in_flight
            && let Some(m) = inbox.pop_front()
        {
            match m {
                Incoming::Text(text) => {
                    metrics::counter!("jobcast_messages_received_total").increment(1);
                    match budget.take() {
                        Ok(()) => on_text(cx, &text, tasks.get_or_insert_with(Default::default)),
                        Err(wait_ms) => rate_limited(cx, &text, wait_ms),
                    }
                }
                Incoming::Binary => {
                    let err = outbound::simple_error(
                        None,
                        ErrorCode::InvalidRequest,
                        "binary frames are not supported; send JSON text",
                    );
                    cx.conn.send(Bytes::from(err));
                }
                Incoming::Close(_) => {
                    // The peer closed: send the echo queued by the decoder, and stop.
                    let _ = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
                    return None;
                }
            }
        }
        if inbox.is_empty() && inbox.capacity() > 0 {
            // An idle connection keeps no buffer.
            inbox = VecDeque::new();
        }
        if ws.wants_flush() {
            // Pongs answering the peer's pings.
            if let Err(end) = write(cx, ws).await {
                return end;
            }
        }
        let busy = in_flight(&tasks);
        tokio::select! {
            biased;
            next = cx.conn.next_out(WRITE_BATCH) => match next {
                Err(close) => return Some(close),
                Ok(out) => {
                    for f in &out.frames {
                        ws.feed_text(f);
                    }
                    if out.ping {
                        ws.feed_ping();
                    }
                    metrics::counter!("jobcast_messages_sent_total").increment(out.frames.len() as u64);
                    if let Err(end) = write(cx, ws).await {
                        return end;
                    }
                }
            },
            Some(Some(())) = async { Some(tasks.as_mut()?.next().await) }, if busy > 0 => {}
            read = ws.read(&mut inbox), if inbox.is_empty() && busy < max_in_flight => {
                match read {
                    Ok(true) => cx.conn.seen(),
                    Ok(false) => return None,
                    Err(ReadError::Violation(v)) => return Some((v.code, v.reason)),
                    Err(ReadError::Io(e)) => {
                        tracing::debug!(conn_id = cx.conn.id, error = %e, "read error");
                        return None;
                    }
                }
            }
        }
    }
}

/// Writes what is queued. A peer that stops reading blocks this; its outbound queue then fills
/// and the hub closes it as a slow consumer, which must end the write too. `Err` ends the
/// session, with the close to send if any.
async fn write<S>(cx: &ConnCtx, ws: &mut WsStream<S>) -> Result<(), Option<CloseRequest>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        r = ws.flush() => r.map_err(|_| None),
        close = cx.conn.close_requested() => Err(Some(close)),
    }
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
