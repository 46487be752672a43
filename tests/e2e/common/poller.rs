//! Driving `trustgate poll` against the simulator, and reading what it published.

use super::*;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use trustgate::topic::HEADER_KIND;

pub const CLIENT_ID: &str = "e2e-client";
/// A sentinel API key: it must never appear in any log line.
pub const KEY: &str = "SENTINEL-se-key-7f3a91c2";

/// The set-up every poller test starts with: a simulated SE tenant that accepts
/// [`CLIENT_ID`]/[`KEY`], and the instance's `[poller]` section pointing at it. For example
/// `Tenant::new(6).quiet().fast_poller().poller("page_size = 3").start(&mut inst)`.
pub struct Tenant {
    sim_args: Vec<String>,
    /// `[poller]` keys and their TOML values. A key set again keeps the later value (TOML
    /// itself refuses a key twice).
    poller: BTreeMap<String, String>,
}

impl Tenant {
    /// A tenant of `devices` devices with the simulator's own background activity, polled with
    /// the right credentials.
    pub fn new(devices: u32) -> Tenant {
        let tenant = Tenant {
            sim_args: vec!["--devices".into(), devices.to_string()],
            poller: BTreeMap::new(),
        };
        tenant
            .poller(&format!(
                "client_id = \"{CLIENT_ID}\"\ninitial_lookback = \"3h\""
            ))
            .key(KEY)
    }

    /// Nothing happens in the tenant unless the test makes it happen: no background noise, no
    /// compromises and no resolutions.
    pub fn quiet(self) -> Tenant {
        self.sim(&[
            "--noise-every",
            "0s",
            "--compromise-every",
            "0s",
            "--resolve-after",
            "0s",
        ])
    }

    /// More `trustgate simulate` arguments.
    pub fn sim(mut self, args: &[&str]) -> Tenant {
        self.sim_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// A poller that polls events every second and that its own quota does not hold back.
    pub fn fast_poller(self) -> Tenant {
        self.poller("events_interval = \"1s\"\nrequests_per_hour = 36000\nburst = 20")
    }

    /// More `[poller]` keys, as TOML lines (`page_size = 3`).
    pub fn poller(mut self, toml: &str) -> Tenant {
        for line in toml.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line.split_once('=').expect("a `key = value` line");
            self.poller
                .insert(key.trim().to_owned(), value.trim().to_owned());
        }
        self
    }

    /// The API key the poller sends (the simulator wants [`KEY`]).
    pub fn key(self, key: &str) -> Tenant {
        self.poller(&format!("api_key = \"{key}\""))
    }

    /// Starts the simulator and sets `inst.extra_config` to the `[poller]` section.
    pub fn start(mut self, inst: &mut Instance) -> Simulator {
        let mut args = vec!["--client-id", CLIENT_ID, "--api-key", KEY];
        args.extend(self.sim_args.iter().map(String::as_str));
        let sim = Simulator::spawn(&inst.dir.path().join("simulator.log"), &args);
        let state = inst.dir.path().join("poller-state");
        self = self.poller(&format!(
            "base_url = \"{}\"\nstate_path = \"{}\"",
            sim.base_url(),
            state.display()
        ));
        inst.extra_config = std::iter::once("[poller]".to_owned())
            .chain(self.poller.iter().map(|(k, v)| format!("{k} = {v}")))
            .map(|line| line + "\n")
            .collect();
        sim
    }
}

pub fn poller_log(inst: &Instance) -> PathBuf {
    inst.dir.path().join("poller.log")
}

/// Starts `trustgate poll`, appending to `poller.log`, with debug logging (to catch secrets);
/// killed when the returned handle is dropped.
pub fn spawn_poller(inst: &Instance) -> Spawned {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(poller_log(inst))
        .unwrap();
    let child = Command::new(binary())
        .args(["poll", "--config"])
        .arg(inst.config_path())
        .env("RUST_LOG", "debug,rdkafka=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawning trustgate poll");
    Spawned::new(child)
}

pub fn read_log(inst: &Instance) -> String {
    std::fs::read_to_string(poller_log(inst)).unwrap_or_default()
}

pub fn assert_key_never_logged(inst: &Instance) {
    let poller = read_log(inst);
    assert!(!poller.is_empty(), "the poller logged nothing");
    assert!(
        !poller.contains(KEY),
        "the API key appears in the poller's log"
    );
    assert!(
        !inst.log().contains(KEY),
        "the API key appears in trustgate run's log"
    );
}

/// `id:event_type_id` → raw bytes of every simulated device event (account events have no
/// connector GUID and are not published).
pub fn device_events(raw: &[String]) -> BTreeMap<String, String> {
    raw.iter()
        .filter_map(|r| {
            let e: trustgate::se::Event = serde_json::from_str(r).ok()?;
            e.connector_guid()?;
            Some((format!("{}:{}", e.id?, e.event_type_id), r.clone()))
        })
        .collect()
}

pub fn kind(m: &OwnedMessage) -> String {
    header_str(m, HEADER_KIND).unwrap_or_default()
}

pub fn payload(m: &OwnedMessage) -> &str {
    std::str::from_utf8(m.payload().unwrap_or_default()).unwrap()
}

/// Event records on the topic, by `id:event_type_id`, each with its copies.
pub fn events_on_topic(msgs: &[OwnedMessage]) -> BTreeMap<String, Vec<&OwnedMessage>> {
    let mut out: BTreeMap<String, Vec<&OwnedMessage>> = BTreeMap::new();
    for m in msgs.iter().filter(|m| kind(m) == "event") {
        let e: trustgate::se::Event = serde_json::from_str(payload(m)).unwrap();
        out.entry(format!("{}:{}", e.id.unwrap(), e.event_type_id))
            .or_default()
            .push(m);
    }
    out
}

/// Reads the topic until `done` holds or `timeout` passes; returns the last read.
pub fn wait_for_topic(
    topic: &str,
    timeout: Duration,
    done: impl Fn(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    let deadline = Instant::now() + timeout;
    loop {
        let msgs = read_topic(topic, usize::MAX, Duration::from_secs(2));
        if done(&msgs) || Instant::now() > deadline {
            return msgs;
        }
    }
}

pub fn heartbeats(msgs: &[OwnedMessage]) -> usize {
    msgs.iter().filter(|m| kind(m) == "heartbeat").count()
}

pub fn missing<'a>(
    expected: &'a BTreeMap<String, String>,
    msgs: &[OwnedMessage],
) -> Vec<&'a String> {
    let got = events_on_topic(msgs);
    expected.keys().filter(|k| !got.contains_key(*k)).collect()
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
