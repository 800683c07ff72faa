//! Job options (`options` member of a job call): wire form, validation, clamping to the
//! server's limits, and the retry backoff computation.

use serde::{Deserialize, Serialize};

/// How the delay between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    /// The same delay before every retry.
    Fixed,
    /// `delayMs · 2^(n-1)` before retry n.
    Exponential,
}

/// Retry backoff: kind, base delay and jitter fraction (0–1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// `fixed` or `exponential`.
    #[serde(rename = "type")]
    pub kind: BackoffKind,
    /// Base delay in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Random fraction (0–1) of the delay that may be taken off, to spread retries.
    #[serde(default)]
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            kind: BackoffKind::Fixed,
            delay_ms: 0,
            jitter: 0.0,
        }
    }
}

impl Backoff {
    /// Delay before retry number `retry` (1 = the first retry), given a random `unit` in [0, 1).
    pub fn delay_for(&self, retry: u32, unit: f64) -> u64 {
        let base = match self.kind {
            BackoffKind::Fixed => self.delay_ms,
            BackoffKind::Exponential => {
                let shift = retry.saturating_sub(1).min(40);
                self.delay_ms.saturating_mul(1u64 << shift)
            }
        };
        let base = base.min(MAX_BACKOFF_MS);
        let cut = (base as f64 * self.jitter.clamp(0.0, 1.0) * unit.clamp(0.0, 1.0)) as u64;
        base - cut.min(base)
    }
}

/// The longest single backoff delay, whatever the options say (one day).
pub const MAX_BACKOFF_MS: u64 = 24 * 3600 * 1000;

/// Validated job options with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobOptions {
    /// 0–1000, higher runs first.
    pub priority: u16,
    /// Run no earlier than this many milliseconds after submission.
    pub delay_ms: u64,
    /// One attempt's wall-clock limit, if any.
    pub timeout_ms: Option<u64>,
    /// Total tries, at least 1.
    pub attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Whether the caller wants `job.accepted`.
    pub ack: bool,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            priority: 0,
            delay_ms: 0,
            timeout_ms: None,
            attempts: 1,
            backoff: Backoff::default(),
            ack: true,
        }
    }
}

/// The wire form of `options`, before validation. Unknown members are refused so that a typo
/// (`timeOutMs`) is an error instead of a silently ignored option.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireOptions {
    priority: Option<i64>,
    delay_ms: Option<u64>,
    timeout_ms: Option<u64>,
    attempts: Option<u32>,
    backoff: Option<Backoff>,
    ack: Option<bool>,
}

/// The server's limits that options are clamped to.
#[derive(Debug, Clone, Copy)]
pub struct OptionLimits {
    /// Largest `attempts`.
    pub max_attempts: u32,
    /// Largest `delayMs`.
    pub max_delay_ms: u64,
    /// Largest `timeoutMs`; also the timeout of jobs that set none, when `default_timeout_ms` is unset.
    pub max_timeout_ms: u64,
    /// Timeout applied to jobs that set none.
    pub default_timeout_ms: Option<u64>,
}

impl Default for OptionLimits {
    fn default() -> Self {
        Self {
            max_attempts: 100,
            max_delay_ms: 30 * 24 * 3600 * 1000,
            max_timeout_ms: 24 * 3600 * 1000,
            default_timeout_ms: None,
        }
    }
}

impl JobOptions {
    /// Validates the raw `options` JSON and clamps it to `limits`. The error text names the
    /// offending member; it is sent to the client with -32600.
    pub fn parse(raw: Option<&str>, limits: &OptionLimits) -> Result<Self, String> {
        let wire: WireOptions = match raw {
            None => WireOptions::default(),
            Some(s) => serde_json::from_str(s).map_err(|e| format!("invalid options: {e}"))?,
        };
        let mut o = JobOptions::default();
        if let Some(p) = wire.priority {
            o.priority = u16::try_from(p)
                .ok()
                .filter(|p| *p <= 1000)
                .ok_or("invalid options: priority must be an integer 0-1000")?;
        }
        if let Some(d) = wire.delay_ms {
            o.delay_ms = d.min(limits.max_delay_ms);
        }
        match wire.timeout_ms {
            Some(0) => return Err("invalid options: timeoutMs must be at least 1".into()),
            Some(t) => o.timeout_ms = Some(t.min(limits.max_timeout_ms)),
            None => o.timeout_ms = limits.default_timeout_ms,
        }
        if let Some(a) = wire.attempts {
            if a == 0 {
                return Err("invalid options: attempts must be at least 1".into());
            }
            o.attempts = a.min(limits.max_attempts);
        }
        if let Some(b) = wire.backoff {
            if !(0.0..=1.0).contains(&b.jitter) {
                return Err("invalid options: backoff.jitter must be between 0 and 1".into());
            }
            o.backoff = b;
        }
        if let Some(ack) = wire.ack {
            o.ack = ack;
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<JobOptions, String> {
        JobOptions::parse(Some(s), &OptionLimits::default())
    }

    #[test]
    fn defaults_and_full() {
        assert_eq!(
            JobOptions::parse(None, &OptionLimits::default()).unwrap(),
            JobOptions::default()
        );
        let o = parse(r#"{"priority":5,"delayMs":10,"timeoutMs":60000,"attempts":3,"backoff":{"type":"exponential","delayMs":500,"jitter":0.5},"ack":false}"#).unwrap();
        assert_eq!(o.priority, 5);
        assert_eq!(o.attempts, 3);
        assert_eq!(o.backoff.kind, BackoffKind::Exponential);
        assert!(!o.ack);
    }

    #[test]
    fn refusals() {
        for bad in [
            r#"{"priority":1001}"#,
            r#"{"priority":-1}"#,
            r#"{"priority":1.5}"#,
            r#"{"attempts":0}"#,
            r#"{"timeoutMs":0}"#,
            r#"{"delayMs":-5}"#,
            r#"{"backoff":{"type":"linear"}}"#,
            r#"{"backoff":{"type":"fixed","jitter":2}}"#,
            r#"{"timeOutMs":5}"#,
            r#"[]"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clamps() {
        let o = parse(r#"{"attempts":100000}"#).unwrap();
        assert_eq!(o.attempts, 100);
    }

    #[test]
    fn backoff_delays() {
        let b = Backoff {
            kind: BackoffKind::Exponential,
            delay_ms: 100,
            jitter: 0.0,
        };
        assert_eq!(b.delay_for(1, 0.5), 100);
        assert_eq!(b.delay_for(3, 0.5), 400);
        let f = Backoff {
            kind: BackoffKind::Fixed,
            delay_ms: 100,
            jitter: 0.5,
        };
        assert_eq!(f.delay_for(4, 0.0), 100);
        assert_eq!(f.delay_for(4, 1.0), 50);
        assert!(b.delay_for(200, 0.0) <= MAX_BACKOFF_MS);
    }
}
