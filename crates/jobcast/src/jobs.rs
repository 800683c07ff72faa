//! `jobcast jobs`: the operator's view of the queue through a gateway's server API (so it works
//! the same on the embedded store, which only its `serve` process may open, and on Redis):
//! list jobs by state, show one, retry a failed one, cancel, purge ended ones.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

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

/// One HTTP/1.1 request to `base` (`http://host:port`); returns the status and the body.
async fn request(base: &str, method: &str, path: &str, key: &str) -> anyhow::Result<(u16, String)> {
    let uri: http::Uri = base.parse().with_context(|| format!("bad --url {base}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("--url must be http://host:port (TLS is not supported by this command yet)");
    }
    let host = uri.host().context("--url without a host")?;
    let port = uri.port_u16().unwrap_or(80);
    let mut s = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .with_context(|| format!("connecting to {base}"))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// Decodes a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
