//! Ingest resumes a partition at its stored offset even when that offset falls inside a record
//! batch. tansu 0.6's in-memory storage answers a fetch only with batches that *start* at or
//! after the offset asked for; resuming there read nothing until another batch arrived and
//! then skipped the rest of the batch, detections included; and the start-up check that reads
//! the last applied record back (inside the same batch) found another record, took the topic
//! for a recreated one and rebuilt the whole state (over and over in a 1M-device catch-up).
//! Ingest now starts reading, and reads back, up to `READ_THROUGH` records earlier and drops
//! what comes before the offset it wants.

use crate::common::*;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::time::Duration;
use trustgate::store::{ChunkUpdate, Store};

/// Records in the one batch; the stored offset is in its middle.
const RECORDS: i64 = 3000;
const RESUME_AT: i64 = 1500;
/// From this index on, the devices are compromised.
const COMPROMISED_FROM: i64 = 2000;

/// A producer that packs everything sent within a second into one batch (up to librdkafka's
/// default `batch.num.messages`, 10,000, and `batch.size`, 1 MB).
fn batching_producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "1000")
        .create()
        .expect("producer")
}

fn computer(i: i64, at: i64) -> Out {
    let guid = format!("batch-{i:04}");
    Out::new(format!(
        r#"{{"connector_guid":"{guid}","operating_system":"Windows 11","is_compromised":{}}}"#,
        i >= COMPROMISED_FROM
    ))
    .key(&guid)
    .header(trustgate::topic::HEADER_KIND, "computer")
    .header(
        trustgate::topic::HEADER_OBSERVED_AT,
        trustgate::time::format_millis(at),
    )
    .at(at)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_resumed_inside_a_batch_applies_the_rest_of_the_batch() {
    let inst = Instance::new("midbatch");
    create_topic(&inst.events, 1).await;
    let at = trustgate::time::now_millis() - 60_000;
    let producer = batching_producer();
    let sends: Vec<_> = (0..RECORDS)
        .map(|i| {
            let out = computer(i, at);
            let producer = producer.clone();
            let topic = inst.events.clone();
            tokio::spawn(async move { publish(&producer, &topic, &out).await })
        })
        .collect();
    // Device index by offset (the sends race each other into the batch).
    let mut at_offset = BTreeMap::new();
    for (i, send) in (0..RECORDS).zip(sends) {
        at_offset.insert(send.await.unwrap().1, i);
    }
    assert_eq!(
        at_offset.keys().copied().collect::<Vec<_>>(),
        (0..RECORDS).collect::<Vec<_>>()
    );

    // A store that applied the first RESUME_AT records (their states are left out: what
    // matters is where ingest resumes), as a process stopped after a chunk would leave it.
    {
        let store = Store::open(&inst.dir.path().join("store"), 1 << 24).unwrap();
        let update = ChunkUpdate {
            offsets: BTreeMap::from([((inst.events.clone(), 0), RESUME_AT)]),
            // The Kafka timestamp of the record before the stored offset, which ingest reads
            // back to tell its own topic from a recreated one.
            last_records: BTreeMap::from([((inst.events.clone(), 0), at)]),
            ..ChunkUpdate::default()
        };
        store.apply(&update).unwrap();
        store.flush_blocking().unwrap();
    }

    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    // tansu 0.6 can report the partition's end short of the batch's last record, which makes
    // "caught up" come early: wait for the last record's device too.
    let last = format!("batch-{:04}", at_offset[&(RECORDS - 1)]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while inst.device(&last).await.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "{last} never applied:\n{}",
            inst.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every record from the stored offset on is applied, detections included; what came
    // before it was read again and dropped, not applied.
    let (mut applied, mut compromised) = (0, 0);
    for (offset, i) in &at_offset {
        let guid = format!("batch-{i:04}");
        let device = inst.device(&guid).await;
        if *offset < RESUME_AT {
            assert!(
                device.is_none(),
                "{guid} at offset {offset} applied again:\n{}",
                inst.log()
            );
            continue;
        }
        let device = device
            .unwrap_or_else(|| panic!("{guid} at offset {offset} not applied:\n{}", inst.log()));
        assert_eq!(
            device["devices"][0]["compromised"],
            *i >= COMPROMISED_FROM,
            "{device}"
        );
        applied += 1;
        compromised += i64::from(*i >= COMPROMISED_FROM);
    }
    assert_eq!(applied, RECORDS - RESUME_AT);
    assert!(compromised > 0, "the rest of the batch holds detections");
    assert!(stop(&mut child).success(), "{}", inst.log());
}
