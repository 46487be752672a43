//! (c) Unusable records go to the dead-letter topic with their origin, and ingest goes on.

use crate::common::*;
use std::time::Duration;
use trustgate::topic::*;

#[tokio::test(flavor = "multi_thread")]
async fn garbage_is_dead_lettered_and_ingest_goes_on() {
    let inst = Instance::new("dlq");
    create_topic(&inst.events, 1).await;
    let producer = producer();
    let garbage = Out::new("this is not json")
        .key("some-key")
        .header("x-origin", "fuzzer");
    let (partition, offset) = publish(&producer, &inst.events, &garbage).await;
    // An event that names no device is not a device event: dead-lettered too, never dropped.
    let orphan = Out::new(r#"{"id":1,"event_type_id":1090519054,"date":"2024-01-01T00:00:00Z"}"#);
    publish(&producer, &inst.events, &orphan).await;
    let good = Out::new(r#"{"connector_guid":"after-garbage","hostname":"ok-host","operating_system":"Windows 11","is_compromised":true}"#)
        .key("after-garbage");
    publish(&producer, &inst.events, &good).await;

    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;

    let dead = read_topic(&inst.dlq, 2, Duration::from_secs(30));
    assert_eq!(dead.len(), 2, "{}", inst.log());
    let first = dead
        .iter()
        .find(|m| rdkafka::Message::payload(*m) == Some(&b"this is not json"[..]))
        .expect("garbage kept byte-for-byte");
    assert_eq!(rdkafka::Message::key(first), Some(&b"some-key"[..]));
    assert_eq!(
        header_str(first, HEADER_DLQ_TOPIC).as_deref(),
        Some(inst.events.as_str())
    );
    assert_eq!(
        header_str(first, HEADER_DLQ_PARTITION),
        Some(partition.to_string())
    );
    assert_eq!(
        header_str(first, HEADER_DLQ_OFFSET),
        Some(offset.to_string())
    );
    assert!(header_str(first, HEADER_DLQ_ERROR)
        .unwrap()
        .contains("not a JSON object"));
    assert_eq!(
        header_str(first, "x-origin").as_deref(),
        Some("fuzzer"),
        "original headers kept"
    );
    let second = dead
        .iter()
        .find(|m| header_str(m, HEADER_DLQ_OFFSET) == Some((offset + 1).to_string()))
        .expect("orphan event dead-lettered");
    assert!(header_str(second, HEADER_DLQ_ERROR)
        .unwrap()
        .contains("connector_guid"));

    let device = inst
        .device("after-garbage")
        .await
        .expect("the record after the garbage was applied");
    assert_eq!(device["devices"][0]["compromised"], true);
    assert!(stop(&mut child).success());
}
