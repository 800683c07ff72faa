//! The gateway's Prometheus metrics: the catalogue (every name, its type and labels, in one
//! place) and the process-wide recorder `/metrics` renders.
//!
//! | name | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `jobcast_connections` | gauge | | WebSocket connections open now |
//! | `jobcast_connections_opened_total` | counter | | connections accepted |
//! | `jobcast_connections_closed_total` | counter | `code` | connections closed, by close code sent (`none` when the peer left first) |
//! | `jobcast_upgrades_refused_total` | counter | `status` | upgrades refused before the handshake, by HTTP status |
//! | `jobcast_handshakes_failed_total` | counter | `reason` | connections closed before their first request: `timeout` (no TLS handshake or request head within the handshake timeout), `tls` (a failed TLS handshake); idle keep-alive connections closed later are not counted |
//! | `jobcast_messages_received_total` | counter | | text frames received |
//! | `jobcast_messages_sent_total` | counter | | frames written to connections |
//! | `jobcast_job_calls_total` | counter | `method`, `outcome` | job calls by outcome: `accepted`, `duplicate`, or the JSON-RPC error name |
//! | `jobcast_job_submit_to_response_seconds` | histogram | | from a call's arrival to its final response being queued (calls on this gateway) |
//! | `jobcast_topic_pushes_total` | counter | `source` | messages published (`ws`, `http`) |
//! | `jobcast_slow_consumer_disconnects_total` | counter | | connections closed because their outbound queue was full |
//! | `jobcast_queue_jobs` | gauge | `state` | jobs by state (ended ones within retention), read at scrape time |
//! | `jobcast_redis_call_seconds` | histogram | | round trip of each Redis call of this process (Redis backend) |
//! | `jobcast_job_wait_seconds` | histogram | | queued → active: from when a job was due to its claim (recorded by workers) |
//! | `jobcast_job_run_seconds` | histogram | `method`, `outcome` | active → done: one attempt's run (recorded by workers) |
//!
//! Workers record their metrics in their own process: in `jobcast serve` they appear here; a
//! `jobcast worker` serves them with `--metrics-listen`.
//!
//! One recorder serves the whole process (every gateway in it); it is installed on first use.

use jobcast_core::ByLabels;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::{
    sync::{LazyLock, OnceLock},
    time::Duration,
};

/// Latency buckets in seconds: 0.25 ms to 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide recorder's handle; `None` when another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS).ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            // Histogram samples are held until drained; drain them even when nobody scrapes.
            let h = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        h.run_upkeep();
                    }
                })
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

/// `jobcast_messages_sent_total`, looked up once. `counter!` finds a counter by hashing its
/// name in the recorder's map on every call; this one is counted for every frame written (a
/// percent of the gateway's samples in a fan-out).
pub fn messages_sent() -> &'static Counter {
    static C: LazyLock<Counter> = LazyLock::new(|| {
        handle();
        metrics::counter!("jobcast_messages_sent_total")
    });
    &C
}

/// `jobcast_messages_received_total`, looked up once (as [`messages_sent`]).
pub fn messages_received() -> &'static Counter {
    static C: LazyLock<Counter> = LazyLock::new(|| {
        handle();
        metrics::counter!("jobcast_messages_received_total")
    });
    &C
}

/// `jobcast_job_submit_to_response_seconds`, looked up once (as [`messages_sent`]).
pub fn submit_to_response() -> &'static Histogram {
    static H: LazyLock<Histogram> = LazyLock::new(|| {
        handle();
        metrics::histogram!("jobcast_job_submit_to_response_seconds")
    });
    &H
}

/// `jobcast_job_calls_total` of a method and outcome, registered once per pair.
pub fn job_calls(method: &str, outcome: &str) -> Counter {
    static C: LazyLock<ByLabels<Counter>> = LazyLock::new(|| {
        handle();
        ByLabels::new()
    });
    C.get(method, outcome, || {
        metrics::counter!("jobcast_job_calls_total", "method" => method.to_owned(), "outcome" => outcome.to_owned())
    })
}

/// The Prometheus text exposition.
pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("jobcast_connections", "WebSocket connections open now");
    describe_counter!("jobcast_connections_opened_total", "Connections accepted");
    describe_counter!(
        "jobcast_connections_closed_total",
        "Connections closed, by the close code sent"
    );
    describe_counter!(
        "jobcast_upgrades_refused_total",
        "Upgrades refused before the handshake, by HTTP status"
    );
    describe_counter!(
        "jobcast_handshakes_failed_total",
        "Connections closed before a request: handshake timeout or failed TLS handshake"
    );
    describe_counter!("jobcast_messages_received_total", "Text frames received");
    describe_counter!(
        "jobcast_messages_sent_total",
        "Frames written to connections"
    );
    describe_counter!(
        "jobcast_job_calls_total",
        "Job calls, by method and outcome"
    );
    describe_histogram!(
        "jobcast_job_submit_to_response_seconds",
        Unit::Seconds,
        "From a job call's arrival to its final response being queued"
    );
    describe_counter!(
        "jobcast_topic_pushes_total",
        "Messages published, by source"
    );
    describe_counter!(
        "jobcast_slow_consumer_disconnects_total",
        "Connections closed because their outbound queue was full"
    );
    describe_gauge!("jobcast_queue_jobs", "Jobs by state, read at scrape time");
    describe_histogram!(
        "jobcast_job_wait_seconds",
        Unit::Seconds,
        "From when a job was due to its claim by a worker"
    );
    describe_histogram!(
        "jobcast_job_run_seconds",
        Unit::Seconds,
        "One attempt's run, by method and outcome"
    );
    describe_histogram!(
        "jobcast_redis_call_seconds",
        Unit::Seconds,
        "Round trip of each Redis call of this process"
    );
}
