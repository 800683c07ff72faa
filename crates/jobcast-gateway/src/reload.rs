//! Reloading settings kept in files (TLS certificates, JWT key sets) without a restart: one
//! watcher per item reloads it on SIGHUP and when any of its files' modification times change.
//! A failed reload is logged and the item keeps what it had.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio_util::sync::CancellationToken;

/// How often files are checked for changes.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Something loaded from files that can be loaded again.
pub trait Reload: Send + Sync + 'static {
    /// What it is, for the log.
    fn what(&self) -> &'static str;
    /// The files it is loaded from.
    fn files(&self) -> Vec<PathBuf>;
    /// Loads the files again; on error the current settings must stay in use.
    fn reload(&self) -> Result<(), String>;
}

fn stamps(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files.iter().map(|p| modified(p)).collect()
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Watches `item` until `stop`: reloads it on SIGHUP and when its files change.
pub fn watch(item: Arc<dyn Reload>, stop: CancellationToken) {
    tokio::spawn(async move {
        let files = item.files();
        let mut seen = stamps(&files);
        let mut hup = Hangups::new();
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => false,
                _ = hup.recv() => true,
            };
            let now = stamps(&files);
            if !forced && now == seen {
                continue;
            }
            match item.reload() {
                Ok(()) => {
                    seen = now;
                    tracing::info!(what = item.what(), "reloaded");
                }
                Err(e) => {
                    // Retried at the next change or SIGHUP, not on every tick.
                    seen = now;
                    tracing::warn!(what = item.what(), error = %e, "reload failed; keeping the current settings");
                }
            }
        }
    });
}

/// SIGHUP notifications (never fires where there are no signals).
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::hangup())
                .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP"))
                .ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.signal {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await;
    }
}
