//! Durability across `kill -9` and restart, retention, graceful shutdown, and the `token` and
//! `call` commands, each against real `jobcast serve` processes.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn jobs_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &["--worker-concurrency", "1"]);
    let mut ws = s.connect("alice").await;
    // One finished job, one running, one queued behind it, one delayed.
    let done = ws
        .job(
            "demo.echo",
            json!({"kept": true}),
            json!({"jobId": "done-1"}),
        )
        .await;
    assert_eq!(ws.final_for(&done).await["result"], json!({"kept": true}));
    ws.job(
        "demo.sleep",
        json!({"ms": 1500}),
        json!({"jobId": "running-1"}),
    )
    .await;
    ws.recv_until(|v| v["method"] == "job.accepted").await;
    ws.job("demo.echo", json!({"q": 1}), json!({"jobId": "queued-1"}))
        .await;
    ws.recv_until(|v| v["method"] == "job.accepted").await;
    ws.job(
        "demo.echo",
        json!({"d": 1}),
        json!({"jobId": "delayed-1", "options": {"delayMs": 800}}),
    )
    .await;
    ws.recv_until(|v| v["method"] == "job.accepted").await;
    // Make sure the sleep is running when the process dies.
    for _ in 0..100 {
        if ws.call("rpc.status", json!({"jobId": "running-1"})).await["result"]["state"] == "active"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill9();
    drop(ws);

    let s = Server::start_in(dir.path(), &["--worker-concurrency", "1"]);
    let mut ws = s.connect("alice").await;
    let snap = ws.call("rpc.status", json!({"jobId": "done-1"})).await;
    assert_eq!(snap["result"]["state"], "completed");
    assert_eq!(snap["result"]["result"], json!({"kept": true}));
    for (job, expect) in [
        ("running-1", json!({"slept": 1500})),
        ("queued-1", json!({"q": 1})),
        ("delayed-1", json!({"d": 1})),
    ] {
        let att = ws.request("rpc.attach", json!({"jobId": job})).await;
        ws.recv_until(|v| v["id"] == att).await;
        let fin = ws.recv_until(|v| v["jobId"] == job).await;
        assert_eq!(fin["result"], expect, "{job}: {fin}");
    }
    let snap = ws.call("rpc.status", json!({"jobId": "running-1"})).await;
    assert_eq!(
        snap["result"]["attempt"], 2,
        "the interrupted attempt is counted: {snap}"
    );
    // Another user still cannot see them after restart.
    let mut m = s.connect("mallory").await;
    assert_eq!(
        m.call("rpc.status", json!({"jobId": "done-1"})).await["error"]["code"],
        -32004
    );
}

#[tokio::test]
async fn ended_jobs_are_purged_after_retention() {
    let s = Server::start(&["--retention", "1s"]);
    let mut ws = s.connect("alice").await;
    let id = ws
        .job("demo.echo", json!({}), json!({"jobId": "short-lived"}))
        .await;
    ws.final_for(&id).await;
    assert_eq!(
        ws.call("rpc.status", json!({"jobId": "short-lived"})).await["result"]["state"],
        "completed"
    );
    let mut purged = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if ws.call("rpc.status", json!({"jobId": "short-lived"})).await["error"]["code"] == -32004 {
            purged = true;
            break;
        }
    }
    assert!(purged, "result still there long after retention");
}

#[tokio::test]
async fn sigterm_closes_clients_with_1012_and_keeps_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &["--drain-timeout", "2s"]);
    let mut ws = s.connect("alice").await;
    ws.job(
        "demo.echo",
        json!({"late": 1}),
        json!({"jobId": "after-drain", "options": {"delayMs": 1500}}),
    )
    .await;
    ws.recv_until(|v| v["method"] == "job.accepted").await;
    s.sigterm();
    assert_eq!(ws.close_code().await, 1012);
    let status = tokio::task::spawn_blocking(move || s.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "serve exited with {status}");
    let s = Server::start_in(dir.path(), &[]);
    let mut ws = s.connect("alice").await;
    let att = ws
        .request("rpc.attach", json!({"jobId": "after-drain"}))
        .await;
    ws.recv_until(|v| v["id"] == att).await;
    assert_eq!(
        ws.recv_until(|v| v["jobId"] == "after-drain").await["result"],
        json!({"late": 1})
    );
}

#[tokio::test]
async fn token_and_call_commands() {
    let s = Server::start(&[]);
    let url = s.url();
    // `jobcast ARGS --url <server> --jwt-secret <secret>`.
    let call = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--url", url.as_str(), "--jwt-secret", SECRET]);
        jobcast(&all)
    };
    let result = |(code, out, err): (i32, String, String)| {
        assert_eq!(code, 0, "stderr: {err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    assert_eq!(
        result(call(&[
            "call",
            "demo.progress",
            r#"{"steps":3,"intervalMs":50}"#
        ])),
        json!({"steps": 3})
    );
    // The runtime's threads: a global option, set before the subcommand or after it; 0 is
    // refused before anything starts.
    assert_eq!(
        result(call(&["--threads", "1", "call", "demo.echo", r#"{"a":1}"#])),
        json!({"a": 1})
    );
    let (code, _, err) = call(&["call", "--threads", "0", "demo.echo", "{}"]);
    assert_eq!(code, 2, "stderr: {err}");
    assert!(err.contains("--threads"), "{err}");
    let (code, out, err) = call(&["call", "demo.fail", r#"{"times":5}"#, "--attempts", "2"]);
    assert_eq!(code, 1, "stdout: {out}");
    let e: serde_json::Value = serde_json::from_str(err.trim().lines().last().unwrap()).unwrap();
    assert_eq!(e["code"], -32000);
    assert_eq!(e["data"]["attempts"], 2);
    // Options reach the server: an invalid priority is refused.
    let (code, _, err) = call(&["call", "demo.echo", "{}", "--priority", "5000"]);
    assert_eq!(code, 1);
    assert!(err.contains("-32600"), "{err}");
    // A token minted by the CLI connects; its claims are honoured.
    let (code, tok, _) = jobcast(&[
        "token",
        "--sub",
        "dave",
        "--ttl",
        "10m",
        "--claims",
        r#"{"methods":["demo.echo"]}"#,
        "--jwt-secret",
        SECRET,
    ]);
    assert_eq!(code, 0);
    let mut ws = s.connect_with(tok.trim()).await;
    assert_eq!(
        ws.call("demo.sleep", json!({"ms": 1})).await["error"]["code"],
        -32006
    );
    let (code, _, err) = jobcast(&[
        "call",
        "demo.sleep",
        r#"{"ms":1}"#,
        "--token",
        tok.trim(),
        "--url",
        &url,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("-32006"), "{err}");
    // Idempotent resubmit from the CLI.
    let first = result(call(&[
        "call",
        "demo.echo",
        r#"{"a":1}"#,
        "--job-id",
        "cli-1",
    ]));
    let again = result(call(&[
        "call",
        "demo.echo",
        r#"{"a":2}"#,
        "--job-id",
        "cli-1",
    ]));
    assert_eq!(first, json!({"a": 1}));
    assert_eq!(
        again, first,
        "a resubmitted id returns the first job's result"
    );
}

#[test]
fn serve_generates_and_reuses_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = jobcast(&["token", "--sub", "x", "--data-dir", d]);
    assert_eq!(code, 2);
    assert!(err.contains("no JWT secret"), "{err}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_jobcast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", d])
        .env_remove("JWT_SECRET")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let banner: Vec<String> = (0..4).map(|_| lines.next().unwrap().unwrap()).collect();
    assert!(
        banner.iter().any(|l| l.contains("generated and kept in")),
        "{banner:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
    let secret = std::fs::read_to_string(dir.path().join("jwt-secret")).unwrap();
    assert!(secret.len() >= 32);
    let (code, tok, _) = jobcast(&["token", "--sub", "x", "--data-dir", d]);
    assert_eq!(code, 0);
    assert!(
        jobcast_gateway::auth::verify(
            &jobcast_gateway::auth::AuthConfig::hmac(secret.into_bytes()),
            tok.trim()
        )
        .is_ok()
    );
}
