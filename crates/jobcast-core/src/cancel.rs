//! [`JobCancel`]: a running job's stop signal, shared by the queue that leased the job, the
//! worker running it and the handler's context.
//!
//! tokio-util's `CancellationToken` does the same and more (child tokens), but every clone and
//! every drop of one locks its tree's mutex; a job's signal is made, cloned and dropped on
//! every claim, and never has children. Here a clone or a drop is a reference count.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use tokio::sync::Notify;

/// Fires once, when the job is cancelled or its lease is lost; every clone sees it.
#[derive(Clone, Debug, Default)]
pub struct JobCancel(Arc<Signal>);

#[derive(Debug, Default)]
struct Signal {
    fired: AtomicBool,
    waiters: Notify,
}

impl JobCancel {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal (again is a no-op) and wakes everything waiting in
    /// [`JobCancel::cancelled`].
    pub fn cancel(&self) {
        if !self.0.fired.swap(true, Ordering::AcqRel) {
            self.0.waiters.notify_waiters();
        }
    }

    /// Whether the signal has fired.
    pub fn is_cancelled(&self) -> bool {
        self.0.fired.load(Ordering::Acquire)
    }

    /// Resolves once the signal has fired (at once if it already has).
    pub async fn cancelled(&self) {
        // Made before the check, the waiter is woken by a `cancel` that comes after it even
        // if it has not been polled yet (`Notify::notify_waiters`).
        let waiter = self.0.waiters.notified();
        if self.is_cancelled() {
            return;
        }
        waiter.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_clone_sees_the_signal_and_waiters_wake() {
        let signal = JobCancel::new();
        let (a, b) = (signal.clone(), signal.clone());
        assert!(!a.is_cancelled());
        let waiting = tokio::spawn(async move { a.cancelled().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        b.cancel();
        b.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a waiter was not woken")
            .unwrap();
        assert!(signal.is_cancelled());
        // Once fired, waiting ends at once.
        tokio::time::timeout(Duration::from_secs(5), signal.cancelled())
            .await
            .expect("waiting after the signal fired did not end");
    }
}
