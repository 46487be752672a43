//! `trustgate simulate` as a process: it serves the tenant it was asked for, stops on SIGTERM,
//! and never writes the API key to its logs.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const KEY: &str = "SENTINEL-api-key-8c1f";

#[tokio::test]
async fn simulate_serves_and_keeps_the_key_out_of_its_logs() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trustgate"))
        .args([
            "--log-format",
            "json",
            "simulate",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--devices", "3", "--client-id", "cid", "--api-key", KEY])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            log.push('\n');
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["message"] == "SE API simulator listening." {
                return v["addr"].as_str().unwrap().to_string();
            }
        }
        panic!("exited before listening:\n{log}");
    })
    .await
    .expect("listening within 30 s");

    let http = reqwest::Client::new();
    let url = format!("http://{addr}/v1/computers");
    let page: serde_json::Value = http
        .get(&url)
        .basic_auth("cid", Some(KEY))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["metadata"]["results"]["total"], 3);
    let denied = http
        .get(&url)
        .basic_auth("cid", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), reqwest::StatusCode::UNAUTHORIZED);

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(killed.unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    while let Some(line) = lines.next_line().await.unwrap() {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        log.contains("SE API request"),
        "debug request logs were written:\n{log}"
    );
    assert!(
        !log.contains(KEY),
        "the API key leaked into the logs:\n{log}"
    );
}
