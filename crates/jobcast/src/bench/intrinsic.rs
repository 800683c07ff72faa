//! `jobcast bench intrinsic`: how late this machine wakes a thread that sleeps a short tick,
//! with no server involved (what `redis-cli --intrinsic-latency` measures for Redis).
//!
//! A latency tail at or below what this reports is the machine's, not the server's: a
//! process woken while the kernel or the hypervisor runs something else on its core waits
//! too, and a call crossing several processes can meet such a wait at each one. On the
//! 2-core machine of docs/benchmarks.md, a kernel thread (`kdamond`, memory monitoring with a
//! page-out scheme) held a core for 1.5–4 ms about once a second (docs/decisions.md).

use super::report;
use crate::settings::parse_duration;
use clap::Args;
use serde_json::json;
use std::time::{Duration, Instant};

/// Flags of `jobcast bench intrinsic`.
#[derive(Args, Debug)]
pub struct IntrinsicArgs {
    /// How long to measure.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// How long each sleep asks for.
    #[arg(long, default_value = "200us", value_parser = parse_duration)]
    pub tick: Duration,
    /// Print only the JSON line.
    #[arg(long)]
    pub json: bool,
}

/// Lateness from which a wake-up counts as a stall, in the summary.
const STALLS_FROM: [Duration; 3] = [
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(4),
];

/// What one measurement saw.
struct Lateness {
    histogram: hdrhistogram::Histogram<u64>,
    /// Wake-ups at least `STALLS_FROM[i]` late.
    stalls: [u64; STALLS_FROM.len()],
}

/// Sleeps `tick` again and again for `duration` on this thread and records how late each
/// wake-up was.
fn measure(duration: Duration, tick: Duration) -> Lateness {
    let mut histogram = report::histogram();
    let mut stalls = [0; STALLS_FROM.len()];
    let start = Instant::now();
    let mut before = start;
    while before - start < duration {
        std::thread::sleep(tick);
        let after = Instant::now();
        let late = (after - before).saturating_sub(tick);
        let _ = histogram.record(report::micros(late));
        for (n, from) in stalls.iter_mut().zip(STALLS_FROM) {
            *n += u64::from(late >= from);
        }
        before = after;
    }
    Lateness { histogram, stalls }
}

/// Runs the measurement on a thread of its own (not the runtime's); always exits 0.
pub async fn run(args: IntrinsicArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(!args.duration.is_zero(), "--duration must be more than 0");
    anyhow::ensure!(!args.tick.is_zero(), "--tick must be more than 0");
    let (duration, tick) = (args.duration, args.tick);
    let l = tokio::task::spawn_blocking(move || measure(duration, tick)).await?;
    let stalls: serde_json::Map<String, serde_json::Value> = STALLS_FROM
        .iter()
        .zip(l.stalls)
        .map(|(from, n)| (format!("{}ms", from.as_millis()), json!(n)))
        .collect();
    let summary = json!({
        "mode": "intrinsic",
        "durationS": duration.as_secs_f64(),
        "tickUs": report::micros(tick),
        "wakeups": l.histogram.len(),
        "lateMs": report::percentiles(&l.histogram),
        "stallsFrom": stalls,
    });
    if !args.json {
        println!(
            "bench intrinsic: {} sleeps of {tick:?} over {duration:?}; how late each woke:",
            l.histogram.len()
        );
        println!("{}", report::line("late", &l.histogram));
        let counts: Vec<String> = STALLS_FROM
            .iter()
            .zip(l.stalls)
            .map(|(from, n)| format!("{n} at least {from:?} late"))
            .collect();
        println!("stalls      {}", counts.join(", "));
    }
    println!("{summary}");
    Ok(0)
}
