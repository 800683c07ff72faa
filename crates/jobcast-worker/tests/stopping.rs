//! A handler is really stopped when its attempt times out, its job is cancelled, or its
//! worker shuts down past the drain grace: the handler's own side effects stop, not only its
//! reports. A job stopped by a shutdown is handed back, not lost.

// Test helpers panic on unexpected results; that is how a test fails.
#![allow(clippy::unwrap_used)]

use jobcast_core::{Bus, JobQueue, NewJob, raw};
use jobcast_embedded::{Embedded, EmbeddedConfig};
use jobcast_protocol::JobOptions;
use jobcast_worker::{Context, HandlerError, WorkerBuilder, WorkerConfig};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio_util::sync::CancellationToken;

struct Rig {
    queue: Arc<dyn JobQueue>,
    ticks: Arc<AtomicU64>,
    inbox: tokio::sync::mpsc::UnboundedReceiver<jobcast_core::Inbound>,
    stop: CancellationToken,
    worker: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// A worker whose `spin` handler counts loop iterations until stopped.
async fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let e = Embedded::open(EmbeddedConfig::new(dir.path().join("j.redb"))).unwrap();
    let queue: Arc<dyn JobQueue> = Arc::new(e.clone());
    let inbox = e.open_inbox("gw").unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let t = ticks.clone();
    let worker = WorkerBuilder::new()
        .method("spin", move |_ctx: Context, _p: serde_json::Value| {
            let t = t.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    t.fetch_add(1, Ordering::SeqCst);
                }
                #[allow(unreachable_code)]
                Ok::<_, HandlerError>(())
            }
        })
        .config(WorkerConfig {
            drain_grace: Duration::from_millis(200),
            ..WorkerConfig::default()
        })
        .build(queue.clone());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(worker.run(stop.clone()));
    Rig {
        queue,
        ticks,
        inbox,
        stop,
        worker,
        _dir: dir,
    }
}

async fn final_code(r: &mut Rig) -> i32 {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), r.inbox.recv())
            .await
            .unwrap()
            .unwrap()
        {
            jobcast_core::Inbound::Job(jobcast_core::JobEvent::Finished { outcome, .. }) => {
                return outcome.err().map(|e| e.code.code()).unwrap_or(0);
            }
            _ => continue,
        }
    }
}

async fn assert_stopped(ticks: &AtomicU64) {
    // Let an abort land, then the count must not move.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = ticks.load(Ordering::SeqCst);
    assert!(before > 0, "the handler never ran");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        ticks.load(Ordering::SeqCst),
        before,
        "handler still running"
    );
}

fn job(id: &str, options: JobOptions) -> NewJob {
    NewJob {
        id: id.into(),
        method: "spin".into(),
        params: raw("{}"),
        owner: "u".into(),
        request_id: None,
        options,
        max_open_per_owner: 0,
    }
}

#[tokio::test]
async fn timeout_aborts_the_handler() {
    let mut r = rig().await;
    let opts = JobOptions {
        timeout_ms: Some(100),
        ..Default::default()
    };
    r.queue.enqueue(job("t1", opts), "gw").await.unwrap();
    assert_eq!(final_code(&mut r).await, -32001);
    assert_stopped(&r.ticks).await;
    r.stop.cancel();
}

#[tokio::test]
async fn cancel_aborts_the_handler() {
    let mut r = rig().await;
    r.queue
        .enqueue(job("c1", JobOptions::default()), "gw")
        .await
        .unwrap();
    while r.ticks.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(r.queue.cancel("c1").await.unwrap().unwrap().cancelled);
    assert_eq!(final_code(&mut r).await, -32002);
    assert_stopped(&r.ticks).await;
    r.stop.cancel();
}

#[tokio::test]
async fn shutdown_hands_back_unfinished_jobs() {
    let r = rig().await;
    r.queue
        .enqueue(job("d1", JobOptions::default()), "gw")
        .await
        .unwrap();
    while r.ticks.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    r.stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), r.worker)
        .await
        .expect("the worker did not stop after its drain grace")
        .unwrap();
    assert_stopped(&r.ticks).await;
    // Queued again at once (not after its 30 s lease), its interrupted attempt not counted.
    let s = r.queue.snapshot("d1").await.unwrap().unwrap();
    assert_eq!(s.state, jobcast_core::JobState::Queued);
    assert_eq!(s.attempt, 0);
    let again = r
        .queue
        .claim(
            "w2",
            &["spin".into()],
            1,
            Duration::from_secs(30),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempt, 1);
}
