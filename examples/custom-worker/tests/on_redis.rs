//! The example worker as a separate process on a real redis-server: a gateway on the same
//! Redis learns `text.wordcount` from the worker's announcement and runs calls through it.

use jobcast_client::{CallOptions, Client, ClientError};
use jobcast_core::{Bus, JobQueue};
use jobcast_gateway::{Gateway, GatewayConfig, auth::AuthConfig};
use jobcast_redis::{RedisBackend, RedisConfig, testing::RedisServer};
use serde_json::json;
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};
use tokio_util::sync::CancellationToken;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn custom_worker_serves_a_gateway_over_redis() {
    let redis = RedisServer::start().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_custom-worker"))
        .args(["--redis", &redis.url()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let banner = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let _worker = Killed(child);
    assert!(banner.contains("serving text.wordcount"), "{banner}");

    // A gateway on the same Redis (the library `jobcast gateway` runs).
    let backend = RedisBackend::connect(RedisConfig::new(redis.url()))
        .await
        .unwrap();
    let queue: Arc<dyn JobQueue> = Arc::new(backend.clone());
    let bus: Arc<dyn Bus> = Arc::new(backend.clone());
    let secret = b"example-secret".to_vec();
    let token = jobcast_gateway::auth::mint(&secret, "someone", 600, None).unwrap();
    let gateway = Gateway::new(
        GatewayConfig::new("gw-test", AuthConfig::hmac(secret)),
        queue.clone(),
        bus,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(gateway.serve(listener, stop.clone(), Duration::from_secs(2)));

    // The worker's announcement reaches the method registry.
    let mut announced = false;
    for _ in 0..500 {
        if queue
            .methods()
            .await
            .unwrap()
            .iter()
            .any(|m| m.name == "text.wordcount")
        {
            announced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(announced, "the worker never announced text.wordcount");

    let client = Client::connect(&url, &token).await.unwrap();
    let methods = client.request("rpc.methods", json!({})).await.unwrap();
    assert_eq!(methods["methods"][0]["name"], "text.wordcount");
    assert_eq!(
        methods["methods"][0]["paramsSchema"]["required"],
        json!(["text"])
    );
    let job = client
        .call(
            "text.wordcount",
            json!({"text": "b a b c b a", "top": 2}),
            &CallOptions::default(),
        )
        .unwrap();
    assert_eq!(
        job.result().await.unwrap(),
        json!({"words": 6, "top": [["b", 3], ["a", 2]]})
    );
    // The worker's schema is enforced by this gateway, in another process.
    let bad = client
        .call("text.wordcount", json!({"top": 2}), &CallOptions::default())
        .unwrap();
    match bad.result().await {
        Err(ClientError::Rpc(e)) => assert_eq!(e.code, -32602),
        other => panic!("{other:?}"),
    }
    stop.cancel();
    let _ = server.await;
    backend.shutdown();
}
