//! Running the built `trustgate` binary against the test broker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One test's topics, store and admin port.
pub struct Instance {
    pub dir: tempfile::TempDir,
    pub events: String,
    pub requests: String,
    pub responses: String,
    pub dlq: String,
    pub group: String,
    pub admin_port: u16,
    pub extra_config: String,
}

impl Instance {
    pub fn new(name: &str) -> Instance {
        let id = super::unique(name);
        Instance {
            dir: tempfile::tempdir().unwrap(),
            events: format!("{id}.events"),
            requests: format!("{id}.requests"),
            responses: format!("{id}.responses"),
            dlq: format!("{id}.dlq"),
            group: format!("{id}-deciders"),
            admin_port: super::free_port(),
            extra_config: String::new(),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        let path = self.dir.path().join("trustgate.toml");
        let text = format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{group}\"\nsession_timeout = \"6s\"\n\
             [topics]\nevents = \"{events}\"\nrequests = \"{requests}\"\nresponses = \"{responses}\"\ndlq = \"{dlq}\"\n\
             [store]\npath = \"{store}\"\ncache_bytes = 16777216\n[admin]\nlisten = \"127.0.0.1:{port}\"\n{extra}",
            brokers = super::brokers(),
            group = self.group,
            events = self.events,
            requests = self.requests,
            responses = self.responses,
            dlq = self.dlq,
            store = self.dir.path().join("store").display(),
            port = self.admin_port,
            extra = self.extra_config,
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts `trustgate run`.
    pub fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("trustgate.log"))
            .unwrap();
        Command::new(binary())
            .args(["run", "--config"])
            .arg(self.config_path())
            .env("RUST_LOG", "info,rdkafka=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning trustgate")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("trustgate.log")).unwrap_or_default()
    }

    pub fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    /// Waits until `/readyz` says ingest caught up, or panics with the log.
    pub async fn wait_ready(&self, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("trustgate exited with {status}:\n{}", self.log());
            }
            // Caught up is what the tests need; full readiness also wants a fresh feed, and
            // several tests publish records stamped hours ago on purpose.
            if let Ok(r) = reqwest::get(self.admin("/readyz")).await {
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                if body["caught_up"] == true {
                    return;
                }
            }

            assert!(
                Instant::now() < deadline,
                "trustgate not ready in time:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /v1/devices/{id}` as JSON, or `None` on 404.
    pub async fn device(&self, id: &str) -> Option<serde_json::Value> {
        let r = reqwest::get(self.admin(&format!("/v1/devices/{id}")))
            .await
            .unwrap();
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(r.status().is_success(), "device lookup: {}", r.status());
        Some(r.json().await.unwrap())
    }
}

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_trustgate"))
}

/// SIGTERM, then wait (bounded) for a clean exit.
pub fn stop(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("trustgate did not stop within 30s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
