//! Ingest throughput: records applied per second from a pre-filled events topic, against a
//! plain consume of the same topic (the broker and client's own ceiling).
//!
//! The bench fills a fresh events topic of its own with SE-shaped computers and events, times
//! a bare consumer reading it from the beginning, then starts the whole application in-process
//! (`app::start`) on a fresh store with that topic as its events topic and times it until
//! ingest has caught up. Everything it creates is named after the run and deleted afterwards.

use super::topics::unique_settings;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use trustgate::app;
use trustgate::config::Settings;
use trustgate::kafka::{client_config, enqueue, Role};
use trustgate::topic::{record_headers, Kind};

/// The longest either reader may take before the measurement is abandoned.
const READ_BUDGET: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Serialize)]
pub struct IngestResult {
    pub records: u64,
    /// A bare consumer reading the whole topic.
    pub plain_consume_rps: f64,
    /// Ingest while applying (from the last moment its whole lag was seen to caught up).
    pub ingest_rps: f64,
    /// Ingest including start-up (store open, topic check, assignment).
    pub ingest_wall_rps: f64,
    pub ingest_ratio: f64,
}

/// An SE computer or event for device `i`; one record in four is an event, half of those
/// compromise-class, so the fold does both kinds of work.
fn record(n: u64, devices: u64) -> (Kind, String) {
    let i = n % devices;
    let guid = format!("bench-ingest-{i:08}");
    if n % 4 == 3 {
        let ty = if n % 8 == 3 {
            1_090_519_054u64
        } else {
            553_648_130
        };
        (
            Kind::Event,
            format!(
                r#"{{"id":{id},"timestamp":1767225600,"date":"2026-01-01T00:00:00+00:00","event_type":"Bench","event_type_id":{ty},"detection_id":"{id}","connector_guid":"{guid}","severity":"High","computer":{{"connector_guid":"{guid}","hostname":"bench-{i}.corp.example.com","active":true,"network_addresses":[{{"ip":"10.0.0.1","mac":"02:00:{a:02x}:{b:02x}:{c:02x}:01"}}]}},"file":{{"disposition":"Malicious","file_name":"x.exe","identity":{{"sha256":"12081e6ca366ad7d08368fbc7d4107605a9b75d27c671e7e0a58588f94be5837"}}}}}}"#,
                id = 6_411_425_813_945_647_000u64 + n,
                a = (i >> 16) & 0xff,
                b = (i >> 8) & 0xff,
                c = i & 0xff,
            ),
        )
    } else {
        (
            Kind::Computer,
            format!(
                r#"{{"connector_guid":"{guid}","hostname":"bench-{i}.corp.example.com","windows_processor_id":"{i:016x}","active":true,"connector_version":"7.5.3.20938","operating_system":"Windows 10","os_version":"10.0.19044.1466","internal_ips":["10.0.0.1"],"is_compromised":{bad},"network_addresses":[{{"mac":"02:00:{a:02x}:{b:02x}:{c:02x}:01","ip":"10.0.0.1"}}],"last_seen":"2026-01-01T00:00:00Z","faults":[]}}"#,
                bad = i.is_multiple_of(50),
                a = (i >> 16) & 0xff,
                b = (i >> 8) & 0xff,
                c = i & 0xff,
            ),
        )
    }
}

/// Fills `topic` with `records` records and waits until every one is acknowledged.
async fn fill(settings: &Settings, topic: &str, records: u64) -> anyhow::Result<()> {
    let producer: FutureProducer = client_config(&settings.kafka, Role::Producer).create()?;
    let devices = (records / 4).max(1);
    let mut pending = Vec::with_capacity(10_000);
    for n in 0..records {
        let (kind, value) = record(n, devices);
        let key = format!("bench-ingest-{:08}", n % devices);
        let headers = record_headers(kind, "bench", Some(chrono::Utc::now()));
        let rec = FutureRecord::to(topic)
            .key(key.as_bytes())
            .payload(value.as_bytes())
            .headers(headers);
        match enqueue(&producer, rec).await {
            Ok(delivery) => pending.push(delivery),
            Err(e) => return Err(e).context("filling the bench events topic"),
        }
        if pending.len() == pending.capacity() {
            await_all(&mut pending).await?;
        }
    }
    await_all(&mut pending).await
}

pub(super) async fn await_all(
    pending: &mut Vec<rdkafka::producer::DeliveryFuture>,
) -> anyhow::Result<()> {
    for delivery in pending.drain(..) {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e).context("a bench events record was not delivered"),
            Err(_) => anyhow::bail!("a bench events delivery was cancelled"),
        }
    }
    Ok(())
}

/// Reads `records` records of `topic` from the beginning with a bare consumer.
pub(super) fn plain_consume(settings: &Settings, topic: &str, records: u64) -> anyhow::Result<f64> {
    let mut config = client_config(&settings.kafka, Role::Ingest);
    config.set("group.id", format!("{topic}-plain"));
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    let started = Instant::now();
    consumer.assign(&tpl)?;
    let mut read = 0u64;
    while read < records {
        anyhow::ensure!(
            started.elapsed() < READ_BUDGET,
            "plain consume read {read} of {records} records in {READ_BUDGET:?}"
        );
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            msg?;
            read += 1;
        }
    }
    Ok(records as f64 / started.elapsed().as_secs_f64())
}

/// Runs the application on a fresh store with `events` as its events topic until caught up.
async fn ingest(settings: &Settings, events: &str, records: u64) -> anyhow::Result<(f64, f64)> {
    let dir = std::env::temp_dir().join(format!("{events}-store"));
    let result = ingest_into(unique_settings(settings, events, &dir), records).await;
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(error = %e, path = %dir.display(), "Cannot remove the bench store.");
    }
    result
}

async fn ingest_into(settings: Settings, records: u64) -> anyhow::Result<(f64, f64)> {
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = app::start(settings, shutdown.clone()).await?;
    // Applying starts after the largest lag was last seen: every partition assigned (the
    // broker's watermarks may count a few records fewer than were written), nothing stored.
    let mut peak = (0i64, started);
    while !running.ingest.is_caught_up() {
        anyhow::ensure!(
            started.elapsed() < READ_BUDGET,
            "ingest did not catch up in {READ_BUDGET:?}"
        );
        let lag: i64 = running.ingest.lag().values().sum();
        if lag >= peak.0 {
            peak = (lag, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let done = Instant::now();
    shutdown.cancel();
    running
        .join(shutdown)
        .await
        .context("stopping the in-process instance")?;
    let wall = records as f64 / (done - started).as_secs_f64();
    let applying = match peak {
        (lag, at) if lag > 0 && done > at => lag as f64 / (done - at).as_secs_f64(),
        _ => wall, // caught up within one poll: no finer figure than the wall rate
    };
    Ok((applying, wall))
}

/// Fills, reads plainly, then ingests `records` records on a topic named `events`.
pub async fn measure(
    settings: &Settings,
    events: &str,
    records: u64,
) -> anyhow::Result<IngestResult> {
    super::topics::create(settings, &[(events, settings.topics.partitions)]).await?;
    fill(settings, events, records).await?;
    let plain = {
        let (settings, topic) = (settings.clone(), events.to_owned());
        tokio::task::spawn_blocking(move || plain_consume(&settings, &topic, records)).await??
    };
    let (ingest_rps, ingest_wall_rps) = ingest(settings, events, records).await?;
    Ok(IngestResult {
        records,
        plain_consume_rps: plain,
        ingest_rps,
        ingest_wall_rps,
        ingest_ratio: ingest_rps / plain,
    })
}
