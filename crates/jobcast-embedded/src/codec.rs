//! How a job record is laid out in the store: a compact binary form, written and read by hand.
//!
//! Every change of a job rewrites its whole record, three times per job at least (enqueue,
//! claim, end), so the form is chosen for cost: no field names, integers as LEB128 varints,
//! strings and raw JSON values as a length and their bytes, absent options as bits of one flag
//! word. A record of a small job is about a quarter of its JSON size and is written without
//! growing its buffer. The first byte is [`FORMAT`]; a record that starts with `{` is the JSON
//! form earlier versions wrote, and is still read.
//!
//! Decoding checks every length and value and answers an error, never a panic, for a record
//! that is cut short or corrupt.

use crate::state::JobRecord;
use jobcast_core::{JobError, JobState};
use jobcast_protocol::{Backoff, BackoffKind, ErrorCode, JobOptions, RequestId};
use serde_json::value::RawValue;

/// First byte of a record in this form.
const FORMAT: u8 = 1;

// Bits of the flag word: which optional fields follow, and the one boolean.
const REQUEST_ID: u16 = 1;
const TIMEOUT: u16 = 1 << 1;
const ACK: u16 = 1 << 2;
const PROGRESS: u16 = 1 << 3;
const STARTED: u16 = 1 << 4;
const FINISHED: u16 = 1 << 5;
const RESULT: u16 = 1 << 6;
const ERROR: u16 = 1 << 7;
const ERROR_DATA: u16 = 1 << 8;
const EXPONENTIAL: u16 = 1 << 9;

/// At most how many bytes [`encode`] appends for the record.
pub fn encoded_bound(rec: &JobRecord) -> usize {
    let raw_len = |v: &Option<Box<RawValue>>| v.as_ref().map_or(0, |v| v.get().len());
    let strings = rec.id.len()
        + rec.method.len()
        + rec.params.get().len()
        + rec.owner.len()
        + rec.request_id.as_ref().map_or(0, |r| r.as_json().len())
        + raw_len(&rec.progress)
        + raw_len(&rec.result)
        + rec
            .error
            .as_ref()
            .map_or(0, |e| e.message.len() + raw_len(&e.data))
        + rec.listeners.iter().map(String::len).sum::<usize>();
    // Every number and length fits in 10 bytes; 24 of them at most.
    strings + 240 + 10 * rec.listeners.len()
}

/// Appends the record in the store's form to `out`. A caller that reserves [`encoded_bound`]
/// first grows the buffer once (`store::Writes::put` takes the bound for that).
pub fn encode(rec: &JobRecord, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    let o = &rec.options;
    let mut flags = 0u16;
    let mut set = |bit: u16, on: bool| {
        if on {
            flags |= bit;
        }
    };
    set(REQUEST_ID, rec.request_id.is_some());
    set(TIMEOUT, o.timeout_ms.is_some());
    set(ACK, o.ack);
    set(PROGRESS, rec.progress.is_some());
    set(STARTED, rec.started_at.is_some());
    set(FINISHED, rec.finished_at.is_some());
    set(RESULT, rec.result.is_some());
    set(ERROR, rec.error.is_some());
    set(
        ERROR_DATA,
        rec.error.as_ref().is_some_and(|e| e.data.is_some()),
    );
    set(EXPONENTIAL, o.backoff.kind == BackoffKind::Exponential);
    w.0.push(FORMAT);
    w.0.extend_from_slice(&flags.to_le_bytes());
    w.0.push(state_byte(rec.state));
    w.str(&rec.id);
    w.str(&rec.method);
    w.str(rec.params.get());
    w.str(&rec.owner);
    if let Some(r) = &rec.request_id {
        w.str(r.as_json());
    }
    w.num(u64::from(o.priority));
    w.num(o.delay_ms);
    if let Some(t) = o.timeout_ms {
        w.num(t);
    }
    w.num(u64::from(o.attempts));
    w.num(o.backoff.delay_ms);
    w.0.extend_from_slice(&o.backoff.jitter.to_le_bytes());
    if let Some(p) = &rec.progress {
        w.str(p.get());
    }
    w.num(u64::from(rec.attempt));
    w.num(u64::from(rec.stalls));
    w.num(rec.created_at);
    if let Some(t) = rec.started_at {
        w.num(t);
    }
    if let Some(t) = rec.finished_at {
        w.num(t);
    }
    w.num(rec.run_at);
    w.num(rec.seq);
    if let Some(r) = &rec.result {
        w.str(r.get());
    }
    if let Some(e) = &rec.error {
        // Zigzag, so the negative JSON-RPC codes stay short.
        let c = i64::from(e.code.code());
        w.num(((c << 1) ^ (c >> 63)) as u64);
        w.str(&e.message);
        if let Some(d) = &e.data {
            w.str(d.get());
        }
    }
    w.num(rec.listeners.len() as u64);
    for l in &rec.listeners {
        w.str(l);
    }
}

/// A record read back from the store, in this form or the older JSON one.
pub fn decode(bytes: &[u8]) -> Result<JobRecord, String> {
    match bytes.first() {
        Some(&FORMAT) => Reader(&bytes[1..]).record(),
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        Some(b) => Err(format!("unknown record format {b}")),
        None => Err("empty record".into()),
    }
}

fn state_byte(s: JobState) -> u8 {
    match s {
        JobState::Queued => 0,
        JobState::Delayed => 1,
        JobState::Active => 2,
        JobState::Completed => 3,
        JobState::Failed => 4,
        JobState::Cancelled => 5,
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn num(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn str(&mut self, s: &str) {
        self.num(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("record cut short".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn num(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err("number too long".into())
    }

    fn small<T: TryFrom<u64>>(&mut self) -> Result<T, String> {
        T::try_from(self.num()?).map_err(|_| "number out of range".to_owned())
    }

    fn str(&mut self) -> Result<String, String> {
        let n: usize = self.small()?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "text is not UTF-8".to_owned())
    }

    fn raw(&mut self) -> Result<Box<RawValue>, String> {
        RawValue::from_string(self.str()?).map_err(|e| format!("stored JSON: {e}"))
    }

    fn record(mut self) -> Result<JobRecord, String> {
        let flags = u16::from_le_bytes([self.byte()?, self.byte()?]);
        let has = |bit: u16| flags & bit != 0;
        let state = match self.byte()? {
            0 => JobState::Queued,
            1 => JobState::Delayed,
            2 => JobState::Active,
            3 => JobState::Completed,
            4 => JobState::Failed,
            5 => JobState::Cancelled,
            s => return Err(format!("unknown job state {s}")),
        };
        let id = self.str()?;
        let method = self.str()?;
        let params = self.raw()?;
        let owner = self.str()?;
        let request_id = if has(REQUEST_ID) {
            Some(RequestId::from_raw(self.raw()?).ok_or("bad request id")?)
        } else {
            None
        };
        let priority = self.small()?;
        let delay_ms = self.num()?;
        let timeout_ms = has(TIMEOUT).then(|| self.num()).transpose()?;
        let attempts = self.small()?;
        let backoff_delay = self.num()?;
        let jitter = f64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "jitter")?);
        let options = JobOptions {
            priority,
            delay_ms,
            timeout_ms,
            attempts,
            backoff: Backoff {
                kind: if has(EXPONENTIAL) {
                    BackoffKind::Exponential
                } else {
                    BackoffKind::Fixed
                },
                delay_ms: backoff_delay,
                jitter,
            },
            ack: has(ACK),
        };
        let progress = has(PROGRESS).then(|| self.raw()).transpose()?;
        let attempt = self.small()?;
        let stalls = self.small()?;
        let created_at = self.num()?;
        let started_at = has(STARTED).then(|| self.num()).transpose()?;
        let finished_at = has(FINISHED).then(|| self.num()).transpose()?;
        let run_at = self.num()?;
        let seq = self.num()?;
        let result = has(RESULT).then(|| self.raw()).transpose()?;
        let error = if has(ERROR) {
            let z = self.num()?;
            let code = ((z >> 1) as i64) ^ -((z & 1) as i64);
            let code = i32::try_from(code)
                .ok()
                .and_then(|c| ErrorCode::try_from(c).ok())
                .ok_or("unknown error code")?;
            let message = self.str()?;
            let data = has(ERROR_DATA).then(|| self.raw()).transpose()?;
            Some(JobError {
                code,
                message,
                data,
            })
        } else {
            None
        };
        let n: usize = self.small()?;
        // Each listener takes at least one byte: a count past what is left is corrupt.
        if n > self.0.len() {
            return Err("record cut short".into());
        }
        let listeners = (0..n).map(|_| self.str()).collect::<Result<_, _>>()?;
        if !self.0.is_empty() {
            return Err("bytes after the record".into());
        }
        Ok(JobRecord {
            id,
            method,
            params,
            owner,
            request_id,
            options,
            state,
            progress,
            attempt,
            stalls,
            created_at,
            started_at,
            finished_at,
            run_at,
            seq,
            result,
            error,
            listeners,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(rec: &JobRecord) -> Vec<u8> {
        let mut out = Vec::new();
        encode(rec, &mut out);
        out
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn full() -> JobRecord {
        JobRecord {
            id: "j_1".into(),
            method: "demo.echo".into(),
            params: raw(r#"{"a":[1,2,"é"]}"#),
            owner: "alice".into(),
            request_id: Some(RequestId::string("r-1")),
            options: JobOptions {
                priority: 7,
                delay_ms: 250,
                timeout_ms: Some(30_000),
                attempts: 3,
                backoff: Backoff {
                    kind: BackoffKind::Exponential,
                    delay_ms: 100,
                    jitter: 0.25,
                },
                ack: false,
            },
            state: JobState::Failed,
            progress: Some(raw("0.5")),
            attempt: 3,
            stalls: 1,
            created_at: 1_795_496_693_541,
            started_at: Some(1_795_496_693_542),
            finished_at: Some(1_795_496_693_551),
            run_at: 1_795_496_693_541,
            seq: 76,
            result: None,
            error: Some(JobError::with_attempts(
                ErrorCode::JobFailed,
                "job failed: boom".into(),
                3,
                "boom",
            )),
            listeners: vec!["gw-1".into(), "gw-2".into()],
        }
    }

    /// The record's every field, compared through its JSON form.
    fn json(rec: &JobRecord) -> String {
        serde_json::to_string(rec).unwrap()
    }

    #[test]
    fn round_trips_every_field() {
        let rec = full();
        assert!(encoded(&rec).len() <= encoded_bound(&rec));
        assert_eq!(json(&decode(&encoded(&rec)).unwrap()), json(&rec));
        let bare = JobRecord::for_test("x");
        assert_eq!(json(&decode(&encoded(&bare)).unwrap()), json(&bare));
    }

    #[test]
    fn appends_to_what_the_buffer_holds() {
        let (a, b) = (full(), JobRecord::for_test("x"));
        let mut out = b"key".to_vec();
        encode(&a, &mut out);
        let split = out.len();
        encode(&b, &mut out);
        assert_eq!(&out[..3], b"key");
        assert_eq!(json(&decode(&out[3..split]).unwrap()), json(&a));
        assert_eq!(json(&decode(&out[split..]).unwrap()), json(&b));
    }

    #[test]
    fn reads_the_json_form() {
        let rec = full();
        assert_eq!(json(&decode(json(&rec).as_bytes()).unwrap()), json(&rec));
    }

    #[test]
    fn is_smaller_than_json() {
        let rec = full();
        assert!(encoded(&rec).len() * 2 < json(&rec).len());
    }

    #[test]
    fn refuses_every_cut_and_an_unknown_format() {
        let bytes = encoded(&full());
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "cut at {n} read as a record");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert!(decode(&[9, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn never_panics_on_corrupt_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut b = bytes;
            if let Some(first) = b.first_mut() {
                *first = FORMAT;
            }
            let _ = decode(&b);
        }

        #[test]
        fn round_trips_any_numbers_and_text(
            id in "[a-z0-9_]{1,40}",
            owner in "\\PC{0,20}",
            seq in any::<u64>(),
            attempt in any::<u32>(),
            priority in any::<u16>(),
            delay in any::<u64>(),
            listeners in proptest::collection::vec("[a-z0-9-]{0,12}", 0..5),
        ) {
            let mut rec = full();
            rec.id = id;
            rec.owner = owner;
            rec.seq = seq;
            rec.attempt = attempt;
            rec.options.priority = priority;
            rec.options.delay_ms = delay;
            rec.listeners = listeners;
            let bytes = encoded(&rec);
            prop_assert!(bytes.len() <= encoded_bound(&rec));
            prop_assert_eq!(json(&decode(&bytes).unwrap()), json(&rec));
        }
    }
}
