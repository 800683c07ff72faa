//! Graceful drain under load: SIGTERM in the middle of a stream of jobs, then every accepted
//! job is counted. A gateway closes its clients with 1012 and exits; a worker stops claiming,
//! lets running jobs finish within its grace and hands back the rest; `serve` keeps what it
//! could not run for its next start. No accepted job is lost, and none ends twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use jobcast_redis::testing::RedisServer;
use serde_json::{Value, json};
use std::{
    collections::{HashMap, HashSet},
    process::Child,
    time::{Duration, Instant},
};

fn flags(f: &[&str]) -> Vec<String> {
    f.iter().map(|s| s.to_string()).collect()
}

/// What a client saw of its jobs.
#[derive(Default)]
struct Tally {
    /// Job ids sent, in order.
    sent: Vec<String>,
    /// Job ids whose `job.accepted` arrived.
    accepted: HashSet<String>,
    /// Final responses by job id (a second one for the same job fails the test).
    finished: HashMap<String, Value>,
}

impl Tally {
    fn note(&mut self, v: &Value) {
        if v["method"] == "job.accepted" {
            self.accepted
                .insert(v["params"]["jobId"].as_str().unwrap().to_owned());
        } else if v.get("method").is_none()
            && let Some(id) = v["jobId"].as_str()
            && (v.get("result").is_some() || v.get("error").is_some())
        {
            let before = self.finished.insert(id.to_owned(), v.clone());
            assert!(before.is_none(), "{id} ended twice: {v}");
        }
    }

    fn unfinished(&self) -> Vec<String> {
        self.sent
            .iter()
            .filter(|id| !self.finished.contains_key(*id))
            .cloned()
            .collect()
    }
}

/// Sends `n` `demo.sleep` jobs with ids `<prefix>-<i>`, each sleeping `ms`.
async fn submit(ws: &mut Ws, tally: &mut Tally, prefix: &str, n: usize, ms: u64) {
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        ws.job("demo.sleep", json!({"ms": ms}), json!({"jobId": id}))
            .await;
        tally.sent.push(id);
    }
}

/// Reads messages into `tally` until `done` holds, or the server closes the connection;
/// returns the close code then.
async fn read_until(ws: &mut Ws, tally: &mut Tally, done: impl Fn(&Tally) -> bool) -> Option<u16> {
    use futures_util::StreamExt;
    while !done(tally) {
        let m = tokio::time::timeout(WAIT, ws.ws.next())
            .await
            .expect("no message in time");
        match m {
            Some(Ok(m)) if m.is_close() => {
                return Some(m.as_close().map(|(c, _)| c.into()).unwrap_or(0));
            }
            Some(Ok(m)) => {
                if let Some(t) = m.as_text() {
                    tally.note(&serde_json::from_str(t).unwrap());
                }
            }
            other => panic!("connection ended without a close frame: {other:?}"),
        }
    }
    None
}

/// Attaches each job in `ids` on `ws`; each must exist and end, except jobs that were sent
/// but never acknowledged, which may instead be unknown (-32004): they were never accepted.
async fn attach_all(ws: &mut Ws, tally: &mut Tally, ids: &[String]) {
    let mut waiting = HashSet::new();
    for id in ids {
        let att = ws.request("rpc.attach", json!({"jobId": id})).await;
        let mut reply = None;
        // Finals of jobs attached earlier may arrive in between.
        while reply.is_none() {
            let v = ws.recv().await;
            if v["id"] == att {
                reply = Some(v);
            } else {
                tally.note(&v);
            }
        }
        let reply = reply.unwrap();
        if reply.get("result").is_some() {
            waiting.insert(id.clone());
        } else {
            assert_eq!(reply["error"]["code"], -32004, "{reply}");
            assert!(
                !tally.accepted.contains(id),
                "accepted job {id} is gone: {reply}"
            );
        }
    }
    read_until(ws, tally, |t| {
        waiting.iter().all(|id| t.finished.contains_key(id))
    })
    .await;
}

fn assert_all_accepted_completed(tally: &Tally) {
    assert!(!tally.accepted.is_empty());
    for id in &tally.accepted {
        let v = tally
            .finished
            .get(id)
            .unwrap_or_else(|| panic!("accepted job {id} never ended"));
        assert!(
            v["result"]["slept"].is_number(),
            "{id} did not complete: {v}"
        );
    }
}

/// Waits for a process to exit by itself; panics if it is still running after `within`.
fn exits_within(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "still running {within:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to a server under load: its client is closed with 1012 and the process exits
/// cleanly within 10 s. Returns the jobs sent but not yet ended (there must be some, or the
/// test proves nothing).
async fn stop_mid_load(mut s: Server, ws: &mut Ws, tally: &mut Tally) -> Vec<String> {
    s.sigterm();
    assert_eq!(read_until(ws, tally, |_| false).await, Some(1012));
    let status = tokio::task::spawn_blocking(move || {
        let st = exits_within(&mut s.child, Duration::from_secs(10));
        drop(s);
        st
    })
    .await
    .unwrap();
    assert!(status.success(), "exited with {status}");
    let left = tally.unfinished();
    assert!(
        !left.is_empty(),
        "the load ended before SIGTERM; the test proves nothing"
    );
    left
}

fn sigterm(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

#[tokio::test]
async fn serve_sigterm_mid_load_keeps_every_accepted_job() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        dir.path(),
        &["--drain-timeout", "300ms", "--worker-concurrency", "8"],
    );
    let mut ws = s.connect("alice").await;
    let mut tally = Tally::default();
    // 8 at a time, 100 ms each: about 1.5 s of work for 120 jobs.
    submit(&mut ws, &mut tally, "s", 120, 100).await;
    read_until(&mut ws, &mut tally, |t| t.finished.len() >= 30).await;
    let left = stop_mid_load(s, &mut ws, &mut tally).await;

    // The next start runs what was left, each job once.
    let s = Server::start_in(dir.path(), &[]);
    let mut ws = s.connect("alice").await;
    attach_all(&mut ws, &mut tally, &left).await;
    assert_all_accepted_completed(&tally);
}

#[tokio::test]
async fn worker_sigterm_mid_load_hands_back_its_jobs() {
    let redis = RedisServer::start().unwrap();
    let gw = Server::start_gateway(&redis.url(), &[]);
    // Leases far longer than the test: a job that was not handed back would not run again
    // in time.
    // Jobs run 500 ms and the grace is 100 ms: the stopping worker cannot finish its jobs.
    let wk = flags(&[
        "--concurrency",
        "10",
        "--lease",
        "120s",
        "--drain-timeout",
        "100ms",
    ]);
    let mut w1 = spawn_worker(&redis.url(), &wk);
    wait_for_worker(&redis.url());
    let _w2 = spawn_worker(&redis.url(), &wk);
    let mut ws = gw.connect("alice").await;
    let mut tally = Tally::default();
    submit(&mut ws, &mut tally, "w", 100, 500).await;
    read_until(&mut ws, &mut tally, |t| t.finished.len() >= 20).await;
    sigterm(w1.0.id());
    let status = exits_within(&mut w1.0, Duration::from_secs(10));
    assert!(status.success(), "worker exited with {status}");
    // Everything ends on the other worker, each job once.
    read_until(&mut ws, &mut tally, |t| t.finished.len() == 100).await;
    assert_eq!(tally.accepted.len(), 100);
    assert_all_accepted_completed(&tally);
}

#[tokio::test]
async fn gateway_sigterm_mid_load_sends_clients_elsewhere() {
    let redis = RedisServer::start().unwrap();
    let g1 = Server::start_gateway(&redis.url(), &flags(&["--drain-timeout", "2s"]));
    let g2 = Server::start_gateway(&redis.url(), &[]);
    let _w = spawn_worker(&redis.url(), &flags(&["--concurrency", "10"]));
    wait_for_worker(&redis.url());
    let mut ws = g1.connect("alice").await;
    let mut tally = Tally::default();
    submit(&mut ws, &mut tally, "g", 100, 100).await;
    read_until(&mut ws, &mut tally, |t| t.finished.len() >= 20).await;
    let left = stop_mid_load(g1, &mut ws, &mut tally).await;
    // The client does what 1012 asks: reconnects (here, to the other gateway) and attaches.
    let mut ws = g2.connect("alice").await;
    attach_all(&mut ws, &mut tally, &left).await;
    assert_all_accepted_completed(&tally);
}
