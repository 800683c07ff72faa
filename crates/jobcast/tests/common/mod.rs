//! Test harness: starts real `jobcast serve` processes on port 0 and talks to them over real
//! sockets (a raw JSON WebSocket client, and raw HTTP for refused upgrades).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_websockets::{ClientBuilder, MaybeTlsStream, Message, WebSocketStream};

pub const SECRET: &str = "test-secret";
pub const WAIT: Duration = Duration::from_secs(10);

/// Which deployment a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `jobcast serve`.
    Embedded,
    /// `jobcast gateway` + `jobcast worker` + a private redis-server.
    Redis,
}

/// A running jobcast: `serve`, or a gateway with a worker and Redis.
pub struct Server {
    /// `serve`, or the gateway.
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// The worker (Redis mode).
    pub worker: Option<Proc>,
    /// The Redis server (Redis mode).
    pub redis: Option<jobcast_redis::testing::RedisServer>,
    _tmp: Option<tempfile::TempDir>,
}

/// Flags that go to the worker (renamed) in Redis mode; the rest go to the gateway, and the
/// queue flags to both.
fn split_flags(extra: &[&str]) -> (Vec<String>, Vec<String>) {
    let (mut gw, mut wk) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < extra.len() {
        let (flag, value) = (extra[i], extra.get(i + 1).copied().unwrap_or_default());
        match flag {
            "--worker-concurrency" => wk.extend(["--concurrency".to_owned(), value.to_owned()]),
            "--max-queued" | "--retention" => {
                gw.extend([flag.to_owned(), value.to_owned()]);
                wk.extend([flag.to_owned(), value.to_owned()]);
            }
            _ => gw.extend([flag.to_owned(), value.to_owned()]),
        }
        i += 2;
    }
    (gw, wk)
}

/// Reads the first stdout line of a child (its banner) and keeps draining the rest.
fn banner(child: &mut Child) -> String {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("process printed nothing").unwrap();
    std::thread::spawn(move || for _ in lines {});
    first
}

fn addr_in(banner: &str) -> SocketAddr {
    banner
        .split("listening on ")
        .nth(1)
        .and_then(|r| {
            r.strip_prefix("http://")
                .or_else(|| r.strip_prefix("https://"))
        })
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected banner: {banner}"))
        .parse()
        .unwrap()
}

impl Server {
    /// Starts the given deployment with extra (`serve`-style) flags.
    pub fn start_on(backend: Backend, extra: &[&str]) -> Self {
        match backend {
            Backend::Embedded => Self::start(extra),
            Backend::Redis => {
                let redis = jobcast_redis::testing::RedisServer::start()
                    .expect("redis-server (installed by .ci/run)");
                let (gw_flags, wk_flags) = split_flags(extra);
                let mut s = Self::start_gateway(&redis.url(), &gw_flags);
                s.worker = Some(spawn_worker(&redis.url(), &wk_flags));
                wait_for_worker(&redis.url());
                s.redis = Some(redis);
                s
            }
        }
    }

    /// Starts `jobcast gateway` on `redis_url`.
    pub fn start_gateway(redis_url: &str, flags: &[String]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_jobcast"))
            .args([
                "gateway",
                "--listen",
                "127.0.0.1:0",
                "--jwt-secret",
                SECRET,
                "--redis",
                redis_url,
            ])
            .args(flags)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let addr = addr_in(&banner(&mut child));
        Self {
            child,
            addr,
            dir: PathBuf::new(),
            worker: None,
            redis: None,
            _tmp: None,
        }
    }

    /// Starts with a fresh data dir and extra flags (`jobcast serve`).
    pub fn start(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut s = Self::start_in(&dir, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Starts on an existing data dir.
    pub fn start_in(dir: &Path, extra: &[&str]) -> Self {
        Self::start_in_with_env(dir, extra, &[])
    }

    /// [`Server::start_in`] with extra environment variables for the process.
    pub fn start_in_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_jobcast"))
            .args(["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let addr = addr_in(&banner(&mut child));
        Self {
            child,
            addr,
            dir: dir.to_path_buf(),
            worker: None,
            redis: None,
            _tmp: None,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Connects as `sub` with default claims.
    pub async fn connect(&self, sub: &str) -> Ws {
        self.connect_with(&token(sub, None)).await
    }

    pub async fn connect_with(&self, token: &str) -> Ws {
        Ws::connect(&format!("ws://{}/ws?token={token}", self.addr), None)
            .await
            .unwrap()
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends a signal (`TERM`, `HUP`, ...) to the server process.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process that is killed when dropped, so a failing test leaves no orphan.
pub struct Proc(pub Child);

impl Proc {
    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Starts `jobcast worker` on `redis_url`.
pub fn spawn_worker(redis_url: &str, flags: &[String]) -> Proc {
    spawn_worker_with_banner(redis_url, flags).0
}

/// Starts `jobcast worker` on `redis_url`; returns it with the line it printed on start.
pub fn spawn_worker_with_banner(redis_url: &str, flags: &[String]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobcast"))
        .args(["worker", "--redis", redis_url])
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let b = banner(&mut child);
    assert!(b.starts_with("jobcast worker"), "{b}");
    (Proc(child), b)
}

/// Waits until a worker has announced its methods in Redis.
pub fn wait_for_worker(redis_url: &str) {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_connection().unwrap();
    for _ in 0..500 {
        let n: i64 = redis::cmd("ZCARD")
            .arg("{jobcast}:workers")
            .query(&mut conn)
            .unwrap();
        if n > 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no worker announced itself");
}

/// A token signed with the test secret.
pub fn token(sub: &str, claims: Option<Value>) -> String {
    jobcast_gateway::auth::mint(SECRET.as_bytes(), sub, 3600, claims.as_ref()).unwrap()
}

/// A raw JSON WebSocket client.
pub struct Ws {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Ws {
    /// Connects to `uri` (`ws://` or `wss://`, with a custom TLS connector when given) and
    /// waits for `rpc.welcome`; the error is the connection's failure.
    pub async fn connect(
        uri: &str,
        connector: Option<&tokio_websockets::Connector>,
    ) -> Result<Ws, tokio_websockets::Error> {
        let mut b = ClientBuilder::new().uri(uri).unwrap();
        if let Some(c) = connector {
            b = b.connector(c);
        }
        let (ws, _) = b.connect().await?;
        let mut ws = Ws { ws, next_id: 0 };
        let welcome = ws.recv().await;
        assert_eq!(welcome["method"], "rpc.welcome", "{welcome}");
        Ok(ws)
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_owned())).await.unwrap();
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    /// Next JSON text message (pings are answered by the library and skipped).
    pub async fn recv(&mut self) -> Value {
        self.try_recv(WAIT).await.expect("no message in time")
    }

    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match m {
                Some(Ok(m)) => {
                    if let Some(t) = m.as_text() {
                        return Some(serde_json::from_str(t).unwrap());
                    }
                    if m.is_close() {
                        panic!("closed by server: {:?}", m.as_close());
                    }
                }
                other => panic!("connection ended: {other:?}"),
            }
        }
    }

    /// Waits for a message matching `pred`, failing on anything else in between when
    /// `strict`; otherwise skips non-matching ones.
    pub async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.recv().await;
            if pred(&v) {
                return v;
            }
        }
    }

    /// Sends a request with a fresh id and returns that id.
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = json!(format!("r{}", self.next_id));
        self.send(json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}))
            .await;
        id
    }

    /// A request whose immediate response is awaited (rpc.* methods).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.request(method, params).await;
        self.recv_until(|v| v["id"] == id && v.get("jobId").is_none())
            .await
    }

    /// Starts a job with options; returns the request id.
    pub async fn job(&mut self, method: &str, params: Value, extra: Value) -> Value {
        self.next_id += 1;
        let id = json!(format!("j{}", self.next_id));
        let mut req = json!({"jsonrpc":"2.0","id":id,"method":method,"params":params});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                req[k] = v;
            }
        }
        self.send(req).await;
        id
    }

    /// The responses (not notifications) to several requests, which may arrive in any
    /// order, returned in the order of `ids`.
    pub async fn responses(&mut self, ids: &[&Value]) -> Vec<Value> {
        let mut got: Vec<Option<Value>> = vec![None; ids.len()];
        while got.iter().any(Option::is_none) {
            let v = self.recv().await;
            if v.get("method").is_some() {
                continue;
            }
            if let Some(i) = ids.iter().position(|id| v["id"] == **id) {
                got[i] = Some(v);
            }
        }
        got.into_iter().flatten().collect()
    }

    /// The final response for request `id`.
    pub async fn final_for(&mut self, id: &Value) -> Value {
        self.recv_until(|v| v["id"] == *id && v.get("method").is_none())
            .await
    }

    /// Waits for the server's close frame and returns its code.
    pub async fn close_code(&mut self) -> u16 {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("no close in time")
            {
                Some(Ok(m)) if m.is_close() => {
                    return m.as_close().map(|(c, _)| c.into()).unwrap_or(0);
                }
                Some(Ok(_)) => continue,
                other => panic!("ended without a close frame: {other:?}"),
            }
        }
    }
}

/// Sends a raw HTTP/1.1 upgrade request and returns the status code and the whole response
/// head and body read so far.
pub async fn raw_upgrade(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    loop {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let head = &text[..head_end];
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if head.starts_with("HTTP/1.1 101") || got.len() >= head_end + 4 + len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text, s)
}

/// Runs the jobcast binary with args; returns (exit code, stdout, stderr).
pub fn jobcast(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jobcast"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `GET path` over plain HTTP; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

/// A plain HTTP/1.1 response: status, content type, body.
pub struct HttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends one HTTP request (`Authorization: Bearer key` when given, a JSON body when given).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> HttpResponse {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(k) = key {
        req.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    HttpResponse {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// The value of one series (`name{labels}` exactly as exposed) in a Prometheus text body.
pub fn metric_sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse::<f64>().ok())?
    })
}

/// `GET /metrics` (with API key `k`) and the value of `series`; panics with the body when absent.
pub async fn scrape(addr: SocketAddr, series: &str) -> f64 {
    let body = http(addr, "GET", "/metrics", Some("k"), None).await.body;
    metric_sample(&body, series).unwrap_or_else(|| panic!("no {series} sample:\n{body}"))
}
