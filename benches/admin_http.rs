//! `POST /v1/decide` on the admin listener, for callers that cannot speak Kafka: one HTTP/1.1
//! round trip on a kept-alive loopback connection, against the same listener's `GET /healthz`
//! as the floor (the HTTP cost with no decision behind it). The store holds 10,000 devices:
//! the in-process decision cost at 1M devices is `benches/decide.rs`'s subject.
//!
//! ```sh
//! cargo bench --bench admin_http
//! ```

mod common;

use common::{device, request_body, By, AT};
use criterion::Criterion;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use trustgate::admin::{serve, AdminAccess, AdminLimits, AdminState, ComponentHealth};
use trustgate::decision::Decider;
use trustgate::ingest::IngestStatus;
use trustgate::liveness::LivenessClock;
use trustgate::store::{ChunkUpdate, Store};

const DEVICES: u64 = 10_000;

fn store(dir: &std::path::Path) -> Store {
    let store = Store::open(dir, 64 * 1024 * 1024).expect("store");
    let mut update = ChunkUpdate::default();
    for i in 0..DEVICES {
        let d = device(i);
        update.devices.insert(d.connector_guid.clone(), (None, d));
    }
    store.apply(&update).expect("fill store");
    store
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let settings = trustgate::config::load_str("", "defaults", std::iter::empty())
        .unwrap()
        .settings;
    let liveness = LivenessClock::starting_at(Some(AT));
    let replay = trustgate::replay::OnlineReplay::new(
        &settings,
        store.clone(),
        IngestStatus::default(),
        CancellationToken::new(),
    );
    let state = AdminState {
        decider: Decider::new(
            Arc::new(settings.policies.clone()),
            store.clone(),
            settings.fold.grace_millis(),
            liveness.clone(),
            trustgate::ingest::IngestStatus::offline(),
        ),
        audit: trustgate::audit::AuditSink::disabled(),
        store,
        ingest: IngestStatus::default(),
        grace_millis: settings.fold.grace_millis(),
        liveness,
        stale_after: Duration::from_secs(900),
        metrics: trustgate::telemetry::metrics::install(),
        health: ComponentHealth::default(),
        history: trustgate::history::HistorySource::new(&settings),
        replay,
        whatif: trustgate::whatif::WhatIfContext::new(&settings),
    };
    let shutdown = CancellationToken::new();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let access = AdminAccess::new(None, AdminLimits::default());
    rt.spawn(serve(listener, state, access, shutdown.clone()));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let decide_url = format!("http://{addr}/v1/decide");
    let health_url = format!("http://{addr}/healthz");
    let bodies: Vec<Vec<u8>> = (0..DEVICES)
        .step_by(7)
        .map(|i| request_body(i, By::Hostname))
        .collect();

    let mut g = c.benchmark_group("admin_http");
    g.bench_function("healthz_floor", |b| {
        b.iter(|| {
            rt.block_on(async {
                client
                    .get(&health_url)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
            })
        })
    });
    let mut n = 0usize;
    g.bench_function("decide", |b| {
        b.iter(|| {
            n = (n + 1) % bodies.len();
            let body = bodies[n].clone();
            rt.block_on(async {
                client
                    .post(&decide_url)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
            })
        })
    });
    g.finish();
    shutdown.cancel();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
