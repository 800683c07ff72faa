//! The one pub/sub connection of a process: gateway inboxes, worker control channels and
//! topic channels. Subscriptions change by command; after a lost connection it reconnects
//! with backoff and subscribes to everything again.

use crate::Inner;
use futures_util::StreamExt;
use std::{sync::Weak, time::Duration};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A change of subscriptions.
pub enum Command {
    /// Start receiving a channel.
    Subscribe(String),
    /// Stop receiving a channel.
    Unsubscribe(String),
}

/// Runs until `stop` or until the backend is dropped.
pub async fn run(
    client: redis::Client,
    inner: Weak<Inner>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if stop.is_cancelled() {
            return;
        }
        let pubsub = match client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "pub/sub connect failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // Everything wanted now (commands queued meanwhile are applied below; subscribing
        // twice is harmless).
        let Some(channels) = inner.upgrade().map(|i| i.channels()) else {
            return;
        };
        let mut ok = true;
        for ch in channels {
            if let Err(e) = sink.subscribe(&ch).await {
                tracing::warn!(error = %e, "resubscribe failed");
                ok = false;
                break;
            }
        }
        if !ok {
            continue;
        }
        backoff = Duration::from_millis(50);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                cmd = commands.recv() => {
                    let r = match cmd {
                        None => return,
                        Some(Command::Subscribe(ch)) => sink.subscribe(&ch).await,
                        Some(Command::Unsubscribe(ch)) => sink.unsubscribe(&ch).await,
                    };
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "pub/sub command failed; reconnecting");
                        break;
                    }
                }
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        tracing::warn!("pub/sub connection lost; reconnecting");
                        break;
                    };
                    let Some(inner) = inner.upgrade() else { return };
                    let payload: String = msg.get_payload().unwrap_or_default();
                    inner.on_message(msg.get_channel_name(), &payload);
                }
            }
        }
    }
}
