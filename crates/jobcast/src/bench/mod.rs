//! `jobcast bench`: load generators that drive any server speaking the protocol (jobcast or
//! the reference), each printing a human summary and one JSON line.
//!
//! - `rpc`: job calls, closed loop (C connections × W in flight) or open loop (a fixed total
//!   rate, latency measured from each call's scheduled send time).
//! - `idle`: N connections held open over several processes and source addresses; resident
//!   memory per connection of the server's processes.
//! - `fanout`: S subscribers on a topic and a publisher at R messages/s over HTTP; delivery
//!   latency, deliveries/s, losses.
//! - `intrinsic`: no server; how late the machine wakes a sleeping thread, the floor under
//!   every latency tail measured on it.

mod conn;
mod fanout;
mod idle;
mod intrinsic;
mod pace;
mod report;
mod rpc;

use crate::settings::SecretArgs;
use anyhow::Context;
use clap::{Args, Subcommand};

/// Flags of `jobcast bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub mode: Mode,
}

/// The load to run.
#[derive(Subcommand, Debug)]
pub enum Mode {
    /// Job calls: completed/s, ack and completion latency percentiles, errors, losses.
    Rpc(rpc::RpcArgs),
    /// Idle connections with heartbeats: established, failed, dropped, server memory per
    /// connection.
    Idle(idle::IdleArgs),
    /// Topic fan-out: delivery latency percentiles, deliveries/s, losses.
    Fanout(fanout::FanoutArgs),
    /// No server: how late this machine wakes a sleeping thread (its own latency floor).
    Intrinsic(intrinsic::IntrinsicArgs),
}

/// How to reach and authenticate to the server under test (shared by every mode).
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// WebSocket URL of the server under test.
    #[arg(long, env = "JOBCAST_URL", default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Token to connect with (sent as `?token=`); when absent one is minted per user with the
    /// configured secret.
    #[arg(long, env = "JOBCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub secret: SecretArgs,
}

impl Target {
    /// The URL to connect with as `user` (token in the query string, which every server
    /// speaking the protocol accepts).
    pub fn url_for(&self, user: &str) -> anyhow::Result<String> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => {
                let secret = self.secret.existing()?.context(
                    "no token: pass --token, or a secret (--jwt-secret, JWT_SECRET, or --data-dir of the server)",
                )?;
                jobcast_gateway::auth::mint(&secret, user, 24 * 3600, None)
                    .map_err(anyhow::Error::msg)?
            }
        };
        let sep = if self.url.contains('?') { '&' } else { '?' };
        Ok(format!("{}{sep}token={token}", self.url))
    }
}

/// Runs `bench`; returns the exit code (1 when requests were lost or failed to connect).
pub async fn run(args: BenchArgs) -> anyhow::Result<u8> {
    match args.mode {
        Mode::Rpc(a) => rpc::run(a).await,
        Mode::Idle(a) => idle::run(a).await,
        Mode::Fanout(a) => fanout::run(a).await,
        Mode::Intrinsic(a) => intrinsic::run(a).await,
    }
}
