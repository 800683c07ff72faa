//! The Redis backend keeps at most the newest `max_ended_jobs` ended jobs: the workers' tick
//! purges the oldest past it, before their retention ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jobcast_core::{JobQueue, NewJob, raw};
use jobcast_redis::{RedisBackend, RedisConfig, testing::RedisServer};
use std::time::Duration;

fn job(id: &str) -> NewJob {
    NewJob {
        id: id.into(),
        method: "m".into(),
        params: raw("[1]"),
        owner: "u".into(),
        request_id: None,
        options: Default::default(),
        max_open_per_owner: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_at_most_the_newest_ended_jobs() {
    let server = RedisServer::start().expect("redis-server must be installed (see .ci/run)");
    let mut config = RedisConfig::new(server.url());
    config.max_ended_jobs = 3;
    config.tick = Duration::from_millis(20);
    let b = RedisBackend::connect(config).await.unwrap();
    for i in 0..5 {
        b.enqueue(job(&format!("j{i}")), "gw").await.unwrap();
        let c = b
            .claim(
                "w",
                &["m".into()],
                1,
                Duration::from_secs(30),
                Duration::from_secs(1),
            )
            .await
            .unwrap();
        b.complete(&c[0].lease, raw("1")).await.unwrap();
        // Distinct end times, so "oldest" is well defined.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let mut left = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left.clear();
        for i in 0..5 {
            if b.snapshot(&format!("j{i}")).await.unwrap().is_some() {
                left.push(i);
            }
        }
        if left.len() == 3 {
            break;
        }
    }
    assert_eq!(left, [2, 3, 4], "the two oldest go");
    assert_eq!(b.counts().await.unwrap().completed, 3);
}
