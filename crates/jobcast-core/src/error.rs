//! The one error type of backend operations.

/// What a backend operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The backend cannot be reached or is shutting down; callers answer -32005.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The queue holds its configured maximum of waiting jobs; callers answer -32005.
    #[error("queue full")]
    QueueFull,
    /// The job's owner already has their configured maximum of jobs not yet ended; callers
    /// answer -32005.
    #[error("too many open jobs for this owner")]
    OwnerFull,
    /// The worker no longer holds the job's lease (it lapsed, or the job was cancelled).
    #[error("lease lost for job {0}")]
    LeaseLost(String),
    /// Reading or writing the store failed.
    #[error("storage error: {0}")]
    Storage(String),
}

/// Result of backend operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
