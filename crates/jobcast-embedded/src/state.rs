//! The in-memory job state machine of the embedded backend: job records and the indexes over
//! them (ready by method and priority, delayed by time, leases by deadline, ended jobs by end
//! time). Pure and synchronous; every change returns the [`Effects`] the caller must apply
//! (records to persist, events to deliver, ended jobs to keep only the end of once committed).
//! An ended job whose record is only in the store is [`Shown::InStore`]; the caller reads it.

use crate::records::{Records, Slot};
use jobcast_core::{
    AttemptFailure, Cancelled, Enqueued, FailOutcome, JobCancel, JobError, JobEvent, JobSnapshot,
    JobState, Lease, NewJob, QueueCounts, Retried,
};
use jobcast_protocol::{ErrorCode, JobOptions, RequestId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, HashMap},
};

/// The state's hash maps, on the hot path of every job: foldhash, as the job map
/// (`records.rs`).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// How many times a job may lose its lease (worker or process crash) before it fails.
pub const MAX_STALLS: u32 = 3;
/// Most gateways recorded as listeners of one job.
const MAX_LISTENERS: usize = 32;

/// A job as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub method: String,
    pub params: Box<RawValue>,
    pub owner: String,
    pub request_id: Option<RequestId>,
    pub options: JobOptions,
    pub state: JobState,
    pub progress: Option<Box<RawValue>>,
    pub attempt: u32,
    pub stalls: u32,
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub run_at: u64,
    pub seq: u64,
    pub result: Option<Box<RawValue>>,
    pub error: Option<JobError>,
    pub listeners: Vec<String>,
}

impl JobRecord {
    /// A queued record with nothing else set.
    #[cfg(test)]
    pub(crate) fn for_test(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            method: "m".to_owned(),
            params: RawValue::NULL.to_owned(),
            owner: String::new(),
            request_id: None,
            options: JobOptions::default(),
            state: JobState::Queued,
            progress: None,
            attempt: 0,
            stalls: 0,
            created_at: 0,
            started_at: None,
            finished_at: None,
            run_at: 0,
            seq: 0,
            result: None,
            error: None,
            listeners: Vec::new(),
        }
    }

    /// What a client is shown of the job.
    pub(crate) fn snapshot(&self) -> JobSnapshot {
        JobSnapshot {
            job_id: self.id.clone(),
            method: self.method.clone(),
            state: self.state,
            progress: self.progress.clone(),
            attempt: self.attempt,
            attempts: self.options.attempts,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            result: self.result.clone(),
            error: self.error.clone(),
            owner: self.owner.clone(),
            request_id: self.request_id.clone(),
        }
    }
}

/// The lease of a running job.
#[derive(Debug)]
pub struct ActiveLease {
    pub token: String,
    /// The lease's number, unique: with the deadline, its key in the deadline index.
    pub n: u64,
    pub deadline: u64,
    pub cancel: JobCancel,
}

/// What the caller must do after a change.
#[derive(Debug, Default)]
pub struct Effects {
    /// Records to persist (`None` = delete).
    pub writes: crate::store::Writes,
    /// Events to deliver, each to the listed gateways.
    pub events: Vec<(Vec<String>, JobEvent)>,
    /// New ready work appeared: wake claimers.
    pub wake: bool,
    /// Jobs this change ended, with their numbering: once its writes are committed, only
    /// their end need be kept in memory ([`State::keep_ended_only`]).
    pub ended: Vec<(String, u64)>,
}

impl Effects {
    fn persist(&mut self, rec: &JobRecord) {
        self.writes
            .put(&rec.id, crate::codec::encoded_bound(rec), |out| {
                crate::codec::encode(rec, out)
            });
    }

    /// Persists an ended job, and says it ended.
    fn persist_end(&mut self, rec: &JobRecord) {
        self.persist(rec);
        self.ended.push((rec.id.clone(), rec.seq));
        self.finished(rec);
    }

    fn finished(&mut self, rec: &JobRecord) {
        let outcome = match (&rec.result, &rec.error) {
            (Some(r), _) if rec.state == JobState::Completed => Ok(r.clone()),
            (_, Some(e)) => Err(e.clone()),
            _ => return,
        };
        self.events.push((
            rec.listeners.clone(),
            JobEvent::Finished {
                job_id: rec.id.clone(),
                outcome,
            },
        ));
    }
}

type ReadyKey = (Reverse<u16>, u64, String);
type ReadyIndex = Map<String, BTreeSet<ReadyKey>>;

/// The job's place in the ready index: by method, highest priority first, then by sequence.
fn ready_key(rec: &JobRecord) -> ReadyKey {
    (Reverse(rec.options.priority), rec.seq, rec.id.clone())
}

/// Marks a job queued under a fresh sequence number and puts it on the ready index.
fn make_ready(ready: &mut ReadyIndex, rec: &mut JobRecord, seq: u64) {
    rec.state = JobState::Queued;
    rec.seq = seq;
    put_ready(ready, rec);
}

/// Puts a queued job on the ready index (the method's name is copied only for its first job).
fn put_ready(ready: &mut ReadyIndex, rec: &JobRecord) {
    match ready.get_mut(&rec.method) {
        Some(set) => set.insert(ready_key(rec)),
        None => ready
            .entry(rec.method.clone())
            .or_default()
            .insert(ready_key(rec)),
    };
}

/// A lease's token: its number in decimal, `-`, and a random part in hex (written by hand:
/// `format!` was a quarter of the cost of a claim).
fn lease_token(n: u64, random: u32) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 29];
    let mut at = buf.len();
    for shift in 0..8 {
        at -= 1;
        buf[at] = HEX[((random >> (shift * 4)) & 15) as usize];
    }
    at -= 1;
    buf[at] = b'-';
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf[at..].iter().map(|&b| char::from(b)).collect()
}

/// All jobs and their indexes.
#[derive(Default)]
pub struct State {
    jobs: Records,
    ready: ReadyIndex,
    delayed: BTreeSet<(u64, u64, String)>,
    active: Map<String, ActiveLease>,
    /// (deadline, lease number) → job id. Keys of numbers only: many leases share a
    /// millisecond, and ids would be compared and copied to find one.
    deadlines: BTreeMap<(u64, u64), String>,
    /// (end time, sequence number) → job id, for the same reason.
    ended: BTreeMap<(u64, u64), String>,
    seq: u64,
    token_seq: u64,
    /// Jobs not yet ended.
    pub open_jobs: usize,
    /// Jobs not yet ended, by owner (owners with none are absent; jobs without one are not
    /// counted).
    open_by_owner: Map<String, u32>,
    /// Ended jobs kept, by state.
    ended_counts: Map<JobState, u64>,
}

/// A job as the state can show it.
pub enum Shown {
    /// Its snapshot, from the record in memory.
    Snapshot(JobSnapshot),
    /// An ended job whose record is only in the store, by id.
    InStore(String),
}

impl State {
    /// Takes back one stored record. A job that was running when the process stopped goes
    /// back to the queue (its attempt is counted as a stall); an ended one is kept as its end
    /// only, its record being in the store.
    pub fn restore(&mut self, mut rec: JobRecord, fx: &mut Effects) {
        self.seq = self.seq.max(rec.seq + 1);
        if rec.state == JobState::Active {
            rec.stalls += 1;
            rec.state = JobState::Queued;
            fx.persist(&rec);
        }
        self.index(&rec);
        if rec.state.is_terminal() {
            self.jobs.insert_ended(rec);
        } else {
            self.jobs.insert(rec);
        }
    }

    /// Keeps only the end of these ended jobs (their final records are committed), unless a
    /// job has been retried since (numbered anew).
    pub fn keep_ended_only(&mut self, ended: &[(String, u64)]) {
        for (id, seq) in ended {
            self.jobs.keep_ended_only(id, *seq);
        }
    }

    fn index(&mut self, rec: &JobRecord) {
        match rec.state {
            JobState::Queued => {
                put_ready(&mut self.ready, rec);
                self.count_open(&rec.owner, true);
            }
            JobState::Delayed => {
                self.delayed.insert((rec.run_at, rec.seq, rec.id.clone()));
                self.count_open(&rec.owner, true);
            }
            JobState::Active => self.count_open(&rec.owner, true),
            JobState::Completed | JobState::Failed | JobState::Cancelled => {
                self.ended
                    .insert((rec.finished_at.unwrap_or(0), rec.seq), rec.id.clone());
                *self.ended_counts.entry(rec.state).or_default() += 1;
            }
        }
    }

    fn count_open(&mut self, owner: &str, opened: bool) {
        count_open(&mut self.open_jobs, &mut self.open_by_owner, owner, opened);
    }

    fn unindex_waiting(&mut self, rec: &JobRecord) {
        match rec.state {
            JobState::Queued => {
                if let Some(set) = self.ready.get_mut(&rec.method) {
                    set.remove(&ready_key(rec));
                }
            }
            JobState::Delayed => {
                self.delayed.remove(&(rec.run_at, rec.seq, rec.id.clone()));
            }
            _ => {}
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Creates a job or reports the existing one.
    pub fn enqueue(
        &mut self,
        job: NewJob,
        listener: &str,
        now: u64,
        max_open: usize,
    ) -> Result<(Enqueued, Effects), jobcast_core::Error> {
        let mut fx = Effects::default();
        if let Some(slot) = self.jobs.slot(&job.id) {
            let out = Enqueued {
                job_id: job.id,
                state: slot.state(),
                duplicate: true,
                owner: slot.owner().to_owned(),
            };
            if out.owner == job.owner {
                self.listen(&out.job_id, listener);
            }
            return Ok((out, fx));
        }
        if self.open_jobs >= max_open {
            return Err(jobcast_core::Error::QueueFull);
        }
        if job.max_open_per_owner > 0
            && self.open_by_owner.get(&job.owner).copied().unwrap_or(0) >= job.max_open_per_owner
        {
            return Err(jobcast_core::Error::OwnerFull);
        }
        let delayed = job.options.delay_ms > 0;
        let rec = JobRecord {
            seq: self.next_seq(),
            id: job.id,
            method: job.method,
            params: job.params,
            owner: job.owner,
            request_id: job.request_id,
            state: if delayed {
                JobState::Delayed
            } else {
                JobState::Queued
            },
            progress: None,
            attempt: 0,
            stalls: 0,
            created_at: now,
            started_at: None,
            finished_at: None,
            run_at: now + job.options.delay_ms,
            options: job.options,
            result: None,
            error: None,
            listeners: vec![listener.to_owned()],
        };
        fx.persist(&rec);
        fx.wake = !delayed;
        self.index(&rec);
        let out = Enqueued {
            job_id: rec.id.clone(),
            state: rec.state,
            duplicate: false,
            owner: rec.owner.clone(),
        };
        self.jobs.insert(rec);
        Ok((out, fx))
    }

    /// Adds a listener to a job (an ended job whose record is in the store has no more
    /// events to hear); false when unknown.
    pub fn listen(&mut self, job_id: &str, listener: &str) -> bool {
        match self.jobs.get_mut(job_id) {
            Some(rec) => {
                add_listener(rec, listener);
                true
            }
            None => self.jobs.slot(job_id).is_some(),
        }
    }

    /// The job, as far as memory holds it.
    pub fn show(&self, job_id: &str) -> Option<Shown> {
        Some(match self.jobs.slot(job_id)? {
            Slot::Whole(rec) => Shown::Snapshot(rec.snapshot()),
            Slot::Stored(_) => Shown::InStore(job_id.to_owned()),
        })
    }

    /// Moves due delayed jobs to ready and requeues jobs whose lease lapsed.
    pub fn tick(&mut self, now: u64) -> Effects {
        let mut fx = Effects::default();
        while let Some((run_at, _, _)) = self.delayed.first() {
            if *run_at > now {
                break;
            }
            let Some((_, _, id)) = self.delayed.pop_first() else {
                break;
            };
            let seq = self.next_seq();
            if let Some(rec) = self.jobs.get_mut(&id) {
                make_ready(&mut self.ready, rec, seq);
                fx.persist(rec);
                fx.wake = true;
            }
        }
        while let Some((&(deadline, _), _)) = self.deadlines.first_key_value() {
            if deadline > now {
                break;
            }
            let Some((_, id)) = self.deadlines.pop_first() else {
                break;
            };
            if let Some(lease) = self.active.remove(&id) {
                lease.cancel.cancel();
                self.lapse(&id, now, &mut fx);
            }
        }
        fx
    }

    fn lapse(&mut self, id: &str, now: u64, fx: &mut Effects) {
        let seq = self.next_seq();
        let Some(rec) = self.jobs.get_mut(id) else {
            return;
        };
        rec.stalls += 1;
        if rec.stalls > MAX_STALLS {
            let msg = format!(
                "job failed: its worker stopped responding {} times",
                rec.stalls
            );
            rec.error = Some(JobError::with_attempts(
                ErrorCode::JobFailed,
                msg,
                rec.attempt,
                "lease lost",
            ));
            self.end(id, JobState::Failed, now, fx);
            return;
        }
        tracing::warn!(job_id = %id, attempt = rec.attempt, "lease lapsed; job requeued");
        make_ready(&mut self.ready, rec, seq);
        fx.persist(rec);
        fx.wake = true;
    }

    /// The earliest time something becomes due (delayed run time or lease deadline).
    pub fn next_due(&self) -> Option<u64> {
        let d = self.delayed.first().map(|(t, _, _)| *t);
        let l = self.deadlines.first_key_value().map(|(&(t, _), _)| t);
        match (d, l) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Claims up to `max` ready jobs of `methods`, best priority first across methods.
    pub fn claim(
        &mut self,
        methods: &[String],
        max: usize,
        lease_ms: u64,
        now: u64,
    ) -> (Vec<jobcast_core::ClaimedJob>, Effects) {
        let mut fx = Effects::default();
        let mut out = Vec::new();
        while out.len() < max {
            let best = methods
                .iter()
                .filter_map(|m| Some((self.ready.get(m)?.first()?, m)))
                .min_by(|a, b| a.0.cmp(b.0))
                .map(|(_, m)| m);
            let Some(method) = best else { break };
            let Some((_, _, id)) = self.ready.get_mut(method).and_then(BTreeSet::pop_first) else {
                break;
            };
            let method = method.clone();
            self.token_seq += 1;
            let n = self.token_seq;
            let token = lease_token(n, fastrand::u32(..));
            let Some(rec) = self.jobs.get_mut(&id) else {
                continue;
            };
            rec.state = JobState::Active;
            rec.attempt += 1;
            rec.started_at = Some(now);
            fx.persist(rec);
            let cancel = JobCancel::new();
            let deadline = now + lease_ms;
            self.deadlines.insert((deadline, n), id.clone());
            self.active.insert(
                id.clone(),
                ActiveLease {
                    token: token.clone(),
                    n,
                    deadline,
                    cancel: cancel.clone(),
                },
            );
            out.push(jobcast_core::ClaimedJob {
                lease: Lease { job_id: id, token },
                method,
                params: rec.params.clone(),
                attempt: rec.attempt,
                attempts: rec.options.attempts,
                timeout: rec.options.timeout_ms.map(std::time::Duration::from_millis),
                due_at_ms: rec.run_at,
                cancel,
            });
        }
        (out, fx)
    }

    fn holds(&self, lease: &Lease) -> bool {
        self.active
            .get(&lease.job_id)
            .is_some_and(|a| a.token == lease.token)
    }

    /// Extends leases; returns the ids no longer held.
    pub fn renew(&mut self, leases: &[Lease], lease_ms: u64, now: u64) -> Vec<String> {
        let mut lost = Vec::new();
        for l in leases {
            match self.active.get_mut(&l.job_id) {
                Some(a) if a.token == l.token => {
                    let id = self.deadlines.remove(&(a.deadline, a.n));
                    a.deadline = now + lease_ms;
                    let id = id.unwrap_or_else(|| l.job_id.clone());
                    self.deadlines.insert((a.deadline, a.n), id);
                }
                _ => lost.push(l.job_id.clone()),
            }
        }
        lost
    }

    /// Records progress.
    pub fn progress(
        &mut self,
        lease: &Lease,
        progress: Box<RawValue>,
    ) -> Result<Effects, jobcast_core::Error> {
        if !self.holds(lease) {
            return Err(jobcast_core::Error::LeaseLost(lease.job_id.clone()));
        }
        let mut fx = Effects::default();
        if let Some(rec) = self.jobs.get_mut(&lease.job_id) {
            rec.progress = Some(progress.clone());
            fx.persist(rec);
            fx.events.push((
                rec.listeners.clone(),
                JobEvent::Progress {
                    job_id: rec.id.clone(),
                    progress,
                },
            ));
        }
        Ok(fx)
    }

    fn release(&mut self, lease: &Lease) -> Result<(), jobcast_core::Error> {
        if !self.holds(lease) {
            return Err(jobcast_core::Error::LeaseLost(lease.job_id.clone()));
        }
        if let Some(a) = self.active.remove(&lease.job_id) {
            self.deadlines.remove(&(a.deadline, a.n));
        }
        Ok(())
    }

    /// Ends a job: state, time, indexes, persistence and the final event.
    fn end(&mut self, id: &str, state: JobState, now: u64, fx: &mut Effects) {
        let Some(rec) = self.jobs.get_mut(id) else {
            return;
        };
        rec.state = state;
        rec.finished_at = Some(now);
        count_open(
            &mut self.open_jobs,
            &mut self.open_by_owner,
            &rec.owner,
            false,
        );
        *self.ended_counts.entry(state).or_default() += 1;
        self.ended.insert((now, rec.seq), id.to_owned());
        fx.persist_end(rec);
    }

    /// Puts a running job back in its place in the queue, its attempt not counted.
    pub fn hand_back(&mut self, lease: &Lease) -> Result<Effects, jobcast_core::Error> {
        self.release(lease)?;
        let mut fx = Effects::default();
        if let Some(rec) = self.jobs.get_mut(&lease.job_id) {
            rec.attempt = rec.attempt.saturating_sub(1);
            rec.started_at = None;
            let seq = rec.seq;
            make_ready(&mut self.ready, rec, seq);
            fx.persist(rec);
            fx.wake = true;
        }
        Ok(fx)
    }

    /// Completes a running job.
    pub fn complete(
        &mut self,
        lease: &Lease,
        result: Box<RawValue>,
        now: u64,
    ) -> Result<Effects, jobcast_core::Error> {
        self.release(lease)?;
        let mut fx = Effects::default();
        if let Some(rec) = self.jobs.get_mut(&lease.job_id) {
            rec.result = Some(result);
        }
        self.end(&lease.job_id, JobState::Completed, now, &mut fx);
        Ok(fx)
    }

    /// Ends an attempt with a failure: retry or fail.
    pub fn fail(
        &mut self,
        lease: &Lease,
        failure: AttemptFailure,
        now: u64,
        unit: f64,
    ) -> Result<(FailOutcome, Effects), jobcast_core::Error> {
        self.release(lease)?;
        let mut fx = Effects::default();
        let seq = self.next_seq();
        let Some(rec) = self.jobs.get_mut(&lease.job_id) else {
            return Ok((FailOutcome::Dead, fx));
        };
        let retryable = match &failure {
            AttemptFailure::Error { retryable, .. } => *retryable,
            AttemptFailure::TimedOut => true,
        };
        if retryable && rec.attempt < rec.options.attempts {
            let delay = rec.options.backoff.delay_for(rec.attempt, unit);
            rec.run_at = now + delay;
            rec.seq = seq;
            if delay > 0 {
                rec.state = JobState::Delayed;
                self.delayed.insert((rec.run_at, seq, rec.id.clone()));
            } else {
                make_ready(&mut self.ready, rec, seq);
                fx.wake = true;
            }
            fx.persist(rec);
            return Ok((FailOutcome::Retrying { at_ms: rec.run_at }, fx));
        }
        rec.error = Some(match failure {
            AttemptFailure::Error { message, .. } => JobError::with_attempts(
                ErrorCode::JobFailed,
                format!("job failed: {message}"),
                rec.attempt,
                &message,
            ),
            AttemptFailure::TimedOut => JobError::with_attempts(
                ErrorCode::JobTimedOut,
                "job timed out".into(),
                rec.attempt,
                "timeout",
            ),
        });
        let id = rec.id.clone();
        self.end(&id, JobState::Failed, now, &mut fx);
        Ok((FailOutcome::Dead, fx))
    }

    /// Cancels a job.
    pub fn cancel(&mut self, job_id: &str, now: u64) -> (Option<Cancelled>, Effects) {
        let mut fx = Effects::default();
        let state = match self.jobs.slot(job_id) {
            None => return (None, fx),
            Some(slot) => slot.state(),
        };
        if state.is_terminal() {
            return (
                Some(Cancelled {
                    cancelled: false,
                    state,
                }),
                fx,
            );
        }
        // An open job's record is always held whole.
        let Some(rec) = self.jobs.get(job_id).cloned() else {
            return (None, fx);
        };
        self.unindex_waiting(&rec);
        if let Some(a) = self.active.remove(job_id) {
            self.deadlines.remove(&(a.deadline, a.n));
            a.cancel.cancel();
        }
        if let Some(r) = self.jobs.get_mut(job_id) {
            r.error = Some(JobError::with_attempts(
                ErrorCode::JobCancelled,
                "job cancelled".into(),
                r.attempt,
                "cancelled",
            ));
        }
        self.end(job_id, JobState::Cancelled, now, &mut fx);
        (
            Some(Cancelled {
                cancelled: true,
                state: JobState::Cancelled,
            }),
            fx,
        )
    }

    /// Removes up to `limit` ended jobs, oldest first: those that ended before `cutoff`, and
    /// any past the newest `keep`.
    pub fn purge(&mut self, cutoff: u64, keep: usize, limit: usize) -> Effects {
        let mut fx = Effects::default();
        for _ in 0..limit {
            match self.ended.first_key_value() {
                Some((&(t, _), _)) if t < cutoff || self.ended.len() > keep => {}
                _ => break,
            }
            let Some((_, id)) = self.ended.pop_first() else {
                break;
            };
            if let Some(slot) = self.jobs.remove(&id) {
                let n = self.ended_counts.entry(slot.state()).or_default();
                *n = n.saturating_sub(1);
            }
            fx.writes.delete(&id);
        }
        fx
    }

    /// Jobs in `state`, in the order [`jobcast_core::JobQueue::list`] gives.
    pub fn list(&self, state: JobState, offset: usize, limit: usize) -> Vec<Shown> {
        let ids: Box<dyn Iterator<Item = &String>> = match state {
            JobState::Queued => {
                let mut keys: Vec<&ReadyKey> = self.ready.values().flatten().collect();
                keys.sort();
                Box::new(keys.into_iter().map(|(_, _, id)| id))
            }
            JobState::Delayed => Box::new(self.delayed.iter().map(|(_, _, id)| id)),
            JobState::Active => Box::new(self.deadlines.values()),
            _ => Box::new(
                self.ended
                    .values()
                    .filter(move |id| self.jobs.slot(id).is_some_and(|s| s.state() == state)),
            ),
        };
        ids.skip(offset)
            .take(limit)
            .filter_map(|id| self.show(id))
            .collect()
    }

    /// Puts a failed or cancelled job back in the queue from its first attempt. An ended job
    /// whose record is only in the store is read with `load` first.
    pub fn retry(
        &mut self,
        job_id: &str,
        load: impl FnOnce(&str) -> Result<JobRecord, jobcast_core::Error>,
    ) -> Result<(Option<Retried>, Effects), jobcast_core::Error> {
        let mut fx = Effects::default();
        let Some(slot) = self.jobs.slot(job_id) else {
            return Ok((None, fx));
        };
        let state = slot.state();
        if !matches!(state, JobState::Failed | JobState::Cancelled) {
            return Ok((
                Some(Retried {
                    retried: false,
                    state,
                }),
                fx,
            ));
        }
        if let Slot::Stored(_) = slot {
            self.jobs.insert(load(job_id)?);
        }
        let Some(rec) = self.jobs.get(job_id) else {
            return Ok((None, fx));
        };
        let (old_state, ended_at) = (rec.state, rec.finished_at.unwrap_or(0));
        self.ended.remove(&(ended_at, rec.seq));
        let n = self.ended_counts.entry(old_state).or_default();
        *n = n.saturating_sub(1);
        let seq = self.next_seq();
        let Some(rec) = self.jobs.get_mut(job_id) else {
            return Ok((None, fx));
        };
        rec.attempt = 0;
        rec.stalls = 0;
        rec.progress = None;
        rec.result = None;
        rec.error = None;
        rec.started_at = None;
        rec.finished_at = None;
        make_ready(&mut self.ready, rec, seq);
        count_open(
            &mut self.open_jobs,
            &mut self.open_by_owner,
            &rec.owner,
            true,
        );
        fx.persist(rec);
        fx.wake = true;
        Ok((
            Some(Retried {
                retried: true,
                state: JobState::Queued,
            }),
            fx,
        ))
    }

    /// Deletes the ended jobs in `state` that ended before `before`; returns how many.
    pub fn purge_state(&mut self, state: JobState, before: u64) -> (u64, Effects) {
        let mut fx = Effects::default();
        let doomed: Vec<(u64, u64)> = self
            .ended
            .iter()
            .take_while(|((t, _), _)| *t < before)
            .filter(|(_, id)| self.jobs.slot(id).is_some_and(|s| s.state() == state))
            .map(|(key, _)| *key)
            .collect();
        for key in &doomed {
            if let Some(id) = self.ended.remove(key) {
                self.jobs.remove(&id);
                fx.writes.delete(&id);
            }
        }
        let n = self.ended_counts.entry(state).or_default();
        *n = n.saturating_sub(doomed.len() as u64);
        (doomed.len() as u64, fx)
    }

    /// Counts by state.
    pub fn counts(&self) -> QueueCounts {
        let ended = |s| self.ended_counts.get(&s).copied().unwrap_or(0);
        QueueCounts {
            queued: self.ready.values().map(|s| s.len() as u64).sum(),
            delayed: self.delayed.len() as u64,
            active: self.active.len() as u64,
            completed: ended(JobState::Completed),
            failed: ended(JobState::Failed),
            cancelled: ended(JobState::Cancelled),
        }
    }

    /// Number of stored jobs.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether the whole record of `id` is in memory.
    #[cfg(test)]
    pub fn holds_whole(&self, id: &str) -> bool {
        self.jobs.get(id).is_some()
    }
}

fn add_listener(rec: &mut JobRecord, listener: &str) {
    if !rec.listeners.iter().any(|l| l == listener) {
        if rec.listeners.len() >= MAX_LISTENERS {
            rec.listeners.remove(0);
        }
        rec.listeners.push(listener.to_owned());
    }
}

/// Counts a job opening or ending, in total and for its owner (owners reaching zero are
/// removed, so the map holds only owners with open jobs).
fn count_open(total: &mut usize, by_owner: &mut Map<String, u32>, owner: &str, opened: bool) {
    if opened {
        *total += 1;
    } else {
        *total = total.saturating_sub(1);
    }
    if owner.is_empty() {
        return;
    }
    if opened {
        // Look up before inserting: no new String per job for an owner already counted.
        match by_owner.get_mut(owner) {
            Some(n) => *n += 1,
            None => {
                by_owner.insert(owner.to_owned(), 1);
            }
        }
    } else if let Some(n) = by_owner.get_mut(owner) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            by_owner.remove(owner);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lease_tokens_are_the_number_and_the_random_part_in_hex() {
        assert_eq!(super::lease_token(0, 0), "0-00000000");
        assert_eq!(super::lease_token(42, 0xdead_beef), "42-deadbeef");
        assert_eq!(
            super::lease_token(u64::MAX, u32::MAX),
            "18446744073709551615-ffffffff"
        );
    }
}
