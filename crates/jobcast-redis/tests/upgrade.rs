//! Jobs stored by an earlier version of the scripts keep working after an upgrade.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use jobcast_core::{Error, JobQueue, NewJob, raw};
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

/// Before jobs said whether they count against their owner's cap (field `oc`), every job did;
/// such a job still gives its place back when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_from_before_the_owner_flag_frees_its_owners_place() {
    let server = RedisServer::start().expect("redis-server must be installed (see .ci/run)");
    let b = RedisBackend::connect(RedisConfig::new(server.url()))
        .await
        .unwrap();
    b.enqueue(capped("old"), "gw").await.unwrap();
    // Make it look as an earlier version stored it.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let removed: i64 = redis::cmd("HDEL")
        .arg("{jobcast}:j:old")
        .arg("oc")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(removed, 1, "the job hash has an oc field to remove");
    assert!(matches!(
        b.enqueue(capped("new"), "gw").await,
        Err(Error::OwnerFull)
    ));
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
    b.enqueue(capped("new"), "gw").await.unwrap();
}
