//! The demo methods every build ships (PROTOCOL.md §7), written with the public worker API:
//! `demo.echo`, `demo.sleep`, `demo.progress`, `demo.fail`.

use crate::{Context, HandlerError, WorkerBuilder};
use serde::Deserialize;
use serde_json::{json, value::RawValue};
use std::time::Duration;

#[derive(Deserialize)]
struct Sleep {
    ms: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Progress {
    steps: u32,
    #[serde(default)]
    interval_ms: u64,
}

#[derive(Deserialize)]
struct Fail {
    times: u32,
    message: Option<String>,
}

/// Registers the four demo methods on `builder`.
pub fn register(builder: WorkerBuilder) -> WorkerBuilder {
    builder
        .method(
            "demo.echo",
            |_ctx: Context, params: Box<RawValue>| async move { Ok::<_, HandlerError>(params) },
        )
        .method_with_schema(
            "demo.sleep",
            json!({"type":"object","required":["ms"],
                   "properties":{"ms":{"type":"integer","minimum":0,"maximum":3_600_000}}}),
            |_ctx: Context, p: Sleep| async move {
                tokio::time::sleep(Duration::from_millis(p.ms)).await;
                Ok::<_, HandlerError>(json!({"slept": p.ms}))
            },
        )
        .method_with_schema(
            "demo.progress",
            json!({"type":"object","required":["steps"],
                   "properties":{"steps":{"type":"integer","minimum":1,"maximum":10_000},
                                 "intervalMs":{"type":"integer","minimum":0,"maximum":60_000}}}),
            |ctx: Context, p: Progress| async move {
                for i in 1..=p.steps {
                    tokio::time::sleep(Duration::from_millis(p.interval_ms)).await;
                    ctx.progress(u64::from(i) * 100 / u64::from(p.steps))
                        .await?;
                }
                Ok::<_, HandlerError>(json!({"steps": p.steps}))
            },
        )
        .method_with_schema(
            "demo.fail",
            json!({"type":"object","required":["times"],
                   "properties":{"times":{"type":"integer","minimum":0},
                                 "message":{"type":"string"}}}),
            |ctx: Context, p: Fail| async move {
                if ctx.attempt() <= p.times {
                    return Err(HandlerError::new(p.message.unwrap_or_else(|| {
                        format!("demo failure on attempt {}", ctx.attempt())
                    })));
                }
                Ok(json!({"attempt": ctx.attempt()}))
            },
        )
}
