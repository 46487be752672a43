//! Decision responses (`schemas/decision-response.v1.json`).

use crate::fold::SummaryGuid;
use crate::policy::{Decision, MatchedBy, Outcome, Reason};
use crate::time::{serialize_millis, serialize_optional_millis, Millis};
use serde::Serialize;
use std::sync::Arc;

/// The answer to one request, as serialised on the wire (Kafka reply and HTTP body).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionResponse {
    pub(crate) request_id: String,
    pub(crate) decision: Outcome,
    pub(crate) reason: Reason,
    /// The custom policy's name, or `global` (shared with the policy, not copied per response).
    #[serde(serialize_with = "serialize_shared_str")]
    pub(crate) policy: Arc<str>,
    device: DeviceSection,
    /// RFC 3339 UTC on the wire; kept as unix ms (also the audit record's Kafka timestamp) and
    /// formatted only when the response is serialised.
    #[serde(serialize_with = "serialize_millis")]
    decided_at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Present (true) only when the liveness age behind the decision is over `stale_after`.
    #[serde(skip_serializing_if = "Option::is_none")]
    stale: Option<bool>,
    /// The liveness age: seconds since the last record or heartbeat from any source; with
    /// `stale`. The field's name is the wire contract.
    #[serde(skip_serializing_if = "Option::is_none")]
    feed_age_seconds: Option<u64>,
    /// Under a `report_only` policy (then `decision` is `allow` and `reason` `report_only`):
    /// what enforcement would have answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) would_decide: Option<Outcome>,
    /// With `would_decide`: the reason enforcement would have given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) would_reason: Option<Reason>,
    /// Present when the request asked for a decision at a past time (`"at"`): that time, RFC
    /// 3339; the device state decided on is the one its records up to then give.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_optional_millis"
    )]
    as_of: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct DeviceSection {
    connector_guid: Option<SummaryGuid>,
    matched_by: MatchedBy,
    ambiguous: bool,
    compromised: Option<bool>,
    /// RFC 3339 UTC on the wire (`null` when no device matched).
    #[serde(serialize_with = "serialize_optional_millis")]
    state_as_of: Option<Millis>,
    /// Not on the wire: the audit's `state.observed_at`.
    #[serde(skip)]
    observed_at: Option<Millis>,
    /// Not on the wire: the audit's `state.detection_ids`.
    #[serde(skip)]
    detection_ids: Vec<String>,
}

impl DecisionResponse {
    pub(crate) fn new(
        request_id: String,
        policy: Arc<str>,
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
                state_as_of: decision.device.state_as_of,
                observed_at: decision.device.observed_at,
                detection_ids: decision.device.detection_ids,
            },
            decided_at,
            error: decision.error,
            stale: decision.stale.map(|_| true),
            feed_age_seconds: decision.stale.flatten().map(|age| age.as_secs()),
            would_decide: decision.would.map(|(outcome, _)| outcome),
            would_reason: decision.would.map(|(_, reason)| reason),
            as_of: None,
        }
    }

    /// The response to a decision at a past time: `as_of` says which.
    pub(crate) fn with_as_of(self, at: Millis) -> Self {
        DecisionResponse {
            as_of: Some(at),
            ..self
        }
    }

    /// The device the decision matched (its connector GUID), if any.
    pub(crate) fn connector_guid(&self) -> Option<&str> {
        self.device.connector_guid.as_deref()
    }

    /// The device state the decision was based on: whether it was compromised (`None`: SE
    /// state was not consulted), its latest observation time, and the detection ids that made
    /// it compromised.
    pub(crate) fn state_basis(&self) -> (Option<bool>, Option<Millis>, &[String]) {
        (
            self.device.compromised,
            self.device.observed_at,
            &self.device.detection_ids,
        )
    }

    /// When it was decided (unix ms).
    pub(crate) fn decided_millis(&self) -> Millis {
        self.decided_at
    }
}

fn serialize_shared_str<S: serde::Serializer>(text: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire form, byte for byte: times are RFC 3339 UTC with milliseconds (formatted when
    /// the response is serialised), absent ones `null` inside `device` and left out outside it.
    #[test]
    fn a_response_serialises_as_the_contract_says() {
        let mut decision = Decision::invalid("bad");
        decision.device.connector_guid = Some("0d5e4f3a-1b2c-4d5e-8f90-a1b2c3d4e5f6".into());
        decision.device.matched_by = Some(MatchedBy::ConnectorGuid);
        decision.device.state_as_of = Some(1_767_225_601_000);
        let response =
            DecisionResponse::new("r1".into(), "global".into(), decision, 1_767_225_600_123)
                .with_as_of(86_399_999);
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            concat!(
                r#"{"request_id":"r1","decision":"deny","reason":"invalid_request","policy":"global","#,
                r#""device":{"connector_guid":"0d5e4f3a-1b2c-4d5e-8f90-a1b2c3d4e5f6","matched_by":"connector_guid","#,
                r#""ambiguous":false,"compromised":null,"state_as_of":"2026-01-01T00:00:01.000Z"},"#,
                r#""decided_at":"2026-01-01T00:00:00.123Z","error":"bad","as_of":"1970-01-01T23:59:59.999Z"}"#
            )
        );
        let unmatched = DecisionResponse::new("r2".into(), "p".into(), Decision::invalid("x"), 0);
        assert_eq!(
            serde_json::to_string(&unmatched).unwrap(),
            concat!(
                r#"{"request_id":"r2","decision":"deny","reason":"invalid_request","policy":"p","#,
                r#""device":{"connector_guid":null,"matched_by":"none","ambiguous":false,"#,
                r#""compromised":null,"state_as_of":null},"decided_at":"1970-01-01T00:00:00.000Z","error":"x"}"#
            )
        );
    }
}
