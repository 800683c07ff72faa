//! The hub: every local connection, which connections are attached to which jobs, and which
//! are subscribed to which topics. Job events and topic messages are serialized once here and
//! handed to each receiver's bounded outbound queue; a receiver whose queue is full is closed
//! as a slow consumer.
//!
//! Ordering: a connection attaches to a job *held* before the job is submitted; events that
//! arrive while held are buffered and flushed by [`Hub::release`] after the caller has queued
//! `job.accepted` (or the `rpc.attach` result), so those always come first.

use bytes::Bytes;
use dashmap::DashMap;
use jobcast_core::{Audience, BROADCAST_TOPIC, JobEvent, Outcome};
use jobcast_protocol::{
    RequestId,
    outbound::{self, ErrorObject},
};
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

pub use crate::conn::Conn;

struct Attachment {
    conn: Arc<Conn>,
    request_id: Option<RequestId>,
    /// When the job call arrived (attachments made by a call, not by `rpc.attach`).
    called_at: Option<std::time::Instant>,
    /// `Some` while held: frames wait here, with whether the job ended.
    held: Option<(Vec<Bytes>, bool)>,
}

/// A connection subscribed to a topic.
struct Subscriber {
    conn: Arc<Conn>,
    /// Wants `topic.join`/`topic.leave`.
    watches_presence: bool,
}

/// Outcome of [`Hub::attach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// A new held attachment was made.
    Held,
    /// The connection was already attached; nothing changed.
    Existing,
}

/// A concurrent map hashed with foldhash (randomly seeded) rather than SipHash, which was 2 %
/// of the runtime's samples per job, in attaching and dispatching.
type Map<K, V> = DashMap<K, V, foldhash::fast::RandomState>;

/// Connections, attachments and subscriptions of one gateway.
#[derive(Default)]
pub struct Hub {
    conns: Map<u64, Arc<Conn>>,
    jobs: Map<String, Vec<Attachment>>,
    topics: Map<String, Vec<Subscriber>>,
    next_id: AtomicU64,
}

/// The final response to a job, for a receiver that used `request_id` (the job id stands in
/// when there is none, e.g. a job submitted over HTTP).
pub fn final_frame(request_id: Option<&RequestId>, job_id: &str, outcome: &Outcome) -> String {
    let fallback;
    let id = match request_id {
        Some(id) => id,
        None => {
            fallback = RequestId::string(job_id);
            &fallback
        }
    };
    match outcome {
        Ok(result) => outbound::result(id, Some(job_id), &**result),
        Err(e) => outbound::error(
            Some(id),
            Some(job_id),
            ErrorObject {
                code: e.code,
                message: &e.message,
                data: e.data.as_deref(),
            },
        ),
    }
}

impl Hub {
    /// A new connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a connection.
    pub fn add_conn(&self, conn: Arc<Conn>) {
        self.conns.insert(conn.id, conn);
    }

    /// Removes a connection with all its attachments and subscriptions; returns each topic
    /// it was subscribed to, with whether no local connection is subscribed to it any more.
    pub fn remove_conn(&self, conn: &Conn) -> Vec<(String, bool)> {
        self.conns.remove(&conn.id);
        let (jobs, topics) = conn.take_all();
        for job in jobs {
            self.remove_attachment(&job, conn.id);
        }
        topics
            .into_iter()
            .map(|t| {
                let last = self.remove_subscriber(&t, conn.id);
                (t, last)
            })
            .collect()
    }

    /// Calls `f` with every local connection.
    pub fn for_each_conn(&self, mut f: impl FnMut(&Arc<Conn>)) {
        for c in &self.conns {
            f(c.value());
        }
    }

    /// Number of local connections.
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Attaches `conn` to `job_id`, held until [`Hub::release`]. `called_at` is when the job
    /// call arrived, for the submit-to-response latency (`None` for `rpc.attach`).
    pub fn attach(
        &self,
        job_id: &str,
        conn: &Arc<Conn>,
        request_id: Option<RequestId>,
        called_at: Option<std::time::Instant>,
    ) -> Attach {
        let mut list = self.jobs.entry(job_id.to_owned()).or_default();
        if list.iter().any(|a| a.conn.id == conn.id) {
            return Attach::Existing;
        }
        list.push(Attachment {
            conn: conn.clone(),
            request_id,
            called_at,
            held: Some((Vec::new(), false)),
        });
        conn.add_job(job_id);
        Attach::Held
    }

    /// Sends what arrived while held, in order, and ends the hold. Returns false when the
    /// attachment is gone (the job's final response was among the held frames).
    pub fn release(&self, job_id: &str, conn: &Conn) -> bool {
        let Some(mut list) = self.jobs.get_mut(job_id) else {
            return false;
        };
        let Some(pos) = list.iter().position(|a| a.conn.id == conn.id) else {
            return false;
        };
        let Some((frames, ended)) = list[pos].held.take() else {
            return true;
        };
        for f in frames {
            conn.send(f);
        }
        if ended {
            list.swap_remove(pos);
            let empty = list.is_empty();
            drop(list);
            conn.remove_job(job_id);
            if empty {
                self.jobs.remove_if(job_id, |_, l| l.is_empty());
            }
            return false;
        }
        true
    }

    /// Removes `conn`'s attachment to `job_id`, returning the request id it used when it
    /// was there. Used to deliver a final response exactly once outside the event path.
    pub fn take_attachment(&self, job_id: &str, conn: &Conn) -> Option<Option<RequestId>> {
        let taken = {
            let mut list = self.jobs.get_mut(job_id)?;
            let pos = list.iter().position(|a| a.conn.id == conn.id)?;
            let a = list.swap_remove(pos);
            Some(a.request_id)
        };
        self.jobs.remove_if(job_id, |_, l| l.is_empty());
        conn.remove_job(job_id);
        taken
    }

    /// Detaches `conn` from `job_id`; false when it was not attached.
    pub fn detach(&self, job_id: &str, conn: &Conn) -> bool {
        self.take_attachment(job_id, conn).is_some()
    }

    fn remove_attachment(&self, job_id: &str, conn_id: u64) {
        if let Some(mut list) = self.jobs.get_mut(job_id) {
            list.retain(|a| a.conn.id != conn_id);
        }
        self.jobs.remove_if(job_id, |_, l| l.is_empty());
    }

    /// Delivers a job event to the attached connections.
    pub fn dispatch(&self, event: &JobEvent) {
        let job_id = event.job_id();
        let finished = matches!(event, JobEvent::Finished { .. });
        let Some(mut list) = self.jobs.get_mut(job_id) else {
            return;
        };
        // Serialize once per distinct request id (usually one).
        let mut cache: Vec<(Option<String>, Bytes)> = Vec::with_capacity(1);
        for a in list.iter_mut() {
            let key = a.request_id.as_ref().map(|r| r.as_json().to_owned());
            let frame = match cache.iter().find(|(k, _)| *k == key) {
                Some((_, f)) => f.clone(),
                None => {
                    let text = match event {
                        JobEvent::Progress { progress, .. } => {
                            outbound::progress(job_id, a.request_id.as_ref(), progress)
                        }
                        JobEvent::Finished { outcome, .. } => {
                            final_frame(a.request_id.as_ref(), job_id, outcome)
                        }
                    };
                    let f = Bytes::from(text);
                    cache.push((key, f.clone()));
                    f
                }
            };
            if finished && let Some(t) = a.called_at {
                crate::metrics::submit_to_response().record(t.elapsed().as_secs_f64());
            }
            match &mut a.held {
                Some((frames, ended)) => {
                    frames.push(frame);
                    *ended |= finished;
                }
                None => {
                    a.conn.send(frame);
                }
            }
        }
        if finished {
            list.retain(|a| {
                let keep = a.held.is_some();
                if !keep {
                    a.conn.remove_job(job_id);
                }
                keep
            });
            let empty = list.is_empty();
            drop(list);
            if empty {
                self.jobs.remove_if(job_id, |_, l| l.is_empty());
            }
        }
    }

    /// Subscribes `conn` to `topic` (with presence notifications when `watches_presence`);
    /// returns `(newly subscribed, first local subscriber)`. Subscribing again only updates
    /// `watches_presence`.
    pub fn subscribe(&self, topic: &str, conn: &Arc<Conn>, watches_presence: bool) -> (bool, bool) {
        // Most topics are one user's, with one subscriber per device.
        let mut list = self
            .topics
            .entry(topic.to_owned())
            .or_insert_with(|| Vec::with_capacity(1));
        if !conn.add_topic(topic) {
            if let Some(s) = list.iter_mut().find(|s| s.conn.id == conn.id) {
                s.watches_presence = watches_presence;
            }
            return (false, false);
        }
        list.push(Subscriber {
            conn: conn.clone(),
            watches_presence,
        });
        (true, list.len() == 1)
    }

    /// Unsubscribes; returns `(was subscribed, no local subscriber left)`.
    pub fn unsubscribe(&self, topic: &str, conn: &Conn) -> (bool, bool) {
        if !conn.remove_topic(topic) {
            return (false, false);
        }
        (true, self.remove_subscriber(topic, conn.id))
    }

    fn remove_subscriber(&self, topic: &str, conn_id: u64) -> bool {
        if let Some(mut list) = self.topics.get_mut(topic) {
            list.retain(|s| s.conn.id != conn_id);
        }
        self.topics.remove_if(topic, |_, l| l.is_empty()).is_some()
    }

    /// Delivers a frame published to `topic` to the local subscribers in `audience` (every
    /// connection for [`BROADCAST_TOPIC`]), except connection `except`; returns how many
    /// got it.
    pub fn deliver(
        &self,
        topic: &str,
        audience: Audience,
        frame: &Bytes,
        except: Option<u64>,
    ) -> usize {
        if topic == BROADCAST_TOPIC {
            return self
                .conns
                .iter()
                .filter(|c| c.value().send_topic(frame.clone()))
                .count();
        }
        let Some(list) = self.topics.get(topic) else {
            return 0;
        };
        list.iter()
            .filter(|s| audience == Audience::All || s.watches_presence)
            .filter(|s| Some(s.conn.id) != except)
            .filter(|s| s.conn.send_topic(frame.clone()))
            .count()
    }
}
