//! The admin listener's guard on the real binary (#10 item 8): `[admin] token` makes `/v1/*` and
//! `/metrics` ask for `Authorization: Bearer <token>` while the probes stay open, `trustgate
//! decide` sends the token to a running instance, a client that never finishes its request head
//! is cut off, and a non-loopback `listen` without a token is refused before anything starts.

use crate::common::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "e2e-admin-token-4c1d";

async fn status(method: reqwest::Method, url: String, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .header("content-type", "application/json")
        .body(r#"{"request_id":"a-1","application":"vpn","device":{"trusted":true,"hostname":"adm-1"}}"#)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_token_v1_and_metrics_need_it_and_the_cli_sends_it() {
    let inst = Instance::new("admin-auth");
    create_topic(&inst.events, 1).await;
    let computer = r#"{"connector_guid":"adm-1","hostname":"ADM-1","operating_system":"Windows 11","is_compromised":true}"#;
    publish(&producer(), &inst.events, &Out::new(computer)).await;
    let mut child = inst.spawn_with(|run| {
        run.env("TRUSTGATE_ADMIN__TOKEN", TOKEN);
    });
    // `wait_ready` polls /readyz without a token: the probes stay open.
    inst.wait_ready(&mut child).await;
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    assert_eq!(
        status(get.clone(), inst.admin("/healthz"), None).await.0,
        200
    );

    for (method, path) in [
        (post.clone(), "/v1/decide"),
        (get.clone(), "/v1/devices/adm-1"),
        (get.clone(), "/v1/devices/adm-1/history"),
        (get.clone(), "/metrics"),
    ] {
        for token in [None, Some("wrong")] {
            let (code, body) = status(method.clone(), inst.admin(path), token).await;
            assert_eq!(code, 401, "{path} with {token:?}");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&body).unwrap(),
                serde_json::json!({"error": "unauthorized"}),
                "{path}"
            );
        }
        let (code, body) = status(method, inst.admin(path), Some(TOKEN)).await;
        assert_eq!(code, 200, "{path} with the token: {body}");
    }

    // The CLI reaches the running instance (it holds the store) with the configured token.
    let mut cli = Command::new(binary())
        .args(["decide", "--config"])
        .arg(inst.config_path())
        .env("TRUSTGATE_ADMIN__TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cli.stdin
        .take()
        .unwrap()
        .write_all(br#"{"request_id":"cli-a","application":"vpn","device":{"trusted":true,"hostname":"adm-1"}}"#)
        .unwrap();
    let out = cli.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(resp["decision"], "deny", "{resp}");

    // A client that opens a connection and never finishes its request head is cut off (the
    // header-read timeout is 10 s; the bound here only keeps a broken build from hanging).
    let addr = inst.admin("").trim_start_matches("http://").to_owned();
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = slow.read_to_end(&mut rest);
    assert!(
        read.is_ok(),
        "a half-sent request head still held its connection after {:?}: {read:?}",
        started.elapsed()
    );
    assert!(stop(&mut child).success());
}

#[test]
fn a_non_loopback_listener_without_a_token_is_refused_at_start_and_by_check_config() {
    let inst = Instance::new("admin-listen");
    // TEST-NET-1: not loopback, and not an address of this host, so even a build without the
    // check could not listen beyond loopback here.
    for command in ["run", "check-config"] {
        let mut child = Command::new(binary())
            .args([command, "--config"])
            .arg(inst.config_path())
            .env("TRUSTGATE_ADMIN__LISTEN", "192.0.2.1:9464")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Bounded: a build without the check goes on starting instead of exiting.
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{command} did not refuse the configuration within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("admin.listen") && stderr.contains("admin.token"),
            "{command} names both keys: {stderr}"
        );
    }
}
