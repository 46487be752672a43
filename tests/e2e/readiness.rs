//! Issue #10 item 1: an instance that is not ready (never fed, or not caught up) denies
//! `not_ready` (HTTP 503) and says why on `/readyz`; the one-shot commands refuse a store path
//! that holds no store instead of answering from an empty one.

use crate::common::*;

const REQUEST: &str = r#"{"request_id":"nr-1","application":"vpn","device":{"trusted":true,"hostname":"ws-q-0200","os":"windows"}}"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_never_fed_store_denies_not_ready_until_the_first_record() {
    let inst = Instance::new("never-fed");
    create_topic(&inst.events, 2).await;
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;

    // Caught up with an empty topic: the default policy (`unknown_device = "allow"`) would
    // allow every device from this empty store.
    let client = reqwest::Client::new();
    let r = client
        .post(inst.admin("/v1/decide"))
        .body(REQUEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "{}", inst.log());
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (body["decision"].as_str(), body["reason"].as_str()),
        (Some("deny"), Some("not_ready")),
        "{body}"
    );
    let ready: serde_json::Value = reqwest::get(inst.admin("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["store_fed"], false, "{ready}");
    assert!(
        ready["missing"]
            .as_array()
            .unwrap()
            .contains(&"store_fed".into()),
        "{ready}"
    );

    // The Kafka path answers the same deny.
    let producer = producer();
    publish(&producer, &inst.requests, &Out::new(REQUEST)).await;
    let replies = read_topic(&inst.responses, 1, std::time::Duration::from_secs(30));
    assert_eq!(replies.len(), 1, "{}", inst.log());
    let reply: serde_json::Value =
        serde_json::from_slice(rdkafka::Message::payload(&replies[0]).unwrap()).unwrap();
    assert_eq!(reply["reason"], "not_ready", "{reply}");

    // One heartbeat feeds the store: from then on the device rules answer.
    publish(
        &producer,
        &inst.events,
        &Out::new("{}")
            .key("poller")
            .header("trustgate-kind", "heartbeat"),
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = client
            .post(inst.admin("/v1/decide"))
            .body(REQUEST)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["reason"], "not_in_secure_endpoint", "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", inst.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(stop(&mut child).success());
}

#[test]
fn decide_and_inspect_refuse_a_store_path_with_no_store() {
    let inst = Instance::new("no-store");
    let store = inst.dir.path().join("store");
    for args in [&["decide"][..], &["inspect", "ws-q-0200"][..]] {
        let out = run_cli(&inst, args, REQUEST);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("no store at"), "{args:?}: {stderr}");
        assert!(!store.exists(), "{args:?} created a store");
    }
}
