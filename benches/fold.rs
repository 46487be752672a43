//! Parsing and folding, per record: SE events and computers as they arrive on the events topic
//! (real shapes from `tests/fixtures`), decision requests, and applying a record to a device
//! state (`classify` + `DeviceState::apply`, the fold's whole per-record work before sled),
//! and writing an ingest chunk of new devices to sled (`Store::apply`), the rest of ingest's
//! per-record work.
//!
//! ```sh
//! cargo bench --bench fold
//! ```

mod common;

use common::{request_body, By, AT};
use criterion::{black_box, BatchSize, Criterion, Throughput};
use std::collections::BTreeMap;
use trustgate::decision::request;
use trustgate::fold::{classify, Classified, DeviceState, FoldConfig, RecordInput};
use trustgate::se::{Computer, Event};
use trustgate::store::{ChunkUpdate, Store, DEFAULT_CACHE_BYTES};

const EVENTS: &str = include_str!("../tests/fixtures/events-elastic.jsonl");
const COMPUTERS: &str = include_str!("../tests/fixtures/computers-page.json");

/// A compromise-class event from the fixtures (the fold's most expensive kind of record).
fn detection(config: &FoldConfig) -> String {
    EVENTS
        .lines()
        .find(|line| {
            serde_json::from_str::<Event>(line)
                .is_ok_and(|e| config.is_compromise_class(e.event_type_id))
        })
        .expect("a compromise-class event in the fixtures")
        .to_owned()
}

fn computer() -> String {
    let page: serde_json::Value = serde_json::from_str(COMPUTERS).expect("fixture page");
    page["data"][0].to_string()
}

fn parse(c: &mut Criterion) {
    let config = FoldConfig::default();
    let event = detection(&config);
    let computer = computer();
    let req = request_body(42, By::Guid);
    let mut g = c.benchmark_group("parse");
    g.bench_function("se_event", |b| {
        b.iter(|| serde_json::from_slice::<Event>(black_box(event.as_bytes())).unwrap())
    });
    g.bench_function("se_computer", |b| {
        b.iter(|| serde_json::from_slice::<Computer>(black_box(computer.as_bytes())).unwrap())
    });
    g.bench_function("decision_request", |b| {
        b.iter(|| request::parse(black_box(&req)).unwrap())
    });
    g.finish();
}

/// `classify` then `apply` onto an existing state, as ingest does for a known device.
fn apply(c: &mut Criterion) {
    let config = FoldConfig::default();
    let event = detection(&config);
    let computer = computer();
    let mut g = c.benchmark_group("apply");
    for (name, value, kind) in [
        ("se_event", event.as_bytes(), &b"event"[..]),
        ("se_computer", computer.as_bytes(), &b"computer"[..]),
    ] {
        let input = RecordInput {
            value: Some(value),
            kind: Some(kind),
            source: Some(b"poll"),
            observed_at: Some(b"2026-01-01T00:00:00Z"),
            timestamp: AT,
        };
        let Ok(Classified::Device(fact)) = classify(&input, &config, i64::MAX) else {
            panic!("fixture {name} classifies as a device record");
        };
        let mut known = DeviceState::new(&fact.connector_guid);
        known.apply(&fact);
        g.bench_function(format!("classify_apply/{name}"), |b| {
            b.iter_batched_ref(
                || known.clone(),
                |state| match classify(black_box(&input), &config, i64::MAX) {
                    Ok(Classified::Device(fact)) => state.apply(&fact),
                    other => panic!("unexpected {other:?}"),
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Ingest's largest chunk.
const CHUNK: u64 = 2_000;

/// One atomic chunk of `CHUNK` devices never seen before: states, index entries, offset.
fn chunk(first: u64) -> ChunkUpdate {
    ChunkUpdate {
        devices: (first..first + CHUNK)
            .map(|i| {
                let d = common::device(i);
                (d.connector_guid.clone(), (None, d))
            })
            .collect(),
        offsets: BTreeMap::from([(("bench.events".to_owned(), 0), (first + CHUNK) as i64)]),
        liveness: BTreeMap::from([("bench".to_owned(), AT)]),
        last_records: BTreeMap::new(),
        record_refs: BTreeMap::new(),
    }
}

/// `Store::apply` of a chunk of new devices to a store that grows as the bench runs.
fn store_apply(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("store"), DEFAULT_CACHE_BYTES).expect("store");
    let mut next = 0;
    let mut g = c.benchmark_group("store_apply");
    g.throughput(Throughput::Elements(CHUNK));
    g.bench_function("chunk_2000_new_devices", |b| {
        b.iter_batched(
            || {
                next += CHUNK;
                chunk(next - CHUNK)
            },
            |update| store.apply(&update).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    parse(&mut c);
    apply(&mut c);
    store_apply(&mut c);
    c.final_summary();
}
