//! `jobcast serve`: the embedded store, the demo worker and the gateway in one process, until
//! SIGINT/SIGTERM; then a graceful drain.

use crate::settings::{SecretArgs, parse_duration};
use anyhow::Context;
use clap::Args;
use jobcast_core::{Bus, JobQueue};
use jobcast_embedded::{Embedded, EmbeddedConfig};
use jobcast_gateway::{Gateway, GatewayConfig, auth::AuthConfig};
use jobcast_worker::{WorkerBuilder, demo};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// Flags of `jobcast serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080, or $HOST:$PORT when PORT is set].
    #[arg(long, env = "JOBCAST_LISTEN")]
    pub listen: Option<String>,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// API keys for the server API (`Authorization: Bearer <key>` on /stats); comma-separated.
    #[arg(long, env = "API_KEY", value_delimiter = ',', hide_env_values = true)]
    pub api_key: Vec<String>,
    /// Jobs the demo worker runs at once.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 64)]
    pub worker_concurrency: usize,
    /// WebSocket ping interval in ms; silent peers are closed after two.
    #[arg(long, env = "HEARTBEAT_MS", default_value_t = 25_000)]
    pub heartbeat_ms: u64,
    /// This server's id [default: gw-<port>].
    #[arg(long, env = "SERVER_ID")]
    pub server_id: Option<String>,
    /// How long ended jobs and their results are kept.
    #[arg(long, env = "JOBCAST_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub retention: Duration,
    /// Largest inbound WebSocket message in bytes (larger: close 1009).
    #[arg(long, env = "MAX_PAYLOAD", default_value_t = 1 << 20)]
    pub max_message_bytes: usize,
    /// Most jobs not yet ended; new calls get -32005 past it.
    #[arg(long, env = "JOBCAST_MAX_QUEUED", default_value_t = 1_000_000)]
    pub max_queued: usize,
    /// Accept tokens without `exp`.
    #[arg(long, env = "JWT_ALLOW_NO_EXP")]
    pub allow_no_exp: bool,
    /// Required token audience.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Required token issuer.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// On shutdown, how long connections and running jobs get to finish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

fn listen_addr(args: &ServeArgs) -> String {
    if let Some(l) = &args.listen {
        return l.clone();
    }
    match std::env::var("PORT") {
        Ok(port) if !port.is_empty() => {
            let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
            format!("{host}:{port}")
        }
        _ => "127.0.0.1:8080".into(),
    }
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs `serve`.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging();
    let (secret, generated) = args.secret.get_or_create()?;
    let addr = listen_addr(&args);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    let server_id = args
        .server_id
        .clone()
        .unwrap_or_else(|| format!("gw-{}", local.port()));

    let mut store = EmbeddedConfig::new(args.secret.data_dir.join("jobs.redb"));
    store.retention = args.retention;
    store.max_open_jobs = args.max_queued;
    let embedded = Embedded::open(store).context("opening the job store")?;
    let queue: Arc<dyn JobQueue> = Arc::new(embedded.clone());
    let bus: Arc<dyn Bus> = Arc::new(embedded.clone());

    let stop = CancellationToken::new();
    let worker = demo::register(WorkerBuilder::new())
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

    let mut auth = AuthConfig::hmac(secret);
    auth.allow_no_exp = args.allow_no_exp;
    auth.audience = args.jwt_audience.clone();
    auth.issuer = args.jwt_issuer.clone();
    let mut config = GatewayConfig::new(server_id, auth);
    config.heartbeat = Duration::from_millis(args.heartbeat_ms.max(100));
    config.max_message_bytes = args.max_message_bytes;
    config.api_keys = args
        .api_key
        .iter()
        .filter(|k| !k.is_empty())
        .cloned()
        .collect();
    let gateway = Gateway::new(config, queue.clone(), bus)?;

    print_banner(&args, local, generated);
    tokio::spawn(signals(stop.clone()));
    gateway
        .serve(listener, stop.clone(), args.drain_timeout)
        .await?;
    tracing::info!("gateway stopped; draining worker");
    worker_stop.cancel();
    let _ = tokio::time::timeout(args.drain_timeout, worker_task).await;
    embedded.close().await;
    tracing::info!("stopped");
    Ok(())
}

fn print_banner(args: &ServeArgs, local: std::net::SocketAddr, generated: bool) {
    let exe = std::env::args().next().unwrap_or_else(|| "jobcast".into());
    let dir = args.secret.data_dir.display();
    let secret_note = if args.secret.jwt_secret.is_some() {
        "JWT secret: from --jwt-secret / JWT_SECRET".to_owned()
    } else if generated {
        format!("JWT secret: generated and kept in {dir}/jwt-secret")
    } else {
        format!("JWT secret: read from {dir}/jwt-secret")
    };
    let secret_flag = if args.secret.jwt_secret.is_some() {
        String::new()
    } else {
        format!(" --data-dir {dir}")
    };
    println!(
        "jobcast {ver} listening on http://{local} (WebSocket: ws://{local}/ws)\n  \
         data: {dir}/jobs.redb (ended jobs kept {ret:?})\n  \
         {secret_note}\n  \
         get a token:  {exe} token --sub alice{secret_flag}\n  \
         call a job:   {exe} call demo.progress '{{\"steps\":5,\"intervalMs\":200}}' --url ws://{local}/ws{secret_flag}\n  \
         from a browser console:\n    \
         const ws = new WebSocket('ws://{local}/ws?token=' + TOKEN); ws.onmessage = e => console.log(e.data);\n    \
         ws.onopen = () => ws.send(JSON.stringify({{jsonrpc:'2.0', id:1, method:'demo.echo', params:{{hello:'world'}}}}));",
        ver = env!("CARGO_PKG_VERSION"),
        ret = args.retention,
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

async fn signals(stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested; draining");
    stop.cancel();
}
