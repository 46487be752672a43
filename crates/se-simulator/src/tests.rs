//! Scenario behaviour over time, and the simulated shapes against the recorded fixtures.

use super::catalog;
use super::generate::OsMix;
use super::scenario::{ScenarioConfig, ScenarioError, World};
use chrono::{DateTime, Duration, Utc};
use rstest::rstest;
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-14T10:00:00.250Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// A quiet tenant: nothing happens unless a test schedules it.
fn quiet(devices: usize) -> ScenarioConfig {
    ScenarioConfig {
        devices,
        initially_compromised: 0.0,
        compromise_every: None,
        resolve_after: None,
        noise_every: None,
        ..ScenarioConfig::default()
    }
}

fn events(w: &World) -> Vec<Value> {
    w.events()
        .all()
        .iter()
        .map(|e| serde_json::from_str(e.raw.get()).unwrap())
        .collect()
}

fn compromised(w: &World) -> BTreeSet<String> {
    w.computers()
        .iter()
        .filter(|c| c.is_compromised)
        .map(|c| c.connector_guid.clone())
        .collect()
}

fn snapshot(w: &World) -> (String, String) {
    let raw: Vec<&str> = w.events().all().iter().map(|e| e.raw.get()).collect();
    (
        serde_json::to_string(w.computers()).unwrap(),
        raw.join("\n"),
    )
}

#[test]
fn one_seed_gives_one_tenant() {
    let a = World::new(ScenarioConfig::default(), t0());
    let b = World::new(ScenarioConfig::default(), t0());
    assert_eq!(snapshot(&a), snapshot(&b));
    let other = ScenarioConfig {
        seed: 2,
        ..ScenarioConfig::default()
    };
    assert_ne!(snapshot(&a).0, snapshot(&World::new(other, t0())).0);
}

#[test]
fn advancing_in_steps_or_at_once_gives_the_same_tenant() {
    let mut stepped = World::new(ScenarioConfig::default(), t0());
    for s in (0..900).step_by(7).chain([900]) {
        stepped.advance_to(t0() + Duration::seconds(s));
    }
    let mut jumped = World::new(ScenarioConfig::default(), t0());
    let history = jumped.events().len();
    jumped.advance_to(t0() + Duration::seconds(900));
    // Equal because the schedules ran the same way, not because neither ran.
    assert!(jumped.events().len() > history + 15, "the schedules ran");
    assert!(snapshot(&stepped) == snapshot(&jumped));
}

#[rstest]
#[case(1.0, 0.0, 0.0, "Windows 10")]
#[case(0.0, 1.0, 0.0, "macOS 14.1")]
#[case(0.0, 0.0, 1.0, "iOS 16.0 (iPhone11,6)")]
#[case(0.0, 0.0, 0.0, "Ubuntu 20.04")]
fn os_mix_decides_operating_systems(
    #[case] windows: f64,
    #[case] macos: f64,
    #[case] ios: f64,
    #[case] os: &str,
) {
    let config = ScenarioConfig {
        os_mix: OsMix {
            windows,
            macos,
            ios,
        },
        ..quiet(20)
    };
    let w = World::new(config, t0());
    assert!(w.computers().iter().all(|c| c.operating_system == os));
    let windows_ids = w
        .computers()
        .iter()
        .filter(|c| c.windows_processor_id.is_some())
        .count();
    assert_eq!(windows_ids, if windows == 1.0 { 20 } else { 0 });
}

#[test]
fn default_mix_has_every_family_and_unique_identifiers() {
    let w = World::new(quiet(400), t0());
    let oses: HashSet<&str> = w
        .computers()
        .iter()
        .map(|c| c.operating_system.as_str())
        .collect();
    assert_eq!(oses.len(), 4, "{oses:?}");
    let hosts: HashSet<&str> = w.computers().iter().map(|c| c.hostname.as_str()).collect();
    let guids: HashSet<&str> = w
        .computers()
        .iter()
        .map(|c| c.connector_guid.as_str())
        .collect();
    assert_eq!((hosts.len(), guids.len()), (400, 400));
}

#[test]
fn compromises_and_resolutions_follow_the_clock() {
    let config = ScenarioConfig {
        compromise_every: Some(Duration::seconds(30)),
        resolve_after: Some(Duration::seconds(60)),
        ..quiet(10)
    };
    let mut w = World::new(config, t0());
    let history = w.events().len();
    w.advance_to(t0() + Duration::seconds(29));
    assert!(compromised(&w).is_empty());
    w.advance_to(t0() + Duration::seconds(30));
    let first = compromised(&w);
    assert_eq!(first.len(), 1);
    let detected = &events(&w)[0];
    assert_eq!(detected["event_type_id"], catalog::THREAT_DETECTED);
    assert_eq!(detected["date"], "2026-01-14T10:00:30+00:00");
    assert_eq!(detected["connector_guid"], first.first().unwrap().as_str());
    assert!(detected["detection_id"].is_string());
    w.advance_to(t0() + Duration::seconds(89));
    assert_eq!(compromised(&w).len(), 2, "compromised at 30 s and 60 s");
    w.advance_to(t0() + Duration::seconds(90));
    let now = compromised(&w);
    assert_eq!(
        now.len(),
        2,
        "the first resolved at 90 s, a third compromised"
    );
    assert!(now.is_disjoint(&first));
    assert!(w.events().len() >= history + 3);
}

#[test]
fn a_follow_up_shares_the_detection() {
    let mut w = World::new(quiet(3), t0());
    let guid = w.computers()[0].connector_guid.clone();
    // Enough compromises that some get a Threat Quarantined or Quarantine Failure.
    for k in 0..20 {
        w.compromise(&guid, t0() + Duration::seconds(k)).unwrap();
    }
    let evs = events(&w);
    let follow_ups: Vec<&Value> = evs
        .iter()
        .filter(|e| {
            e["event_type_id"] == catalog::THREAT_QUARANTINED
                || e["event_type_id"] == catalog::QUARANTINE_FAILURE
        })
        .collect();
    assert!(!follow_ups.is_empty());
    for f in follow_ups {
        let detection = evs
            .iter()
            .find(|e| {
                e["event_type_id"] == catalog::THREAT_DETECTED
                    && e["detection_id"] == f["detection_id"]
            })
            .expect("a Threat Detected with the same detection_id");
        assert_eq!(detection["timestamp"], f["timestamp"]);
        assert_eq!(
            detection["timestamp_nanoseconds"],
            f["timestamp_nanoseconds"]
        );
    }
}

#[test]
fn scripted_compromise_and_resolution() {
    let config = ScenarioConfig {
        resolve_after: Some(Duration::seconds(60)),
        ..quiet(5)
    };
    let mut w = World::new(config, t0());
    let guid = w.computers()[2].connector_guid.clone();
    let detection_id = w.compromise(&guid, t0() + Duration::seconds(1)).unwrap();
    assert!(w.computer(&guid).unwrap().is_compromised);
    assert_eq!(events(&w)[0]["detection_id"], detection_id.as_str());
    w.resolve(&guid.to_uppercase(), t0() + Duration::seconds(10))
        .unwrap();
    assert!(!w.computer(&guid).unwrap().is_compromised);
    // The first compromise's pending resolution (61 s) must not clear a later one early.
    w.compromise(&guid, t0() + Duration::seconds(20)).unwrap();
    w.advance_to(t0() + Duration::seconds(79));
    assert!(w.computer(&guid).unwrap().is_compromised);
    w.advance_to(t0() + Duration::seconds(80));
    assert!(!w.computer(&guid).unwrap().is_compromised);
    assert_eq!(
        w.compromise("nope", t0()),
        Err(ScenarioError::UnknownComputer("nope".to_string()))
    );
}

#[test]
fn a_late_upload_is_flagged_now_but_dated_earlier() {
    let mut w = World::new(quiet(2), t0());
    let guid = w.computers()[1].connector_guid.clone();
    let now = t0() + Duration::hours(3);
    w.compromise_dated(&guid, now, now - Duration::hours(2))
        .unwrap();
    let c = w.computer(&guid).unwrap();
    assert!(c.is_compromised);
    assert_eq!(c.last_seen, "2026-01-14T13:00:00Z");
    let detected: Vec<Value> = events(&w)
        .into_iter()
        .filter(|e| e["event_type_id"] == catalog::THREAT_DETECTED)
        .collect();
    assert_eq!(detected.len(), 1);
    assert_eq!(detected[0]["date"], "2026-01-14T11:00:00+00:00");
}

#[test]
fn history_has_account_events_shared_timestamps_and_big_unordered_ids() {
    let w = World::new(ScenarioConfig::default(), t0());
    let evs = events(&w);
    assert!(evs
        .iter()
        .all(|e| e["date"].as_str().unwrap() < "2026-01-14T10:00:01"));
    let account: Vec<&Value> = evs
        .iter()
        .filter(|e| e.get("connector_guid").is_none())
        .collect();
    assert!(!account.is_empty());
    assert!(account
        .iter()
        .all(|e| e["event_type_id"] == catalog::EMAIL_CONFIRMATION && e.get("computer").is_none()));
    let mut stamps = std::collections::HashMap::new();
    for e in &evs {
        *stamps
            .entry((e["timestamp"].as_i64(), e["timestamp_nanoseconds"].as_i64()))
            .or_insert(0) += 1;
    }
    assert!(
        stamps.values().any(|&n| n >= 5),
        "a burst shares one timestamp"
    );
    let ids: Vec<u64> = evs.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.iter().all(|&id| id > 1 << 53));
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    assert!(
        ids.windows(2).any(|p| p[0] < p[1]) && ids.windows(2).any(|p| p[0] > p[1]),
        "newest-first order is not id order"
    );
    let dates: Vec<&str> = evs.iter().map(|e| e["date"].as_str().unwrap()).collect();
    assert!(dates.windows(2).all(|p| p[0] >= p[1]), "newest first");
}

#[test]
fn initial_compromises_match_unresolved_detections() {
    let config = ScenarioConfig {
        initially_compromised: 0.5,
        resolve_after: None,
        ..quiet(40)
    };
    let w = World::new(config, t0());
    let detected: BTreeSet<String> = events(&w)
        .iter()
        .filter(|e| e["event_type_id"] == catalog::THREAT_DETECTED)
        .map(|e| e["connector_guid"].as_str().unwrap().to_string())
        .collect();
    assert!(!detected.is_empty());
    assert_eq!(compromised(&w), detected);
}

#[test]
fn bursts_share_one_timestamp() {
    let mut w = World::new(quiet(3), t0());
    let at = t0() + Duration::seconds(5);
    w.burst(7, catalog::SCAN_STARTED, at);
    let evs = events(&w);
    assert!(evs[..7]
        .iter()
        .all(|e| e["date"] == "2026-01-14T10:00:05+00:00"));
}

// ---- shapes against the recorded fixtures ----

/// Every key path in a JSON value: `computer.links.group`, `network_addresses[].mac`, …
fn key_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(path.clone());
                key_paths(child, &path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

fn paths(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    key_paths(v, "", &mut out);
    out
}

fn fixture_computers() -> Vec<Value> {
    let page: Value =
        serde_json::from_str(include_str!("../../../tests/fixtures/computers-page.json")).unwrap();
    page["data"].as_array().unwrap().clone()
}

fn fixture_events() -> Vec<Value> {
    let mut all: Vec<Value> = include_str!("../../../tests/fixtures/events-elastic.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pair: Vec<Value> = serde_json::from_str(include_str!(
        "../../../tests/fixtures/events-correlation-detection-id.json"
    ))
    .unwrap();
    all.extend(pair);
    let query: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/events-query-detection-sha256.json"
    ))
    .unwrap();
    all.extend(query["data"].as_array().unwrap().iter().cloned());
    all
}

#[rstest]
#[case("Windows 10", "Windows 10")]
#[case("iOS 16.0 (iPhone11,6)", "iOS 16.0 (iPhone11,6)")]
#[case("Ubuntu 20.04", "Ubuntu 20.04")]
// No macOS computer was recorded; a Mac carries a Windows computer's keys minus the processor id.
#[case("macOS 14.1", "Windows 10")]
fn computers_carry_the_recorded_key_set(#[case] simulated_os: &str, #[case] recorded_os: &str) {
    let recorded = fixture_computers()
        .into_iter()
        .find(|c| c["operating_system"] == recorded_os)
        .unwrap();
    let mut expected = paths(&recorded);
    if simulated_os != recorded_os {
        expected.remove("windows_processor_id");
    }
    let w = World::new(quiet(400), t0());
    let sim = w
        .computers()
        .iter()
        .find(|c| c.operating_system == simulated_os)
        .unwrap();
    assert_eq!(paths(&serde_json::to_value(sim).unwrap()), expected);
}

#[test]
fn events_carry_the_recorded_key_sets() {
    let recorded = fixture_events();
    let mut by_type: std::collections::BTreeMap<u64, BTreeSet<String>> = Default::default();
    let mut any_recorded = BTreeSet::new();
    for e in &recorded {
        let p = paths(e);
        any_recorded.extend(p.iter().cloned());
        by_type
            .entry(e["event_type_id"].as_u64().unwrap())
            .or_default()
            .extend(p);
    }
    let mut w = World::new(ScenarioConfig::default(), t0());
    let guid = w.computers()[0].connector_guid.clone();
    for k in 0..20 {
        w.compromise(&guid, t0() + Duration::seconds(k)).unwrap();
    }
    let mut seen_types = BTreeSet::new();
    for e in events(&w) {
        let p = paths(&e);
        let type_id = e["event_type_id"].as_u64().unwrap();
        if let Some(expected) = by_type.get(&type_id) {
            seen_types.insert(type_id);
            let missing: Vec<_> = expected.difference(&p).collect();
            assert!(missing.is_empty(), "type {type_id} lacks {missing:?}");
        }
        let invented: Vec<_> = p.difference(&any_recorded).collect();
        assert!(invented.is_empty(), "type {type_id} invents {invented:?}");
    }
    let compared: BTreeSet<u64> = [
        catalog::THREAT_DETECTED,
        catalog::THREAT_QUARANTINED,
        catalog::QUARANTINE_FAILURE,
        catalog::POLICY_UPDATE,
    ]
    .into();
    assert_eq!(
        seen_types, compared,
        "every recorded type the scenario emits was compared"
    );
}
