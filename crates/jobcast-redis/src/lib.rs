//! The Redis backend: a durable job queue whose every state change is one Lua script on keys
//! that share the queue's hash tag (see [`keys`]), and a bus over Redis pub/sub. Scripts
//! `PUBLISH` job events to the inbox channel of each gateway listening to the job, so a
//! gateway holds one subscription for all its jobs. Workers wait for work by `BLPOP` on a
//! per-method marker list, never by polling.
#![warn(missing_docs)]

pub mod keys;
mod pubsub;
mod record;
mod scripts;
pub mod testing;

use async_trait::async_trait;
use jobcast_core::{
    AttemptFailure, Audience, Bus, Cancelled, ClaimedJob, Enqueued, Error, FailOutcome,
    GatewayReport, Inbound, JobCancel, JobQueue, JobSnapshot, JobState, Lease, MethodInfo, NewJob,
    Presence, QueueCounts, Result, Retried, WorkerAnnouncement, now_ms,
};
use keys::Keys;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::value::RawValue;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How a job that lost its lease this many times is failed.
const MAX_STALLS: u32 = 3;

/// Settings of the Redis backend.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Queue name: the hash tag of every key.
    pub queue: String,
    /// How long ended jobs are kept.
    pub retention: Duration,
    /// Most jobs not yet ended.
    pub max_open_jobs: usize,
    /// Most ended jobs kept; past it the oldest are purged before their retention ends.
    pub max_ended_jobs: usize,
    /// How often workers promote delayed jobs, reclaim lapsed leases and purge.
    pub tick: Duration,
}

impl RedisConfig {
    /// Defaults for `url`: queue `jobcast`, 24 h retention, one million open jobs, one million
    /// ended jobs, 50 ms tick.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            queue: "jobcast".into(),
            retention: Duration::from_secs(24 * 3600),
            max_open_jobs: 1_000_000,
            max_ended_jobs: 1_000_000,
            tick: Duration::from_millis(50),
        }
    }
}

/// Longest a single Redis call may take before it counts as Redis being unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Bounds a Redis call: while Redis is down, callers get an error (and clients -32005) in
/// bounded time instead of waiting for reconnection attempts. Records the round trip in
/// `jobcast_redis_call_seconds`.
async fn bounded<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    let started = std::time::Instant::now();
    let r = bounded_for(CALL_TIMEOUT, call).await;
    metrics::histogram!("jobcast_redis_call_seconds").record(started.elapsed().as_secs_f64());
    r
}

/// [`bounded`] with a given limit and no timing (for calls that block on purpose).
async fn bounded_for<T>(
    limit: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "redis call timed out",
        ))),
    }
}

fn unavailable(e: redis::RedisError) -> Error {
    Error::Unavailable(e.to_string())
}

struct Inner {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
    scripts: scripts::Scripts,
    config: RedisConfig,
    /// Running jobs of this process's workers: job id → (token, cancel).
    running: Mutex<HashMap<String, (String, JobCancel)>>,
    /// Gateway inboxes of this process: channel → sender.
    inboxes: Mutex<HashMap<String, mpsc::UnboundedSender<Inbound>>>,
    /// Topic channel → gateways of this process subscribed to it.
    topics: Mutex<HashMap<String, HashSet<String>>>,
    /// Worker control channels subscribed, and whether the tick task runs.
    workers_seen: Mutex<HashSet<String>>,
    pubsub: mpsc::UnboundedSender<pubsub::Command>,
    /// Fire-and-forget writes (topic PUBLISHes, presence), sent in order by one task.
    writes: mpsc::UnboundedSender<redis::Cmd>,
    /// Completions of this process's workers, sent in batches by one task ([`completer`]).
    completions: mpsc::UnboundedSender<Completion>,
    /// Submissions of this process's gateways, sent in batches by one task ([`submitter`]).
    submissions: mpsc::UnboundedSender<Submission>,
    /// The connection workers block on (BLPOP holds a connection while it waits).
    blocking: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    ready: AtomicBool,
    claims: AtomicU64,
    stop: CancellationToken,
}

/// The Redis backend; cheap to clone. Implements [`JobQueue`] and [`Bus`].
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

impl RedisBackend {
    /// Connects (retrying in the background if Redis is down later) and starts the pub/sub task.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let client = redis::Client::open(config.url.as_str()).map_err(unavailable)?;
        let mgr_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let conn = ConnectionManager::new_with_config(client.clone(), mgr_config)
            .await
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (writes, writes_rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(conn.clone(), writes_rx));
        let (completions, completions_rx) = mpsc::unbounded_channel();
        let (submissions, submissions_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            writes,
            completions,
            submissions,
            client: client.clone(),
            conn,
            keys: Keys::new(&config.queue),
            scripts: scripts::Scripts::new(),
            config,
            running: Mutex::new(HashMap::new()),
            inboxes: Mutex::new(HashMap::new()),
            topics: Mutex::new(HashMap::new()),
            workers_seen: Mutex::new(HashSet::new()),
            pubsub: tx,
            blocking: tokio::sync::Mutex::new(None),
            ready: AtomicBool::new(true),
            claims: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        tokio::spawn(pubsub::run(
            client,
            Arc::downgrade(&inner),
            rx,
            inner.stop.clone(),
        ));
        tokio::spawn(health(Arc::downgrade(&inner), inner.stop.clone()));
        tokio::spawn(completer(Arc::downgrade(&inner), completions_rx));
        tokio::spawn(submitter(Arc::downgrade(&inner), submissions_rx));
        // Load every script now, so the first calls under load do not all meet NOSCRIPT and
        // retry (they still would after a Redis restart; the client then loads them again).
        let mut conn = inner.conn.clone();
        for script in inner.scripts.all() {
            if let Err(e) = bounded(script.load_async(&mut conn)).await {
                tracing::warn!(error = %e, "could not preload a script; it loads on first use");
            }
        }
        Ok(Self { inner })
    }

    /// Stops the background tasks.
    pub fn shutdown(&self) {
        self.inner.stop.cancel();
    }

    /// Queues a fire-and-forget write (sent in order with the others).
    fn write(&self, cmd: redis::Cmd) -> Result<()> {
        self.inner
            .writes
            .send(cmd)
            .map_err(|_| Error::Unavailable("backend shut down".into()))
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Runs one Redis call, bounded in time (see [`bounded`]), and marks the backend
    /// (un)reachable from its outcome: every call on the queue's hot paths goes through here.
    async fn call<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        self.seen(bounded(call).await)
    }

    /// The outcome of a script that gives up a lease (complete, hand back): 1 when the lease
    /// was held. Either way this worker no longer runs the job.
    fn released(&self, lease: &Lease, r: Result<i64>) -> Result<()> {
        self.inner.running.lock().remove(&lease.job_id);
        match r? {
            1 => Ok(()),
            _ => Err(Error::LeaseLost(lease.job_id.clone())),
        }
    }

    /// Marks the backend (un)reachable from the outcome of a call.
    fn seen<T>(&self, r: redis::RedisResult<T>) -> Result<T> {
        match r {
            Ok(v) => {
                self.inner.ready.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Err(e)
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal() =>
            {
                self.inner.ready.store(false, Ordering::Relaxed);
                Err(unavailable(e))
            }
            Err(e) => Err(Error::Storage(e.to_string())),
        }
    }

    /// Waits up to `secs` for a marker of one of `marks` (BLPOP on the blocking connection).
    async fn wait_for_marker(&self, marks: &[String], secs: f64) -> Result<()> {
        let mut slot = self.inner.blocking.lock().await;
        if slot.is_none() {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(None);
            let conn = self
                .inner
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await;
            *slot = Some(self.seen(conn)?);
        }
        // The connection is out of its slot while it waits: if this wait is dropped mid-BLPOP
        // (a worker stopping), the connection is dropped with it, which ends the BLPOP in
        // Redis. Left pending there, it would take the next wake-up meant for another worker.
        let Some(mut conn) = slot.take() else {
            return Ok(());
        };
        let r: redis::RedisResult<Option<(String, String)>> = bounded_for(
            CALL_TIMEOUT + Duration::from_secs_f64(secs),
            redis::cmd("BLPOP")
                .arg(marks)
                .arg(secs)
                .query_async(&mut conn),
        )
        .await;
        match r {
            // On an error the connection is dropped; the next wait makes a new one.
            Err(e) => self.seen::<()>(Err(e))?,
            Ok(_) => *slot = Some(conn),
        }
        Ok(())
    }

    /// First claim of a worker id: subscribe to its control channel and start ticking.
    fn worker_started(&self, worker_id: &str) {
        if !self.inner.workers_seen.lock().insert(worker_id.to_owned()) {
            return;
        }
        let _ = self
            .inner
            .pubsub
            .send(pubsub::Command::Subscribe(self.keys().control(worker_id)));
        if self.inner.workers_seen.lock().len() == 1 {
            tokio::spawn(ticker(self.clone()));
        }
    }
}

impl Inner {
    /// Handles a message on a subscribed channel.
    fn on_message(&self, channel: &str, payload: &str) {
        if let Some(tx) = self.inboxes.lock().get(channel) {
            if !record::events(payload, |e| {
                let _ = tx.send(Inbound::Job(e));
            }) {
                tracing::warn!(channel, "unreadable inbox message");
            }
            return;
        }
        if channel.starts_with(&self.keys.control_prefix()) {
            // "c:<job>" (cancelled) or "l:<job>" (lease lost): stop the handler.
            if let Some(job_id) = payload.get(2..)
                && let Some((_, cancel)) = self.running.lock().get(job_id)
            {
                cancel.cancel();
            }
            return;
        }
        if let Some(topic) = channel.strip_prefix(&self.keys.topic_prefix()) {
            let mut parts = payload.splitn(3, '\n');
            let (Some(origin), Some(audience), Some(frame)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return;
            };
            let audience = if audience == "p" {
                Audience::PresenceWatchers
            } else {
                Audience::All
            };
            let frame = bytes::Bytes::copy_from_slice(frame.as_bytes());
            let gateways: Vec<String> = self
                .topics
                .lock()
                .get(channel)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            let inboxes = self.inboxes.lock();
            for gw in gateways.into_iter().filter(|g| g != origin) {
                if let Some(tx) = inboxes.get(&self.keys.inbox(&gw)) {
                    let _ = tx.send(Inbound::Topic {
                        topic: topic.to_owned(),
                        audience,
                        frame: frame.clone(),
                    });
                }
            }
        }
    }

    /// Every channel this process should be subscribed to (after a reconnect).
    fn channels(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inboxes.lock().keys().cloned().collect();
        v.extend(self.topics.lock().keys().cloned());
        v.extend(
            self.workers_seen
                .lock()
                .iter()
                .map(|w| self.keys.control(w)),
        );
        v
    }
}

/// A job waiting to be submitted, for the gateway `listener`, and who waits for the outcome.
struct Submission {
    job: NewJob,
    listener: String,
    done: oneshot::Sender<Result<Enqueued>>,
}

/// Hands a request built around its answer's sender to one of the batching tasks
/// ([`submitter`], [`completer`]) and waits for the answer.
async fn ask<T, R>(
    tx: &mpsc::UnboundedSender<T>,
    request: impl FnOnce(oneshot::Sender<Result<R>>) -> T,
) -> Result<R> {
    let gone = || Error::Unavailable("backend shut down".into());
    let (done, answer) = oneshot::channel();
    tx.send(request(done)).map_err(|_| gone())?;
    answer.await.unwrap_or_else(|_| Err(gone()))
}

/// Most jobs in one `enqueue` or `complete` call. At about 34,000 jobs/s on one gateway and
/// worker, calls of at most 64 were full; 256 measured 33.9k–35.6k jobs/s against 28.9k–34.2k
/// (docs/decisions.md). A call of 256 holds Redis for a few milliseconds.
const MAX_BATCH: usize = 256;

/// Bytes of params or results past which an `enqueue` or `complete` call takes no more jobs:
/// a burst of large jobs goes as several calls, so no call holds Redis for long, and the
/// message of final events `complete` publishes to a gateway stays far below the 32 MB at which
/// Redis (by default) disconnects a subscriber.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Takes what has queued on `rx` (at least one item, at most `max`), waiting only for the first.
async fn next_batch<T>(rx: &mut mpsc::UnboundedReceiver<T>, max: usize) -> Option<Vec<T>> {
    next_batch_within(rx, max, usize::MAX, |_| 0).await
}

/// [`next_batch`], also stopping once the items' `size`s add up to `max_bytes` (so a batch
/// passes it by one item at most).
async fn next_batch_within<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    max: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut bytes = size(&first);
    let mut batch = vec![first];
    while batch.len() < max && bytes < max_bytes {
        match rx.try_recv() {
            Ok(item) => {
                bytes += size(&item);
                batch.push(item);
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Submits jobs, as many per script call as have queued up while the previous call ran (group
/// commit, as [`completer`] does): the sequence and the open-jobs counter are then read and
/// written once per call.
async fn submitter(inner: std::sync::Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Submission>) {
    let params = |s: &Submission| s.job.params.get().len();
    while let Some(mut batch) = next_batch_within(&mut rx, MAX_BATCH, MAX_BATCH_BYTES, params).await
    {
        let Some(inner) = inner.upgrade() else { return };
        let backend = RedisBackend { inner };
        // One call per gateway (a process usually has one).
        while !batch.is_empty() {
            let listener = batch[0].listener.clone();
            let (these, rest): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|s| s.listener == listener);
            batch = rest;
            backend.submit(&listener, these).await;
        }
    }
}

impl RedisBackend {
    /// One `enqueue` call for `batch`, all for gateway `listener`; answers each submission.
    async fn submit(&self, listener: &str, batch: Vec<Submission>) {
        let k = self.keys();
        let now = now_ms();
        let mut inv = self.inner.scripts.enqueue.key(k.delayed());
        inv.key(k.seq())
            .key(k.open())
            .key(k.owners())
            .arg(now)
            .arg(listener)
            .arg(self.inner.config.max_open_jobs)
            .arg(k.job_prefix())
            .arg(k.listeners_prefix())
            .arg(k.ready_prefix())
            .arg(k.mark_prefix());
        for s in &batch {
            let job = &s.job;
            inv.arg(&job.id)
                .arg(&job.method)
                .arg(job.params.get())
                .arg(&job.owner)
                .arg(job.request_id.as_ref().map_or("", |r| r.as_json()))
                .arg(job.options.priority)
                .arg(job.options.delay_ms)
                .arg(record::Spec::of(&job.options, now).to_json())
                .arg(job.max_open_per_owner);
        }
        let r: Result<Vec<(i64, String, String)>> =
            self.call(inv.invoke_async(&mut self.conn())).await;
        let mut answers = match r {
            Ok(a) => a.into_iter(),
            Err(e) => {
                for s in batch {
                    let _ = s.done.send(Err(e.clone()));
                }
                return;
            }
        };
        for s in batch {
            let answer = match answers.next() {
                Some((-1, why, _)) if why == "OWNER_FULL" => Err(Error::OwnerFull),
                Some((-1, _, _)) => Err(Error::QueueFull),
                Some((dup, state, owner)) => state_of(&state).map(|state| Enqueued {
                    job_id: s.job.id.clone(),
                    state,
                    duplicate: dup == 1,
                    owner,
                }),
                None => Err(Error::Storage(
                    "enqueue answered fewer jobs than sent".into(),
                )),
            };
            let _ = s.done.send(answer);
        }
    }
}

/// A job's result waiting to be recorded, and who waits for the outcome (1, or 0 when the lease
/// was not held).
struct Completion {
    job_id: String,
    token: String,
    result: Box<RawValue>,
    done: oneshot::Sender<Result<i64>>,
}

/// Records completions, as many per script call as have queued up while the previous call
/// ran (group commit): one job alone goes at once, and under load each call carries a burst,
/// so Redis updates its counters and sets once per call rather than once per job.
async fn completer(inner: std::sync::Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Completion>) {
    let result = |c: &Completion| c.result.get().len();
    while let Some(batch) = next_batch_within(&mut rx, MAX_BATCH, MAX_BATCH_BYTES, result).await {
        let Some(inner) = inner.upgrade() else { return };
        let backend = RedisBackend { inner };
        let k = backend.keys();
        let mut inv = backend.inner.scripts.complete.key(k.active());
        inv.key(k.ended_log())
            .key(k.open())
            .key(k.ends())
            .key(k.owners())
            .arg(now_ms())
            .arg(k.inbox_prefix())
            .arg(k.job_prefix())
            .arg(k.listeners_prefix());
        for c in &batch {
            inv.arg(&c.job_id).arg(&c.token).arg(c.result.get());
        }
        let r: Result<Vec<i64>> = backend.call(inv.invoke_async(&mut backend.conn())).await;
        match r {
            Ok(held) => {
                for (c, h) in batch
                    .into_iter()
                    .zip(held.into_iter().chain(std::iter::repeat(0)))
                {
                    let _ = c.done.send(Ok(h));
                }
            }
            Err(e) => {
                for c in batch {
                    let _ = c.done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Sends fire-and-forget writes in the order they were handed over, pipelining whatever
/// queued up meanwhile into one round trip. Ends when the backend is dropped.
async fn writer(mut conn: ConnectionManager, mut rx: mpsc::UnboundedReceiver<redis::Cmd>) {
    const MAX_PIPELINE: usize = 256;
    while let Some(cmds) = next_batch(&mut rx, MAX_PIPELINE).await {
        let mut pipe = redis::pipe();
        for cmd in cmds {
            pipe.add_command(cmd).ignore();
        }
        let r: redis::RedisResult<()> = bounded(pipe.query_async(&mut conn)).await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "publish or presence write failed");
        }
    }
}

/// Keeps `ready` true while Redis answers PING.
async fn health(inner: std::sync::Weak<Inner>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let mut conn = inner.conn.clone();
        let ok = bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .is_ok();
        inner.ready.store(ok, Ordering::Relaxed);
    }
}

/// Promotes delayed jobs, reclaims lapsed leases and purges; runs in worker processes.
async fn ticker(b: RedisBackend) {
    let mut tick = tokio::time::interval(b.inner.config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = b.inner.stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let k = b.keys();
        let now = now_ms();
        let cutoff = now.saturating_sub(b.inner.config.retention.as_millis() as u64);
        let r: Result<i64> = b
            .call(
                b.inner
                    .scripts
                    .tick
                    .key(k.delayed())
                    .key(k.active())
                    .key(k.ended())
                    .key(k.seq())
                    .key(k.open())
                    .key(k.ends())
                    .key(k.owners())
                    .key(k.ended_log())
                    .key(k.ended_log_head())
                    .arg(now)
                    .arg(k.job_prefix())
                    .arg(k.ready_prefix())
                    .arg(k.mark_prefix())
                    .arg(cutoff)
                    .arg(MAX_STALLS)
                    .arg(k.inbox_prefix())
                    .arg(k.control_prefix())
                    .arg(k.listeners_prefix())
                    .arg(1000)
                    .arg(b.inner.config.max_ended_jobs)
                    .invoke_async(&mut b.conn()),
            )
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "tick failed");
        }
    }
}

fn state_of(s: &str) -> Result<JobState> {
    JobState::ALL
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| Error::Storage(format!("unknown job state {s:?}")))
}

#[async_trait]
impl JobQueue for RedisBackend {
    async fn enqueue(&self, job: NewJob, listener: &str) -> Result<Enqueued> {
        ask(&self.inner.submissions, |done| Submission {
            job,
            listener: listener.to_owned(),
            done,
        })
        .await
    }

    async fn listen(&self, job_id: &str, listener: &str) -> Result<bool> {
        let k = self.keys();
        let r: i64 = self
            .call(
                self.inner
                    .scripts
                    .listen
                    .key(k.job(job_id))
                    .key(k.listeners(job_id))
                    .arg(listener)
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        Ok(r == 1)
    }

    async fn snapshot(&self, job_id: &str) -> Result<Option<JobSnapshot>> {
        let h: HashMap<String, String> = self
            .call(
                redis::cmd("HGETALL")
                    .arg(self.keys().job(job_id))
                    .query_async(&mut self.conn()),
            )
            .await?;
        Ok(record::snapshot(job_id, &h))
    }

    async fn cancel(&self, job_id: &str) -> Result<Option<Cancelled>> {
        let k = self.keys();
        let (code, state): (i64, String) = self
            .call(
                self.inner
                    .scripts
                    .cancel
                    .key(k.job(job_id))
                    .key(k.listeners(job_id))
                    .key(k.active())
                    .key(k.ended_log())
                    .key(k.open())
                    .key(k.delayed())
                    .key(k.ends())
                    .key(k.owners())
                    .arg(job_id)
                    .arg(now_ms())
                    .arg(k.inbox_prefix())
                    .arg(k.ready_prefix())
                    .arg(k.control_prefix())
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        if code < 0 {
            return Ok(None);
        }
        Ok(Some(Cancelled {
            cancelled: code == 1,
            state: state_of(&state)?,
        }))
    }

    async fn claim(
        &self,
        worker_id: &str,
        methods: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<ClaimedJob>> {
        self.worker_started(worker_id);
        let k = self.keys();
        let deadline = tokio::time::Instant::now() + wait;
        let marks: Vec<String> = methods.iter().map(|m| k.mark(m)).collect();
        loop {
            let n = self.inner.claims.fetch_add(1, Ordering::Relaxed);
            let mut inv = self.inner.scripts.claim.key(k.active());
            for m in methods {
                inv.key(k.ready(m));
            }
            for m in &marks {
                inv.key(m);
            }
            inv.arg(now_ms())
                .arg(lease.as_millis() as u64)
                .arg(max)
                .arg(format!("{worker_id}-{n}-"))
                .arg(k.job_prefix())
                .arg(methods.len());
            type Row = (String, String, String, String, u32, String, String);
            let rows: Vec<Row> = self.call(inv.invoke_async(&mut self.conn())).await?;
            if !rows.is_empty() {
                let mut out = Vec::with_capacity(rows.len());
                let mut running = self.inner.running.lock();
                for (id, method, params, d, attempt, token, due) in rows {
                    let cancel = JobCancel::new();
                    running.insert(id.clone(), (token.clone(), cancel.clone()));
                    let (attempts, timeout) = record::limits(&d);
                    out.push(ClaimedJob {
                        lease: Lease { job_id: id, token },
                        method,
                        params: RawValue::from_string(params)
                            .unwrap_or_else(|_| RawValue::NULL.to_owned()),
                        attempt,
                        attempts,
                        timeout,
                        due_at_ms: due.parse().unwrap_or(0),
                        cancel,
                    });
                }
                return Ok(out);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline || methods.is_empty() {
                return Ok(Vec::new());
            }
            // Block on the markers, on the connection kept for that.
            let secs = (deadline - now)
                .min(Duration::from_secs(1))
                .as_secs_f64()
                .max(0.01);
            self.wait_for_marker(&marks, secs).await?;
        }
    }

    async fn renew(&self, leases: &[Lease], lease: Duration) -> Result<Vec<String>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys();
        let mut inv = self.inner.scripts.renew.key(k.active());
        inv.arg(now_ms() + lease.as_millis() as u64)
            .arg(k.job_prefix());
        for l in leases {
            inv.arg(&l.job_id).arg(&l.token);
        }
        let lost: Vec<String> = self.call(inv.invoke_async(&mut self.conn())).await?;
        let mut running = self.inner.running.lock();
        for id in &lost {
            if let Some((_, c)) = running.remove(id) {
                c.cancel();
            }
        }
        Ok(lost)
    }

    async fn progress(&self, lease: &Lease, progress: Box<RawValue>) -> Result<()> {
        let k = self.keys();
        let r: i64 = self
            .call(
                self.inner
                    .scripts
                    .progress
                    .key(k.job(&lease.job_id))
                    .key(k.listeners(&lease.job_id))
                    .arg(&lease.token)
                    .arg(progress.get())
                    .arg(&lease.job_id)
                    .arg(k.inbox_prefix())
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        match r {
            1 => Ok(()),
            _ => Err(Error::LeaseLost(lease.job_id.clone())),
        }
    }

    async fn complete(&self, lease: &Lease, result: Box<RawValue>) -> Result<()> {
        let r = ask(&self.inner.completions, |done| Completion {
            job_id: lease.job_id.clone(),
            token: lease.token.clone(),
            result,
            done,
        })
        .await;
        self.released(lease, r)
    }

    async fn hand_back(&self, lease: &Lease) -> Result<()> {
        let k = self.keys();
        let Some(method) = self.snapshot(&lease.job_id).await?.map(|s| s.method) else {
            return Err(Error::LeaseLost(lease.job_id.clone()));
        };
        let r: Result<i64> = self
            .call(
                self.inner
                    .scripts
                    .hand_back
                    .key(k.job(&lease.job_id))
                    .key(k.active())
                    .key(k.ready(&method))
                    .key(k.mark(&method))
                    .arg(&lease.token)
                    .arg(&lease.job_id)
                    .invoke_async(&mut self.conn()),
            )
            .await;
        self.released(lease, r)
    }

    async fn fail(&self, lease: &Lease, failure: AttemptFailure) -> Result<FailOutcome> {
        let k = self.keys();
        let snap = self.snapshot(&lease.job_id).await?;
        let Some(method) = snap.map(|s| s.method) else {
            return Err(Error::LeaseLost(lease.job_id.clone()));
        };
        let (kind, message, retryable) = match failure {
            AttemptFailure::Error { message, retryable } => ("error", message, retryable),
            AttemptFailure::TimedOut => ("timeout", String::new(), true),
        };
        let r: Result<(i64, u64)> = self
            .call(
                self.inner
                    .scripts
                    .fail
                    .key(k.job(&lease.job_id))
                    .key(k.listeners(&lease.job_id))
                    .key(k.active())
                    .key(k.ended_log())
                    .key(k.open())
                    .key(k.delayed())
                    .key(k.ready(&method))
                    .key(k.seq())
                    .key(k.mark(&method))
                    .key(k.ends())
                    .key(k.owners())
                    .arg(&lease.token)
                    .arg(kind)
                    .arg(message)
                    .arg(if retryable { 1 } else { 0 })
                    .arg(now_ms())
                    .arg(fastrand::f64())
                    .arg(&lease.job_id)
                    .arg(k.inbox_prefix())
                    .invoke_async(&mut self.conn()),
            )
            .await;
        self.inner.running.lock().remove(&lease.job_id);
        match r? {
            (1, at_ms) => Ok(FailOutcome::Retrying { at_ms }),
            (0, _) => Ok(FailOutcome::Dead),
            _ => Err(Error::LeaseLost(lease.job_id.clone())),
        }
    }

    async fn announce(&self, worker: &WorkerAnnouncement) -> Result<()> {
        let k = self.keys();
        let methods =
            serde_json::to_string(&worker.methods).map_err(|e| Error::Storage(e.to_string()))?;
        let ttl = worker.ttl.as_millis() as u64;
        self.call(
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(k.worker_methods(&worker.worker_id))
                .arg(methods)
                .arg("PX")
                .arg(ttl)
                .ignore()
                .cmd("ZADD")
                .arg(k.workers())
                .arg(now_ms() + ttl)
                .arg(&worker.worker_id)
                .ignore()
                .query_async(&mut self.conn()),
        )
        .await
    }

    async fn withdraw(&self, worker_id: &str) -> Result<()> {
        let k = self.keys();
        self.call(
            redis::pipe()
                .atomic()
                .cmd("DEL")
                .arg(k.worker_methods(worker_id))
                .ignore()
                .cmd("ZREM")
                .arg(k.workers())
                .arg(worker_id)
                .ignore()
                .query_async(&mut self.conn()),
        )
        .await
    }

    async fn methods(&self) -> Result<Vec<MethodInfo>> {
        let k = self.keys();
        let (_, workers): ((), Vec<String>) = self
            .call(
                redis::pipe()
                    .atomic()
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(k.workers())
                    .arg("-inf")
                    .arg(now_ms())
                    .cmd("ZRANGE")
                    .arg(k.workers())
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut self.conn()),
            )
            .await?;
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = workers.iter().map(|w| k.worker_methods(w)).collect();
        let r: Result<Vec<Option<String>>> = self
            .call(redis::cmd("MGET").arg(&keys).query_async(&mut self.conn()))
            .await;
        let mut by_name = BTreeMap::new();
        for list in r?.into_iter().flatten() {
            for m in serde_json::from_str::<Vec<MethodInfo>>(&list).unwrap_or_default() {
                by_name.entry(m.name.clone()).or_insert(m);
            }
        }
        Ok(by_name.into_values().collect())
    }

    async fn counts(&self) -> Result<QueueCounts> {
        let k = self.keys();
        let (open, delayed, active, ends): (Option<u64>, u64, u64, HashMap<String, i64>) = self
            .call(
                redis::pipe()
                    .cmd("GET")
                    .arg(k.open())
                    .cmd("ZCARD")
                    .arg(k.delayed())
                    .cmd("ZCARD")
                    .arg(k.active())
                    .cmd("HGETALL")
                    .arg(k.ends())
                    .query_async(&mut self.conn()),
            )
            .await?;
        let end = |s: &str| ends.get(s).copied().unwrap_or(0).max(0) as u64;
        Ok(QueueCounts {
            queued: open.unwrap_or(0).saturating_sub(delayed + active),
            delayed,
            active,
            completed: end("completed"),
            failed: end("failed"),
            cancelled: end("cancelled"),
        })
    }

    async fn list(&self, state: JobState, offset: usize, limit: usize) -> Result<Vec<JobSnapshot>> {
        let k = self.keys();
        let ids: Vec<String> = match state {
            JobState::Queued => self.queued_ids(offset, limit).await?,
            JobState::Delayed | JobState::Active => {
                let key = if state == JobState::Delayed {
                    k.delayed()
                } else {
                    k.active()
                };
                let r = self
                    .call(
                        redis::cmd("ZRANGE")
                            .arg(key)
                            .arg(offset)
                            .arg(offset + limit.max(1) - 1)
                            .query_async(&mut self.conn()),
                    )
                    .await;
                r?
            }
            _ => {
                let r = self
                    .call(
                        self.inner
                            .scripts
                            .list_ended
                            .key(k.ended_log())
                            .arg(state.as_str())
                            .arg(offset)
                            .arg(limit)
                            .arg(k.job_prefix())
                            .invoke_async(&mut self.conn()),
                    )
                    .await;
                r?
            }
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids.iter().take(limit) {
            if let Some(s) = self.snapshot(id).await? {
                out.push(s);
            }
        }
        Ok(out)
    }

    async fn retry(&self, job_id: &str) -> Result<Option<Retried>> {
        let k = self.keys();
        let (code, state): (i64, String) = self
            .call(
                self.inner
                    .scripts
                    .retry
                    .key(k.job(job_id))
                    .key(k.seq())
                    .key(k.open())
                    .key(k.ends())
                    .key(k.owners())
                    .arg(job_id)
                    .arg(k.ready_prefix())
                    .arg(k.mark_prefix())
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        if code < 0 {
            return Ok(None);
        }
        Ok(Some(Retried {
            retried: code == 1,
            state: state_of(&state)?,
        }))
    }

    async fn purge(&self, state: JobState, before_ms: u64) -> Result<u64> {
        if !state.is_terminal() {
            return Ok(0);
        }
        const BATCH: usize = 500;
        let k = self.keys();
        // Positions in the ended log that do not move as the tick drops its head (purge.lua).
        let (mut deleted, mut from) = (0u64, String::new());
        loop {
            let (n, next, done): (u64, i64, bool) = self
                .call(
                    self.inner
                        .scripts
                        .purge
                        .key(k.ended_log())
                        .key(k.ends())
                        .key(k.ended_log_head())
                        .arg(state.as_str())
                        .arg(before_ms)
                        .arg(k.job_prefix())
                        .arg(k.listeners_prefix())
                        .arg(BATCH)
                        .arg(&from)
                        .invoke_async(&mut self.conn()),
                )
                .await?;
            deleted += n;
            from = next.to_string();
            if done {
                return Ok(deleted);
            }
        }
    }

    fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed)
    }
}

impl RedisBackend {
    /// Ids of queued jobs across every method's ready set, in claim order (priority, then
    /// sequence), page `offset..offset + limit`.
    async fn queued_ids(&self, offset: usize, limit: usize) -> Result<Vec<String>> {
        let pattern = format!("{}*", self.keys().ready_prefix());
        let mut conn = self.conn();
        let mut cursor: u64 = 0;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .call(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn),
                )
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut all: Vec<(u64, String)> = Vec::new();
        for key in keys {
            let r: Result<Vec<(String, f64)>> = self
                .call(
                    redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(offset + limit)
                        .arg("WITHSCORES")
                        .query_async(&mut conn),
                )
                .await;
            all.extend(r?.into_iter().map(|(id, score)| (score as u64, id)));
        }
        all.sort();
        Ok(all
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, id)| id)
            .collect())
    }
}

#[async_trait]
impl Bus for RedisBackend {
    fn open_inbox(&self, gateway_id: &str) -> Result<mpsc::UnboundedReceiver<Inbound>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let channel = self.keys().inbox(gateway_id);
        self.inner.inboxes.lock().insert(channel.clone(), tx);
        let _ = self.inner.pubsub.send(pubsub::Command::Subscribe(channel));
        Ok(rx)
    }

    fn publish_topic(
        &self,
        origin: &str,
        topic: &str,
        audience: Audience,
        frame: bytes::Bytes,
    ) -> Result<()> {
        // Fire and forget: the publisher already delivered locally. The payload is
        // `origin\naudience\nframe`: the origin gateway skips its own message when Redis
        // echoes it back; the audience is `a` (all) or `p` (presence watchers).
        let channel = self.keys().topic(topic);
        let mut payload = Vec::with_capacity(origin.len() + 3 + frame.len());
        payload.extend_from_slice(origin.as_bytes());
        payload.extend_from_slice(match audience {
            Audience::All => b"\na\n",
            Audience::PresenceWatchers => b"\np\n",
        });
        payload.extend_from_slice(&frame);
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.write(cmd)
    }

    fn subscribe_topic(&self, gateway_id: &str, topic: &str) -> Result<()> {
        let channel = self.keys().topic(topic);
        let first = {
            let mut t = self.inner.topics.lock();
            let set = t.entry(channel.clone()).or_default();
            set.insert(gateway_id.to_owned());
            set.len() == 1
        };
        if first {
            let _ = self.inner.pubsub.send(pubsub::Command::Subscribe(channel));
        }
        Ok(())
    }

    fn unsubscribe_topic(&self, gateway_id: &str, topic: &str) -> Result<()> {
        let channel = self.keys().topic(topic);
        let last = {
            let mut t = self.inner.topics.lock();
            match t.get_mut(&channel) {
                Some(set) => {
                    set.remove(gateway_id);
                    let empty = set.is_empty();
                    if empty {
                        t.remove(&channel);
                    }
                    empty
                }
                None => false,
            }
        };
        if last {
            let _ = self
                .inner
                .pubsub
                .send(pubsub::Command::Unsubscribe(channel));
        }
        Ok(())
    }

    fn presence_join(&self, gateway_id: &str, topic: &str, conn: u64, user: &str) -> Result<()> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys().presence(topic))
            .arg(Keys::presence_field(gateway_id, conn))
            .arg(user);
        self.write(cmd)
    }

    fn presence_leave(&self, gateway_id: &str, topic: &str, conn: u64) -> Result<()> {
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(self.keys().presence(topic))
            .arg(Keys::presence_field(gateway_id, conn));
        self.write(cmd)
    }

    async fn presence(&self, topic: &str) -> Result<Presence> {
        let k = self.keys();
        let values: Vec<redis::Value> = self
            .call(
                self.inner
                    .scripts
                    .presence
                    .key(k.presence(topic))
                    .key(k.gateways())
                    .arg(now_ms())
                    .invoke_async(&mut self.conn()),
            )
            .await?;
        let mut it = values.into_iter();
        let connections = match it.next() {
            Some(redis::Value::Int(n)) => n.max(0) as u64,
            _ => 0,
        };
        let users = it
            .filter_map(|v| redis::from_redis_value::<String>(v).ok())
            .collect();
        Ok(Presence { users, connections })
    }

    async fn report(&self, report: &GatewayReport, ttl: Duration) -> Result<()> {
        let k = self.keys();
        let now = now_ms();
        let ttl_ms = ttl.as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(k.gateways())
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("ZADD")
            .arg(k.gateways())
            .arg(now + ttl_ms)
            .arg(&report.gateway_id)
            .ignore()
            .cmd("SET")
            .arg(k.gateway_report(&report.gateway_id))
            .arg(&report.stats)
            .arg("PX")
            .arg(ttl_ms.max(1))
            .ignore();
        self.call(pipe.query_async(&mut self.conn())).await
    }

    async fn reports(&self) -> Result<Vec<GatewayReport>> {
        let k = self.keys();
        let ids: Vec<String> = self
            .call(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(k.gateways())
                    .arg(now_ms())
                    .arg("+inf")
                    .query_async(&mut self.conn()),
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| k.gateway_report(id)).collect();
        let stats: Vec<Option<String>> = self
            .call(redis::cmd("MGET").arg(keys).query_async(&mut self.conn()))
            .await?;
        let mut v: Vec<GatewayReport> = ids
            .into_iter()
            .zip(stats)
            .filter_map(|(gateway_id, s)| s.map(|stats| GatewayReport { gateway_id, stats }))
            .collect();
        v.sort_by(|a, b| a.gateway_id.cmp(&b.gateway_id));
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_stop_at_their_count_or_once_past_their_bytes() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for size in [3, 2, 9, 1, 1, 1] {
            tx.send(size).unwrap();
        }
        let mut next = async || {
            next_batch_within(&mut rx, 2, 4, |n: &usize| *n)
                .await
                .unwrap()
        };
        assert_eq!(next().await, [3, 2], "3 is under 4 bytes, 2 more pass it");
        assert_eq!(next().await, [9], "the first is taken whatever its size");
        assert_eq!(next().await, [1, 1], "at most 2");
        assert_eq!(next().await, [1]);
    }
}
