//! The HTTP server API (PROTOCOL.md §6) against real servers: every documented route, jobs over
//! HTTP on both backends, pushes to topics, users and everyone, the same across two gateways
//! on one Redis, and a `/metrics` scrape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use jobcast_redis::testing::RedisServer;
use serde_json::{Value, json};
use std::{collections::HashMap, time::Duration};
use tokio_websockets::Message;

const KEY: &str = "test-key";

fn with_key(flags: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["--api-key".into(), KEY.into()];
    v.extend(flags.iter().map(|s| s.to_string()));
    v
}

fn is_problem(r: &HttpResponse) -> bool {
    r.content_type == "application/problem+json" && r.json()["status"] == r.status
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let s = Server::start(&["--api-key", KEY]);
    let doc = http(s.addr, "GET", "/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{jobId}", "nope").replace("{userId}", "bob");
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "delete"].contains(&method.as_str()) {
                continue;
            }
            let m = method.to_uppercase();
            let documented: Vec<u16> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse().unwrap())
                .collect();
            let secured = op.get("security").is_some();
            if secured {
                let r = http(s.addr, &m, &concrete, None, Some("{}")).await;
                assert_eq!(r.status, 401, "{m} {path} without a key: {}", r.body);
                assert!(is_problem(&r), "{m} {path}: {}", r.body);
                let r = http(s.addr, &m, &concrete, Some("wrong"), Some("{}")).await;
                assert_eq!(r.status, 401, "{m} {path} with a wrong key");
            }
            // With the key (and an empty JSON object as body): a documented answer, never
            // the fallback.
            let r = http(s.addr, &m, &concrete, Some(KEY), Some("{}")).await;
            assert!(
                documented.contains(&r.status),
                "{m} {path}: {} not in {documented:?}: {}",
                r.status,
                r.body
            );
            assert_ne!(r.json()["detail"], "no such route", "{m} {path}");
            if r.status >= 400 {
                assert!(is_problem(&r), "{m} {path}: {}", r.body);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 15);
    // Undocumented routes and methods are problems too.
    let r = http(s.addr, "GET", "/v2/nothing", Some(KEY), None).await;
    assert_eq!(r.status, 404);
    assert!(is_problem(&r));
    let r = http(s.addr, "PUT", "/v1/publish", Some(KEY), Some("{}")).await;
    assert_eq!(r.status, 405);
    assert!(is_problem(&r));
    // Without any --api-key the server API is closed, and says so.
    let closed = Server::start(&[]);
    let r = http(closed.addr, "GET", "/stats", Some(KEY), None).await;
    assert_eq!(r.status, 401);
    assert!(r.json()["detail"].as_str().unwrap().contains("--api-key"));
}

async fn wait_job(addr: std::net::SocketAddr, id: &str, state: &str) -> Value {
    for _ in 0..500 {
        let r = http(addr, "GET", &format!("/v1/jobs/{id}"), Some(KEY), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        if v["state"] == state {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} never became {state}");
}

async fn jobs_over_http(backend: Backend) {
    let s = Server::start_on(backend, &["--api-key", KEY]);
    let post = |body: Value| {
        let addr = s.addr;
        async move { http(addr, "POST", "/v1/jobs", Some(KEY), Some(&body.to_string())).await }
    };
    let r =
        post(json!({"method": "demo.echo", "params": {"a": 1}, "jobId": "h-1", "userId": "alice"}))
            .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["jobId"], "h-1");
    assert_eq!(r.json()["duplicate"], false);
    let done = wait_job(s.addr, "h-1", "completed").await;
    assert_eq!(done["result"], json!({"a": 1}));
    assert_eq!(done["userId"], "alice");
    // The owner attaches over WebSocket and gets the final response (the job id as id).
    let mut ws = s.connect("alice").await;
    let att = ws.call("rpc.attach", json!({"jobId": "h-1"})).await;
    assert_eq!(att["result"]["state"], "completed");
    let fin = ws.recv_until(|v| v["jobId"] == "h-1").await;
    assert_eq!(fin["result"], json!({"a": 1}));
    // Idempotent resubmit; another user's id is refused.
    let r = post(json!({"method": "demo.echo", "jobId": "h-1", "userId": "alice"})).await;
    assert_eq!(
        (r.status, r.json()["duplicate"].clone()),
        (202, json!(true))
    );
    let r = post(json!({"method": "demo.echo", "jobId": "h-1", "userId": "mallory"})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // Cancel a delayed job.
    let r =
        post(json!({"method": "demo.echo", "jobId": "h-2", "options": {"delayMs": 60000}})).await;
    assert_eq!(r.json()["state"], "delayed");
    let r = http(s.addr, "DELETE", "/v1/jobs/h-2", Some(KEY), None).await;
    assert_eq!(r.json(), json!({"cancelled": true, "state": "cancelled"}));
    let r = http(s.addr, "DELETE", "/v1/jobs/h-2", Some(KEY), None).await;
    assert_eq!(r.json(), json!({"cancelled": false, "state": "cancelled"}));
    // Refusals carry the JSON-RPC code a WebSocket client would see.
    let cases = [
        (json!({"method": "no.such"}), 422, -32601),
        (
            json!({"method": "demo.echo", "options": {"priority": 5000}}),
            400,
            -32600,
        ),
        (
            json!({"method": "demo.echo", "options": {"bogus": 1}}),
            400,
            -32600,
        ),
        (json!({"method": "demo.echo", "jobId": ""}), 400, -32600),
        (json!({"method": "demo.echo", "params": 5}), 400, -32600),
        (json!({"method": "rpc.ping"}), 400, -32600),
    ];
    for (body, status, code) in cases {
        let r = post(body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(is_problem(&r));
        assert_eq!(r.json()["code"], code, "{body}");
    }
    for bad in [
        "{",
        "[]",
        r#"{"params":{}}"#,
        r#"{"method":"demo.echo","extra":1}"#,
    ] {
        let r = http(s.addr, "POST", "/v1/jobs", Some(KEY), Some(bad)).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(is_problem(&r), "{bad}");
    }
    let r = http(s.addr, "GET", "/v1/jobs/unknown", Some(KEY), None).await;
    assert_eq!((r.status, r.json()["code"].clone()), (404, json!(-32004)));
}

#[tokio::test]
async fn jobs_over_http_embedded() {
    jobs_over_http(Backend::Embedded).await;
}

#[tokio::test]
async fn jobs_over_http_redis() {
    jobs_over_http(Backend::Redis).await;
}

async fn post(addr: std::net::SocketAddr, path: &str, body: Value) -> HttpResponse {
    let r = http(addr, "POST", path, Some(KEY), Some(&body.to_string())).await;
    assert!(r.status == 202 || r.status == 400, "{path}: {}", r.body);
    r
}

#[tokio::test]
async fn pushes_to_topics_users_and_everyone() {
    let s = Server::start(&["--api-key", KEY]);
    let mut phone = s.connect("alice").await;
    let mut laptop = s.connect("alice").await;
    let mut bob = s.connect("bob").await;
    bob.call("rpc.subscribe", json!({"topic": "room:1"})).await;

    let r = post(
        s.addr,
        "/v1/publish",
        json!({"topic": "room:1", "data": {"n": 1}}),
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"topic": "room:1", "published": true, "delivered": 1})
    );
    let m = bob.recv_until(|v| v["method"] == "topic.message").await;
    assert_eq!(m["params"], json!({"topic": "room:1", "data": {"n": 1}}));

    let r = post(s.addr, "/v1/users/alice/send", json!({"data": "hi"})).await;
    assert_eq!(r.json()["delivered"], 2);
    for ws in [&mut phone, &mut laptop] {
        let m = ws.recv_until(|v| v["method"] == "topic.message").await;
        assert_eq!(m["params"], json!({"topic": "user:alice", "data": "hi"}));
    }
    let r = post(
        s.addr,
        "/v1/users/alice/send",
        json!({"method": "order.shipped", "data": {"id": 7}}),
    )
    .await;
    assert_eq!(r.json()["delivered"], 2);
    for ws in [&mut phone, &mut laptop] {
        let m = ws.recv_until(|v| v["method"] == "order.shipped").await;
        assert_eq!(m["params"], json!({"id": 7}));
    }

    let r = post(
        s.addr,
        "/v1/broadcast",
        json!({"data": {"maintenance": true}}),
    )
    .await;
    assert_eq!(r.json()["delivered"], 3);
    for ws in [&mut phone, &mut laptop, &mut bob] {
        let m = ws.recv_until(|v| v["method"] == "broadcast").await;
        assert_eq!(m["params"], json!({"data": {"maintenance": true}}));
    }
    // Bad pushes: reserved or empty methods, primitive params with a method, bad topics.
    for (path, body) in [
        (
            "/v1/users/alice/send",
            json!({"method": "rpc.ping", "data": {}}),
        ),
        ("/v1/users/alice/send", json!({"method": "x", "data": 1})),
        ("/v1/broadcast", json!({"method": "", "data": {}})),
        ("/v1/broadcast", json!({})),
        ("/v1/publish", json!({"topic": "a b", "data": 1})),
        ("/v1/publish", json!({"topic": "*", "data": 1})),
    ] {
        let r = post(s.addr, path, body.clone()).await;
        assert_eq!(r.status, 400, "{path} {body}");
        assert!(is_problem(&r));
    }
    assert!(bob.try_recv(Duration::from_millis(200)).await.is_none());
}

/// With `--topic-flush-interval`, a topic message arriving within the interval of the
/// connection's last write waits; the next response is never held and takes the waiting
/// messages along, ahead of it and in order.
#[tokio::test]
async fn topic_messages_wait_for_the_flush_interval() {
    let s = Server::start(&["--api-key", KEY, "--topic-flush-interval", "1h"]);
    let mut ws = s.connect("carol").await;
    // The subscribe response is a write: what the topic gets next waits.
    ws.call("rpc.subscribe", json!({"topic": "busy"})).await;
    for n in 1..=2 {
        let r = post(s.addr, "/v1/publish", json!({"topic": "busy", "data": n})).await;
        assert_eq!(r.json()["delivered"], 1);
    }
    assert!(ws.try_recv(Duration::from_millis(300)).await.is_none());
    let id = ws.request("rpc.ping", json!({})).await;
    for n in 1..=2 {
        let m = ws.recv().await;
        assert_eq!(m["method"], "topic.message", "{m}");
        assert_eq!(m["params"]["data"], n);
    }
    assert_eq!(ws.recv().await["id"], id);

    // A pong answers the peer: it ends a hold too, after the messages held before it.
    for n in 3..=4 {
        post(s.addr, "/v1/publish", json!({"topic": "busy", "data": n})).await;
    }
    assert!(ws.try_recv(Duration::from_millis(300)).await.is_none());
    ws.ws.send(Message::ping("hb")).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.ws.next())
            .await
            .expect("nothing within 5 s")
            .expect("connection ended")
            .unwrap();
        if let Some(t) = m.as_text() {
            got.push(serde_json::from_str::<Value>(t).unwrap()["params"]["data"].clone());
        } else if m.is_pong() {
            got.push(json!(format!(
                "pong {}",
                String::from_utf8_lossy(&m.into_payload())
            )));
        }
    }
    assert_eq!(got, [json!(3), json!(4), json!("pong hb")]);
}

/// Subscribers of a topic on one Redis, counted by PUBSUB NUMSUB.
fn numsub(redis: &RedisServer, topic: &str) -> i64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_connection().unwrap();
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("{{jobcast}}:t:{topic}"))
        .query(&mut c)
        .unwrap();
    n
}

/// Polls `numsub` until it shows `n` (for up to 2 s); returns the last figure.
async fn numsub_becomes(redis: &RedisServer, topic: &str, n: i64) -> i64 {
    let mut last = -1;
    for _ in 0..100 {
        last = numsub(redis, topic);
        if last == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last
}

/// Collects the `topic.message`/push frames a connection receives within `wait`.
async fn drain(ws: &mut Ws, wait: Duration) -> Vec<Value> {
    let mut v = Vec::new();
    while let Some(m) = ws.try_recv(wait).await {
        v.push(m);
    }
    v
}

#[tokio::test]
async fn topics_and_pushes_cross_gateways() {
    let redis = RedisServer::start().unwrap();
    let a = Server::start_gateway(&redis.url(), &with_key(&[]));
    let b = Server::start_gateway(&redis.url(), &with_key(&[]));
    let mut on_a = a.connect("alice").await;
    let mut on_b1 = b.connect("bob").await;
    let mut on_b2 = b.connect("alice").await;
    for ws in [&mut on_a, &mut on_b1, &mut on_b2] {
        ws.call("rpc.subscribe", json!({"topic": "room:9"})).await;
    }
    // One Redis subscription per gateway with local subscribers, not per connection. The
    // bus subscribes in the background: wait for both before publishing.
    assert_eq!(numsub_becomes(&redis, "room:9", 2).await, 2);

    // Published on A over WebSocket and over HTTP: everyone gets each exactly once.
    let mut publisher = a.connect("carol").await;
    let r = publisher
        .call(
            "rpc.publish",
            json!({"topic": "room:9", "data": {"via": "ws"}}),
        )
        .await;
    assert_eq!(r["result"]["delivered"], 1, "{r}");
    post(
        a.addr,
        "/v1/publish",
        json!({"topic": "room:9", "data": {"via": "http"}}),
    )
    .await;
    for ws in [&mut on_a, &mut on_b1, &mut on_b2] {
        let got: Vec<Value> = drain(ws, Duration::from_millis(500))
            .await
            .into_iter()
            .filter(|m| m["method"] == "topic.message" && m["params"]["topic"] == "room:9")
            .map(|m| m["params"]["data"]["via"].clone())
            .collect();
        assert_eq!(got, vec![json!("ws"), json!("http")]);
    }

    // A user's devices on both gateways; a broadcast reaches every connection.
    post(
        a.addr,
        "/v1/users/alice/send",
        json!({"method": "note", "data": {"k": 1}}),
    )
    .await;
    post(b.addr, "/v1/broadcast", json!({"data": 2})).await;
    // Pushes from different gateways are not ordered with each other: compare sorted lists
    // (a push received twice would show twice).
    let mut seen: HashMap<&str, Vec<String>> = HashMap::new();
    for (name, ws) in [("a", &mut on_a), ("b1", &mut on_b1), ("b2", &mut on_b2)] {
        let mut methods: Vec<String> = drain(ws, Duration::from_millis(500))
            .await
            .iter()
            .map(|m| m["method"].as_str().unwrap_or_default().to_owned())
            .collect();
        methods.sort();
        seen.insert(name, methods);
    }
    assert_eq!(seen["a"], vec!["broadcast", "note"]);
    assert_eq!(seen["b1"], vec!["broadcast"]);
    assert_eq!(seen["b2"], vec!["broadcast", "note"]);

    // The subscription goes when the last local subscriber leaves.
    on_b1
        .call("rpc.unsubscribe", json!({"topic": "room:9"}))
        .await;
    assert_eq!(numsub(&redis, "room:9"), 2);
    on_b2
        .call("rpc.unsubscribe", json!({"topic": "room:9"}))
        .await;
    on_a.call("rpc.unsubscribe", json!({"topic": "room:9"}))
        .await;
    assert_eq!(numsub_becomes(&redis, "room:9", 0).await, 0);
}

/// Parses Prometheus text into `name{labels}` → value, checking every line's shape.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix('#') {
            let kind = rest.split_whitespace().next().unwrap_or_default();
            assert!(kind == "HELP" || kind == "TYPE", "bad comment: {line}");
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        out.insert(series.to_owned(), v);
    }
    out
}

#[tokio::test]
async fn metrics_scrape_parses() {
    let s = Server::start(&["--api-key", KEY]);
    let mut ws = s.connect("alice").await;
    let id = ws.job("demo.echo", json!({}), json!({})).await;
    assert_eq!(ws.final_for(&id).await["result"], json!({}));
    let bad = ws.job("no.such", json!({}), json!({})).await;
    ws.final_for(&bad).await;
    // Refused for its options before the method is looked up: a served method keeps its
    // name in the labels, a name nobody serves does not.
    for method in ["demo.echo", "made.up"] {
        let id = ws
            .job(method, json!({}), json!({"options": {"attempts": 0}}))
            .await;
        let reply = ws.final_for(&id).await;
        assert_eq!(reply["error"]["code"], json!(-32600), "{reply}");
    }
    let r = http(s.addr, "GET", "/metrics", None, None).await;
    assert_eq!(r.status, 401);
    let r = http(s.addr, "GET", "/metrics", Some(KEY), None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/plain"),
        "{}",
        r.content_type
    );
    let m = parse_prometheus(&r.body);
    assert_eq!(m["jobcast_connections"], 1.0, "{}", r.body);
    assert!(m["jobcast_connections_opened_total"] >= 1.0);
    assert_eq!(
        m[r#"jobcast_job_calls_total{method="demo.echo",outcome="accepted"}"#],
        1.0
    );
    assert_eq!(
        m[r#"jobcast_job_calls_total{method="unknown",outcome="-32601"}"#],
        1.0
    );
    assert_eq!(
        m[r#"jobcast_job_calls_total{method="demo.echo",outcome="-32600"}"#],
        1.0
    );
    assert_eq!(
        m[r#"jobcast_job_calls_total{method="unknown",outcome="-32600"}"#], 1.0,
        "{}",
        r.body
    );
    assert_eq!(m["jobcast_job_submit_to_response_seconds_count"], 1.0);
    assert!(m.contains_key(r#"jobcast_job_submit_to_response_seconds_bucket{le="+Inf"}"#));
    assert!(m["jobcast_messages_received_total"] >= 2.0);
    // rpc.welcome, job.accepted, two final responses.
    assert!(m["jobcast_messages_sent_total"] >= 4.0, "{}", r.body);
    assert!(r.body.contains("# TYPE jobcast_job_calls_total counter"));
    // The worker of `serve` records into the same registry.
    assert_eq!(m["jobcast_job_wait_seconds_count"], 1.0, "{}", r.body);
    assert_eq!(
        m[r#"jobcast_job_run_seconds_count{method="demo.echo",outcome="completed"}"#],
        1.0
    );
    assert_eq!(m[r#"jobcast_queue_jobs{state="completed"}"#], 1.0);
}

#[tokio::test]
async fn worker_and_gateway_metrics_on_redis() {
    let redis = RedisServer::start().unwrap();
    let gw = Server::start_gateway(&redis.url(), &with_key(&[]));
    let flags: Vec<String> = vec!["--metrics-listen".into(), "127.0.0.1:0".into()];
    let (_worker, banner) = spawn_worker_with_banner(&redis.url(), &flags);
    let addr: std::net::SocketAddr = banner
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {banner}"));
    wait_for_worker(&redis.url());
    let mut ws = gw.connect("alice").await;
    for i in 0..3 {
        let id = ws.job("demo.echo", json!({"i": i}), json!({})).await;
        assert_eq!(ws.final_for(&id).await["result"], json!({"i": i}));
    }
    let w = http(addr, "GET", "/metrics", None, None).await;
    assert_eq!(w.status, 200);
    let m = parse_prometheus(&w.body);
    assert_eq!(
        m.get("jobcast_job_wait_seconds_count"),
        Some(&3.0),
        "{}",
        w.body
    );
    assert_eq!(
        m[r#"jobcast_job_run_seconds_count{method="demo.echo",outcome="completed"}"#],
        3.0
    );
    assert!(m["jobcast_redis_call_seconds_count"] >= 3.0);
    let g = http(gw.addr, "GET", "/metrics", Some(KEY), None).await;
    let m = parse_prometheus(&g.body);
    assert!(m["jobcast_redis_call_seconds_count"] >= 3.0, "{}", g.body);
    assert_eq!(m["jobcast_job_submit_to_response_seconds_count"], 3.0);
}

#[tokio::test]
async fn jobs_command_for_operators() {
    let s = Server::start(&["--api-key", KEY]);
    let url = format!("http://{}", s.addr);
    let jobs = |args: &[&str]| {
        let mut all = vec!["jobs", "--url", url.as_str(), "--api-key", KEY];
        all.extend_from_slice(args);
        jobcast(&all)
    };
    // A job that dies, and one cancelled before it runs.
    let r = post(
        s.addr,
        "/v1/jobs",
        json!({"method": "demo.fail", "params": {"times": 1}, "jobId": "dies"}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    wait_job(s.addr, "dies", "failed").await;
    post(
        s.addr,
        "/v1/jobs",
        json!({"method": "demo.echo", "params": {"x": 1}, "jobId": "later", "options": {"delayMs": 60000}}),
    )
    .await;

    let (code, out, err) = jobs(&["list", "--state", "failed"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("dies ") && l.contains("demo.fail")),
        "{out}"
    );
    let (code, out, _) = jobs(&["list", "--state", "delayed", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["jobs"][0]["jobId"], "later");

    let (code, out, _) = jobs(&["cancel", "later"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"cancelled": true, "state": "cancelled"})
    );
    // Retrying the cancelled job runs it now; retrying the dead one runs it again.
    let (code, out, _) = jobs(&["retry", "later"]);
    assert_eq!(
        (code, out.trim()),
        (0, r#"{"retried":true,"state":"queued"}"#)
    );
    assert_eq!(
        wait_job(s.addr, "later", "completed").await["result"],
        json!({"x": 1})
    );
    let (code, _, _) = jobs(&["retry", "dies"]);
    assert_eq!(code, 0);
    let again = wait_job(s.addr, "dies", "failed").await;
    assert_eq!(again["attempt"], 1);
    let (code, out, _) = jobs(&["retry", "later"]);
    assert_eq!(
        (code, out.trim()),
        (0, r#"{"retried":false,"state":"completed"}"#)
    );

    let (code, out, _) = jobs(&["show", "later"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["state"],
        "completed"
    );
    let (code, out, _) = jobs(&["purge", "--state", "completed"]);
    assert_eq!((code, out.trim()), (0, r#"{"purged":1}"#));
    let (code, out, _) = jobs(&["purge", "--state", "failed", "--older-than", "1h"]);
    assert_eq!((code, out.trim()), (0, r#"{"purged":0}"#));

    // Refusals: exit 1 with the problem on stderr.
    let (code, _, err) = jobs(&["show", "later"]);
    assert_eq!(code, 1);
    assert!(err.contains("-32004"), "{err}");
    let (code, _, err) = jobs(&["list", "--state", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("400"), "{err}");
    let (code, _, err) = jobs(&["purge", "--state", "active"]);
    assert_eq!(code, 1);
    assert!(err.contains("only ended jobs"), "{err}");
    let (code, _, err) = jobs(&["purge", "--state", "failed", "--older-than", "soon"]);
    assert_eq!(code, 1);
    assert!(err.contains("olderThan"), "{err}");
    let (code, _, _) = jobcast(&["jobs", "--url", &url, "--api-key", "wrong", "list"]);
    assert_eq!(code, 1);
    let (code, _, err) = jobcast(&["jobs", "--url", "ftp://x", "--api-key", KEY, "list"]);
    assert_eq!(code, 2, "{err}");
}

#[tokio::test]
async fn oversized_bodies_are_a_problem() {
    let s = Server::start(&["--api-key", KEY, "--max-message-bytes", "1000"]);
    let body = json!({"topic": "t", "data": "x".repeat(2000)}).to_string();
    let r = http(s.addr, "POST", "/v1/publish", Some(KEY), Some(&body)).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(is_problem(&r), "{} {}", r.content_type, r.body);
}
