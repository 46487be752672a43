//! The `se-simulator` binary as a process: it logs the address it bound, serves SE's API there
//! with Basic auth, and exits 0 on SIGTERM or SIGINT.

use rstest::rstest;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

const ID: &str = "cid";
const KEY: &str = "binary-test-key";

/// `se-simulator` on 127.0.0.1:0 with JSON logs on a pipe.
fn spawn() -> Child {
    Command::new(env!("CARGO_BIN_EXE_se-simulator"))
        .args(["--log-format", "json", "--listen", "127.0.0.1:0"])
        .args(["--devices", "3", "--client-id", ID, "--api-key", KEY])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning se-simulator")
}

/// Reads log lines (kept in `log`) until the ready line; returns its `addr`.
async fn bound_addr(lines: &mut Lines<BufReader<ChildStderr>>, log: &mut String) -> String {
    while let Some(line) = lines.next_line().await.unwrap() {
        log.push_str(&line);
        log.push('\n');
        let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if entry["message"] == "Simulated SE tenant ready." {
            return entry["addr"].as_str().expect("an addr field").to_string();
        }
    }
    panic!("exited before it was ready:\n{log}");
}

#[rstest]
#[case::sigterm("-TERM")]
#[case::sigint("-INT")]
#[tokio::test]
async fn serves_on_the_logged_address_and_exits_0_on_a_signal(#[case] signal: &str) {
    let mut child = spawn();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let addr = tokio::time::timeout(Duration::from_secs(30), bound_addr(&mut lines, &mut log))
        .await
        .expect("ready within 30 s");
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );

    let version = reqwest::Client::new()
        .get(format!("http://{addr}/v1/version"))
        .basic_auth(ID, Some(KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(version.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = version.json().await.unwrap();
    assert_eq!(body["version"], "v1.2.0");

    let pid = child.id().expect("still running").to_string();
    let sent = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal} {pid}");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("stops within 10 s of the signal")
        .unwrap();
    while let Some(line) = lines.next_line().await.unwrap() {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("Shutting down."), "{log}");
}
