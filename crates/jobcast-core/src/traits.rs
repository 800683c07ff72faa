//! The two interfaces a backend implements: [`JobQueue`] (durable jobs, leases, the method
//! registry) and [`Bus`] (delivery of job events and topic messages to gateways).
//! Both are object-safe so the binary can choose a backend from configuration.

use crate::{
    AttemptFailure, Audience, Cancelled, ClaimedJob, Enqueued, FailOutcome, GatewayReport, Inbound,
    JobSnapshot, JobState, Lease, MethodInfo, NewJob, Presence, QueueCounts, Result, Retried,
    WorkerAnnouncement,
};
use async_trait::async_trait;
use serde_json::value::RawValue;
use std::time::Duration;
use tokio::sync::mpsc;

/// A durable job queue.
///
/// Delivery is at least once: a job whose worker disappears (its lease lapses) runs again.
/// Every state change that a client can observe is durable before the call returns.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Creates `job`, or — when a job with the same id exists — creates nothing and reports it
    /// with `duplicate: true` and its current state and owner. The new job is `queued`, or
    /// `delayed` when `options.delay_ms > 0`. Returns only once the job is durable.
    /// `listener` (a gateway id) is recorded to receive the job's events.
    /// Fails with [`crate::Error::QueueFull`] when the queue is at its configured limit.
    async fn enqueue(&self, job: NewJob, listener: &str) -> Result<Enqueued>;

    /// Records `listener` (a gateway id) to receive the events of `job_id` from now on.
    /// Returns false for an unknown job.
    async fn listen(&self, job_id: &str, listener: &str) -> Result<bool>;

    /// The job's snapshot, or `None` when unknown (or purged after retention).
    async fn snapshot(&self, job_id: &str) -> Result<Option<JobSnapshot>>;

    /// Cancels the job: a queued or delayed job ends at once; a running job ends at once for
    /// its clients (error -32002) and its worker's cancellation token fires. An ended job is
    /// left as it is (`cancelled: false`). `None` for an unknown job.
    async fn cancel(&self, job_id: &str) -> Result<Option<Cancelled>>;

    /// Claims up to `max` ready jobs of the given methods, highest priority first, first in
    /// first out within a priority, each with a lease of `lease`. Waits up to `wait` for work
    /// to appear (without polling the store); returns an empty list when none did.
    async fn claim(
        &self,
        worker_id: &str,
        methods: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<ClaimedJob>>;

    /// Extends the given leases by `lease`; returns the job ids whose leases are no longer
    /// held (the worker must stop them).
    async fn renew(&self, leases: &[Lease], lease: Duration) -> Result<Vec<String>>;

    /// Records progress of a running job and sends it to the job's listeners.
    async fn progress(&self, lease: &Lease, progress: Box<RawValue>) -> Result<()>;

    /// Completes a running job with its result and sends the final response to its listeners.
    /// [`crate::Error::LeaseLost`] when the lease is no longer held.
    async fn complete(&self, lease: &Lease, result: Box<RawValue>) -> Result<()>;

    /// Ends the current attempt with a failure: schedules the next attempt after the job's
    /// backoff when attempts remain and the failure is retryable, otherwise fails the job
    /// (-32000, or -32001 when the last attempt timed out) and sends the final response.
    async fn fail(&self, lease: &Lease, failure: AttemptFailure) -> Result<FailOutcome>;

    /// Gives a running job back unfinished because its worker is stopping: the job is queued
    /// again at once, in the place it had (ahead of jobs queued after it), and the interrupted
    /// attempt is not counted. [`crate::Error::LeaseLost`] when the lease is no longer held.
    async fn hand_back(&self, lease: &Lease) -> Result<()>;

    /// Announces (or renews) a worker and the methods it serves.
    async fn announce(&self, worker: &WorkerAnnouncement) -> Result<()>;

    /// Removes a worker's announcement (on clean shutdown).
    async fn withdraw(&self, worker_id: &str) -> Result<()>;

    /// The methods served by live workers, each once, sorted by name.
    async fn methods(&self) -> Result<Vec<MethodInfo>>;

    /// Job counts by state.
    async fn counts(&self) -> Result<QueueCounts>;

    /// Jobs in `state`, page `offset..offset + limit`: queued ones in the order workers will
    /// take them (per method), delayed ones by run time, active ones by lease deadline, ended
    /// ones by end time, oldest first.
    async fn list(&self, state: JobState, offset: usize, limit: usize) -> Result<Vec<JobSnapshot>>;

    /// Runs a failed or cancelled job again, from its first attempt, as a queued job with a
    /// new place at the back of its priority (its id, owner, params and options are kept; its
    /// result, error and progress are cleared). Any other state is left as it is
    /// (`retried: false`). `None` for an unknown job.
    async fn retry(&self, job_id: &str) -> Result<Option<Retried>>;

    /// Deletes the ended jobs in `state` (completed, failed or cancelled) that ended before
    /// `before_ms` (ms since the epoch); returns how many.
    async fn purge(&self, state: JobState, before_ms: u64) -> Result<u64>;

    /// Whether the backend is reachable and accepting work.
    fn is_ready(&self) -> bool;
}

/// Delivery of job events and topic messages to gateways, and what gateways share about
/// themselves: who is in which topic (presence) and their stats.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Opens the inbox of gateway `gateway_id`: events of jobs it listens to, and messages of
    /// topics it subscribed to, arrive on the returned channel.
    fn open_inbox(&self, gateway_id: &str) -> Result<mpsc::UnboundedReceiver<Inbound>>;

    /// Publishes `frame` (a complete outbound frame) for `audience` to the other gateways
    /// subscribed to `topic`; the publishing gateway `origin` delivers to its own connections
    /// itself. Frames one gateway publishes arrive in the order it published them.
    fn publish_topic(
        &self,
        origin: &str,
        topic: &str,
        audience: Audience,
        frame: bytes::Bytes,
    ) -> Result<()>;

    /// Starts receiving `topic` in the inbox of `gateway_id`.
    fn subscribe_topic(&self, gateway_id: &str, topic: &str) -> Result<()>;

    /// Stops receiving `topic`.
    fn unsubscribe_topic(&self, gateway_id: &str, topic: &str) -> Result<()>;

    /// Records that connection `conn` of gateway `gateway_id`, of user `user`, is in `topic`.
    /// Writes issued by one gateway take effect in order.
    fn presence_join(&self, gateway_id: &str, topic: &str, conn: u64, user: &str) -> Result<()>;

    /// Records that the connection left `topic`.
    fn presence_leave(&self, gateway_id: &str, topic: &str, conn: u64) -> Result<()>;

    /// Who is in `topic` on every live gateway (entries of gateways that stopped reporting
    /// are dropped).
    async fn presence(&self, topic: &str) -> Result<Presence>;

    /// Reports gateway `report.gateway_id` alive, with its stats, for `ttl`.
    async fn report(&self, report: &GatewayReport, ttl: Duration) -> Result<()>;

    /// The reports of every live gateway.
    async fn reports(&self) -> Result<Vec<GatewayReport>>;
}
