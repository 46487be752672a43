//! The decision hot path against a store holding 1,000,000 devices (see `common`): device
//! lookup by connector GUID, MAC and hostname in the store's decision index; policy evaluation
//! on the store and on the in-memory directory; and the whole in-process decision
//! (`Decider::decide` on request bytes: parse, lookup, policy, response).
//!
//! Criterion reports the typical (median) cost. The issue's target is a p99, which criterion
//! does not measure, so after the groups this bench times every single decision of a long
//! random run into a histogram and prints p50/p99/p99.9 per identifier kind, then the
//! process's resident memory (now and peak) and the decision index's size.
//!
//! ```sh
//! cargo bench --bench decide                                  # 1M devices
//! TRUSTGATE_BENCH_DEVICES=100000 cargo bench --bench decide -- --sample-size 10
//! ```

mod common;

use common::{fixture, mib, request_body, sample_indices, vm_rss_kib, By};
use criterion::{black_box, Criterion};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trustgate::config::load_str;
use trustgate::decision::{request, Decider};
use trustgate::liveness::LivenessClock;
use trustgate::policy::{evaluate, EvalContext, MemoryDirectory, Policies, Subject};
use trustgate::store::Store;

/// Distinct keys cycled through by each bench: enough to defeat any single hot page.
const SAMPLES: usize = 65_536;
/// Decisions timed one by one for the percentile report.
const TIMED: usize = 500_000;

fn policies() -> Policies {
    load_str("", "defaults", std::iter::empty())
        .expect("default configuration")
        .settings
        .policies
}

fn decider() -> Decider<Store> {
    Decider::new(
        Arc::new(policies()),
        fixture().store.clone(),
        600_000,
        LivenessClock::starting_at(Some(trustgate::time::now_millis())),
        trustgate::ingest::IngestStatus::offline(),
    )
}

/// The device count in bench names, with the hot set when lookups are narrowed to one, so
/// that runs over different key spaces keep separate criterion histories.
fn scope(devices: u64) -> String {
    match common::hot_devices(devices) {
        hot if hot < devices => format!("{devices}-hot{hot}"),
        _ => devices.to_string(),
    }
}

/// Cycles through prepared inputs without bounds checks dominating.
fn cycle<'a, T>(items: &'a [T]) -> impl FnMut() -> &'a T + 'a {
    let mut i = 0;
    move || {
        i = (i + 1) % items.len();
        &items[i]
    }
}

fn lookups(c: &mut Criterion) {
    let fx = fixture();
    let idx = sample_indices(SAMPLES, fx.devices);
    let guids: Vec<String> = idx.iter().map(|i| common::guid(*i)).collect();
    let macs: Vec<String> = idx.iter().map(|i| common::mac(*i)).collect();
    let hosts: Vec<String> = idx.iter().map(|i| common::hostname(*i)).collect();
    let mut g = c.benchmark_group(format!("lookup/{}", scope(fx.devices)));
    let mut next = cycle(&guids);
    g.bench_function("guid", |b| {
        b.iter(|| fx.store.device_summary(next()).unwrap().unwrap())
    });
    let mut next = cycle(&macs);
    g.bench_function("mac", |b| b.iter(|| fx.store.guids_by_mac(next()).unwrap()));
    let mut next = cycle(&hosts);
    g.bench_function("hostname", |b| {
        b.iter(|| fx.store.guids_by_hostname(next()).unwrap())
    });
    g.finish();
}

fn subjects(by: By, devices: u64) -> Vec<Subject> {
    sample_indices(SAMPLES, devices)
        .into_iter()
        .map(|i| {
            request::parse(&request_body(i, by))
                .expect("valid request")
                .subject
        })
        .collect()
}

fn policy(c: &mut Criterion) {
    let fx = fixture();
    let policies = policies();
    let ctx = EvalContext {
        grace_millis: 600_000,
        liveness_age: Some(Duration::from_secs(1)),
        ready: true,
    };
    let mut g = c.benchmark_group("policy_evaluate");
    // MemoryDirectory scans for index lookups, so it stays small: it measures the rules.
    let mut memory = MemoryDirectory::default();
    (0..1_000).for_each(|i| memory.insert(common::device(i)));
    let in_memory = subjects(By::Guid, 1_000);
    let mut next = cycle(&in_memory);
    g.bench_function("memory_1k/guid", |b| {
        b.iter(|| evaluate(&policies.global, next(), &memory, &ctx))
    });
    for by in By::ALL {
        let prepared = subjects(by, fx.devices);
        let mut next = cycle(&prepared);
        g.bench_function(format!("store_{}/{}", scope(fx.devices), by.name()), |b| {
            b.iter(|| evaluate(&policies.global, next(), &fx.store, &ctx))
        });
    }
    g.finish();
}

fn decide(c: &mut Criterion) {
    let fx = fixture();
    let decider = decider();
    let mut g = c.benchmark_group(format!("decide/{}", scope(fx.devices)));
    for by in By::ALL {
        let bodies: Vec<Vec<u8>> = sample_indices(SAMPLES, fx.devices)
            .into_iter()
            .map(|i| request_body(i, by))
            .collect();
        let mut next = cycle(&bodies);
        g.bench_function(by.name(), |b| b.iter(|| decider.decide(next())));
    }
    g.finish();
}

/// Times `TIMED` single decisions per identifier kind and prints their percentiles; then, on
/// the same bodies, the stages apart (the timer alone, `request::parse`, `evaluate` on the
/// parsed request against the store's index), so that a tail can be put on the stage it
/// comes from.
fn decide_percentiles() {
    let fx = fixture();
    let decider = decider();
    let policies = policies();
    let ctx = EvalContext {
        grace_millis: 600_000,
        liveness_age: Some(Duration::from_secs(1)),
        ready: true,
    };
    let timed = if fx.devices >= 100_000 { TIMED } else { 10_000 };
    for by in By::ALL {
        let bodies: Vec<Vec<u8>> = sample_indices(timed, fx.devices)
            .into_iter()
            .map(|i| request_body(i, by))
            .collect();
        let hist = time_each(&bodies, |body| {
            black_box(decider.decide(black_box(body)));
        });
        let us = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "decide/{}/percentiles/{} (lookups over {} devices): n={} p50={:.2}µs p99={:.2}µs p99.9={:.2}µs max={:.2}µs (target p99 <= 5µs, p99.9 <= 20µs)",
            fx.devices,
            by.name(),
            common::hot_devices(fx.devices),
            hist.len(),
            us(&hist, 0.5),
            us(&hist, 0.99),
            us(&hist, 0.999),
            hist.max() as f64 / 1000.0
        );
        let parsed: Vec<_> = bodies
            .iter()
            .map(|b| request::parse(b).expect("valid request"))
            .collect();
        let stages = [
            (
                "timer",
                time_each(&bodies, |body| {
                    black_box(body);
                }),
            ),
            (
                "parse",
                time_each(&bodies, |body| {
                    black_box(request::parse(black_box(body)).ok());
                }),
            ),
            ("evaluate", {
                let mut next = parsed.iter();
                time_each(&bodies, |_| {
                    let req = next.next().expect("one per body");
                    black_box(evaluate(
                        &policies.global,
                        black_box(&req.subject),
                        &fx.store,
                        &ctx,
                    ));
                })
            }),
        ];
        let line: Vec<String> = stages
            .iter()
            .map(|(name, h)| {
                format!(
                    "{name} p50={:.2} p99={:.2} p99.9={:.2}",
                    us(h, 0.5),
                    us(h, 0.99),
                    us(h, 0.999)
                )
            })
            .collect();
        println!(
            "decide/{}/stages/{} (µs, same bodies): {}",
            fx.devices,
            by.name(),
            line.join("; ")
        );
    }
}

/// Times `f` once per body, each call on its own, into a histogram of nanoseconds.
fn time_each(bodies: &[Vec<u8>], mut f: impl FnMut(&[u8])) -> hdrhistogram::Histogram<u64> {
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for body in bodies {
        let started = Instant::now();
        f(body);
        hist.record(started.elapsed().as_nanos() as u64)
            .expect("recordable");
    }
    hist
}

fn memory_report() {
    let fx = fixture();
    let (indexed, index_bytes) = fx.store.index_stats().expect("index stats");
    println!(
        "memory/{}: store {} ({:.1} s); decision index {} devices, ~{} MiB ({:.0} B/device); VmRSS before {} MiB, after {} MiB, now {} MiB; VmHWM (peak) {} MiB (sled cache {} MiB; target <= 300 MB once caught up)",
        fx.devices,
        if fx.reused { "opened, index rebuilt" } else { "built in this process" },
        fx.build_secs,
        indexed,
        index_bytes >> 20,
        index_bytes as f64 / indexed.max(1) as f64,
        mib(fx.rss_before_build_kib),
        mib(fx.rss_after_build_kib),
        mib(vm_rss_kib()),
        mib(common::vm_hwm_kib()),
        fx.cache_bytes >> 20,
    );
}

/// One pass over every key the groups will use, so that the first group does not pay for
/// filling sled's cache (with a hot set that fits, every group then runs cache-resident).
fn warm_cache() {
    let fx = fixture();
    for i in sample_indices(SAMPLES, fx.devices) {
        black_box(fx.store.device_summary(&common::guid(i)).unwrap());
        black_box(fx.store.guids_by_mac(&common::mac(i)).unwrap());
        black_box(fx.store.guids_by_hostname(&common::hostname(i)).unwrap());
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    warm_cache();
    lookups(&mut c);
    policy(&mut c);
    decide(&mut c);
    c.final_summary();
    decide_percentiles();
    memory_report();
}
