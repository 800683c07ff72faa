//! The job hash's fixed part (field `d`), and reading Redis replies into jobcast types: a job
//! hash into a snapshot, an inbox message into a job event.

use jobcast_core::{JobError, JobEvent, JobSnapshot, JobState, NewJob};
use jobcast_protocol::{BackoffKind, RequestId};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use std::{borrow::Cow, collections::HashMap, time::Duration};

/// What never changes about a job and is not read on its hot paths, stored as one JSON field
/// `d` of the job hash rather than a field each: a hash of fewer fields is cheaper to write
/// and to search (Redis scans a small hash's fields in order), and smaller (docs/benchmarks.md
/// has the figures). The fields the scripts read on every claim or end stay fields of
/// their own: state, method, priority, params, run-at, attempt, token, gateway. Scripts read
/// `d` (with `cjson`) only on rare paths: a failed attempt's backoff, a resubmission's owner.
///
/// Jobs stored before `d` existed have these as fields of their own; every reader takes both.
#[derive(Serialize, Deserialize, Debug)]
pub struct Spec<'a> {
    /// Owner.
    #[serde(borrow)]
    pub o: Cow<'a, str>,
    /// The submitting call's request id (a JSON `null` id is kept, as `Some`).
    #[serde(
        borrow,
        default,
        deserialize_with = "present_ref",
        skip_serializing_if = "Option::is_none"
    )]
    pub r: Option<&'a RawValue>,
    /// Attempts allowed.
    pub max: u32,
    /// Timeout of one attempt, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmo: Option<u64>,
    /// Backoff: `fixed` or `exponential`, base delay ms, jitter fraction.
    pub bk: Cow<'a, str>,
    pub bkd: u64,
    pub bkj: f64,
    /// Created, ms.
    pub c: u64,
}

impl<'a> Spec<'a> {
    /// The fixed part of `job`, submitted at `now_ms`.
    pub fn of(job: &'a NewJob, now_ms: u64) -> Self {
        let o = &job.options;
        Spec {
            o: Cow::Borrowed(&job.owner),
            r: job.request_id.as_ref().map(|r| r.as_raw()),
            max: o.attempts,
            tmo: o.timeout_ms,
            bk: Cow::Borrowed(match o.backoff.kind {
                BackoffKind::Fixed => "fixed",
                BackoffKind::Exponential => "exponential",
            }),
            bkd: o.backoff.delay_ms,
            bkj: o.backoff.jitter,
            c: now_ms,
        }
    }

    /// As stored.
    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The attempts allowed and the attempt timeout in a claimed job's `d` (the claim script
/// writes one for a job stored before `d` existed). Unreadable: one attempt, no timeout.
pub fn limits(d: &str) -> (u32, Option<Duration>) {
    #[derive(Deserialize)]
    struct Limits {
        max: u32,
        #[serde(default)]
        tmo: Option<u64>,
    }
    match serde_json::from_str::<Limits>(d) {
        Ok(l) => (l.max, l.tmo.map(Duration::from_millis)),
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
    let (owner, request_id, attempts, created_at) = match spec {
        Some(d) => (d.o.into_owned(), d.r.map(RawValue::to_owned), d.max, d.c),
        None => (
            get("o").unwrap_or_default().to_owned(),
            get("r").and_then(raw),
            num("max").unwrap_or(1) as u32,
            num("c").unwrap_or(0),
        ),
    };
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
        request_id: request_id.and_then(RequestId::from_raw),
    })
}

/// Keeps a present `null` as `Some(null)`, borrowed.
fn present_ref<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<&'a RawValue>, D::Error> {
    <&'a RawValue>::deserialize(d).map(Some)
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
    fn a_snapshot_reads_the_fixed_part() {
        for (request_id, want) in [
            (Some(r#""req-1""#), Some(r#""req-1""#)),
            (Some("null"), Some("null")),
            (
                Some("12345678901234567890123"),
                Some("12345678901234567890123"),
            ),
            (None, None),
        ] {
            let job = NewJob {
                id: "a".into(),
                method: "m".into(),
                params: RawValue::from_string("[1]".into()).unwrap(),
                owner: "ü \"x\"".into(),
                request_id: request_id
                    .and_then(|r| RequestId::from_raw(RawValue::from_string(r.into()).unwrap())),
                options: jobcast_protocol::JobOptions {
                    attempts: 3,
                    timeout_ms: Some(500),
                    ..Default::default()
                },
                max_open_per_owner: 0,
            };
            let h: HashMap<String, String> = [
                ("s", "queued"),
                ("m", "m"),
                ("d", Spec::of(&job, 42).to_json().as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            let snap = snapshot("a", &h).unwrap();
            assert_eq!(snap.owner, job.owner);
            assert_eq!((snap.attempts, snap.created_at), (3, 42));
            assert_eq!(snap.request_id.as_ref().map(|r| r.as_json()), want);
            assert_eq!(limits(&h["d"]), (3, Some(Duration::from_millis(500))));
        }
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
