//! A handler's concurrency slot is free while its outcome is being recorded: with one slot and
//! recording held up, the next job still runs, and every outcome is recorded once it is let
//! through.

// Test helpers panic on unexpected results; that is how a test fails.
#![allow(clippy::unwrap_used)]

use async_trait::async_trait;
use jobcast_core::{
    AttemptFailure, Cancelled, ClaimedJob, Enqueued, FailOutcome, JobQueue, JobSnapshot, JobState,
    Lease, MethodInfo, NewJob, QueueCounts, Result, Retried, WorkerAnnouncement, raw,
};
use jobcast_embedded::{Embedded, EmbeddedConfig};
use jobcast_protocol::JobOptions;
use jobcast_worker::{Context, HandlerError, WorkerBuilder, WorkerConfig};
use serde_json::value::RawValue;
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The embedded queue, with completions held until `gate` gives permits.
struct Gated {
    inner: Embedded,
    gate: Arc<Semaphore>,
    waiting: AtomicU64,
}

#[async_trait]
impl JobQueue for Gated {
    async fn enqueue(&self, job: NewJob, listener: &str) -> Result<Enqueued> {
        self.inner.enqueue(job, listener).await
    }
    async fn listen(&self, job_id: &str, listener: &str) -> Result<bool> {
        self.inner.listen(job_id, listener).await
    }
    async fn snapshot(&self, job_id: &str) -> Result<Option<JobSnapshot>> {
        self.inner.snapshot(job_id).await
    }
    async fn cancel(&self, job_id: &str) -> Result<Option<Cancelled>> {
        self.inner.cancel(job_id).await
    }
    async fn claim(
        &self,
        worker_id: &str,
        methods: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<ClaimedJob>> {
        self.inner.claim(worker_id, methods, max, lease, wait).await
    }
    async fn renew(&self, leases: &[Lease], lease: Duration) -> Result<Vec<String>> {
        self.inner.renew(leases, lease).await
    }
    async fn progress(&self, lease: &Lease, progress: Box<RawValue>) -> Result<()> {
        self.inner.progress(lease, progress).await
    }
    async fn complete(&self, lease: &Lease, result: Box<RawValue>) -> Result<()> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.unwrap().forget();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.inner.complete(lease, result).await
    }
    async fn fail(&self, lease: &Lease, failure: AttemptFailure) -> Result<FailOutcome> {
        self.inner.fail(lease, failure).await
    }
    async fn hand_back(&self, lease: &Lease) -> Result<()> {
        self.inner.hand_back(lease).await
    }
    async fn announce(&self, worker: &WorkerAnnouncement) -> Result<()> {
        self.inner.announce(worker).await
    }
    async fn withdraw(&self, worker_id: &str) -> Result<()> {
        self.inner.withdraw(worker_id).await
    }
    async fn methods(&self) -> Result<Vec<MethodInfo>> {
        self.inner.methods().await
    }
    async fn counts(&self) -> Result<QueueCounts> {
        self.inner.counts().await
    }
    async fn list(&self, state: JobState, offset: usize, limit: usize) -> Result<Vec<JobSnapshot>> {
        self.inner.list(state, offset, limit).await
    }
    async fn retry(&self, job_id: &str) -> Result<Option<Retried>> {
        self.inner.retry(job_id).await
    }
    async fn purge(&self, state: JobState, before_ms: u64) -> Result<u64> {
        self.inner.purge(state, before_ms).await
    }
    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }
}

async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn the_next_job_runs_while_an_outcome_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let inner = Embedded::open(EmbeddedConfig::new(dir.path().join("j.redb"))).unwrap();
    let queue = Arc::new(Gated {
        inner,
        gate: Arc::new(Semaphore::new(0)),
        waiting: AtomicU64::new(0),
    });
    let runs = Arc::new(AtomicU64::new(0));
    let r = runs.clone();
    let worker = WorkerBuilder::new()
        .method("count", move |_ctx: Context, _p: serde_json::Value| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<_, HandlerError>(())
            }
        })
        .config(WorkerConfig {
            concurrency: 1,
            ..WorkerConfig::default()
        })
        .build(queue.clone());
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    for id in ["a", "b", "c"] {
        let job = NewJob {
            id: id.into(),
            method: "count".into(),
            params: raw("{}"),
            owner: "u".into(),
            request_id: None,
            options: JobOptions::default(),
            max_open_per_owner: 0,
        };
        queue.enqueue(job, "gw").await.unwrap();
    }
    // One slot, every recording held: all three handlers still run, one after another.
    wait_until("all three ran", async || runs.load(Ordering::SeqCst) == 3).await;
    wait_until("three outcomes wait", async || {
        queue.waiting.load(Ordering::SeqCst) == 3
    })
    .await;
    assert_eq!(
        queue.inner.snapshot("a").await.unwrap().unwrap().state,
        JobState::Active
    );
    // Let them through: every job ends completed.
    queue.gate.add_permits(3);
    for id in ["a", "b", "c"] {
        wait_until("the outcome is recorded", async || {
            let snap = queue.inner.snapshot(id).await.unwrap().unwrap();
            snap.state == JobState::Completed
        })
        .await;
    }
    stop.cancel();
    running.await.unwrap();
}
