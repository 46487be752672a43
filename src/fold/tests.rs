//! Property tests: the fold is idempotent and order-insensitive, and agrees with a simple model
//! of the compromise rule computed straight from the records.

use super::*;
use crate::time::Millis;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

const GRACE: i64 = 600_000;
const GUIDS: &[&str] = &["g1", "g2", "g3"];
const TYPES: &[u64] = &[1090519054, 553648143, 1107296274];

/// A record as published: JSON value, optional observed-at header, Kafka timestamp.
#[derive(Debug, Clone)]
struct Rec {
    value: String,
    observed_at: Option<String>,
    ts: Millis,
    /// For the model.
    truth: Truth,
}

#[derive(Debug, Clone)]
#[allow(dead_code)] // `host` documents the generated record; the model ignores it.
enum Truth {
    Computer {
        guid: String,
        flag: Option<bool>,
        observed: Option<Millis>,
        host: String,
    },
    Event {
        guid: String,
        identity: String,
        event_type_id: u64,
        date: Option<Millis>,
        host: String,
    },
}

fn iso(ms: Millis) -> String {
    crate::time::format_millis(ms)
}

fn computer() -> impl Strategy<Value = Rec> {
    (0..GUIDS.len(), proptest::option::of(any::<bool>()), proptest::option::of(0i64..4_000_000), 0i64..4_000_000, 0..3usize)
        .prop_map(|(g, flag, observed, ts, h)| {
            let guid = GUIDS[g].to_owned();
            let host = format!("host-{h}");
            let mut v = serde_json::json!({"connector_guid": guid, "hostname": host, "operating_system": "Windows 10"});
            if let Some(f) = flag {
                v["is_compromised"] = f.into();
            }
            Rec {
                value: v.to_string(),
                observed_at: observed.map(iso),
                ts,
                truth: Truth::Computer { guid, flag, observed, host },
            }
        })
}

/// An event with its identity fixed by (id, type); redeliveries come from `deliveries`.
fn event() -> impl Strategy<Value = (String, Vec<Rec>)> {
    (
        0..GUIDS.len(),
        proptest::option::of(0u64..6),
        0..TYPES.len(),
        proptest::option::of(0i64..4_000_000),
        0..3usize,
        proptest::collection::vec(0i64..4_000_000, 1..3),
    )
        .prop_map(|(g, id, t, date, h, stamps)| {
            let guid = GUIDS[g].to_owned();
            let host = format!("host-{h}");
            let event_type_id = TYPES[t];
            let mut v = serde_json::json!({"event_type_id": event_type_id, "connector_guid": guid,
                "computer": {"connector_guid": guid, "hostname": host}});
            // Identity: (id, type) when there is an id; otherwise the bytes themselves.
            let identity = match id {
                Some(id) => {
                    // The same SE event always has the same date and device.
                    v["id"] =
                        (6_000_000_000_000_000_000u64 + id * 1000 + event_type_id % 1000).into();
                    format!("{id}/{event_type_id}")
                }
                None => String::new(),
            };
            if let Some(d) = date {
                v["date"] = iso(d).into();
            }
            let value = v.to_string();
            let identity = if identity.is_empty() {
                value.clone()
            } else {
                identity
            };
            let recs = stamps
                .into_iter()
                .map(|ts| Rec {
                    value: value.clone(),
                    observed_at: None,
                    ts,
                    truth: Truth::Event {
                        guid: guid.clone(),
                        identity: identity.clone(),
                        event_type_id,
                        date,
                        host: host.clone(),
                    },
                })
                .collect();
            (identity, recs)
        })
}

/// Records where events with the same identity agree on their content.
fn records() -> impl Strategy<Value = Vec<Rec>> {
    (
        proptest::collection::vec(computer(), 0..8),
        proptest::collection::vec(event(), 0..8),
    )
        .prop_map(|(cs, es)| {
            let mut canonical: HashMap<String, String> = HashMap::new();
            let mut out = cs;
            for (identity, recs) in es {
                let first = canonical
                    .entry(identity)
                    .or_insert_with(|| recs[0].value.clone())
                    .clone();
                out.extend(recs.into_iter().filter(|r| r.value == first));
            }
            out
        })
}

fn fold(recs: &[Rec], cfg: &FoldConfig) -> BTreeMap<String, DeviceState> {
    let mut states: BTreeMap<String, DeviceState> = BTreeMap::new();
    for r in recs {
        let input = RecordInput {
            value: Some(r.value.as_bytes()),
            observed_at: r.observed_at.as_deref().map(str::as_bytes),
            timestamp: r.ts,
            ..Default::default()
        };
        if let Ok(Classified::Device(fact)) = classify(&input, cfg, Millis::MAX) {
            states
                .entry(fact.connector_guid.clone())
                .or_insert_with(|| DeviceState::new(&fact.connector_guid))
                .apply(&fact);
        }
    }
    states
}

/// The compromise rule computed directly from the records, with no fold.
fn model_compromised(recs: &[Rec], guid: &str, cfg: &FoldConfig) -> bool {
    let mut observation: Option<(Millis, bool)> = None;
    let mut events: HashMap<&str, (Option<Millis>, Millis)> = HashMap::new();
    for r in recs {
        match &r.truth {
            Truth::Computer {
                guid: g,
                flag: Some(flag),
                observed,
                ..
            } if g == guid => {
                let at = observed.map_or(r.ts, |o| o.min(r.ts));
                observation = observation.max(Some((at, *flag)));
            }
            Truth::Event {
                guid: g,
                identity,
                event_type_id,
                date,
                ..
            } if g == guid && cfg.is_compromise_class(*event_type_id) => {
                let e = events.entry(identity).or_insert((*date, r.ts));
                e.1 = e.1.min(r.ts);
            }
            _ => {}
        }
    }
    let times = events
        .values()
        .map(|(date, first)| date.map_or(*first, |d| d.max(*first)));
    match observation {
        Some((at, flag)) => flag || times.into_iter().any(|t| t > at - GRACE),
        None => !events.is_empty(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_order_any_repeats_same_state(recs in records(), seed in any::<u64>(), repeats in proptest::collection::vec(any::<prop::sample::Index>(), 0..10)) {
        let cfg = FoldConfig::default();
        let once = fold(&recs, &cfg);
        let mut shuffled = recs.clone();
        for idx in &repeats {
            if !recs.is_empty() {
                shuffled.push(recs[idx.index(recs.len())].clone());
            }
        }
        // A deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(once, fold(&shuffled, &cfg));
    }

    #[test]
    fn fold_agrees_with_the_model(recs in records()) {
        let cfg = FoldConfig::default();
        let states = fold(&recs, &cfg);
        for guid in GUIDS {
            let folded = states.get(*guid).is_some_and(|s| s.is_compromised(GRACE));
            prop_assert_eq!(folded, model_compromised(&recs, guid, &cfg), "guid {}", guid);
        }
    }
}

/// The late-detection scenario of the contract: a detection dated hours before a clean
/// observation but first seen after it compromises; a redelivery of an old, cleared one does not.
#[test]
fn late_detection_compromises_and_redelivered_old_one_does_not() {
    let cfg = FoldConfig::default();
    let hour = 3_600_000;
    let clean = Rec {
        value: r#"{"connector_guid":"g1","is_compromised":false}"#.into(),
        observed_at: None,
        ts: 10 * hour,
        truth: Truth::Computer {
            guid: "g1".into(),
            flag: Some(false),
            observed: None,
            host: String::new(),
        },
    };
    let late = |id: u64, ts| Rec {
        value: format!(
            r#"{{"id":{id},"event_type_id":1090519054,"connector_guid":"g1","date":"{}"}}"#,
            iso(7 * hour)
        ),
        observed_at: None,
        ts,
        truth: Truth::Event {
            guid: "g1".into(),
            identity: id.to_string(),
            event_type_id: 1090519054,
            date: Some(7 * hour),
            host: String::new(),
        },
    };
    // Uploaded at 10h30, after the clean observation at 10h: compromises.
    let states = fold(&[clean.clone(), late(1, 10 * hour + hour / 2)], &cfg);
    assert!(states["g1"].is_compromised(GRACE));
    // First seen at 7h, before the clean observation: cleared; its redelivery at 11h keeps 7h.
    let states = fold(&[late(2, 7 * hour), clean, late(2, 11 * hour)], &cfg);
    assert!(!states["g1"].is_compromised(GRACE));
}

#[test]
fn same_time_observations_compromised_wins() {
    let cfg = FoldConfig::default();
    let obs = |flag: bool| Rec {
        value: format!(r#"{{"connector_guid":"g1","is_compromised":{flag}}}"#),
        observed_at: None,
        ts: 5,
        truth: Truth::Computer {
            guid: "g1".into(),
            flag: Some(flag),
            observed: None,
            host: String::new(),
        },
    };
    assert!(fold(&[obs(true), obs(false)], &cfg)["g1"].is_compromised(GRACE));
    assert!(fold(&[obs(false), obs(true)], &cfg)["g1"].is_compromised(GRACE));
}

/// Issue #10 item 2: no time taken from a record is later than the applying instance's clock.
mod time_from_the_future {
    use super::*;

    const NOW: Millis = 1_790_000_000_000;
    const DAY: Millis = 86_400_000;

    fn apply(
        state: &mut DeviceState,
        value: &str,
        ts: Millis,
        observed_at: Option<&str>,
        now: Millis,
    ) {
        let input = RecordInput {
            value: Some(value.as_bytes()),
            observed_at: observed_at.map(str::as_bytes),
            timestamp: ts,
            ..Default::default()
        };
        match classify(&input, &FoldConfig::default(), now).unwrap() {
            Classified::Device(fact) => state.apply(&fact),
            other => panic!("device record expected, got {other:?}"),
        }
    }

    #[test]
    fn a_producer_clock_ahead_cannot_clear_a_detection_seen_by_others() {
        let mut state = DeviceState::new("g1");
        // Another source saw a detection, now.
        apply(
            &mut state,
            r#"{"id":1,"event_type_id":1090519054,"connector_guid":"G1"}"#,
            NOW,
            None,
            NOW,
        );
        // A producer whose clock is a day ahead writes a clean observation a second later.
        let ahead = crate::time::format_millis(NOW + DAY);
        apply(
            &mut state,
            r#"{"connector_guid":"G1","is_compromised":false}"#,
            NOW + DAY,
            Some(&ahead),
            NOW + 1_000,
        );
        let grace = FoldConfig::default().grace_millis();
        assert!(state.observation.unwrap().at <= NOW + 1_000);
        assert!(state.is_compromised(grace), "{state:?}");
        assert!(state.newest_record_at <= Some(NOW + 1_000));
    }

    #[test]
    fn event_dates_and_last_seen_ahead_are_as_of_now() {
        let mut state = DeviceState::new("g1");
        let ahead = crate::time::format_millis(NOW + 365 * DAY);
        apply(
            &mut state,
            &format!(
                r#"{{"id":1,"event_type_id":1090519054,"connector_guid":"G1","date":"{ahead}"}}"#
            ),
            NOW + 365 * DAY,
            None,
            NOW,
        );
        apply(
            &mut state,
            &format!(
                r#"{{"connector_guid":"G1","operating_system":"Windows 10","last_seen":"{ahead}"}}"#
            ),
            NOW,
            None,
            NOW,
        );
        let event = state.events.values().next().unwrap();
        assert_eq!((event.date, event.first_seen), (Some(NOW), NOW));
        assert_eq!(state.last_seen, Some(NOW));
    }
}

/// The bound on remembered events and the summary decisions read.
mod bounded {
    use super::*;
    use crate::fold::device::RecordIdentifiers;

    const OPERATING_SYSTEMS: &[&str] = &["Windows 10", "macOS 14.1", "Ubuntu 22.04", "", "x"];

    fn event_fact(guid: &str, id: u64, date: Option<Millis>, seen: Millis) -> Fact {
        Fact {
            connector_guid: guid.to_owned(),
            record_timestamp: seen,
            identifiers: RecordIdentifiers::default(),
            last_seen: None,
            observation: None,
            compromise_event: Some((
                EventKey::Id {
                    id,
                    event_type_id: 1090519054,
                },
                CompromiseEvent {
                    event_type_id: 1090519054,
                    detection_id: Some(format!("det-{id}")),
                    date,
                    first_seen: seen,
                },
            )),
        }
    }

    /// Any device state: up to a dozen events (so, under the bound) at times around an
    /// optional observation, and an operating system of any platform or none.
    fn state() -> impl Strategy<Value = DeviceState> {
        (
            proptest::option::of((0i64..2_000_000, any::<bool>())),
            proptest::collection::vec(
                (
                    0u64..20,
                    proptest::option::of(0i64..2_000_000),
                    0i64..2_000_000,
                    any::<bool>(),
                ),
                0..12,
            ),
            proptest::option::of(0..OPERATING_SYSTEMS.len()),
            proptest::option::of(0i64..2_000_000),
        )
            .prop_map(|(obs, events, os, newest)| {
                let mut d = DeviceState::new("g1");
                d.observation = obs.map(|(at, compromised)| Observation { at, compromised });
                for (id, date, seen, with_detection) in events {
                    let mut fact = event_fact("g1", id, date, seen);
                    if !with_detection {
                        if let Some((_, e)) = fact.compromise_event.as_mut() {
                            e.detection_id = None;
                        }
                    }
                    d.apply(&fact);
                }
                d.operating_system = os.map(|i| Stamped {
                    at: 1,
                    value: OPERATING_SYSTEMS[i].to_owned(),
                });
                d.newest_record_at = newest;
                d
            })
    }

    fn sorted(mut ids: Vec<Option<String>>) -> Vec<Option<String>> {
        ids.sort();
        ids
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The summary gives the full state's verdict, open events and platform, for any grace.
        #[test]
        fn summary_verdicts_equal_state_verdicts(d in state(), grace in 0i64..3_000_000) {
            let s = d.summary();
            prop_assert_eq!(s.is_compromised(grace), d.is_compromised(grace));
            let from_state = sorted(d.open_events(grace).map(|(_, e)| e.detection_id.clone()).collect());
            let from_summary = sorted(s.open_events(grace).map(|e| e.detection_id.clone()).collect());
            prop_assert_eq!(from_summary, from_state);
            let platform = d
                .operating_system
                .as_ref()
                .and_then(|os| crate::se::Platform::from_se_operating_system(&os.value));
            prop_assert_eq!(s.platform, platform);
            prop_assert_eq!(s.observation, d.observation);
            prop_assert_eq!(s.newest_record_at, d.newest_record_at);
            prop_assert_eq!(s.connector_guid, d.connector_guid);
            prop_assert!(s.events.windows(2).all(|w| w[0].time >= w[1].time), "newest first");
        }

        /// Past the bound the oldest events are forgotten, and the verdict is the one every
        /// event seen would give: a device compromised before pruning is compromised after.
        #[test]
        fn forgetting_old_events_never_clears_a_device(
            events in proptest::collection::vec((proptest::option::of(0i64..4_000_000), 0i64..4_000_000), 0..200),
            obs in proptest::option::of((0i64..4_000_000, any::<bool>())),
            grace in 0i64..1_000_000,
        ) {
            let mut d = DeviceState::new("g1");
            d.observation = obs.map(|(at, compromised)| Observation { at, compromised });
            let mut times = Vec::new();
            for (i, (date, seen)) in events.iter().enumerate() {
                d.apply(&event_fact("g1", i as u64, *date, *seen));
                times.push(date.map_or(*seen, |dt| dt.max(*seen)));
            }
            prop_assert!(d.events.len() <= MAX_EVENTS_PER_DEVICE);
            prop_assert_eq!(d.events.len(), times.len().min(MAX_EVENTS_PER_DEVICE));
            // Unbounded, the rule over every event seen.
            let unbounded = match d.observation {
                Some(o) => o.compromised || times.iter().any(|t| *t > o.at.saturating_sub(grace)),
                None => !times.is_empty(),
            };
            prop_assert_eq!(d.is_compromised(grace), unbounded);
            prop_assert_eq!(d.summary().is_compromised(grace), unbounded);
            // The kept ones are the newest.
            times.sort_unstable_by(|a, b| b.cmp(a));
            let mut kept: Vec<Millis> = d.events.values().map(|e| e.time()).collect();
            kept.sort_unstable_by(|a, b| b.cmp(a));
            prop_assert_eq!(&kept[..], &times[..kept.len()]);
        }
    }

    /// A kept event redelivered later keeps its first sighting: the bound does not let a
    /// redelivery re-date a detection.
    #[test]
    fn a_kept_event_redelivered_keeps_its_first_sighting() {
        let mut d = DeviceState::new("g1");
        for i in 0..(MAX_EVENTS_PER_DEVICE as u64 + 10) {
            d.apply(&event_fact("g1", i, None, 1_000 + i as i64));
        }
        let newest = MAX_EVENTS_PER_DEVICE as u64 + 9;
        d.apply(&event_fact("g1", newest, None, 9_999_999));
        let key = EventKey::Id {
            id: newest,
            event_type_id: 1090519054,
        };
        assert_eq!(d.events[&key].first_seen, 1_000 + newest as i64);
        assert_eq!(d.events.len(), MAX_EVENTS_PER_DEVICE);
        // The oldest ten were forgotten.
        assert!(d
            .events
            .keys()
            .all(|k| matches!(k, EventKey::Id { id, .. } if *id >= 10)));
    }
}
