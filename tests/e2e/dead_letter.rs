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

/// Issue #14 item 4: hostile records (oversized, invalid UTF-8, deeply nested, a number past 64
/// bits, a duplicate key) are dead-lettered with a reason naming the rule, and none of them is
/// applied: each would otherwise clear the device's compromise with a later clean observation.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_records_are_dead_lettered_with_their_reason() {
    let inst = Instance::new("dlq-hostile");
    create_topic(&inst.events, 1).await;
    let producer = producer();
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 60_000;
    let compromised = Out::new(
        r#"{"connector_guid":"victim","operating_system":"Windows 11","is_compromised":true}"#,
    )
    .key("victim")
    .at(t0);
    publish(&producer, &inst.events, &compromised).await;

    let clean =
        r#"{"connector_guid":"victim","operating_system":"Windows 11","is_compromised":false"#;
    let mut not_utf8 = format!(r#"{clean},"hostname":""#).into_bytes();
    not_utf8.extend_from_slice(b"\xc3\x28\"}");
    let hostile: Vec<(Vec<u8>, &str)> = vec![
        (
            format!(r#"{clean},"pad":"{}"}}"#, "x".repeat(300 * 1024)).into_bytes(),
            "at most 262144 are accepted",
        ),
        (not_utf8, "not UTF-8"),
        (
            format!(r#"{clean},"x":{}{}}}"#, "[".repeat(40), "]".repeat(40)).into_bytes(),
            "nested deeper than 32 levels",
        ),
        (
            format!(r#"{clean},"timestamp":18446744073709551616}}"#).into_bytes(),
            "64-bit integer range",
        ),
        (
            br#"{"connector_guid":"victim","is_compromised":true,"is_compromised":false}"#.to_vec(),
            r#"duplicate key "is_compromised""#,
        ),
    ];
    let mut offsets = Vec::new();
    for (i, (value, _)) in hostile.iter().enumerate() {
        let out = Out::new(value.clone())
            .key("victim")
            .header(HEADER_KIND, "computer")
            .at(t0 + 1_000 * (i as i64 + 1));
        offsets.push(publish(&producer, &inst.events, &out).await.1);
    }
    let after = Out::new(
        r#"{"connector_guid":"after-hostile","operating_system":"Windows 11","is_compromised":false}"#,
    )
    .key("after-hostile");
    publish(&producer, &inst.events, &after).await;

    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;

    let dead = read_topic(&inst.dlq, hostile.len(), Duration::from_secs(30));
    assert_eq!(dead.len(), hostile.len(), "{}", inst.log());
    for ((value, reason), offset) in hostile.iter().zip(&offsets) {
        let letter = dead
            .iter()
            .find(|m| header_str(m, HEADER_DLQ_OFFSET) == Some(offset.to_string()))
            .unwrap_or_else(|| panic!("offset {offset} ({reason}) not dead-lettered"));
        assert_eq!(
            rdkafka::Message::payload(letter),
            Some(&value[..]),
            "kept byte-for-byte"
        );
        let error = header_str(letter, HEADER_DLQ_ERROR).unwrap();
        assert!(
            error.starts_with("record refused: ") && error.contains(reason),
            "offset {offset}: {error}"
        );
    }
    inst.device("after-hostile")
        .await
        .expect("the record after the hostile ones was applied");
    let victim = inst.device("victim").await.expect("victim known");
    assert_eq!(
        victim["devices"][0]["compromised"], true,
        "no hostile record cleared the compromise: {victim}"
    );
    assert!(stop(&mut child).success());
}
