//! `jobcast serve`: the embedded store, the demo worker and the gateway in one process, until
//! SIGINT/SIGTERM; then a graceful drain.

use crate::{
    gateway::{self, GatewayArgs},
    settings::parse_duration,
};
use anyhow::Context;
use clap::Args;
use jobcast_core::{Bus, JobQueue};
use jobcast_embedded::{Embedded, EmbeddedConfig};
use jobcast_worker::{WorkerBuilder, demo};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// Flags of `jobcast serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Handlers the demo worker runs at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = jobcast_worker::DEFAULT_CONCURRENCY)]
    pub worker_concurrency: usize,
    /// How long ended jobs and their results are kept.
    #[arg(long, env = "JOBCAST_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub retention: Duration,
    /// Most jobs not yet ended; new calls get -32005 past it.
    #[arg(long, env = "JOBCAST_MAX_QUEUED", default_value_t = 1_000_000)]
    pub max_queued: usize,
    /// Most ended jobs kept; past it the oldest are purged before their retention ends.
    #[arg(long, env = "JOBCAST_MAX_ENDED", default_value_t = 1_000_000)]
    pub max_ended: usize,
    /// Memory for caching pages of the job store file, in MiB.
    #[arg(long, env = "JOBCAST_STORE_CACHE_MIB", default_value_t = 64)]
    pub store_cache_mib: usize,
}

/// Runs `serve`.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    gateway::init_logging();
    let gw = &args.gateway;
    let (secret, generated) = gw.secret.get_or_create()?;
    let (listener, local) = gw.bind().await?;

    let mut store = EmbeddedConfig::new(gw.secret.data_dir.join("jobs.redb"));
    store.retention = args.retention;
    store.max_open_jobs = args.max_queued;
    store.max_ended_jobs = args.max_ended;
    store.cache_bytes = args.store_cache_mib << 20;
    let embedded = Embedded::open(store).context("opening the job store")?;
    let queue: Arc<dyn JobQueue> = Arc::new(embedded.clone());
    let bus: Arc<dyn Bus> = Arc::new(embedded.clone());

    // Running jobs get the same drain time as connections; the rest are handed back to the
    // store (queued again, their attempt not counted) and run after the restart.
    let worker = demo::register(WorkerBuilder::new())
        .config(jobcast_worker::WorkerConfig {
            drain_grace: args.gateway.drain_timeout,
            ..Default::default()
        })
        .concurrency(args.worker_concurrency)
        .build(queue.clone());
    let worker_stop = CancellationToken::new();
    let worker_task = tokio::spawn(worker.run(worker_stop.clone()));
    // Serve only once the demo methods are announced, so the first call never gets -32601.
    for _ in 0..200 {
        if !queue.methods().await?.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let config = gw.config(secret, local)?;
    print_banner(&args, local, generated);
    let stop = CancellationToken::new();
    tokio::spawn(gateway::signals(stop.clone()));
    gateway::run(gw, config, listener, queue, bus, stop).await?;
    tracing::info!("gateway stopped; draining worker");
    worker_stop.cancel();
    // The worker ends within its grace, after handing back what it could not finish.
    let _ = worker_task.await;
    embedded.close().await;
    tracing::info!("stopped");
    Ok(())
}

fn print_banner(args: &ServeArgs, local: std::net::SocketAddr, generated: bool) {
    let exe = std::env::args().next().unwrap_or_else(|| "jobcast".into());
    let secret = &args.gateway.secret;
    let dir = secret.data_dir.display();
    let secret_note = if secret.jwt_secret.is_some() {
        "JWT secret: from --jwt-secret / JWT_SECRET".to_owned()
    } else if generated {
        format!("JWT secret: generated and kept in {dir}/jwt-secret")
    } else {
        format!("JWT secret: read from {dir}/jwt-secret")
    };
    let secret_flag = if secret.jwt_secret.is_some() {
        String::new()
    } else {
        format!(" --data-dir {dir}")
    };
    println!(
        "jobcast {ver} listening on {http}://{local} (WebSocket: {ws}://{local}/ws)\n  \
         data: {dir}/jobs.redb (ended jobs kept {ret:?})\n  \
         {secret_note}\n  \
         get a token:  {exe} token --sub alice{secret_flag}\n  \
         call a job:   {exe} call demo.progress '{{\"steps\":5,\"intervalMs\":200}}' --url {ws}://{local}/ws{secret_flag}\n  \
         from a browser console:\n    \
         const ws = new WebSocket('{ws}://{local}/ws?token=' + TOKEN); ws.onmessage = e => console.log(e.data);\n    \
         ws.onopen = () => ws.send(JSON.stringify({{jsonrpc:'2.0', id:1, method:'demo.echo', params:{{hello:'world'}}}}));",
        ver = env!("CARGO_PKG_VERSION"),
        ret = args.retention,
        http = args.gateway.scheme(),
        ws = if args.gateway.tls_cert.is_some() {
            "wss"
        } else {
            "ws"
        },
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
