//! The distributed deployment on Redis: `jobcast gateway` (any number) and `jobcast worker`
//! (any number), sharing one Redis.

use crate::{
    gateway::{self, GatewayArgs},
    settings::parse_duration,
};
use anyhow::Context;
use clap::Args;
use jobcast_core::{Bus, JobQueue};
use jobcast_redis::{RedisBackend, RedisConfig};
use jobcast_worker::{WorkerBuilder, WorkerConfig, demo};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// Where the shared queue lives.
#[derive(Args, Debug)]
pub struct RedisArgs {
    /// Redis URL.
    #[arg(
        long = "redis",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Queue name (the hash tag of every key).
    #[arg(long, env = "QUEUE_NAME", default_value = "jobcast")]
    pub queue: String,
    /// How long ended jobs and their results are kept.
    #[arg(long, env = "JOBCAST_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub retention: Duration,
    /// Most jobs not yet ended; new calls get -32005 past it.
    #[arg(long, env = "JOBCAST_MAX_QUEUED", default_value_t = 1_000_000)]
    pub max_queued: usize,
    /// Most ended jobs kept; past it the oldest are purged before their retention ends.
    #[arg(long, env = "JOBCAST_MAX_ENDED", default_value_t = 1_000_000)]
    pub max_ended: usize,
}

impl RedisArgs {
    async fn connect(&self) -> anyhow::Result<RedisBackend> {
        let mut c = RedisConfig::new(&self.redis_url);
        c.queue = self.queue.clone();
        c.retention = self.retention;
        c.max_open_jobs = self.max_queued;
        c.max_ended_jobs = self.max_ended;
        RedisBackend::connect(c)
            .await
            .with_context(|| format!("connecting to {}", self.redis_url))
    }
}

/// Flags of `jobcast gateway`.
#[derive(Args, Debug)]
pub struct GatewayCmdArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// Runs `gateway`.
pub async fn gateway(args: GatewayCmdArgs) -> anyhow::Result<()> {
    gateway::init_logging();
    let gw = &args.gateway;
    // With public keys the secret verifies nothing; without them every gateway needs it.
    let secret = match gw.secret.existing()? {
        Some(s) => s,
        None if gw.uses_public_keys() => Vec::new(),
        None => anyhow::bail!(
            "a gateway needs the JWT secret every gateway shares (--jwt-secret or JWT_SECRET), or \
             public keys (--jwt-public-key, --jwks-file)"
        ),
    };
    let backend = args.redis.connect().await?;
    let (listener, local) = gw.bind().await?;
    let config = gw.config(secret, local)?;
    let scheme = gw.scheme();
    println!(
        "jobcast gateway {} listening on {scheme}://{local} (WebSocket: {}://{local}/ws), queue {:?} on {}",
        config.server_id,
        if scheme == "https" { "wss" } else { "ws" },
        args.redis.queue,
        args.redis.redis_url
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let queue: Arc<dyn JobQueue> = Arc::new(backend.clone());
    let bus: Arc<dyn Bus> = Arc::new(backend.clone());
    let stop = CancellationToken::new();
    tokio::spawn(gateway::signals(stop.clone()));
    gateway::run(gw, config, listener, queue, bus, stop).await?;
    backend.shutdown();
    Ok(())
}

/// Flags of `jobcast worker`.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Handlers running at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = jobcast_worker::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Serve only these demo methods (comma-separated) [default: all].
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Lease length; renewed every third of it. A crashed worker's jobs run again after it.
    #[arg(long, env = "JOBCAST_LEASE", default_value = "30s", value_parser = parse_duration)]
    pub lease: Duration,
    /// On SIGTERM, how long running jobs get to finish; the rest are handed back to the queue
    /// and run on another worker at once.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Serve this worker's Prometheus metrics at `http://ADDR/metrics` (no authentication:
    /// bind it to a private address).
    #[arg(long, env = "JOBCAST_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Serves `/metrics` for a process that has no gateway (a worker).
async fn serve_metrics(addr: std::net::SocketAddr) -> anyhow::Result<std::net::SocketAddr> {
    jobcast_gateway::metrics::handle();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-listen {addr}"))?;
    let local = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                jobcast_gateway::metrics::render(),
            )
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(local)
}

/// Runs `worker`.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    gateway::init_logging();
    let backend = args.redis.connect().await?;
    let mut builder = demo::register(WorkerBuilder::new());
    if !args.methods.is_empty() {
        builder = builder.only(&args.methods);
    }
    let methods = builder.method_names();
    if methods.is_empty() {
        anyhow::bail!("--methods matched no demo method");
    }
    let config = WorkerConfig {
        concurrency: args.concurrency.max(1),
        lease: args.lease,
        drain_grace: args.drain_timeout,
        ..WorkerConfig::default()
    };
    let worker = builder.config(config).build(Arc::new(backend.clone()));
    let metrics = match args.metrics_listen {
        Some(addr) => format!(", metrics on http://{}/metrics", serve_metrics(addr).await?),
        None => String::new(),
    };
    println!(
        "jobcast worker {} serving {} on {}{metrics}",
        worker.id(),
        methods.join(","),
        args.redis.redis_url
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let stop = CancellationToken::new();
    tokio::spawn(gateway::signals(stop.clone()));
    worker.run(stop).await;
    backend.shutdown();
    Ok(())
}
