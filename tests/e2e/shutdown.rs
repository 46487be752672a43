//! SIGTERM drains: requests in flight are answered (now or after a restart), the process exits
//! cleanly within a bound, and metrics and health are served while it runs.

use crate::common::*;
use rdkafka::Message;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const REQUESTS: usize = 300;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_answers_in_flight_requests_and_exits_cleanly() {
    let inst = Instance::new("shutdown");
    create_topic(&inst.events, 1).await;
    let producer = producer();
    publish(
        &producer,
        &inst.events,
        &Out::new(
            r#"{"connector_guid":"g","operating_system":"Windows 10","is_compromised":false}"#,
        ),
    )
    .await;
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;

    let health: serde_json::Value = reqwest::get(inst.admin("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");

    for i in 0..REQUESTS {
        let req = format!(
            r#"{{"request_id":"r{i}","application":"vpn","device":{{"trusted":true,"connector_guid":"g"}}}}"#
        );
        publish(&producer, &inst.requests, &Out::new(req)).await;
    }
    assert!(
        !read_topic(&inst.responses, 1, Duration::from_secs(30)).is_empty(),
        "{}",
        inst.log()
    );
    let metrics = inst.metrics().await;
    assert!(
        metrics.contains("trustgate_ingest_records_applied_total"),
        "{metrics}"
    );
    assert!(metrics.contains("trustgate_decisions_total"), "{metrics}");
    for stage in ["poll", "fold", "read", "wait", "sled", "index"] {
        let count = format!("trustgate_ingest_stage_duration_seconds_count{{stage=\"{stage}\"}}");
        assert!(metrics.contains(&count), "no {count} in {metrics}");
    }

    let asked = Instant::now();
    let status = stop(&mut child);
    assert!(status.success(), "clean exit on SIGTERM:\n{}", inst.log());
    assert!(
        asked.elapsed() < Duration::from_secs(25),
        "bounded shutdown"
    );
    assert!(
        inst.log().contains("Decision worker stopped."),
        "{}",
        inst.log()
    );

    // Whatever was not answered before the stop is answered by the next instance: nothing lost.
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    let replies = read_topic(&inst.responses, REQUESTS, Duration::from_secs(60));
    let answered: HashSet<String> = replies
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(m.payload().unwrap()).unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        answered.len(),
        REQUESTS,
        "every request answered at least once:\n{}",
        inst.log()
    );
    assert!(stop(&mut child).success());
}
