//! `jobcast bench` as a smoke test: each mode runs for about a second against real servers
//! (embedded and Redis) and must finish every call it sent. Rates and latencies are printed,
//! never asserted: performance is measured by running the bench, not by tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::Value;

/// Runs `jobcast bench ARGS --json` and returns its exit code and JSON summary line.
fn bench(args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.push("--json");
    let (code, out, err) = jobcast(&all);
    let line = out.lines().last().unwrap_or_default();
    let v = serde_json::from_str(line).unwrap_or(Value::Null);
    (code, v, err)
}

fn check_complete(v: &Value, err: &str) {
    eprintln!("{v}");
    assert!(v["completed"].as_u64().unwrap_or(0) > 0, "{v} {err}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["disconnected"], false, "{v}");
    assert_eq!(v["errors"], serde_json::json!({}), "{v}");
    // Every measured call was acknowledged and finished.
    assert_eq!(v["ackMs"]["count"], v["completionMs"]["count"], "{v}");
}

async fn rpc_modes(backend: Backend) {
    // No per-connection rate limit: the closed loop sends as fast as the server answers, and
    // a fast enough server passes the default 1,000 messages a second per connection (its
    // calls then get -32003, rightly, which this smoke test counts as errors).
    let s = Server::start_on(backend, &["--rate-limit", "0"]);
    let url = format!("ws://{}/ws", s.addr);
    let common = ["--url", url.as_str(), "--jwt-secret", SECRET];
    let closed = [
        "rpc", "-c", "4", "-w", "8", "-d", "1s", "--warmup", "200ms", "--users", "2",
    ];
    let (code, v, err) = bench(&[&closed[..], &common[..]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["loop"], "closed");
    check_complete(&v, &err);
    // Only the open loop has a pacer.
    assert!(v["paceLateMs"].is_null(), "{v}");

    // `--slow 0ms` lists every measured call.
    let open = [
        "rpc", "-c", "4", "--rate", "200", "-d", "1s", "--warmup", "200ms", "--slow", "0ms",
    ];
    let (code, v, err) = bench(&[&open[..], &common[..]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["loop"], "open");
    check_complete(&v, &err);
    // The open loop sends on its schedule whatever the server does: 200/s for 1.2 s.
    let sent = v["sent"].as_u64().unwrap_or(0);
    assert!((230..=250).contains(&sent), "{v}");
    // The pacer timed each send of the measured second.
    let paced = v["paceLateMs"]["count"].as_u64().unwrap_or(0);
    assert!((195..=205).contains(&paced), "{v}");
    let slow: Vec<(f64, f64, usize)> = err
        .lines()
        .filter_map(|l| l.strip_prefix("slow "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        Some(slow.len() as u64),
        v["completionMs"]["count"].as_u64(),
        "{err}"
    );
    assert!(
        err.contains(&format!("{} calls took 0ns or more", slow.len())),
        "{err}"
    );
    // In due order, inside the measured second, from the four connections.
    assert!(slow.windows(2).all(|w| w[0].0 <= w[1].0), "{err}");
    assert!(
        slow.iter()
            .all(|&(due, took, conn)| (0.0..1000.0).contains(&due) && took > 0.0 && conn < 4),
        "{err}"
    );
}

#[tokio::test]
async fn bench_rpc_on_embedded() {
    rpc_modes(Backend::Embedded).await;
}

#[tokio::test]
async fn bench_rpc_on_redis() {
    rpc_modes(Backend::Redis).await;
}

#[tokio::test]
async fn bench_refuses_bad_input() {
    let s = Server::start(&[]);
    let url = format!("ws://{}/ws", s.addr);
    let (code, _, err) = jobcast(&[
        "bench",
        "rpc",
        "--url",
        &url,
        "--jwt-secret",
        SECRET,
        "--params",
        "{nope",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--params must be JSON"), "{err}");
    // A token the server refuses: the connection error is reported, not a hang.
    let (code, _, err) = jobcast(&[
        "bench",
        "rpc",
        "--url",
        &url,
        "--jwt-secret",
        "wrong",
        "-d",
        "1s",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("connection 0") || err.contains("connection"),
        "{err}"
    );
}

async fn fanout_mode(backend: Backend) {
    let s = Server::start_on(backend, &["--api-key", "k"]);
    let url = format!("ws://{}/ws", s.addr);
    let (code, v, err) = bench(&[
        "fanout",
        "-s",
        "50",
        "-r",
        "100",
        "-d",
        "1s",
        "--warmup",
        "200ms",
        "--api-key",
        "k",
        "--url",
        &url,
        "--jwt-secret",
        SECRET,
    ]);
    eprintln!("{v}");
    assert_eq!(code, 0, "{v} {err}");
    let published = v["published"].as_u64().unwrap_or(0);
    // 100/s for 1.2 s, every message to every subscriber, once.
    assert!((110..=130).contains(&published), "{v}");
    assert_eq!(v["delivered"].as_u64(), Some(published * 50), "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["droppedConnections"], 0, "{v}");
    assert!(v["latencyMs"]["count"].as_u64().unwrap_or(0) > 0, "{v}");
    // Each of the 100 messages due in the measured second has its publish timed once (one
    // more or less where a due time falls on the warm-up's end).
    let timed = v["publishMs"]["count"].as_u64().unwrap_or(0);
    assert!((99..=101).contains(&timed), "{v}");
    // The clock handed each of them over once.
    assert_eq!(v["paceLateMs"]["count"], timed, "{v}");
}

#[tokio::test]
async fn bench_fanout_on_embedded() {
    fanout_mode(Backend::Embedded).await;
}

#[tokio::test]
async fn bench_fanout_on_redis() {
    fanout_mode(Backend::Redis).await;
}

#[tokio::test]
async fn bench_idle_over_two_processes() {
    let s = Server::start(&["--max-connections-per-ip", "0"]);
    let url = format!("ws://{}/ws", s.addr);
    let pid = s.child.id().to_string();
    let (code, v, err) = bench(&[
        "idle",
        "-n",
        "300",
        "--processes",
        "2",
        "--source",
        "127.0.0.2,127.0.0.3",
        "--hold",
        "1s",
        "--pid",
        &pid,
        "--url",
        &url,
        "--jwt-secret",
        SECRET,
    ]);
    eprintln!("{v}");
    assert_eq!(code, 0, "{v} {err}");
    assert_eq!(v["established"], 300, "{v}");
    assert_eq!(v["failed"], 0, "{v}");
    assert_eq!(v["dropped"], 0, "{v}");
    assert!(v["bytesPerConnection"].is_number(), "{v}");
}

#[test]
fn bench_intrinsic_measures_the_machine() {
    let (code, v, err) = bench(&["intrinsic", "-d", "300ms", "--tick", "1ms"]);
    assert_eq!(code, 0, "{err}");
    eprintln!("{v}");
    assert_eq!(v["mode"], "intrinsic");
    // Each wake-up is recorded once; no sleep of 1 ms can happen more than 300 times in 300 ms.
    let wakeups = v["wakeups"].as_u64().unwrap_or(0);
    assert!((1..=300).contains(&wakeups), "{v}");
    assert_eq!(v["lateMs"]["count"], wakeups, "{v}");
    // Stalls counted from 1, 2 and 4 ms: each count includes the next.
    let stalls: Vec<u64> = ["1ms", "2ms", "4ms"]
        .iter()
        .map(|k| v["stallsFrom"][k].as_u64().unwrap())
        .collect();
    assert!(
        stalls[0] >= stalls[1] && stalls[1] >= stalls[2] && stalls[0] <= wakeups,
        "{v}"
    );

    let (code, _, err) = jobcast(&["bench", "intrinsic", "--tick", "0ms"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--tick must be more than 0"), "{err}");
}
