//! The distributed deployment's failure cases: several gateways and workers on one real
//! redis-server, with processes killed (-9) and Redis restarted or gone.

mod common;

use common::*;
use jobcast_redis::testing::RedisServer;
use serde_json::{Value, json};
use std::time::Duration;

fn flags(f: &[&str]) -> Vec<String> {
    f.iter().map(|s| s.to_string()).collect()
}

async fn wait_state(ws: &mut Ws, job: &str, state: &str) {
    for _ in 0..200 {
        if ws.call("rpc.status", json!({"jobId": job})).await["result"]["state"] == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{job} never became {state}");
}

/// Attaches and returns the job's final response (pushed at once if it already ended).
async fn attach_final(ws: &mut Ws, job: &str) -> Value {
    let att = ws.request("rpc.attach", json!({"jobId": job})).await;
    let snap = ws.recv_until(|v| v["id"] == att).await;
    assert!(snap.get("result").is_some(), "attach failed: {snap}");
    ws.recv_until(|v| v["jobId"] == job && v.get("method").is_none())
        .await
}

#[tokio::test]
async fn two_gateways_two_workers_attach_across_gateways() {
    let redis = RedisServer::start().unwrap();
    let a = Server::start_gateway(&redis.url(), &[]);
    let b = Server::start_gateway(&redis.url(), &[]);
    let mut w1 = spawn_worker(&redis.url(), &[]);
    let mut w2 = spawn_worker(&redis.url(), &[]);
    wait_for_worker(&redis.url());
    let mut on_a = a.connect("alice").await;
    let id = on_a
        .job(
            "demo.progress",
            json!({"steps": 10, "intervalMs": 100}),
            json!({"jobId": "shared"}),
        )
        .await;
    on_a.recv_until(|v| v["method"] == "job.accepted").await;
    on_a.recv_until(|v| v["method"] == "job.progress").await;

    let mut on_b = b.connect("alice").await;
    let att = on_b.request("rpc.attach", json!({"jobId": "shared"})).await;
    let snap = on_b.recv_until(|v| v["id"] == att).await;
    assert_eq!(snap["result"]["state"], "active");
    let p = on_b.recv_until(|v| v["method"] == "job.progress").await;
    assert_eq!(p["params"]["jobId"], "shared");
    let fin_b = on_b
        .recv_until(|v| v["jobId"] == "shared" && v.get("method").is_none())
        .await;
    assert_eq!(fin_b["result"], json!({"steps": 10}));
    assert_eq!(fin_b["id"], id, "attachers get the original request id");
    let fin_a = on_a.final_for(&id).await;
    assert_eq!(fin_a["result"], json!({"steps": 10}));

    let mut mallory = b.connect("mallory").await;
    for m in ["rpc.attach", "rpc.status", "rpc.cancel"] {
        assert_eq!(
            mallory.call(m, json!({"jobId": "shared"})).await["error"]["code"],
            -32004,
            "{m}"
        );
    }
    // Cancellation from the other gateway reaches the worker running the job.
    let id = on_a
        .job(
            "demo.sleep",
            json!({"ms": 30_000}),
            json!({"jobId": "to-cancel"}),
        )
        .await;
    on_a.recv_until(|v| v["method"] == "job.accepted").await;
    wait_state(&mut on_b, "to-cancel", "active").await;
    assert_eq!(
        on_b.call("rpc.cancel", json!({"jobId": "to-cancel"})).await["result"]["cancelled"],
        true
    );
    assert_eq!(on_a.final_for(&id).await["error"]["code"], -32002);
    w1.kill9();
    w2.kill9();
}

#[tokio::test]
async fn killed_worker_job_completes_on_the_other_worker() {
    let redis = RedisServer::start().unwrap();
    let gw = Server::start_gateway(&redis.url(), &[]);
    let mut w1 = spawn_worker(&redis.url(), &flags(&["--lease", "1s"]));
    wait_for_worker(&redis.url());
    let mut ws = gw.connect("alice").await;
    let id = ws
        .job(
            "demo.sleep",
            json!({"ms": 1500}),
            json!({"jobId": "orphan"}),
        )
        .await;
    ws.recv_until(|v| v["method"] == "job.accepted").await;
    wait_state(&mut ws, "orphan", "active").await;
    let mut w2 = spawn_worker(&redis.url(), &flags(&["--lease", "1s"]));
    w1.kill9();
    let fin = ws.final_for(&id).await;
    assert_eq!(fin["result"], json!({"slept": 1500}));
    let snap = ws.call("rpc.status", json!({"jobId": "orphan"})).await;
    assert_eq!(
        snap["result"]["attempt"], 2,
        "the lost attempt is counted: {snap}"
    );
    assert!(
        ws.try_recv(Duration::from_millis(1500)).await.is_none(),
        "a second final response"
    );
    w2.kill9();
}

#[tokio::test]
async fn killed_gateway_client_attaches_on_the_other() {
    let redis = RedisServer::start().unwrap();
    let mut a = Server::start_gateway(&redis.url(), &[]);
    let b = Server::start_gateway(&redis.url(), &[]);
    let mut w = spawn_worker(&redis.url(), &[]);
    wait_for_worker(&redis.url());
    let mut ws = a.connect("alice").await;
    ws.job(
        "demo.sleep",
        json!({"ms": 800}),
        json!({"jobId": "survivor"}),
    )
    .await;
    ws.recv_until(|v| v["method"] == "job.accepted").await;
    a.kill9();
    drop(ws);
    let mut ws = b.connect("alice").await;
    let fin = attach_final(&mut ws, "survivor").await;
    assert_eq!(fin["result"], json!({"slept": 800}));
    w.kill9();
}

#[tokio::test]
async fn jobs_and_results_survive_a_redis_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start_in(dir.path().join("redis"), true, None).unwrap();
    let gw = Server::start_gateway(&redis.url(), &[]);
    let mut w = spawn_worker(&redis.url(), &flags(&["--concurrency", "1"]));
    wait_for_worker(&redis.url());
    let mut ws = gw.connect("alice").await;
    let done = ws
        .job(
            "demo.echo",
            json!({"before": true}),
            json!({"jobId": "done"}),
        )
        .await;
    ws.final_for(&done).await;
    for (job, method, params, opts) in [
        ("running", "demo.sleep", json!({"ms": 800}), json!({})),
        ("queued", "demo.echo", json!({"q": 1}), json!({})),
        (
            "delayed",
            "demo.echo",
            json!({"d": 1}),
            json!({"delayMs": 1000}),
        ),
    ] {
        ws.job(method, params, json!({"jobId": job, "options": opts}))
            .await;
        ws.recv_until(|v| v["method"] == "job.accepted").await;
    }
    redis.restart().unwrap();
    // Everything accepted still runs; results survive.
    let mut ws2 = None;
    for _ in 0..100 {
        if let Ok(c) = tokio::time::timeout(Duration::from_secs(2), gw.connect("alice")).await {
            ws2 = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ws = ws2.expect("gateway unusable after Redis restart");
    let mut results = Vec::new();
    for job in ["done", "running", "queued", "delayed"] {
        let mut fin = None;
        for _ in 0..50 {
            let s = ws.call("rpc.status", json!({"jobId": job})).await;
            if s["result"]["state"] == "completed" {
                fin = Some(s["result"]["result"].clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        results.push(fin.unwrap_or_else(|| panic!("{job} did not complete after the restart")));
    }
    assert_eq!(
        results,
        vec![
            json!({"before": true}),
            json!({"slept": 800}),
            json!({"q": 1}),
            json!({"d": 1})
        ]
    );
    w.kill9();
}

#[tokio::test]
async fn redis_outage_is_survived() {
    let mut redis = RedisServer::start().unwrap();
    let mut gw = Server::start_gateway(&redis.url(), &[]);
    let mut w = spawn_worker(&redis.url(), &[]);
    wait_for_worker(&redis.url());
    assert_eq!(http_get(gw.addr, "/readyz").await.0, 200);
    let mut ws = gw.connect("alice").await;
    redis.kill();
    // Not ready, and new calls are refused with -32005 instead of hanging.
    let mut not_ready = false;
    for _ in 0..50 {
        if http_get(gw.addr, "/readyz").await.0 == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(not_ready, "/readyz stayed ready without Redis");
    let id = ws.job("demo.echo", json!({}), json!({})).await;
    let v = tokio::time::timeout(Duration::from_secs(15), ws.recv_until(|v| v["id"] == id))
        .await
        .expect("a call hung while Redis was down");
    assert_eq!(v["error"]["code"], -32005, "{v}");
    assert!(gw.child.try_wait().unwrap().is_none(), "gateway died");
    assert!(w.alive(), "worker died");
    // Redis returns: everything recovers by itself.
    redis.restart().unwrap();
    let mut recovered = false;
    for _ in 0..100 {
        if http_get(gw.addr, "/readyz").await.0 == 200 {
            let id = ws.job("demo.echo", json!({"back": 1}), json!({})).await;
            let v = ws.recv_until(|v| v["id"] == id).await;
            if v["result"] == json!({"back": 1}) {
                recovered = true;
                break;
            }
            // The worker re-announces its methods within a few seconds.
            assert!(
                matches!(v["error"]["code"].as_i64(), Some(-32601 | -32005)),
                "{v}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recovered, "no recovery after Redis returned");
    w.kill9();
}
