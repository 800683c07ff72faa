//! The backend conformance suite of jobcast-core, against a real redis-server.

use jobcast_core::conformance::{self, Backend, run_all};
use jobcast_redis::{RedisBackend, RedisConfig, testing::RedisServer};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_conforms() {
    let server = RedisServer::start().expect("redis-server must be installed (see .ci/run)");
    let n = AtomicUsize::new(0);
    run_all(|| {
        // A fresh queue (hash tag) per check, on the one server.
        let mut config = RedisConfig::new(server.url());
        config.queue = format!("conformance-{}", n.fetch_add(1, Ordering::SeqCst));
        async move {
            let b = RedisBackend::connect(config).await.unwrap();
            Backend {
                queue: Arc::new(b.clone()),
                bus: Arc::new(b),
            }
        }
    })
    .await;
}

/// The workers' tick purges the oldest ended jobs past the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_keeps_at_most_the_newest_ended_jobs() {
    let server = RedisServer::start().expect("redis-server must be installed (see .ci/run)");
    let mut config = RedisConfig::new(server.url());
    config.max_ended_jobs = conformance::ENDED_CAP;
    config.tick = Duration::from_millis(20);
    let b = RedisBackend::connect(config).await.unwrap();
    conformance::keeps_at_most_the_newest_ended_jobs(Backend {
        queue: Arc::new(b.clone()),
        bus: Arc::new(b),
    })
    .await;
}
