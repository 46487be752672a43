//! The JSON Schemas in `schemas/` decide what a valid message is: examples, real fixtures and
//! trustgate's own serialised output must all validate against them.

use serde_json::{json, Value};
use std::sync::Arc;
use trustgate::audit::{audit_record, AuditSource};
use trustgate::decision::Decider;
use trustgate::fold::{DeviceState, Observation, Stamped};
use trustgate::ingest::IngestStatus;
use trustgate::liveness::LivenessClock;
use trustgate::policy::{MemoryDirectory, OnStale, Policies, Policy, PolicyMode, UnknownDevice};

fn schema(name: &str) -> jsonschema::Validator {
    let text =
        std::fs::read_to_string(format!("{}/schemas/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&value)
        .unwrap_or_else(|e| panic!("{name} is not a valid schema: {e}"))
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{instance}\n{errors:#?}");
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn request_examples_validate_and_bad_ones_do_not() {
    let v = schema("decision-request.v1.json");
    assert_valid(
        &v,
        &json!({"request_id": "r1", "application": "vpn", "user": "ann",
        "device": {"trusted": true, "os": "Windows", "connector_guid": "dd655598-63d5-456f-9c1d-9876de860648",
            "windows_processor_id": "d5614b9f287e0a3", "mac_addresses": ["22:88:FE:2C:89:5C", "22-88-fe-2c-89-5d"],
            "hostname": "FIN-LT-0042"}}),
    );
    assert_valid(
        &v,
        &json!({"request_id": "r2", "application": "wiki", "device": {"trusted": false}}),
    );
    for bad in [
        json!({"application": "vpn", "device": {"trusted": true}}),
        json!({"request_id": "r", "device": {"trusted": true}}),
        json!({"request_id": "r", "application": "a", "device": {"trusted": "yes"}}),
        json!({"request_id": "r", "application": "a", "device": {"trusted": true, "os": "beos"}}),
    ] {
        assert!(!v.is_valid(&bad), "{bad} should be invalid");
    }
}

/// The audit record's schema, with the response schema it refers to.
fn audit_schema() -> jsonschema::Validator {
    let load = |name: &str| -> Value {
        let text =
            std::fs::read_to_string(format!("{}/schemas/{name}", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let response = load("decision-response.v1.json");
    let id = response["$id"].as_str().unwrap().to_owned();
    jsonschema::options()
        .with_resource(id, jsonschema::Resource::from_contents(response).unwrap())
        .build(&load("audit-record.v1.json"))
        .unwrap_or_else(|e| panic!("audit-record.v1.json is not a valid schema: {e}"))
}

/// The global policy enforces; `wiki` is under a report-only policy.
fn policies() -> Arc<Policies> {
    let global = Policy {
        name: "global".into(),
        require_trusted: true,
        block_compromised: true,
        unknown_device: UnknownDevice::Allow,
        stale_after: std::time::Duration::from_secs(900),
        on_stale: OnStale::LastKnown,
        mode: PolicyMode::Enforce,
    };
    let rollout = Policy {
        name: "wiki-rollout".into(),
        mode: PolicyMode::ReportOnly,
        ..global.clone()
    };
    Arc::new(Policies {
        global,
        by_application: [("wiki".to_owned(), rollout)].into(),
    })
}

#[test]
fn our_responses_and_audit_records_validate() {
    let v = schema("decision-response.v1.json");
    let audit = audit_schema();
    let mut report_only = 0;
    let mut dir = MemoryDirectory::default();
    let mut d = DeviceState::new("g1");
    d.operating_system = Some(Stamped {
        at: 1,
        value: "Windows 10".into(),
    });
    d.observation = Some(Observation {
        at: 5,
        compromised: true,
    });
    d.newest_record_at = Some(5);
    dir.insert(d);
    // A fresh feed, and one that never wrote (every response then carries `stale`).
    let fresh = LivenessClock::starting_at(Some(trustgate::time::now_millis()));
    for decider in [
        Decider::new(
            policies(),
            dir.clone(),
            600_000,
            fresh,
            IngestStatus::offline(),
        ),
        Decider::new(
            policies(),
            dir,
            600_000,
            LivenessClock::default(),
            IngestStatus::offline(),
        ),
    ] {
        for body in [
            r#"{"request_id":"a","application":"vpn","device":{"trusted":true,"connector_guid":"g1"}}"#,
            r#"{"request_id":"b","application":"vpn","device":{"trusted":true,"hostname":"nobody"}}"#,
            r#"{"request_id":"c","application":"vpn","device":{"trusted":false}}"#,
            r#"{"request_id":"d","application":"vpn","device":{"trusted":true,"os":"ios"}}"#,
            r#"{"request_id":"e","device":{}}"#,
            r#"{"request_id":"f","application":"wiki","user":"ann","device":{"trusted":true,"connector_guid":"g1"}}"#,
            r#"{"request_id":"g","application":"wiki","device":{"trusted":false}}"#,
        ] {
            let trustgate::decision::Answer::Reply(resp) = decider.decide(body.as_bytes()) else {
                panic!("{body}")
            };
            let response = serde_json::to_value(&resp).unwrap();
            assert_valid(&v, &response);
            if response["reason"] == "report_only" {
                report_only += 1;
            }
            for source in [AuditSource::Kafka, AuditSource::Http, AuditSource::Cli] {
                let (_, record) = audit_record(source, body.as_bytes(), &resp, &policies());
                assert_valid(&audit, &serde_json::from_slice(&record).unwrap());
            }
        }
    }
    assert_eq!(
        report_only, 4,
        "both report-only requests, under both deciders"
    );
}

#[test]
fn would_fields_come_only_with_report_only() {
    let v = schema("decision-response.v1.json");
    let base = json!({"request_id": "r", "decision": "allow", "reason": "report_only", "policy": "p",
        "device": {"connector_guid": null, "matched_by": "none", "ambiguous": false, "compromised": null,
            "state_as_of": null},
        "decided_at": "2026-01-14T09:12:00.000Z", "would_decide": "deny", "would_reason": "compromised"});
    assert_valid(&v, &base);
    let with = |edit: fn(&mut Value)| {
        let mut value = base.clone();
        edit(&mut value);
        value
    };
    for bad in [
        with(|b| b["decision"] = json!("deny")),
        with(|b| drop(b.as_object_mut().unwrap().remove("would_reason"))),
        with(|b| b["reason"] = json!("compromised")),
        with(|b| b["would_reason"] = json!("report_only")),
    ] {
        assert!(!v.is_valid(&bad), "{bad} should be invalid");
    }
}

#[test]
fn real_se_fixtures_validate() {
    let computer = schema("se-computer.v1.json");
    let page: Value = serde_json::from_str(&fixture("computers-page.json")).unwrap();
    for c in page["data"].as_array().unwrap() {
        assert_valid(&computer, c);
    }
    let event = schema("se-event.v1.json");
    for line in fixture("events-elastic.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        assert_valid(&event, &serde_json::from_str(line).unwrap());
    }
    let pair: Value =
        serde_json::from_str(&fixture("events-correlation-detection-id.json")).unwrap();
    for e in pair.as_array().unwrap() {
        assert_valid(&event, e);
    }
    assert!(
        !event.is_valid(&json!({"event_type_id": 1090519054})),
        "an event must name its device"
    );
}

#[test]
fn the_example_config_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("trustgate.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let loaded =
        trustgate::config::load_str(&text, "trustgate.example.toml", std::iter::empty()).unwrap();
    assert_eq!(loaded.settings.topics.events, "secure-endpoint.events");
}

/// `history --json` lines (issue #12 item 2): trustgate's own entries validate, events and
/// computers, every transition; entries that break the shape do not.
#[test]
fn history_entries_validate() {
    use trustgate::fold::FoldConfig;
    use trustgate::history::{timeline, FetchedRecord, TimelineContext};
    let v = schema("history-entry.v1.json");
    let record = |offset: i64, at: i64, kind: &str, value: String| FetchedRecord {
        partition: 0,
        offset,
        timestamp: at,
        kind: Some(kind.as_bytes().to_vec()),
        source: Some(b"poll".to_vec()),
        observed_at: None,
        value: Some(value.into_bytes()),
    };
    let at = 1_768_381_200_000i64;
    let records = vec![
        record(
            0,
            at,
            "computer",
            r#"{"connector_guid":"g1","operating_system":"Windows 11","is_compromised":false}"#
                .into(),
        ),
        record(
            1,
            at + 60_000,
            "event",
            format!(
                r#"{{"id":7,"event_type_id":1090519054,"event_type":"Threat Detected","connector_guid":"g1","date":"{}"}}"#,
                trustgate::time::format_millis(at + 60_000)
            ),
        ),
        record(
            2,
            at + 60_000 * 30,
            "computer",
            r#"{"connector_guid":"g1","hostname":"h"}"#.into(),
        ),
        record(
            3,
            at + 60_000 * 31,
            "computer",
            r#"{"connector_guid":"g1","is_compromised":false}"#.into(),
        ),
    ];
    let fold = FoldConfig::default();
    let mut transitions = Vec::new();
    for policy in policies().iter() {
        let ctx = TimelineContext {
            fold: &fold,
            policy,
            now: at + 3_600_000,
        };
        for entry in timeline("g1", &records, ctx).entries {
            let line = entry.to_json();
            assert_valid(&v, &line);
            transitions.push(line["transition"].clone());
        }
    }
    assert!(transitions.contains(&json!("compromised")));
    assert!(transitions.contains(&json!("resolved")));
    let good = json!({"time": "2026-01-14T09:00:00.000Z", "kind": "computer", "is_compromised": true,
        "compromised": true, "transition": "compromised", "decision": "deny", "reason": "compromised"});
    assert_valid(&v, &good);
    let with = |edit: fn(&mut Value)| {
        let mut value = good.clone();
        edit(&mut value);
        value
    };
    for bad in [
        with(|b| b["kind"] = json!("heartbeat")),
        with(|b| b["transition"] = json!("resolved")),
        with(|b| drop(b.as_object_mut().unwrap().remove("is_compromised"))),
        with(|b| b["kind"] = json!("event")),
        with(|b| b["decision"] = json!("maybe")),
    ] {
        assert!(!v.is_valid(&bad), "{bad} should be invalid");
    }
}

/// A decision at a past time (issue #12 item 3) carries `as_of` and still validates.
#[test]
fn a_decision_at_a_past_time_validates_with_as_of() {
    let v = schema("decision-response.v1.json");
    let mut dir = MemoryDirectory::default();
    dir.insert(DeviceState::new("g1"));
    let decider = Decider::new(
        policies(),
        MemoryDirectory::default(),
        600_000,
        LivenessClock::starting_at(Some(trustgate::time::now_millis())),
        IngestStatus::offline(),
    );
    let body = br#"{"request_id":"a","application":"vpn","at":"2026-01-14T09:00:00Z","device":{"trusted":true,"connector_guid":"g1"}}"#;
    let at = trustgate::history::requested_at(body).unwrap();
    let trustgate::decision::Answer::Reply(resp) = decider.decide_as_of(body, at, |_| dir.clone())
    else {
        panic!("a reply expected")
    };
    let response = serde_json::to_value(&resp).unwrap();
    assert_valid(&v, &response);
    assert_eq!(response["as_of"], "2026-01-14T09:00:00.000Z");
    assert_eq!(response["device"]["connector_guid"], "g1", "{response}");
    let mut bad = response.clone();
    bad["as_of"] = json!(5);
    assert!(!v.is_valid(&bad), "{bad} should be invalid");
}

/// `what-if --json` (issue #12 items 6 and 7): trustgate's own report validates, report-only
/// answers on either side included; reports that break the shape do not.
#[test]
fn what_if_reports_validate() {
    use trustgate::whatif::{Answered, Replayed, WhatIfReport};
    let v = schema("what-if.v1.json");
    let answer = |decision: &str, reason: &str, would: Option<(&str, &str)>| Answered {
        decision: decision.into(),
        reason: reason.into(),
        would_decide: would.map(|w| w.0.into()),
        would_reason: would.map(|w| w.1.into()),
    };
    let replayed = |id: &str, user: Option<&str>, before: Answered, after: Answered| Replayed {
        request_id: id.into(),
        application: "ledger".into(),
        user: user.map(str::to_owned),
        at: 1_768_381_200_000,
        before,
        after,
    };
    let report = WhatIfReport::compare(
        vec![
            replayed(
                "r1",
                Some("alice"),
                answer("allow", "report_only", Some(("deny", "compromised"))),
                answer("deny", "compromised", None),
            ),
            replayed(
                "r2",
                None,
                answer("deny", "compromised", None),
                answer("allow", "report_only", Some(("deny", "compromised"))),
            ),
            replayed(
                "r3",
                None,
                answer("allow", "trusted_not_compromised", None),
                answer("allow", "trusted_not_compromised", None),
            ),
        ],
        20,
    );
    let good = report.to_json();
    assert_eq!(good["changed"], 2);
    assert_valid(&v, &good);
    assert_valid(&v, &WhatIfReport::compare(Vec::new(), 20).to_json());
    let with = |edit: fn(&mut Value)| {
        let mut value = good.clone();
        edit(&mut value);
        value
    };
    for bad in [
        with(|b| drop(b.as_object_mut().unwrap().remove("requests"))),
        with(|b| b["by_application"]["ledger"] = json!("two")),
        with(|b| b["examples"][0]["after"]["decision"] = json!("maybe")),
        with(|b| {
            drop(
                b["examples"][0]["before"]
                    .as_object_mut()
                    .unwrap()
                    .remove("would_decide"),
            )
        }),
        with(|b| b["examples"][0]["after"]["would_decide"] = json!("deny")),
        with(|b| drop(b["examples"][1].as_object_mut().unwrap().remove("user"))),
    ] {
        assert!(!v.is_valid(&bad), "{bad} should be invalid");
    }
}
