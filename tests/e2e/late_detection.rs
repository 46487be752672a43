//! (e) A late detection compromises; a redelivered old one does not.

use crate::common::*;
use std::time::Duration;
use trustgate::time::{format_millis, now_millis};

const HOUR: i64 = 3_600_000;

fn detection(guid: &str, id: u64, date: i64, published_at: i64) -> Out {
    Out::new(format!(
        r#"{{"id":{id},"event_type_id":1090519054,"event_type":"Threat Detected","detection_id":"{id}","date":"{}","computer":{{"connector_guid":"{guid}","hostname":"{guid}"}}}}"#,
        format_millis(date).replace(".000Z", "+00:00")
    ))
    .key(guid)
    .at(published_at)
}

#[tokio::test(flavor = "multi_thread")]
async fn late_detection_compromises_and_redelivered_old_one_does_not() {
    let inst = Instance::new("late");
    create_topic(&inst.events, 2).await;
    let producer = producer();
    let now = now_millis();
    // An offline laptop: clean at now-1h, then uploads a detection dated now-3h at now-30m.
    publish(
        &producer,
        &inst.events,
        &clean_computer_record("laptop", now - HOUR),
    )
    .await;
    publish(
        &producer,
        &inst.events,
        &detection(
            "laptop",
            6_533_241_145_273_614_339,
            now - 3 * HOUR,
            now - HOUR / 2,
        ),
    )
    .await;
    // A resolved device: detection seen at now-2h, clean at now-1h, the same event redelivered now.
    publish(
        &producer,
        &inst.events,
        &detection(
            "resolved",
            6_533_241_145_273_614_340,
            now - 3 * HOUR,
            now - 2 * HOUR,
        ),
    )
    .await;
    publish(
        &producer,
        &inst.events,
        &clean_computer_record("resolved", now - HOUR),
    )
    .await;
    publish(
        &producer,
        &inst.events,
        &detection("resolved", 6_533_241_145_273_614_340, now - 3 * HOUR, now),
    )
    .await;

    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    for guid in ["laptop", "resolved"] {
        let req = serde_json::json!({"request_id": guid, "application": "vpn", "device": {"trusted": true, "connector_guid": guid}});
        publish(&producer, &inst.requests, &Out::new(req.to_string())).await;
    }
    let replies = read_topic(&inst.responses, 2, Duration::from_secs(30));
    assert_eq!(replies.len(), 2, "{}", inst.log());
    for reply in &replies {
        let r: serde_json::Value =
            serde_json::from_slice(rdkafka::Message::payload(reply).unwrap()).unwrap();
        let expected = if r["request_id"] == "laptop" {
            ("deny", "compromised")
        } else {
            ("allow", "trusted_not_compromised")
        };
        assert_eq!(
            (
                r["decision"].as_str().unwrap(),
                r["reason"].as_str().unwrap()
            ),
            expected,
            "{r}"
        );
    }
    let laptop = inst.device("laptop").await.unwrap();
    let open = &laptop["devices"][0]["open_events"];
    assert_eq!(
        open[0]["id"], "6533241145273614339",
        "64-bit id kept exactly"
    );
    assert!(stop(&mut child).success());
}
