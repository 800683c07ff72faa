//! `jobcast call`: connect, call one method, show `job.progress` as a bar on stderr, print the
//! result JSON on stdout. Exit 0 on a result, 1 on a JSON-RPC error (printed on stderr).

use crate::settings::SecretArgs;
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use jobcast_client::{CallOptions, Client, ClientError, JobUpdate};
use serde_json::{Value, json};

/// Flags of `jobcast call`.
#[derive(Args, Debug)]
pub struct CallArgs {
    /// The method, e.g. demo.progress (or an rpc.* method).
    pub method: String,
    /// Params as JSON (object or array).
    pub params: Option<String>,
    /// Gateway WebSocket URL.
    #[arg(long, env = "JOBCAST_URL", default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Token to connect with; when absent one is minted for --sub with the configured secret.
    #[arg(long, env = "JOBCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// User id of the minted token.
    #[arg(long, default_value = "cli")]
    pub sub: String,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Client-chosen job id (idempotent submit).
    #[arg(long)]
    pub job_id: Option<String>,
    /// Priority 0-1000, higher first.
    #[arg(long)]
    pub priority: Option<u16>,
    /// Run no earlier than this many ms from now.
    #[arg(long)]
    pub delay_ms: Option<u64>,
    /// One attempt's time limit in ms.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Total attempts.
    #[arg(long)]
    pub attempts: Option<u32>,
    /// Backoff as JSON, e.g. '{"type":"exponential","delayMs":500}'.
    #[arg(long)]
    pub backoff: Option<String>,
}

/// Runs `call`; returns the exit code.
pub async fn run(args: CallArgs) -> anyhow::Result<u8> {
    let token = match &args.token {
        Some(t) => t.clone(),
        None => {
            let secret = args.secret.existing()?.context("no token: pass --token, or a secret (--jwt-secret, JWT_SECRET, or --data-dir of the server) to mint one")?;
            jobcast_gateway::auth::mint(&secret, &args.sub, 3600, None)
                .map_err(anyhow::Error::msg)?
        }
    };
    let params: Value = match &args.params {
        Some(p) => serde_json::from_str(p).context("PARAMS must be JSON")?,
        None => json!({}),
    };
    let client = Client::connect(&args.url, &token).await?;
    if args.method.starts_with("rpc.") {
        return Ok(print_outcome(client.request(&args.method, params).await));
    }
    let backoff = match &args.backoff {
        Some(b) => Some(serde_json::from_str(b).context("--backoff must be JSON")?),
        None => None,
    };
    let options = CallOptions {
        job_id: args.job_id.clone(),
        priority: args.priority,
        delay_ms: args.delay_ms,
        timeout_ms: args.timeout_ms,
        attempts: args.attempts,
        backoff,
    };
    let mut job = client.call(&args.method, params, &options)?;
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    while let Some(update) = job.next().await {
        match update {
            JobUpdate::Accepted {
                job_id,
                state,
                duplicate,
            } => {
                bar.set_message(format!(
                    "{job_id} {state}{}",
                    if duplicate { " (existing job)" } else { "" }
                ));
            }
            JobUpdate::Progress(p) => {
                let id = job.job_id.clone().unwrap_or_default();
                match p.as_f64() {
                    Some(n) => {
                        bar.set_position(n.clamp(0.0, 100.0) as u64);
                        bar.set_message(format!("{id} running"));
                    }
                    None => bar.set_message(format!("{id} {p}")),
                }
            }
            JobUpdate::Done(r) => {
                if r.is_ok() {
                    bar.set_position(100);
                }
                bar.finish_and_clear();
                return Ok(print_outcome(r.map_err(ClientError::Rpc)));
            }
        }
    }
    bar.finish_and_clear();
    anyhow::bail!("connection closed before the job ended")
}

fn print_outcome(r: Result<Value, ClientError>) -> u8 {
    match r {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            0
        }
        Err(ClientError::Rpc(e)) => {
            let mut err = json!({"code": e.code, "message": e.message});
            if let Some(d) = e.data {
                err["data"] = d;
            }
            eprintln!("{err}");
            1
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
