//! Presence (`rpc.presence`, `topic.join`/`topic.leave`) and the cluster view of `/stats`,
//! on one server and across gateways sharing a real redis-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use jobcast_redis::testing::RedisServer;
use serde_json::{Value, json};
use std::time::Duration;

const KEY: &str = "test-key";

async fn presence(ws: &mut Ws, topic: &str) -> Value {
    ws.call("rpc.presence", json!({"topic": topic})).await["result"].clone()
}

/// Polls `rpc.presence` until it shows `connections` (presence writes are asynchronous, and
/// a dead gateway's entries go only once its 10 s report lapses).
async fn presence_until(ws: &mut Ws, topic: &str, connections: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..1000 {
        last = presence(ws, topic).await;
        if last["connections"] == connections {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("presence of {topic} never reached {connections}: {last}");
}

#[tokio::test]
async fn presence_on_one_server() {
    let s = Server::start(&[]);
    let mut alice = s.connect("alice").await;
    let r = alice
        .call(
            "rpc.subscribe",
            json!({"topic": "room:1", "presence": true}),
        )
        .await;
    assert_eq!(r["result"], json!({"topic": "room:1", "subscribed": true}));
    let mut bob = s.connect("bob").await;
    bob.call("rpc.subscribe", json!({"topic": "room:1"})).await;
    let join = alice.recv_until(|v| v["method"] == "topic.join").await;
    assert_eq!(join["params"], json!({"topic": "room:1", "user": "bob"}));
    let p = presence(&mut bob, "room:1").await;
    assert_eq!(
        p,
        json!({"topic": "room:1", "users": ["alice", "bob"], "connections": 2})
    );
    // Bob did not ask for presence notifications: he gets none when alice leaves.
    alice
        .call("rpc.unsubscribe", json!({"topic": "room:1"}))
        .await;
    assert_eq!(presence(&mut bob, "room:1").await["users"], json!(["bob"]));
    assert!(bob.try_recv(Duration::from_millis(200)).await.is_none());
    // Alice watches again; bob's disconnect is a leave.
    alice
        .call(
            "rpc.subscribe",
            json!({"topic": "room:1", "presence": true}),
        )
        .await;
    drop(bob);
    let leave = alice.recv_until(|v| v["method"] == "topic.leave").await;
    assert_eq!(leave["params"], json!({"topic": "room:1", "user": "bob"}));
    // Every connection is in its own user topic.
    assert_eq!(
        presence(&mut alice, "user:alice").await,
        json!({"topic": "user:alice", "users": ["alice"], "connections": 1})
    );
    // Presence follows the subscribe rules: another user's topic is forbidden, a bad topic
    // is invalid.
    let r = alice
        .call("rpc.presence", json!({"topic": "user:bob"}))
        .await;
    assert_eq!(r["error"]["code"], -32006);
    let r = alice.call("rpc.presence", json!({"topic": "a b"})).await;
    assert_eq!(r["error"]["code"], -32602);
    let r = alice.call("rpc.presence", json!({})).await;
    assert_eq!(r["error"]["code"], -32602);
}

#[tokio::test]
async fn presence_across_gateways_and_after_a_gateway_dies() {
    let redis = RedisServer::start().unwrap();
    let a = Server::start_gateway(&redis.url(), &[]);
    let mut b = Server::start_gateway(&redis.url(), &[]);
    let mut alice = a.connect("alice").await;
    alice
        .call(
            "rpc.subscribe",
            json!({"topic": "room:x", "presence": true}),
        )
        .await;
    let mut bob1 = b.connect("bob").await;
    let mut bob2 = b.connect("bob").await;
    for ws in [&mut bob1, &mut bob2] {
        ws.call("rpc.subscribe", json!({"topic": "room:x"})).await;
    }
    // Joins on gateway B reach the watcher on gateway A, one per connection.
    for _ in 0..2 {
        let j = alice.recv_until(|v| v["method"] == "topic.join").await;
        assert_eq!(j["params"]["user"], "bob");
    }
    let p = presence_until(&mut alice, "room:x", 3).await;
    assert_eq!(p["users"], json!(["alice", "bob"]));
    bob2.call("rpc.unsubscribe", json!({"topic": "room:x"}))
        .await;
    let l = alice.recv_until(|v| v["method"] == "topic.leave").await;
    assert_eq!(l["params"], json!({"topic": "room:x", "user": "bob"}));
    presence_until(&mut alice, "room:x", 2).await;
    // Gateway B dies without a word: once its reports lapse, its connections are gone from
    // presence.
    b.kill9();
    let p = presence_until(&mut alice, "room:x", 1).await;
    assert_eq!(p["users"], json!(["alice"]));
}

#[tokio::test]
async fn stats_for_one_gateway_and_for_the_cluster() {
    let redis = RedisServer::start().unwrap();
    let flags: Vec<String> = vec!["--api-key".into(), KEY.into()];
    let a = Server::start_gateway(&redis.url(), &flags);
    let b = Server::start_gateway(&redis.url(), &flags);
    let _a1 = a.connect("alice").await;
    let _b1 = b.connect("bob").await;
    let _b2 = b
        .connect_with(&token("carol", Some(json!({"userType": "admin"}))))
        .await;
    let local = http(a.addr, "GET", "/stats", Some(KEY), None).await.json();
    assert_eq!(local["totalConnections"], 1, "{local}");
    assert_eq!(local["uniqueUsers"], 1);
    assert!(
        local["instanceId"]
            .as_str()
            .unwrap()
            .starts_with(local["serverId"].as_str().unwrap())
    );
    assert!(local["jobsPerSec"].is_number());
    assert_eq!(local["queue"]["queued"], 0);
    // B reports every 2 s; its first report is made before it serves.
    let cluster = http(a.addr, "GET", "/stats?scope=cluster", Some(KEY), None)
        .await
        .json();
    assert_eq!(cluster["scope"], "cluster", "{cluster}");
    assert_eq!(cluster["gatewayCount"], 2, "{cluster}");
    // B's report may predate its connections: wait for one that shows them.
    let mut total = 0;
    for _ in 0..100 {
        let c = http(a.addr, "GET", "/stats?scope=cluster", Some(KEY), None)
            .await
            .json();
        total = c["totalConnections"].as_u64().unwrap();
        if total == 3 {
            assert_eq!(c["byUserType"], json!({"admin": 1, "default": 2}));
            assert_eq!(c["uniqueUsers"], 3);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(total, 3);
    let r = http(a.addr, "GET", "/stats?scope=cluster", None, None).await;
    assert_eq!(r.status, 401);
}
