//! The ended log (`lua/prelude.lua`) under an operator's purge while workers tick.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jobcast_core::{JobQueue, JobState, NewJob, now_ms, raw};
use jobcast_redis::{RedisBackend, RedisConfig, testing::RedisServer};
use std::time::Duration;

/// A purge walks the log in batches and leaves stale entries, which the tick drops from the
/// log's head meanwhile: positions that moved with the head made the next batch skip as many
/// entries as had been dropped, and those jobs stayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_misses_nothing_while_the_tick_drops_the_logs_head() {
    let server = RedisServer::start().expect("redis-server must be installed (see .ci/run)");
    let mut config = RedisConfig::new(server.url());
    config.tick = Duration::from_millis(1);
    let b = RedisBackend::connect(config).await.unwrap();
    // Several of the purge's batches (500 entries each).
    const N: u64 = 3000;
    for i in 0..N {
        let id = format!("c-{i}");
        let job = NewJob {
            id: id.clone(),
            method: "m".into(),
            params: raw("1"),
            owner: "u".into(),
            request_id: None,
            options: Default::default(),
            max_open_per_owner: 0,
        };
        b.enqueue(job, "gw").await.unwrap();
        assert!(b.cancel(&id).await.unwrap().unwrap().cancelled);
    }
    // A claim starts the worker's tick, every millisecond here.
    let none = b
        .claim(
            "w",
            &["none".into()],
            1,
            Duration::from_secs(30),
            Duration::from_millis(5),
        )
        .await
        .unwrap();
    assert!(none.is_empty());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(b.purge(JobState::Cancelled, now_ms() + 1).await.unwrap(), N);
    assert_eq!(b.counts().await.unwrap().cancelled, 0);
    assert_eq!(b.list(JobState::Cancelled, 0, 10).await.unwrap().len(), 0);
}
