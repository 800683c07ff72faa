//! One benchmark connection: a raw WebSocket client that has seen `rpc.welcome`.

use anyhow::{Context, bail};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, WebSocketStream};

/// A connected, welcomed WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Connects to `url` (`ws://` only) and waits (up to `wait`) for `rpc.welcome`.
pub async fn connect(url: &str, wait: Duration) -> anyhow::Result<Ws> {
    connect_from(url, None, wait).await
}

/// [`connect`] from a given local address. With a port of 0 the kernel picks one; an explicit
/// port spares the kernel's search for a free one, which at a few hundred thousand connections
/// on one machine takes all its time (`__inet_check_established`, docs/benchmarks.md).
pub async fn connect_from(
    url: &str,
    from: Option<std::net::SocketAddr>,
    wait: Duration,
) -> anyhow::Result<Ws> {
    let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("ws"),
        "bench speaks ws:// only: {url}"
    );
    let host = uri
        .host()
        .context("URL without a host")?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let fut = async {
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .next()
            .context("the host has no address")?;
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(local) = from {
            // A port of a connection closed by an earlier run may still be in TIME_WAIT.
            socket.set_reuseaddr(true)?;
            socket.bind(local)?;
        }
        let tcp = socket.connect(addr).await?;
        // Each request is a small frame that must leave at once.
        tcp.set_nodelay(true)?;
        let (mut ws, _) = ClientBuilder::from_uri(uri).connect_on(tcp).await?;
        while let Some(m) = ws.next().await {
            let m = m?;
            if let Some(t) = m.as_text() {
                if t.contains("\"rpc.welcome\"") {
                    return Ok(ws);
                }
            } else if m.is_close() {
                bail!("closed before rpc.welcome: {:?}", m.as_close());
            }
        }
        bail!("closed before rpc.welcome")
    };
    tokio::time::timeout(wait, fut)
        .await
        .context("no rpc.welcome in time")?
}
