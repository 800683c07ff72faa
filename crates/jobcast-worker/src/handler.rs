//! Handler type erasure: a typed async function becomes a boxed handler taking raw params and
//! returning a raw result.

use crate::context::Context;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;
use std::{fmt, future::Future, pin::Pin, sync::Arc};

/// Why a handler did not produce a result.
#[derive(Debug, Clone)]
pub struct HandlerError {
    /// Message for the client (as `job failed: <message>`).
    pub message: String,
    /// Whether another attempt may succeed. Errors made with [`HandlerError::fatal`] fail the
    /// job at once, whatever its `attempts`.
    pub retryable: bool,
}

impl HandlerError {
    /// A retryable error.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// An error that retrying cannot fix (bad input).
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<crate::context::ProgressError> for HandlerError {
    fn from(e: crate::context::ProgressError) -> Self {
        Self::new(e.to_string())
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(e: serde_json::Error) -> Self {
        Self::fatal(e.to_string())
    }
}

/// A boxed future of a handler's outcome.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Box<RawValue>, HandlerError>> + Send>>;

/// A type-erased handler.
pub type BoxedHandler = Arc<dyn Fn(Context, Box<RawValue>) -> HandlerFuture + Send + Sync>;

/// Wraps a typed handler: params are deserialized into `P` (a fatal error when they do not
/// fit), the result serialized from `R`.
pub fn boxed<P, R, F, Fut>(f: F) -> BoxedHandler
where
    P: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(Context, P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |ctx, raw: Box<RawValue>| {
        let f = f.clone();
        Box::pin(async move {
            let params: P = serde_json::from_str(raw.get())
                .map_err(|e| HandlerError::fatal(format!("invalid params: {e}")))?;
            let out = f(ctx, params).await?;
            let json = serde_json::to_string(&out)
                .map_err(|e| HandlerError::fatal(format!("result not serializable: {e}")))?;
            RawValue::from_string(json).map_err(|e| HandlerError::fatal(e.to_string()))
        })
    })
}
