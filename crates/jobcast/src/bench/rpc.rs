//! `jobcast bench rpc`: job calls over many connections.
//!
//! Closed loop (default): every connection keeps `--inflight` calls outstanding and sends the
//! next as soon as one finishes. Open loop (`--rate`): calls are sent on a fixed schedule
//! spread evenly over the connections whatever the server does, and latency is measured from
//! each call's *scheduled* time, so a stalled server shows as latency rather than being hidden
//! by a slower send rate.
//!
//! Ack latency is to `job.accepted`; completion latency is to the final response. Calls sent
//! during the warm-up are run but not measured. A call with no final response `--drain` after
//! the run is counted lost. The open loop also reports how late its own clock handed each send
//! over (`paceLateMs`): that part of a latency is the client's, not the server's.

use super::{Target, conn, pace, report};
use crate::settings::parse_duration;
use anyhow::Context;
use clap::Args;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};
use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    time::Duration,
};
use tokio::time::{Instant, sleep_until};
use tokio_websockets::Message;

/// Flags of `jobcast bench rpc`.
#[derive(Args, Debug)]
pub struct RpcArgs {
    #[command(flatten)]
    pub target: Target,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub connections: usize,
    /// Calls in flight per connection (closed loop).
    #[arg(short = 'w', long, default_value_t = 10)]
    pub inflight: usize,
    /// Open loop: total calls per second over all connections.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured run length.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured load before the run.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Method to call.
    #[arg(long, default_value = "demo.echo")]
    pub method: String,
    /// Params (JSON), sent with every call.
    #[arg(long, default_value = "{}")]
    pub params: String,
    /// After the run, how long to wait for outstanding calls before counting them lost.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Distinct users the connections are spread over.
    #[arg(long, default_value_t = 1)]
    pub users: usize,
    /// Print only the JSON line.
    #[arg(long)]
    pub json: bool,
    /// Also list every measured call whose completion took at least this long, with when it
    /// was due (ms from the measured window's start) and its connection, to standard error:
    /// to see whether a tail comes in bursts, and how often.
    #[arg(long, value_parser = parse_duration)]
    pub slow: Option<Duration>,
}

/// When each phase begins, shared by every connection.
#[derive(Clone, Copy)]
struct Plan {
    start: Instant,
    measure_from: Instant,
    stop: Instant,
    give_up: Instant,
    inflight: usize,
    /// `--slow`: the completion time from which a call is listed.
    slow: Option<Duration>,
}

struct Pending {
    /// Scheduled (open loop) or actual (closed loop) send time.
    at: Instant,
    acked: bool,
}

/// What one connection saw.
struct Tally {
    ack: Histogram<u64>,
    done: Histogram<u64>,
    sent: u64,
    /// Successful final responses received inside the measured window.
    completed: u64,
    errors: BTreeMap<i64, u64>,
    lost: u64,
    disconnected: bool,
    /// `--slow`: the slow calls, as (due, completion time, connection).
    slow: Vec<(Duration, Duration, usize)>,
}

impl Tally {
    fn new() -> Self {
        Self {
            ack: report::histogram(),
            done: report::histogram(),
            sent: 0,
            completed: 0,
            errors: BTreeMap::new(),
            lost: 0,
            disconnected: false,
            slow: Vec::new(),
        }
    }

    fn merge(&mut self, o: Tally) {
        // Both histograms share the same bounds, so adding cannot fail.
        let _ = self.ack.add(&o.ack);
        let _ = self.done.add(&o.done);
        self.sent += o.sent;
        self.completed += o.completed;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.lost += o.lost;
        self.disconnected |= o.disconnected;
        self.slow.extend(o.slow);
    }
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<ErrorCode>,
}

#[derive(Deserialize)]
struct ErrorCode {
    code: i64,
}

#[derive(Deserialize)]
struct Accepted<'a> {
    #[serde(borrow, rename = "requestId")]
    request_id: Option<&'a RawValue>,
}

fn numeric_id(raw: Option<&RawValue>) -> Option<u64> {
    raw.and_then(|r| r.get().parse().ok())
}

/// Runs the load; returns the exit code (1 when calls were lost or connections dropped).
pub async fn run(args: RpcArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.inflight > 0, "--inflight must be at least 1");
    if let Some(r) = args.rate {
        anyhow::ensure!(r > 0.0 && r.is_finite(), "--rate must be positive");
    }
    let params: Box<RawValue> =
        serde_json::from_str(&args.params).context("--params must be JSON")?;
    let method = serde_json::to_string(&args.method)?;
    let users = args.users.max(1);
    let mut urls = Vec::with_capacity(users);
    for u in 0..users {
        urls.push(args.target.url_for(&format!("bench-{u}"))?);
    }

    let mut connecting = tokio::task::JoinSet::new();
    for i in 0..args.connections {
        let url = urls[i % users].clone();
        connecting.spawn(async move { (i, conn::connect(&url, Duration::from_secs(30)).await) });
    }
    let mut conns = Vec::with_capacity(args.connections);
    while let Some(r) = connecting.join_next().await {
        let (i, ws) = r?;
        conns.push((i, ws.with_context(|| format!("connection {i}"))?));
    }

    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + args.warmup;
    let stop = measure_from + args.duration;
    let give_up = stop + args.drain;
    let mut running = tokio::task::JoinSet::new();
    let mut ticks = Vec::new();
    for (i, ws) in conns {
        let plan = Plan {
            start,
            measure_from,
            stop,
            give_up,
            inflight: args.inflight,
            slow: args.slow,
        };
        // Open loop: the pacer says when to send (and for which scheduled time).
        let due = args.rate.map(|_| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            ticks.push(tx);
            rx
        });
        let prefix = format!(r#"{{"jsonrpc":"2.0","method":{method},"params":{params},"id":"#);
        running.spawn(drive(ws, i, plan, prefix, due));
    }
    let clock = args.rate.map(|rate| {
        pace::start(
            pace::Schedule::until(start, stop, rate),
            measure_from,
            ticks,
        )
    });
    let mut total = Tally::new();
    while let Some(t) = running.join_next().await {
        total.merge(t?);
    }
    let pace_late = match clock {
        Some(c) => Some(pace::finish(c).await?),
        None => None,
    };
    if let Some(threshold) = args.slow {
        total.slow.sort();
        eprintln!(
            "{} calls took {threshold:?} or more (due ms from the measured start, completion ms, connection):",
            total.slow.len()
        );
        for (due, took, conn) in &total.slow {
            eprintln!(
                "slow {:.3} {:.3} {conn}",
                due.as_secs_f64() * 1e3,
                took.as_secs_f64() * 1e3
            );
        }
    }

    let secs = args.duration.as_secs_f64();
    let summary = json!({
        "mode": "rpc",
        "url": args.target.url,
        "method": args.method,
        "loop": if args.rate.is_some() { "open" } else { "closed" },
        "connections": args.connections,
        "inflight": if args.rate.is_some() { Value::Null } else { json!(args.inflight) },
        "rate": args.rate,
        "durationS": secs,
        "sent": total.sent,
        "completed": total.completed,
        "completedPerSec": (total.completed as f64 / secs).round(),
        "errors": total.errors.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "lost": total.lost,
        "disconnected": total.disconnected,
        "ackMs": report::percentiles(&total.ack),
        "completionMs": report::percentiles(&total.done),
        "paceLateMs": pace_late.as_ref().map(report::percentiles),
    });
    if !args.json {
        let shape = match args.rate {
            Some(r) => format!(
                "open loop at {r} calls/s over {} connections",
                args.connections
            ),
            None => format!(
                "closed loop, {} connections × {} in flight",
                args.connections, args.inflight
            ),
        };
        println!(
            "bench rpc {} on {}: {shape}, {secs}s measured after {:?} warm-up",
            args.method, args.target.url, args.warmup
        );
        let errors = if total.errors.is_empty() {
            "none".to_owned()
        } else {
            format!("{:?}", total.errors)
        };
        println!(
            "completed   {} ({:.0}/s)   sent {}   errors {errors}   lost {}{}",
            total.completed,
            total.completed as f64 / secs,
            total.sent,
            total.lost,
            if total.disconnected {
                "   CONNECTIONS DROPPED"
            } else {
                ""
            }
        );
        println!("{}", report::line("ack", &total.ack));
        println!("{}", report::line("completion", &total.done));
        if let Some(late) = &pace_late {
            // The client's own part of every latency above.
            println!("{}", report::line("pacer late", late));
        }
    }
    println!("{summary}");
    Ok(if total.lost > 0 || total.disconnected {
        1
    } else {
        0
    })
}

/// One connection's calls in flight and what it saw.
struct Calls {
    plan: Plan,
    /// Which connection (for `--slow`).
    index: usize,
    open: bool,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    t: Tally,
}

impl Calls {
    /// Records a new call sent at `at`; returns its id.
    fn start(&mut self, at: Instant) -> u64 {
        self.next_id += 1;
        self.pending
            .insert(self.next_id, Pending { at, acked: false });
        self.t.sent += 1;
        self.next_id
    }

    /// Takes one text frame from the server; returns true when a closed loop should send its
    /// next call now (a call of this connection has ended).
    fn on_text(&mut self, text: &str) -> bool {
        let Ok(frame) = serde_json::from_str::<Incoming>(text) else {
            return false;
        };
        let now = Instant::now();
        let plan = self.plan;
        match frame.method.as_deref() {
            Some("job.accepted") => {
                let id = frame
                    .params
                    .and_then(|p| serde_json::from_str::<Accepted>(p.get()).ok())
                    .and_then(|a| numeric_id(a.request_id));
                if let Some(p) = id.and_then(|id| self.pending.get_mut(&id)) {
                    if !p.acked && p.at >= plan.measure_from {
                        let _ = self.t.ack.record(report::micros(now - p.at));
                    }
                    p.acked = true;
                }
                false
            }
            Some(_) => false,
            None => {
                let Some(p) = numeric_id(frame.id).and_then(|id| self.pending.remove(&id)) else {
                    return false;
                };
                if p.at >= plan.measure_from {
                    let took = now - p.at;
                    let _ = self.t.done.record(report::micros(took));
                    if plan.slow.is_some_and(|s| took >= s) {
                        self.t
                            .slow
                            .push((p.at - plan.measure_from, took, self.index));
                    }
                }
                match frame.error {
                    Some(e) => *self.t.errors.entry(e.code).or_default() += 1,
                    None if now >= plan.measure_from && now < plan.stop => self.t.completed += 1,
                    None => {}
                }
                !self.open && now < plan.stop
            }
        }
    }
}

/// What one wait of a connection brought.
enum Woke {
    Frame(Option<Result<Message, tokio_websockets::Error>>),
    Due(Option<Instant>),
    GiveUp,
}

/// Drives one connection through the plan; in open loop, `due` brings its scheduled sends.
///
/// Sends are queued with `feed` and written with one `flush` once the frames that have
/// already arrived are handled: a closed loop answered in a burst sends its next calls in
/// one write, not one system call each (the client's sends were most of its CPU time).
async fn drive(
    mut ws: conn::Ws,
    index: usize,
    plan: Plan,
    prefix: String,
    mut due: Option<tokio::sync::mpsc::UnboundedReceiver<pace::Tick>>,
) -> Tally {
    let mut calls = Calls {
        plan,
        index,
        open: due.is_some(),
        pending: HashMap::new(),
        next_id: 0,
        t: Tally::new(),
    };
    sleep_until(plan.start).await;
    let give_up = sleep_until(plan.give_up);
    tokio::pin!(give_up);

    let send = |id: u64| Message::text(format!("{prefix}{id}}}"));
    let mut unflushed = false;
    if !calls.open {
        for _ in 0..plan.inflight {
            let id = calls.start(Instant::now());
            if ws.feed(send(id)).await.is_err() {
                calls.t.disconnected = true;
                break;
            }
            unflushed = true;
        }
    }
    while !calls.t.disconnected {
        if unflushed {
            unflushed = false;
            if ws.flush().await.is_err() {
                calls.t.disconnected = true;
                break;
            }
        }
        if Instant::now() >= plan.stop && calls.pending.is_empty() {
            break;
        }
        let woke = tokio::select! {
            biased;
            m = ws.next() => Woke::Frame(m),
            tick = async { due.as_mut()?.recv().await }, if due.is_some() => Woke::Due(tick.map(|t| t.at)),
            _ = &mut give_up => Woke::GiveUp,
        };
        let mut frame = match woke {
            Woke::GiveUp => break,
            Woke::Due(None) => {
                // The schedule is over.
                due = None;
                continue;
            }
            Woke::Due(Some(at)) => {
                let id = calls.start(at);
                unflushed = true;
                if ws.feed(send(id)).await.is_err() {
                    calls.t.disconnected = true;
                }
                continue;
            }
            Woke::Frame(m) => m,
        };
        // This frame, then every frame already read or readable without waiting; then the
        // calls that replace the ended ones, in one write. (Sending while reading would not
        // batch: the stream flushes what is queued before it reads each frame.)
        let mut ended = 0;
        loop {
            match frame {
                Some(Ok(m)) if m.is_text() => {
                    ended += usize::from(calls.on_text(m.as_text().unwrap_or_default()));
                }
                Some(Ok(m)) if !m.is_close() => {}
                _ => {
                    calls.t.disconnected = true;
                    break;
                }
            }
            match ws.next().now_or_never() {
                Some(m) => frame = m,
                None => break,
            }
        }
        for _ in 0..ended {
            if calls.t.disconnected {
                break;
            }
            let id = calls.start(Instant::now());
            unflushed = true;
            if ws.feed(send(id)).await.is_err() {
                calls.t.disconnected = true;
            }
        }
    }
    let mut t = calls.t;
    t.lost = calls.pending.len() as u64;
    let _ = ws.close().await;
    t
}
