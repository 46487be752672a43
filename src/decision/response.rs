//! Decision responses (`schemas/decision-response.v1.json`).

use crate::policy::{Decision, MatchedBy, Outcome, Reason};
use crate::time::{format_millis, Millis};
use serde::Serialize;

/// The answer to one request, as serialised on the wire (Kafka reply and HTTP body).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionResponse {
    pub(crate) request_id: String,
    pub(crate) decision: Outcome,
    pub(crate) reason: Reason,
    /// The custom policy's name, or `global`.
    pub(crate) policy: String,
    device: DeviceSection,
    /// RFC 3339 UTC.
    decided_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Present (true) only when the liveness age behind the decision is over `stale_after`.
    #[serde(skip_serializing_if = "Option::is_none")]
    stale: Option<bool>,
    /// The liveness age: seconds since the last record or heartbeat from any source; with
    /// `stale`. The field's name is the wire contract.
    #[serde(skip_serializing_if = "Option::is_none")]
    feed_age_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct DeviceSection {
    connector_guid: Option<String>,
    matched_by: MatchedBy,
    ambiguous: bool,
    compromised: Option<bool>,
    state_as_of: Option<String>,
}

impl DecisionResponse {
    pub(crate) fn new(
        request_id: String,
        policy: String,
        decision: Decision,
        decided_at: Millis,
    ) -> Self {
        DecisionResponse {
            request_id,
            decision: decision.outcome,
            reason: decision.reason,
            policy,
            device: DeviceSection {
                connector_guid: decision.device.connector_guid,
                matched_by: decision.device.matched_by.unwrap_or(MatchedBy::None),
                ambiguous: decision.device.ambiguous,
                compromised: decision.device.compromised,
                state_as_of: decision.device.state_as_of.map(format_millis),
            },
            decided_at: format_millis(decided_at),
            error: decision.error,
            stale: decision.stale.map(|_| true),
            feed_age_seconds: decision.stale.flatten().map(|age| age.as_secs()),
        }
    }
}
