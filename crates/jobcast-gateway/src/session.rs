//! One WebSocket connection's life: the welcome, reading messages and serving requests
//! concurrently (bounded per connection), writing what the connection's outbox holds (frames,
//! the heartbeat's pings), and closing with the right code.
//!
//! Topic messages that arrive within the gateway's topic flush interval of the connection's
//! last write are held back until that interval ends, with any that join them; anything else
//! written takes them along at once. A busy connection then gets fewer, larger writes, and
//! the kernel's cost is per write (docs/decisions.md, session 11).
//!
//! The open connection is one hand-written future, [`Session`], that polls its sources in
//! turn (requests being served, the outbox, the socket) rather than an `async fn` around a
//! `select!`: the task of an idle connection then holds only the session's own fields, which
//! is most of what an idle connection costs (docs/decisions.md). The rare, larger states (the
//! close handshake) are boxed and exist only while they run.

use crate::{
    conn::{CloseRequest, now_ms},
    rpc::{self, ConnCtx, Reply},
    ws::{ReadError, WsStream, codec::Incoming},
};
use bytes::Bytes;
use futures_util::{StreamExt, stream::FuturesUnordered};
use jobcast_protocol::{CloseCode, ErrorCode, Frame, outbound, parse_frame};
use std::{
    collections::VecDeque,
    future::{Future, poll_fn},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Rounds of work one poll of a busy session does before it yields to other tasks.
const ROUNDS_PER_POLL: usize = 32;

/// Runs the session until the peer goes away, the server shuts down, or the hub asks to close.
///
/// Not an `async fn`: one would keep its arguments beside the session made from them for the
/// whole connection (the compiler stores an `async fn`'s arguments apart from its locals).
pub fn run<S>(cx: Arc<ConnCtx>, ws: WsStream<S>) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut session = Session::new(cx, ws);
    async move {
        let end = poll_fn(|c| session.poll_open(c)).await;
        // Boxed: this state is larger than the open one and every connection passes it once.
        Box::pin(session.finish(end)).await;
    }
}

/// How the open connection ended.
enum End {
    /// Close with this code and reason.
    Close(CloseRequest),
    /// The peer closed; the echo of its close frame is queued.
    PeerClosed,
    /// The socket ended or failed; nothing more can be sent.
    Gone,
}

/// An open connection: everything its task holds.
struct Session<S> {
    cx: Arc<ConnCtx>,
    ws: WsStream<S>,
    /// Messages read but not yet served (a read can bring many; they wait here while the
    /// connection has `max_in_flight` requests running). Unallocated when empty.
    inbox: VecDeque<Incoming>,
    /// Requests being served; made on the first request (an idle connection holds none), and
    /// boxed so that it costs an idle connection one word.
    tasks: Option<Box<FuturesUnordered<Task>>>,
    budget: Budget,
    /// When the write buffer was last flushed (`now_ms`).
    last_flush: u32,
    /// While the write buffer holds only topic messages held back on purpose: the timer
    /// ending the hold (exists only during a hold, as the gateway keeps no timer per idle
    /// connection).
    hold: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A session whose first frame out is the welcome.
    fn new(cx: Arc<ConnCtx>, mut ws: WsStream<S>) -> Self {
        let gw = &cx.gw;
        // Encoded straight into the write buffer: a local String would live as long as the
        // session.
        ws.feed_text(
            outbound::welcome(
                &format!("c_{}_{}", gw.config.server_id, cx.conn.id),
                &cx.conn.user,
                &gw.config.server_id,
                gw.config.heartbeat.as_millis() as u64,
            )
            .as_bytes(),
            true,
        );
        crate::metrics::messages_sent().increment(1);
        let budget = Budget::new(gw.config.rate_burst);
        Self {
            cx,
            ws,
            inbox: VecDeque::new(),
            tasks: None,
            budget,
            last_flush: now_ms(),
            hold: None,
        }
    }

    fn in_flight(&self) -> usize {
        self.tasks.as_ref().map_or(0, |t| t.len())
    }

    /// Moves frames both ways until the connection ends, a round at a time (see
    /// [`round`](Self::round)). Returning `Pending`, every source that could make progress has
    /// registered the task's waker.
    fn poll_open(&mut self, c: &mut Context<'_>) -> Poll<End> {
        for _ in 0..ROUNDS_PER_POLL {
            match self.round(c) {
                Err(end) => return Poll::Ready(end),
                Ok(false) => return Poll::Pending,
                Ok(true) => {}
            }
        }
        // Still busy: let other tasks run, then carry on.
        c.waker().wake_by_ref();
        Poll::Pending
    }

    /// One round: serves what was read, drives the requests in flight, takes the outbox,
    /// writes, and reads. Reading waits while requests are at their bound or a write is
    /// blocked (the peer is not reading, so its outbox fills and closes it as a slow
    /// consumer). Returns whether anything moved.
    fn round(&mut self, c: &mut Context<'_>) -> Result<bool, End> {
        let max_in_flight = self.cx.gw.config.max_in_flight;
        while self.in_flight() < max_in_flight
            && let Some(m) = self.inbox.pop_front()
        {
            self.serve(m)?;
        }
        if self.inbox.is_empty() && self.inbox.capacity() > 0 {
            self.inbox = VecDeque::new();
        }
        let mut progress = false;
        if let Some(tasks) = &mut self.tasks {
            while let Poll::Ready(Some(())) = tasks.poll_next_unpin(c) {
                progress = true;
            }
        }
        progress |= self.poll_outbox(c)?;
        if self.ws.wants_flush() && !self.held(c) {
            match self.ws.poll_flush(c) {
                Poll::Ready(Ok(())) => {
                    if !self.cx.gw.config.topic_flush_interval.is_zero() {
                        self.last_flush = now_ms();
                    }
                    progress = true;
                }
                Poll::Ready(Err(_)) => return Err(End::Gone),
                Poll::Pending => {}
            }
        }
        if self.inbox.is_empty() && self.in_flight() < max_in_flight && !self.write_blocked() {
            progress |= self.poll_read(c)?;
        }
        Ok(progress)
    }

    /// Whether the write buffer waits for the socket (the peer is not reading fast enough),
    /// rather than being held back on purpose.
    fn write_blocked(&self) -> bool {
        self.ws.wants_flush() && self.hold.is_none()
    }

    /// Takes what the outbox holds into the write buffer, unless the buffer waits for the
    /// socket; a close request is seen either way. Topic messages alone, arriving within the
    /// topic flush interval of the last write, are held back until its end.
    fn poll_outbox(&mut self, c: &mut Context<'_>) -> Result<bool, End> {
        match self.cx.conn.poll_out(c, !self.write_blocked()) {
            Poll::Ready(Err(close)) => Err(End::Close(close)),
            Poll::Ready(Ok(out)) => {
                let was_empty = !self.ws.wants_flush();
                crate::metrics::messages_sent().increment(out.frames.len() as u64);
                let payload = out.frames.iter().map(Bytes::len).sum();
                self.ws
                    .reserve(out.frames.len() + usize::from(out.ping), payload);
                for f in &out.frames {
                    self.ws.feed_text(f, out.urgent);
                }
                if out.ping {
                    self.ws.feed_ping();
                }
                if was_empty && !self.ws.urgent() {
                    self.hold_back();
                }
                Ok(true)
            }
            Poll::Pending => Ok(false),
        }
    }

    /// Holds the write buffer back until the topic flush interval after the last write, if
    /// that is still ahead.
    fn hold_back(&mut self) {
        let interval = self.cx.gw.config.topic_flush_interval.as_millis();
        let interval = u32::try_from(interval).unwrap_or(u32::MAX);
        if interval == 0 {
            return;
        }
        let since = now_ms().wrapping_sub(self.last_flush);
        if since >= interval {
            return;
        }
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(u64::from(interval - since));
        self.hold = Some(Box::pin(tokio::time::sleep_until(deadline)));
    }

    /// Whether the write buffer is still held back; registers the timer's wake-up if so. A
    /// hold ends at its time, or as soon as anything that must not wait joins the buffer (a
    /// response, a job event, a ping, a pong).
    fn held(&mut self, c: &mut Context<'_>) -> bool {
        let Some(timer) = &mut self.hold else {
            return false;
        };
        if !self.ws.urgent() && timer.as_mut().poll(c).is_pending() {
            return true;
        }
        self.hold = None;
        false
    }

    /// Reads what the socket has into the inbox.
    fn poll_read(&mut self, c: &mut Context<'_>) -> Result<bool, End> {
        match self.ws.poll_read(c, &mut self.inbox) {
            Poll::Ready(Ok(true)) => {
                self.cx.conn.seen();
                Ok(true)
            }
            Poll::Ready(Ok(false)) => Err(End::Gone),
            Poll::Ready(Err(ReadError::Violation(v))) => Err(End::Close((v.code, v.reason))),
            Poll::Ready(Err(ReadError::Io(e))) => {
                tracing::debug!(conn_id = self.cx.conn.id, error = %e, "read error");
                Err(End::Gone)
            }
            Poll::Pending => Ok(false),
        }
    }

    /// Serves one message read from the peer; `Err` when it ends the connection.
    fn serve(&mut self, m: Incoming) -> Result<(), End> {
        let cx = &self.cx;
        match m {
            Incoming::Text(text) => {
                crate::metrics::messages_received().increment(1);
                let config = &cx.gw.config;
                match self.budget.take(config.rate_per_sec, config.rate_burst) {
                    Ok(()) => on_text(cx, &text, self.tasks.get_or_insert_with(Default::default)),
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
            Incoming::Close(_) => return Err(End::PeerClosed),
        }
        Ok(())
    }

    /// Leaves the hub, then ends the WebSocket: echoes the peer's close, or sends ours and
    /// waits briefly for the peer's reply so the close handshake completes.
    async fn finish(self, end: End) {
        let Self {
            cx, mut ws, tasks, ..
        } = self;
        // Requests still being served stop here, before the connection leaves the hub.
        drop(tasks);
        // Free what was queued for this connection now, not after the close handshake (a slow
        // consumer's queue can be large, and it is not reading its close frame either).
        cx.conn.shut(CloseCode::Normal, "closed");
        let code = match &end {
            End::Close((c, _)) => c.code().to_string(),
            End::PeerClosed | End::Gone => "none".to_owned(),
        };
        metrics::counter!("jobcast_connections_closed_total", "code" => code).increment(1);
        metrics::gauge!("jobcast_connections").decrement(1.0);
        cx.gw.forget(&cx.conn);
        match end {
            End::Gone => {}
            End::PeerClosed => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
            }
            End::Close((code, reason)) => {
                ws.feed_close(code.code(), reason);
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    if ws.flush().await.is_ok() {
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
    }
}

/// A connection's message budget: a token bucket refilled at the configured rate per second
/// up to the burst (kept small: every connection holds one).
struct Budget {
    tokens: f32,
    /// When it was last refilled (`now_ms`).
    last: u32,
}

impl Budget {
    fn new(burst: u32) -> Self {
        Self {
            tokens: burst.max(1) as f32,
            last: now_ms(),
        }
    }

    /// Takes one message's token, or says in how many ms one will be there.
    fn take(&mut self, rate: f64, burst: u32) -> Result<(), u64> {
        if rate <= 0.0 {
            return Ok(());
        }
        let now = now_ms();
        let elapsed = f64::from(now.wrapping_sub(self.last)) / 1000.0;
        self.last = now;
        let tokens = (f64::from(self.tokens) + elapsed * rate).min(f64::from(burst.max(1)));
        if tokens >= 1.0 {
            self.tokens = (tokens - 1.0) as f32;
            Ok(())
        } else {
            self.tokens = tokens as f32;
            Err((((1.0 - tokens) / rate) * 1000.0).ceil() as u64)
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

#[cfg(test)]
mod tests {
    #[test]
    fn an_idle_session_stays_within_216_bytes() {
        // The session lives inside its task's allocation. At 232 bytes, `bench idle` measured
        // 1,770 bytes per idle connection against 1,610 at 216 (session 11), most likely as
        // its task moved up one of the allocator's size classes.
        assert!(std::mem::size_of::<super::Session<tokio::net::TcpStream>>() <= 216);
    }
}
