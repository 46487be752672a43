//! (#10 item 6) A corrupt stored device value: that device's decisions deny
//! `store_unavailable`, its key is logged, other devices are unaffected, and the process keeps
//! running, ingesting further records for it too.

use crate::common::*;
use trustgate::time::now_millis;

async fn decide(inst: &Instance, guid: &str) -> (reqwest::StatusCode, serde_json::Value) {
    let body = serde_json::json!({"request_id": guid, "application": "vpn",
        "device": {"trusted": true, "connector_guid": guid}});
    let r = reqwest::Client::new()
        .post(inst.admin("/v1/decide"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_device_value_denies_that_device_only_and_ingest_goes_on() {
    let inst = Instance::new("corrupt");
    create_topic(&inst.events, 1).await;
    let producer = producer();
    let now = now_millis();
    for guid in ["cor-1", "cor-2"] {
        publish(&producer, &inst.events, &clean_computer_record(guid, now)).await;
    }
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    assert_eq!(
        decide(&inst, "cor-1").await.1["reason"],
        "trusted_not_compromised"
    );
    assert!(stop(&mut child).success());

    // Damage cor-1's stored value while no instance holds the store. The key is the store's
    // layout (`D` + GUID, `store::keys`); the value has the right version byte and a body
    // that does not decode.
    {
        let db = sled::open(inst.dir.path().join("store")).unwrap();
        db.insert(b"Dcor-1", &[1u8, 0xff, 0xff, 0xff][..]).unwrap();
        db.flush().unwrap();
    }
    // Further records for both devices: ingest meets the corrupt value on its first chunk.
    for guid in ["cor-1", "cor-2"] {
        publish(
            &producer,
            &inst.events,
            &clean_computer_record(guid, now_millis()),
        )
        .await;
    }
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    let (status, bad) = decide(&inst, "cor-1").await;
    assert!(
        status.is_success() || status.as_u16() == 503,
        "{status} {bad}"
    );
    assert_eq!(
        (bad["decision"].as_str(), bad["reason"].as_str()),
        (Some("deny"), Some("store_unavailable")),
        "{bad}"
    );
    let (_, good) = decide(&inst, "cor-2").await;
    assert_eq!(
        (good["decision"].as_str(), good["reason"].as_str()),
        (Some("allow"), Some("trusted_not_compromised")),
        "{good}"
    );
    assert!(child.try_wait().unwrap().is_none(), "{}", inst.log());
    assert!(
        inst.log().contains("Dcor-1"),
        "the key is logged:\n{}",
        inst.log()
    );
    assert!(stop(&mut child).success(), "{}", inst.log());
}
