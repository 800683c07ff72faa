//! `jobcast jobs`: the operator's view of the queue through a gateway's server API (so it works
//! the same on the embedded store, which only its `serve` process may open, and on Redis):
//! list jobs by state, show one, retry a failed one, cancel, purge ended ones.

use crate::http_client::HttpConn;
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;

/// Flags of `jobcast jobs`.
#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Base URL of a gateway's HTTP server.
    #[arg(
        long,
        env = "JOBCAST_HTTP_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// API key of the server API.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Jobs in one state, in queue order (ended ones oldest first).
    List {
        /// queued, delayed, active, completed, failed or cancelled.
        #[arg(long, default_value = "failed")]
        state: String,
        /// Most jobs shown.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Jobs skipped first (paging).
        #[arg(long, default_value_t = 0)]
        offset: usize,
    },
    /// One job's snapshot.
    Show {
        /// The job id.
        job_id: String,
    },
    /// Run a failed or cancelled job again from its first attempt.
    Retry {
        /// The job id.
        job_id: String,
    },
    /// Cancel a job (a running one is stopped).
    Cancel {
        /// The job id.
        job_id: String,
    },
    /// Delete ended jobs in one state.
    Purge {
        /// completed, failed or cancelled.
        #[arg(long)]
        state: String,
        /// Only those that ended at least this long ago (30s, 10m, 24h, 7d).
        #[arg(long)]
        older_than: Option<String>,
    },
}

/// Runs `jobs`; returns the exit code (1 when the server refused).
pub async fn run(args: JobsArgs) -> anyhow::Result<u8> {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let (method, path) = match &args.command {
        JobsCommand::List {
            state,
            limit,
            offset,
        } => (
            "GET",
            format!(
                "/v1/jobs?state={}&limit={limit}&offset={offset}",
                enc(state)
            ),
        ),
        JobsCommand::Show { job_id } => ("GET", format!("/v1/jobs/{}", enc(job_id))),
        JobsCommand::Retry { job_id } => ("POST", format!("/v1/jobs/{}/retry", enc(job_id))),
        JobsCommand::Cancel { job_id } => ("DELETE", format!("/v1/jobs/{}", enc(job_id))),
        JobsCommand::Purge { state, older_than } => {
            let mut p = format!("/v1/jobs?state={}", enc(state));
            if let Some(age) = older_than {
                p.push_str(&format!("&olderThan={}", enc(age)));
            }
            ("DELETE", p)
        }
    };
    let (status, body) = request(&args.url, method, &path, &args.api_key).await?;
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    if !(200..300).contains(&status) {
        eprintln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(1);
    }
    match (&args.command, args.json) {
        (JobsCommand::List { .. }, false) => print_table(&v),
        (JobsCommand::Show { .. }, _) | (_, true) => {
            println!("{}", serde_json::to_string_pretty(&v)?)
        }
        _ => println!("{v}"),
    }
    Ok(0)
}

fn print_table(v: &Value) {
    let jobs = v["jobs"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<28} {:<10} {:<18} {:>7} {:<14} error",
        "JOB", "STATE", "METHOD", "ATTEMPT", "USER"
    );
    for j in &jobs {
        println!(
            "{:<28} {:<10} {:<18} {:>7} {:<14} {}",
            j["jobId"].as_str().unwrap_or(""),
            j["state"].as_str().unwrap_or(""),
            j["method"].as_str().unwrap_or(""),
            format!("{}/{}", j["attempt"], j["attempts"]),
            j["userId"].as_str().unwrap_or("-"),
            j["error"]["message"].as_str().unwrap_or(""),
        );
    }
    println!("{} job(s), state {}", jobs.len(), v["state"]);
}

/// One request to the server API at `base` (`http://host:port`); returns the status and the
/// body.
async fn request(base: &str, method: &str, path: &str, key: &str) -> anyhow::Result<(u16, String)> {
    HttpConn::new(base)?
        .request(method, path, key, "")
        .await
        .with_context(|| format!("{method} {base}{path}"))
}
