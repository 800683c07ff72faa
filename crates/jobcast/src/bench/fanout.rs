//! `jobcast bench fanout`: S subscribers on one topic, a publisher sending R messages/s over
//! `POST /v1/publish`, open loop.
//!
//! Each message carries its sequence number and its *scheduled* send time, so delivery latency
//! (scheduled send → received by a subscriber) includes any queueing at the publisher or the
//! server. Every subscriber must receive every message: a message some subscriber did not get
//! by `--drain` after the last send counts as lost for that subscriber.

use super::{Target, conn, report};
use crate::http_client::HttpConn;
use crate::settings::parse_duration;
use anyhow::Context;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::json;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::time::{Instant, sleep_until};
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

/// Latency histograms shared by subscribers in shards (one per subscriber would be too big).
struct Shards(Vec<Mutex<Histogram<u64>>>);

impl Shards {
    fn new(n: usize) -> Self {
        Self((0..n).map(|_| Mutex::new(report::histogram())).collect())
    }

    fn merged(&self) -> Histogram<u64> {
        let mut h = report::histogram();
        for s in &self.0 {
            let _ = h.add(&*s.lock());
        }
        h
    }
}

/// What every subscriber shares with the publisher.
struct Shared {
    base: Instant,
    measure_from_us: u64,
    /// Messages the server accepted (2xx).
    published: AtomicU64,
    publishing_done: AtomicBool,
    /// When subscribers stop waiting, in µs after `base` (0: still publishing). Read on every
    /// message by every subscriber, so an atomic rather than a lock.
    give_up_us: AtomicU64,
    latency: Shards,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    dropped: AtomicU64,
}

/// Finds `"key":<digits>` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits: &str = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
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
    let shared = Arc::new(Shared {
        base,
        measure_from_us: u64::try_from((measure_from - base).as_micros()).unwrap_or(u64::MAX),
        published: AtomicU64::new(0),
        publishing_done: AtomicBool::new(false),
        give_up_us: AtomicU64::new(0),
        latency: Shards::new(64),
        delivered: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    });
    let mut receiving = tokio::task::JoinSet::new();
    for (i, ws) in subs.into_iter().enumerate() {
        receiving.spawn(receive(ws, shared.clone(), i % 64));
    }

    // Publish on a fixed schedule: message n is due at start + n / rate.
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let total = ((stop - start).as_secs_f64() * args.rate).floor() as u64;
    let pad = "x".repeat(args.payload_bytes);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut publishing = tokio::task::JoinSet::new();
    for _ in 0..args.publishers.max(1) {
        let mut http = HttpConn::new(&http_base)?;
        let (next, failed, shared) = (next.clone(), failed.clone(), shared.clone());
        let (key, topic, pad) = (args.api_key.clone(), args.topic.clone(), pad.clone());
        publishing.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= total {
                    return;
                }
                let due = start + period.mul_f64(n as f64);
                sleep_until(due).await;
                let t = u64::try_from((due - shared.base).as_micros()).unwrap_or(u64::MAX);
                let body = json!({"topic": topic, "data": {"seq": n, "t": t, "pad": pad}});
                match http
                    .request("POST", "/v1/publish", &key, &body.to_string())
                    .await
                {
                    Ok((s, _)) if (200..300).contains(&s) => {
                        shared.published.fetch_add(1, Ordering::SeqCst);
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
    while let Some(r) = publishing.join_next().await {
        r?;
    }
    let publish_end = Instant::now();
    let give_up = publish_end + args.drain - shared.base;
    shared.give_up_us.store(
        u64::try_from(give_up.as_micros())
            .unwrap_or(u64::MAX)
            .max(1),
        Ordering::SeqCst,
    );
    shared.publishing_done.store(true, Ordering::SeqCst);
    let mut per_sub_lost = 0u64;
    while let Some(r) = receiving.join_next().await {
        per_sub_lost += r?;
    }

    let published = shared.published.load(Ordering::SeqCst);
    let delivered = shared.delivered.load(Ordering::SeqCst);
    let expected = published * args.subscribers as u64;
    let lag_ms = (publish_end.saturating_duration_since(stop)).as_secs_f64() * 1000.0;
    let secs = (publish_end - start).as_secs_f64();
    let latency = shared.latency.merged();
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
        "lost": per_sub_lost,
        "duplicates": shared.duplicates.load(Ordering::SeqCst),
        "droppedConnections": dropped,
        "latencyMs": report::percentiles(&latency),
    });
    if !args.json {
        println!(
            "bench fanout on {}: {} subscribers × {} msg/s, {:?} measured after {:?} warm-up",
            args.target.url, args.subscribers, args.rate, args.duration, args.warmup
        );
        println!(
            "published {published} (failed {}, publisher {lag_ms:.0} ms behind schedule at the end)   delivered {delivered} of {expected} ({:.0}/s)   lost {per_sub_lost}   dropped connections {dropped}",
            failed.load(Ordering::SeqCst),
            delivered as f64 / secs
        );
        println!("{}", report::line("delivery", &latency));
    }
    println!("{summary}");
    Ok(
        if per_sub_lost > 0 || dropped > 0 || failed.load(Ordering::SeqCst) > 0 {
            1
        } else {
            0
        },
    )
}

/// One subscriber: records each message's latency and returns how many it missed.
async fn receive(mut ws: conn::Ws, shared: Arc<Shared>, shard: usize) -> u64 {
    let mut seen: Vec<u64> = Vec::new();
    let mut got = 0u64;
    loop {
        if shared.publishing_done.load(Ordering::SeqCst)
            && got >= shared.published.load(Ordering::SeqCst)
        {
            break;
        }
        let give_up_us = shared.give_up_us.load(Ordering::SeqCst);
        let give_up = (give_up_us > 0).then(|| shared.base + Duration::from_micros(give_up_us));
        let next = match give_up {
            Some(at) => match tokio::time::timeout_at(at, ws.next()).await {
                Ok(m) => m,
                Err(_) => break,
            },
            // Still publishing: wake now and then to notice the end.
            None => match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                Ok(m) => m,
                Err(_) => continue,
            },
        };
        let text = match next {
            Some(Ok(m)) if m.is_text() => m,
            Some(Ok(m)) if !m.is_close() => continue,
            _ => {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                break;
            }
        };
        let Some(text) = text.as_text() else { continue };
        if !text.contains("\"topic.message\"") {
            continue;
        }
        let (Some(seq), Some(t)) = (number_after(text, "\"seq\":"), number_after(text, "\"t\":"))
        else {
            continue;
        };
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if seen.len() <= word {
            seen.resize(word + 1, 0);
        }
        if seen[word] & (1 << bit) != 0 {
            shared.duplicates.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        seen[word] |= 1 << bit;
        got += 1;
        shared.delivered.fetch_add(1, Ordering::Relaxed);
        if t >= shared.measure_from_us {
            let now = u64::try_from(shared.base.elapsed().as_micros()).unwrap_or(u64::MAX);
            let _ = shared.latency.0[shard]
                .lock()
                .record(now.saturating_sub(t).max(1));
        }
    }
    let _ = ws.close().await;
    shared.published.load(Ordering::SeqCst).saturating_sub(got)
}

#[cfg(test)]
mod tests {
    use super::number_after;

    #[test]
    fn finds_numbers() {
        let m = r#"{"jsonrpc":"2.0","method":"topic.message","params":{"topic":"t","data":{"seq":42,"t":1234,"pad":"x"}}}"#;
        assert_eq!(number_after(m, "\"seq\":"), Some(42));
        assert_eq!(number_after(m, "\"t\":"), Some(1234));
        assert_eq!(number_after(m, "\"nope\":"), None);
    }
}
