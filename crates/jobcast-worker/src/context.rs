//! The per-job context a handler receives: identity of the attempt, progress reporting and
//! cancellation.

use jobcast_core::{JobCancel, JobQueue, Lease};
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::Arc;

/// Progress could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// The job was cancelled or its lease lost: stop working.
    #[error("job no longer held by this worker")]
    LeaseLost,
    /// The progress value could not be serialized, or the backend failed.
    #[error("progress not recorded: {0}")]
    Other(String),
}

/// What a handler knows about its job and how it talks back.
#[derive(Clone)]
pub struct Context {
    pub(crate) lease: Lease,
    pub(crate) queue: Arc<dyn JobQueue>,
    pub(crate) cancel: JobCancel,
    pub(crate) attempt: u32,
    pub(crate) attempts: u32,
}

impl Context {
    /// The job id.
    pub fn job_id(&self) -> &str {
        &self.lease.job_id
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Total attempts allowed.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Reports progress: a number 0–100 or any serializable value. It reaches every
    /// connection attached to the job, in order.
    pub async fn progress(&self, progress: impl Serialize) -> Result<(), ProgressError> {
        let json =
            serde_json::to_string(&progress).map_err(|e| ProgressError::Other(e.to_string()))?;
        let raw = RawValue::from_string(json).map_err(|e| ProgressError::Other(e.to_string()))?;
        self.queue
            .progress(&self.lease, raw)
            .await
            .map_err(|e| match e {
                jobcast_core::Error::LeaseLost(_) => ProgressError::LeaseLost,
                other => ProgressError::Other(other.to_string()),
            })
    }

    /// Whether the job was cancelled (or its lease lost). A handler that is aborted at its
    /// next `.await` needs no check; long synchronous sections should look at this.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the job is cancelled.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
}
