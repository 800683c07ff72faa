//! The job hash's fixed part (field `d`), and reading Redis replies into jobcast types: a job
//! hash into a snapshot, an inbox message into a job event.

use jobcast_core::{JobError, JobEvent, JobSnapshot, JobState};
use jobcast_protocol::{BackoffKind, JobOptions, RequestId};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use std::{collections::HashMap, time::Duration};

/// What never changes about a job and is not read on its hot paths, stored as one field `d`
/// of the job hash rather than a field each: attempts, timeout, backoff and creation time, as
/// a JSON array `[max, tmo|null, 0 (fixed backoff)|1 (exponential), backoff ms, jitter,
/// created ms]`. A hash of fewer fields is cheaper to write and to search, and smaller
/// (docs/benchmarks.md has the figures). An array of numbers stays within 64 bytes, Redis's
/// default `hash-max-listpack-value`, past which a hash is stored as a hash table, over twice
/// as large; so the owner and the request id, of any length, are fields of their own, as are
/// the fields the scripts read on every claim or end. Scripts read `d` (with `cjson`) only for
/// a failed attempt's backoff.
///
/// Jobs stored before `d` existed have these as fields of their own; every reader takes both.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Spec(
    /// Attempts allowed.
    pub u32,
    /// Timeout of one attempt, ms.
    pub Option<u64>,
    /// Backoff kind: 0 fixed, 1 exponential.
    pub u8,
    /// Backoff base delay, ms.
    pub u64,
    /// Backoff jitter fraction.
    pub f64,
    /// Created, ms.
    pub u64,
);

impl Spec {
    /// The fixed part of a job with `options`, submitted at `now_ms`.
    pub fn of(options: &JobOptions, now_ms: u64) -> Self {
        let kind = match options.backoff.kind {
            BackoffKind::Fixed => 0,
            BackoffKind::Exponential => 1,
        };
        Spec(
            options.attempts,
            options.timeout_ms,
            kind,
            options.backoff.delay_ms,
            options.backoff.jitter,
            now_ms,
        )
    }

    /// As stored.
    pub fn to_json(&self) -> String {
        // A tuple of numbers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The attempts allowed and the attempt timeout in a claimed job's `d` (the claim script
/// writes one for a job stored before `d` existed). Unreadable: one attempt, no timeout.
pub fn limits(d: &str) -> (u32, Option<Duration>) {
    match serde_json::from_str::<Spec>(d) {
        Ok(s) => (s.0, s.1.map(Duration::from_millis)),
        Err(_) => (1, None),
    }
}

fn state(s: &str) -> Option<JobState> {
    JobState::ALL.into_iter().find(|st| st.as_str() == s)
}

fn raw(s: &str) -> Option<Box<RawValue>> {
    RawValue::from_string(s.to_owned()).ok()
}

/// A job hash (HGETALL) as a snapshot; `None` for a missing or unreadable job.
pub fn snapshot(id: &str, h: &HashMap<String, String>) -> Option<JobSnapshot> {
    let get = |k: &str| h.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
    let st = state(get("s")?)?;
    let spec = get("d").and_then(|d| serde_json::from_str::<Spec>(d).ok());
    // A job stored before `d` existed has these as fields of their own.
    let (attempts, created_at) = match spec {
        Some(d) => (d.0, d.5),
        None => (num("max").unwrap_or(1) as u32, num("c").unwrap_or(0)),
    };
    // The owner is field o when the job counts against its owner's cap, u when not.
    let owner = get("o").or_else(|| get("u")).unwrap_or_default().to_owned();
    Some(JobSnapshot {
        job_id: id.to_owned(),
        method: get("m")?.to_owned(),
        state: st,
        progress: get("pg").and_then(raw),
        attempt: num("a").unwrap_or(0) as u32,
        attempts,
        created_at,
        started_at: num("sa"),
        finished_at: num("f"),
        result: if st == JobState::Completed {
            get("res").and_then(raw)
        } else {
            None
        },
        error: get("err").and_then(|e| serde_json::from_str::<JobError>(e).ok()),
        owner,
        request_id: get("r").and_then(raw).and_then(RequestId::from_raw),
    })
}

/// Keeps a present `null` as `Some(null)`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Wire {
    t: String,
    id: String,
    #[serde(default, deserialize_with = "present")]
    p: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    ok: Option<Box<RawValue>>,
    #[serde(default)]
    err: Option<JobError>,
}

impl Wire {
    fn event(self) -> Option<JobEvent> {
        match self.t.as_str() {
            "p" => Some(JobEvent::Progress {
                job_id: self.id,
                progress: self.p?,
            }),
            "f" => {
                let outcome = match (self.ok, self.err) {
                    (Some(r), _) => Ok(r),
                    (None, Some(e)) => Err(e),
                    (None, None) => return None,
                };
                Some(JobEvent::Finished {
                    job_id: self.id,
                    outcome,
                })
            }
            _ => None,
        }
    }
}

/// The events of an inbox message published by a script: one event, or a JSON array of them
/// (`complete` publishes a burst of final events to a gateway as one message). Hands each
/// readable event to `each`; false when the message is unreadable.
pub fn events(payload: &str, mut each: impl FnMut(JobEvent)) -> bool {
    if payload.starts_with('[') {
        let Ok(all) = serde_json::from_str::<Vec<Wire>>(payload) else {
            return false;
        };
        let mut read = true;
        for w in all {
            match w.event() {
                Some(e) => each(e),
                None => read = false,
            }
        }
        read
    } else {
        match serde_json::from_str::<Wire>(payload)
            .ok()
            .and_then(Wire::event)
        {
            Some(e) => {
                each(e);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_the_fixed_part_and_the_owner() {
        let options = JobOptions {
            attempts: 3,
            timeout_ms: Some(500),
            ..Default::default()
        };
        let d = Spec::of(&options, 42).to_json();
        assert_eq!(limits(&d), (3, Some(Duration::from_millis(500))));
        for (owner_field, request_id) in
            [("u", Some(r#""req-1""#)), ("o", Some("null")), ("u", None)]
        {
            let mut h: HashMap<String, String> = [("s", "queued"), ("m", "m"), ("d", d.as_str())]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            h.insert(owner_field.into(), "ü \"x\"".into());
            if let Some(r) = request_id {
                h.insert("r".into(), r.into());
            }
            let snap = snapshot("a", &h).unwrap();
            assert_eq!(snap.owner, "ü \"x\"");
            assert_eq!((snap.attempts, snap.created_at), (3, 42));
            assert_eq!(snap.request_id.as_ref().map(|r| r.as_json()), request_id);
        }
    }

    /// Past 64 bytes (Redis's default `hash-max-listpack-value`) a job's hash would be stored
    /// as a hash table, over twice as large.
    #[test]
    fn the_fixed_part_stays_under_64_bytes() {
        let options = JobOptions {
            attempts: 100,
            timeout_ms: Some(86_400_000),
            backoff: jobcast_protocol::Backoff {
                kind: BackoffKind::Exponential,
                delay_ms: 30 * 86_400_000,
                jitter: 0.1 + 0.2,
            },
            ..Default::default()
        };
        let d = Spec::of(&options, 9_999_999_999_999).to_json();
        assert!(d.len() <= 64, "{} bytes: {d}", d.len());
        assert_eq!(limits(&d), (100, Some(Duration::from_millis(86_400_000))));
    }

    fn read(payload: &str) -> (bool, Vec<JobEvent>) {
        let mut all = Vec::new();
        let ok = events(payload, |e| all.push(e));
        (ok, all)
    }

    #[test]
    fn events_one_or_several() {
        let (ok, e) = read(r#"{"t":"f","id":"a","ok":null}"#);
        assert!(ok);
        match &e[..] {
            [JobEvent::Finished { outcome, .. }] => {
                assert_eq!(outcome.as_ref().unwrap().get(), "null")
            }
            e => panic!("{e:?}"),
        }
        let (ok, e) = read(
            r#"{"t":"f","id":"a","err":{"code":-32002,"message":"job cancelled","data":{"attempts":0}}}"#,
        );
        assert!(ok);
        match &e[..] {
            [JobEvent::Finished { outcome, .. }] => {
                assert_eq!(outcome.as_ref().unwrap_err().code.code(), -32002)
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            &read(r#"{"t":"p","id":"a","p":5}"#).1[..],
            [JobEvent::Progress { .. }]
        ));
        // A burst: in order, results kept as sent (whitespace included).
        let (ok, e) = read(r#"[{"t":"f","id":"a","ok":{ "x": 1 }},{"t":"f","id":"b","ok":2}]"#);
        assert!(ok);
        match &e[..] {
            [
                JobEvent::Finished {
                    job_id: a,
                    outcome: Ok(ra),
                },
                JobEvent::Finished {
                    job_id: b,
                    outcome: Ok(rb),
                },
            ] => {
                assert_eq!((a.as_str(), ra.get()), ("a", r#"{ "x": 1 }"#));
                assert_eq!((b.as_str(), rb.get()), ("b", "2"));
            }
            e => panic!("{e:?}"),
        }
        assert!(!read("garbage").0);
        assert!(!read("[garbage").0);
        // One unreadable event in a burst does not hide the others.
        let (ok, e) = read(r#"[{"t":"?","id":"a"},{"t":"f","id":"b","ok":2}]"#);
        assert!(!ok);
        assert_eq!(e.len(), 1);
    }
}
