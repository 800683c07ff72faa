//! `jobcast bench idle`: N connections held open (answering the server's pings) for a while,
//! spread over several processes and loopback source addresses, so one machine can hold more
//! than one process's file limit and one address's ephemeral ports.
//!
//! The parent starts `--processes` children (this same binary, `bench idle --part i`), each
//! holding its share from its own source address, and sums their reports. Given the server's
//! pids, it reads their resident memory before connecting and once everyone is connected, and
//! reports the difference per connection.

use super::{Target, conn};
use crate::settings::parse_duration;
use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::{
    net::IpAddr,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Flags of `jobcast bench idle`.
#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    pub target: Target,
    /// Connections in total.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: usize,
    /// Processes to spread them over (each holds at most ~19,000 under a 20,000-file limit).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Local addresses to connect from, one per process in turn (e.g.
    /// 127.0.0.2,127.0.0.3). Each process then picks its own ports (from 10000 up, split
    /// between the processes sharing an address) rather than asking the kernel for one.
    #[arg(long, value_delimiter = ',')]
    pub source: Vec<IpAddr>,
    /// How long to hold every connection once all are open.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Connections opened at once per process.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// More server URLs (e.g. other gateways of one cluster): processes are spread over
    /// `--url` and these in turn, so one run can hold more than one server's file limit.
    #[arg(long, value_delimiter = ',')]
    pub also: Vec<String>,
    /// Pids of the server's processes, to report their resident memory per connection.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Print only the JSON line.
    #[arg(long)]
    pub json: bool,
    /// Internal: run as child `i` of the parent (holds its share and prints one JSON line).
    #[arg(long, hide = true)]
    pub part: Option<usize>,
}

/// Resident memory of `pid` in KiB (Linux), 0 when unknown.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn total_rss(pids: &[u32]) -> u64 {
    pids.iter().map(|p| rss_kib(*p)).sum()
}

/// Runs the parent (or, with `--part`, one child); returns the exit code (1 when a
/// connection failed or dropped).
pub async fn run(args: IdleArgs) -> anyhow::Result<u8> {
    if let Some(part) = args.part {
        return child(args, part).await;
    }
    anyhow::ensure!(args.processes > 0, "--processes must be at least 1");
    let rss_before = total_rss(&args.pid);
    let exe = std::env::current_exe().context("finding this program")?;
    let mut children = Vec::new();
    for i in 0..args.processes {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(std::env::args_os().skip(1))
            .args(["--part", &i.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut c = cmd.spawn().context("starting a bench process")?;
        let out = BufReader::new(c.stdout.take().context("child stdout")?);
        children.push((c, out.lines()));
    }
    // Each child says "ready" once its connections are open, then reports at the end.
    for (_, lines) in &mut children {
        loop {
            let line = lines
                .next_line()
                .await?
                .context("a bench process ended early")?;
            if line.starts_with("ready") {
                break;
            }
        }
    }
    // Everyone is connected: let the server settle, then measure its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = total_rss(&args.pid);
    let mut sum = json!({"established": 0, "failed": 0, "dropped": 0, "connectMs": 0.0});
    for (mut c, mut lines) in children {
        let mut report = None;
        while let Some(line) = lines.next_line().await? {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                report = Some(v);
            }
        }
        c.wait().await?;
        let r = report.context("a bench process printed no report")?;
        for k in ["established", "failed", "dropped"] {
            sum[k] = json!(sum[k].as_u64().unwrap_or(0) + r[k].as_u64().unwrap_or(0));
        }
        let ms = r["connectMs"].as_f64().unwrap_or(0.0);
        if ms > sum["connectMs"].as_f64().unwrap_or(0.0) {
            sum["connectMs"] = json!(ms);
        }
    }
    let established = sum["established"].as_u64().unwrap_or(0);
    let per_conn = if established > 0 && !args.pid.is_empty() {
        Some(rss_connected.saturating_sub(rss_before) as f64 * 1024.0 / established as f64)
    } else {
        None
    };
    let summary = json!({
        "mode": "idle",
        "url": args.target.url,
        "servers": 1 + args.also.len(),
        "connections": args.connections,
        "processes": args.processes,
        "holdS": args.hold.as_secs_f64(),
        "established": established,
        "failed": sum["failed"],
        "dropped": sum["dropped"],
        "connectMs": sum["connectMs"],
        "serverRssKiB": {"before": rss_before, "connected": rss_connected},
        "bytesPerConnection": per_conn.map(f64::round),
    });
    if !args.json {
        println!(
            "bench idle on {} (+{} more): {} connections over {} process(es), held {:?}",
            args.target.url,
            args.also.len(),
            args.connections,
            args.processes,
            args.hold
        );
        println!(
            "established {established}   failed {}   dropped {}   all open after {:.0} ms",
            sum["failed"],
            sum["dropped"],
            sum["connectMs"].as_f64().unwrap_or(0.0)
        );
        if let Some(b) = per_conn {
            println!(
                "server resident memory {} KiB → {} KiB: {:.0} bytes per connection",
                rss_before, rss_connected, b
            );
        }
    }
    println!("{summary}");
    let bad = sum["failed"].as_u64().unwrap_or(0) + sum["dropped"].as_u64().unwrap_or(0);
    Ok(if bad > 0 || established == 0 { 1 } else { 0 })
}

/// The local ports one child connects from: its source address, and its share of the ports
/// from 10000 up among the children using the same address.
struct LocalPorts {
    ip: IpAddr,
    next: AtomicU64,
    end: u64,
}

impl LocalPorts {
    fn for_part(args: &IdleArgs, part: usize) -> Option<Arc<Self>> {
        if args.source.is_empty() {
            return None;
        }
        let sources = args.source.len();
        let sharing = args.processes.div_ceil(sources).max(1) as u64;
        let span = (65_535 - 10_000) / sharing;
        let start = 10_000 + (part / sources) as u64 * span;
        Some(Arc::new(Self {
            ip: args.source[part % sources],
            next: AtomicU64::new(start),
            end: start + span,
        }))
    }

    /// The next address, or `None` once the share is used up (the kernel then picks).
    fn next(&self) -> Option<std::net::SocketAddr> {
        let port = self.next.fetch_add(1, Ordering::Relaxed);
        (port < self.end).then(|| std::net::SocketAddr::new(self.ip, port as u16))
    }
}

fn is_addr_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// One child: opens its share, holds it, reports.
async fn child(args: IdleArgs, part: usize) -> anyhow::Result<u8> {
    let n =
        args.connections / args.processes + usize::from(part < args.connections % args.processes);
    let ports = LocalPorts::for_part(&args, part);
    let target = match part % (1 + args.also.len()) {
        0 => args.target.clone(),
        k => Target {
            url: args.also[k - 1].clone(),
            ..args.target.clone()
        },
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
    let failed = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..n {
        let url = target.url_for(&format!("idle-{part}-{i}"))?;
        let sem = sem.clone();
        let ports = ports.clone();
        opening.spawn(async move {
            let _p = sem.acquire().await.ok()?;
            let mut tries = 0;
            loop {
                let from = ports.as_ref().and_then(|p| p.next());
                match conn::connect_from(&url, from, Duration::from_secs(60)).await {
                    Ok(ws) => return Some(ws),
                    // A port taken by something else: take the next one.
                    Err(e) if from.is_some() && tries < 10 && is_addr_in_use(&e) => tries += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "connect failed");
                        return None;
                    }
                }
            }
        });
    }
    let mut conns = Vec::with_capacity(n);
    while let Some(r) = opening.join_next().await {
        match r? {
            Some(ws) => conns.push(ws),
            None => {
                failed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let connect_ms = started.elapsed().as_secs_f64() * 1000.0;
    let established = conns.len();
    // Hold: keep reading, so the library answers the server's pings; anything ending the
    // stream before the hold is over is a drop.
    let stop = tokio::time::Instant::now() + Duration::from_secs(3) + args.hold;
    let mut holding = tokio::task::JoinSet::new();
    for mut ws in conns {
        let dropped = dropped.clone();
        holding.spawn(async move {
            loop {
                match tokio::time::timeout_at(stop, ws.next()).await {
                    Err(_) => break,
                    Ok(Some(Ok(m))) if !m.is_close() => continue,
                    Ok(_) => {
                        dropped.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
            let _ = futures_util::SinkExt::close(&mut ws).await;
        });
    }
    println!("ready {established}");
    while holding.join_next().await.is_some() {}
    println!(
        "{}",
        json!({
            "part": part,
            "established": established,
            "failed": failed.load(Ordering::SeqCst),
            "dropped": dropped.load(Ordering::SeqCst),
            "connectMs": connect_ms,
        })
    );
    Ok(0)
}
