//! Job types shared by every backend, the gateway and the workers.

use jobcast_protocol::{ErrorCode, JobOptions, RequestId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A new server-made job id: `j_` + time-ordered base-32 millis + 10 random characters.
pub fn new_job_id() -> String {
    const ALPHA: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut s = String::with_capacity(2 + 10 + 10);
    s.push_str("j_");
    let t = now_ms();
    for i in (0..10).rev() {
        s.push(ALPHA[((t >> (i * 5)) & 31) as usize] as char);
    }
    for _ in 0..10 {
        s.push(ALPHA[fastrand::usize(..32)] as char);
    }
    s
}

/// The state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting to be claimed.
    Queued,
    /// Waiting for its run time (a `delayMs`, or a retry backoff).
    Delayed,
    /// Claimed by a worker.
    Active,
    /// Ended with a result.
    Completed,
    /// Ended with an error after its last attempt.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl JobState {
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delayed => "delayed",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Every state.
    pub const ALL: [JobState; 6] = [
        Self::Queued,
        Self::Delayed,
        Self::Active,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];
}

/// A job's error as it ends: the JSON-RPC error its attached clients receive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobError {
    /// -32000 failed, -32001 timed out, -32002 cancelled (or another code a handler chose).
    pub code: ErrorCode,
    /// Message for the client.
    pub message: String,
    /// Extra data, such as `{"attempts":3,"reason":"…"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

impl JobError {
    /// An error with `data: {"attempts": n, "reason": reason}`.
    pub fn with_attempts(code: ErrorCode, message: String, attempts: u32, reason: &str) -> Self {
        let data =
            serde_json::to_string(&serde_json::json!({"attempts": attempts, "reason": reason}))
                .ok()
                .and_then(|s| RawValue::from_string(s).ok());
        Self {
            code,
            message,
            data,
        }
    }
}

/// How a job ended.
pub type Outcome = std::result::Result<Box<RawValue>, JobError>;

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The job id (client-chosen, or made with [`new_job_id`]).
    pub id: String,
    /// The method.
    pub method: String,
    /// Params, object or array (`null` when the call had none).
    pub params: Box<RawValue>,
    /// The `sub` of the submitting user.
    pub owner: String,
    /// The submitting request's id, used in the final response to connections that attach later.
    pub request_id: Option<RequestId>,
    /// Validated options.
    pub options: JobOptions,
    /// Refuse with [`Error::OwnerFull`](crate::Error::OwnerFull) when `owner` already has
    /// this many jobs not yet ended (0: no limit; jobs without an owner are never limited).
    pub max_open_per_owner: u32,
}

/// What [`JobQueue::enqueue`] did.
#[derive(Debug, Clone)]
pub struct Enqueued {
    /// The job id.
    pub job_id: String,
    /// Its state now.
    pub state: JobState,
    /// True when the id already existed and nothing was created.
    pub duplicate: bool,
    /// The owner of the job with this id (differs from the caller's for a foreign duplicate).
    pub owner: String,
}

/// A point-in-time view of a job, serialized as the protocol's job snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSnapshot {
    /// The job id.
    pub job_id: String,
    /// The method.
    pub method: String,
    /// The state.
    pub state: JobState,
    /// The last progress reported, if any.
    pub progress: Option<Box<RawValue>>,
    /// Attempts started so far.
    pub attempt: u32,
    /// Total attempts allowed.
    pub attempts: u32,
    /// Creation time, ms since the epoch.
    pub created_at: u64,
    /// Start of the latest attempt.
    pub started_at: Option<u64>,
    /// End time.
    pub finished_at: Option<u64>,
    /// The result, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    /// The error, once failed or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// Owner (`sub`); never sent to clients.
    #[serde(default, skip_serializing)]
    pub owner: String,
    /// The submitting request's id; never sent to clients.
    #[serde(default, skip_serializing)]
    pub request_id: Option<RequestId>,
}

impl JobSnapshot {
    /// The final outcome, when the job has ended.
    pub fn outcome(&self) -> Option<Outcome> {
        match (self.state, &self.result, &self.error) {
            (JobState::Completed, Some(r), _) => Some(Ok(r.clone())),
            (s, _, Some(e)) if s.is_terminal() => Some(Err(e.clone())),
            _ => None,
        }
    }
}

/// Answer of [`JobQueue::cancel`].
#[derive(Debug, Clone, Copy)]
pub struct Cancelled {
    /// Whether this call cancelled the job (false when it had already ended).
    pub cancelled: bool,
    /// The job's state after the call.
    pub state: JobState,
}

/// What [`crate::JobQueue::retry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retried {
    /// Whether the job was put back in the queue (false: it was not failed or cancelled).
    pub retried: bool,
    /// The job's state after the call.
    pub state: JobState,
}

/// Identifies one claim of a job: a lease ends when its token no longer matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The job id.
    pub job_id: String,
    /// Unique per claim.
    pub token: String,
}

/// A job handed to a worker.
#[derive(Debug)]
pub struct ClaimedJob {
    /// The lease to report with.
    pub lease: Lease,
    /// The method.
    pub method: String,
    /// The params.
    pub params: Box<RawValue>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Total attempts allowed.
    pub attempts: u32,
    /// This attempt's time limit.
    pub timeout: Option<Duration>,
    /// When the job became due (ms since the epoch): its creation, the end of its delay or
    /// of its retry backoff. The wait until the claim is queue latency.
    pub due_at_ms: u64,
    /// Fires when the job is cancelled or the lease is lost: the handler must stop.
    pub cancel: crate::JobCancel,
}

/// Why an attempt did not produce a result.
#[derive(Debug, Clone)]
pub enum AttemptFailure {
    /// The handler returned an error.
    Error {
        /// Message for the client.
        message: String,
        /// False when retrying cannot help (bad params): the job fails at once.
        retryable: bool,
    },
    /// The attempt ran past its `timeoutMs` and was stopped.
    TimedOut,
}

/// What [`JobQueue::fail`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Another attempt will run no earlier than this time (ms since the epoch).
    Retrying {
        /// When.
        at_ms: u64,
    },
    /// No attempts left: the job failed.
    Dead,
}

/// A method a worker serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MethodInfo {
    /// The method name.
    pub name: String,
    /// JSON Schema of its params, when the worker declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_schema: Option<serde_json::Value>,
}

/// A worker's heartbeat: who it is and what it serves.
#[derive(Debug, Clone)]
pub struct WorkerAnnouncement {
    /// Unique worker id.
    pub worker_id: String,
    /// Methods served.
    pub methods: Vec<MethodInfo>,
    /// The announcement lapses after this long without renewal.
    pub ttl: Duration,
}

/// An event of a job, delivered to the gateways listening to it.
#[derive(Debug, Clone)]
pub enum JobEvent {
    /// Progress reported by the worker.
    Progress {
        /// The job id.
        job_id: String,
        /// A number 0–100 or any JSON the worker chose.
        progress: Box<RawValue>,
    },
    /// The job ended.
    Finished {
        /// The job id.
        job_id: String,
        /// Result or error.
        outcome: Outcome,
    },
}

impl JobEvent {
    /// The job the event is about.
    pub fn job_id(&self) -> &str {
        match self {
            Self::Progress { job_id, .. } | Self::Finished { job_id, .. } => job_id,
        }
    }
}

/// The topic every gateway subscribes to for pushes to every connection (`POST
/// /v1/broadcast`). Not a valid topic name for clients.
pub const BROADCAST_TOPIC: &str = "*";

/// A message arriving at a gateway's inbox.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// An event of a job the gateway listens to.
    Job(JobEvent),
    /// A frame published to a topic elsewhere, serialized once by the publisher: a
    /// `topic.message`, or a notification pushed to a `user:` topic or to every connection
    /// ([`BROADCAST_TOPIC`]).
    Topic {
        /// The topic.
        topic: String,
        /// Who among the topic's subscribers gets it.
        audience: Audience,
        /// The complete outbound frame.
        frame: bytes::Bytes,
    },
}

/// Which subscribers of a topic a frame is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Every subscriber (topic messages, pushes).
    All,
    /// Only subscribers who asked for presence notifications (`topic.join`/`topic.leave`).
    PresenceWatchers,
}

/// Who is in a topic, across every gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Presence {
    /// Distinct users subscribed, sorted.
    pub users: Vec<String>,
    /// Subscribed connections.
    pub connections: u64,
}

/// One gateway's report of itself, kept for a short time so any gateway can show the whole
/// cluster (`/stats?scope=cluster`) and tell live gateways from gone ones.
#[derive(Debug, Clone)]
pub struct GatewayReport {
    /// The gateway's instance id.
    pub gateway_id: String,
    /// Its stats as JSON.
    pub stats: String,
}

/// Number of jobs in each state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueCounts {
    /// Waiting to be claimed.
    pub queued: u64,
    /// Waiting for their run time.
    pub delayed: u64,
    /// Running.
    pub active: u64,
    /// Completed, within retention.
    pub completed: u64,
    /// Failed, within retention.
    pub failed: u64,
    /// Cancelled, within retention.
    pub cancelled: u64,
}

/// Parses JSON text into a raw value (for tests and handlers).
pub fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_unique_and_valid() {
        let a = new_job_id();
        let b = new_job_id();
        assert_ne!(a, b);
        assert!(jobcast_protocol::validate_job_id(&a).is_ok());
    }

    #[test]
    fn snapshot_hides_owner() {
        let s = JobSnapshot {
            job_id: "j".into(),
            method: "m".into(),
            state: JobState::Queued,
            progress: None,
            attempt: 0,
            attempts: 1,
            created_at: 1,
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
            owner: "secret-owner".into(),
            request_id: None,
        };
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains("secret-owner"), "{text}");
        assert!(text.contains("\"state\":\"queued\""));
    }
}
