//! The embedded backend: a durable job queue and an in-process bus in one process, with job
//! records kept in a local redb file (group-committed; `enqueue` returns after the commit that
//! holds the job). Open jobs are held whole in memory; of an ended job, once its final record
//! is committed, memory keeps only its state, end time and owner, and its record is read from
//! the file when asked for. Ended jobs are purged past their retention or past the newest
//! [`EmbeddedConfig::max_ended_jobs`]. Nothing to install: this is what `jobcast serve` runs on.
#![warn(missing_docs)]

mod codec;
mod presence;
mod records;
mod state;
mod store;

use async_trait::async_trait;
use jobcast_core::{
    AttemptFailure, Audience, Bus, Cancelled, ClaimedJob, Enqueued, Error, FailOutcome,
    GatewayReport, Inbound, JobEvent, JobQueue, JobSnapshot, JobState, Lease, MethodInfo, NewJob,
    Presence, QueueCounts, Result, Retried, WorkerAnnouncement, now_ms,
};
use parking_lot::Mutex;
use presence::PresenceBook;
use serde_json::value::RawValue;
use state::{Effects, JobRecord, Shown, State};
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use store::{Store, Writes};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Settings of the embedded backend.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The redb file.
    pub path: PathBuf,
    /// How long ended jobs (and their results) are kept.
    pub retention: Duration,
    /// Most jobs not yet ended; `enqueue` fails with [`Error::QueueFull`] past it.
    pub max_open_jobs: usize,
    /// Most ended jobs kept; past it the oldest are purged before their retention ends.
    pub max_ended_jobs: usize,
    /// Most bytes of the file's pages cached in memory.
    pub cache_bytes: usize,
}

impl EmbeddedConfig {
    /// Defaults for a store at `path`: 24 h retention, one million open jobs, one million
    /// ended jobs, a 64 MiB page cache.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            retention: Duration::from_secs(24 * 3600),
            max_open_jobs: 1_000_000,
            max_ended_jobs: 1_000_000,
            cache_bytes: 64 << 20,
        }
    }
}

/// Most ended jobs purged under the state lock at one tick of the timer (every 20 ms), so a
/// purge never holds the queue up for long; 100,000 a second at most.
const PURGE_PER_TICK: usize = 2_000;

/// Most ended jobs kept as their end only under one lock of the state after a commit: the
/// lock is let go between such slices, so a large commit does not hold up the queue.
const ENDED_PER_LOCK: usize = 8;

/// What a durable change leaves to do once its writes are committed: deliver its events,
/// keep only the end of the jobs it ended, and tell its caller.
struct Committed {
    fx: Effects,
    done: oneshot::Sender<std::result::Result<(), String>>,
}

/// What a change leaves to do after its lock is released.
struct Pending {
    /// Effects due now.
    now: Effects,
    /// For a durable change, resolves once its writes are committed and the rest of its
    /// effects delivered.
    committed: Option<oneshot::Receiver<std::result::Result<(), String>>>,
}

struct Inner {
    state: Mutex<State>,
    store: Store<Committed>,
    work: Notify,
    workers: Mutex<HashMap<String, (Vec<MethodInfo>, Instant)>>,
    inboxes: Mutex<HashMap<String, mpsc::UnboundedSender<Inbound>>>,
    /// Topic → the gateways subscribed to it (a handful, so a list).
    topics: Mutex<HashMap<String, Vec<Arc<str>>>>,
    /// Gateway ids, stored once and shared by `topics` and `presence`.
    gateway_ids: Mutex<HashSet<Arc<str>>>,
    /// Topic → who is in it.
    presence: Mutex<PresenceBook>,
    /// Gateway → (stats, expiry).
    reports: Mutex<HashMap<String, (String, Instant)>>,
    config: EmbeddedConfig,
    stopped: AtomicBool,
}

/// The embedded backend; cheap to clone. Implements [`JobQueue`] and [`Bus`].
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
    stop: CancellationToken,
}

impl Embedded {
    /// The one shared copy of a gateway id.
    fn gateway_id(&self, id: &str) -> Arc<str> {
        let mut ids = self.inner.gateway_ids.lock();
        if let Some(g) = ids.get(id) {
            return g.clone();
        }
        let g: Arc<str> = id.into();
        ids.insert(g.clone());
        g
    }

    /// Opens (or creates) the store, restores every job (running ones go back to the queue),
    /// and starts the timer task that promotes delayed jobs, reclaims lapsed leases and purges
    /// ended jobs past retention. Must be called inside a Tokio runtime.
    pub fn open(config: EmbeddedConfig) -> Result<Self> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Storage(format!("{}: {e}", dir.display())))?;
        }
        let store = Store::open(&config.path, config.cache_bytes).map_err(Error::Storage)?;
        let mut state = State::default();
        let mut fx = Effects {
            wake: true,
            ..Effects::default()
        };
        store
            .load(|key, bytes| match codec::decode(bytes) {
                Ok(r) => state.restore(r, &mut fx),
                Err(e) => {
                    tracing::error!(job_id = %key, error = %e, "skipping unreadable job record")
                }
            })
            .map_err(Error::Storage)?;
        let restored = state.len();
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            store,
            work: Notify::new(),
            workers: Mutex::new(HashMap::new()),
            inboxes: Mutex::new(HashMap::new()),
            topics: Mutex::new(HashMap::new()),
            gateway_ids: Mutex::new(HashSet::new()),
            presence: Mutex::default(),
            reports: Mutex::new(HashMap::new()),
            config,
            stopped: AtomicBool::new(false),
        });
        inner.store.change(&fx.writes, None);
        let weak = Arc::downgrade(&inner);
        inner
            .store
            .start(move |result, notes| match weak.upgrade() {
                Some(inner) => inner.committed(result, notes),
                None => tell(result, notes),
            })
            .map_err(Error::Storage)?;
        tracing::info!(jobs = restored, path = %inner.config.path.display(), "embedded store opened");
        let stop = CancellationToken::new();
        tokio::spawn(timer(inner.clone(), stop.clone()));
        Ok(Self { inner, stop })
    }

    /// Stops the timer task and refuses new work; pending writes are still committed.
    pub fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.stop.cancel();
        self.inner.work.notify_waiters();
    }

    /// Stops like [`Embedded::shutdown`] and waits until every write is committed.
    pub async fn close(&self) {
        self.shutdown();
        let (done, flushed) = oneshot::channel();
        let note = Committed {
            fx: Effects::default(),
            done,
        };
        self.inner.store.change(&Writes::default(), Some(note));
        let _ = flushed.await;
    }

    /// Runs `f` on the state under its lock and sends the resulting writes to the store in
    /// the same critical section, so the store sees changes in the order they happened.
    /// With `durable`, the change's events wait for its writes to be committed and then
    /// follow in commit order; otherwise they are due at once. Claimers are woken at once
    /// either way: whatever they do is committed after the change.
    fn change<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut State) -> Result<(T, Effects)>,
    ) -> Result<(T, Pending)> {
        let mut st = self.inner.state.lock();
        let (out, fx) = f(&mut st)?;
        Ok((out, self.inner.send_writes(fx, durable)))
    }

    /// Delivers the effects due now, then waits for a durable change's commit.
    async fn finish(&self, pending: Pending) -> Result<()> {
        self.inner.deliver(pending.now);
        let Some(committed) = pending.committed else {
            return Ok(());
        };
        match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Storage(e)),
            Err(_) => Err(Error::Unavailable("store stopped".into())),
        }
    }

    /// Jobs as shown to clients, in order, the records of those memory holds only the end of
    /// read from the store on the blocking pool (a read may go to the disk), all in one go. A
    /// job purged since it was shown is left out.
    async fn resolve(&self, shown: Vec<Shown>) -> Result<Vec<JobSnapshot>> {
        let reads = shown.iter().any(|s| matches!(s, Shown::InStore(_)));
        let inner = self.inner.clone();
        let resolve = move || {
            let mut stored = {
                let ids: Vec<&str> = shown
                    .iter()
                    .filter_map(|s| match s {
                        Shown::InStore(id) => Some(id.as_str()),
                        Shown::Snapshot(_) => None,
                    })
                    .collect();
                inner.stored(&ids)?.into_iter()
            };
            let snapshot = |s| match s {
                Shown::Snapshot(s) => Some(s),
                Shown::InStore(_) => stored.next().flatten().map(|r: JobRecord| r.snapshot()),
            };
            Ok(shown.into_iter().filter_map(snapshot).collect())
        };
        if !reads {
            return resolve();
        }
        tokio::task::spawn_blocking(resolve)
            .await
            .map_err(|e| Error::Unavailable(format!("store read: {e}")))?
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("shutting down".into()));
        }
        Ok(())
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if Arc::strong_count(&self.inner) <= 2 {
            self.stop.cancel();
        }
    }
}

impl Inner {
    /// The committed records of `ids`, in order, read in one transaction.
    fn stored(&self, ids: &[&str]) -> Result<Vec<Option<JobRecord>>> {
        let found = self.store.get(ids).map_err(Error::Storage)?;
        ids.iter()
            .zip(found)
            .map(|(id, bytes)| {
                bytes
                    .map(|b| codec::decode(&b))
                    .transpose()
                    .map_err(|e| Error::Storage(format!("job {id}: unreadable record: {e}")))
            })
            .collect()
    }

    /// Sends a change's writes to the store. A durable change's events wait for its writes to
    /// be committed, then go out in commit order ([`Inner::committed`]), so events reach
    /// gateways in the order their changes became durable (a worker's results come out in the
    /// order it recorded them, even when several are committed together). A new job is thus
    /// claimable while its record commits: only its caller's answer waits. Once committed, the
    /// jobs the change ended are kept in memory as their end only; every change that ends a
    /// job is durable.
    fn send_writes(&self, mut fx: Effects, durable: bool) -> Pending {
        // The writes stay here to be freed on this thread; the store copies them.
        let writes = std::mem::take(&mut fx.writes);
        if !durable {
            self.store.change(&writes, None);
            return Pending {
                now: fx,
                committed: None,
            };
        }
        let now = Effects {
            wake: std::mem::take(&mut fx.wake),
            ..Effects::default()
        };
        let (done, committed) = oneshot::channel();
        self.store.change(&writes, Some(Committed { fx, done }));
        Pending {
            now,
            committed: Some(committed),
        }
    }

    /// Runs on the store's writer after each commit, with the notes of the durable changes it
    /// holds, in order. Under one lock of the inboxes, each change's events go out; then the
    /// jobs they ended are kept as their end only, a few under each lock of the state; then
    /// their callers are told, so a caller that hears of its commit finds the job as it will
    /// stay. (One closure per write that took both locks itself: 4 % fewer jobs a second,
    /// docs/decisions.md.)
    fn committed(&self, result: &std::result::Result<(), String>, mut notes: Vec<Committed>) {
        let Ok(()) = result else {
            return tell(result, notes);
        };
        let mut ended = Vec::new();
        {
            let inboxes = self.inboxes.lock();
            for note in &mut notes {
                send_events(&inboxes, std::mem::take(&mut note.fx.events));
                ended.append(&mut note.fx.ended);
            }
        }
        for chunk in ended.chunks(ENDED_PER_LOCK) {
            self.state.lock().keep_ended_only(chunk);
        }
        tell(result, notes);
    }

    fn deliver(&self, fx: Effects) {
        if fx.wake {
            self.work.notify_waiters();
        }
        if fx.events.is_empty() {
            return;
        }
        send_events(&self.inboxes.lock(), fx.events);
    }
}

/// Sends each event to the inboxes of its listeners: copies to all but the last, and the event
/// itself to the last (usually the only one), so the usual event is not copied (and, after a
/// commit, not freed on the store's writer).
fn send_events(
    inboxes: &HashMap<String, mpsc::UnboundedSender<Inbound>>,
    events: Vec<(Vec<String>, JobEvent)>,
) {
    for (listeners, event) in events {
        let mut to = listeners.iter().filter_map(|l| inboxes.get(l)).peekable();
        while let Some(tx) = to.next() {
            if to.peek().is_some() {
                let _ = tx.send(Inbound::Job(event.clone()));
            } else {
                let _ = tx.send(Inbound::Job(event));
                break;
            }
        }
    }
}

/// Tells the callers of committed changes how their commit went.
fn tell(result: &std::result::Result<(), String>, notes: Vec<Committed>) {
    for note in notes {
        let _ = note.done.send(result.clone());
    }
}

async fn timer(inner: Arc<Inner>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let pending = {
            let mut st = inner.state.lock();
            let due = st.next_due().is_some_and(|t| t <= now);
            let mut fx = if due {
                st.tick(now)
            } else {
                Effects::default()
            };
            let cutoff = now.saturating_sub(inner.config.retention.as_millis() as u64);
            let purged = st.purge(cutoff, inner.config.max_ended_jobs, PURGE_PER_TICK);
            fx.writes.append(&purged.writes);
            // Durable: a lapse can end a job (see `send_writes`); nothing waits for it here.
            inner.send_writes(fx, true)
        };
        inner.deliver(pending.now);
    }
}

#[async_trait]
impl JobQueue for Embedded {
    async fn enqueue(&self, job: NewJob, listener: &str) -> Result<Enqueued> {
        self.check_open()?;
        let max = self.inner.config.max_open_jobs;
        // Workers may start the job while its record is being committed (see `send_writes`).
        // Its outcome is committed after its record (the store keeps order), so no result is
        // shown for a job that a crash would forget; a job that ran but whose record a crash
        // lost was never acknowledged (docs/decisions.md).
        let (out, pending) = self.change(true, |st| st.enqueue(job, listener, now_ms(), max))?;
        self.finish(pending).await?;
        Ok(out)
    }

    async fn listen(&self, job_id: &str, listener: &str) -> Result<bool> {
        Ok(self.inner.state.lock().listen(job_id, listener))
    }

    async fn snapshot(&self, job_id: &str) -> Result<Option<JobSnapshot>> {
        let shown = self.inner.state.lock().show(job_id);
        Ok(self.resolve(shown.into_iter().collect()).await?.pop())
    }

    async fn cancel(&self, job_id: &str) -> Result<Option<Cancelled>> {
        let (out, pending) = self.change(true, |st| Ok(st.cancel(job_id, now_ms())))?;
        self.finish(pending).await?;
        Ok(out)
    }

    async fn claim(
        &self,
        _worker_id: &str,
        methods: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<ClaimedJob>> {
        let deadline = tokio::time::Instant::now() + wait;
        let lease_ms = lease.as_millis() as u64;
        loop {
            self.check_open()?;
            let notified = self.inner.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (jobs, pending) =
                self.change(false, |st| Ok(st.claim(methods, max, lease_ms, now_ms())))?;
            self.finish(pending).await?;
            if !jobs.is_empty() {
                return Ok(jobs);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn renew(&self, leases: &[Lease], lease: Duration) -> Result<Vec<String>> {
        Ok(self
            .inner
            .state
            .lock()
            .renew(leases, lease.as_millis() as u64, now_ms()))
    }

    async fn progress(&self, lease: &Lease, progress: Box<RawValue>) -> Result<()> {
        let (_, pending) = self.change(false, |st| Ok(((), st.progress(lease, progress)?)))?;
        self.finish(pending).await
    }

    async fn complete(&self, lease: &Lease, result: Box<RawValue>) -> Result<()> {
        let (_, pending) =
            self.change(true, |st| Ok(((), st.complete(lease, result, now_ms())?)))?;
        self.finish(pending).await
    }

    async fn hand_back(&self, lease: &Lease) -> Result<()> {
        let (_, pending) = self.change(true, |st| Ok(((), st.hand_back(lease)?)))?;
        self.finish(pending).await
    }

    async fn fail(&self, lease: &Lease, failure: AttemptFailure) -> Result<FailOutcome> {
        let unit = fastrand::f64();
        let (out, pending) = self.change(true, |st| st.fail(lease, failure, now_ms(), unit))?;
        self.finish(pending).await?;
        Ok(out)
    }

    async fn announce(&self, worker: &WorkerAnnouncement) -> Result<()> {
        self.inner.workers.lock().insert(
            worker.worker_id.clone(),
            (worker.methods.clone(), Instant::now() + worker.ttl),
        );
        Ok(())
    }

    async fn withdraw(&self, worker_id: &str) -> Result<()> {
        self.inner.workers.lock().remove(worker_id);
        Ok(())
    }

    async fn methods(&self) -> Result<Vec<MethodInfo>> {
        let now = Instant::now();
        let mut workers = self.inner.workers.lock();
        workers.retain(|_, (_, expires)| *expires > now);
        let mut by_name = BTreeMap::new();
        for (methods, _) in workers.values() {
            for m in methods {
                by_name.entry(m.name.clone()).or_insert_with(|| m.clone());
            }
        }
        Ok(by_name.into_values().collect())
    }

    async fn counts(&self) -> Result<QueueCounts> {
        Ok(self.inner.state.lock().counts())
    }

    async fn list(&self, state: JobState, offset: usize, limit: usize) -> Result<Vec<JobSnapshot>> {
        let shown = self.inner.state.lock().list(state, offset, limit);
        self.resolve(shown).await
    }

    async fn retry(&self, job_id: &str) -> Result<Option<Retried>> {
        self.check_open()?;
        // Reading the record under the state lock holds the queue up for one read; a retry
        // is rare, and this way nothing can change the job between the read and the retry.
        let load =
            |id: &str| {
                self.inner.stored(&[id])?.pop().flatten().ok_or_else(|| {
                    Error::Storage(format!("job {id}: record missing from the store"))
                })
            };
        let (out, pending) = self.change(true, |st| st.retry(job_id, load))?;
        self.finish(pending).await?;
        Ok(out)
    }

    async fn purge(&self, state: JobState, before_ms: u64) -> Result<u64> {
        if !state.is_terminal() {
            return Ok(0);
        }
        let (n, pending) = self.change(true, |st| Ok(st.purge_state(state, before_ms)))?;
        self.finish(pending).await?;
        Ok(n)
    }

    fn is_ready(&self) -> bool {
        !self.inner.stopped.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Bus for Embedded {
    fn open_inbox(&self, gateway_id: &str) -> Result<mpsc::UnboundedReceiver<Inbound>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.inboxes.lock().insert(gateway_id.to_owned(), tx);
        Ok(rx)
    }

    fn publish_topic(
        &self,
        origin: &str,
        topic: &str,
        audience: Audience,
        frame: bytes::Bytes,
    ) -> Result<()> {
        let topics = self.inner.topics.lock();
        let Some(gateways) = topics.get(topic) else {
            return Ok(());
        };
        let inboxes = self.inner.inboxes.lock();
        for gw in gateways.iter().filter(|g| &***g != origin) {
            if let Some(tx) = inboxes.get(&**gw) {
                let _ = tx.send(Inbound::Topic {
                    topic: topic.to_owned(),
                    audience,
                    frame: frame.clone(),
                });
            }
        }
        Ok(())
    }

    fn subscribe_topic(&self, gateway_id: &str, topic: &str) -> Result<()> {
        let gw = self.gateway_id(gateway_id);
        let mut topics = self.inner.topics.lock();
        // Most topics are one user's, on one gateway: room for exactly one.
        let list = topics
            .entry(topic.to_owned())
            .or_insert_with(|| Vec::with_capacity(1));
        if !list.contains(&gw) {
            list.push(gw);
        }
        Ok(())
    }

    fn unsubscribe_topic(&self, gateway_id: &str, topic: &str) -> Result<()> {
        let mut topics = self.inner.topics.lock();
        if let Some(list) = topics.get_mut(topic) {
            list.retain(|g| &**g != gateway_id);
            if list.is_empty() {
                topics.remove(topic);
            }
        }
        Ok(())
    }

    fn presence_join(&self, gateway_id: &str, topic: &str, conn: u64, user: &str) -> Result<()> {
        let gw = self.gateway_id(gateway_id);
        self.inner.presence.lock().join(gw, topic, conn, user);
        Ok(())
    }

    fn presence_leave(&self, gateway_id: &str, topic: &str, conn: u64) -> Result<()> {
        let gw = self.gateway_id(gateway_id);
        self.inner.presence.lock().leave(gw, topic, conn);
        Ok(())
    }

    async fn presence(&self, topic: &str) -> Result<Presence> {
        // Every gateway of this backend lives in this process and leaves on disconnect, so
        // there are no stale entries to filter.
        Ok(self.inner.presence.lock().of(topic))
    }

    async fn report(&self, report: &GatewayReport, ttl: Duration) -> Result<()> {
        let mut reports = self.inner.reports.lock();
        reports.retain(|_, (_, until)| *until > Instant::now());
        reports.insert(
            report.gateway_id.clone(),
            (report.stats.clone(), Instant::now() + ttl),
        );
        Ok(())
    }

    async fn reports(&self) -> Result<Vec<GatewayReport>> {
        let now = Instant::now();
        let mut v: Vec<GatewayReport> = self
            .inner
            .reports
            .lock()
            .iter()
            .filter(|(_, (_, until))| *until > now)
            .map(|(id, (stats, _))| GatewayReport {
                gateway_id: id.clone(),
                stats: stats.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.gateway_id.cmp(&b.gateway_id));
        Ok(v)
    }
}

/// The store's job count (for tests and stats).
impl Embedded {
    /// Number of jobs held (open and ended within retention).
    pub fn job_count(&self) -> usize {
        self.inner.state.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobcast_core::conformance::{Backend, claim_one, run_all};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        run_all(|| {
            let i = n.fetch_add(1, Ordering::SeqCst);
            let path = dir.path().join(format!("db{i}.redb"));
            async move {
                let e = Embedded::open(EmbeddedConfig::new(path)).unwrap();
                Backend {
                    queue: Arc::new(e.clone()),
                    bus: Arc::new(e),
                }
            }
        })
        .await;
    }

    fn job(id: &str) -> NewJob {
        NewJob {
            id: id.into(),
            method: "m".into(),
            params: jobcast_core::raw("[1]"),
            owner: "u".into(),
            request_id: None,
            options: Default::default(),
            max_open_per_owner: 0,
        }
    }

    fn held_whole(e: &Embedded, id: &str) -> bool {
        e.inner.state.lock().holds_whole(id)
    }

    /// Ended jobs leave memory once committed, and everything that reads them reads the store:
    /// snapshot, list, a duplicate call, cancel, retry, and a restart.
    #[tokio::test]
    async fn ended_jobs_are_read_back_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        {
            let e = Embedded::open(EmbeddedConfig::new(&path)).unwrap();
            e.enqueue(job("a"), "gw").await.unwrap();
            e.enqueue(job("b"), "gw").await.unwrap();
            let a = claim_one(&e).await;
            assert!(held_whole(&e, "a"), "an open job is held whole");
            e.complete(&a.lease, jobcast_core::raw("7")).await.unwrap();
            let b = claim_one(&e).await;
            let failure = AttemptFailure::Error {
                message: "boom".into(),
                retryable: false,
            };
            e.fail(&b.lease, failure).await.unwrap();
            assert!(!held_whole(&e, "a") && !held_whole(&e, "b"));

            let snap = e.snapshot("a").await.unwrap().unwrap();
            assert_eq!(snap.state, JobState::Completed);
            assert_eq!(snap.result.unwrap().get(), "7");
            let listed = e.list(JobState::Failed, 0, 10).await.unwrap();
            assert_eq!(listed.len(), 1);
            assert!(listed[0].error.as_ref().unwrap().message.contains("boom"));
            let dup = e.enqueue(job("a"), "gw2").await.unwrap();
            assert!(dup.duplicate && dup.state == JobState::Completed && dup.owner == "u");
            let c = e.cancel("a").await.unwrap().unwrap();
            assert!(!c.cancelled && c.state == JobState::Completed);
            assert_eq!(e.counts().await.unwrap().failed, 1);

            let r = e.retry("b").await.unwrap().unwrap();
            assert!(r.retried);
            assert!(held_whole(&e, "b"), "a retried job is open again, whole");
            let b = claim_one(&e).await;
            assert_eq!((b.lease.job_id.as_str(), b.attempt), ("b", 1));
            e.complete(&b.lease, jobcast_core::raw("8")).await.unwrap();
            assert_eq!(e.counts().await.unwrap().failed, 0);
            e.close().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let e = Embedded::open(EmbeddedConfig::new(&path)).unwrap();
        assert!(
            !held_whole(&e, "a") && !held_whole(&e, "b"),
            "restored as ends"
        );
        let snap = e.snapshot("b").await.unwrap().unwrap();
        assert_eq!(snap.result.unwrap().get(), "8");
        assert_eq!(e.counts().await.unwrap().completed, 2);
        let listed = e.list(JobState::Completed, 0, 10).await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|s| s.job_id.as_str()).collect();
        assert_eq!(
            ids,
            ["a", "b"],
            "read back in one go, in the order they ended"
        );
    }

    #[tokio::test]
    async fn keeps_at_most_the_newest_ended_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EmbeddedConfig::new(dir.path().join("j.redb"));
        cfg.max_ended_jobs = jobcast_core::conformance::ENDED_CAP;
        let e = Embedded::open(cfg).unwrap();
        let backend = Backend {
            queue: Arc::new(e.clone()),
            bus: Arc::new(e.clone()),
        };
        jobcast_core::conformance::keeps_at_most_the_newest_ended_jobs(backend).await;
        assert_eq!(e.job_count(), jobcast_core::conformance::ENDED_CAP);
    }

    #[tokio::test]
    async fn survives_reopen_and_purges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        {
            let e = Embedded::open(EmbeddedConfig::new(&path)).unwrap();
            e.enqueue(job("a"), "gw").await.unwrap();
            e.enqueue(job("b"), "gw").await.unwrap();
            let c = claim_one(&e).await;
            e.complete(&c.lease, jobcast_core::raw("7")).await.unwrap();
            assert_eq!(claim_one(&e).await.lease.job_id, "b");
            e.shutdown();
        }
        // Give the old store a moment to release the file.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut cfg = EmbeddedConfig::new(&path);
        cfg.retention = Duration::from_millis(300);
        let e = Embedded::open(cfg).unwrap();
        let a = e.snapshot("a").await.unwrap().unwrap();
        assert_eq!(a.result.unwrap().get(), "7");
        let b = e.snapshot("b").await.unwrap().unwrap();
        assert_eq!(
            b.state,
            jobcast_core::JobState::Queued,
            "a running job is requeued on restart"
        );
        assert_eq!(claim_one(&e).await.attempt, 2);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            e.snapshot("a").await.unwrap().is_none(),
            "ended job not purged after retention"
        );
    }
}
