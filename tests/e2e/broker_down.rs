//! Issue #14 item 2: the broker is down when `trustgate run` starts. The service stays up and
//! says it is not ready (and why) instead of exiting; once the broker is there it creates its
//! topics, catches up and answers, with nobody restarting it.

use crate::common::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::time::{Duration, Instant};

const REQUEST: &str = r#"{"request_id":"bd-1","application":"vpn","device":{"trusted":true,"connector_guid":"bd-dev-1","os":"windows"}}"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_down_at_start_leaves_the_service_up_and_not_ready_until_it_comes() {
    let mut broker = OwnBroker::unstarted();
    let mut inst = Instance::new("broker-down");
    inst.brokers = Some(broker.addr());
    let mut child = inst.spawn();

    // Nothing listens on the broker's port: the instance must stay up, unready, and say why.
    let client = reqwest::Client::new();
    // Down for as long as it takes the instance to find out and say so (an attempt at creating
    // the topics is bounded at 15 s), and at least a few seconds.
    let down_from = Instant::now();
    let mut readyz_seen = false;
    while down_from.elapsed() < Duration::from_secs(5)
        || !inst.log().contains("Cannot create the topics yet")
    {
        assert!(
            down_from.elapsed() < Duration::from_secs(45),
            "after 45 s with the broker down: admin listener answered: {readyz_seen}; the wait for the broker logged: false:\n{}",
            inst.log()
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "trustgate exited ({status}) with the broker down:\n{}",
                inst.log()
            );
        }
        if let Some(addr) = inst.admin_addr() {
            let r = client
                .get(format!("http://{addr}/readyz"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 503, "{}", inst.log());
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["caught_up"], false, "{body}");
            assert!(
                body["missing"]
                    .as_array()
                    .is_some_and(|m| m.contains(&"caught_up".into())
                        && m.contains(&"broker_reachable".into())),
                "{body}"
            );
            let decided = client
                .post(format!("http://{addr}/v1/decide"))
                .body(REQUEST)
                .send()
                .await
                .unwrap();
            assert_eq!(decided.status(), 503, "{}", inst.log());
            let body: serde_json::Value = decided.json().await.unwrap();
            assert_eq!(
                (body["decision"].as_str(), body["reason"].as_str()),
                (Some("deny"), Some("not_ready")),
                "{body}"
            );
            readyz_seen = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        readyz_seen,
        "the admin listener never came up:\n{}",
        inst.log()
    );

    // The broker arrives: topics are created by the instance itself, a device is fed, and the
    // instance answers from it without a restart.
    broker.restart();
    let back = Instant::now();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // Until the instance created the events topic, the record has nowhere to go (the
        // broker does not create topics on a produce); retry until it is accepted.
        let sent = producer
            .send(
                FutureRecord::to(&inst.events).key("bd-dev-1").payload(
                    r#"{"connector_guid":"bd-dev-1","operating_system":"Windows 10","is_compromised":true}"#,
                ),
                Duration::from_secs(5),
            )
            .await;
        if sent.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the events topic never appeared:\n{}\n--- broker ---\n{}",
            inst.log(),
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let decided_after = loop {
        let r = client
            .post(inst.admin("/v1/decide"))
            .body(REQUEST)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(
                (body["decision"].as_str(), body["reason"].as_str()),
                (Some("deny"), Some("compromised")),
                "{body}"
            );
            break back.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "not ready 90 s after the broker came:\n{}",
            inst.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if let Ok(Some(status)) = child.try_wait() {
        panic!("trustgate exited ({status}):\n{}", inst.log());
    }
    assert!(stop(&mut child).success(), "{}", inst.log());
    figures::record(
        "broker",
        "broker_down_at_start",
        serde_json::json!({
            "down_seconds": figures::secs(back.duration_since(down_from)),
            // From the broker's start to the first decision from the record fed then (the
            // record is retried every 0.5 s until the instance has created the events topic).
            "first_decision_after_seconds": figures::secs(decided_after),
        }),
    );
}
