//! Runs the example binary and calls its custom method with the Rust client.

use jobcast_client::{CallOptions, Client, ClientError, JobUpdate};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn custom_method_end_to_end() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_custom-worker"))
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let mut parts = line.split_whitespace();
    let url = parts.nth(2).unwrap().to_owned();
    let token = parts.nth(1).unwrap().to_owned();
    let client = Client::connect(&url, &token).await.unwrap();

    let methods = client.request("rpc.methods", json!({})).await.unwrap();
    assert_eq!(methods["methods"][0]["name"], "text.wordcount");

    let text = "the cat and the hat and the bat ".repeat(500);
    let mut job = client
        .call(
            "text.wordcount",
            json!({"text": text, "top": 2}),
            &CallOptions::default(),
        )
        .unwrap();
    let mut progress = Vec::new();
    let result = loop {
        match job.next().await.unwrap() {
            JobUpdate::Accepted { state, .. } => assert_eq!(state, "queued"),
            JobUpdate::Progress(p) => progress.push(p.as_u64().unwrap()),
            JobUpdate::Done(r) => break r.unwrap(),
        }
    };
    assert_eq!(
        result,
        json!({"words": 4000, "top": [["the", 1500], ["and", 1000]]})
    );
    assert_eq!(progress.last(), Some(&100));
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");

    // The schema is enforced by the gateway; a fatal handler error fails at once.
    let bad = client
        .call(
            "text.wordcount",
            json!({"text": 5}),
            &CallOptions::default(),
        )
        .unwrap();
    match bad.result().await {
        Err(ClientError::Rpc(e)) => assert_eq!(e.code, -32602),
        other => panic!("{other:?}"),
    }
    let empty = client
        .call(
            "text.wordcount",
            json!({"text": "  "}),
            &CallOptions {
                attempts: Some(5),
                ..Default::default()
            },
        )
        .unwrap();
    match empty.result().await {
        Err(ClientError::Rpc(e)) => {
            assert_eq!(e.code, -32000);
            assert_eq!(e.data.unwrap()["attempts"], 1);
        }
        other => panic!("{other:?}"),
    }
    let _ = child.kill();
    let _ = child.wait();
}
