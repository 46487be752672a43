//! The sled [`Store`] tested against a model: [`MemoryDirectory`] for device state, and plain
//! maps for offsets and feed times.
//!
//! Random sequences of ingest chunks go to a real store on disk exactly as ingest applies them
//! (each device's state before the chunk read from the store, the fold applied, one
//! [`Store::apply`] per chunk), and to the model (the fold applied to its own copy of each
//! device). The records' identifiers collide, change and move between devices: a device is
//! renamed, a MAC moves to another device, a record redelivered after a "crash" rewinds the
//! offsets. After every chunk, and after every reopening of the store, both must give the same
//! device for every GUID, the same GUIDs for every processor id, MAC and hostname query (the
//! short-name rule included), the same offsets per topic and the same feed times.
//!
//! Every shrunk failure is kept as a named regression test at the end of this file, with a
//! one-line postmortem.

use super::{ChunkUpdate, Store, DEFAULT_CACHE_BYTES};
use crate::fold::{classify, Classified, DeviceState, FoldConfig, RecordInput};
use crate::policy::{DeviceDirectory, MemoryDirectory};
use crate::time::Millis;
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::{BTreeMap, BTreeSet};

/// Raw identifiers as SE might send them; several normalise to the same value, so devices
/// share, swap and lose them as records arrive; some hold a NUL byte (see
/// [`store_bug_01_a_nul_in_an_identifier_leaks_into_index_lookups`]).
const GUIDS: &[&str] = &["g1", "G1", "g2", "g3"];
const HOSTS: &[&str] = &[
    "fin-lt-1",
    "FIN-LT-1.corp.example.com",
    "fin-lt-1.",
    "fin-lt-10",
    "fin-lt-1.corp",
    "fin-lt",
    " ",
    "fin-lt-1\0g2",
    "WS-Q-0200",
    "ws-q-0200.other.example.org",
];
const MACS: &[&str] = &[
    "22:88:fe:2c:89:5c",
    "22-88-FE-2C-89-5C",
    "02:00:00:00:00:01",
    "020000000002",
    "not-a-mac",
];
const PROCESSORS: &[&str] = &["abc", "ABC", "abcd", "ab", "ab\0g1"];
/// Two topics whose names are prefixes of each other, to keep their offsets apart.
const TOPICS: &[&str] = &["ev", "ev.x"];
const SOURCES: &[&str] = &["poll", "poll-b", "webhook"];

/// One events-topic record: where it was read from and what ingest sees of it.
#[derive(Debug, Clone)]
struct Rec {
    topic: &'static str,
    partition: i32,
    offset: i64,
    /// The `trustgate-kind` header.
    kind: &'static str,
    /// The `trustgate-source` header.
    source: &'static str,
    value: String,
    timestamp: Millis,
}

impl Rec {
    fn input(&self) -> RecordInput<'_> {
        RecordInput {
            value: Some(self.value.as_bytes()),
            kind: Some(self.kind.as_bytes()),
            source: Some(self.source.as_bytes()),
            observed_at: None,
            timestamp: self.timestamp,
        }
    }

    /// Where it is, as ingest notes it (the topic is implied: ingest reads one).
    fn position(&self) -> super::RecordRef {
        super::RecordRef {
            partition: self.partition,
            offset: self.offset,
            at: self.timestamp,
        }
    }

    /// The fact this record states about a device, if it is a usable device record.
    fn fact(&self) -> Option<crate::fold::Fact> {
        match classify(&self.input(), &FoldConfig::default(), Millis::MAX) {
            Ok(Classified::Device(fact)) => Some(fact),
            _ => None,
        }
    }
}

/// One step of a run.
#[derive(Debug, Clone)]
enum Op {
    /// Ingest reads and applies a chunk.
    Chunk(Vec<Rec>),
    /// An earlier chunk comes again (a redelivery after a crash before the commit).
    Redeliver(Index),
    /// The process stops (after its shutdown flush) and the store is opened again.
    Restart,
    /// The process dies after a chunk's sled batch and before the decision index took it;
    /// the store is opened again.
    CrashBeforeIndex(Vec<Rec>),
}

fn network_addresses(macs: &[usize]) -> serde_json::Value {
    macs.iter()
        .map(|m| serde_json::json!({ "mac": MACS[*m], "ip": "10.0.0.1" }))
        .collect()
}

/// A computer (inventory) record: `(kind, value)`.
fn computer() -> impl Strategy<Value = (&'static str, String)> {
    (
        0..GUIDS.len(),
        proptest::option::of(0..HOSTS.len()),
        proptest::collection::vec(0..MACS.len(), 0..3),
        proptest::option::of(0..PROCESSORS.len()),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(g, host, macs, processor, flag)| {
            let mut v = serde_json::json!({
                "connector_guid": GUIDS[g],
                "operating_system": "Windows 10",
                "network_addresses": network_addresses(&macs),
            });
            if let Some(h) = host {
                v["hostname"] = HOSTS[h].into();
            }
            if let Some(p) = processor {
                v["windows_processor_id"] = PROCESSORS[p].into();
            }
            if let Some(f) = flag {
                v["is_compromised"] = f.into();
            }
            ("computer", v.to_string())
        })
}

/// An event record, compromise-class or not, naming the device's hostname and MACs.
fn event() -> impl Strategy<Value = (&'static str, String)> {
    (
        0..GUIDS.len(),
        0u64..4,
        prop::sample::select(vec![1090519054u64, 553648143]),
        proptest::option::of(0..HOSTS.len()),
        proptest::collection::vec(0..MACS.len(), 0..3),
        proptest::option::of(0i64..30),
    )
        .prop_map(|(g, id, event_type_id, host, macs, date)| {
            let mut computer = serde_json::json!({
                "connector_guid": GUIDS[g],
                "network_addresses": network_addresses(&macs),
            });
            if let Some(h) = host {
                computer["hostname"] = HOSTS[h].into();
            }
            let mut v = serde_json::json!({
                "id": id,
                "event_type_id": event_type_id,
                "connector_guid": GUIDS[g],
                "computer": computer,
            });
            if let Some(d) = date {
                v["date"] = crate::time::format_millis(d).into();
            }
            ("event", v.to_string())
        })
}

fn heartbeat() -> impl Strategy<Value = (&'static str, String)> {
    Just(("heartbeat", r#"{"source":"poll"}"#.to_owned()))
}

/// Any record. Timestamps come from a small range so that identifiers tie and the fold's
/// tie-break is exercised as well as "newest wins".
fn record() -> impl Strategy<Value = Rec> {
    (
        prop_oneof![4 => computer(), 3 => event(), 1 => heartbeat()],
        0..TOPICS.len(),
        0i32..3,
        0i64..1_000,
        0..SOURCES.len(),
        0i64..30,
    )
        .prop_map(
            |((kind, value), topic, partition, offset, source, timestamp)| Rec {
                topic: TOPICS[topic],
                partition,
                offset,
                kind,
                source: SOURCES[source],
                value,
                timestamp,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::collection::vec(record(), 1..10).prop_map(Op::Chunk),
        1 => any::<Index>().prop_map(Op::Redeliver),
        1 => Just(Op::Restart),
        1 => proptest::collection::vec(record(), 1..10).prop_map(Op::CrashBeforeIndex),
    ]
}

/// What the store should hold: the fold of every record into the model directory, the last
/// offset stored per partition, the newest time per source, and where each device's records
/// are.
#[derive(Default)]
struct Model {
    devices: MemoryDirectory,
    offsets: BTreeMap<(String, i32), i64>,
    liveness: BTreeMap<String, Millis>,
    positions: BTreeMap<String, BTreeSet<(i32, i64)>>,
}

impl Model {
    fn apply(&mut self, chunk: &[Rec]) {
        for rec in chunk {
            if let Some(fact) = rec.fact() {
                self.devices
                    .devices
                    .entry(fact.connector_guid.clone())
                    .or_insert_with(|| DeviceState::new(&fact.connector_guid))
                    .apply(&fact);
                self.positions
                    .entry(fact.connector_guid.clone())
                    .or_default()
                    .insert((rec.partition, rec.offset));
            }
            let seen = self
                .liveness
                .entry(rec.source.to_owned())
                .or_insert(i64::MIN);
            *seen = (*seen).max(rec.timestamp);
            self.offsets
                .insert((rec.topic.to_owned(), rec.partition), rec.offset + 1);
        }
    }

    fn offsets(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.offsets
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|((_, p), o)| (*p, *o))
            .collect()
    }
}

/// The update ingest builds for a chunk (as `ingest::consumer` does): each device's state
/// before the chunk comes from the store, and every fact of the chunk is folded into it.
fn chunk_update(store: &Store, chunk: &[Rec]) -> ChunkUpdate {
    let mut update = ChunkUpdate::default();
    for rec in chunk {
        if let Some(fact) = rec.fact() {
            let (_, after) = update
                .devices
                .entry(fact.connector_guid.clone())
                .or_insert_with_key(|guid| {
                    let before = store.device(guid).unwrap();
                    let after = before.clone().unwrap_or_else(|| DeviceState::new(guid));
                    (before, after)
                });
            after.apply(&fact);
            update.add_record_ref(&fact.connector_guid, rec.position());
        }
        let seen = update
            .liveness
            .entry(rec.source.to_owned())
            .or_insert(rec.timestamp);
        *seen = (*seen).max(rec.timestamp);
        update
            .offsets
            .insert((rec.topic.to_owned(), rec.partition), rec.offset + 1);
    }
    update
}

/// A stored state without the record references it carries, which the model keeps apart.
fn without_refs(mut state: DeviceState) -> DeviceState {
    state.recent_refs.clear();
    state
}

/// Every value a request could look a device up by: the normalised forms of all generated
/// identifiers, and for hostnames every prefix of them too (`fin-lt-1` must find
/// `fin-lt-1.corp` but not `fin-lt-10`; `fin-lt-1.c` must find nothing).
struct Queries {
    guids: Vec<String>,
    processors: Vec<String>,
    macs: Vec<String>,
    hostnames: Vec<String>,
}

impl Queries {
    fn new() -> Queries {
        let norm = |raw: &[&str], f: fn(&str) -> Option<String>| -> BTreeSet<String> {
            raw.iter().filter_map(|r| f(r)).collect()
        };
        let mut guids = norm(GUIDS, crate::se::normalize_guid);
        guids.extend(["g".to_owned(), "g10".to_owned()]);
        let mut processors = norm(PROCESSORS, crate::se::normalize_processor_id);
        processors.insert("a".to_owned());
        let mut macs = norm(MACS, crate::se::normalize_mac);
        macs.insert("2288fe2c895".to_owned());
        // And every name followed by more labels: a request's FQDN must find a device SE knows
        // by its short name, and not one known under another domain.
        let hostnames = norm(HOSTS, crate::se::normalize_hostname)
            .iter()
            .flat_map(|h| {
                (1..=h.len()).map(move |n| h[..n].to_owned()).chain(
                    [".corp.example.com", ".corp", ".other.example.org"].map(|d| h.clone() + d),
                )
            })
            .chain(["corp".to_owned(), "example.com".to_owned()])
            .collect::<BTreeSet<_>>();
        Queries {
            guids: guids.into_iter().collect(),
            processors: processors.into_iter().collect(),
            macs: macs.into_iter().collect(),
            hostnames: hostnames.into_iter().collect(),
        }
    }
}

/// A store on disk, the model, and the chunks applied so far (for redeliveries).
struct Run {
    dir: tempfile::TempDir,
    store: Option<Store>,
    model: Model,
    history: Vec<Vec<Rec>>,
    queries: Queries,
}

impl Run {
    fn new() -> Run {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        Run {
            dir,
            store: Some(store),
            model: Model::default(),
            history: Vec::new(),
            queries: Queries::new(),
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("the store is open")
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Chunk(chunk) => self.apply(chunk.clone()),
            Op::Redeliver(i) if !self.history.is_empty() => {
                let chunk = i.get(&self.history).clone();
                self.apply(chunk);
            }
            Op::Redeliver(_) => {}
            Op::Restart => self.restart(),
            Op::CrashBeforeIndex(chunk) => {
                let update = chunk_update(self.store(), chunk);
                self.store().apply_sled_only_for_test(&update).unwrap();
                self.model.apply(chunk);
                self.history.push(chunk.clone());
                self.restart();
            }
        }
    }

    fn restart(&mut self) {
        // As `trustgate run` stops: flush, then let go of the store.
        self.store().flush_blocking().unwrap();
        self.store = None;
        self.store = Some(super::reopen_for_test(self.dir.path()));
    }

    fn apply(&mut self, chunk: Vec<Rec>) {
        let update = chunk_update(self.store(), &chunk);
        self.store().apply(&update).unwrap();
        self.model.apply(&chunk);
        self.history.push(chunk);
    }

    /// Every answer the store gives equals the model's.
    fn check(&self) -> Result<(), TestCaseError> {
        let (store, model, q) = (self.store(), &self.model.devices, &self.queries);
        for guid in &q.guids {
            prop_assert_eq!(
                store.device(guid).unwrap().map(without_refs),
                model.devices.get(guid).cloned()
            );
            let positions: BTreeSet<(i32, i64)> = store
                .record_refs(guid)
                .unwrap()
                .iter()
                .map(super::RecordRef::position)
                .collect();
            let modelled = self.model.positions.get(guid).cloned().unwrap_or_default();
            prop_assert_eq!(positions, modelled, "record references of {}", guid);
        }
        let scanned: Vec<DeviceState> = store
            .scan_devices()
            .map(|d| without_refs(d.unwrap()))
            .collect();
        let modelled: Vec<DeviceState> = model.devices.values().cloned().collect();
        prop_assert_eq!(&scanned, &modelled);
        prop_assert_eq!(store.device_count(), model.devices.len());
        for id in &q.processors {
            let got = DeviceDirectory::guids_by_processor_id(store, id).unwrap();
            prop_assert_eq!(
                got,
                model.guids_by_processor_id(id).unwrap(),
                "processor {}",
                id
            );
        }
        for mac in &q.macs {
            let got = DeviceDirectory::guids_by_mac(store, mac).unwrap();
            prop_assert_eq!(got, model.guids_by_mac(mac).unwrap(), "mac {}", mac);
        }
        for host in &q.hostnames {
            let got = DeviceDirectory::guids_by_hostname(store, host).unwrap();
            prop_assert_eq!(got, model.guids_by_hostname(host).unwrap(), "host {}", host);
        }
        for topic in TOPICS {
            let got: BTreeMap<i32, i64> = store.offsets(topic).unwrap().into_iter().collect();
            prop_assert_eq!(got, self.model.offsets(topic), "offsets of {}", topic);
        }
        prop_assert_eq!(store.liveness().unwrap(), self.model.liveness.clone());
        self.check_verdicts(&scanned)
    }

    /// Decisions from the store (its decision index) equal decisions from the in-memory
    /// directory built from what sled holds, for a request by each identifier.
    fn check_verdicts(&self, scanned: &[DeviceState]) -> Result<(), TestCaseError> {
        use crate::policy::{evaluate, EvalContext, OnStale, Policy, RequestIdentifiers, Subject};
        let mut from_sled = MemoryDirectory::default();
        scanned.iter().cloned().for_each(|d| from_sled.insert(d));
        let policy = Policy {
            name: "p".into(),
            require_trusted: true,
            block_compromised: true,
            unknown_device: crate::policy::UnknownDevice::Allow,
            stale_after: std::time::Duration::from_secs(900),
            on_stale: OnStale::LastKnown,
            mode: crate::policy::PolicyMode::Enforce,
        };
        let ctx = EvalContext {
            grace_millis: 10,
            liveness_age: Some(std::time::Duration::from_secs(1)),
            ready: true,
        };
        let q = &self.queries;
        let requests = q
            .guids
            .iter()
            .map(|g| RequestIdentifiers {
                connector_guid: Some(g.clone()),
                ..Default::default()
            })
            .chain(q.processors.iter().map(|p| RequestIdentifiers {
                windows_processor_id: Some(p.clone()),
                ..Default::default()
            }))
            .chain(q.macs.iter().map(|m| RequestIdentifiers {
                macs: vec![m.clone()],
                ..Default::default()
            }))
            .chain(q.hostnames.iter().map(|h| RequestIdentifiers {
                hostname: Some(h.clone()),
                ..Default::default()
            }));
        for ids in requests {
            let subject = Subject {
                trusted: true,
                os: None,
                ids,
            };
            let got = evaluate(&policy, &subject, self.store(), &ctx);
            let want = evaluate(&policy, &subject, &from_sled, &ctx);
            prop_assert_eq!(got, want, "{:?}", subject.ids);
        }
        Ok(())
    }
}

/// Applies `ops` to a fresh store and model, checking after every step and after a final
/// restart; returns the run for further questions.
fn run(ops: &[Op]) -> Result<Run, TestCaseError> {
    let mut run = Run::new();
    for op in ops {
        run.step(op);
        run.check()?;
    }
    run.step(&Op::Restart);
    run.check()?;
    Ok(run)
}

proptest! {
    // Each case opens a store on disk; a few dozen cases of up to a dozen steps cover the
    // small identifier pools well. Failures are kept as named tests below rather than in a
    // proptest-regressions file.
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..12)) {
        run(&ops)?;
    }
}

/// A one-record chunk for the named tests: a computer `value` at `ts`.
fn computer_chunk(value: &str, ts: Millis) -> Op {
    Op::Chunk(vec![Rec {
        topic: "ev",
        partition: 0,
        offset: ts,
        kind: "computer",
        source: "poll",
        value: value.to_owned(),
        timestamp: ts,
    }])
}

/// A computer record for the named tests: `guid` with `host` and `macs`, at `ts`.
fn computer_at(guid: &str, host: &str, macs: &[&str], ts: Millis) -> Op {
    let addresses: Vec<serde_json::Value> = macs
        .iter()
        .map(|m| serde_json::json!({ "mac": m }))
        .collect();
    let value = serde_json::json!({ "connector_guid": guid, "hostname": host,
        "operating_system": "Windows 10", "network_addresses": addresses });
    computer_chunk(&value.to_string(), ts)
}

/// A computer whose hostname and processor id hold a NUL byte.
const NUL_COMPUTER: &str =
    r#"{"connector_guid":"g1","hostname":"fin-lt-1\u0000x","windows_processor_id":"ab\u0000c"}"#;

/// The two identifier changes the indexes must follow, spelled out.
#[test]
fn a_renamed_device_and_a_moved_mac_leave_no_stale_index_entries() {
    let ops = [
        computer_at("g1", "fin-lt-1.corp", &["02:00:00:00:00:01"], 1),
        computer_at("g1", "fin-lt-2.corp", &["02:00:00:00:00:02"], 2),
        computer_at("g2", "fin-lt-1", &["02:00:00:00:00:01"], 3),
        Op::Restart,
    ];
    let run = run(&ops).unwrap();
    let store = run.store();
    assert_eq!(store.guids_by_hostname("fin-lt-1").unwrap(), ["g2"]);
    assert_eq!(store.guids_by_hostname("fin-lt-2").unwrap(), ["g1"]);
    assert_eq!(store.guids_by_mac("020000000001").unwrap(), ["g2"]);
    assert_eq!(store.guids_by_mac("020000000002").unwrap(), ["g1"]);
    assert_eq!(store.offsets("ev").unwrap()[&0], 4);
}

/// A late (redelivered or reordered) record with the old name changes neither state nor index.
#[test]
fn an_older_record_does_not_undo_a_rename() {
    let run = run(&[
        computer_at("g1", "new-name", &[], 5),
        computer_at("g1", "old-name", &[], 4),
        Op::Restart,
        computer_at("g1", "old-name", &[], 4),
    ])
    .unwrap();
    assert_eq!(run.store().guids_by_hostname("new-name").unwrap(), ["g1"]);
    assert!(run
        .store()
        .guids_by_hostname("old-name")
        .unwrap()
        .is_empty());
}

// Postmortem: NUL ended an index value early: `fin-lt-1\0x` answered `fin-lt-1` with `x\0g1`.
// Fixed by refusing control characters in identifiers (`se::ids`).
#[test]
fn store_bug_01_a_nul_in_an_identifier_leaks_into_index_lookups() {
    let mut run = Run::new();
    run.step(&computer_chunk(NUL_COMPUTER, 0));
    let (store, model) = (run.store(), &run.model.devices);
    assert_eq!(
        store.guids_by_hostname("fin-lt-1").unwrap(),
        model.guids_by_hostname("fin-lt-1").unwrap()
    );
    assert_eq!(
        store.guids_by_processor_id("ab").unwrap(),
        model.guids_by_processor_id("ab").unwrap()
    );
}

/// What keeps `store_bug_01` away from decisions: the stray GUID has no device.
#[test]
fn a_nul_in_an_identifier_does_not_change_a_match() {
    use crate::policy::{match_device, RequestIdentifiers};
    let mut run = Run::new();
    run.step(&computer_chunk(NUL_COMPUTER, 0));
    let ids = RequestIdentifiers {
        windows_processor_id: Some("ab".into()),
        hostname: Some("fin-lt-1".into()),
        ..RequestIdentifiers::default()
    };
    let from_store = match_device(run.store(), &ids).unwrap();
    let from_model = match_device(&run.model.devices, &ids).unwrap();
    assert_eq!(from_store.by, from_model.by);
    assert_eq!(from_store.devices, from_model.devices);
    assert!(from_store.devices.is_empty());
}

/// A rebuild starts from nothing: `clear_state` leaves no device, index entry, offset, last
/// record time or liveness behind (else the fold would run over the old state, or resume from
/// old offsets, or keep a recreated topic's instance fresh on the old topic's times).
#[test]
fn clear_state_leaves_nothing_folded_from_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
    let mut device = DeviceState::new("g1");
    device.hostname = Some(crate::fold::Stamped {
        at: 1,
        value: "host-1".into(),
    });
    let update = ChunkUpdate {
        devices: BTreeMap::from([("g1".to_owned(), (None, device))]),
        offsets: BTreeMap::from([(("events".to_owned(), 0), 7)]),
        liveness: BTreeMap::from([("poll".to_owned(), 5)]),
        last_records: BTreeMap::from([(("events".to_owned(), 0), 5)]),
        record_refs: BTreeMap::from([(
            "g1".to_owned(),
            vec![super::RecordRef {
                partition: 0,
                offset: 6,
                at: 5,
            }],
        )]),
    };
    store.apply(&update).unwrap();
    assert_eq!(store.last_records("events").unwrap().get(&0), Some(&5));
    assert!(store.clear_state().unwrap() > 0);
    assert!(store.device("g1").unwrap().is_none());
    assert!(store.guids_by_hostname("host-1").unwrap().is_empty());
    assert!(store.offsets("events").unwrap().is_empty());
    assert!(store.last_records("events").unwrap().is_empty());
    assert!(store.record_refs("g1").unwrap().is_empty());
    assert!(store.liveness().unwrap().is_empty());
}

/// Issue #10 item 3: a request's FQDN finds a device SE knows by its short name, and two FQDNs
/// with different domains do not match.
#[test]
fn hostnames_match_both_ways() {
    let run = run(&[
        computer_at("g1", "WS-Q-0200", &[], 1),
        computer_at("g2", "fin-lt-7.corp.example.com", &[], 2),
    ])
    .unwrap();
    let (store, model) = (run.store(), &run.model.devices);
    for (host, expected) in [
        ("ws-q-0200.corp.example.com", &["g1"][..]),
        ("ws-q-0200", &["g1"]),
        ("fin-lt-7", &["g2"]),
        ("fin-lt-7.corp", &["g2"]),
        ("fin-lt-7.corp.example.com", &["g2"]),
        ("fin-lt-7.other.example.org", &[]),
        ("ws-q-02001.corp.example.com", &[]),
    ] {
        assert_eq!(store.guids_by_hostname(host).unwrap(), expected, "{host}");
        assert_eq!(model.guids_by_hostname(host).unwrap(), expected, "{host}");
    }
}

/// Issue #10 item 2: a liveness time ahead of now (stored before record times were clamped) is
/// not read back, and the next real time replaces it.
#[test]
fn a_liveness_time_ahead_is_ignored_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
    let year_ahead = crate::time::now_millis() + 365 * 86_400_000;
    store.write_raw_for_test(&super::keys::liveness("poll"), &year_ahead.to_be_bytes());
    assert_eq!(store.newest_liveness().unwrap(), None);
    let mut update = ChunkUpdate::default();
    update.liveness.insert("poll".into(), 1_000);
    store.apply(&update).unwrap();
    assert_eq!(store.newest_liveness().unwrap(), Some(1_000));
}

/// A crash after a chunk's sled batch and before the decision index took it: until the
/// restart, decisions answer from the state before the chunk (never ahead of sled); the reopened
/// store's rebuilt index holds the chunk.
#[test]
fn a_crash_between_the_batch_and_the_index_is_repaired_by_reopening() {
    let mut run = run(&[computer_at("g1", "fin-lt-1", &["02:00:00:00:00:01"], 1)]).unwrap();
    let chunk = match computer_at("g2", "fin-lt-2", &["02:00:00:00:00:02"], 2) {
        Op::Chunk(chunk) => chunk,
        _ => unreachable!("computer_at makes a chunk"),
    };
    let update = chunk_update(run.store(), &chunk);
    run.store().apply_sled_only_for_test(&update).unwrap();
    assert!(run.store().device("g2").unwrap().is_some(), "sled holds it");
    assert_eq!(DeviceDirectory::device(run.store(), "g2").unwrap(), None);
    assert!(run
        .store()
        .guids_by_hostname("fin-lt-2")
        .unwrap()
        .is_empty());
    run.model.apply(&chunk);
    run.step(&Op::Restart);
    run.check().unwrap();
    assert_eq!(run.store().guids_by_hostname("fin-lt-2").unwrap(), ["g2"]);
    assert_eq!(run.store().guids_by_mac("020000000002").unwrap(), ["g2"]);
}

/// Issue #12 item 2: where each device's records are is kept per device, in the chunk's
/// batch; a redelivered record rewrites its own reference, and a device past
/// `MAX_REFS_PER_DEVICE` keeps the newest that many (by record time).
#[test]
fn record_refs_are_kept_per_device_idempotent_and_bounded() {
    use super::{RecordRef, MAX_REFS_PER_DEVICE};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
    let refs = |offsets: std::ops::Range<i64>| -> Vec<RecordRef> {
        offsets
            .map(|offset| RecordRef {
                partition: (offset % 2) as i32,
                offset,
                // Times do not follow offsets: pruning goes by time.
                at: 1_000_000 - offset,
            })
            .collect()
    };
    let apply = |guid: &str, refs: Vec<RecordRef>| {
        let update = ChunkUpdate {
            record_refs: BTreeMap::from([(guid.to_owned(), refs)]),
            ..Default::default()
        };
        store.apply(&update).unwrap();
    };
    apply("g1", refs(0..3));
    apply("g10", refs(3..5));
    // Redelivered: the same keys, nothing new.
    apply("g1", refs(1..3));
    let mut g1 = store.record_refs("g1").unwrap();
    g1.sort();
    let mut want = refs(0..3);
    want.sort();
    assert_eq!(g1, want, "g10's references are not g1's");
    assert_eq!(store.record_refs("g10").unwrap().len(), 2);
    assert!(store.record_refs("g2").unwrap().is_empty());

    // Past the bound (and its slack), the oldest by record time go: here the highest offsets.
    let total = MAX_REFS_PER_DEVICE as i64 + MAX_REFS_PER_DEVICE as i64 / 5;
    for start in (0..total).step_by(2_000) {
        apply("g2", refs(start..(start + 2_000).min(total)));
    }
    let kept = store.record_refs("g2").unwrap();
    assert!(kept.len() >= MAX_REFS_PER_DEVICE, "{}", kept.len());
    assert!(
        kept.len() <= MAX_REFS_PER_DEVICE + MAX_REFS_PER_DEVICE / 10,
        "{}",
        kept.len()
    );
    let oldest_kept = kept.iter().map(|r| r.at).min().unwrap();
    let dropped = total as usize - kept.len();
    assert_eq!(
        oldest_kept,
        1_000_000 - (total - 1 - dropped as i64),
        "the newest are kept"
    );
    // A device with few `Y` keys has no count key (no third key for it); it gets one when it reaches COUNTED_FROM, and the bound still holds
    // for a device that grows one small chunk at a time.
    let count_key = |guid: &str| {
        store
            .inner()
            .db()
            .unwrap()
            .get(super::keys::ref_count(guid))
            .unwrap()
    };
    assert_eq!(count_key("g1"), None);
    for start in (0..super::COUNTED_FROM as i64 - 1).step_by(7) {
        apply(
            "g3",
            refs(start..(start + 7).min(super::COUNTED_FROM as i64 - 1)),
        );
    }
    assert_eq!(count_key("g3"), None, "below COUNTED_FROM");
    assert_eq!(
        store.record_refs("g3").unwrap().len(),
        super::COUNTED_FROM - 1
    );
    let past = super::COUNTED_FROM as i64 - 1;
    apply("g3", refs(past..past + 1));
    assert!(count_key("g3").is_some(), "counted from COUNTED_FROM on");
    let small_chunks = MAX_REFS_PER_DEVICE as i64 + MAX_REFS_PER_DEVICE as i64 / 5;
    for start in (past + 1..small_chunks).step_by(500) {
        apply("g3", refs(start..(start + 500).min(small_chunks)));
    }
    let g3 = store.record_refs("g3").unwrap().len();
    assert!(
        (MAX_REFS_PER_DEVICE..=MAX_REFS_PER_DEVICE + MAX_REFS_PER_DEVICE / 10).contains(&g3),
        "{g3}"
    );
    assert!(store.clear_state().unwrap() > 0);
    assert!(store.record_refs("g1").unwrap().is_empty());
    assert!(store.record_refs("g2").unwrap().is_empty());
}

/// #11: a device's newest references live in its own value, so a record costs sled one key;
/// one past `RECENT_REFS` they all move to `Y` keys, the value carries none, and the device's
/// references read back whole either way: after redeliveries of carried and of moved records,
/// and after a reopen.
#[test]
fn recent_record_refs_ride_in_the_device_value_until_they_outgrow_it() {
    use super::{keys, RecordRef, RECENT_REFS};
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
    let at = |offset: i64| RecordRef {
        partition: 1,
        offset,
        at: 1_000 + offset,
    };
    // As ingest applies a chunk: the state before it from the store, each record's reference
    // added to the state after it.
    let apply = |store: &Store, offsets: std::ops::Range<i64>| {
        let before = store.device("g1").unwrap();
        let after = before.clone().unwrap_or_else(|| DeviceState::new("g1"));
        let mut update = ChunkUpdate::default();
        update.devices.insert("g1".to_owned(), (before, after));
        offsets.for_each(|offset| update.add_record_ref("g1", at(offset)));
        store.apply(&update).unwrap();
    };
    let y_keys = |store: &Store| {
        store
            .inner()
            .db()
            .unwrap()
            .scan_prefix(keys::record_ref_prefix("g1"))
            .count()
    };
    let offsets = |store: &Store| -> Vec<i64> {
        let refs = store.record_refs("g1").unwrap();
        refs.iter().map(|r| r.offset).collect()
    };
    let cap = RECENT_REFS as i64;

    apply(&store, 0..3);
    apply(&store, 3..cap);
    assert_eq!(y_keys(&store), 0, "up to RECENT_REFS, no key of their own");
    assert_eq!(
        store.device("g1").unwrap().unwrap().recent_refs.len(),
        RECENT_REFS
    );
    assert_eq!(offsets(&store), (0..cap).collect::<Vec<_>>());
    // A redelivered record the value carries is not carried twice.
    apply(&store, 2..4);
    assert_eq!(
        store.device("g1").unwrap().unwrap().recent_refs.len(),
        RECENT_REFS
    );

    apply(&store, cap..cap + 1);
    assert_eq!(
        y_keys(&store),
        RECENT_REFS + 1,
        "one more and they all move"
    );
    assert!(store.device("g1").unwrap().unwrap().recent_refs.is_empty());
    assert_eq!(offsets(&store), (0..=cap).collect::<Vec<_>>());

    // A redelivered record that moved is carried again, and read back once.
    apply(&store, 0..1);
    apply(&store, cap + 1..cap + 5);
    assert_eq!(store.device("g1").unwrap().unwrap().recent_refs.len(), 5);
    assert_eq!(offsets(&store), (0..cap + 5).collect::<Vec<_>>());
    assert_eq!(store.record_refs("g1").unwrap()[3], at(3), "times kept");

    store.flush_blocking().unwrap();
    drop(store);
    store = super::reopen_for_test(dir.path());
    assert_eq!(offsets(&store), (0..cap + 5).collect::<Vec<_>>());
    assert!(store.device_summary("g1").unwrap().is_some());
}

/// A device value written before #11 (version 1: no references in it) reads as carrying none,
/// beside its `Y` keys, and ingest's next write of it carries the new ones.
#[test]
fn a_version_1_device_value_reads_with_its_y_keys() {
    use super::{keys, RecordRef};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
    let mut state = DeviceState::new("g1");
    state.newest_record_at = Some(5);
    let mut v1 = vec![1u8];
    v1.extend(postcard::to_stdvec(&state).unwrap());
    store.write_raw_for_test(&keys::device("g1"), &v1);
    store.write_raw_for_test(&keys::record_ref("g1", 0, 4), &5i64.to_be_bytes());
    assert_eq!(store.device("g1").unwrap(), Some(state.clone()));
    let old = RecordRef {
        partition: 0,
        offset: 4,
        at: 5,
    };
    assert_eq!(store.record_refs("g1").unwrap(), [old]);

    let mut update = ChunkUpdate::default();
    update
        .devices
        .insert("g1".into(), (Some(state.clone()), state.clone()));
    let new = RecordRef {
        partition: 0,
        offset: 9,
        at: 6,
    };
    update.add_record_ref("g1", new);
    store.apply(&update).unwrap();
    assert_eq!(store.record_refs("g1").unwrap(), [old, new]);
    assert_eq!(store.device("g1").unwrap().unwrap().recent_refs, [new]);
}

/// References that do not decode make the device's value corrupt as a whole: ingest cannot
/// fold into it, so its decisions must deny `store_unavailable` (from the next open, as a value
/// damaged on disk is found), not answer from a state that no longer moves.
#[test]
fn a_device_value_with_unreadable_references_is_corrupt_for_decisions_too() {
    use super::keys;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
    let mut v2 = vec![2u8];
    v2.extend(postcard::to_stdvec(&DeviceState::new("g1")).unwrap());
    // Three references announced, none there.
    v2.push(3);
    store.write_raw_for_test(&keys::device("g1"), &v2);
    assert!(matches!(
        store.device("g1"),
        Err(super::StoreError::Corrupt { .. })
    ));
    store.flush_blocking().unwrap();
    drop(store);
    let store = super::reopen_for_test(dir.path());
    assert!(store.device_summary("g1").is_err());
    assert!(store.record_refs("g1").is_err());
}

/// One device `guid` named `host` at offset `offset` of "events" partition 0.
fn named_device(guid: &str, host: &str, offset: i64) -> ChunkUpdate {
    let mut device = DeviceState::new(guid);
    device.hostname = Some(crate::fold::Stamped {
        at: offset,
        value: host.into(),
    });
    ChunkUpdate {
        devices: BTreeMap::from([(guid.to_owned(), (None, device))]),
        offsets: BTreeMap::from([(("events".to_owned(), 0), offset)]),
        ..ChunkUpdate::default()
    }
}

/// Issue #12 item 1 (online replay): every clone of the handle (ingest's, the decider's, the
/// admin listener's) moves to the replacement store at once, for the index and sled alike.
#[test]
fn replacing_the_store_moves_every_clone_to_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let live = Store::open(&dir.path().join("live"), DEFAULT_CACHE_BYTES).unwrap();
    live.apply(&named_device("g-old", "old-host", 3)).unwrap();
    let decider_clone = live.clone();
    let rebuilt = Store::open(&dir.path().join("rebuilt"), DEFAULT_CACHE_BYTES).unwrap();
    rebuilt
        .apply(&named_device("g-new", "new-host", 9))
        .unwrap();

    live.replace_with(&rebuilt);
    for handle in [&live, &decider_clone] {
        assert!(handle.device_summary("g-old").unwrap().is_none());
        assert!(handle.device_summary("g-new").unwrap().is_some());
        assert_eq!(handle.guids_by_hostname("new-host").unwrap(), ["g-new"]);
        assert!(handle.device("g-new").unwrap().is_some());
        assert_eq!(handle.offsets("events").unwrap()[&0], 9);
    }
    // Writes through an old clone land in the new store, index included.
    decider_clone
        .apply(&named_device("g-later", "later-host", 10))
        .unwrap();
    assert_eq!(
        rebuilt.guids_by_hostname("later-host").unwrap(),
        ["g-later"]
    );
}

/// While the database is detached (its directory is being exchanged), decisions still answer
/// from the index as it was, and reads that need sled say so instead of answering "nothing".
#[test]
fn a_detached_store_answers_from_its_index_and_refuses_sled_reads() {
    let dir = tempfile::tempdir().unwrap();
    let live = Store::open(&dir.path().join("live"), DEFAULT_CACHE_BYTES).unwrap();
    live.apply(&named_device("g1", "host-1", 4)).unwrap();
    let clone = live.clone();

    let db = live.detach_db().expect("attached");
    assert!(live.detach_db().is_none(), "detached once");
    assert!(clone.device_summary("g1").unwrap().is_some());
    assert_eq!(clone.guids_by_hostname("host-1").unwrap(), ["g1"]);
    assert!(matches!(
        clone.device("g1"),
        Err(super::StoreError::Swapping)
    ));
    assert!(matches!(
        clone.offsets("events"),
        Err(super::StoreError::Swapping)
    ));
    assert!(matches!(
        clone.apply(&named_device("g2", "host-2", 5)),
        Err(super::StoreError::Swapping)
    ));
    assert!(clone.device_summary("g2").unwrap().is_none());
    assert!(matches!(
        clone.scan_devices().next(),
        Some(Err(super::StoreError::Swapping))
    ));
    // Once the last handle on the database is dropped the directory is free: it reopens.
    drop(db);
    let reopened = super::reopen_for_test(&dir.path().join("live"));
    assert!(reopened.device("g1").unwrap().is_some());
    clone.replace_with(&reopened);
    assert!(clone.device("g1").unwrap().is_some());
}

/// The device keyspace's ranges for a parallel rebuild cover every device key exactly once,
/// whatever the GUID looks like and however many threads there are.
#[test]
fn device_ranges_cover_every_device_key_once() {
    let guids: [&[u8]; 9] = [
        b"",
        b"0",
        b"00000000-0000-0000-0000-000000000000",
        b"7fffffff",
        b"8",
        b"ffffffff-ffff-ffff-ffff-ffffffffffff",
        b"g1",
        b"ZZ-upper",
        &[0xff, 0xfe],
    ];
    for parts in [0, 1, 2, 3, 7, 16, 17, 64] {
        let ranges = super::keys::device_ranges(parts);
        assert!(
            !ranges.is_empty() && ranges.len() <= 16,
            "{parts}: {ranges:?}"
        );
        for guid in guids {
            let mut key = vec![super::keys::DEVICE];
            key.extend_from_slice(guid);
            let holding = ranges
                .iter()
                .filter(|(start, end)| *start <= key && key < *end)
                .count();
            assert_eq!(holding, 1, "{parts} parts, key {key:?}: {ranges:?}");
        }
        // Nothing outside the device keyspace is scanned.
        assert_eq!(ranges[0].0, [super::keys::DEVICE]);
        assert_eq!(ranges[ranges.len() - 1].1, [super::keys::DEVICE + 1]);
    }
}

/// A rebuild at open spread over threads and batches (thousands of devices across every GUID
/// range, one corrupt value among them) gives the index the one-thread build gave: every
/// device answers by GUID, MAC and hostname as before the reopen, and the corrupt one denies.
#[test]
fn the_parallel_rebuild_at_open_indexes_every_device_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
    let devices = 3 * super::PREPARE_BATCH + 17;
    let guid = |i: usize| format!("{:08x}-{i}", (i as u64).wrapping_mul(0x9e37_79b9) as u32);
    let mut update = ChunkUpdate::default();
    for i in 0..devices {
        let mut device = DeviceState::new(&guid(i));
        device.hostname = Some(crate::fold::Stamped {
            at: 1,
            value: format!("host-{i}.example.com"),
        });
        device.macs = Some(crate::fold::Stamped {
            at: 1,
            value: vec![format!("02{i:010x}")],
        });
        update.devices.insert(guid(i), (None, device));
    }
    store.apply(&update).unwrap();
    store.write_raw_for_test(&super::keys::device("c0ffee-corrupt"), &[1, 0xff]);
    drop(store);
    let store = super::reopen_for_test(dir.path());
    let (indexed, _) = store.index_stats().unwrap();
    assert_eq!(indexed, devices);
    for i in 0..devices {
        let summary = store.device_summary(&guid(i)).unwrap().expect("indexed");
        assert_eq!(summary.connector_guid, guid(i));
    }
    assert!(store.device_summary("c0ffee-corrupt").is_err());
    // Lookups by other identifiers refuse while a corrupt device exists; once it is written
    // whole again they find each device exactly once.
    assert!(store.guids_by_mac("020000000000").is_err());
    let mut fixed = ChunkUpdate::default();
    fixed.devices.insert(
        "c0ffee-corrupt".into(),
        (None, DeviceState::new("c0ffee-corrupt")),
    );
    store.apply(&fixed).unwrap();
    for i in (0..devices).step_by(97) {
        assert_eq!(
            store.guids_by_mac(&format!("02{i:010x}")).unwrap(),
            [guid(i)]
        );
        assert_eq!(
            store
                .guids_by_hostname(&format!("host-{i}.example.com"))
                .unwrap(),
            [guid(i)]
        );
    }
}
