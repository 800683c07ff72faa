//! The gateway flags shared by `serve` and `gateway`, and running a gateway on any backend
//! until SIGINT/SIGTERM.

use crate::settings::{SecretArgs, parse_duration};
use anyhow::Context;
use clap::Args;
use jobcast_core::{Bus, JobQueue};
use jobcast_gateway::{Gateway, GatewayConfig, auth::AuthConfig};
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Flags of a gateway.
#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// Address to listen on [default: 127.0.0.1:8080, or $HOST:$PORT when PORT is set].
    #[arg(long, env = "JOBCAST_LISTEN")]
    pub listen: Option<String>,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// API keys for the server API (`Authorization: Bearer <key>` on /stats); comma-separated.
    #[arg(long, env = "API_KEY", value_delimiter = ',', hide_env_values = true)]
    pub api_key: Vec<String>,
    /// WebSocket ping interval in ms; silent peers are closed after two.
    #[arg(long, env = "HEARTBEAT_MS", default_value_t = 25_000)]
    pub heartbeat_ms: u64,
    /// This server's id [default: gw-<port>].
    #[arg(long, env = "SERVER_ID")]
    pub server_id: Option<String>,
    /// Largest inbound WebSocket message in bytes (larger: close 1009).
    #[arg(long, env = "MAX_PAYLOAD", default_value_t = 1 << 20)]
    pub max_message_bytes: usize,
    /// Accept tokens without `exp`.
    #[arg(long, env = "JWT_ALLOW_NO_EXP")]
    pub allow_no_exp: bool,
    /// Public key files (PEM: RSA, EC P-256/P-384 or Ed25519) that sign tokens; comma-separated.
    /// With public keys, HMAC-signed tokens are refused. Reloaded on change and on SIGHUP.
    #[arg(long, env = "JWT_PUBLIC_KEY", value_delimiter = ',')]
    pub jwt_public_key: Vec<PathBuf>,
    /// A JWKS file (`{"keys":[...]}`) of token-signing public keys, selected by `kid`.
    /// Reloaded on change and on SIGHUP.
    #[arg(long, env = "JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Required token audience.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Required token issuer.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// On shutdown, how long connections and running jobs get to finish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Most WebSocket connections at once on this gateway (more: 503; 0 = no limit).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Most connections at once from one IP address (more: 429; 0 = no limit).
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    pub max_connections_per_ip: usize,
    /// Most connections at once of one user (more: 429; 0 = no limit).
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", default_value_t = 100)]
    pub max_connections_per_user: usize,
    /// Browser origins allowed to connect (comma-separated; `*` for any). Default: any.
    /// Others get 403; clients that send no Origin (not browsers) are not affected.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Messages per second one connection may send (more: -32003 with retryAfterMs; 0 = no
    /// limit).
    #[arg(long, env = "RATE_LIMIT", default_value_t = 1000.0)]
    pub rate_limit: f64,
    /// Messages one connection may send at once before the rate applies.
    #[arg(long, env = "RATE_BURST", default_value_t = 2000)]
    pub rate_burst: u32,
    /// Least time between two writes of topic messages to one connection: a topic message
    /// arriving sooner after the connection's last write waits, with any that join it, so a
    /// busy connection gets fewer, larger writes. Responses and job events are never held.
    /// 0 writes every message at once.
    #[arg(long, env = "TOPIC_FLUSH_INTERVAL", default_value = "5ms", value_parser = parse_duration)]
    pub topic_flush_interval: Duration,
    /// Most jobs of one user not yet ended, across the cluster (more: -32005; 0 = no limit).
    #[arg(long, env = "MAX_PENDING_PER_USER", default_value_t = 1_000)]
    pub max_pending_per_user: u32,
    /// Certificate chain (PEM) to serve `wss://` and `https://` with; needs --tls-key.
    /// Reloaded when the file changes and on SIGHUP.
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Time a new connection has for its TLS handshake and its request head (slower ones are
    /// closed).
    #[arg(long, env = "HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// Time an HTTP request, body included, has to be served (slower: 408).
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Most topics one connection may subscribe to, its own `user:` topic included
    /// (more: -32005).
    #[arg(long, env = "MAX_TOPICS_PER_CONNECTION", default_value_t = 256)]
    pub max_topics_per_connection: usize,
}

impl GatewayArgs {
    /// The address to bind.
    pub fn listen_addr(&self) -> String {
        if let Some(l) = &self.listen {
            return l.clone();
        }
        match std::env::var("PORT") {
            Ok(port) if !port.is_empty() => {
                let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
                format!("{host}:{port}")
            }
            _ => "127.0.0.1:8080".into(),
        }
    }

    /// Binds the listener.
    pub async fn bind(&self) -> anyhow::Result<(TcpListener, SocketAddr)> {
        let addr = self.listen_addr();
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr()?;
        Ok((listener, local))
    }

    /// Whether tokens are verified with public keys (and not the shared secret).
    pub fn uses_public_keys(&self) -> bool {
        !self.jwt_public_key.is_empty() || self.jwks_file.is_some()
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The gateway settings for a gateway bound to `local`.
    pub fn config(&self, secret: Vec<u8>, local: SocketAddr) -> anyhow::Result<GatewayConfig> {
        let mut auth = AuthConfig::hmac(secret);
        auth.allow_no_exp = self.allow_no_exp;
        auth.audience = self.jwt_audience.clone();
        auth.issuer = self.jwt_issuer.clone();
        if self.uses_public_keys() {
            auth.public_keys = Some(
                jobcast_gateway::auth::keys::PublicKeys::load(
                    self.jwt_public_key.clone(),
                    self.jwks_file.clone(),
                )
                .map_err(anyhow::Error::msg)?,
            );
        }
        let id = self
            .server_id
            .clone()
            .unwrap_or_else(|| format!("gw-{}", local.port()));
        let mut config = GatewayConfig::new(id, auth);
        config.heartbeat = Duration::from_millis(self.heartbeat_ms.max(100));
        config.max_message_bytes = self.max_message_bytes;
        config.limits = jobcast_gateway::admission::Limits {
            max_connections: self.max_connections,
            max_per_ip: self.max_connections_per_ip,
            max_per_user: self.max_connections_per_user,
            allowed_origins: self
                .allowed_origins
                .iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        };
        config.rate_per_sec = self.rate_limit.max(0.0);
        config.rate_burst = self.rate_burst;
        config.topic_flush_interval = self.topic_flush_interval;
        config.max_pending_per_user = self.max_pending_per_user;
        config.handshake_timeout = self.handshake_timeout.max(Duration::from_millis(100));
        config.request_timeout = self.request_timeout.max(Duration::from_millis(100));
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls =
                Some(jobcast_gateway::tls::Tls::load(cert, key).map_err(anyhow::Error::msg)?);
        }
        config.max_topics_per_conn = self.max_topics_per_connection.max(1);
        config.api_keys = self
            .api_key
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        Ok(config)
    }
}

/// Serves a gateway on `listener` until `stop`, then drains.
pub async fn run(
    args: &GatewayArgs,
    config: GatewayConfig,
    listener: TcpListener,
    queue: Arc<dyn JobQueue>,
    bus: Arc<dyn Bus>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let gateway = Gateway::new(config, queue, bus)?;
    gateway.serve(listener, stop, args.drain_timeout).await;
    Ok(())
}

/// Initialises logging to stderr (`RUST_LOG`, default info).
pub fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Cancels `stop` on SIGINT or SIGTERM.
pub async fn signals(stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested; draining");
    stop.cancel();
}
