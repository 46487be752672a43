//! Issue #10 item 6 (first point): a dead-letter write that keeps failing holds ingest, is
//! retried with backoff, and `/readyz` and a metric name the cause; once the dead-letter topic
//! takes the record, ingest moves on.

use crate::common::*;
use std::time::{Duration, Instant};

async fn readyz(inst: &Instance) -> serde_json::Value {
    reqwest::get(inst.admin("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_dead_letter_write_is_named_and_retried_until_it_succeeds() {
    let mut inst = Instance::new("dlq-stuck");
    // The dead-letter topic does not exist (trustgate creates no topics here) and a delivery
    // gives up after 2 s, so every dead-letter write fails until the test creates the topic.
    inst.extra_config = "[kafka.properties]\n\"message.timeout.ms\" = \"2000\"\n".into();
    create_topic(&inst.events, 1).await;
    create_topic(&inst.requests, 1).await;
    create_topic(&inst.responses, 1).await;
    let producer = producer();
    publish(&producer, &inst.events, &Out::new("not json")).await;
    let good = r#"{"connector_guid":"after-dlq","hostname":"after-dlq","operating_system":"Windows 11","is_compromised":true}"#;
    publish(&producer, &inst.events, &Out::new(good).key("after-dlq")).await;

    let _child = inst.spawn_with(|c| {
        c.env("TRUSTGATE_TOPICS__CREATE", "false");
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let ready = loop {
        let ready = readyz(&inst).await;
        if ready["ingest_stuck"].is_string() {
            break ready;
        }
        assert!(
            Instant::now() < deadline,
            "ingest never reported itself stuck: {ready}\n{}",
            inst.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        ready["ingest_stuck"]
            .as_str()
            .unwrap()
            .starts_with("dead_letter"),
        "{ready}"
    );
    assert!(
        ready["missing"]
            .as_array()
            .unwrap()
            .contains(&"ingest_moving".into()),
        "{ready}"
    );
    let metrics = inst.metrics().await;
    assert!(
        metrics.contains("trustgate_ingest_stuck{cause=\"dead_letter\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("trustgate_ingest_dead_letter_failures_total"));
    assert_eq!(
        inst.device("after-dlq").await,
        None,
        "moved past an unacknowledged dead letter"
    );

    create_topic(&inst.dlq, 1).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while inst.device("after-dlq").await.is_none() {
        assert!(
            Instant::now() < deadline,
            "ingest never moved on:\n{}",
            inst.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = readyz(&inst).await;
    assert!(ready["ingest_stuck"].is_null(), "{ready}");
    assert_eq!(read_topic(&inst.dlq, 1, Duration::from_secs(30)).len(), 1);
}
