//! Jobs stored by an earlier version of the scripts keep working after an upgrade.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jobcast_core::conformance::claim_one;
use jobcast_core::{AttemptFailure, Error, FailOutcome, JobQueue, JobState, NewJob, raw};
use jobcast_redis::{RedisBackend, RedisConfig, testing::RedisServer};
use std::time::Duration;

fn capped(id: &str) -> NewJob {
    NewJob {
        id: id.into(),
        method: "m".into(),
        params: raw("[1]"),
        owner: "u".into(),
        request_id: None,
        options: Default::default(),
        max_open_per_owner: 1,
    }
}

/// Stores queued job `id` of method `m` and owner `u` as the enqueue script did before the
/// job's fixed part became one field `d`: a field each, `oc` when given (before `oc` existed,
/// every job counted against its owner), and counted in the open-jobs counters.
async fn store_old_job(conn: &mut redis::aio::MultiplexedConnection, id: &str, oc: Option<&str>) {
    let jk = format!("{{jobcast}}:j:{id}");
    let mut hset = redis::cmd("HSET");
    hset.arg(&jk);
    for (k, v) in [
        ("s", "queued"),
        ("tok", ""),
        ("a", "0"),
        ("g", "gw"),
        ("o", "u"),
        ("m", "m"),
        ("p", "[1]"),
        ("max", "3"),
        ("tmo", "5000"),
        ("ra", "1000"),
        ("seq", "1"),
        ("pr", "0"),
        ("r", "\"req-7\""),
        ("bkt", "fixed"),
        ("bkd", "0"),
        ("bkj", "0"),
        ("st", "0"),
        ("c", "1000"),
    ] {
        hset.arg(k).arg(v);
    }
    if let Some(oc) = oc {
        hset.arg("oc").arg(oc);
    }
    let counted = oc != Some("0");
    let mut p = redis::pipe();
    p.add_command(hset)
        .cmd("ZADD")
        .arg("{jobcast}:ready:m")
        .arg(1000 * 4_398_046_511_104u64 + 1)
        .arg(id)
        .cmd("INCRBY")
        .arg("{jobcast}:open")
        .arg(1);
    if counted {
        p.cmd("HINCRBY").arg("{jobcast}:owners").arg("u").arg(1);
    }
    let () = p.query_async(conn).await.unwrap();
}

async fn setup() -> (RedisServer, RedisBackend, redis::aio::MultiplexedConnection) {
    let server = RedisServer::start().expect("redis-server must be installed (see .ci/run)");
    let b = RedisBackend::connect(RedisConfig::new(server.url()))
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    (server, b, conn)
}

/// Before jobs said whether they count against their owner's cap (field `oc`), every job did;
/// such a job still gives its place back when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_from_before_the_owner_flag_frees_its_owners_place() {
    let (_server, b, mut conn) = setup().await;
    store_old_job(&mut conn, "old", None).await;
    assert!(matches!(
        b.enqueue(capped("new"), "gw").await,
        Err(Error::OwnerFull)
    ));
    let c = claim_one(&b).await;
    b.complete(&c.lease, raw("1")).await.unwrap();
    b.enqueue(capped("new"), "gw").await.unwrap();
}

/// A job stored with a field each (before the fixed part became `d`) is read whole: by a
/// snapshot, a resubmission, a claim (its attempts and timeout) and a failed attempt (its
/// attempts and backoff), and its end is not counted against its owner (`oc` = 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stored_a_field_each_is_read_whole() {
    let (_server, b, mut conn) = setup().await;
    store_old_job(&mut conn, "old", Some("0")).await;

    let s = b.snapshot("old").await.unwrap().unwrap();
    assert_eq!(
        (s.owner.as_str(), s.attempts, s.created_at, s.state),
        ("u", 3, 1000, JobState::Queued)
    );
    assert_eq!(s.request_id.unwrap().as_json(), "\"req-7\"");
    let mut again = capped("old");
    again.max_open_per_owner = 0;
    let dup = b.enqueue(again, "gw").await.unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.owner, "u");

    let c = claim_one(&b).await;
    assert_eq!(
        (c.attempt, c.attempts, c.timeout),
        (1, 3, Some(Duration::from_millis(5000)))
    );
    let failed = AttemptFailure::Error {
        message: "boom".into(),
        retryable: true,
    };
    assert!(matches!(
        b.fail(&c.lease, failed).await.unwrap(),
        FailOutcome::Retrying { .. }
    ));
    let c = claim_one(&b).await;
    assert_eq!(c.attempt, 2);
    b.complete(&c.lease, raw("1")).await.unwrap();
    let owners: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
        .arg("{jobcast}:owners")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(owners.is_empty(), "nothing counted: {owners:?}");
}

/// Stores job `id` as ended in `state` at `at` ms the way versions before the ended log did:
/// in the sorted set `{q}:ended`, counted in the end counts.
async fn store_old_end(
    conn: &mut redis::aio::MultiplexedConnection,
    id: &str,
    state: &str,
    at: u64,
) {
    let () = redis::pipe()
        .cmd("HSET")
        .arg(format!("{{jobcast}}:j:{id}"))
        .arg(&[
            ("s", state),
            ("g", "gw"),
            ("m", "m"),
            ("p", "[1]"),
            ("pr", "0"),
        ])
        .arg("d")
        .arg("[1,null,0,0,0,1000]")
        .arg("u")
        .arg("u")
        .arg("f")
        .arg(at)
        .cmd("ZADD")
        .arg("{jobcast}:ended")
        .arg(at)
        .arg(id)
        .cmd("HINCRBY")
        .arg("{jobcast}:ends")
        .arg(state)
        .arg(1)
        .query_async(conn)
        .await
        .unwrap();
}

async fn in_old_set(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg("{jobcast}:ended")
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap()
}

/// Waits (up to 5 s) until the workers' tick has moved every job out of the old sorted set.
async fn old_set_emptied(conn: &mut redis::aio::MultiplexedConnection) {
    for _ in 0..250 {
        if in_old_set(conn).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the old sorted set was not moved to the log");
}

/// Jobs ended before the ended log (in the sorted set `{q}:ended`) move to the log's head, in
/// the order they ended, and are then listed, retried and purged like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_ended_before_the_log_move_to_its_head() {
    let (_server, b, mut conn) = setup().await;
    // Within the retention, which the tick (started by the claim below) applies.
    let now = jobcast_core::now_ms();
    store_old_end(&mut conn, "old-1", "completed", now - 3000).await;
    store_old_end(&mut conn, "old-2", "completed", now - 2000).await;
    store_old_end(&mut conn, "old-f", "failed", now - 1000).await;
    let mut new = capped("new");
    new.max_open_per_owner = 0;
    b.enqueue(new, "gw").await.unwrap();
    let c = claim_one(&b).await;
    b.complete(&c.lease, raw("1")).await.unwrap();
    old_set_emptied(&mut conn).await;

    let listed =
        |v: Vec<jobcast_core::JobSnapshot>| v.into_iter().map(|s| s.job_id).collect::<Vec<_>>();
    assert_eq!(
        listed(b.list(JobState::Completed, 0, 10).await.unwrap()),
        ["old-1", "old-2", "new"]
    );
    assert_eq!(
        listed(b.list(JobState::Completed, 1, 2).await.unwrap()),
        ["old-2", "new"]
    );
    assert_eq!(b.counts().await.unwrap().completed, 3);

    assert!(b.retry("old-f").await.unwrap().unwrap().retried);
    assert!(listed(b.list(JobState::Failed, 0, 10).await.unwrap()).is_empty());
    assert_eq!(b.counts().await.unwrap().failed, 0);

    assert_eq!(b.purge(JobState::Completed, now - 2500).await.unwrap(), 1);
    assert!(b.snapshot("old-1").await.unwrap().is_none());
    assert_eq!(
        listed(b.list(JobState::Completed, 0, 10).await.unwrap()),
        ["old-2", "new"]
    );
    assert_eq!(b.counts().await.unwrap().completed, 2);
}

/// Past the cap, the tick purges the oldest first: the jobs of the old sorted set, which ended
/// before any in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_sets_jobs_are_purged_first() {
    let server = RedisServer::start().expect("redis-server must be installed (see .ci/run)");
    let mut config = RedisConfig::new(server.url());
    config.max_ended_jobs = 2;
    config.tick = Duration::from_millis(20);
    let b = RedisBackend::connect(config).await.unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let now = jobcast_core::now_ms();
    store_old_end(&mut conn, "old-1", "completed", now - 2000).await;
    store_old_end(&mut conn, "old-2", "failed", now - 1000).await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let mut j = capped(&format!("new-{i}"));
        j.max_open_per_owner = 0;
        ids.push(j.id.clone());
        b.enqueue(j, "gw").await.unwrap();
        // The first claim starts the worker's tick.
        let c = claim_one(&b).await;
        b.complete(&c.lease, raw("1")).await.unwrap();
    }
    let mut left = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left.clear();
        for id in ["old-1", "old-2", "new-0", "new-1"] {
            if b.snapshot(id).await.unwrap().is_some() {
                left.push(id);
            }
        }
        if left.len() == 2 {
            break;
        }
    }
    assert_eq!(left, ["new-0", "new-1"]);
    assert!(in_old_set(&mut conn).await.is_empty());
    let counts = b.counts().await.unwrap();
    assert_eq!((counts.completed, counts.failed), (2, 0));
}
