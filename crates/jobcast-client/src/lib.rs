//! The Rust client SDK: connect to a jobcast gateway, call job methods and follow their
//! progress to the result, attach to existing jobs, call `rpc.*` methods, and receive topic
//! messages. One background task owns the socket; calls are routed back by request id and
//! job id.
#![warn(missing_docs)]

use futures_util::{SinkExt, StreamExt};
use jobcast_protocol::ErrorCode;
use serde::Serialize;
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_websockets::{ClientBuilder, Message};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be made (including HTTP refusals such as 401).
    #[error("connect failed: {0}")]
    Connect(String),
    /// The connection closed.
    #[error("connection closed")]
    Closed,
    /// The server answered with a JSON-RPC error.
    #[error("{0}")]
    Rpc(RpcError),
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The code.
    pub code: i32,
    /// The message.
    pub message: String,
    /// Extra data.
    pub data: Option<Value>,
}

impl RpcError {
    fn from_value(v: &Value) -> Self {
        Self {
            code: v["code"].as_i64().unwrap_or(0) as i32,
            message: v["message"].as_str().unwrap_or_default().to_owned(),
            data: v.get("data").cloned(),
        }
    }

    /// The code as a known jobcast code.
    pub fn kind(&self) -> Option<ErrorCode> {
        ErrorCode::try_from(self.code).ok()
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JSON-RPC error {}: {}", self.code, self.message)
    }
}

/// What happens to a job, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum JobUpdate {
    /// `job.accepted`.
    Accepted {
        /// The job id.
        job_id: String,
        /// `queued` or `delayed` (any state for a duplicate).
        state: String,
        /// Whether the id already existed.
        duplicate: bool,
    },
    /// `job.progress`.
    Progress(Value),
    /// The final response.
    Done(Result<Value, RpcError>),
}

/// Options of a job call (PROTOCOL.md §3); unset members take the server's defaults.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallOptions {
    /// Client-chosen job id (top-level `jobId`).
    #[serde(skip)]
    pub job_id: Option<String>,
    /// 0–1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    /// Delay before the first run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Per-attempt timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Total attempts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Backoff, as JSON (`{"type":"exponential","delayMs":500}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Value>,
}

/// A job being followed: its updates arrive in order, ending with [`JobUpdate::Done`].
pub struct JobHandle {
    updates: mpsc::UnboundedReceiver<JobUpdate>,
    /// The job id, once known.
    pub job_id: Option<String>,
}

impl JobHandle {
    /// The next update; `None` once the job is done or the connection closed.
    pub async fn next(&mut self) -> Option<JobUpdate> {
        let u = self.updates.recv().await;
        if let Some(JobUpdate::Accepted { job_id, .. }) = &u {
            self.job_id = Some(job_id.clone());
        }
        u
    }

    /// Waits for the result, skipping other updates.
    pub async fn result(mut self) -> Result<Value, ClientError> {
        while let Some(u) = self.next().await {
            if let JobUpdate::Done(r) = u {
                return r.map_err(ClientError::Rpc);
            }
        }
        Err(ClientError::Closed)
    }
}

#[derive(Default)]
struct Routes {
    rpc: HashMap<String, oneshot::Sender<Result<Value, RpcError>>>,
    by_request: HashMap<String, mpsc::UnboundedSender<JobUpdate>>,
    by_job: HashMap<String, mpsc::UnboundedSender<JobUpdate>>,
}

/// A connection to a gateway.
pub struct Client {
    out: mpsc::UnboundedSender<String>,
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU64,
    welcome: Value,
    topics: broadcast::Sender<(String, Value)>,
}

fn key(id: &Value) -> String {
    id.to_string()
}

impl Client {
    /// Connects to `url` (`ws://host:port/ws`) with `token` sent as `Authorization: Bearer`,
    /// and waits for `rpc.welcome`.
    pub async fn connect(url: &str, token: &str) -> Result<Self, ClientError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| ClientError::Connect(format!("{url}: {e}")))?;
        let auth = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        if uri.scheme_str() != Some("ws") {
            return Err(ClientError::Connect(format!(
                "{url}: only ws:// URLs are supported"
            )));
        }
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Connect(format!("{url}: no host")))?
            .trim_matches(['[', ']'])
            .to_owned();
        let tcp = tokio::net::TcpStream::connect((host.as_str(), uri.port_u16().unwrap_or(80)))
            .await
            .map_err(|e| ClientError::Connect(format!("{url}: {e}")))?;
        // Requests are small frames that must leave at once (no Nagle delay).
        tcp.set_nodelay(true)
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (mut ws, _) = ClientBuilder::from_uri(uri)
            .add_header(http::header::AUTHORIZATION, auth)
            .map_err(|e| ClientError::Connect(e.to_string()))?
            .connect_on(tcp)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let welcome = loop {
            match ws.next().await {
                Some(Ok(m)) => {
                    if let Some(t) = m.as_text() {
                        let v: Value = serde_json::from_str(t).unwrap_or(Value::Null);
                        if v["method"] == "rpc.welcome" {
                            break v["params"].clone();
                        }
                    }
                }
                _ => return Err(ClientError::Closed),
            }
        };
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let (topics, _) = broadcast::channel(1024);
        let r = routes.clone();
        let t = topics.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = out_rx.recv() => match m {
                        Some(text) => if ws.send(Message::text(text)).await.is_err() { break },
                        None => { let _ = ws.close().await; break }
                    },
                    m = ws.next() => match m {
                        Some(Ok(m)) => if let Some(text) = m.as_text() { route(&r, &t, text) },
                        _ => break,
                    }
                }
            }
            // Closed: wake everyone still waiting.
            let mut routes = r.lock().unwrap_or_else(|e| e.into_inner());
            *routes = Routes::default();
        });
        Ok(Self {
            out: out_tx,
            routes,
            next_id: AtomicU64::new(1),
            welcome,
            topics,
        })
    }

    /// The `rpc.welcome` params.
    pub fn welcome(&self) -> &Value {
        &self.welcome
    }

    fn new_id(&self) -> Value {
        json!(format!("c{}", self.next_id.fetch_add(1, Ordering::Relaxed)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls a method and waits for its immediate response (for `rpc.*` methods).
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.new_id();
        let (tx, rx) = oneshot::channel();
        self.lock().rpc.insert(key(&id), tx);
        let msg = json!({"jsonrpc":"2.0","id":id,"method":method,"params":params});
        self.out
            .send(msg.to_string())
            .map_err(|_| ClientError::Closed)?;
        rx.await
            .map_err(|_| ClientError::Closed)?
            .map_err(ClientError::Rpc)
    }

    /// Starts a job and returns its handle.
    pub fn call(
        &self,
        method: &str,
        params: Value,
        options: &CallOptions,
    ) -> Result<JobHandle, ClientError> {
        let id = self.new_id();
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().by_request.insert(key(&id), tx);
        let mut msg = json!({"jsonrpc":"2.0","id":id,"method":method,"params":params,
                             "options": serde_json::to_value(options).unwrap_or(Value::Null)});
        if let Some(j) = &options.job_id {
            msg["jobId"] = json!(j);
        }
        self.out
            .send(msg.to_string())
            .map_err(|_| ClientError::Closed)?;
        Ok(JobHandle {
            updates: rx,
            job_id: options.job_id.clone(),
        })
    }

    /// Attaches to an existing job of the caller; returns its snapshot and a handle that
    /// receives its further updates (the final response at once if it has ended).
    pub async fn attach(&self, job_id: &str) -> Result<(Value, JobHandle), ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().by_job.insert(job_id.to_owned(), tx);
        match self.request("rpc.attach", json!({"jobId": job_id})).await {
            Ok(snap) => Ok((
                snap,
                JobHandle {
                    updates: rx,
                    job_id: Some(job_id.to_owned()),
                },
            )),
            Err(e) => {
                self.lock().by_job.remove(job_id);
                Err(e)
            }
        }
    }

    /// Topic messages `(topic, data)` from now on (subscribe with `rpc.subscribe`).
    pub fn topic_messages(&self) -> broadcast::Receiver<(String, Value)> {
        self.topics.subscribe()
    }
}

fn route(routes: &Mutex<Routes>, topics: &broadcast::Sender<(String, Value)>, text: &str) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let items = match v {
        Value::Array(items) => items,
        v => vec![v],
    };
    let mut r = routes.lock().unwrap_or_else(|e| e.into_inner());
    for v in items {
        match v["method"].as_str() {
            Some("job.accepted") => {
                let p = &v["params"];
                let job_id = p["jobId"].as_str().unwrap_or_default().to_owned();
                if let Some(tx) = r.by_request.get(&key(&p["requestId"])).cloned() {
                    r.by_job.insert(job_id.clone(), tx.clone());
                    let _ = tx.send(JobUpdate::Accepted {
                        job_id,
                        state: p["state"].as_str().unwrap_or_default().to_owned(),
                        duplicate: p["duplicate"].as_bool().unwrap_or(false),
                    });
                }
            }
            Some("job.progress") => {
                let p = &v["params"];
                let tx = p["jobId"]
                    .as_str()
                    .and_then(|j| r.by_job.get(j))
                    .or_else(|| r.by_request.get(&key(&p["requestId"])));
                if let Some(tx) = tx {
                    let _ = tx.send(JobUpdate::Progress(p["progress"].clone()));
                }
            }
            Some("topic.message") => {
                let p = &v["params"];
                let _ = topics.send((
                    p["topic"].as_str().unwrap_or_default().to_owned(),
                    p["data"].clone(),
                ));
            }
            Some(_) => {}
            None => {
                let outcome = match v.get("error") {
                    Some(e) => Err(RpcError::from_value(e)),
                    None => Ok(v["result"].clone()),
                };
                let k = key(&v["id"]);
                if let Some(tx) = r.rpc.remove(&k) {
                    let _ = tx.send(outcome);
                    continue;
                }
                let by_req = r.by_request.remove(&k);
                let by_job = v["jobId"].as_str().and_then(|j| r.by_job.remove(j));
                if let Some(tx) = by_req.or(by_job) {
                    let _ = tx.send(JobUpdate::Done(outcome));
                }
            }
        }
    }
}
