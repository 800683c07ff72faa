//! Identifiers on the wire: JSON-RPC request ids (kept as raw JSON so they echo back exactly)
//! and job ids (`[A-Za-z0-9_.:-]{1,128}`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::fmt;

/// A JSON-RPC request id: a JSON string, number or `null`, kept as its exact JSON text.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(Box<RawValue>);

impl RequestId {
    /// Wraps raw JSON, checking it is a string, a number or `null`.
    pub fn from_raw(raw: Box<RawValue>) -> Option<Self> {
        let s = raw.get();
        let first = s.as_bytes().first().copied()?;
        let ok = first == b'"' || first == b'-' || first.is_ascii_digit() || s == "null";
        ok.then_some(Self(raw))
    }

    /// The JSON `null` id, used for errors about requests whose id could not be read.
    pub fn null() -> Self {
        Self(RawValue::NULL.to_owned())
    }

    /// A string id.
    pub fn string(s: &str) -> Self {
        let json = serde_json::to_string(s).unwrap_or_else(|_| "null".to_owned());
        Self::from_json(json)
    }

    /// A numeric id.
    pub fn number(n: u64) -> Self {
        Self::from_json(n.to_string())
    }

    fn from_json(json: String) -> Self {
        RawValue::from_string(json)
            .map(Self)
            .unwrap_or_else(|_| Self::null())
    }

    /// The exact JSON text of the id.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    /// The raw JSON value.
    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }
}

impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}
impl Eq for RequestId {}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

/// Longest job id accepted.
pub const MAX_JOB_ID_LEN: usize = 128;

/// Checks a client-chosen job id: 1–128 characters of `[A-Za-z0-9_.:-]`.
pub fn validate_job_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > MAX_JOB_ID_LEN {
        return Err("jobId must be 1-128 characters");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    {
        return Err("jobId may only contain A-Z a-z 0-9 _ . : -");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids() {
        assert!(validate_job_id("a").is_ok());
        assert!(validate_job_id("order:42_x.y-z").is_ok());
        assert!(validate_job_id(&"a".repeat(128)).is_ok());
        assert!(validate_job_id(&"a".repeat(129)).is_err());
        assert!(validate_job_id("").is_err());
        assert!(validate_job_id("a b").is_err());
        assert!(validate_job_id("é").is_err());
    }

    #[test]
    fn request_ids() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert!(RequestId::from_raw(raw("\"x\"")).is_some());
        assert!(RequestId::from_raw(raw("-1.5")).is_some());
        assert!(RequestId::from_raw(raw("null")).is_some());
        assert!(RequestId::from_raw(raw("{}")).is_none());
        assert!(RequestId::from_raw(raw("true")).is_none());
        assert_eq!(RequestId::string("a\"b").as_json(), r#""a\"b""#);
    }
}
