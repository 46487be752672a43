//! (d) Replies follow Spring Kafka's request/reply headers.

use crate::common::*;
use rdkafka::Message;
use std::time::Duration;
use trustgate::decision::reply::{
    HEADER_CORRELATION_ID, HEADER_REPLY_PARTITION, HEADER_REPLY_TOPIC,
};

#[tokio::test(flavor = "multi_thread")]
async fn replies_honour_reply_topic_partition_and_correlation_id() {
    let inst = Instance::new("reply");
    create_topic(&inst.events, 1).await;
    let reply_topic = unique("replies");
    create_topic(&reply_topic, 3).await;
    let producer = producer();
    publish(
        &producer,
        &inst.events,
        &Out::new(
            r#"{"connector_guid":"dev-1","operating_system":"Windows 10","is_compromised":false}"#,
        ),
    )
    .await;
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;

    let correlation: [u8; 16] = rand::random();
    let req = r#"{"request_id":"r-1","application":"vpn","device":{"trusted":true,"connector_guid":"dev-1"}}"#;
    let out = Out::new(req)
        .key("user-42")
        .header(HEADER_REPLY_TOPIC, reply_topic.as_bytes())
        .header(HEADER_REPLY_PARTITION, 2i32.to_be_bytes().to_vec())
        .header(HEADER_CORRELATION_ID, correlation.to_vec());
    publish(&producer, &inst.requests, &out).await;
    // A reply topic that is one of trustgate's own is refused: answered invalid_request on the
    // responses topic instead.
    let hostile = Out::new(r#"{"request_id":"r-2","application":"vpn","device":{"trusted":true,"connector_guid":"dev-1"}}"#)
        .header(HEADER_REPLY_TOPIC, inst.events.as_bytes())
        .header(HEADER_CORRELATION_ID, b"corr-2".to_vec());
    publish(&producer, &inst.requests, &hostile).await;
    // No request_id: nobody to answer, so it is dead-lettered.
    publish(
        &producer,
        &inst.requests,
        &Out::new(r#"{"application":"vpn"}"#),
    )
    .await;

    let replies = read_topic(&reply_topic, 1, Duration::from_secs(30));
    assert_eq!(replies.len(), 1, "{}", inst.log());
    let reply = &replies[0];
    assert_eq!(reply.partition(), 2);
    assert_eq!(header(reply, HEADER_CORRELATION_ID), Some(&correlation[..]));
    assert_eq!(reply.key(), Some(&b"user-42"[..]));
    let body: serde_json::Value = serde_json::from_slice(reply.payload().unwrap()).unwrap();
    assert_eq!(
        (body["request_id"].as_str(), body["decision"].as_str()),
        (Some("r-1"), Some("allow"))
    );

    let refused = read_topic(&inst.responses, 1, Duration::from_secs(30));
    assert_eq!(refused.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(refused[0].payload().unwrap()).unwrap();
    assert_eq!(
        (body["request_id"].as_str(), body["reason"].as_str()),
        (Some("r-2"), Some("invalid_request"))
    );
    assert_eq!(body["decision"], "deny");
    assert_eq!(
        header(&refused[0], HEADER_CORRELATION_ID),
        Some(&b"corr-2"[..])
    );

    let dead = read_topic(&inst.dlq, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1);
    assert!(header_str(&dead[0], trustgate::topic::HEADER_DLQ_ERROR)
        .unwrap()
        .contains("request_id"));
    assert!(stop(&mut child).success());
}
