//! The pure timeline: a known history of one device folded step by step, against what each
//! record must do to the verdict and the decision.

use super::requested_at;
use super::timeline::{
    state_at, timeline, EntryDetail, FetchedRecord, TimelineContext, Transition,
};
use crate::fold::FoldConfig;
use crate::policy::{OnStale, Outcome, Policy, PolicyMode, Reason, UnknownDevice};
use crate::time::{format_millis, Millis};

const MINUTE: Millis = 60_000;
/// 2026-01-14T09:00:00Z.
const T0: Millis = 1_768_381_200_000;
const NOW: Millis = T0 + 24 * 60 * MINUTE;
const GUID: &str = "0d5e4f3a-2e3c-4b8e-9d1a-5c7b8e9f0a1b";

fn policy() -> Policy {
    Policy {
        name: "global".into(),
        require_trusted: true,
        block_compromised: true,
        unknown_device: UnknownDevice::Allow,
        stale_after: std::time::Duration::from_secs(900),
        on_stale: OnStale::LastKnown,
        mode: PolicyMode::Enforce,
    }
}

fn computer(offset: i64, at: Millis, compromised: bool, os: &str) -> FetchedRecord {
    FetchedRecord {
        partition: 0,
        offset,
        timestamp: at,
        kind: Some(b"computer".to_vec()),
        source: Some(b"poll".to_vec()),
        observed_at: Some(format_millis(at).into_bytes()),
        value: Some(
            format!(
                r#"{{"connector_guid":"{GUID}","hostname":"fin-lt-0042","operating_system":"{os}","is_compromised":{compromised}}}"#
            )
            .into_bytes(),
        ),
    }
}

/// An SE event dated `at`, on the topic at `at`.
fn event(offset: i64, at: Millis, id: u64, type_id: u64, name: &str) -> FetchedRecord {
    redelivered(offset, at, at, id, type_id, name)
}

/// An SE event dated `date`, on the topic at `at` (a redelivery, a late upload).
fn redelivered(
    offset: i64,
    at: Millis,
    date: Millis,
    id: u64,
    type_id: u64,
    name: &str,
) -> FetchedRecord {
    FetchedRecord {
        partition: 0,
        offset,
        timestamp: at,
        kind: Some(b"event".to_vec()),
        source: Some(b"amqp".to_vec()),
        observed_at: None,
        value: Some(
            format!(
                r#"{{"id":{id},"event_type_id":{type_id},"event_type":"{name}","detection":"W32.Trojan","detection_id":"{id}","date":"{}","connector_guid":"{GUID}"}}"#,
                format_millis(date)
            )
            .into_bytes(),
        ),
    }
}

const THREAT_DETECTED: u64 = 1090519054;
const THREAT_QUARANTINED: u64 = 553648143;

/// Clean, a quarantine (not compromise-class), a detection (compromised), the detection
/// redelivered at another offset, SE's own verdict, a clean observation within the grace (still
/// compromised: it cannot have seen the detection), one after it (resolved).
fn known_history() -> Vec<FetchedRecord> {
    vec![
        computer(10, T0, false, "Windows 11"),
        event(
            11,
            T0 + 5 * MINUTE,
            1,
            THREAT_QUARANTINED,
            "Threat Quarantined",
        ),
        event(12, T0 + 10 * MINUTE, 2, THREAT_DETECTED, "Threat Detected"),
        redelivered(
            20,
            T0 + 12 * MINUTE,
            T0 + 10 * MINUTE,
            2,
            THREAT_DETECTED,
            "Threat Detected",
        ),
        computer(21, T0 + 15 * MINUTE, true, "Windows 11"),
        computer(22, T0 + 16 * MINUTE, false, "Windows 11"),
        computer(23, T0 + 30 * MINUTE, false, "Windows 11"),
    ]
}

fn ctx<'a>(fold: &'a FoldConfig, policy: &'a Policy) -> TimelineContext<'a> {
    TimelineContext {
        fold,
        policy,
        now: NOW,
    }
}

#[test]
fn each_record_folds_in_time_order_with_its_transition_and_decision() {
    let fold = FoldConfig::default();
    let policy = policy();
    let mut records = known_history();
    // Read back in another order (another partition's records, a redelivery): time decides.
    records.reverse();
    records.push(records[3].clone());
    let t = timeline(GUID, &records, ctx(&fold, &policy));
    let got: Vec<(Millis, bool, Option<Transition>, Outcome, Reason)> = t
        .entries
        .iter()
        .map(|e| {
            (
                e.at,
                e.compromised,
                e.transition,
                e.decision.outcome,
                e.decision.reason,
            )
        })
        .collect();
    use Outcome::{Allow, Deny};
    use Reason::{Compromised, TrustedNotCompromised};
    assert_eq!(
        got,
        vec![
            (T0, false, None, Allow, TrustedNotCompromised),
            (T0 + 5 * MINUTE, false, None, Allow, TrustedNotCompromised),
            (
                T0 + 10 * MINUTE,
                true,
                Some(Transition::Compromised),
                Deny,
                Compromised
            ),
            (T0 + 12 * MINUTE, true, None, Deny, Compromised),
            (T0 + 15 * MINUTE, true, None, Deny, Compromised),
            (T0 + 16 * MINUTE, true, None, Deny, Compromised),
            (
                T0 + 30 * MINUTE,
                false,
                Some(Transition::Resolved),
                Allow,
                TrustedNotCompromised
            ),
        ]
    );
    assert_eq!(t.skipped, 0);
    assert!(!t.state.is_compromised(fold.grace_millis()));
    match &t.entries[2].detail {
        EntryDetail::Event {
            event_type_id,
            event_type,
            detection_id,
            compromise_class,
            ..
        } => {
            assert_eq!(*event_type_id, THREAT_DETECTED);
            assert_eq!(event_type.as_deref(), Some("Threat Detected"));
            assert_eq!(detection_id.as_deref(), Some("2"));
            assert!(compromise_class);
        }
        other => panic!("an event expected, got {other:?}"),
    }
    assert!(matches!(
        t.entries[1].detail,
        EntryDetail::Event {
            compromise_class: false,
            ..
        }
    ));
    assert_eq!(
        t.entries[4].detail,
        EntryDetail::Computer {
            is_compromised: Some(true),
            observed_at: T0 + 15 * MINUTE
        }
    );
}

#[test]
fn the_json_lines_carry_the_contract_fields() {
    let fold = FoldConfig::default();
    let policy = policy();
    let t = timeline(GUID, &known_history(), ctx(&fold, &policy));
    let lines: Vec<serde_json::Value> = t.entries.iter().map(|e| e.to_json()).collect();
    assert_eq!(lines[0]["kind"], "computer");
    assert_eq!(lines[0]["is_compromised"], false);
    assert!(lines[0].get("event_type_id").is_none());
    assert_eq!(lines[0]["transition"], serde_json::Value::Null);
    assert_eq!(lines[0]["time"], format_millis(T0));
    assert_eq!(lines[2]["kind"], "event");
    assert_eq!(lines[2]["event_type_id"], THREAT_DETECTED);
    assert_eq!(lines[2]["event_type"], "Threat Detected");
    assert!(lines[2].get("is_compromised").is_none());
    assert_eq!(lines[2]["transition"], "compromised");
    assert_eq!(lines[2]["decision"], "deny");
    assert_eq!(lines[2]["reason"], "compromised");
    assert_eq!(lines[6]["transition"], "resolved");
    assert_eq!(lines[6]["reason"], "trusted_not_compromised");
}

#[test]
fn another_devices_record_is_left_out() {
    let fold = FoldConfig::default();
    let policy = policy();
    let mut records = known_history();
    let mut stranger = computer(30, T0 + MINUTE, true, "Windows 11");
    stranger.value = Some(br#"{"connector_guid":"someone-else","is_compromised":true}"#.to_vec());
    records.push(stranger);
    let mut broken = computer(31, T0 + MINUTE, true, "Windows 11");
    broken.value = Some(b"not json".to_vec());
    records.push(broken);
    let t = timeline(GUID, &records, ctx(&fold, &policy));
    assert_eq!(t.skipped, 2);
    assert_eq!(t.entries.len(), known_history().len());
    assert!(
        !t.entries[1].compromised,
        "the stranger's verdict is not this device's"
    );
}

#[test]
fn decisions_follow_the_policy_and_the_platform() {
    let fold = FoldConfig::default();
    let off = Policy {
        name: "finance".into(),
        block_compromised: false,
        ..policy()
    };
    let t = timeline(GUID, &known_history(), ctx(&fold, &off));
    assert!(t
        .entries
        .iter()
        .all(|e| e.decision.reason == Reason::SeCheckOff));
    assert!(
        t.entries[2].compromised,
        "the verdict does not depend on the policy"
    );
    let report_only = Policy {
        mode: PolicyMode::ReportOnly,
        ..policy()
    };
    let t = timeline(GUID, &known_history(), ctx(&fold, &report_only));
    assert_eq!(t.entries[2].decision.outcome, Outcome::Allow);
    assert_eq!(
        t.entries[2].decision.would,
        Some((Outcome::Deny, Reason::Compromised))
    );
    // SE says Linux: the check does not apply, whatever the verdict.
    let linux: Vec<FetchedRecord> = known_history()
        .into_iter()
        .map(|mut r| {
            if let Some(v) = &r.value {
                r.value = Some(
                    String::from_utf8_lossy(v)
                        .replace("Windows 11", "Ubuntu Linux")
                        .into_bytes(),
                );
            }
            r
        })
        .collect();
    let t = timeline(GUID, &linux, ctx(&fold, &policy()));
    assert_eq!(t.entries[2].decision.reason, Reason::PlatformNotChecked);
    assert!(t.entries[2].compromised);
}

#[test]
fn the_state_at_a_time_folds_the_records_up_to_it() {
    let fold = FoldConfig::default();
    let grace = fold.grace_millis();
    let records = known_history();
    let at = |t: Millis| state_at(GUID, &records, t, &fold, NOW);
    assert!(at(T0 - 1).is_none(), "unknown before its first record");
    assert!(
        !at(T0).unwrap().is_compromised(grace),
        "bounds are inclusive"
    );
    assert!(!at(T0 + 9 * MINUTE).unwrap().is_compromised(grace));
    assert!(at(T0 + 10 * MINUTE).unwrap().is_compromised(grace));
    assert!(at(T0 + 20 * MINUTE).unwrap().is_compromised(grace));
    assert!(!at(T0 + 30 * MINUTE).unwrap().is_compromised(grace));
    assert!(!at(NOW).unwrap().is_compromised(grace));
}

#[test]
fn the_requested_time_is_read_from_the_body() {
    assert_eq!(requested_at(br#"{"request_id":"r"}"#), None);
    assert_eq!(requested_at(b"not json"), None);
    assert_eq!(
        requested_at(br#"{"at":"2026-01-14T09:00:00Z"}"#),
        Some(Ok(T0))
    );
    assert!(matches!(
        requested_at(br#"{"at":"yesterday"}"#),
        Some(Err(_))
    ));
    assert!(matches!(requested_at(br#"{"at":5}"#), Some(Err(_))));
}
