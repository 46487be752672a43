//! The decision index against a model: a plain map of device states, every lookup a linear scan
//! ([`MemoryDirectory`], the hostname rule by `hostnames_match`).
//!
//! Random operations insert devices, update them, rename them, move MACs and processor ids
//! between them, drop MACs and mark devices corrupt; after every operation every lookup by
//! every identifier (and every name that extends or shortens a known hostname) must give what
//! the scan gives.

use super::{DecisionIndex, IndexError, PreparedEntry};
use crate::fold::{CompromiseEvent, DeviceState, EventKey, Observation, Stamped};
use crate::policy::{DeviceDirectory, MemoryDirectory};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const GUIDS: &[&str] = &["g1", "g2", "g3", "g4", "g10"];
const HOSTS: &[&str] = &[
    "fin-lt-1",
    "fin-lt-1.corp",
    "fin-lt-1.corp.example.com",
    "fin-lt-10",
    "fin-lt",
    "ws-q-0200.other.example.org",
    "ws-q-0200",
    "",
];
const MACS: &[&str] = &[
    "020000000001",
    "020000000002",
    "2288fe2c895c",
    "0a0b0c0d0e0f",
];
const PROCESSORS: &[&str] = &["abc", "abcd", "ab"];
const OPERATING_SYSTEMS: &[&str] = &["Windows 10", "macOS 14", "Ubuntu"];

#[derive(Debug, Clone)]
enum Op {
    /// A device's whole state as ingest writes it (new, updated, renamed, MACs changed).
    Upsert(Box<DeviceState>),
    /// Its stored value turned out not to decode.
    Corrupt(usize),
}

fn state() -> impl Strategy<Value = DeviceState> {
    (
        0..GUIDS.len(),
        proptest::option::of(0..HOSTS.len()),
        proptest::collection::btree_set(0..MACS.len(), 0..3),
        proptest::option::of(0..PROCESSORS.len()),
        proptest::option::of(0..OPERATING_SYSTEMS.len()),
        proptest::option::of((-5i64..100, any::<bool>())),
        proptest::collection::vec((0u64..4, 0i64..100), 0..3),
        // Absent too: the entry keeps it as a presence bit beside the value.
        proptest::option::of(-5i64..100),
    )
        .prop_map(|(g, host, macs, processor, os, obs, events, newest)| {
            let stamped = |value: &str| Stamped {
                at: 1,
                value: value.to_owned(),
            };
            let mut d = DeviceState::new(GUIDS[g]);
            d.hostname = host.map(|h| stamped(HOSTS[h]));
            d.macs = (!macs.is_empty()).then(|| Stamped {
                at: 1,
                value: macs.iter().map(|m| MACS[*m].to_owned()).collect(),
            });
            d.windows_processor_id = processor.map(|p| stamped(PROCESSORS[p]));
            d.operating_system = os.map(|o| stamped(OPERATING_SYSTEMS[o]));
            d.observation = obs.map(|(at, compromised)| Observation { at, compromised });
            for (id, at) in events {
                d.events.insert(
                    EventKey::Id {
                        id,
                        event_type_id: 1090519054,
                    },
                    CompromiseEvent {
                        event_type_id: 1090519054,
                        detection_id: Some(format!("det-{id}")),
                        date: Some(at),
                        first_seen: at,
                    },
                );
            }
            d.newest_record_at = newest;
            d
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => state().prop_map(|d| Op::Upsert(Box::new(d))),
        1 => (0..GUIDS.len()).prop_map(Op::Corrupt),
    ]
}

/// Every value worth asking: each identifier, each hostname's prefixes and extensions.
fn hostname_queries() -> BTreeSet<String> {
    HOSTS
        .iter()
        .flat_map(|h| {
            (1..=h.len()).map(move |n| h[..n].to_owned()).chain(
                [".corp", ".corp.example.com", ".other.example.org"].map(|d| h.to_string() + d),
            )
        })
        .chain([
            "FIN-LT-1".to_owned(),
            "Fin-Lt-1.CORP".to_owned(),
            "corp".to_owned(),
        ])
        .collect()
}

#[derive(Default)]
struct Model {
    devices: MemoryDirectory,
    corrupt: BTreeMap<String, String>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Upsert(d) => {
                self.corrupt.remove(&d.connector_guid);
                self.devices.insert((**d).clone());
            }
            Op::Corrupt(g) => {
                self.devices.devices.remove(GUIDS[*g]);
                self.corrupt
                    .insert(GUIDS[*g].to_owned(), format!("bad {}", GUIDS[*g]));
            }
        }
    }
}

fn apply(index: &mut DecisionIndex, op: &Op) {
    match op {
        Op::Upsert(d) => index.upsert(d),
        Op::Corrupt(g) => index.mark_corrupt(GUIDS[*g], format!("bad {}", GUIDS[*g])),
    }
}

/// Every lookup of the index equals the model's scan; with a corrupt device, every lookup but
/// by a healthy GUID fails.
fn check(index: &DecisionIndex, model: &Model) -> Result<(), TestCaseError> {
    let dir = &model.devices;
    for guid in GUIDS.iter().chain(&["g", "g100"]) {
        match model.corrupt.get(*guid) {
            Some(reason) => prop_assert_eq!(
                index.device(guid),
                Err(IndexError::CorruptDevice {
                    guid: (*guid).to_owned(),
                    reason: reason.clone()
                })
            ),
            None => prop_assert_eq!(index.device(guid).unwrap(), dir.device(guid).unwrap()),
        }
        prop_assert_eq!(
            index.knows(guid),
            dir.devices.contains_key(*guid) || model.corrupt.contains_key(*guid)
        );
    }
    prop_assert_eq!(index.len(), dir.devices.len());
    let searchable = model.corrupt.is_empty();
    for id in PROCESSORS.iter().chain(&["a", "abcde"]) {
        let got = index.guids_by_processor_id(id);
        if searchable {
            prop_assert_eq!(
                got.unwrap(),
                dir.guids_by_processor_id(id).unwrap(),
                "processor {}",
                id
            );
        } else {
            let corrupt = matches!(got, Err(IndexError::CorruptDevicesUnsearchable { .. }));
            prop_assert!(corrupt);
        }
    }
    for mac in MACS.iter().chain(&["02000000000", "ffffffffffff"]) {
        let got = index.guids_by_mac(mac);
        if searchable {
            prop_assert_eq!(got.unwrap(), dir.guids_by_mac(mac).unwrap(), "mac {}", mac);
        } else {
            prop_assert!(got.is_err());
        }
    }
    for host in hostname_queries() {
        let got = index.guids_by_hostname(&host);
        if searchable {
            prop_assert_eq!(
                got.unwrap(),
                dir.guids_by_hostname(&host).unwrap(),
                "host {}",
                host
            );
        } else {
            prop_assert!(got.is_err());
        }
    }
    check_devices_by(index, model)
}

/// The one-call lookups decisions use (summaries by processor id, by any of several MACs, by
/// hostname) equal the model's GUID lookups followed by each device by GUID.
fn check_devices_by(index: &DecisionIndex, model: &Model) -> Result<(), TestCaseError> {
    let dir = &model.devices;
    let searchable = model.corrupt.is_empty();
    for id in PROCESSORS.iter().chain(&["a"]) {
        match index.devices_by_processor_id(id) {
            Ok(got) => {
                prop_assert!(searchable);
                prop_assert_eq!(
                    got,
                    dir.devices_by_processor_id(id).unwrap(),
                    "processor {}",
                    id
                );
            }
            Err(e) => prop_assert!(!searchable, "{}", e),
        }
    }
    let mac_sets: Vec<Vec<String>> = (0..MACS.len())
        .map(|i| vec![MACS[i].to_owned()])
        .chain([
            MACS.iter().map(|m| (*m).to_owned()).collect(),
            vec!["ffffffffffff".into()],
        ])
        .collect();
    for macs in &mac_sets {
        match index.devices_by_macs(macs) {
            Ok(got) => {
                prop_assert!(searchable);
                prop_assert_eq!(got, dir.devices_by_macs(macs).unwrap(), "macs {:?}", macs);
            }
            Err(e) => prop_assert!(!searchable, "{}", e),
        }
    }
    for host in hostname_queries() {
        match index.devices_by_hostname(&host) {
            Ok(got) => {
                prop_assert!(searchable);
                prop_assert_eq!(
                    got,
                    dir.devices_by_hostname(&host).unwrap(),
                    "host {}",
                    host
                );
            }
            Err(e) => prop_assert!(!searchable, "{}", e),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn index_agrees_with_a_linear_scan(ops in proptest::collection::vec(op(), 1..30)) {
        let mut index = DecisionIndex::default();
        let mut model = Model::default();
        for op in &ops {
            apply(&mut index, op);
            model.apply(op);
            check(&index, &model)?;
        }
    }

    /// Building the index in one go from prepared entries (as the store does at open, tables
    /// sized once) gives the same answers as building it by updates, and keeps answering alike
    /// as updates follow (its tables, sized exactly, then grow).
    #[test]
    fn a_rebuilt_index_answers_alike(
        ops in proptest::collection::vec(op(), 1..30),
        later in proptest::collection::vec(op(), 0..30),
    ) {
        let mut model = Model::default();
        ops.iter().for_each(|op| model.apply(op));
        let mut rebuilt = DecisionIndex::from_prepared(
            model.devices.devices.values().map(PreparedEntry::new).collect(),
        );
        for (guid, reason) in &model.corrupt {
            rebuilt.mark_corrupt(guid, reason.clone());
        }
        check(&rebuilt, &model)?;
        for op in &later {
            apply(&mut rebuilt, op);
            model.apply(op);
            check(&rebuilt, &model)?;
        }
    }
}

/// Growing the tables recomputes each key from its entry: thousands of devices, then every one
/// found by each identifier.
#[test]
fn lookups_survive_table_growth() {
    let mut index = DecisionIndex::default();
    let n = 5_000u64;
    for i in 0..n {
        let mut d = DeviceState::new(&format!("guid-{i}"));
        d.hostname = Some(Stamped {
            at: 1,
            value: format!("host-{i}.corp.example.com"),
        });
        d.macs = Some(Stamped {
            at: 1,
            value: vec![format!("02{i:010x}"), format!("06{i:010x}")],
        });
        d.windows_processor_id = Some(Stamped {
            at: 1,
            value: format!("{i:016x}"),
        });
        index.upsert(&d);
    }
    assert_eq!(index.len(), n as usize);
    for i in 0..n {
        let guid = format!("guid-{i}");
        assert_eq!(index.device(&guid).unwrap().unwrap().connector_guid, guid);
        assert_eq!(
            index.guids_by_mac(&format!("06{i:010x}")).unwrap(),
            std::slice::from_ref(&guid)
        );
        assert_eq!(
            index.guids_by_processor_id(&format!("{i:016x}")).unwrap(),
            std::slice::from_ref(&guid)
        );
        assert_eq!(
            index.guids_by_hostname(&format!("host-{i}")).unwrap(),
            std::slice::from_ref(&guid)
        );
        assert_eq!(
            index
                .guids_by_hostname(&format!("host-{i}.corp.example.com.x"))
                .unwrap(),
            [guid]
        );
        assert!(index
            .guids_by_hostname(&format!("host-{i}.other"))
            .unwrap()
            .is_empty());
    }
    assert!(index.size_bytes() > 0);
}
