//! Parsing and folding, per record: SE events and computers as they arrive on the events topic
//! (real shapes from `tests/fixtures`), decision requests, and applying a record to a device
//! state (`classify` + `DeviceState::apply`, the fold's whole per-record work before sled).
//!
//! ```sh
//! cargo bench --bench fold
//! ```

mod common;

use common::{request_body, By, AT};
use criterion::{black_box, BatchSize, Criterion};
use trustgate::decision::request;
use trustgate::fold::{classify, Classified, DeviceState, FoldConfig, RecordInput};
use trustgate::se::{Computer, Event};

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
        let Ok(Classified::Device(fact)) = classify(&input, &config) else {
            panic!("fixture {name} classifies as a device record");
        };
        let mut known = DeviceState::new(&fact.connector_guid);
        known.apply(&fact);
        g.bench_function(format!("classify_apply/{name}"), |b| {
            b.iter_batched_ref(
                || known.clone(),
                |state| match classify(black_box(&input), &config) {
                    Ok(Classified::Device(fact)) => state.apply(&fact),
                    other => panic!("unexpected {other:?}"),
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    parse(&mut c);
    apply(&mut c);
    c.final_summary();
}
