//! Issue #10 item 5: an events topic deleted and created again under the same name (or
//! truncated) is detected, and the state is rebuilt from the topic as it is now instead of
//! reusing offsets that belong to the old one.
//!
//! Deleting the topic under a *running* instance is not tested on tansu 0.6: librdkafka 2.12.1
//! then crashes (SIGSEGV in `rd_kafka_metadata_update_op`, a metadata update with no topic
//! name), before trustgate can react. Restarted instances are what this test drives.

use crate::common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use std::time::{Duration, Instant};

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap()
}

/// Deletes `topic` and creates it again with one partition (bounded retries while the broker
/// still reports the old one).
async fn recreate(topic: &str) {
    let admin = admin();
    let deleted = admin
        .delete_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap();
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let created = admin
            .create_topics(
                [&NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
        if created.iter().all(Result::is_ok) {
            return;
        }
        assert!(Instant::now() < deadline, "recreating {topic}: {created:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn computer(guid: &str) -> Out {
    Out::new(format!(
        r#"{{"connector_guid":"{guid}","hostname":"{guid}","operating_system":"Windows 11","is_compromised":true}}"#
    ))
    .key(guid)
}

/// Waits (bounded) until `guid` is known to the running instance.
async fn wait_device(inst: &Instance, guid: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = reqwest::get(inst.admin(&format!("/v1/devices/{guid}")))
            .await
            .unwrap_or_else(|e| panic!("{e}:\n{}", inst.log()));
        if r.status().is_success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{guid} never applied:\n{}",
            inst.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recreated_events_topic_is_folded_again_from_its_beginning() {
    let inst = Instance::new("recreate");
    create_topic(&inst.events, 1).await;
    let producer = producer();
    for guid in ["old-a", "old-b", "old-c"] {
        publish(&producer, &inst.events, &computer(guid)).await;
    }
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    wait_device(&inst, "old-c").await;
    assert!(stop(&mut child).success());

    // Restarted on a recreated topic with fewer records: the stored offset (3) is past the
    // new topic's end (1).
    recreate(&inst.events).await;
    publish(&producer, &inst.events, &computer("new-1")).await;
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    wait_device(&inst, "new-1").await;
    assert_eq!(
        inst.device("old-a").await,
        None,
        "state of the old topic kept:\n{}",
        inst.log()
    );

    assert!(stop(&mut child).success());

    // Restarted on a topic recreated with as many records as were applied (1): every offset
    // check passes; the record before the stored offset is another one.
    recreate(&inst.events).await;
    publish(&producer, &inst.events, &computer("new-2")).await;
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    wait_device(&inst, "new-2").await;
    assert_eq!(
        inst.device("new-1").await,
        None,
        "state of the previous topic kept:\n{}",
        inst.log()
    );
    let metrics = inst.metrics().await;
    assert!(
        metrics.contains("trustgate_ingest_rebuilds_total"),
        "{metrics}"
    );
    assert!(inst.log().contains("rebuilding the state"));
    assert!(stop(&mut child).success());
}

/// A device's history on a store whose events topic was recreated shorter: the records its
/// references name past the new end are counted missing (and said so), the one still there is
/// read back.
#[tokio::test(flavor = "multi_thread")]
async fn a_history_counts_the_records_past_a_recreated_topics_end_as_missing() {
    let inst = Instance::new("recreate-history");
    create_topic(&inst.events, 1).await;
    let producer = producer();
    // hist-x at offsets 0, 2 and 4.
    for guid in ["hist-x", "hist-y", "hist-x", "hist-y", "hist-x", "hist-z"] {
        publish(&producer, &inst.events, &computer(guid)).await;
    }
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    wait_device(&inst, "hist-z").await;
    let history = |args: &[&str]| {
        let all: Vec<&str> = ["history", "--json", "hist-x"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        let out = run_cli(&inst, &all, "");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let offsets: Vec<i64> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["offset"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        (offsets, String::from_utf8(out.stderr).unwrap())
    };
    let (offsets, notes) = history(&[]);
    assert_eq!(offsets, [0, 2, 4]);
    assert!(!notes.contains("no longer"), "{notes}");
    assert!(stop(&mut child).success());

    // The topic recreated with two records: offset 0 is hist-x's again, 2 and 4 are gone.
    recreate(&inst.events).await;
    publish(&producer, &inst.events, &computer("hist-x")).await;
    publish(&producer, &inst.events, &computer("hist-y")).await;
    let (offsets, notes) = history(&[]);
    assert_eq!(offsets, [0]);
    assert!(
        notes.contains("2 of the device's records are no longer on the events topic"),
        "{notes}"
    );
}
