//! `trustgate simulate` as a child process, with its `/_sim/` hooks.

use super::process::{wait_announced, Spawned};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

/// A running simulator; killed on drop.
pub struct Simulator {
    /// Held for its drop, which stops the simulator.
    _child: Spawned,
    /// Where it listens, as it announced in its log.
    pub addr: SocketAddr,
    http: reqwest::Client,
}

impl Simulator {
    /// Starts `trustgate simulate` on `127.0.0.1:0` with `args`, logging to `log`; returns once
    /// it announced the address it bound.
    pub fn spawn(log: &Path, args: &[&str]) -> Simulator {
        let out = std::fs::File::create(log).unwrap();
        let mut child = Spawned::new(
            Command::new(super::binary())
                .args(["simulate", "--listen", "127.0.0.1:0"])
                .args(args)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("spawning trustgate simulate"),
        );
        let read_log = || std::fs::read_to_string(log).unwrap_or_default();
        let addr = wait_announced(&mut child, read_log, "SE API simulator listening.");
        Simulator {
            _child: child,
            addr,
            http: reqwest::Client::new(),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hook(&self, path: &str) -> String {
        format!("{}/_sim/{path}", self.base_url())
    }

    /// `/_sim/stats`: request counts by status, 429s, the event and computer counts.
    pub async fn stats(&self) -> serde_json::Value {
        self.http
            .get(self.hook("stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Every event the simulated tenant holds, as the raw JSON text of each.
    pub async fn events(&self) -> Vec<String> {
        let body = self
            .http
            .get(self.hook("events"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let all: Vec<&serde_json::value::RawValue> = serde_json::from_str(&body).unwrap();
        all.into_iter().map(|r| r.get().to_owned()).collect()
    }

    /// Every computer as it stands now.
    pub async fn computers(&self) -> Vec<serde_json::Value> {
        self.http
            .get(self.hook("computers"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Queues a fault, e.g. `{"kind":"status","status":503,"count":3}`.
    pub async fn fault(&self, spec: serde_json::Value) {
        let r = self
            .http
            .post(self.hook("faults"))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "fault {spec}: {}", r.status());
    }

    /// Adds `count` device events sharing one timestamp (now).
    pub async fn burst(&self, count: usize) {
        let r = self
            .http
            .post(self.hook("burst"))
            .json(&serde_json::json!({ "count": count }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "burst: {}", r.status());
    }

    /// Adds events exactly as given (one object, or an array).
    pub async fn inject(&self, body: &str) {
        let r = self
            .http
            .post(self.hook("events"))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "inject: {}", r.status());
    }

    /// Compromises a computer now (a Threat Detected event; `is_compromised` flips).
    pub async fn compromise(&self, guid: &str) {
        let r = self
            .http
            .post(self.hook(&format!("compromise/{guid}")))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "compromise: {}", r.status());
    }

    /// Resolves a computer's compromise now.
    pub async fn resolve(&self, guid: &str) {
        let r = self
            .http
            .post(self.hook(&format!("resolve/{guid}")))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "resolve: {}", r.status());
    }
}
