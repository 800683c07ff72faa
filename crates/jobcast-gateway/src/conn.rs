//! A local connection as the rest of the gateway sees it: its bounded outbound queue (closed
//! as a slow consumer when full), the request to close it with a code, its heartbeat (when it
//! was last heard from, and a ping to send), and the jobs and topics it holds.
//!
//! The queue is a plain `VecDeque` under a lock, beside the waker of the session waiting on
//! it, rather than a channel, a cancellation token and a timer per connection: an idle
//! connection then holds no allocation for them (a tokio channel allocates a 32-slot block up
//! front, a timer a boxed `Sleep`), the session needs no stored future to wait on it, and it
//! learns about new frames, pings to send and a close request from the same place. One
//! gateway-wide task drives every connection's heartbeat ([`Conn::heartbeat`]).

use bytes::Bytes;
use jobcast_protocol::CloseCode;
use parking_lot::Mutex;
use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

/// Why a connection must close: the code and reason of its close frame.
pub type CloseRequest = (CloseCode, &'static str);

struct Outbox {
    frames: VecDeque<Bytes>,
    /// Set once: the session must close the socket with this.
    close: Option<CloseRequest>,
    /// The heartbeat asks for a ping.
    ping: bool,
    /// A queued frame must be written at once (see [`Conn::send_topic`]).
    urgent: bool,
    /// The session, waiting for any of the above.
    waker: Option<Waker>,
}

/// What the session must write next.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outgoing {
    /// Text frames, in order.
    pub frames: VecDeque<Bytes>,
    /// Whether to send a ping.
    pub ping: bool,
    /// Whether the frames must be written at once: one was sent with [`Conn::send`]. Topic
    /// messages alone may wait (see [`Conn::send_topic`]); a ping never does.
    pub urgent: bool,
}

/// Milliseconds on a process-wide monotonic clock, wrapping every 49 days (only differences
/// of a few heartbeats are taken, with wrapping arithmetic; 32 bits keep `Conn` small).
pub(crate) fn now_ms() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u32
}

/// The jobs a connection is attached to and the topics it subscribed to, its own user topic
/// aside (see [`Conn::in_own_topic`]).
#[derive(Default)]
struct Held {
    jobs: Set,
    topics: Set,
}

/// A set of names hashed with foldhash, as the hub's maps are.
type Set = HashSet<String, foldhash::fast::RandomState>;

/// Which set of [`Held`] a change is about.
#[derive(Clone, Copy)]
enum Kind {
    Job,
    Topic,
}

impl Held {
    fn set(&mut self, kind: Kind) -> &mut Set {
        match kind {
            Kind::Job => &mut self.jobs,
            Kind::Topic => &mut self.topics,
        }
    }
}

/// A local connection.
pub struct Conn {
    /// Numeric id.
    pub id: u64,
    /// The user (`sub`).
    pub user: Arc<str>,
    outbox: Mutex<Outbox>,
    capacity: u32,
    /// When the peer last sent anything (`now_ms`).
    last_seen: AtomicU32,
    /// Subscribed to its user's topic: every connection is from the start, so this is not
    /// kept in `held` (an idle connection then holds no `Held` at all).
    in_own_topic: AtomicBool,
    /// Made on the first attachment or subscription, freed when the last one goes.
    // Keep this struct within 176 bytes: with the `Arc` counts it then fits jemalloc's 192-byte
    // class (jemalloc rounds up to its classes: a census of live allocations once showed
    // 8 bytes more moving `Conn` from the 256-byte class to the 320-byte one).
    held: Mutex<Option<Box<Held>>>,
}

impl Conn {
    /// Creates a connection with an outbound queue of `capacity` frames.
    pub fn new(id: u64, user: Arc<str>, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            id,
            user,
            outbox: Mutex::new(Outbox {
                frames: VecDeque::new(),
                close: None,
                ping: false,
                urgent: false,
                waker: None,
            }),
            capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
            last_seen: AtomicU32::new(now_ms()),
            in_own_topic: AtomicBool::new(false),
            held: Mutex::default(),
        })
    }

    /// Queues a frame to be written at once; closes the connection as a slow consumer when
    /// its queue is full. Returns whether the frame was queued.
    pub fn send(&self, frame: Bytes) -> bool {
        self.push(frame, true)
    }

    /// Queues a topic message: like [`send`](Self::send), but the session may hold it back
    /// for the gateway's topic flush interval after its last write, so that a connection
    /// receiving many messages gets them in fewer, larger writes.
    pub fn send_topic(&self, frame: Bytes) -> bool {
        self.push(frame, false)
    }

    fn push(&self, frame: Bytes, urgent: bool) -> bool {
        let capacity = self.capacity as usize;
        let (mut queued, mut full) = (false, false);
        self.change(|o| {
            if o.close.is_some() {
                return false;
            }
            if o.frames.len() >= capacity {
                full = true;
                return false;
            }
            // The session empties the queue each time it wakes, so only the first frame into
            // an empty queue needs to wake it.
            let wake = o.frames.is_empty();
            o.frames.push_back(frame);
            o.urgent |= urgent;
            queued = true;
            wake
        });
        if full {
            metrics::counter!("jobcast_slow_consumer_disconnects_total").increment(1);
            self.close(CloseCode::PolicyViolation, "slow consumer");
        }
        queued
    }

    /// Changes the outbox under its lock, then wakes the session if `f` says so.
    fn change(&self, f: impl FnOnce(&mut Outbox) -> bool) {
        let mut o = self.outbox.lock();
        let waker = if f(&mut o) { o.waker.take() } else { None };
        drop(o);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Asks the session to close the socket with `code` (the first request wins); frames
    /// queued after this are refused.
    pub fn close(&self, code: CloseCode, reason: &'static str) {
        self.change(|o| {
            o.close.get_or_insert((code, reason));
            true
        });
    }

    /// Takes every queued frame and a pending ping, if there are any and `take` allows;
    /// returns a close request instead once there is one. Otherwise registers the session to
    /// be woken when any of them arrives (so a session still writing can wait for a close
    /// alone, leaving frames queued where the queue's bound applies).
    pub fn poll_out(
        &self,
        cx: &mut Context<'_>,
        take: bool,
    ) -> Poll<Result<Outgoing, CloseRequest>> {
        let mut o = self.outbox.lock();
        if let Some(c) = o.close {
            return Poll::Ready(Err(c));
        }
        if take && (!o.frames.is_empty() || o.ping) {
            return Poll::Ready(Ok(Outgoing {
                frames: std::mem::take(&mut o.frames),
                ping: std::mem::take(&mut o.ping),
                urgent: std::mem::take(&mut o.urgent),
            }));
        }
        if !o.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            o.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Records that the peer sent something (any frame, a pong included).
    pub fn seen(&self) {
        self.last_seen.store(now_ms(), Ordering::Relaxed);
    }

    /// One heartbeat: closes the connection with 1001 when the peer has been silent longer
    /// than `dead_after`, and asks for a ping otherwise.
    pub fn heartbeat(&self, dead_after: Duration) {
        let silent = now_ms().wrapping_sub(self.last_seen.load(Ordering::Relaxed));
        if u128::from(silent) > dead_after.as_millis() {
            self.close(
                CloseCode::GoingAway,
                "no pong within two heartbeat intervals",
            );
            return;
        }
        self.change(|o| {
            o.ping = true;
            true
        });
    }

    /// Drops every queued frame (the session is ending) and refuses further ones.
    pub fn shut(&self, code: CloseCode, reason: &'static str) {
        let mut o = self.outbox.lock();
        o.close.get_or_insert((code, reason));
        o.frames = VecDeque::new();
        o.waker = None;
    }

    /// Records an attachment to `job_id`; false when it was there.
    pub(crate) fn add_job(&self, job_id: &str) -> bool {
        self.add(Kind::Job, job_id)
    }

    /// Forgets the attachment to `job_id`; false when it was not there.
    pub(crate) fn remove_job(&self, job_id: &str) -> bool {
        self.remove(Kind::Job, job_id)
    }

    /// Records a subscription to `topic`; false when it was there.
    pub(crate) fn add_topic(&self, topic: &str) -> bool {
        if self.is_own_topic(topic) {
            return !self.in_own_topic.swap(true, Ordering::Relaxed);
        }
        self.add(Kind::Topic, topic)
    }

    /// Forgets the subscription to `topic`; false when it was not there.
    pub(crate) fn remove_topic(&self, topic: &str) -> bool {
        if self.is_own_topic(topic) {
            return self.in_own_topic.swap(false, Ordering::Relaxed);
        }
        self.remove(Kind::Topic, topic)
    }

    /// Takes every attachment and subscription (the connection is going away): the job ids
    /// and the topics.
    pub(crate) fn take_all(&self) -> (Vec<String>, Vec<String>) {
        let held = self.held.lock().take().map(|h| *h).unwrap_or_default();
        let own = self
            .in_own_topic
            .swap(false, Ordering::Relaxed)
            .then(|| jobcast_protocol::topics::user_topic(&self.user));
        (
            held.jobs.into_iter().collect(),
            held.topics.into_iter().chain(own).collect(),
        )
    }

    fn add(&self, kind: Kind, key: &str) -> bool {
        let mut slot = self.held.lock();
        slot.get_or_insert_with(Box::default)
            .set(kind)
            .insert(key.to_owned())
    }

    /// Removes `key`, and frees `Held` once it holds nothing.
    fn remove(&self, kind: Kind, key: &str) -> bool {
        let mut slot = self.held.lock();
        let Some(held) = slot.as_mut() else {
            return false;
        };
        let removed = held.set(kind).remove(key);
        if held.jobs.is_empty() && held.topics.is_empty() {
            *slot = None;
        }
        removed
    }

    /// Whether `topic` is this connection's user topic.
    fn is_own_topic(&self, topic: &str) -> bool {
        jobcast_protocol::topics::is_user_topic(topic, &self.user)
    }

    /// Number of jobs attached.
    pub fn job_count(&self) -> usize {
        self.held.lock().as_ref().map_or(0, |h| h.jobs.len())
    }

    /// Number of topics subscribed, its own user topic included.
    pub fn topic_count(&self) -> usize {
        let own = usize::from(self.in_own_topic.load(Ordering::Relaxed));
        own + self.held.lock().as_ref().map_or(0, |h| h.topics.len())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conn_fits_a_192_byte_allocation() {
        // The `Arc` adds 16 bytes; see the note on `Conn::held`.
        assert!(std::mem::size_of::<super::Conn>() <= 176);
    }

    use super::*;
    use std::future::poll_fn;

    async fn next_out(c: &Conn) -> Result<Outgoing, CloseRequest> {
        poll_fn(|cx| c.poll_out(cx, true)).await
    }

    /// Waits for a close request the way a session still writing does.
    async fn close_requested(c: &Conn) -> CloseRequest {
        poll_fn(|cx| match c.poll_out(cx, false) {
            Poll::Ready(Err(close)) => Poll::Ready(close),
            _ => Poll::Pending,
        })
        .await
    }

    #[tokio::test]
    async fn frames_wake_the_session_and_a_full_queue_closes() {
        let c = Conn::new(1, "u".into(), 3);
        // Topic messages alone may wait; any other frame makes the whole take urgent.
        for f in ["a", "b"] {
            assert!(c.send_topic(Bytes::from(f)));
        }
        let out = next_out(&c).await.unwrap();
        assert_eq!(out.frames, ["a", "b"]);
        assert!(!out.urgent);
        assert!(c.send_topic(Bytes::from("a")));
        assert!(c.send(Bytes::from("b")));
        assert!(c.send_topic(Bytes::from("c")));
        let out = next_out(&c).await.unwrap();
        assert_eq!(out.frames, ["a", "b", "c"]);
        assert!(out.urgent);
        for f in ["d", "e", "f"] {
            assert!(c.send(Bytes::from(f)));
        }
        // Over capacity: a slow consumer.
        assert!(!c.send(Bytes::from("g")));
        assert_eq!(
            next_out(&c).await,
            Err((CloseCode::PolicyViolation, "slow consumer"))
        );
        assert_eq!(close_requested(&c).await.0, CloseCode::PolicyViolation);
        assert!(!c.send(Bytes::from("h")));
    }

    #[tokio::test]
    async fn a_waiting_session_is_woken() {
        let c = Conn::new(1, "u".into(), 8);
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { next_out(&c2).await });
        tokio::task::yield_now().await;
        c.send(Bytes::from("x"));
        assert_eq!(waiter.await.unwrap().unwrap().frames, ["x"]);
        // A heartbeat wakes it for a ping; a silent peer is closed.
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { next_out(&c2).await });
        tokio::task::yield_now().await;
        c.heartbeat(Duration::from_secs(60));
        assert_eq!(
            waiter.await.unwrap(),
            Ok(Outgoing {
                frames: VecDeque::new(),
                ping: true,
                urgent: false,
            })
        );
        // A session still writing is woken by a close request, not by frames.
        c.send(Bytes::from("y"));
        let c3 = c.clone();
        let closer = tokio::spawn(async move { close_requested(&c3).await });
        tokio::task::yield_now().await;
        c.close(CloseCode::ServiceRestart, "bye");
        assert_eq!(closer.await.unwrap(), (CloseCode::ServiceRestart, "bye"));
    }

    #[tokio::test]
    async fn a_silent_peer_is_closed_by_the_heartbeat() {
        let c = Conn::new(1, "u".into(), 8);
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.heartbeat(Duration::from_millis(10));
        assert_eq!(close_requested(&c).await.0, CloseCode::GoingAway);
        let d = Conn::new(2, "u".into(), 8);
        tokio::time::sleep(Duration::from_millis(30)).await;
        d.seen();
        d.heartbeat(Duration::from_millis(10));
        assert!(next_out(&d).await.unwrap().ping);
    }
}
