//! Faults injected on demand, for testing a client's recovery: latency, an error status, a 429,
//! a body cut short, a page of well-formed JSON that is not a page of records, a dropped
//! connection, and a listing that shifts under a client paging it (new events arriving between
//! its page requests).
//!
//! A fault is queued with `POST /_sim/faults` (or `--fault` on the command line) as JSON, e.g.
//! `{"kind":"status","status":503,"count":3}`. It hits the next `count` API requests (default 1)
//! whose path starts with `path` (default: any); with `probability` it hits each matching request
//! with that chance instead, `count` times if given, else for ever. Queued faults apply in order.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Fault {
    /// Delay the response by `ms`, then answer normally.
    Latency { ms: u64 },
    /// Answer `status` (4xx/5xx) with SE's error body.
    Status { status: u16 },
    /// Answer 429 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset: reset` (default: the
    /// real window's), plus `Retry-After` when given.
    RateLimited {
        #[serde(default)]
        reset: Option<u64>,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Answer 200 with a JSON body cut short.
    Malformed,
    /// Answer 200 with well-formed JSON in SE's envelope whose `data` holds numbers, not
    /// records: a page that parses and still cannot be read.
    InvalidPage,
    /// Close the connection without a complete response.
    Drop,
    /// Add `events` new device events dated now, then answer normally. Events are listed newest
    /// first and paged by `offset`, so every item moves `events` places further down under a
    /// client that is paging: what arrives between its page requests shifts the next page.
    Shift { events: u32 },
}

/// The most events one `shift` adds: enough to push a page of 500 down by more than a page.
const MAX_SHIFT: u32 = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FaultSpec {
    #[serde(flatten)]
    pub(crate) fault: Fault,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) probability: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FaultError {
    #[error("status must be 400..=599, got {0}")]
    Status(u16),
    #[error("probability must be within 0..=1")]
    Probability,
    #[error("count must be at least 1")]
    Count,
    #[error("a shift adds 1..={MAX_SHIFT} events, got {0}")]
    Shift(u32),
}

impl FaultSpec {
    fn validate(&self) -> Result<(), FaultError> {
        if let Fault::Status { status } = self.fault {
            if !(400..=599).contains(&status) {
                return Err(FaultError::Status(status));
            }
        }
        if let Fault::Shift { events } = self.fault {
            if !(1..=MAX_SHIFT).contains(&events) {
                return Err(FaultError::Shift(events));
            }
        }
        if self.probability.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
            return Err(FaultError::Probability);
        }
        if self.count == Some(0) {
            return Err(FaultError::Count);
        }
        Ok(())
    }

    fn matches(&self, path: &str) -> bool {
        self.path.as_deref().is_none_or(|p| path.starts_with(p))
    }
}

#[derive(Debug, Clone, Serialize)]
struct Pending {
    #[serde(flatten)]
    spec: FaultSpec,
    /// `None`: unlimited (a probabilistic fault without `count`).
    remaining: Option<u32>,
}

/// The queue of pending faults. Deterministic for a seed.
#[derive(Debug)]
pub(crate) struct FaultQueue {
    pending: Vec<Pending>,
    rng: StdRng,
}

impl FaultQueue {
    pub(crate) fn new(seed: u64) -> Self {
        FaultQueue {
            pending: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub(crate) fn push(&mut self, spec: FaultSpec) -> Result<(), FaultError> {
        spec.validate()?;
        let remaining = match (spec.count, spec.probability) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            (None, None) => Some(1),
        };
        self.pending.push(Pending { spec, remaining });
        Ok(())
    }

    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }

    /// The pending faults with their remaining counts, as JSON.
    pub(crate) fn snapshot(&self) -> serde_json::Value {
        serde_json::to_value(&self.pending).unwrap_or_default()
    }

    /// The fault to apply to a request for `path`, if any, counting it.
    pub(crate) fn take(&mut self, path: &str) -> Option<Fault> {
        let rng = &mut self.rng;
        let at = self.pending.iter().position(|p| {
            p.spec.matches(path) && p.spec.probability.is_none_or(|prob| rng.gen_bool(prob))
        })?;
        let fault = self.pending[at].spec.fault.clone();
        if let Some(n) = &mut self.pending[at].remaining {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(at);
            }
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn spec(json: &str) -> FaultSpec {
        serde_json::from_str(json).unwrap()
    }

    #[rstest]
    #[case(r#"{"kind":"status","status":503,"count":3}"#, Fault::Status { status: 503 })]
    #[case(r#"{"kind":"latency","ms":250}"#, Fault::Latency { ms: 250 })]
    #[case(r#"{"kind":"rate_limited","reset":5}"#, Fault::RateLimited { reset: Some(5), retry_after: None })]
    #[case(r#"{"kind":"malformed"}"#, Fault::Malformed)]
    #[case(r#"{"kind":"drop"}"#, Fault::Drop)]
    #[case(r#"{"kind":"invalid_page"}"#, Fault::InvalidPage)]
    #[case(r#"{"kind":"shift","events":3}"#, Fault::Shift { events: 3 })]
    fn parses_each_kind(#[case] json: &str, #[case] fault: Fault) {
        assert_eq!(spec(json).fault, fault);
    }

    #[rstest]
    #[case(r#"{"kind":"status","status":200}"#)]
    #[case(r#"{"kind":"drop","probability":1.5}"#)]
    #[case(r#"{"kind":"drop","count":0}"#)]
    #[case(r#"{"kind":"shift","events":0}"#)]
    #[case(r#"{"kind":"shift","events":10001}"#)]
    fn invalid_specs_are_refused(#[case] json: &str) {
        assert!(FaultQueue::new(1).push(spec(json)).is_err());
    }

    #[test]
    fn counted_faults_run_out_in_order() {
        let mut q = FaultQueue::new(1);
        q.push(spec(r#"{"kind":"status","status":503,"count":2}"#))
            .unwrap();
        q.push(spec(r#"{"kind":"drop"}"#)).unwrap();
        let taken: Vec<_> = (0..4).map(|_| q.take("/v1/events")).collect();
        assert_eq!(
            taken,
            [
                Some(Fault::Status { status: 503 }),
                Some(Fault::Status { status: 503 }),
                Some(Fault::Drop),
                None
            ]
        );
    }

    #[test]
    fn path_restricts_a_fault() {
        let mut q = FaultQueue::new(1);
        q.push(spec(r#"{"kind":"malformed","path":"/v1/computers"}"#))
            .unwrap();
        assert_eq!(q.take("/v1/events"), None);
        assert_eq!(q.take("/v1/computers/abc"), Some(Fault::Malformed));
        assert_eq!(q.take("/v1/computers"), None);
    }

    #[test]
    fn probabilistic_faults_last_and_hit_about_that_often() {
        let mut q = FaultQueue::new(42);
        q.push(spec(r#"{"kind":"status","status":500,"probability":0.25}"#))
            .unwrap();
        let hits = (0..4000).filter(|_| q.take("/v1/events").is_some()).count();
        assert!((800..1200).contains(&hits), "{hits} hits");
    }
}
