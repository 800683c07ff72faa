//! TLS and the handshake deadline over real sockets: `wss://` and `https://` with certificates
//! made by rcgen, the certificate reloaded on SIGHUP and on a file change while open
//! connections carry on, and connections that say nothing or trickle their request (slowloris)
//! closed after `--handshake-timeout` (idle keep-alive connections too, without counting them
//! as failed handshakes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::json;
use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, rustls};

/// A self-signed certificate for 127.0.0.1 written to `dir`; returns its PEM.
fn write_cert(dir: &Path) -> String {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    std::fs::write(dir.join("key.pem"), c.signing_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
    c.cert.pem()
}

/// A TLS client that trusts only `ca_pem`.
fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A gateway serving TLS with a fresh self-signed certificate written to `dir`, with `extra`
/// flags; returns it and the certificate's PEM.
fn tls_server(dir: &Path, extra: &[&str]) -> (Server, String) {
    let ca = write_cert(dir);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    (Server::start(&args), ca)
}

/// A TLS connection to `addr` (by its IP), trusting only `ca_pem`.
async fn tls_connect(addr: SocketAddr, ca_pem: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tls_over(tcp, addr, ca_pem).await
}

/// TLS over an open `tcp` to `addr`.
async fn tls_over(
    tcp: TcpStream,
    addr: SocketAddr,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let name = ServerName::IpAddress(addr.ip().into());
    TlsConnector::from(client_config(ca_pem))
        .connect(name, tcp)
        .await
        .unwrap()
}

async fn wss(addr: SocketAddr, sub: &str, ca_pem: &str) -> Result<Ws, tokio_websockets::Error> {
    let connector = tokio_websockets::Connector::Rustls(TlsConnector::from(client_config(ca_pem)));
    let uri = format!("wss://{addr}/ws?token={}", token(sub, None));
    Ws::connect(&uri, Some(&connector)).await
}

/// `GET path` over TLS; returns the response head and body.
async fn https_get(addr: SocketAddr, path: &str, ca_pem: &str) -> String {
    let mut tls = tls_connect(addr, ca_pem).await;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.unwrap();
    out
}

/// Retries `wss` until it succeeds (the watcher reloads every 2 s).
async fn wss_eventually(addr: SocketAddr, ca_pem: &str) -> Ws {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match wss(addr, "alice", ca_pem).await {
            Ok(ws) => return ws,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the new certificate was never served: {e}"),
        }
    }
}

#[tokio::test]
async fn wss_and_https_with_reload() {
    let certs = tempfile::tempdir().unwrap();
    let (s, first) = tls_server(certs.path(), &[]);

    // wss:// carries the protocol; https:// serves the HTTP routes.
    let mut ws = wss(s.addr, "alice", &first).await.unwrap();
    let id = ws.job("demo.echo", json!({"over": "tls"}), json!({})).await;
    assert_eq!(ws.final_for(&id).await["result"]["over"], "tls");
    let health = https_get(s.addr, "/healthz", &first).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // Plain ws:// on the TLS port is not served.
    assert!(
        Ws::connect(
            &format!("ws://{}/ws?token={}", s.addr, token("a", None)),
            None
        )
        .await
        .is_err()
    );

    // New files and SIGHUP: new connections get the new certificate, and a client that
    // trusts only the old one is refused; the open connection is not disturbed.
    let second = write_cert(certs.path());
    s.signal("HUP");
    let mut ws2 = wss_eventually(s.addr, &second).await;
    assert!(wss(s.addr, "alice", &first).await.is_err());
    let v = ws.call("rpc.ping", json!({})).await;
    assert!(v["result"]["pong"].is_number(), "{v}");
    let v = ws2.call("rpc.ping", json!({})).await;
    assert!(v["result"]["pong"].is_number(), "{v}");

    // A changed file is picked up without a signal.
    let third = write_cert(certs.path());
    wss_eventually(s.addr, &third).await;

    // A broken file is refused and the certificate in use stays.
    std::fs::write(certs.path().join("cert.pem"), "not a certificate").unwrap();
    s.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    wss(s.addr, "alice", &third).await.unwrap();
}

/// Reads until the server closes the connection; panics if it is still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("the server kept a stalled connection open past {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn stalled_handshakes_are_closed() {
    let s = Server::start(&["--handshake-timeout", "1s", "--api-key", "k"]);
    let started = Instant::now();
    // A keep-alive connection that made a request and then idles: closed at the deadline too,
    // but not counted as a failed handshake.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 256];
    let n = idle.read(&mut head).await.unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    // Connects and says nothing.
    let mut silent: Vec<TcpStream> = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(s.addr).await.unwrap());
    }
    // Trickles an upgrade request, one byte every 100 ms: it never finishes in time.
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n",
        token("slow", None)
    );
    let mut trickled = 0;
    let slow_closed = loop {
        if slow
            .write_all(&req.as_bytes()[trickled..=trickled])
            .await
            .is_err()
        {
            break true;
        }
        trickled += 1;
        let mut b = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            _ => {}
        }
        if trickled == req.len() || started.elapsed() > Duration::from_secs(8) {
            break false;
        }
    };
    assert!(
        slow_closed,
        "a trickled request was still open after {trickled} bytes"
    );
    assert!(
        trickled < req.len(),
        "the whole request head was sent before the deadline"
    );
    for c in &mut silent {
        closed_within(c, Duration::from_secs(5)).await;
    }
    closed_within(&mut idle, Duration::from_secs(5)).await;
    // The gateway still serves everyone else, and counted the timeouts.
    let mut ws = s.connect("alice").await;
    let v = ws.call("rpc.ping", json!({})).await;
    assert!(v["result"]["pong"].is_number(), "{v}");
    let timeouts = scrape(
        s.addr,
        "jobcast_handshakes_failed_total{reason=\"timeout\"}",
    )
    .await;
    // 50 silent + 1 trickling; the idle keep-alive connection is not a failed handshake.
    assert_eq!(timeouts, 51.0);
}

#[tokio::test]
async fn stalled_tls_handshakes_are_closed() {
    let certs = tempfile::tempdir().unwrap();
    let (s, _) = tls_server(certs.path(), &["--handshake-timeout", "1s"]);
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    closed_within(&mut silent, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn one_deadline_covers_the_tls_handshake_and_the_first_request_head() {
    let certs = tempfile::tempdir().unwrap();
    let (s, ca) = tls_server(certs.path(), &["--handshake-timeout", "2s"]);
    // Connects, waits most of the deadline, finishes the TLS handshake, then says nothing.
    let started = Instant::now();
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut tls = tls_over(tcp, s.addr, &ca).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
        .await
        .expect("the server kept the connection open");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // Closed by the one deadline (2 s after connecting), not 2 s after the TLS handshake
    // (3.5 s): the margin allows for a slow machine.
    let closed_after = started.elapsed();
    assert!(
        closed_after < Duration::from_millis(3000),
        "closed after {closed_after:?}"
    );
}

#[tokio::test]
async fn slow_request_bodies_get_408() {
    let s = Server::start(&["--request-timeout", "1s", "--api-key", "k"]);
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    // The head is complete; the body promises 100 bytes and sends 10.
    c.write_all(
        b"POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"topic\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut head = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut head))
        .await
        .expect("no answer to a stalled body")
        .unwrap();
    let text = String::from_utf8_lossy(&head[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}
