//! Secrets never reach logs or printed configuration, even at debug level.

use crate::common::*;
use std::process::Command;

const SENTINEL: &str = "SENTINEL-7f3a9c-do-not-log";

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_secrets_appear_in_no_output() {
    let mut inst = Instance::new("secrets");
    inst.extra_config = format!(
        "[kafka.properties]\n\"ssl.key.password\" = \"{SENTINEL}-props\"\n\
         [poller]\nclient_id = \"c\"\napi_key = \"{SENTINEL}-api\"\n\
         [webhook]\nsecrets = [\"whsec_{SENTINEL}\"]\n"
    );
    let config = inst.config_path();
    let check = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(&config)
        .env("TRUSTGATE_KAFKA__SASL_PASSWORD", format!("{SENTINEL}-sasl"))
        .env("TRUSTGATE_ADMIN__TOKEN", format!("{SENTINEL}-admin"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(printed.contains("[REDACTED]"), "{printed}");
    assert!(
        !printed.contains(SENTINEL),
        "check-config printed a secret:\n{printed}"
    );

    let mut child = inst.spawn_with(|run| {
        run.env("TRUSTGATE_KAFKA__SASL_PASSWORD", format!("{SENTINEL}-sasl"))
            .env("TRUSTGATE_ADMIN__TOKEN", format!("{SENTINEL}-admin"))
            .env("RUST_LOG", "debug");
    });
    inst.wait_ready(&mut child).await;
    // Requests with a wrong and the right admin token, so their handling is in the debug log.
    for token in ["wrong".to_owned(), format!("{SENTINEL}-admin")] {
        let r = reqwest::Client::new()
            .get(inst.admin("/metrics"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().is_success(), token != "wrong");
    }
    assert!(stop(&mut child).success());
    let log = inst.log();
    assert!(
        log.contains("Decision worker started."),
        "ran for real:\n{log}"
    );
    assert!(!log.contains(SENTINEL), "a secret reached the log");
}
