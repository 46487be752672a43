//! Running the built `trustgate run` against the test broker.
//!
//! The admin listener binds `127.0.0.1:0`; its address comes from the running process's own
//! log line (`Admin listener started.`), read from where that run's lines start in the log.
//! Each run is a [`Spawned`]: a test that fails while it runs kills it as it unwinds.

use super::process::{announced_addr, wait_announced, Spawned};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What announces the admin listener's address in the log.
const ADMIN_STARTED: &str = "Admin listener started.";
/// What announces the webhook listener's address in the log.
const WEBHOOK_STARTED: &str = "Webhook listener started.";

/// One test's topics and store, and the `trustgate run` processes started on them.
pub struct Instance {
    pub dir: tempfile::TempDir,
    pub events: String,
    pub requests: String,
    pub responses: String,
    pub dlq: String,
    /// The decision audit topic: each test its own, not the shared default.
    pub audit: String,
    pub group: String,
    pub extra_config: String,
    /// The broker this instance's runs use; the shared test broker when `None`.
    pub brokers: Option<String>,
    /// The latest run's place in the shared log and the admin address it announced. A mutex
    /// because tests share the instance (`&Instance`) while it runs.
    run: Mutex<CurrentRun>,
}

/// The latest `trustgate run` started by [`Instance::spawn`].
#[derive(Default)]
struct CurrentRun {
    /// Byte offset in `trustgate.log` where its lines start (earlier runs' lines come before).
    log_from: usize,
    /// Learned once from its log.
    admin: Option<SocketAddr>,
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
            audit: format!("{id}.audit"),
            group: format!("{id}-deciders"),
            extra_config: String::new(),
            brokers: None,
            run: Mutex::new(CurrentRun::default()),
        }
    }

    /// Writes the configuration and returns its path. Its admin address is the running
    /// instance's once it announced one (so `trustgate decide` and `inspect` reach it), and
    /// port 0 before.
    pub fn config_path(&self) -> PathBuf {
        self.write_config(self.admin_addr())
    }

    fn write_config(&self, admin: Option<SocketAddr>) -> PathBuf {
        let path = self.dir.path().join("trustgate.toml");
        let admin = admin.unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
        let text = format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{group}\"\n\
             [topics]\nevents = \"{events}\"\nrequests = \"{requests}\"\nresponses = \"{responses}\"\ndlq = \"{dlq}\"\naudit = \"{audit}\"\n\
             [store]\npath = \"{store}\"\ncache_bytes = 16777216\n[admin]\nlisten = \"{admin}\"\n{extra}",
            brokers = self.brokers.as_deref().unwrap_or_else(|| super::brokers()),
            group = self.group,
            events = self.events,
            requests = self.requests,
            responses = self.responses,
            dlq = self.dlq,
            audit = self.audit,
            store = self.dir.path().join("store").display(),
            extra = self.extra_config,
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Starts `trustgate run`, killed when the returned handle is dropped.
    pub fn spawn(&self) -> Spawned {
        self.spawn_with(|_| {})
    }

    /// Starts `trustgate run` after `adjust` added to its command (environment variables, a
    /// log level of its own).
    pub fn spawn_with(&self, adjust: impl FnOnce(&mut Command)) -> Spawned {
        let mut run = self.run.lock().unwrap();
        *run = CurrentRun {
            log_from: self.log().len(),
            admin: None,
        };
        let config = self.write_config(None);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("trustgate.log"))
            .unwrap();
        let mut command = Command::new(binary());
        command
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,rdkafka=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        adjust(&mut command);
        Spawned::new(command.spawn().expect("spawning trustgate"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("trustgate.log")).unwrap_or_default()
    }

    /// The latest run's lines of the log.
    fn run_log(&self, from: usize) -> String {
        self.log().get(from..).unwrap_or_default().to_owned()
    }

    /// The admin address the latest run announced, if it did yet.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        let mut run = self.run.lock().unwrap();
        if run.admin.is_none() {
            run.admin = announced_addr(&self.run_log(run.log_from), ADMIN_STARTED);
        }
        run.admin
    }

    /// The running instance's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A Prometheus counter or gauge's value (its first sample line starting with `name`) from
    /// the running instance's `/metrics`; 0 when it has none yet.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The latest run's admin URL for `path`; waits (bounded) for the run to announce it.
    pub fn admin(&self, path: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            if let Some(addr) = self.admin_addr() {
                break addr;
            }
            assert!(
                Instant::now() < deadline,
                "trustgate never announced its admin listener:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        format!("http://{addr}{path}")
    }

    /// The webhook address the latest run (`child`) announces; waits for it (bounded).
    pub fn webhook_addr(&self, child: &mut Child) -> SocketAddr {
        let from = self.run.lock().unwrap().log_from;
        wait_announced(child, || self.run_log(from), WEBHOOK_STARTED)
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
            if let Some(addr) = self.admin_addr() {
                if let Ok(r) = reqwest::get(format!("http://{addr}/readyz")).await {
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    if body["caught_up"] == true {
                        return;
                    }
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

/// Runs `trustgate ARGS --config <inst's config>` with `stdin` fed to it, and waits for it.
pub fn run_cli(inst: &Instance, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(inst.config_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
