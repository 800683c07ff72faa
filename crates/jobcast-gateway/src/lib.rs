//! The jobcast gateway: accepts WebSocket connections (JWT-authenticated), serves JSON-RPC
//! requests on them, turns job calls into durable jobs on a [`JobQueue`], and pushes job
//! events and topic messages from a [`Bus`] to the attached and subscribed connections.
//!
//! Modules: [`auth`] (tokens and what they allow), [`hub`] (connections, attachments,
//! topics), [`registry`] (methods served, params schemas), `rpc` (serving one request),
//! `session` (one connection's loop), [`http`] (the upgrade and the HTTP routes).
#![warn(missing_docs)]

mod accept;
pub mod admission;
pub mod auth;
pub mod conn;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod registry;
pub mod reload;
mod rpc;
mod session;
pub mod stats;
mod submit;
pub mod tls;
mod topics;
pub mod ws;

use auth::AuthConfig;
use jobcast_core::{BROADCAST_TOPIC, Bus, Inbound, JobQueue};
use jobcast_protocol::{CloseCode, OptionLimits};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Gateway settings.
#[derive(Clone)]
pub struct GatewayConfig {
    /// This gateway's id (in `rpc.welcome`, `/stats`, and as its inbox name).
    pub server_id: String,
    /// Ping interval; a peer silent for two intervals is closed with 1001.
    pub heartbeat: Duration,
    /// Largest inbound message; larger ones close the connection with 1009.
    pub max_message_bytes: usize,
    /// Outbound frames queued per connection before it is closed as a slow consumer.
    pub outbound_queue: usize,
    /// Who may connect: origins, and connection caps per gateway, IP and user.
    pub limits: admission::Limits,
    /// Messages per second one connection may send (token bucket; 0 = no limit); past it,
    /// requests get -32003 with `retryAfterMs`.
    pub rate_per_sec: f64,
    /// Messages one connection may send in a burst.
    pub rate_burst: u32,
    /// Requests served at once per connection; reading pauses past it.
    pub max_in_flight: usize,
    /// Least time between two writes of topic messages to one connection: a topic message
    /// arriving sooner after the connection's last write waits in its write buffer until
    /// then, with any that join it (responses and job events are written at once, and take
    /// it along). Zero writes every message at once.
    pub topic_flush_interval: Duration,
    /// Most jobs one connection may be attached to.
    pub max_jobs_per_conn: usize,
    /// Most topics one connection may subscribe to (its `user:` topic included).
    pub max_topics_per_conn: usize,
    /// Most jobs of one user not yet ended, across the cluster (more: -32005; 0 = no limit).
    /// Jobs submitted over the server API without a `userId` are not counted.
    pub max_pending_per_user: u32,
    /// Limits job options are clamped to.
    pub option_limits: OptionLimits,
    /// Token verification.
    pub auth: AuthConfig,
    /// Keys accepted as `Authorization: Bearer <key>` on the server API (`/stats`).
    /// Empty: the server API is closed.
    pub api_keys: Vec<String>,
    /// TLS (`wss://`, `https://`), when set.
    pub tls: Option<Arc<tls::Tls>>,
    /// Time a new connection has for its TLS handshake and for each request head.
    pub handshake_timeout: Duration,
    /// Time an HTTP request (body included) has to be served.
    pub request_timeout: Duration,
}

impl GatewayConfig {
    /// Defaults with the given id and token settings.
    pub fn new(server_id: impl Into<String>, auth: AuthConfig) -> Self {
        Self {
            server_id: server_id.into(),
            heartbeat: Duration::from_secs(25),
            max_message_bytes: 1 << 20,
            outbound_queue: 1024,
            limits: admission::Limits::default(),
            rate_per_sec: 1000.0,
            rate_burst: 2000,
            max_in_flight: 128,
            topic_flush_interval: Duration::from_millis(5),
            max_jobs_per_conn: 10_000,
            max_topics_per_conn: 256,
            max_pending_per_user: 1_000,
            option_limits: OptionLimits::default(),
            auth,
            api_keys: Vec::new(),
            tls: None,
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A gateway: shared state of every connection it serves.
pub struct Gateway {
    /// Settings.
    pub config: GatewayConfig,
    /// Connections, attachments, topics.
    pub hub: hub::Hub,
    /// The job queue.
    pub queue: Arc<dyn JobQueue>,
    /// The bus.
    pub bus: Arc<dyn Bus>,
    /// Methods served.
    pub registry: registry::Registry,
    draining: AtomicBool,
    admission: Arc<admission::Admission>,
    /// Fires when the gateway shuts down; sessions close with 1012.
    pub shutdown: CancellationToken,
    /// When the gateway started.
    pub started: Instant,
    /// This run of the gateway (server id and a random suffix): names its presence records
    /// and reports, so a restarted gateway with the same server id never inherits them.
    pub instance_id: String,
    /// Ended jobs per second, between stats reports.
    rate: parking_lot::Mutex<stats::Rate>,
}

/// The reason sent with 1012 when the gateway stops.
pub(crate) const RESTARTING: &str = "server restarting; reconnect";

impl Gateway {
    /// Creates the gateway and starts delivering its inbox. Must run inside a Tokio runtime.
    pub fn new(
        config: GatewayConfig,
        queue: Arc<dyn JobQueue>,
        bus: Arc<dyn Bus>,
    ) -> jobcast_core::Result<Arc<Self>> {
        let mut inbox = bus.open_inbox(&config.server_id)?;
        metrics::handle();
        let config_server_id = config.server_id.clone();
        let gw = Arc::new(Self {
            registry: registry::Registry::new(queue.clone()),
            config,
            hub: hub::Hub::default(),
            queue,
            bus,
            draining: AtomicBool::new(false),
            admission: Arc::default(),
            shutdown: CancellationToken::new(),
            started: Instant::now(),
            rate: parking_lot::Mutex::new(stats::Rate::default()),
            instance_id: format!("{}#{:016x}", config_server_id, fastrand::u64(..)),
        });
        // Pushes to every connection arrive as this topic, whether or not anyone subscribed.
        gw.bus
            .subscribe_topic(&gw.config.server_id, BROADCAST_TOPIC)?;
        let weak = Arc::downgrade(&gw);
        tokio::spawn(async move {
            while let Some(msg) = inbox.recv().await {
                let Some(gw) = weak.upgrade() else { return };
                match msg {
                    Inbound::Job(event) => gw.hub.dispatch(&event),
                    Inbound::Topic {
                        topic,
                        audience,
                        frame,
                    } => {
                        gw.hub.deliver(&topic, audience, &frame, None);
                    }
                }
            }
        });
        // Every connection's heartbeat, from one timer: a ping each interval, and 1001 for a
        // peer silent for two.
        let weak = Arc::downgrade(&gw);
        let every = gw.config.heartbeat;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                let Some(gw) = weak.upgrade() else { return };
                gw.hub.for_each_conn(|c| c.heartbeat(every * 2));
            }
        });
        Ok(gw)
    }

    /// The HTTP router (`/ws`, `/healthz`, `/readyz`).
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(self.clone())
    }

    /// Serves on `listener` until `stop` fires; then refuses new connections, closes the open
    /// ones with 1012 and returns once they are gone (or after `drain_deadline`).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        stop: CancellationToken,
        drain_deadline: Duration,
    ) {
        stats::start(&self).await;
        if let Some(tls) = &self.config.tls {
            reload::watch(tls.clone(), stop.clone());
        }
        if let Some(keys) = &self.config.auth.public_keys {
            reload::watch(keys.clone(), stop.clone());
        }
        let accepting = tokio::spawn(accept::serve(
            self.clone(),
            listener,
            self.router(),
            stop.clone(),
        ));
        stop.cancelled().await;
        self.draining.store(true, Ordering::SeqCst);
        self.shutdown.cancel();
        self.hub
            .for_each_conn(|c| c.close(CloseCode::ServiceRestart, RESTARTING));
        // Upgraded WebSockets are detached from their HTTP connections: wait for the sessions
        // themselves (each closes with 1012 on shutdown) as well as for plain HTTP requests.
        let drained = async {
            let _ = accepting.await;
            while self.connection_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(drain_deadline, drained).await.is_err() {
            tracing::warn!(
                open = self.connection_count(),
                "drain deadline passed with connections still open"
            );
        }
    }

    /// Whether the gateway refuses new work.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Starts draining: new connections get 503, new job calls -32005.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Connections currently open (including ones being upgraded).
    pub fn connection_count(&self) -> usize {
        self.admission.count()
    }
}
