//! Running handlers: the claim loop, concurrency, lease renewal, heartbeats (method
//! announcements), per-attempt timeouts, cancellation and graceful drain.

use crate::{
    context::Context,
    handler::{BoxedHandler, HandlerError, boxed},
};
use futures_util::FutureExt;
use jobcast_core::{
    AttemptFailure, ByLabels, ClaimedJob, JobCancel, JobQueue, Lease, MethodInfo,
    WorkerAnnouncement,
};
use metrics::Histogram;
use parking_lot::Mutex;
use serde::{Serialize, de::DeserializeOwned};
use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, LazyLock},
    time::Duration,
};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Outcomes that may wait to be recorded per handler slot.
const OUTCOMES_PER_SLOT: usize = 16;

/// Handlers a worker runs at once unless told otherwise. A place is taken from the claim that
/// fetches a job until its handler returns, so a worker of short jobs completes at most this
/// many per claim round trip: on Redis, 64 places held one gateway and worker to about 27,000
/// jobs/s with Redis not yet saturated; 128 to 1,024 gave 32,900–34,500, where Redis is
/// (docs/decisions.md). An unused place costs nothing, and a running handler is one task.
pub const DEFAULT_CONCURRENCY: usize = 256;

/// Tunables of a worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Unique id (defaults to `w-<random>`).
    pub worker_id: String,
    /// Handlers running at once (a job whose handler returned no longer holds a place while
    /// its outcome is recorded).
    pub concurrency: usize,
    /// Lease length; renewed every third of it.
    pub lease: Duration,
    /// How long a claim waits for work before looping (and re-checking shutdown).
    pub claim_wait: Duration,
    /// Announcement lifetime; renewed every third of it.
    pub heartbeat_ttl: Duration,
    /// On shutdown, how long running jobs may take to finish before they are stopped (their
    /// leases then lapse and the jobs run again elsewhere).
    pub drain_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: format!("w-{:08x}", fastrand::u32(..)),
            concurrency: DEFAULT_CONCURRENCY,
            lease: Duration::from_secs(30),
            claim_wait: Duration::from_secs(5),
            heartbeat_ttl: Duration::from_secs(15),
            drain_grace: Duration::from_secs(10),
        }
    }
}

/// Collects handlers and settings, then builds a [`Worker`].
#[derive(Default)]
pub struct WorkerBuilder {
    handlers: HashMap<String, (MethodInfo, BoxedHandler)>,
    config: WorkerConfig,
}

impl WorkerBuilder {
    /// An empty builder with default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `name` with a typed handler. Params that do not deserialize into `P` fail
    /// the job at once with an "invalid params" error.
    pub fn method<P, R, F, Fut>(self, name: &str, f: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Context, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    {
        self.register(name, None, boxed(f))
    }

    /// Registers `name` with a JSON Schema for its params; gateways refuse calls whose params
    /// do not validate (-32602) before a job is created.
    pub fn method_with_schema<P, R, F, Fut>(
        self,
        name: &str,
        schema: serde_json::Value,
        f: F,
    ) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Context, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    {
        self.register(name, Some(schema), boxed(f))
    }

    fn register(
        mut self,
        name: &str,
        params_schema: Option<serde_json::Value>,
        handler: BoxedHandler,
    ) -> Self {
        let info = MethodInfo {
            name: name.to_owned(),
            params_schema,
        };
        self.handlers.insert(name.to_owned(), (info, handler));
        self
    }

    /// Keeps only the methods whose names are in `names` (for `--methods`).
    pub fn only(mut self, names: &[String]) -> Self {
        self.handlers.retain(|k, _| names.iter().any(|n| n == k));
        self
    }

    /// Replaces the settings.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets how many handlers run at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n.max(1);
        self
    }

    /// The registered method names, sorted.
    pub fn method_names(&self) -> Vec<String> {
        let mut v: Vec<_> = self.handlers.keys().cloned().collect();
        v.sort();
        v
    }

    /// Builds the worker for `queue`.
    pub fn build(self, queue: Arc<dyn JobQueue>) -> Worker {
        Worker {
            handlers: Arc::new(self.handlers),
            config: self.config,
            queue,
        }
    }
}

/// A running job as the worker tracks it.
struct Running {
    lease: Lease,
    cancel: JobCancel,
}

/// Runs handlers for jobs claimed from a queue.
pub struct Worker {
    handlers: Arc<HashMap<String, (MethodInfo, BoxedHandler)>>,
    config: WorkerConfig,
    queue: Arc<dyn JobQueue>,
}

impl Worker {
    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.config.worker_id
    }

    /// Runs until `shutdown` fires, then stops claiming, lets running jobs finish within the
    /// drain grace, stops the rest and withdraws the worker's announcement.
    pub async fn run(self, shutdown: CancellationToken) {
        let running: Arc<Mutex<HashMap<String, Running>>> = Arc::default();
        let methods: Vec<String> = self.handlers.keys().cloned().collect();
        let announcement = WorkerAnnouncement {
            worker_id: self.config.worker_id.clone(),
            methods: self.handlers.values().map(|(m, _)| m.clone()).collect(),
            ttl: self.config.heartbeat_ttl,
        };
        let background = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(heartbeat(
            self.queue.clone(),
            announcement,
            running.clone(),
            self.config.lease,
            background.clone(),
        ));

        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        // Outcomes being recorded. A handler that is done gives its slot to the next job
        // while its outcome is recorded (a durable commit or a round trip, often longer than
        // a short handler); outcomes are small and recorded in batches, so more of them may
        // wait than handlers run, but not without bound, so a stalled store still stops the
        // worker.
        let recording = Arc::new(Semaphore::new(
            self.config.concurrency.saturating_mul(OUTCOMES_PER_SLOT),
        ));
        let jobs = TaskTracker::new();
        tracing::info!(worker_id = %self.config.worker_id, ?methods, concurrency = self.config.concurrency, "worker started");
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let free = slots.available_permits() + 1;
            let claimed = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.queue.claim(&self.config.worker_id, &methods, free, self.config.lease, self.config.claim_wait) => r,
            };
            let claimed = match claimed {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "claim failed; retrying");
                    drop(first);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            let mut first = Some(first);
            for job in claimed {
                let permit = match first.take() {
                    Some(p) => p,
                    None => match slots.clone().try_acquire_owned() {
                        Ok(p) => p,
                        Err(_) => {
                            tracing::error!("claimed more jobs than free slots");
                            match slots.clone().acquire_owned().await {
                                Ok(p) => p,
                                Err(_) => break,
                            }
                        }
                    },
                };
                let Some((_, handler)) = self.handlers.get(&job.method) else {
                    tracing::error!(method = %job.method, "claimed a job for an unknown method");
                    continue;
                };
                running.lock().insert(
                    job.lease.job_id.clone(),
                    Running {
                        lease: job.lease.clone(),
                        cancel: job.cancel.clone(),
                    },
                );
                let (queue, handler, running, recording) = (
                    self.queue.clone(),
                    handler.clone(),
                    running.clone(),
                    recording.clone(),
                );
                jobs.spawn(async move {
                    let (end, lease, n) = attempt(&queue, handler, job, &running).await;
                    let recording = recording.acquire_owned().await;
                    drop(permit);
                    report(&queue, &lease, n, end).await;
                    drop(recording);
                });
            }
        }
        // Drain: no more claims; running jobs get the grace period, then are stopped and
        // handed back, so another worker takes them at once instead of after their lease.
        jobs.close();
        let n = running.lock().len();
        if n > 0 {
            tracing::info!(running = n, grace = ?self.config.drain_grace, "worker draining");
        }
        if tokio::time::timeout(self.config.drain_grace, jobs.wait())
            .await
            .is_err()
        {
            let unfinished: Vec<Lease> = running
                .lock()
                .values()
                .map(|r| {
                    r.cancel.cancel();
                    r.lease.clone()
                })
                .collect();
            jobs.wait().await;
            for lease in &unfinished {
                match self.queue.hand_back(lease).await {
                    Ok(()) => tracing::info!(job_id = %lease.job_id, "handed back unfinished"),
                    // It ended on its own (or was cancelled) meanwhile.
                    Err(jobcast_core::Error::LeaseLost(_)) => {}
                    Err(e) => {
                        tracing::warn!(job_id = %lease.job_id, error = %e, "hand back failed; the job runs again when its lease lapses")
                    }
                }
            }
        }
        background.cancel();
        tasks.close();
        tasks.wait().await;
        if let Err(e) = self.queue.withdraw(&self.config.worker_id).await {
            tracing::warn!(error = %e, "withdraw failed");
        }
        tracing::info!(worker_id = %self.config.worker_id, "worker stopped");
    }
}

/// Announces the worker and renews the leases of its running jobs until `stop`.
async fn heartbeat(
    queue: Arc<dyn JobQueue>,
    announcement: WorkerAnnouncement,
    running: Arc<Mutex<HashMap<String, Running>>>,
    lease: Duration,
    stop: CancellationToken,
) {
    let every = (announcement.ttl / 3)
        .min(lease / 3)
        .max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = queue.announce(&announcement).await {
            tracing::warn!(error = %e, "announce failed");
        }
        let leases: Vec<Lease> = running.lock().values().map(|r| r.lease.clone()).collect();
        if leases.is_empty() {
            continue;
        }
        match queue.renew(&leases, lease).await {
            Ok(lost) => {
                let running = running.lock();
                for id in lost {
                    if let Some(r) = running.get(&id) {
                        tracing::warn!(job_id = %id, "lease lost; stopping handler");
                        r.cancel.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
        }
    }
}

/// How an attempt's handler ended.
enum End {
    Done(Result<Box<serde_json::value::RawValue>, HandlerError>),
    Panicked(String),
    TimedOut,
    Cancelled,
}

/// Runs one attempt: the handler, stopped by its timeout or a cancellation, a panic becoming a
/// failure. The job leaves the running set when the handler is done. Returns how it ended,
/// with the lease and attempt number to report with.
async fn attempt(
    queue: &Arc<dyn JobQueue>,
    handler: BoxedHandler,
    job: ClaimedJob,
    running: &Mutex<HashMap<String, Running>>,
) -> (End, Lease, u32) {
    let waited_ms = jobcast_core::now_ms().saturating_sub(job.due_at_ms);
    static WAIT: LazyLock<Histogram> =
        LazyLock::new(|| metrics::histogram!("jobcast_job_wait_seconds"));
    WAIT.record(waited_ms as f64 / 1000.0);
    let started = std::time::Instant::now();
    let ctx = Context {
        lease: job.lease.clone(),
        queue: queue.clone(),
        cancel: job.cancel.clone(),
        attempt: job.attempt,
        attempts: job.attempts,
    };
    // The handler runs inside this task, not in one of its own: a timeout or cancellation
    // drops it (it stops at its next await, as an aborted task would) and a panic is caught
    // and becomes a failure, without a second task to schedule for every job.
    let run = std::panic::AssertUnwindSafe(handler(ctx, job.params)).catch_unwind();
    let timeout = async {
        match job.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        r = run => match r {
            Ok(r) => End::Done(r),
            Err(panic) => End::Panicked(panic_message(&*panic)),
        },
        _ = timeout => End::TimedOut,
        _ = job.cancel.cancelled() => End::Cancelled,
    };
    // The handler is done: from here the lease is only needed for the report, which releases
    // it. Leaving the running set now keeps the heartbeat from renewing it meanwhile and then
    // reporting it "lost" once the report has released it.
    running.lock().remove(&job.lease.job_id);
    let outcome = match &end {
        End::Done(Ok(_)) => "completed",
        End::Done(Err(_)) | End::Panicked(_) => "failed",
        End::TimedOut => "timed_out",
        End::Cancelled => "cancelled",
    };
    static RUN: LazyLock<ByLabels<Histogram>> = LazyLock::new(ByLabels::new);
    RUN.get(&job.method, outcome, || {
        metrics::histogram!("jobcast_job_run_seconds", "method" => job.method.clone(), "outcome" => outcome)
    })
    .record(started.elapsed().as_secs_f64());
    (end, job.lease, job.attempt)
}

/// The message a panic carried, when it is text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_owned())
}

/// Records attempt `n`'s outcome, which releases its lease.
async fn report(queue: &Arc<dyn JobQueue>, lease: &Lease, n: u32, end: End) {
    let reported = match end {
        End::Done(Ok(result)) => queue.complete(lease, result).await,
        End::Done(Err(e)) => queue
            .fail(
                lease,
                AttemptFailure::Error {
                    message: e.message,
                    retryable: e.retryable,
                },
            )
            .await
            .map(drop),
        End::Panicked(msg) => queue
            .fail(
                lease,
                AttemptFailure::Error {
                    message: format!("handler panicked: {msg}"),
                    retryable: true,
                },
            )
            .await
            .map(drop),
        End::TimedOut => {
            tracing::info!(job_id = %lease.job_id, attempt = n, "attempt timed out; handler stopped");
            queue.fail(lease, AttemptFailure::TimedOut).await.map(drop)
        }
        End::Cancelled => Ok(()),
    };
    match reported {
        Ok(()) | Err(jobcast_core::Error::LeaseLost(_)) => {}
        Err(e) => {
            tracing::error!(job_id = %lease.job_id, error = %e, "could not report job outcome")
        }
    }
}
