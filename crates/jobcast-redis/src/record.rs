//! Reading Redis replies into jobcast types: a job hash into a snapshot, an inbox message into
//! a job event.

use jobcast_core::{JobError, JobEvent, JobSnapshot, JobState};
use jobcast_protocol::RequestId;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::collections::HashMap;

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
    Some(JobSnapshot {
        job_id: id.to_owned(),
        method: get("m")?.to_owned(),
        state: st,
        progress: get("pg").and_then(raw),
        attempt: num("a").unwrap_or(0) as u32,
        attempts: num("max").unwrap_or(1) as u32,
        created_at: num("c").unwrap_or(0),
        started_at: num("sa"),
        finished_at: num("f"),
        result: if st == JobState::Completed {
            get("res").and_then(raw)
        } else {
            None
        },
        error: get("err").and_then(|e| serde_json::from_str::<JobError>(e).ok()),
        owner: get("o").unwrap_or_default().to_owned(),
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

/// An inbox message published by a script.
pub fn event(payload: &str) -> Option<JobEvent> {
    let w: Wire = serde_json::from_str(payload).ok()?;
    match w.t.as_str() {
        "p" => Some(JobEvent::Progress {
            job_id: w.id,
            progress: w.p?,
        }),
        "f" => {
            let outcome = match (w.ok, w.err) {
                (Some(r), _) => Ok(r),
                (None, Some(e)) => Err(e),
                (None, None) => return None,
            };
            Some(JobEvent::Finished {
                job_id: w.id,
                outcome,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events() {
        match event(r#"{"t":"f","id":"a","ok":null}"#).unwrap() {
            JobEvent::Finished { outcome, .. } => assert_eq!(outcome.unwrap().get(), "null"),
            e => panic!("{e:?}"),
        }
        match event(r#"{"t":"f","id":"a","err":{"code":-32002,"message":"job cancelled","data":{"attempts":0}}}"#).unwrap() {
            JobEvent::Finished { outcome, .. } => assert_eq!(outcome.unwrap_err().code.code(), -32002),
            e => panic!("{e:?}"),
        }
        assert!(matches!(
            event(r#"{"t":"p","id":"a","p":5}"#),
            Some(JobEvent::Progress { .. })
        ));
        assert!(event("garbage").is_none());
    }
}
