//! (a) The real 38-computer page in, a decision out for each computer.

use crate::common::*;
use std::time::Duration;
use trustgate::topic::{HEADER_KIND, HEADER_OBSERVED_AT, HEADER_SOURCE};

#[tokio::test(flavor = "multi_thread")]
async fn every_computer_of_the_real_page_is_decided_by_its_is_compromised() {
    let inst = Instance::new("page");
    create_topic(&inst.events, 3).await;
    let producer = producer();
    let page = include_str!("../fixtures/computers-page.json");
    let records = trustgate::se::split_records(page).unwrap().records;
    assert_eq!(records.len(), 38);
    let observed = trustgate::time::format_millis(trustgate::time::now_millis());
    let mut computers = Vec::new();
    for raw in &records {
        let c: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
        let guid = c["connector_guid"].as_str().unwrap().to_owned();
        let out = Out::new(raw.get())
            .key(&guid)
            .header(HEADER_KIND, "computer")
            .header(HEADER_SOURCE, "test")
            .header(HEADER_OBSERVED_AT, observed.clone());
        publish(&producer, &inst.events, &out).await;
        computers.push(c);
    }

    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    for c in &computers {
        let guid = c["connector_guid"].as_str().unwrap();
        let req = serde_json::json!({"request_id": guid, "application": "vpn", "user": "u",
            "device": {"trusted": true, "connector_guid": guid}});
        publish(
            &producer,
            &inst.requests,
            &Out::new(req.to_string()).key(guid),
        )
        .await;
    }
    let replies = read_topic(&inst.responses, 38, Duration::from_secs(60));
    assert_eq!(replies.len(), 38, "one reply per request:\n{}", inst.log());

    let mut checked_windows = 0;
    for reply in &replies {
        let r: serde_json::Value =
            serde_json::from_slice(rdkafka::Message::payload(reply).unwrap()).unwrap();
        let c = computers
            .iter()
            .find(|c| c["connector_guid"] == r["request_id"])
            .expect("reply names a request");
        let os = c["operating_system"].as_str().unwrap();
        assert_eq!(r["policy"], "global");
        assert_eq!(r["device"]["matched_by"], "connector_guid");
        assert_eq!(r["device"]["connector_guid"], c["connector_guid"]);
        if os.starts_with("Windows") {
            checked_windows += 1;
            let compromised = c["is_compromised"].as_bool().unwrap();
            let expected = if compromised {
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
                "{c}"
            );
            assert_eq!(r["device"]["compromised"], compromised);
        } else {
            assert!(os.starts_with("iOS") || os.starts_with("Ubuntu"), "{os}");
            assert_eq!(
                (
                    r["decision"].as_str().unwrap(),
                    r["reason"].as_str().unwrap()
                ),
                ("allow", "platform_not_checked")
            );
        }
        assert_eq!(
            rdkafka::Message::key(reply),
            Some(c["connector_guid"].as_str().unwrap().as_bytes()),
            "keyed like the request"
        );
    }
    assert_eq!(checked_windows, 32);
    assert!(
        stop(&mut child).success(),
        "clean exit on SIGTERM:\n{}",
        inst.log()
    );
}
