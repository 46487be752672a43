//! One audit record (`schemas/audit-record.v1.json`): the request as received, the response as
//! sent, the policy it was decided under, the device state it was based on, and its source.

use crate::decision::DecisionResponse;
use crate::policy::{OnStale, Policies, Policy, UnknownDevice};
use crate::time::format_millis;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Where a decision was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSource {
    /// The requests topic (the decision worker).
    Kafka,
    /// `POST /v1/decide` on the admin listener.
    Http,
    /// `trustgate decide` (on the store itself, or through a running instance).
    Cli,
}

#[derive(Serialize)]
struct Record<'a> {
    /// The request body as received; `null` only if it was not JSON (an answered request
    /// always is: without a readable `request_id` nothing is answered or audited).
    request: Option<&'a RawValue>,
    response: &'a DecisionResponse,
    policy: &'a Value,
    state: State<'a>,
    source: AuditSource,
}

#[derive(Serialize)]
struct State<'a> {
    compromised: Option<bool>,
    observed_at: Option<String>,
    detection_ids: &'a [String],
}

/// Every configured policy as the audit records it, by name: its settings under the
/// configuration's own key names, so a record says what rules the decision followed even
/// after the configuration changed.
pub(super) fn policy_views(policies: &Policies) -> HashMap<String, Value> {
    policies
        .iter()
        .map(|p| (p.name.to_string(), policy_view(p)))
        .collect()
}

fn policy_view(p: &Policy) -> Value {
    json!({
        "name": &*p.name,
        "mode": p.mode,
        "require_trusted": p.require_trusted,
        "block_compromised": p.block_compromised,
        "unknown_device": match p.unknown_device {
            UnknownDevice::Allow => "allow",
            UnknownDevice::Deny => "deny",
        },
        "stale_after": humantime::format_duration(p.stale_after).to_string(),
        "on_stale": match p.on_stale {
            OnStale::LastKnown => "last_known",
            OnStale::Deny => "deny",
        },
    })
}

/// One decision's audit record (key, value), exactly as the writer produces it; for tools and
/// tests that build records outside a writer.
pub fn audit_record(
    source: AuditSource,
    request: &[u8],
    response: &DecisionResponse,
    policies: &Policies,
) -> (String, Vec<u8>) {
    encode(source, request, response, &policy_views(policies))
}

/// The audit record's key and value: the key is the matched device's connector GUID, or the
/// request id when no device matched (so one device's decisions stay in order on one
/// partition).
pub(super) fn encode(
    source: AuditSource,
    request: &[u8],
    response: &DecisionResponse,
    policies: &HashMap<String, Value>,
) -> (String, Vec<u8>) {
    let unknown = json!({ "name": &*response.policy });
    let (compromised, observed_at, detection_ids) = response.state_basis();
    let record = Record {
        request: serde_json::from_slice(request).ok(),
        response,
        policy: policies.get(&*response.policy).unwrap_or(&unknown),
        state: State {
            compromised,
            observed_at: observed_at.map(format_millis),
            detection_ids,
        },
        source,
    };
    let key = response
        .connector_guid()
        .unwrap_or(&response.request_id)
        .to_owned();
    (
        key,
        serde_json::to_vec(&record).expect("audit records serialise"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Decider;
    use crate::fold::{CompromiseEvent, DeviceState, EventKey, Observation, Stamped};
    use crate::ingest::IngestStatus;
    use crate::liveness::LivenessClock;
    use crate::policy::{MemoryDirectory, PolicyMode};
    use std::sync::Arc;

    fn policy(name: &str, mode: PolicyMode) -> Policy {
        Policy {
            name: name.into(),
            require_trusted: true,
            block_compromised: true,
            unknown_device: UnknownDevice::Allow,
            stale_after: std::time::Duration::from_secs(900),
            on_stale: OnStale::LastKnown,
            mode,
        }
    }

    fn decider() -> (Decider<MemoryDirectory>, Arc<Policies>) {
        let mut dir = MemoryDirectory::default();
        let mut d = DeviceState::new("g-bad");
        d.operating_system = Some(Stamped {
            at: 1,
            value: "Windows 10".into(),
        });
        d.observation = Some(Observation {
            at: 1_000_000,
            compromised: false,
        });
        // Open (after the observation): compromises. Its twin without a detection id adds none.
        d.events.insert(
            EventKey::Id {
                id: 7,
                event_type_id: 1090519054,
            },
            CompromiseEvent {
                event_type_id: 1090519054,
                detection_id: Some("det-7".into()),
                date: Some(2_000_000),
                first_seen: 2_000_000,
            },
        );
        // Cleared by the observation: not among the ids that made it compromised.
        d.events.insert(
            EventKey::Id {
                id: 3,
                event_type_id: 1090519054,
            },
            CompromiseEvent {
                event_type_id: 1090519054,
                detection_id: Some("det-old".into()),
                date: Some(1),
                first_seen: 1,
            },
        );
        d.newest_record_at = Some(2_000_000);
        dir.insert(d);
        let policies = Arc::new(Policies {
            global: policy("global", PolicyMode::Enforce),
            by_application: [(
                "wiki".to_owned(),
                policy("wiki-rollout", PolicyMode::ReportOnly),
            )]
            .into(),
        });
        let decider = Decider::new(
            policies.clone(),
            dir,
            600_000,
            LivenessClock::starting_at(Some(crate::time::now_millis())),
            IngestStatus::offline(),
        );
        (decider, policies)
    }

    fn audit(body: &str, source: AuditSource) -> (String, Value) {
        let (decider, policies) = decider();
        let crate::decision::Answer::Reply(resp) = decider.decide(body.as_bytes()) else {
            panic!("{body}")
        };
        let (key, value) = encode(source, body.as_bytes(), &resp, &policy_views(&policies));
        (key, serde_json::from_slice(&value).unwrap())
    }

    #[test]
    fn a_compromised_decision_records_request_response_policy_and_state() {
        let body = r#"{"request_id":"r1","application":"vpn","user":"alice","device":{"trusted":true,"connector_guid":"G-BAD"}}"#;
        let (key, record) = audit(body, AuditSource::Kafka);
        assert_eq!(key, "g-bad", "keyed by the matched device");
        assert_eq!(
            record["request"],
            serde_json::from_str::<Value>(body).unwrap(),
            "the request as received"
        );
        assert_eq!(record["request"]["user"], "alice");
        assert_eq!(record["response"]["decision"], "deny");
        assert_eq!(record["response"]["reason"], "compromised");
        assert_eq!(record["policy"]["name"], "global");
        assert_eq!(record["policy"]["mode"], "enforce");
        assert_eq!(record["policy"]["stale_after"], "15m");
        assert_eq!(record["state"]["compromised"], true);
        assert_eq!(record["state"]["observed_at"], format_millis(1_000_000));
        assert_eq!(record["state"]["detection_ids"], json!(["det-7"]));
        assert_eq!(record["source"], "kafka");
    }

    #[test]
    fn no_matched_device_is_keyed_by_request_id_and_has_no_state() {
        let body = r#"{"request_id":"r2","application":"vpn","device":{"trusted":true,"hostname":"nobody"}}"#;
        let (key, record) = audit(body, AuditSource::Http);
        assert_eq!(key, "r2");
        assert_eq!(record["response"]["reason"], "not_in_secure_endpoint");
        assert_eq!(
            record["state"],
            json!({"compromised": null, "observed_at": null, "detection_ids": []})
        );
        assert_eq!(record["source"], "http");
    }

    #[test]
    fn report_only_records_the_would_be_decision_and_its_policy() {
        let body = r#"{"request_id":"r3","application":"wiki","device":{"trusted":true,"connector_guid":"g-bad"}}"#;
        let (_, record) = audit(body, AuditSource::Cli);
        assert_eq!(record["response"]["decision"], "allow");
        assert_eq!(record["response"]["reason"], "report_only");
        assert_eq!(record["response"]["would_decide"], "deny");
        assert_eq!(record["response"]["would_reason"], "compromised");
        assert_eq!(record["policy"]["name"], "wiki-rollout");
        assert_eq!(record["policy"]["mode"], "report_only");
        assert_eq!(record["state"]["compromised"], true);
        assert_eq!(record["source"], "cli");
    }
}
