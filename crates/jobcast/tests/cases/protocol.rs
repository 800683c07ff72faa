//! PROTOCOL.md §1–§5 and §7 over real WebSockets, as cases taking the backend to run on:
//! `protocol_embedded.rs` runs them against `jobcast serve`, `protocol_redis.rs` against
//! `jobcast gateway` + `jobcast worker` + a private redis-server.

// Cases panic on unexpected results; that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {v}"))
}

pub async fn welcome_ping_and_methods(backend: Backend) {
    let s = Server::start_on(backend, &[]);
    let uri = format!(
        "ws://{}/ws?token={}&deviceId=d1&platform=web",
        s.addr,
        token("alice", None)
    );
    let (mut ws, _) = tokio_websockets::ClientBuilder::new()
        .uri(&uri)
        .unwrap()
        .connect()
        .await
        .unwrap();
    use futures_util::StreamExt;
    let m = ws.next().await.unwrap().unwrap();
    let welcome: Value = serde_json::from_str(m.as_text().unwrap()).unwrap();
    assert_eq!(welcome["method"], "rpc.welcome");
    let p = &welcome["params"];
    assert_eq!(p["userId"], "alice");
    assert_eq!(p["protocol"], "jobcast.v1");
    assert_eq!(p["heartbeatMs"], 25000);
    assert!(p["connectionId"].as_str().unwrap().starts_with("c_"));
    assert!(p["serverId"].as_str().is_some());

    let mut ws = s.connect("alice").await;
    let pong = ws.call("rpc.ping", json!({})).await;
    assert!(pong["result"]["pong"].as_u64().unwrap() > 1_600_000_000_000);
    let methods = ws.call("rpc.methods", json!({})).await;
    let list = methods["result"]["methods"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["demo.echo", "demo.fail", "demo.progress", "demo.sleep"]
    );
    let sleep = list.iter().find(|m| m["name"] == "demo.sleep").unwrap();
    assert_eq!(sleep["paramsSchema"]["required"], json!(["ms"]));
}

pub async fn stats_behind_the_api_key(backend: Backend) {
    let s = Server::start_on(backend, &["--api-key", "k1,k2"]);
    let _a = s.connect("alice").await;
    let _b = s
        .connect_with(&token("bob", Some(json!({"userType": "admin"}))))
        .await;
    let _b2 = s.connect("bob").await;
    let get = |key: Option<&'static str>| {
        let addr = s.addr;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let auth = key
                .map(|k| format!("Authorization: Bearer {k}\r\n"))
                .unwrap_or_default();
            c.write_all(
                format!("GET /stats HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    assert!(get(None).await.starts_with("HTTP/1.1 401"));
    assert!(get(Some("wrong")).await.starts_with("HTTP/1.1 401"));
    let ok = get(Some("k2")).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let body: Value = serde_json::from_str(ok.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["totalConnections"], 3);
    assert_eq!(body["uniqueUsers"], 2);
    assert_eq!(body["byUserType"], json!({"admin": 1, "default": 2}));
    assert!(body["serverId"].is_string());
    assert_eq!(body["queue"]["queued"], 0);
}

pub async fn refused_upgrades_are_plain_http(backend: Backend) {
    let s = Server::start_on(backend, &[]);
    let (status, text, _) = raw_upgrade(s.addr, "/ws", &[]).await;
    assert_eq!(status, 401, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{text}"
    );
    let (status, _, _) = raw_upgrade(s.addr, "/ws?token=garbage", &[]).await;
    assert_eq!(status, 401);
    let wrong = jobcast_gateway::auth::mint(b"other-secret", "alice", 3600, None).unwrap();
    let (status, _, _) = raw_upgrade(s.addr, &format!("/ws?token={wrong}"), &[]).await;
    assert_eq!(status, 401);
    let expired = token("alice", Some(json!({"exp": 1000})));
    let (status, _, _) = raw_upgrade(s.addr, &format!("/ws?token={expired}"), &[]).await;
    assert_eq!(status, 401);
    let none_alg = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsImV4cCI6OTk5OTk5OTk5OX0.";
    let (status, _, _) = raw_upgrade(s.addr, &format!("/ws?token={none_alg}"), &[]).await;
    assert_eq!(status, 401);

    // The three credential places, first match wins.
    let good = token("alice", None);
    let auth = format!("Bearer {good}");
    let (status, text, _) =
        raw_upgrade(s.addr, "/ws?token=garbage", &[("Authorization", &auth)]).await;
    assert_eq!(status, 101, "{text}");
    let proto = format!("jobcast.v1, bearer.{good}");
    let (status, text, _) = raw_upgrade(s.addr, "/ws", &[("Sec-WebSocket-Protocol", &proto)]).await;
    assert_eq!(status, 101, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("sec-websocket-protocol: jobcast.v1"),
        "{text}"
    );
    assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{text}");
    // Not an upgrade at all.
    let mut plain = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    plain.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 426"), "{out}");
}

pub async fn job_with_progress_in_order(backend: Backend) {
    let s = Server::start_on(backend, &[]);
    let mut ws = s.connect("alice").await;
    let id = ws
        .job(
            "demo.progress",
            json!({"steps": 5, "intervalMs": 20}),
            json!({}),
        )
        .await;
    let accepted = ws.recv().await;
    assert_eq!(
        accepted["method"], "job.accepted",
        "accepted must come first: {accepted}"
    );
    assert_eq!(accepted["params"]["requestId"], id);
    assert_eq!(accepted["params"]["state"], "queued");
    assert_eq!(accepted["params"]["duplicate"], false);
    let job_id = accepted["params"]["jobId"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    loop {
        let v = ws.recv().await;
        if v["method"] == "job.progress" {
            assert_eq!(v["params"]["jobId"], job_id.as_str());
            assert_eq!(v["params"]["requestId"], id);
            seen.push(v["params"]["progress"].as_u64().unwrap());
        } else {
            assert_eq!(v["id"], id);
            assert_eq!(v["jobId"], job_id.as_str());
            assert_eq!(v["result"], json!({"steps": 5}));
            break;
        }
    }
    assert_eq!(seen, vec![20, 40, 60, 80, 100]);
    let status = ws.call("rpc.status", json!({"jobId": job_id})).await;
    let snap = &status["result"];
    assert_eq!(snap["state"], "completed");
    assert_eq!(snap["progress"], 100);
    assert_eq!(snap["attempt"], 1);
    assert_eq!(snap["attempts"], 1);
    assert_eq!(snap["result"], json!({"steps": 5}));
    assert!(snap["finishedAt"].as_u64().unwrap() >= snap["startedAt"].as_u64().unwrap());
    assert!(snap.get("owner").is_none());

    // Array params and ack:false.
    let id = ws
        .job(
            "demo.echo",
            json!([1, "two"]),
            json!({"options": {"ack": false}}),
        )
        .await;
    let v = ws.recv().await;
    assert_eq!(v["id"], id, "no job.accepted with ack:false: {v}");
    assert_eq!(v["result"], json!([1, "two"]));
}

pub async fn every_error_code(backend: Backend) {
    let s = Server::start_on(backend, &["--max-queued", "3"]);
    let mut ws = s.connect("alice").await;
    // -32700
    ws.send_text("{not json").await;
    let v = ws.recv().await;
    assert_eq!(code(&v), -32700);
    assert_eq!(v["id"], Value::Null);
    // -32600 variants, each with the request id when it could be read.
    for (req, id) in [
        (
            json!({"jsonrpc":"1.0","id":1,"method":"demo.echo"}),
            json!(1),
        ),
        (json!({"id":2,"method":"demo.echo"}), json!(2)),
        (json!({"jsonrpc":"2.0","id":3,"method":5}), json!(3)),
        (
            json!({"jsonrpc":"2.0","id":4,"method":"demo.echo","params":"x"}),
            json!(4),
        ),
        (
            json!({"jsonrpc":"2.0","id":5,"method":"demo.echo","jobId":"bad id!"}),
            json!(5),
        ),
        (
            json!({"jsonrpc":"2.0","id":6,"method":"demo.echo","jobId":"x".repeat(129)}),
            json!(6),
        ),
        (
            json!({"jsonrpc":"2.0","id":7,"method":"demo.echo","options":{"priority":5000}}),
            json!(7),
        ),
        (
            json!({"jsonrpc":"2.0","id":8,"method":"demo.echo","options":{"attempts":0}}),
            json!(8),
        ),
        (
            json!({"jsonrpc":"2.0","id":9,"method":"demo.echo","options":{"backoff":{"type":"linear"}}}),
            json!(9),
        ),
        (
            json!({"jsonrpc":"2.0","id":10,"method":"demo.echo","options":{"bogus":1}}),
            json!(10),
        ),
        (
            json!({"jsonrpc":"2.0","id":{"x":1},"method":"demo.echo"}),
            Value::Null,
        ),
        (json!(42), Value::Null),
    ] {
        ws.send(req.clone()).await;
        let v = ws.recv().await;
        assert_eq!(code(&v), -32600, "{req} -> {v}");
        assert_eq!(v["id"], id, "{req} -> {v}");
    }
    // -32601: job method no worker serves, and unknown rpc.* method.
    let v = ws.call("nobody.serves", json!({})).await;
    assert_eq!(code(&v), -32601);
    let v = ws.call("rpc.nope", json!({})).await;
    assert_eq!(code(&v), -32601);
    // -32602: params fail the declared schema; bad rpc params.
    let v = ws.call("demo.sleep", json!({"ms": "soon"})).await;
    assert_eq!(code(&v), -32602);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("ms"),
        "{v}"
    );
    let v = ws.call("demo.progress", json!({})).await;
    assert_eq!(code(&v), -32602);
    let v = ws.call("rpc.status", json!({"nope": 1})).await;
    assert_eq!(code(&v), -32602);
    // -32004
    let v = ws.call("rpc.status", json!({"jobId": "no-such-job"})).await;
    assert_eq!(code(&v), -32004);
    let v = ws.call("rpc.attach", json!({"jobId": "no-such-job"})).await;
    assert_eq!(code(&v), -32004);
    let v = ws.call("rpc.cancel", json!({"jobId": "no-such-job"})).await;
    assert_eq!(code(&v), -32004);
    // -32000 with data.attempts and data.reason
    let id = ws
        .job(
            "demo.fail",
            json!({"times": 9, "message": "nope"}),
            json!({"options":{"attempts":2}}),
        )
        .await;
    let v = ws.final_for(&id).await;
    assert_eq!(code(&v), -32000);
    assert_eq!(v["error"]["data"]["attempts"], 2);
    assert_eq!(v["error"]["data"]["reason"], "nope");
    assert!(v["jobId"].is_string());
    // -32001
    let id = ws
        .job(
            "demo.sleep",
            json!({"ms": 10_000}),
            json!({"options":{"timeoutMs":100}}),
        )
        .await;
    let v = ws.final_for(&id).await;
    assert_eq!(code(&v), -32001);
    assert_eq!(v["error"]["data"]["attempts"], 1);
    // -32005: the queue holds at most 3 open jobs.
    for i in 0..3 {
        let id = ws
            .job(
                "demo.echo",
                json!({}),
                json!({"jobId": format!("hold-{i}"), "options":{"delayMs": 60_000}}),
            )
            .await;
        let a = ws
            .recv_until(|v| v["params"]["requestId"] == id || v["id"] == id)
            .await;
        assert_eq!(a["params"]["state"], "delayed", "{a}");
    }
    let v = ws.call("demo.echo", json!({})).await;
    assert_eq!(code(&v), -32005, "{v}");
    // The connection still works after all that.
    let v = ws.call("rpc.ping", json!({})).await;
    assert!(v["result"]["pong"].is_u64());
}

pub async fn forbidden_by_claims(backend: Backend) {
    let s = Server::start_on(backend, &[]);
    let t = token(
        "bob",
        Some(json!({"methods": ["demo.echo"], "topics": ["room:*"], "publish": ["room:1"]})),
    );
    let mut ws = s.connect_with(&t).await;
    let v = ws.call("demo.sleep", json!({"ms": 1})).await;
    assert_eq!(code(&v), -32006);
    let id = ws.job("demo.echo", json!({"ok": 1}), json!({})).await;
    assert_eq!(ws.final_for(&id).await["result"], json!({"ok": 1}));
    assert_eq!(
        code(&ws.call("rpc.subscribe", json!({"topic": "news"})).await),
        -32006
    );
    assert_eq!(
        code(
            &ws.call("rpc.subscribe", json!({"topic": "user:alice"}))
                .await
        ),
        -32006
    );
    assert_eq!(
        ws.call("rpc.subscribe", json!({"topic": "room:7"})).await["result"]["subscribed"],
        true
    );
    assert_eq!(
        code(
            &ws.call("rpc.publish", json!({"topic": "room:7", "data": 1}))
                .await
        ),
        -32006
    );
    assert_eq!(
        ws.call("rpc.publish", json!({"topic": "room:1", "data": 1}))
            .await["result"]["delivered"],
        0
    );
    assert_eq!(
        code(
            &ws.call("rpc.subscribe", json!({"topic": "bad topic"}))
                .await
        ),
        -32602
    );
    // Without a topics claim, other users' user: topics are still off limits.
    let mut plain = s.connect("carol").await;
    assert_eq!(
        code(
            &plain
                .call("rpc.subscribe", json!({"topic": "user:bob"}))
                .await
        ),
        -32006
    );
    assert_eq!(
        code(
            &plain
                .call("rpc.publish", json!({"topic": "user:bob", "data": 1}))
                .await
        ),
        -32006
    );
}

pub async fn owner_check_hides_other_users_jobs(backend: Backend) {
    let s = Server::start_on(backend, &[]);
    let mut alice = s.connect("alice").await;
    let mut mallory = s.connect("mallory").await;
    let id = alice
        .job(
            "demo.sleep",
            json!({"ms": 300}),
            json!({"jobId": "alice-job"}),
        )
        .await;
    alice.recv_until(|v| v["method"] == "job.accepted").await;
    for m in ["rpc.status", "rpc.attach", "rpc.cancel"] {
        let v = mallory.call(m, json!({"jobId": "alice-job"})).await;
        assert_eq!(code(&v), -32004, "{m}: {v}");
        assert_eq!(
            v["error"]["message"], "job not found",
            "must not leak existence"
        );
    }
    // Resubmitting someone else's id does not attach either.
    let mid = mallory
        .job("demo.echo", json!({}), json!({"jobId": "alice-job"}))
        .await;
    let v = mallory.recv_until(|v| v["id"] == mid).await;
    assert_eq!(code(&v), -32004);
    assert_eq!(alice.final_for(&id).await["result"], json!({"slept": 300}));
}

pub async fn cancel_stops_a_running_job(backend: Backend) {
    let s = Server::start_on(backend, &[]);
    let mut ws = s.connect("alice").await;
    let id = ws
        .job(
            "demo.progress",
            json!({"steps": 100, "intervalMs": 50}),
            json!({"jobId": "long"}),
        )
        .await;
    ws.recv_until(|v| v["method"] == "job.progress").await;
    let mut other = s.connect("alice").await;
    let c = other.call("rpc.cancel", json!({"jobId": "long"})).await;
    assert_eq!(
        c["result"],
        json!({"cancelled": true, "state": "cancelled"})
    );
    let v = ws.final_for(&id).await;
    assert_eq!(code(&v), -32002);
    assert_eq!(v["jobId"], "long");
    // The job stays cancelled and nothing more reaches the client. (That the handler itself
    // is stopped is shown by jobcast-worker's tests, which observe the handler directly.)
    let snap1 = other.call("rpc.status", json!({"jobId": "long"})).await["result"].clone();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let snap2 = other.call("rpc.status", json!({"jobId": "long"})).await["result"].clone();
    assert_eq!(snap2["state"], "cancelled");
    assert_eq!(
        snap1["progress"], snap2["progress"],
        "handler kept running after cancel"
    );
    assert!(
        ws.try_recv(Duration::from_millis(300)).await.is_none(),
        "events after the final response"
    );
    // Cancelling again reports the state without cancelling.
    let c = other.call("rpc.cancel", json!({"jobId": "long"})).await;
    assert_eq!(
        c["result"],
        json!({"cancelled": false, "state": "cancelled"})
    );
    // A queued (delayed) job is cancelled before it runs.
    let id = ws
        .job(
            "demo.echo",
            json!({}),
            json!({"jobId": "later", "options": {"delayMs": 5000}}),
        )
        .await;
    ws.recv_until(|v| v["method"] == "job.accepted").await;
    // The final response may overtake the reply to rpc.cancel (on Redis it comes over the
    // gateway's pub/sub connection), so take both in either order.
    let cancel = ws.request("rpc.cancel", json!({"jobId": "later"})).await;
    let got = ws.responses(&[&cancel, &id]).await;
    assert_eq!(got[0]["result"]["cancelled"], true);
    assert_eq!(code(&got[1]), -32002);
}

pub async fn retries_with_backoff_and_timeouts_per_attempt(backend: Backend) {
    let s = Server::start_on(backend, &[]);
    let mut ws = s.connect("alice").await;
    let id = ws
        .job("demo.fail", json!({"times": 2}), json!({"jobId": "flaky", "options": {"attempts": 3, "backoff": {"type": "exponential", "delayMs": 50, "jitter": 0.5}}}))
        .await;
    let v = ws.final_for(&id).await;
    assert_eq!(v["result"], json!({"attempt": 3}));
    let snap = ws.call("rpc.status", json!({"jobId": "flaky"})).await;
    assert_eq!(snap["result"]["attempt"], 3);
    assert_eq!(snap["result"]["attempts"], 3);
    // Each attempt times out; the last one's timeout is the final error.
    let id = ws
        .job(
            "demo.sleep",
            json!({"ms": 5000}),
            json!({"options": {"timeoutMs": 100, "attempts": 2}}),
        )
        .await;
    let v = ws.final_for(&id).await;
    assert_eq!(code(&v), -32001);
    assert_eq!(v["error"]["data"]["attempts"], 2);
}

pub async fn priority_then_fifo_and_delay(backend: Backend) {
    let s = Server::start_on(backend, &["--worker-concurrency", "1"]);
    let mut ws = s.connect("alice").await;
    // Occupy the single worker slot, then queue jobs of mixed priority.
    let blocker = ws.job("demo.sleep", json!({"ms": 1500}), json!({})).await;
    ws.recv_until(|v| v["method"] == "job.accepted").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut ids = Vec::new();
    for (name, prio) in [("low", 0), ("high", 10), ("mid-a", 5), ("mid-b", 5)] {
        let id = ws
            .job(
                "demo.echo",
                json!({"name": name}),
                json!({"options": {"priority": prio}}),
            )
            .await;
        ws.recv_until(|v| v["method"] == "job.accepted" && v["params"]["requestId"] == id)
            .await;
        ids.push(id);
    }
    ws.final_for(&blocker).await;
    let mut order = Vec::new();
    while order.len() < 4 {
        let v = ws.recv().await;
        if v.get("result").is_some() {
            order.push(v["result"]["name"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(order, ["high", "mid-a", "mid-b", "low"]);

    let start = Instant::now();
    let id = ws
        .job(
            "demo.echo",
            json!({"d": 1}),
            json!({"options": {"delayMs": 400}}),
        )
        .await;
    let a = ws.recv_until(|v| v["method"] == "job.accepted").await;
    assert_eq!(a["params"]["state"], "delayed");
    let v = ws.final_for(&id).await;
    assert_eq!(v["result"], json!({"d": 1}));
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "delayed job ran early"
    );
}

pub async fn idempotent_submit_and_attach(backend: Backend) {
    let s = Server::start_on(backend, &[]);
    let mut ws = s.connect("alice").await;
    let first = ws
        .job(
            "demo.sleep",
            json!({"ms": 300}),
            json!({"jobId": "order-1"}),
        )
        .await;
    let a1 = ws.recv_until(|v| v["method"] == "job.accepted").await;
    assert_eq!(a1["params"]["duplicate"], false);
    let mut phone = s.connect("alice").await;
    let second = phone
        .job(
            "demo.sleep",
            json!({"ms": 300}),
            json!({"jobId": "order-1"}),
        )
        .await;
    let a2 = phone.recv_until(|v| v["method"] == "job.accepted").await;
    assert_eq!(a2["params"]["duplicate"], true);
    assert_eq!(a2["params"]["jobId"], "order-1");
    assert_eq!(a2["params"]["requestId"], second);
    // Both get the one result, each under its own request id.
    assert_eq!(ws.final_for(&first).await["result"], json!({"slept": 300}));
    assert_eq!(
        phone.final_for(&second).await["result"],
        json!({"slept": 300})
    );
    // Resubmitting an ended job: duplicate, state completed, final response at once.
    let third = phone
        .job(
            "demo.sleep",
            json!({"ms": 300}),
            json!({"jobId": "order-1"}),
        )
        .await;
    let a3 = phone.recv().await;
    assert_eq!(a3["method"], "job.accepted");
    assert_eq!(a3["params"]["state"], "completed");
    let v = phone.recv().await;
    assert_eq!(v["id"], third);
    assert_eq!(v["result"], json!({"slept": 300}));
    // Attach from a fresh connection after the end: snapshot, then the final response with the
    // original request id.
    let mut laptop = s.connect("alice").await;
    let att = laptop
        .request("rpc.attach", json!({"jobId": "order-1"}))
        .await;
    let snap = laptop.recv().await;
    assert_eq!(snap["id"], att);
    assert_eq!(snap["result"]["state"], "completed");
    let fin = laptop.recv().await;
    assert_eq!(fin["id"], first);
    assert_eq!(fin["jobId"], "order-1");
    assert_eq!(fin["result"], json!({"slept": 300}));
    // Attach to a running job: progress and the result follow.
    let id = ws
        .job(
            "demo.progress",
            json!({"steps": 4, "intervalMs": 100}),
            json!({"jobId": "p-1"}),
        )
        .await;
    ws.recv_until(|v| v["method"] == "job.accepted").await;
    let att = laptop.request("rpc.attach", json!({"jobId": "p-1"})).await;
    let snap = laptop.recv_until(|v| v["id"] == att).await;
    assert!(
        matches!(snap["result"]["state"].as_str(), Some("queued" | "active")),
        "{snap}"
    );
    let fin = laptop.recv_until(|v| v["id"] == id).await;
    assert_eq!(fin["result"], json!({"steps": 4}));
    // Detach stops events.
    let id = ws
        .job("demo.sleep", json!({"ms": 200}), json!({"jobId": "d-1"}))
        .await;
    ws.recv_until(|v| v["method"] == "job.accepted").await;
    laptop.call("rpc.attach", json!({"jobId": "d-1"})).await;
    assert_eq!(
        laptop.call("rpc.detach", json!({"jobId": "d-1"})).await["result"]["detached"],
        true
    );
    ws.final_for(&id).await;
    assert!(laptop.try_recv(Duration::from_millis(300)).await.is_none());
}

pub async fn fire_and_forget_and_batches(backend: Backend) {
    let s = Server::start_on(backend, &[]);
    let mut ws = s.connect("alice").await;
    ws.send(json!({"jsonrpc":"2.0","method":"demo.echo","params":{"x":1},"jobId":"ff-1"}))
        .await;
    ws.send(json!({"jsonrpc":"2.0","method":"nobody.serves"}))
        .await;
    assert!(
        ws.try_recv(Duration::from_millis(300)).await.is_none(),
        "a notification got a reply"
    );
    let mut done = false;
    for _ in 0..50 {
        let v = ws.call("rpc.status", json!({"jobId": "ff-1"})).await;
        if v["result"]["state"] == "completed" {
            assert_eq!(v["result"]["result"], json!({"x": 1}));
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "fire-and-forget job never ran");

    ws.send_text(
        r#"[
        {"jsonrpc":"2.0","id":"b1","method":"rpc.ping"},
        {"jsonrpc":"2.0","id":"b2","method":"demo.echo","params":{"n":2}},
        {"jsonrpc":"2.0","id":"b3","method":"nobody.serves"},
        7,
        {"jsonrpc":"2.0","method":"rpc.ping"}
    ]"#,
    )
    .await;
    let mut batch = None;
    let mut accepted = false;
    let mut result = None;
    while batch.is_none() || result.is_none() {
        let v = ws.recv().await;
        if v.is_array() {
            batch = Some(v);
        } else if v["method"] == "job.accepted" {
            accepted = true;
        } else if v["id"] == "b2" {
            assert!(accepted, "final response before job.accepted");
            result = Some(v);
        } else {
            panic!("unexpected {v}");
        }
    }
    let batch = batch.unwrap();
    let arr = batch.as_array().unwrap();
    assert_eq!(arr.len(), 3, "{batch}");
    assert_eq!(arr[0]["id"], "b1");
    assert!(arr[0]["result"]["pong"].is_u64());
    assert_eq!(arr[1]["id"], "b3");
    assert_eq!(code(&arr[1]), -32601);
    assert_eq!(arr[2]["id"], Value::Null);
    assert_eq!(code(&arr[2]), -32600);
    assert_eq!(result.unwrap()["result"], json!({"n": 2}));
    // Empty batch: one error; a batch of notifications: nothing.
    ws.send_text("[]").await;
    assert_eq!(code(&ws.recv().await), -32600);
    ws.send_text(r#"[{"jsonrpc":"2.0","method":"rpc.ping"}]"#)
        .await;
    assert!(ws.try_recv(Duration::from_millis(300)).await.is_none());
}

pub async fn topics_and_user_pushes(backend: Backend) {
    let s = Server::start_on(backend, &[]);
    let mut a = s.connect("alice").await;
    let mut b = s.connect("bob").await;
    let mut b2 = s.connect("bob").await;
    assert_eq!(
        a.call("rpc.subscribe", json!({"topic": "room:1"})).await["result"],
        json!({"topic":"room:1","subscribed":true})
    );
    let r = b
        .call("rpc.publish", json!({"topic": "room:1", "data": {"hi": 1}}))
        .await;
    assert_eq!(r["result"]["delivered"], 1);
    let m = a.recv().await;
    assert_eq!(
        m,
        json!({"jsonrpc":"2.0","method":"topic.message","params":{"topic":"room:1","data":{"hi":1}}})
    );
    // user:<sub> reaches every device of that user.
    let mut b3 = s.connect("bob").await;
    let r = b3
        .call(
            "rpc.publish",
            json!({"topic": "user:bob", "data": "to all my devices"}),
        )
        .await;
    assert_eq!(r["result"]["delivered"], 3);
    assert_eq!(b.recv().await["params"]["data"], "to all my devices");
    assert_eq!(b2.recv().await["params"]["data"], "to all my devices");
    // The own user topic can be left and joined again, and joining it twice delivers once.
    b2.call("rpc.unsubscribe", json!({"topic": "user:bob"}))
        .await;
    b.call("rpc.subscribe", json!({"topic": "user:bob"})).await;
    let r = b3
        .call("rpc.publish", json!({"topic": "user:bob", "data": "two"}))
        .await;
    assert_eq!(r["result"]["delivered"], 2, "{r}");
    assert_eq!(b.recv().await["params"]["data"], "two");
    b2.call("rpc.subscribe", json!({"topic": "user:bob"})).await;
    let r = b3
        .call("rpc.publish", json!({"topic": "user:bob", "data": "three"}))
        .await;
    assert_eq!(r["result"]["delivered"], 3, "{r}");
    for ws in [&mut b, &mut b2] {
        assert_eq!(ws.recv().await["params"]["data"], "three");
        assert!(ws.try_recv(Duration::from_millis(100)).await.is_none());
    }
    assert_eq!(
        a.call("rpc.unsubscribe", json!({"topic": "room:1"})).await["result"]["subscribed"],
        false
    );
    assert_eq!(
        b.call("rpc.publish", json!({"topic": "room:1", "data": 2}))
            .await["result"]["delivered"],
        0
    );
    assert!(a.try_recv(Duration::from_millis(200)).await.is_none());
}

pub async fn bad_frames_get_close_codes_and_the_server_survives(backend: Backend) {
    let s = Server::start_on(backend, &["--max-message-bytes", "4096"]);
    let mut ws = s.connect("alice").await;
    // Binary frames: an error, the connection stays.
    use futures_util::SinkExt;
    ws.ws
        .send(tokio_websockets::Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(code(&ws.recv().await), -32600);
    // Oversized: 1009.
    ws.send_text(&format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"demo.echo","params":["{}"]}}"#,
        "x".repeat(8000)
    ))
    .await;
    assert_eq!(ws.close_code().await, 1009);
    // Invalid UTF-8 in a text frame: 1007 (sent as a raw frame; the client library refuses to).
    let (status, _, mut raw) =
        raw_upgrade(s.addr, &format!("/ws?token={}", token("alice", None)), &[]).await;
    assert_eq!(status, 101);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let payload = [0xffu8, 0xfe, 0xfd];
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    raw.write_all(&frame).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let code = loop {
        let n = tokio::time::timeout(WAIT, raw.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed without a close frame");
        got.extend_from_slice(&buf[..n]);
        if let Some(c) = find_close(&got) {
            break c;
        }
    };
    assert_eq!(code, 1007);
    // Everyone else is fine.
    let mut again = s.connect("alice").await;
    assert!(again.call("rpc.ping", json!({})).await["result"]["pong"].is_u64());
}

/// Finds the code of the first close frame in server-to-client bytes (unmasked frames).
fn find_close(bytes: &[u8]) -> Option<u16> {
    let mut i = 0;
    while i + 2 <= bytes.len() {
        let op = bytes[i] & 0x0f;
        let mut len = (bytes[i + 1] & 0x7f) as usize;
        let mut hdr = 2;
        if len == 126 {
            if i + 4 > bytes.len() {
                return None;
            }
            len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
            hdr = 4;
        } else if len == 127 {
            return None;
        }
        if i + hdr + len > bytes.len() {
            return None;
        }
        if op == 0x8 && len >= 2 {
            return Some(u16::from_be_bytes([bytes[i + hdr], bytes[i + hdr + 1]]));
        }
        i += hdr + len;
    }
    None
}

pub async fn silent_peer_is_closed_with_1001(backend: Backend) {
    let s = Server::start_on(backend, &["--heartbeat-ms", "300"]);
    // A raw socket that never answers pings.
    let (status, _, mut raw) =
        raw_upgrade(s.addr, &format!("/ws?token={}", token("alice", None)), &[]).await;
    assert_eq!(status, 101);
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut pings = 0;
    let code = loop {
        let n = tokio::time::timeout(WAIT, raw.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed without a close frame");
        got.extend_from_slice(&buf[..n]);
        pings = got
            .windows(2)
            .filter(|w| w == &[0x89, 0x00])
            .count()
            .max(pings);
        if let Some(c) = find_close(&got) {
            break c;
        }
    };
    assert_eq!(code, 1001);
    assert!(pings >= 1, "no ping before the close");
    // A client that answers pings stays connected past several intervals.
    let mut ws = s.connect("alice").await;
    // Reading (and so answering pings) for several intervals.
    assert!(ws.try_recv(Duration::from_millis(1500)).await.is_none());
    assert!(ws.call("rpc.ping", json!({})).await["result"]["pong"].is_u64());
}

/// Declares one `#[tokio::test]` per case, each run on `$backend`.
#[macro_export]
macro_rules! protocol_tests {
    ($backend:expr) => {
        #[tokio::test]
        async fn welcome_ping_and_methods() {
            cases::welcome_ping_and_methods($backend).await
        }
        #[tokio::test]
        async fn stats_behind_the_api_key() {
            cases::stats_behind_the_api_key($backend).await
        }
        #[tokio::test]
        async fn refused_upgrades_are_plain_http() {
            cases::refused_upgrades_are_plain_http($backend).await
        }
        #[tokio::test]
        async fn job_with_progress_in_order() {
            cases::job_with_progress_in_order($backend).await
        }
        #[tokio::test]
        async fn every_error_code() {
            cases::every_error_code($backend).await
        }
        #[tokio::test]
        async fn forbidden_by_claims() {
            cases::forbidden_by_claims($backend).await
        }
        #[tokio::test]
        async fn owner_check_hides_other_users_jobs() {
            cases::owner_check_hides_other_users_jobs($backend).await
        }
        #[tokio::test]
        async fn cancel_stops_a_running_job() {
            cases::cancel_stops_a_running_job($backend).await
        }
        #[tokio::test]
        async fn retries_with_backoff_and_timeouts_per_attempt() {
            cases::retries_with_backoff_and_timeouts_per_attempt($backend).await
        }
        #[tokio::test]
        async fn priority_then_fifo_and_delay() {
            cases::priority_then_fifo_and_delay($backend).await
        }
        #[tokio::test]
        async fn idempotent_submit_and_attach() {
            cases::idempotent_submit_and_attach($backend).await
        }
        #[tokio::test]
        async fn fire_and_forget_and_batches() {
            cases::fire_and_forget_and_batches($backend).await
        }
        #[tokio::test]
        async fn topics_and_user_pushes() {
            cases::topics_and_user_pushes($backend).await
        }
        #[tokio::test]
        async fn bad_frames_get_close_codes_and_the_server_survives() {
            cases::bad_frames_get_close_codes_and_the_server_survives($backend).await
        }
        #[tokio::test]
        async fn silent_peer_is_closed_with_1001() {
            cases::silent_peer_is_closed_with_1001($backend).await
        }
    };
}
