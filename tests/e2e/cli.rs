//! `trustgate decide` and `trustgate inspect`: through a running instance's admin listener while
//! it holds the store, and on the store directly once it stopped; exit codes 0, 1 and 2.

use crate::common::*;

fn check_commands(inst: &Instance, when: &str) {
    let req = r#"{"request_id":"cli-1","application":"vpn","device":{"trusted":true,"hostname":"fin-lt-0042","os":"windows"}}"#;
    let out = run_cli(inst, &["decide"], req);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{when}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (resp["decision"].as_str(), resp["reason"].as_str()),
        (Some("deny"), Some("compromised")),
        "{when}"
    );
    assert_eq!(
        resp["device"]["matched_by"], "hostname",
        "short name matches the FQDN ({when})"
    );

    let out = run_cli(inst, &["decide"], "{not json");
    assert_eq!(out.status.code(), Some(2), "{when}: bad input");

    let out = run_cli(inst, &["inspect", "22-88-FE-2C-89-5C", "--json"], "");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{when}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["matched_by"], "mac");
    assert_eq!(found["devices"][0]["connector_guid"], "cli-device");
    assert_eq!(found["devices"][0]["compromised"], true);

    let out = run_cli(inst, &["inspect", "no-such-host"], "");
    assert_eq!(out.status.code(), Some(1), "{when}: not found");
}

#[tokio::test(flavor = "multi_thread")]
async fn decide_and_inspect_work_with_and_without_a_running_instance() {
    let inst = Instance::new("cli");
    create_topic(&inst.events, 1).await;
    let computer = r#"{"connector_guid":"CLI-Device","hostname":"FIN-LT-0042.corp.example.com","operating_system":"Windows 10",
        "network_addresses":[{"mac":"22:88:fe:2c:89:5c","ip":"10.1.1.1"}],"is_compromised":true}"#;
    publish(
        &producer(),
        &inst.events,
        &Out::new(computer.replace('\n', "")),
    )
    .await;
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    check_commands(&inst, "while running");
    assert!(stop(&mut child).success());
    check_commands(&inst, "after stop");
}

/// (#10 item 6) A `[poller] base_url` that is not a URL is refused by `check-config` (exit 2,
/// naming the key), not by a panic at the first poll.
#[test]
fn check_config_refuses_a_base_url_that_is_not_a_url() {
    let mut inst = Instance::new("cli-base-url");
    inst.extra_config = "[poller]\nbase_url = \"api.amp.cisco.com\"\n".into();
    let out = run_cli(&inst, &["check-config"], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("poller.base_url"), "{stderr}");
}
