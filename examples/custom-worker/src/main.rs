//! Example: a custom job method served by your own worker, end to end.
//!
//! `text.wordcount` takes `{"text": "...", "top": 3}`, declares a JSON Schema for its params
//! (so a gateway refuses bad calls with -32602 before a job exists), reports progress while
//! it works, and returns the most frequent words. The same worker runs two ways:
//!
//! **In one process** with the embedded store and a gateway, like `jobcast serve` does for the
//! demo methods:
//!
//! ```sh
//! cargo run -p custom-worker -- 127.0.0.1:8090
//! # prints the address and a token; then, from another shell:
//! jobcast call text.wordcount '{"text":"a b a c a b"}' --url ws://127.0.0.1:8090/ws --token TOKEN
//! ```
//!
//! **As a worker process on Redis**, beside any number of `jobcast gateway`s and other
//! workers (it announces `text.wordcount`, so every gateway accepts calls to it):
//!
//! ```sh
//! jobcast gateway --redis redis://127.0.0.1:6379 --jwt-secret s3cret &
//! cargo run -p custom-worker -- --redis redis://127.0.0.1:6379
//! JWT_SECRET=s3cret jobcast call text.wordcount '{"text":"a b a c a b"}'
//! ```

use jobcast_core::{Bus, JobQueue};
use jobcast_embedded::{Embedded, EmbeddedConfig};
use jobcast_gateway::{Gateway, GatewayConfig, auth::AuthConfig};
use jobcast_redis::{RedisBackend, RedisConfig};
use jobcast_worker::{Context, HandlerError, WorkerBuilder};
use serde::Deserialize;
use serde_json::json;
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
struct WordCount {
    text: String,
    #[serde(default = "default_top")]
    top: usize,
}

fn default_top() -> usize {
    3
}

/// The handler: plain async Rust with typed params.
async fn word_count(ctx: Context, p: WordCount) -> Result<serde_json::Value, HandlerError> {
    let words: Vec<String> = p
        .text
        .split_whitespace()
        .map(|w| w.to_lowercase())
        .collect();
    if words.is_empty() {
        // Retrying cannot help: fail at once whatever `attempts` says.
        return Err(HandlerError::fatal("no words in text"));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (i, w) in words.iter().enumerate() {
        *counts.entry(w.clone()).or_default() += 1;
        if i % 1000 == 999 {
            ctx.progress((i + 1) * 100 / words.len()).await?;
        }
    }
    let mut top: Vec<(String, usize)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(p.top);
    ctx.progress(100).await?;
    Ok(json!({"words": words.len(), "top": top}))
}

/// The worker with the custom method registered.
fn worker() -> WorkerBuilder {
    WorkerBuilder::new().method_with_schema(
        "text.wordcount",
        json!({"type": "object", "required": ["text"],
               "properties": {"text": {"type": "string", "maxLength": 1_000_000},
                              "top": {"type": "integer", "minimum": 1, "maximum": 100}}}),
        word_count,
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, url] if flag == "--redis" => on_redis(url).await,
        [] => in_one_process("127.0.0.1:8090").await,
        [listen] => in_one_process(listen).await,
        _ => anyhow::bail!("usage: custom-worker [LISTEN_ADDR] | custom-worker --redis URL"),
    }
}

/// Runs only the worker, taking `text.wordcount` jobs from the queue in Redis.
async fn on_redis(url: &str) -> anyhow::Result<()> {
    let backend = RedisBackend::connect(RedisConfig::new(url)).await?;
    let worker = worker().concurrency(8).build(Arc::new(backend.clone()));
    println!("worker {} serving text.wordcount on {url}", worker.id());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    // On Ctrl-C: stop claiming, let running jobs finish, then return.
    worker.run(stop).await;
    backend.shutdown();
    Ok(())
}

/// Runs the worker, the embedded store and a gateway on `listen`, in this process.
async fn in_one_process(listen: &str) -> anyhow::Result<()> {
    let data = tempdir_path();
    let store = Embedded::open(EmbeddedConfig::new(data.join("jobs.redb")))?;
    let queue: Arc<dyn JobQueue> = Arc::new(store.clone());
    let bus: Arc<dyn Bus> = Arc::new(store.clone());

    let stop = CancellationToken::new();
    tokio::spawn(
        worker()
            .concurrency(8)
            .build(queue.clone())
            .run(stop.clone()),
    );
    while queue.methods().await?.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let secret = b"example-secret".to_vec();
    let token = jobcast_gateway::auth::mint(&secret, "example-user", 3600, None)
        .map_err(anyhow::Error::msg)?;
    let gateway = Gateway::new(
        GatewayConfig::new("example", AuthConfig::hmac(secret)),
        queue,
        bus,
    )?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "listening on ws://{}/ws token {token}",
        listener.local_addr()?
    );
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.cancel();
    });
    gateway.serve(listener, stop, Duration::from_secs(5)).await;
    store.close().await;
    Ok(())
}

fn tempdir_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("jobcast-example-{}", std::process::id()))
}
