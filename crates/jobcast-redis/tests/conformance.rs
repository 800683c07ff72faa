//! The backend conformance suite of jobcast-core, against a real redis-server.

use jobcast_core::conformance::{Backend, run_all};
use jobcast_redis::{RedisBackend, RedisConfig, testing::RedisServer};
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
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
