//! Delivery counters: kept locally for `GET /healthz`, and exported as the
//! `trustgate_webhook_*` metrics through [`crate::telemetry::metrics`].

use crate::telemetry::metrics;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a delivery was not accepted; the `reason` label of `trustgate_webhook_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reject {
    TooLarge,
    BodyTimeout,
    BodyError,
    Unauthorized,
    UnsupportedMediaType,
    InvalidJson,
    InvalidRecords,
    /// Computers in a delivery that no signature dates (bearer token only).
    UnsignedComputers,
    Overloaded,
    Unavailable,
}

impl Reject {
    const ALL: [Reject; 10] = [
        Reject::TooLarge,
        Reject::BodyTimeout,
        Reject::BodyError,
        Reject::Unauthorized,
        Reject::UnsupportedMediaType,
        Reject::InvalidJson,
        Reject::InvalidRecords,
        Reject::UnsignedComputers,
        Reject::Overloaded,
        Reject::Unavailable,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Reject::TooLarge => "too_large",
            Reject::BodyTimeout => "body_timeout",
            Reject::BodyError => "body_error",
            Reject::Unauthorized => "unauthorized",
            Reject::UnsupportedMediaType => "unsupported_media_type",
            Reject::InvalidJson => "invalid_json",
            Reject::InvalidRecords => "invalid_records",
            Reject::UnsignedComputers => "unsigned_computers",
            Reject::Overloaded => "overloaded",
            Reject::Unavailable => "unavailable",
        }
    }

    fn slot(self) -> usize {
        Reject::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Counts since start.
#[derive(Debug, Default)]
pub(super) struct Counters {
    accepted: AtomicU64,
    records: AtomicU64,
    duplicates: AtomicU64,
    rejected: [AtomicU64; Reject::ALL.len()],
}

impl Counters {
    pub(super) fn accepted(&self, records: usize) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records as u64, Ordering::Relaxed);
        metrics::webhook_accepted(records);
    }

    pub(super) fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
        metrics::webhook_duplicate();
    }

    pub(super) fn rejected(&self, reason: Reject) {
        self.rejected[reason.slot()].fetch_add(1, Ordering::Relaxed);
        metrics::webhook_rejected(reason.as_str());
    }

    /// The counts as `GET /healthz` shows them.
    pub(super) fn to_json(&self) -> Value {
        let rejected: Map<String, Value> = Reject::ALL
            .iter()
            .map(|r| {
                let n = self.rejected[r.slot()].load(Ordering::Relaxed);
                (r.as_str().to_owned(), n.into())
            })
            .collect();
        json!({
            "accepted": self.accepted.load(Ordering::Relaxed),
            "records": self.records.load(Ordering::Relaxed),
            "duplicates": self.duplicates.load(Ordering::Relaxed),
            "rejected": rejected,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_by_reason() {
        let c = Counters::default();
        c.accepted(3);
        c.duplicate();
        c.rejected(Reject::Unauthorized);
        c.rejected(Reject::Unauthorized);
        c.rejected(Reject::Unavailable);
        let j = c.to_json();
        assert_eq!(j["accepted"], 1);
        assert_eq!(j["records"], 3);
        assert_eq!(j["duplicates"], 1);
        assert_eq!(j["rejected"]["unauthorized"], 2);
        assert_eq!(j["rejected"]["unavailable"], 1);
        assert_eq!(j["rejected"]["too_large"], 0);
    }
}
