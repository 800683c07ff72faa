//! The gateway's stats (`/stats`): its connections by user type, distinct users, uptime, the
//! queue's depth by state and ended jobs per second. Every gateway reports its stats to the
//! bus every [`REPORT_EVERY`]; the reports double as liveness for presence records, and let
//! any gateway answer for the whole cluster (`/stats?scope=cluster`).

use crate::Gateway;
use jobcast_core::{GatewayReport, QueueCounts};
use serde_json::{Value, json};
use std::{
    collections::BTreeMap,
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

/// How often a gateway reports.
pub const REPORT_EVERY: Duration = Duration::from_secs(2);
/// A report lapses (and the gateway counts as gone) after this long.
const REPORT_TTL: Duration = Duration::from_secs(10);

/// Ended-job counting between reports, for jobs/s.
#[derive(Default)]
pub struct Rate {
    last: Option<(u64, Instant)>,
    per_sec: f64,
}

fn ended(c: &QueueCounts) -> u64 {
    c.completed + c.failed + c.cancelled
}

/// This gateway's stats, with the queue's counts when they could be read.
pub async fn local(gw: &Gateway) -> Value {
    let queue = match gw.queue.counts().await {
        Ok(c) => {
            let mut rate = gw.rate.lock();
            let now = Instant::now();
            if let Some((n, at)) = rate.last {
                let secs = now.duration_since(at).as_secs_f64();
                // Purges after the retention period lower the count: never a negative rate.
                if secs >= 1.0 {
                    rate.per_sec = ended(&c).saturating_sub(n) as f64 / secs;
                    rate.last = Some((ended(&c), now));
                }
            } else {
                rate.last = Some((ended(&c), now));
            }
            serde_json::to_value(c).unwrap_or_default()
        }
        Err(e) => json!({"error": e.to_string()}),
    };
    let jobs_per_sec = (gw.rate.lock().per_sec * 10.0).round() / 10.0;
    json!({
        "serverId": gw.config.server_id,
        "instanceId": gw.instance_id,
        "totalConnections": gw.hub.conn_count(),
        "uniqueUsers": gw.admission.users(),
        "byUserType": gw.admission.by_user_type(),
        "uptime": gw.started.elapsed().as_secs(),
        "queue": queue,
        "jobsPerSec": jobs_per_sec,
    })
}

/// Every live gateway's stats, summed: connections and users by gateway (a user connected
/// to two gateways counts on each), queue figures as the cluster shares one queue.
pub async fn cluster(gw: &Gateway) -> Value {
    let mine = local(gw).await;
    let reports = match gw.bus.reports().await {
        Ok(r) => r,
        Err(e) => return json!({"error": e.to_string(), "gateways": [mine]}),
    };
    let mut gateways: Vec<Value> = reports
        .iter()
        .filter(|r| r.gateway_id != gw.instance_id)
        .filter_map(|r| serde_json::from_str(&r.stats).ok())
        .collect();
    gateways.insert(0, mine.clone());
    let sum = |k: &str| gateways.iter().filter_map(|g| g[k].as_u64()).sum::<u64>();
    let mut by_type = BTreeMap::<String, u64>::new();
    for g in &gateways {
        if let Some(m) = g["byUserType"].as_object() {
            for (k, v) in m {
                *by_type.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
    }
    json!({
        "scope": "cluster",
        "serverId": gw.config.server_id,
        "gatewayCount": gateways.len(),
        "totalConnections": sum("totalConnections"),
        "uniqueUsers": sum("uniqueUsers"),
        "byUserType": by_type,
        "uptime": mine["uptime"],
        "queue": mine["queue"],
        "jobsPerSec": mine["jobsPerSec"],
        "gateways": gateways,
    })
}

/// Reports this gateway's stats once.
pub async fn report(gw: &Gateway) {
    let report = GatewayReport {
        gateway_id: gw.instance_id.clone(),
        stats: local(gw).await.to_string(),
    };
    if let Err(e) = gw.bus.report(&report, REPORT_TTL).await {
        tracing::warn!(error = %e, "gateway report failed");
    }
}

/// Reports every [`REPORT_EVERY`] until the gateway is gone or shuts down.
pub async fn reporter(gw: Weak<Gateway>) {
    loop {
        tokio::time::sleep(REPORT_EVERY).await;
        let Some(gw) = gw.upgrade() else { return };
        if gw.shutdown.is_cancelled() {
            return;
        }
        report(&gw).await;
    }
}

/// Starts reporting: once now (presence records count only for gateways that reported),
/// then in the background.
pub async fn start(gw: &Arc<Gateway>) {
    report(gw).await;
    tokio::spawn(reporter(Arc::downgrade(gw)));
}
