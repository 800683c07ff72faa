//! The worker library: write an async handler per method, register it on a
//! [`WorkerBuilder`], and run the [`Worker`] against any [`JobQueue`]. The worker claims jobs
//! up to its concurrency, renews their leases in batches, reports progress through the
//! [`Context`], enforces each attempt's timeout (the handler task is aborted), stops handlers
//! of cancelled jobs, and announces its methods (with their params schemas) by heartbeat.
//!
//! ```no_run
//! # use jobcast_worker::{WorkerBuilder, Context, HandlerError};
//! # #[derive(serde::Deserialize)] struct Resize { width: u32 }
//! let builder = WorkerBuilder::new().method("image.resize", |ctx: Context, p: Resize| async move {
//!     ctx.progress(50).await?;
//!     Ok::<_, HandlerError>(serde_json::json!({ "width": p.width }))
//! });
//! ```
#![warn(missing_docs)]

mod context;
pub mod demo;
mod handler;
mod runner;

pub use context::Context;
pub use handler::HandlerError;
pub use runner::{DEFAULT_CONCURRENCY, Worker, WorkerBuilder, WorkerConfig};
