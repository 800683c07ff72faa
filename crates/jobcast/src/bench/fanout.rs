//! `jobcast bench fanout`: S subscribers on one topic, a publisher sending R messages/s over
//! `POST /v1/publish`, open loop.
//!
//! Each message carries its sequence number and its *scheduled* send time, so delivery latency
//! (scheduled send → received by a subscriber) includes any queueing at the publisher or the
//! server. Every subscriber must receive every message: a message some subscriber did not get
//! by `--drain` after the last send counts as lost for that subscriber.
//!
//! The publishes are timed too (due time → the server's answer): the part of the delivery
//! latency spent before the server has taken the message, which for a server that writes to
//! every subscriber before it answers includes that whole pass. The publishers take each
//! message when due from the open loops' clock (`pace`), which also reports how late it
//! handed them over: that part of both latencies is the client's.

use super::{Target, conn, pace, report};
use crate::http_client::HttpConn;
use crate::settings::parse_duration;
use anyhow::Context;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use memchr::memmem;
use parking_lot::Mutex;
use serde_json::json;
use std::{
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;
use tokio_websockets::Message;

/// Flags of `jobcast bench fanout`.
#[derive(Args, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: Target,
    /// Base URL of the server API [default: the WebSocket URL's host, over http://].
    #[arg(long)]
    pub http: Option<String>,
    /// API key for `POST /v1/publish`.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Subscribers (one connection each).
    #[arg(short = 's', long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Messages per second published.
    #[arg(short = 'r', long, default_value_t = 500.0)]
    pub rate: f64,
    /// Measured run length.
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured publishing before the run.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// After the last send, how long subscribers wait for missing messages.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
    /// The topic.
    #[arg(long, default_value = "bench:fanout")]
    pub topic: String,
    /// Padding added to each message, in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// HTTP connections publishing in parallel (each one request at a time).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Connections opened at once while connecting.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Print only the JSON line.
    #[arg(long)]
    pub json: bool,
}

/// What subscribers record, in shards (one per subscriber would be too big; one for all would
/// be a lock every subscriber contends for).
struct Shards(Vec<Mutex<Shard>>);

/// One shard of the subscribers' records, or all of them merged.
struct Shard {
    latency: Histogram<u64>,
    delivered: u64,
    duplicates: u64,
    /// When the shard's latest message arrived, in µs from the run's base.
    last_us: u64,
}

impl Shard {
    fn empty() -> Self {
        Self {
            latency: report::histogram(),
            delivered: 0,
            duplicates: 0,
            last_us: 0,
        }
    }
}

impl Shards {
    fn new(n: usize) -> Self {
        Self((0..n).map(|_| Mutex::new(Shard::empty())).collect())
    }

    /// Every shard's records together.
    fn merged(&self) -> Shard {
        let mut m = Shard::empty();
        for s in &self.0 {
            let s = s.lock();
            let _ = m.latency.add(&s.latency);
            m.delivered += s.delivered;
            m.duplicates += s.duplicates;
            m.last_us = m.last_us.max(s.last_us);
        }
        m
    }
}

/// What every subscriber shares with the publisher.
struct Shared {
    base: Instant,
    measure_from_us: u64,
    /// Messages scheduled: a subscriber that has them all is done.
    total: u64,
    /// Messages the server accepted (2xx).
    published: AtomicU64,
    shards: Shards,
    dropped: AtomicU64,
    /// From each measured message's due time to the server's answer to its publish.
    publish: Mutex<Histogram<u64>>,
}

/// Where the fields a subscriber reads begin in each message (searched for without building a
/// searcher per message).
struct Needles {
    method: memmem::Finder<'static>,
    seq: memmem::Finder<'static>,
    t: memmem::Finder<'static>,
}

static NEEDLES: LazyLock<Needles> = LazyLock::new(|| Needles {
    method: memmem::Finder::new("\"topic.message\""),
    seq: memmem::Finder::new("\"seq\":"),
    t: memmem::Finder::new("\"t\":"),
});

/// Reads the digits right after the first match of `key` in `text`.
fn number_after(text: &[u8], key: &memmem::Finder<'_>) -> Option<u64> {
    let at = key.find(text)? + key.needle().len();
    let digits = &text[at..];
    let end = digits
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// Runs the load; returns the exit code (1 when messages were lost or connections dropped).
pub async fn run(args: FanoutArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(args.subscribers > 0, "--subscribers must be at least 1");
    anyhow::ensure!(
        args.rate > 0.0 && args.rate.is_finite(),
        "--rate must be positive"
    );
    let http_base = match &args.http {
        Some(h) => h.clone(),
        None => {
            let uri: http::Uri = args.target.url.parse().context("bad --url")?;
            format!(
                "http://{}",
                uri.authority().context("--url without a host")?
            )
        }
    };

    // Connect and subscribe everyone first.
    let sem = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
    let mut connecting = tokio::task::JoinSet::new();
    let subscribe =
        json!({"jsonrpc":"2.0","id":"sub","method":"rpc.subscribe","params":{"topic": args.topic}})
            .to_string();
    for i in 0..args.subscribers {
        let url = args.target.url_for(&format!("fanout-{i}"))?;
        let (sem, subscribe) = (sem.clone(), subscribe.clone());
        connecting.spawn(async move {
            let _permit = sem.acquire().await?;
            let mut ws = conn::connect(&url, Duration::from_secs(60)).await?;
            ws.send(Message::text(subscribe)).await?;
            loop {
                let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
                    .await
                    .context("no answer to rpc.subscribe")?
                    .context("closed while subscribing")??;
                if let Some(t) = m.as_text()
                    && t.contains("\"sub\"")
                {
                    anyhow::ensure!(t.contains("\"result\""), "subscribe refused: {t}");
                    return Ok::<_, anyhow::Error>(ws);
                }
            }
        });
    }
    let mut subs = Vec::with_capacity(args.subscribers);
    while let Some(r) = connecting.join_next().await {
        subs.push(r??);
    }
    if !args.json {
        eprintln!("{} subscribers on {:?}; publishing", subs.len(), args.topic);
    }

    let base = Instant::now();
    let start = base + Duration::from_millis(100);
    let measure_from = start + args.warmup;
    let stop = measure_from + args.duration;
    let schedule = pace::Schedule::until(start, stop, args.rate);
    let total = schedule.count;
    let shared = Arc::new(Shared {
        base,
        measure_from_us: report::whole_micros(measure_from - base),
        total,
        published: AtomicU64::new(0),
        shards: Shards::new(64),
        dropped: AtomicU64::new(0),
        publish: Mutex::new(report::histogram()),
    });
    let mut receiving = tokio::task::JoinSet::new();
    for (i, ws) in subs.into_iter().enumerate() {
        receiving.spawn(receive(ws, shared.clone(), i % 64));
    }

    // Publish on a fixed schedule: message n is due at start + n / rate. The clock hands each
    // message, when due, to whichever publisher is free first (they wait in turn on one queue).
    let pad = "x".repeat(args.payload_bytes);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let queue = Arc::new(tokio::sync::Mutex::new(rx));
    let failed = Arc::new(AtomicU64::new(0));
    let mut publishing = tokio::task::JoinSet::new();
    for _ in 0..args.publishers.max(1) {
        let mut http = HttpConn::new(&http_base)?;
        let (queue, failed, shared) = (queue.clone(), failed.clone(), shared.clone());
        let (key, topic, pad) = (args.api_key.clone(), args.topic.clone(), pad.clone());
        publishing.spawn(async move {
            loop {
                let Some(pace::Tick { n, at: due }) = queue.lock().await.recv().await else {
                    return;
                };
                let t = report::whole_micros(due - shared.base);
                let body = json!({"topic": topic, "data": {"seq": n, "t": t, "pad": pad}});
                match http
                    .request("POST", "/v1/publish", &key, &body.to_string())
                    .await
                {
                    Ok((s, _)) if (200..300).contains(&s) => {
                        shared.published.fetch_add(1, Ordering::SeqCst);
                        if t >= shared.measure_from_us {
                            let took = report::micros(due.elapsed());
                            let _ = shared.publish.lock().record(took);
                        }
                    }
                    Ok((s, _)) => {
                        tracing::warn!(status = s, "publish refused");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "publish failed");
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
    }
    let clock = pace::start(schedule, measure_from, vec![tx]);
    while let Some(r) = publishing.join_next().await {
        r?;
    }
    let pace_late = pace::finish(clock).await?;
    let publish_end = Instant::now();
    // A subscriber ends by itself once it has every message; past the drain, the ones still
    // waiting are missing some and are stopped.
    let give_up = publish_end + args.drain;
    let mut finished = Vec::with_capacity(args.subscribers);
    while let Ok(Some(r)) = tokio::time::timeout_at(give_up, receiving.join_next()).await {
        finished.extend(r?);
    }
    receiving.shutdown().await;
    // Close only now: a subscriber that closed as soon as it had everything made the server
    // and the client spend the last message's delivery on thousands of closing handshakes,
    // and that message alone showed as the run's p99.9 and maximum (docs/decisions.md).
    let mut closing = tokio::task::JoinSet::new();
    for mut ws in finished {
        closing.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.close()).await;
        });
    }
    while closing.join_next().await.is_some() {}

    let published = shared.published.load(Ordering::SeqCst);
    let Shard {
        latency,
        delivered,
        duplicates,
        last_us,
    } = shared.shards.merged();
    let expected = published * args.subscribers as u64;
    let lost = expected.saturating_sub(delivered);
    let lag_ms = (publish_end.saturating_duration_since(stop)).as_secs_f64() * 1000.0;
    // Deliveries per second of the publishing schedule: the offered rate times the share
    // delivered. At a fixed offered rate a server that keeps up delivers all of it, and how
    // late is what the latencies and `lastDeliveryMs` say; dividing by a time that ends with
    // one event (the publisher's last answer, or the last delivery) made two lossless runs
    // differ by that one event's timing (docs/decisions.md, session 9).
    let secs = (stop - start).as_secs_f64();
    let last_due_us = report::whole_micros(schedule.at(total.saturating_sub(1)) - base);
    let last_delivery_ms = last_us.saturating_sub(last_due_us) as f64 / 1000.0;
    let dropped = shared.dropped.load(Ordering::SeqCst);
    let summary = json!({
        "mode": "fanout",
        "url": args.target.url,
        "topic": args.topic,
        "subscribers": args.subscribers,
        "rate": args.rate,
        "durationS": args.duration.as_secs_f64(),
        "published": published,
        "publishFailed": failed.load(Ordering::SeqCst),
        "publisherLagMs": lag_ms,
        "expected": expected,
        "delivered": delivered,
        "deliveredPerSec": (delivered as f64 / secs).round(),
        "lastDeliveryMs": last_delivery_ms,
        "lost": lost,
        "duplicates": duplicates,
        "droppedConnections": dropped,
        "latencyMs": report::percentiles(&latency),
        "publishMs": report::percentiles(&shared.publish.lock()),
        "paceLateMs": report::percentiles(&pace_late),
    });
    if !args.json {
        println!(
            "bench fanout on {}: {} subscribers × {} msg/s, {:?} measured after {:?} warm-up",
            args.target.url, args.subscribers, args.rate, args.duration, args.warmup
        );
        println!(
            "published {published} (failed {}, publisher {lag_ms:.0} ms behind schedule at the end)   delivered {delivered} of {expected} ({:.0}/s, the last {last_delivery_ms:.0} ms after its publish was due)   lost {lost}   dropped connections {dropped}",
            failed.load(Ordering::SeqCst),
            delivered as f64 / secs
        );
        println!("{}", report::line("delivery", &latency));
        println!("{}", report::line("publish", &shared.publish.lock()));
        // The client's own part of both latencies above.
        println!("{}", report::line("pacer late", &pace_late));
    }
    println!("{summary}");
    Ok(
        if lost > 0 || dropped > 0 || failed.load(Ordering::SeqCst) > 0 {
            1
        } else {
            0
        },
    )
}

/// One subscriber: records each message until it has them all, then hands its connection
/// back for the run to close once every subscriber is done. The wait for the next message has
/// no timer of its own; the run stops the subscribers still waiting after the drain. (A timer
/// per message and subscriber and a string searcher built per search were about 7 % of the
/// client's samples at 10,000 × 30/s.)
async fn receive(mut ws: conn::Ws, shared: Arc<Shared>, shard: usize) -> Option<conn::Ws> {
    let needles = &*NEEDLES;
    let mut seen: Vec<u64> = Vec::new();
    let mut got = 0u64;
    while got < shared.total {
        let m = match ws.next().await {
            Some(Ok(m)) if m.is_text() => m,
            Some(Ok(m)) if !m.is_close() => continue,
            _ => {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                return None;
            }
        };
        let text = m.as_payload();
        if needles.method.find(text).is_none() {
            continue;
        }
        let (Some(seq), Some(t)) = (
            number_after(text, &needles.seq),
            number_after(text, &needles.t),
        ) else {
            continue;
        };
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if seen.len() <= word {
            seen.resize(word + 1, 0);
        }
        let mut s = shared.shards.0[shard].lock();
        if seen[word] & (1 << bit) != 0 {
            s.duplicates += 1;
            continue;
        }
        seen[word] |= 1 << bit;
        got += 1;
        s.delivered += 1;
        let now = report::whole_micros(shared.base.elapsed());
        s.last_us = s.last_us.max(now);
        if t >= shared.measure_from_us {
            let _ = s.latency.record(now.saturating_sub(t).max(1));
        }
    }
    Some(ws)
}

#[cfg(test)]
mod tests {
    use super::{NEEDLES, number_after};
    use memchr::memmem::Finder;

    #[test]
    fn finds_numbers() {
        let m = br#"{"jsonrpc":"2.0","method":"topic.message","params":{"topic":"t","data":{"seq":42,"t":1234,"pad":"x"}}}"#;
        assert!(NEEDLES.method.find(m).is_some());
        assert_eq!(number_after(m, &NEEDLES.seq), Some(42));
        assert_eq!(number_after(m, &NEEDLES.t), Some(1234));
        assert_eq!(number_after(m, &Finder::new("\"nope\":")), None);
    }
}
