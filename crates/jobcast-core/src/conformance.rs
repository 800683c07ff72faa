//! The backend conformance suite: every [`JobQueue`] + [`Bus`] implementation must pass
//! [`run_all`]. Each check gets a fresh backend from the factory and panics on a violation, so
//! a backend crate calls it from one `#[tokio::test]`.

// This module is a test suite: panicking on an unexpected result is its way of failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::{
    AttemptFailure, Audience, Bus, FailOutcome, GatewayReport, Inbound, JobEvent, JobQueue,
    JobState, MethodInfo, NewJob, Presence, WorkerAnnouncement, new_job_id, raw,
};
use jobcast_protocol::{Backoff, BackoffKind, ErrorCode, JobOptions};
use std::{future::Future, sync::Arc, time::Duration};
use tokio::sync::mpsc::UnboundedReceiver;

/// A backend under test.
pub struct Backend {
    /// The queue.
    pub queue: Arc<dyn JobQueue>,
    /// The bus of the same backend.
    pub bus: Arc<dyn Bus>,
}

const GW: &str = "gw-conformance";
const LEASE: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_millis(1500);

fn job(method: &str, options: JobOptions) -> NewJob {
    NewJob {
        id: new_job_id(),
        method: method.into(),
        params: raw(r#"{"n":1}"#),
        owner: "u1".into(),
        request_id: None,
        options,
        max_open_per_owner: 0,
    }
}

fn methods(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The next ready job of method `m`, claimed by worker `w` (one claim of at most one, waiting
/// up to 1.5 s); panics when there is none. Backend crates' own tests use it too.
pub async fn claim_one(queue: &dyn JobQueue) -> crate::ClaimedJob {
    let mut c = queue
        .claim("w", &methods(&["m"]), 1, LEASE, WAIT)
        .await
        .unwrap();
    assert_eq!(c.len(), 1, "one job to claim");
    c.remove(0)
}

/// A handler's error.
fn failed(message: &str, retryable: bool) -> AttemptFailure {
    AttemptFailure::Error {
        message: message.into(),
        retryable,
    }
}

async fn next_event(inbox: &mut UnboundedReceiver<Inbound>) -> JobEvent {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await {
            Ok(Some(Inbound::Job(e))) => return e,
            Ok(Some(Inbound::Topic { .. })) => continue,
            other => panic!("no job event: {other:?}"),
        }
    }
}

/// Runs every check, each on a fresh backend made by `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Backend>,
{
    enqueue_is_idempotent(make().await).await;
    claim_progress_complete_reach_listener(make().await).await;
    priority_then_fifo(make().await).await;
    delayed_jobs_wait(make().await).await;
    retries_then_success(make().await).await;
    exponential_backoff_doubles(make().await).await;
    last_failure_is_final(make().await).await;
    timeout_on_last_attempt(make().await).await;
    non_retryable_fails_at_once(make().await).await;
    cancel_queued_and_active(make().await).await;
    lapsed_lease_is_reclaimed(make().await).await;
    renewed_lease_is_kept(make().await).await;
    claim_filters_methods(make().await).await;
    one_claim_takes_the_best_across_methods(make().await).await;
    one_claim_takes_thousands(make().await).await;
    a_burst_of_ends_reaches_the_listener(make().await).await;
    method_registry(make().await).await;
    topics_reach_other_gateways_in_order(make().await).await;
    presence_and_reports(make().await).await;
    operators_list_retry_and_purge(make().await).await;
    open_jobs_are_capped_per_owner(make().await).await;
    handed_back_jobs_keep_their_place(make().await).await;
}

/// Duplicate ids create nothing and report the existing job.
pub async fn enqueue_is_idempotent(b: Backend) {
    let j = job("m", JobOptions::default());
    let id = j.id.clone();
    let first = b.queue.enqueue(j.clone(), GW).await.unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.state, JobState::Queued);
    let mut other = j;
    other.owner = "u2".into();
    let again = b.queue.enqueue(other, GW).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.owner, "u1", "a duplicate reports the original owner");
    let snap = b.queue.snapshot(&id).await.unwrap().unwrap();
    assert_eq!(snap.state, JobState::Queued);
    assert_eq!(snap.owner, "u1");
    assert_eq!(snap.attempt, 0);
    assert_eq!(b.queue.counts().await.unwrap().queued, 1);
    assert!(b.queue.snapshot("nope").await.unwrap().is_none());
    assert!(!b.queue.listen("nope", GW).await.unwrap());
}

/// Progress and the result reach the listening gateway in order.
pub async fn claim_progress_complete_reach_listener(b: Backend) {
    let mut inbox = b.bus.open_inbox(GW).unwrap();
    let j = job("m", JobOptions::default());
    let id = j.id.clone();
    b.queue.enqueue(j, GW).await.unwrap();
    let claimed = b
        .queue
        .claim("w1", &methods(&["m"]), 10, LEASE, WAIT)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(c.lease.job_id, id);
    assert_eq!(c.attempt, 1);
    assert_eq!(c.params.get(), r#"{"n":1}"#);
    assert_eq!(
        b.queue.snapshot(&id).await.unwrap().unwrap().state,
        JobState::Active
    );
    b.queue.progress(&c.lease, raw("50")).await.unwrap();
    b.queue
        .complete(&c.lease, raw(r#"{"ok":true}"#))
        .await
        .unwrap();
    match next_event(&mut inbox).await {
        JobEvent::Progress { job_id, progress } => {
            assert_eq!(job_id, id);
            assert_eq!(progress.get(), "50");
        }
        e => panic!("expected progress, got {e:?}"),
    }
    match next_event(&mut inbox).await {
        JobEvent::Finished { job_id, outcome } => {
            assert_eq!(job_id, id);
            assert_eq!(outcome.unwrap().get(), r#"{"ok":true}"#);
        }
        e => panic!("expected finish, got {e:?}"),
    }
    let snap = b.queue.snapshot(&id).await.unwrap().unwrap();
    assert_eq!(snap.state, JobState::Completed);
    assert_eq!(snap.result.unwrap().get(), r#"{"ok":true}"#);
    assert!(snap.finished_at.is_some());
    assert!(matches!(
        b.queue.complete(&c.lease, raw("1")).await,
        Err(crate::Error::LeaseLost(_))
    ));
}

/// Higher priority first; first in first out within a priority.
pub async fn priority_then_fifo(b: Backend) {
    let mut ids = Vec::new();
    for p in [0u16, 5, 5, 10] {
        let j = job(
            "m",
            JobOptions {
                priority: p,
                ..Default::default()
            },
        );
        ids.push(j.id.clone());
        b.queue.enqueue(j, GW).await.unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..4 {
        let c = claim_one(&*b.queue).await;
        order.push(c.lease.job_id.clone());
    }
    assert_eq!(
        order,
        vec![
            ids[3].clone(),
            ids[1].clone(),
            ids[2].clone(),
            ids[0].clone()
        ]
    );
}

/// A delayed job is not claimable before its time.
pub async fn delayed_jobs_wait(b: Backend) {
    let j = job(
        "m",
        JobOptions {
            delay_ms: 400,
            ..Default::default()
        },
    );
    let id = j.id.clone();
    let start = std::time::Instant::now();
    let e = b.queue.enqueue(j, GW).await.unwrap();
    assert_eq!(e.state, JobState::Delayed);
    let none = b
        .queue
        .claim("w", &methods(&["m"]), 1, LEASE, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(none.is_empty(), "a delayed job was claimed early");
    let c = b
        .queue
        .claim("w", &methods(&["m"]), 1, LEASE, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].lease.job_id, id);
    assert!(start.elapsed() >= Duration::from_millis(390));
}

/// Failures are retried after the backoff until an attempt succeeds.
pub async fn retries_then_success(b: Backend) {
    let j = job(
        "m",
        JobOptions {
            attempts: 3,
            backoff: Backoff {
                kind: BackoffKind::Fixed,
                delay_ms: 50,
                jitter: 0.0,
            },
            ..Default::default()
        },
    );
    let id = j.id.clone();
    b.queue.enqueue(j, GW).await.unwrap();
    for attempt in 1..=2 {
        let c = claim_one(&*b.queue).await;
        assert_eq!(c.attempt, attempt);
        let out = b.queue.fail(&c.lease, failed("boom", true)).await.unwrap();
        assert!(matches!(out, FailOutcome::Retrying { .. }));
        let s = b.queue.snapshot(&id).await.unwrap().unwrap().state;
        assert!(matches!(s, JobState::Delayed | JobState::Queued));
    }
    let c = claim_one(&*b.queue).await;
    assert_eq!(c.attempt, 3);
    b.queue.complete(&c.lease, raw("true")).await.unwrap();
    let snap = b.queue.snapshot(&id).await.unwrap().unwrap();
    assert_eq!(
        (snap.state, snap.attempt, snap.attempts),
        (JobState::Completed, 3, 3)
    );
}

/// An exponential backoff waits its delay after the first failed attempt, twice it after the
/// second.
pub async fn exponential_backoff_doubles(b: Backend) {
    let j = job(
        "m",
        JobOptions {
            attempts: 3,
            backoff: Backoff {
                kind: BackoffKind::Exponential,
                delay_ms: 200,
                jitter: 0.0,
            },
            ..Default::default()
        },
    );
    b.queue.enqueue(j, GW).await.unwrap();
    for (attempt, delay) in [(1, 200), (2, 400)] {
        let c = claim_one(&*b.queue).await;
        assert_eq!(c.attempt, attempt);
        let before = crate::now_ms();
        let out = b.queue.fail(&c.lease, failed("boom", true)).await.unwrap();
        let after = crate::now_ms();
        let FailOutcome::Retrying { at_ms } = out else {
            panic!("attempt {attempt} of 3 is retried: {out:?}");
        };
        assert!(
            (at_ms - after..=at_ms - before).contains(&delay),
            "attempt {attempt}: retried at now + {}..{} ms, not + {delay}",
            at_ms - after,
            at_ms - before
        );
    }
}

/// The last failed attempt ends the job with -32000 and `data.attempts`.
pub async fn last_failure_is_final(b: Backend) {
    let mut inbox = b.bus.open_inbox(GW).unwrap();
    let j = job(
        "m",
        JobOptions {
            attempts: 2,
            ..Default::default()
        },
    );
    let id = j.id.clone();
    b.queue.enqueue(j, GW).await.unwrap();
    for expect in [FailOutcome::Retrying { at_ms: 0 }, FailOutcome::Dead] {
        let c = claim_one(&*b.queue).await;
        let out = b.queue.fail(&c.lease, failed("boom", true)).await.unwrap();
        assert_eq!(
            std::mem::discriminant(&out),
            std::mem::discriminant(&expect)
        );
    }
    match next_event(&mut inbox).await {
        JobEvent::Finished {
            outcome: Err(e), ..
        } => {
            assert_eq!(e.code, ErrorCode::JobFailed);
            assert!(e.message.contains("boom"));
            let data: serde_json::Value = serde_json::from_str(e.data.unwrap().get()).unwrap();
            assert_eq!(data["attempts"], 2);
        }
        e => panic!("expected failure, got {e:?}"),
    }
    assert_eq!(
        b.queue.snapshot(&id).await.unwrap().unwrap().state,
        JobState::Failed
    );
    assert_eq!(b.queue.counts().await.unwrap().failed, 1);
}

/// A timeout on the last attempt ends the job with -32001.
pub async fn timeout_on_last_attempt(b: Backend) {
    let mut inbox = b.bus.open_inbox(GW).unwrap();
    b.queue
        .enqueue(job("m", JobOptions::default()), GW)
        .await
        .unwrap();
    let c = claim_one(&*b.queue).await;
    b.queue
        .fail(&c.lease, AttemptFailure::TimedOut)
        .await
        .unwrap();
    match next_event(&mut inbox).await {
        JobEvent::Finished {
            outcome: Err(e), ..
        } => assert_eq!(e.code, ErrorCode::JobTimedOut),
        e => panic!("expected timeout, got {e:?}"),
    }
}

/// A non-retryable failure fails the job even with attempts left.
pub async fn non_retryable_fails_at_once(b: Backend) {
    let j = job(
        "m",
        JobOptions {
            attempts: 5,
            ..Default::default()
        },
    );
    let id = j.id.clone();
    b.queue.enqueue(j, GW).await.unwrap();
    let c = claim_one(&*b.queue).await;
    let out = b.queue.fail(&c.lease, failed("bad", false)).await.unwrap();
    assert_eq!(out, FailOutcome::Dead);
    assert_eq!(
        b.queue.snapshot(&id).await.unwrap().unwrap().state,
        JobState::Failed
    );
}

/// Cancelling a queued job ends it; cancelling a running one fires the worker's token.
pub async fn cancel_queued_and_active(b: Backend) {
    let mut inbox = b.bus.open_inbox(GW).unwrap();
    let queued = job("m", JobOptions::default());
    let qid = queued.id.clone();
    b.queue.enqueue(queued, GW).await.unwrap();
    let c = b.queue.cancel(&qid).await.unwrap().unwrap();
    assert!(c.cancelled);
    assert_eq!(c.state, JobState::Cancelled);
    match next_event(&mut inbox).await {
        JobEvent::Finished {
            outcome: Err(e),
            job_id,
        } => {
            assert_eq!(job_id, qid);
            assert_eq!(e.code, ErrorCode::JobCancelled);
        }
        e => panic!("expected cancel, got {e:?}"),
    }
    let none = b
        .queue
        .claim("w", &methods(&["m"]), 1, LEASE, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(none.is_empty(), "a cancelled job was claimed");
    let again = b.queue.cancel(&qid).await.unwrap().unwrap();
    assert!(!again.cancelled);

    let active = job("m", JobOptions::default());
    let aid = active.id.clone();
    b.queue.enqueue(active, GW).await.unwrap();
    // A worker id that itself ends in dashes and digits: a backend may read the worker holding
    // a job from its lease token, which adds such parts. No other claim here uses a prefix of
    // it, so a worker read wrongly is not told.
    let claimed = b
        .queue
        .claim("to-cancel-12-34", &methods(&["m"]), 1, LEASE, WAIT)
        .await
        .unwrap()
        .remove(0);
    assert!(!claimed.cancel.is_cancelled());
    let c = b.queue.cancel(&aid).await.unwrap().unwrap();
    assert!(c.cancelled);
    tokio::time::timeout(Duration::from_secs(5), claimed.cancel.cancelled())
        .await
        .expect("the worker's cancel token did not fire");
    assert!(b.queue.complete(&claimed.lease, raw("1")).await.is_err());
    assert_eq!(
        b.queue.snapshot(&aid).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    assert!(b.queue.cancel("nope").await.unwrap().is_none());
}

/// A lease that is not renewed lapses and the job runs again, counting an attempt.
pub async fn lapsed_lease_is_reclaimed(b: Backend) {
    let j = job(
        "m",
        JobOptions {
            attempts: 2,
            ..Default::default()
        },
    );
    let id = j.id.clone();
    b.queue.enqueue(j, GW).await.unwrap();
    let first = b
        .queue
        .claim("w1", &methods(&["m"]), 1, Duration::from_millis(200), WAIT)
        .await
        .unwrap();
    assert_eq!(first[0].attempt, 1);
    let second = b
        .queue
        .claim("w2", &methods(&["m"]), 1, LEASE, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(second.len(), 1, "lapsed job not reclaimed");
    assert_eq!(second[0].lease.job_id, id);
    assert_eq!(second[0].attempt, 2);
    assert!(
        first[0].cancel.is_cancelled(),
        "the old holder was not told"
    );
    assert!(b.queue.complete(&first[0].lease, raw("1")).await.is_err());
    b.queue.complete(&second[0].lease, raw("2")).await.unwrap();
    let renewed = b
        .queue
        .renew(&[first[0].lease.clone()], LEASE)
        .await
        .unwrap();
    assert_eq!(renewed, vec![id]);
}

/// Renewing keeps a lease past its original length.
pub async fn renewed_lease_is_kept(b: Backend) {
    b.queue
        .enqueue(job("m", JobOptions::default()), GW)
        .await
        .unwrap();
    // Renewed every third of the lease, for over twice its length in all.
    let lease = Duration::from_millis(900);
    let c = b
        .queue
        .claim("w1", &methods(&["m"]), 1, lease, WAIT)
        .await
        .unwrap();
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let lost = b.queue.renew(&[c[0].lease.clone()], lease).await.unwrap();
        assert!(lost.is_empty());
    }
    let none = b
        .queue
        .claim("w2", &methods(&["m"]), 1, LEASE, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(none.is_empty(), "a renewed lease was taken");
    b.queue.complete(&c[0].lease, raw("1")).await.unwrap();
}

/// Workers only get the methods they ask for.
pub async fn claim_filters_methods(b: Backend) {
    b.queue
        .enqueue(job("a", JobOptions::default()), GW)
        .await
        .unwrap();
    let none = b
        .queue
        .claim("w", &methods(&["b"]), 5, LEASE, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(none.is_empty());
    let some = b
        .queue
        .claim("w", &methods(&["b", "a"]), 5, LEASE, WAIT)
        .await
        .unwrap();
    assert_eq!(some.len(), 1);
    assert_eq!(some[0].method, "a");
}

/// One claim over several methods takes the best jobs across all of them: highest priority
/// first, then in the order they were submitted, whichever method they are of; a claim of
/// fewer than are ready leaves the rest in their places.
pub async fn one_claim_takes_the_best_across_methods(b: Backend) {
    let mut ids = Vec::new();
    for (method, priority) in [
        ("a", 0u16),
        ("b", 5),
        ("c", 5),
        ("a", 10),
        ("b", 0),
        ("c", 0),
    ] {
        let j = job(
            method,
            JobOptions {
                priority,
                ..Default::default()
            },
        );
        ids.push(j.id.clone());
        b.queue.enqueue(j, GW).await.unwrap();
    }
    let all = methods(&["a", "b", "c"]);
    let mut order = Vec::new();
    for max in [4, 5] {
        let c = b.queue.claim("w", &all, max, LEASE, WAIT).await.unwrap();
        order.extend(c.into_iter().map(|c| c.lease.job_id));
    }
    let want: Vec<String> = [3, 1, 2, 0, 4, 5].iter().map(|&i| ids[i].clone()).collect();
    assert_eq!(order, want);
}

/// A claim may take more jobs at once than one script or transaction step is usually given
/// (a worker with a concurrency in the thousands): every one is taken once, none is lost.
pub async fn one_claim_takes_thousands(b: Backend) {
    const N: usize = 5_000;
    let mut submits = tokio::task::JoinSet::new();
    for _ in 0..N {
        let queue = b.queue.clone();
        submits.spawn(async move { queue.enqueue(job("m", JobOptions::default()), GW).await });
    }
    while let Some(r) = submits.join_next().await {
        r.unwrap().unwrap();
    }
    let mut taken = std::collections::HashSet::new();
    while taken.len() < N {
        let c = b
            .queue
            .claim("w", &methods(&["m", "other"]), N, LEASE, WAIT)
            .await
            .unwrap();
        assert!(!c.is_empty(), "jobs left unclaimed: {}", N - taken.len());
        for c in c {
            assert!(taken.insert(c.lease.job_id), "a job was taken twice");
        }
    }
    assert_eq!(b.queue.counts().await.unwrap().active, N as u64);
}

/// Hundreds of jobs completed at once, a few with results of 600 KB, each reach the listening
/// gateway once, with their own result (Redis publishes a burst of final events to a gateway as
/// one message, and a call carries at most about 4 MiB of results).
pub async fn a_burst_of_ends_reaches_the_listener(b: Backend) {
    const N: usize = 300;
    const LARGE: usize = 8;
    let mut inbox = b.bus.open_inbox(GW).unwrap();
    for _ in 0..N {
        b.queue
            .enqueue(job("m", JobOptions::default()), GW)
            .await
            .unwrap();
    }
    let claimed = b
        .queue
        .claim("w", &methods(&["m"]), N, LEASE, WAIT)
        .await
        .unwrap();
    assert_eq!(claimed.len(), N);
    let mut expected = std::collections::HashMap::new();
    let mut ends = tokio::task::JoinSet::new();
    for (i, c) in claimed.into_iter().enumerate() {
        let result = if i % (N / LARGE) == 0 {
            format!("\"{}\"", "x".repeat(600_000 + i))
        } else {
            format!("{{\"i\":{i}}}")
        };
        expected.insert(c.lease.job_id.clone(), result.clone());
        let queue = b.queue.clone();
        ends.spawn(async move { queue.complete(&c.lease, raw(&result)).await });
    }
    while let Some(r) = ends.join_next().await {
        r.unwrap().unwrap();
    }
    while !expected.is_empty() {
        match next_event(&mut inbox).await {
            JobEvent::Finished { job_id, outcome } => {
                let want = expected
                    .remove(&job_id)
                    .unwrap_or_else(|| panic!("an unexpected or second final event for {job_id}"));
                assert_eq!(outcome.unwrap().get(), want);
            }
            JobEvent::Progress { .. } => panic!("no progress was reported"),
        }
    }
}

/// Most ended jobs a backend built for [`keeps_at_most_the_newest_ended_jobs`] may keep.
pub const ENDED_CAP: usize = 3;

/// Past its cap of ended jobs ([`ENDED_CAP`]: the backend must be built with it, and purge
/// often), a backend purges the oldest first, before their retention ends. Not part of
/// [`run_all`], whose backends keep the default cap.
pub async fn keeps_at_most_the_newest_ended_jobs(b: Backend) {
    let mut ids = Vec::new();
    for _ in 0..ENDED_CAP + 2 {
        let j = job("m", JobOptions::default());
        ids.push(j.id.clone());
        b.queue.enqueue(j, GW).await.unwrap();
        let c = claim_one(&*b.queue).await;
        b.queue.complete(&c.lease, raw("1")).await.unwrap();
        // Distinct end times, so "oldest" is well defined.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let mut left = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left.clear();
        for (i, id) in ids.iter().enumerate() {
            if b.queue.snapshot(id).await.unwrap().is_some() {
                left.push(i);
            }
        }
        if left.len() == ENDED_CAP {
            break;
        }
    }
    let newest: Vec<usize> = (2..ENDED_CAP + 2).collect();
    assert_eq!(left, newest, "the two oldest go");
    assert_eq!(b.queue.counts().await.unwrap().completed, ENDED_CAP as u64);
}

/// Announced methods are listed while the worker lives.
pub async fn method_registry(b: Backend) {
    let m = |n: &str| MethodInfo {
        name: n.into(),
        params_schema: None,
    };
    b.queue
        .announce(&WorkerAnnouncement {
            worker_id: "w1".into(),
            methods: vec![m("b"), m("a")],
            ttl: Duration::from_secs(30),
        })
        .await
        .unwrap();
    b.queue
        .announce(&WorkerAnnouncement {
            worker_id: "w2".into(),
            methods: vec![m("a"), m("c")],
            ttl: Duration::from_millis(200),
        })
        .await
        .unwrap();
    let names = |v: Vec<MethodInfo>| v.into_iter().map(|m| m.name).collect::<Vec<_>>();
    assert_eq!(names(b.queue.methods().await.unwrap()), vec!["a", "b", "c"]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        names(b.queue.methods().await.unwrap()),
        vec!["a", "b"],
        "lapsed worker still listed"
    );
    b.queue.withdraw("w1").await.unwrap();
    assert!(b.queue.methods().await.unwrap().is_empty());
}

/// Topic frames reach the other subscribed gateways, in publish order, with their audience,
/// and never the publisher itself.
pub async fn topics_reach_other_gateways_in_order(b: Backend) {
    let mut a = b.bus.open_inbox("gw-a").unwrap();
    let mut other = b.bus.open_inbox("gw-b").unwrap();
    b.bus.subscribe_topic("gw-a", "room").unwrap();
    b.bus.subscribe_topic("gw-b", "room").unwrap();
    // Subscriptions may take a moment to be active (a network round trip).
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..20 {
        let audience = if i % 2 == 0 {
            Audience::All
        } else {
            Audience::PresenceWatchers
        };
        let frame = bytes::Bytes::from(format!("{{\"n\":{i}}}"));
        b.bus
            .publish_topic("gw-a", "room", audience, frame)
            .unwrap();
    }
    for i in 0..20 {
        match tokio::time::timeout(WAIT, other.recv()).await {
            Ok(Some(Inbound::Topic {
                topic,
                audience,
                frame,
            })) => {
                assert_eq!(topic, "room");
                assert_eq!(
                    &frame[..],
                    format!("{{\"n\":{i}}}").as_bytes(),
                    "out of order"
                );
                assert_eq!(audience == Audience::All, i % 2 == 0);
            }
            other => panic!("expected topic frame {i}, got {other:?}"),
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), a.recv())
            .await
            .is_err(),
        "the publisher received its own frame"
    );
    b.bus.unsubscribe_topic("gw-b", "room").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.bus
        .publish_topic("gw-a", "room", Audience::All, bytes::Bytes::from("{}"))
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), other.recv())
            .await
            .is_err(),
        "received after unsubscribing"
    );
}

/// Presence counts connections and distinct users of reporting gateways; reports lapse.
pub async fn presence_and_reports(b: Backend) {
    let report = |id: &str| GatewayReport {
        gateway_id: id.into(),
        stats: format!("{{\"id\":\"{id}\"}}"),
    };
    b.bus
        .report(&report("gw-a"), Duration::from_secs(30))
        .await
        .unwrap();
    b.bus
        .report(&report("gw-b"), Duration::from_millis(300))
        .await
        .unwrap();
    let ids = |v: Vec<GatewayReport>| v.into_iter().map(|r| r.gateway_id).collect::<Vec<_>>();
    assert_eq!(ids(b.bus.reports().await.unwrap()), vec!["gw-a", "gw-b"]);
    b.bus.presence_join("gw-a", "room", 1, "alice").unwrap();
    b.bus.presence_join("gw-a", "room", 2, "alice").unwrap();
    b.bus.presence_join("gw-b", "room", 1, "bob").unwrap();
    b.bus.presence_join("gw-a", "other", 3, "carol").unwrap();
    b.bus.presence_leave("gw-a", "room", 2).unwrap();
    // Writes are fire-and-forget but ordered: poll until they landed.
    let want = Presence {
        users: vec!["alice".into(), "bob".into()],
        connections: 2,
    };
    let mut got = Presence::default();
    for _ in 0..50 {
        got = b.bus.presence("room").await.unwrap();
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(got, want);
    assert_eq!(b.bus.presence("empty").await.unwrap(), Presence::default());
    // gw-b's report lapses: it is no longer listed (and, on a backend shared by several
    // processes, its presence entries stop counting).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ids(b.bus.reports().await.unwrap()), vec!["gw-a"]);
    assert_eq!(b.bus.reports().await.unwrap()[0].stats, r#"{"id":"gw-a"}"#);
}

/// What `jobcast jobs` needs: listing by state in queue order, retrying dead jobs, purging.
pub async fn operators_list_retry_and_purge(b: Backend) {
    let with = |priority: u16, delay_ms: u64| {
        job(
            "m",
            JobOptions {
                priority,
                delay_ms,
                ..Default::default()
            },
        )
    };
    let (a, pb, c, d) = (with(0, 0), with(5, 0), with(0, 0), with(0, 60_000));
    let ids: Vec<String> = [&a, &pb, &c, &d].iter().map(|j| j.id.clone()).collect();
    for j in [a, pb, c, d] {
        b.queue.enqueue(j, GW).await.unwrap();
    }
    let listed = |v: Vec<crate::JobSnapshot>| v.into_iter().map(|s| s.job_id).collect::<Vec<_>>();
    let queued = listed(b.queue.list(JobState::Queued, 0, 10).await.unwrap());
    assert_eq!(queued, vec![ids[1].clone(), ids[0].clone(), ids[2].clone()]);
    assert_eq!(
        listed(b.queue.list(JobState::Queued, 1, 1).await.unwrap()),
        vec![ids[0].clone()]
    );
    assert_eq!(
        listed(b.queue.list(JobState::Delayed, 0, 10).await.unwrap()),
        vec![ids[3].clone()]
    );
    // The best job runs and dies; it is listed as failed, then retried from attempt 1.
    let claimed = claim_one(&*b.queue).await;
    assert_eq!(claimed.lease.job_id, ids[1]);
    assert_eq!(
        listed(b.queue.list(JobState::Active, 0, 10).await.unwrap()),
        vec![ids[1].clone()]
    );
    let failure = failed("bad", false);
    b.queue.fail(&claimed.lease, failure).await.unwrap();
    assert_eq!(
        listed(b.queue.list(JobState::Failed, 0, 10).await.unwrap()),
        vec![ids[1].clone()]
    );
    let r = b.queue.retry(&ids[1]).await.unwrap().unwrap();
    assert!(r.retried);
    assert_eq!(r.state, JobState::Queued);
    let snap = b.queue.snapshot(&ids[1]).await.unwrap().unwrap();
    assert_eq!((snap.state, snap.attempt), (JobState::Queued, 0));
    assert!(snap.error.is_none() && snap.finished_at.is_none());
    assert_eq!(b.queue.counts().await.unwrap().failed, 0);
    assert_eq!(b.queue.counts().await.unwrap().queued, 3);
    let again = b.queue.retry(&ids[1]).await.unwrap().unwrap();
    assert_eq!((again.retried, again.state), (false, JobState::Queued));
    assert!(b.queue.retry("nope").await.unwrap().is_none());
    // The retried job is claimable again (a worker blocked in claim is woken).
    let c2 = b
        .queue
        .claim("w", &methods(&["m"]), 3, LEASE, WAIT)
        .await
        .unwrap();
    assert_eq!(c2.len(), 3);
    assert_eq!(c2[0].attempt, 1);
    for cj in &c2 {
        b.queue.complete(&cj.lease, raw("1")).await.unwrap();
    }
    b.queue.cancel(&ids[3]).await.unwrap();
    // Purge by state and end time.
    let future = crate::now_ms() + 1000;
    assert_eq!(b.queue.purge(JobState::Failed, future).await.unwrap(), 0);
    assert_eq!(b.queue.purge(JobState::Completed, 0).await.unwrap(), 0);
    assert_eq!(b.queue.purge(JobState::Completed, future).await.unwrap(), 3);
    assert!(b.queue.snapshot(&ids[0]).await.unwrap().is_none());
    let counts = b.queue.counts().await.unwrap();
    assert_eq!((counts.completed, counts.cancelled), (0, 1));
    assert_eq!(
        listed(b.queue.list(JobState::Cancelled, 0, 10).await.unwrap()),
        vec![ids[3].clone()]
    );
    assert_eq!(b.queue.purge(JobState::Queued, future).await.unwrap(), 0);
}

/// `max_open_per_owner` refuses an owner's job past the cap, counts only jobs not yet ended
/// (completed, failed, cancelled and retried jobs all move the count), never limits other
/// owners or jobs without an owner, and still answers a duplicate submit.
pub async fn open_jobs_are_capped_per_owner(b: Backend) {
    let capped = |owner: &str| NewJob {
        owner: owner.into(),
        max_open_per_owner: 3,
        ..job("m", JobOptions::default())
    };
    let mut ids = Vec::new();
    for _ in 0..3 {
        let j = capped("u1");
        ids.push(j.id.clone());
        b.queue.enqueue(j, GW).await.unwrap();
    }
    let refused = b.queue.enqueue(capped("u1"), GW).await;
    assert!(
        matches!(refused, Err(crate::Error::OwnerFull)),
        "fourth open job of u1: {refused:?}"
    );
    // A resubmit of an existing job is answered, not refused.
    let dup = NewJob {
        id: ids[0].clone(),
        ..capped("u1")
    };
    assert!(b.queue.enqueue(dup, GW).await.unwrap().duplicate);
    // Other owners, ownerless jobs and uncapped submits are not limited by u1's count.
    b.queue.enqueue(capped("u2"), GW).await.unwrap();
    b.queue.enqueue(capped(""), GW).await.unwrap();
    let uncapped = NewJob {
        owner: "u3".into(),
        ..job("m", JobOptions::default())
    };
    b.queue.enqueue(uncapped, GW).await.unwrap();

    // Each way of ending a job frees a place: cancel...
    b.queue.cancel(&ids[0]).await.unwrap().unwrap();
    b.queue.enqueue(capped("u1"), GW).await.unwrap();
    assert!(matches!(
        b.queue.enqueue(capped("u1"), GW).await,
        Err(crate::Error::OwnerFull)
    ));
    // ...complete and fail (claims take the oldest first: ids[1], ids[2]).
    let c = b
        .queue
        .claim("w", &methods(&["m"]), 2, LEASE, WAIT)
        .await
        .unwrap();
    assert_eq!(c.len(), 2);
    b.queue.complete(&c[0].lease, raw("1")).await.unwrap();
    b.queue
        .fail(&c[1].lease, failed("bad", false))
        .await
        .unwrap();
    b.queue.enqueue(capped("u1"), GW).await.unwrap();
    let last = capped("u1");
    let last_id = last.id.clone();
    b.queue.enqueue(last, GW).await.unwrap();
    assert!(matches!(
        b.queue.enqueue(capped("u1"), GW).await,
        Err(crate::Error::OwnerFull)
    ));
    // A retried job is open again and counts (retry itself is an operator's act: not capped).
    assert!(b.queue.cancel(&last_id).await.unwrap().unwrap().cancelled);
    b.queue.retry(&c[1].lease.job_id).await.unwrap().unwrap();
    assert!(matches!(
        b.queue.enqueue(capped("u1"), GW).await,
        Err(crate::Error::OwnerFull)
    ));
}

/// A job handed back by a stopping worker is queued again at once, ahead of jobs queued after
/// it, with the interrupted attempt not counted; the old lease is dead.
pub async fn handed_back_jobs_keep_their_place(b: Backend) {
    let first = job("m", JobOptions::default());
    let second = job("m", JobOptions::default());
    let (a, z) = (first.id.clone(), second.id.clone());
    b.queue.enqueue(first, GW).await.unwrap();
    b.queue.enqueue(second, GW).await.unwrap();
    let c = claim_one(&*b.queue).await;
    assert_eq!(c.lease.job_id, a);
    b.queue.hand_back(&c.lease).await.unwrap();
    let s = b.queue.snapshot(&a).await.unwrap().unwrap();
    assert_eq!(s.state, JobState::Queued);
    assert_eq!(s.attempt, 0);
    assert!(matches!(
        b.queue.complete(&c.lease, raw("1")).await,
        Err(crate::Error::LeaseLost(_))
    ));
    assert!(matches!(
        b.queue.hand_back(&c.lease).await,
        Err(crate::Error::LeaseLost(_))
    ));
    let again = b
        .queue
        .claim("w2", &methods(&["m"]), 2, LEASE, WAIT)
        .await
        .unwrap();
    let ids: Vec<_> = again.iter().map(|j| j.lease.job_id.clone()).collect();
    assert_eq!(
        ids,
        vec![a.clone(), z],
        "the handed-back job keeps its place"
    );
    assert_eq!(
        again[0].attempt, 1,
        "the interrupted attempt is not counted"
    );
    b.queue.complete(&again[0].lease, raw("1")).await.unwrap();
    assert_eq!(
        b.queue.snapshot(&a).await.unwrap().unwrap().state,
        JobState::Completed
    );
}
