//! Fleet catch-up (issue #11): a fresh instance, started as its own process, catching up an
//! events topic that holds a whole fleet, measured from outside the way an operator sees it.
//!
//! The bench fills an events topic of its own with one SE computer record per device and a
//! number of SE events spread over the devices, times a bare consumer reading it (the
//! broker's and client's ceiling), then starts `trustgate run` (this executable) as a child
//! process on an empty store with that topic as its events topic, and polls `/readyz` until it
//! answers 200 (caught up, fed, fresh: the policy's `stale_after` must be longer than the fill
//! and the catch-up take, or the records age out before the instance can be ready). While it runs, the child's `/proc/<pid>/status` is
//! sampled: `VmHWM` is the peak resident memory of the ingesting process alone (not the
//! bench's producer and consumer, which live in this process). Once ready, the child settles
//! for a few seconds and its `VmRSS` is read (memory once caught up); then it is stopped with
//! SIGTERM and started again on the same store, and the time to ready again is the restart.
//! Once the restarted child is ready (full state, fresh records), the bench's four phases run
//! against it through the broker ([`super::run_with`]), every request naming a device of the
//! fleet ([`Naming::Fleet`]): decision latency and throughput on a store of that size, against
//! the echo floor. Its replies are sorted by outcome: figures made of `not_ready` answers (or
//! of misses) would measure no decision, and [`CatchUpResult::check_decisions`] fails the run.
//!
//! Everything it creates (topics, store directory, the child's log) is named after the run;
//! the topics and the store are deleted afterwards, the log is kept when the run failed.

use super::ingest::{await_all, plain_consume};
use super::load::Naming;
use super::report::Report;
use super::topics::BenchTopics;
use super::BenchArgs;
use anyhow::Context;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use trustgate::config::Settings;
use trustgate::kafka::{client_config, enqueue, Role};
use trustgate::topic::{record_headers, Kind};

/// How long a child may take to answer `/readyz` 200.
const READY_BUDGET: Duration = Duration::from_secs(900);
/// How often the child's readiness and memory are read.
const POLL: Duration = Duration::from_millis(20);
/// How long the child runs on after it is ready before "memory once caught up" is read.
const SETTLE: Duration = Duration::from_secs(5);

/// What the catch-up measurement found.
#[derive(Debug, Clone, Serialize)]
pub struct CatchUpResult {
    pub devices: u64,
    pub events: u64,
    pub records: u64,
    /// Seconds the bench took to produce the topic (not part of any figure).
    pub fill_s: f64,
    /// A bare consumer reading the whole topic, records/s.
    pub plain_consume_rps: f64,
    /// Child spawned → its admin listener answered `/healthz` (process start, store open).
    pub listening_s: f64,
    /// Child spawned → `/readyz` 200 (caught up with every record).
    pub ready_s: f64,
    /// `records / ready_s`: the catch-up rate including start-up.
    pub catch_up_rps: f64,
    /// `records / (ready_s - listening_s)`: the rate once the process is up.
    pub apply_rps: f64,
    /// `catch_up_rps / plain_consume_rps`.
    pub ratio: f64,
    /// `VmHWM` of the child when it became ready: peak resident memory during catch-up.
    pub peak_rss_mib: f64,
    /// `VmRSS` of the child [`SETTLE`] after it became ready.
    pub caught_up_rss_mib: f64,
    /// The store directory's size on disk once caught up and stopped.
    pub store_mib: f64,
    /// SIGTERM → the child exited.
    pub stop_s: f64,
    /// Restart on the same store: spawned → `/readyz` 200.
    pub restart_ready_s: f64,
    /// Restart: spawned → `/healthz` answered.
    pub restart_listening_s: f64,
    /// `VmHWM` of the restarted child when ready.
    pub restart_peak_rss_mib: f64,
    /// `VmRSS` of the restarted child [`SETTLE`] after it became ready.
    pub restart_rss_mib: f64,
    /// The four phases against the restarted child (put in the JSON by [`Self::to_json`]).
    #[serde(skip)]
    pub e2e: Option<Report>,
}

impl CatchUpResult {
    pub fn to_json(&self) -> anyhow::Result<String> {
        let mut json = serde_json::to_value(self)?;
        if let Some(e2e) = &self.e2e {
            json["e2e"] = e2e.to_json();
        }
        Ok(json.to_string())
    }

    /// Fails when the end-to-end phases measured anything but decisions on fleet devices: a
    /// `not_ready` reply means the worker answered without its state, a miss that the requests
    /// did not name the fleet, and either makes the figures a lie.
    pub fn check_decisions(&self) -> anyhow::Result<()> {
        let Some(e2e) = &self.e2e else {
            return Ok(());
        };
        let o = e2e.worker_outcomes();
        anyhow::ensure!(
            o.not_ready == 0 && o.unknown_device == 0 && o.other == 0 && o.allow + o.deny > 0,
            "the end-to-end figures are not decisions on the caught-up fleet: {} allow, {} deny, \
             {} not_ready, {} unknown device, {} other",
            o.allow,
            o.deny,
            o.not_ready,
            o.unknown_device,
            o.other
        );
        Ok(())
    }

    pub fn to_text(&self) -> String {
        let mut out = self.catch_up_text();
        if let Some(e2e) = &self.e2e {
            out += &format!(
                "\nend to end on the restarted, ready child ({} devices; requests name them \
                 uniformly by MAC and hostname):\n",
                self.devices
            );
            out += &e2e.to_text();
        }
        out
    }

    fn catch_up_text(&self) -> String {
        format!(
            "catch-up: {} devices + {} events = {} records (topic filled in {:.1} s)\n\
             plain consume        {:>10.0} records/s\n\
             catch-up (wall)      {:>10.0} records/s  ({:.2}x plain; ready after {:.1} s, listening after {:.2} s)\n\
             catch-up (applying)  {:>10.0} records/s\n\
             memory               peak (VmHWM) {:.0} MiB during catch-up; {:.0} MiB (VmRSS) {} s after ready; store {:.0} MiB on disk\n\
             restart              ready after {:.2} s (listening after {:.2} s; stop took {:.2} s); VmHWM {:.0} MiB, VmRSS {:.0} MiB\n",
            self.devices,
            self.events,
            self.records,
            self.fill_s,
            self.plain_consume_rps,
            self.catch_up_rps,
            self.ratio,
            self.ready_s,
            self.listening_s,
            self.apply_rps,
            self.peak_rss_mib,
            self.caught_up_rss_mib,
            SETTLE.as_secs(),
            self.store_mib,
            self.restart_ready_s,
            self.restart_listening_s,
            self.stop_s,
            self.restart_peak_rss_mib,
            self.restart_rss_mib,
        )
    }
}

/// The record at position `n` of a topic of `devices` computers and `events` events: the
/// events are spread evenly between the computers, and event `j` is about device
/// `j * 7919 mod devices` (so events land on devices all over the fleet, some before their
/// computer record, as after a poller outage).
pub(super) fn record(n: u64, devices: u64, events: u64) -> (String, Kind, String) {
    let total = devices + events;
    // How many events come before position n, and whether n itself is one.
    let events_before = |n: u64| ((u128::from(n) * u128::from(events)) / u128::from(total)) as u64;
    let j = events_before(n);
    let is_event = events_before(n + 1) > j;
    let i = if is_event {
        j.wrapping_mul(7_919) % devices
    } else {
        n - j
    };
    let guid = format!("fleet-{i:08}-7d1c-4e2a-9b3f");
    let mac = format!(
        "02:00:{:02x}:{:02x}:{:02x}:01",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    );
    let value = if is_event {
        let ty = if j.is_multiple_of(2) {
            1_090_519_054u64
        } else {
            553_648_130
        };
        format!(
            r#"{{"id":{id},"timestamp":1767225600,"date":"2026-01-01T00:00:00+00:00","event_type":"Bench","event_type_id":{ty},"detection_id":"{id}","connector_guid":"{guid}","severity":"High","computer":{{"connector_guid":"{guid}","hostname":"fleet-{i}.corp.example.com","active":true,"network_addresses":[{{"ip":"10.0.0.1","mac":"{mac}"}}]}},"file":{{"disposition":"Malicious","file_name":"x.exe","identity":{{"sha256":"12081e6ca366ad7d08368fbc7d4107605a9b75d27c671e7e0a58588f94be5837"}}}}}}"#,
            id = 6_411_425_813_945_647_000u64 + j,
        )
    } else {
        format!(
            r#"{{"connector_guid":"{guid}","hostname":"fleet-{i}.corp.example.com","windows_processor_id":"{i:016x}","active":true,"connector_version":"7.5.3.20938","operating_system":"Windows 10","os_version":"10.0.19044.1466","internal_ips":["10.0.0.1"],"is_compromised":{bad},"network_addresses":[{{"mac":"{mac}","ip":"10.0.0.1"}}],"last_seen":"2026-01-01T00:00:00Z","faults":[]}}"#,
            bad = i.is_multiple_of(50),
        )
    };
    let kind = if is_event {
        Kind::Event
    } else {
        Kind::Computer
    };
    (guid, kind, value)
}

/// Fills `topic` with the fleet and waits until every record is acknowledged.
async fn fill(settings: &Settings, topic: &str, devices: u64, events: u64) -> anyhow::Result<()> {
    let producer: FutureProducer = client_config(&settings.kafka, Role::Producer).create()?;
    let mut pending = Vec::with_capacity(10_000);
    for n in 0..devices + events {
        let (key, kind, value) = record(n, devices, events);
        let headers = record_headers(kind, "bench", Some(chrono::Utc::now()));
        let rec = FutureRecord::to(topic)
            .key(key.as_bytes())
            .payload(value.as_bytes())
            .headers(headers);
        match enqueue(&producer, rec).await {
            Ok(delivery) => pending.push(delivery),
            Err(e) => return Err(e).context("filling the fleet events topic"),
        }
        if pending.len() == pending.capacity() {
            await_all(&mut pending).await?;
        }
    }
    await_all(&mut pending).await
}

/// A `trustgate run` child process isolated from the configured deployment: its own topics,
/// consumer group, store and admin port, no sources, no audit.
struct Instance {
    child: Child,
    admin: SocketAddr,
    spawned: Instant,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Instance {
    fn spawn(
        config: Option<&Path>,
        events: &str,
        store: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg("run");
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        cmd.envs([
            ("TRUSTGATE_TOPICS__EVENTS", events.to_owned()),
            ("TRUSTGATE_TOPICS__REQUESTS", format!("{events}.requests")),
            ("TRUSTGATE_TOPICS__RESPONSES", format!("{events}.responses")),
            ("TRUSTGATE_TOPICS__DLQ", format!("{events}.dlq")),
            ("TRUSTGATE_TOPICS__AUDIT", format!("{events}.audit")),
            ("TRUSTGATE_KAFKA__GROUP_ID", format!("{events}-deciders")),
            ("TRUSTGATE_STORE__PATH", store.display().to_string()),
            ("TRUSTGATE_ADMIN__LISTEN", admin.to_string()),
            ("TRUSTGATE_POLLER__ENABLED", "false".to_owned()),
            ("TRUSTGATE_WEBHOOK__ENABLED", "false".to_owned()),
            ("TRUSTGATE_AUDIT__ENABLED", "false".to_owned()),
            ("TRUSTGATE_AMQP__ENABLED", "false".to_owned()),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        let spawned = Instant::now();
        let child = cmd.spawn().context("starting `trustgate run`")?;
        Ok(Instance {
            child,
            admin,
            spawned,
        })
    }

    /// The HTTP status of `GET path` on the admin listener, or `None` when nothing answers.
    fn status(&self, path: &str) -> Option<u16> {
        let mut stream =
            TcpStream::connect_timeout(&self.admin, Duration::from_millis(200)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.admin
        )
        .ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }

    /// Waits until `/readyz` answers 200; returns (spawn → `/healthz` answered, spawn → ready).
    fn await_ready(&mut self) -> anyhow::Result<(Duration, Duration)> {
        let mut listening = None;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("`trustgate run` exited before it was ready: {status}");
            }
            anyhow::ensure!(
                self.spawned.elapsed() < READY_BUDGET,
                "`trustgate run` was not ready within {READY_BUDGET:?}"
            );
            if listening.is_none() && self.status("/healthz").is_some() {
                listening = Some(self.spawned.elapsed());
            }
            if listening.is_some() && self.status("/readyz") == Some(200) {
                return Ok((listening.unwrap_or_default(), self.spawned.elapsed()));
            }
            std::thread::sleep(POLL);
        }
    }

    /// A field of the child's `/proc/<pid>/status`, in MiB.
    fn status_mib(&self, field: &str) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("reading the child's /proc status")?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {field} in the child's /proc status"))?;
        Ok(kib / 1024.0)
    }

    /// SIGTERM, then waits for the exit (the graceful stop flushes the store).
    fn stop(mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        let deadline = started + Duration::from_secs(60);
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(started.elapsed());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                anyhow::bail!("`trustgate run` did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // A child left behind by a failed measurement is stopped with it.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// One start of the child up to ready: (listening, ready, VmHWM at ready, VmRSS after settling).
fn start_until_ready(
    config: Option<&Path>,
    events: &str,
    store: &Path,
    log: &Path,
) -> anyhow::Result<(Instance, Duration, Duration, f64, f64)> {
    let mut instance = Instance::spawn(config, events, store, log)?;
    let (listening, ready) = instance.await_ready()?;
    let peak = instance.status_mib("VmHWM:")?;
    std::thread::sleep(SETTLE);
    let settled = instance.status_mib("VmRSS:")?;
    Ok((instance, listening, ready, peak, settled))
}

/// Fills the topic, reads it plainly, then catches it up (and restarts) with a child process;
/// with `e2e`, runs the four phases against the restarted child before stopping it.
pub async fn measure(
    settings: &Settings,
    config: Option<PathBuf>,
    topics: &BenchTopics,
    devices: u64,
    events: u64,
    e2e: Option<&BenchArgs>,
) -> anyhow::Result<CatchUpResult> {
    anyhow::ensure!(devices > 0, "--catch-up-devices must be at least 1");
    let events_topic = topics.events.as_str();
    let records = devices + events;
    super::topics::create(settings, &[(events_topic, settings.topics.partitions)]).await?;
    let filled = Instant::now();
    fill(settings, events_topic, devices, events).await?;
    let fill_s = filled.elapsed().as_secs_f64();
    tracing::info!(records, fill_s, "Fleet topic filled.");
    let plain = {
        let (settings, topic) = (settings.clone(), events_topic.to_owned());
        tokio::task::spawn_blocking(move || plain_consume(&settings, &topic, records)).await??
    };
    let work = std::env::temp_dir().join(format!("{events_topic}-catch-up"));
    std::fs::create_dir_all(&work)?;
    let (store, log) = (work.join("store"), work.join("trustgate-run.log"));
    let topic = events_topic.to_owned();
    let measured = async {
        let (result, again) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<(CatchUpResult, Instance)> {
                let config = config.as_deref();
                let (first, listening, ready, peak, settled) =
                    start_until_ready(config, &topic, &store, &log)?;
                let stop = first.stop()?;
                let store_bytes = dir_bytes(&store);
                let (again, r_listening, r_ready, r_peak, r_settled) =
                    start_until_ready(config, &topic, &store, &log)?;
                let catch_up_rps = records as f64 / ready.as_secs_f64();
                let result = CatchUpResult {
                    devices,
                    events,
                    records,
                    fill_s,
                    plain_consume_rps: plain,
                    listening_s: listening.as_secs_f64(),
                    ready_s: ready.as_secs_f64(),
                    catch_up_rps,
                    apply_rps: records as f64 / (ready - listening).as_secs_f64().max(1e-3),
                    ratio: catch_up_rps / plain,
                    peak_rss_mib: peak,
                    caught_up_rss_mib: settled,
                    store_mib: store_bytes as f64 / (1024.0 * 1024.0),
                    stop_s: stop.as_secs_f64(),
                    restart_ready_s: r_ready.as_secs_f64(),
                    restart_listening_s: r_listening.as_secs_f64(),
                    restart_peak_rss_mib: r_peak,
                    restart_rss_mib: r_settled,
                    e2e: None,
                };
                Ok((result, again))
            })
            .await??;
        let mut result = result;
        if let Some(args) = e2e {
            // The child's requests topic (see `Instance::spawn`); the bench's reply and echo
            // topics are the run's own.
            let requests = format!("{events_topic}.requests");
            tracing::info!(%requests, "Restarted child ready; end-to-end phases.");
            let report =
                super::run_with(settings, args, topics, &requests, Naming::Fleet { devices })
                    .await
                    .context("end-to-end phases against the restarted child")?;
            result.e2e = Some(report);
        }
        tokio::task::spawn_blocking(move || again.stop()).await??;
        anyhow::Ok(result)
    }
    .await;
    match &measured {
        Ok(_) => {
            // The child's log says what the figures alone do not (the index rebuild's time,
            // what the catch-up's end gave back to the system): kept on request.
            if let Some(keep) = std::env::var_os("TRUSTGATE_BENCH_CHILD_LOG") {
                if let Err(e) = std::fs::copy(work.join("trustgate-run.log"), &keep) {
                    tracing::warn!(error = %e, "Cannot keep the child's log.");
                }
            }
            if let Err(e) = std::fs::remove_dir_all(&work) {
                tracing::warn!(error = %e, path = %work.display(), "Cannot remove the catch-up store.");
            }
        }
        Err(_) => eprintln!(
            "catch-up failed; the instance's log is in {}",
            work.join("trustgate-run.log").display()
        ),
    }
    measured
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The topic holds exactly one computer per device and the asked number of events, each
    /// event about a device of the fleet.
    #[test]
    fn the_fleet_topic_holds_one_computer_per_device_and_the_events() {
        for (devices, events) in [(10u64, 2u64), (7, 0), (5, 11), (1, 1)] {
            let mut computers = BTreeSet::new();
            let mut seen_events = 0;
            for n in 0..devices + events {
                let (key, kind, value) = record(n, devices, events);
                let doc: serde_json::Value = serde_json::from_str(&value).unwrap();
                assert_eq!(doc["connector_guid"].as_str(), Some(key.as_str()));
                let i: u64 = key["fleet-".len().."fleet-".len() + 8].parse().unwrap();
                assert!(i < devices, "device {i} outside a fleet of {devices}");
                match kind {
                    Kind::Computer => assert!(computers.insert(i), "device {i} twice"),
                    Kind::Event => seen_events += 1,
                    other => panic!("unexpected kind {other:?}"),
                }
            }
            assert_eq!(computers.len() as u64, devices);
            assert_eq!(seen_events, events);
        }
    }

    /// A run whose worker answered `not_ready` (or missed the fleet) fails; one of decisions
    /// on fleet devices passes, and so does a run without the end-to-end phases.
    #[test]
    fn end_to_end_figures_must_be_decisions_on_the_fleet() {
        use super::super::collect::Outcomes;
        use super::super::report::PhaseFigures;
        let with = |outcomes: Outcomes| {
            let report = Report {
                brokers: String::new(),
                requests_topic: String::new(),
                rate: 1,
                duration_s: 1,
                window: 1,
                runs: 1,
                worker_fixed: PhaseFigures {
                    outcomes,
                    ..PhaseFigures::default()
                },
                floor_fixed: PhaseFigures::default(),
                worker_max: PhaseFigures::default(),
                floor_max: PhaseFigures::default(),
                ingest: None,
                webhook: "",
            };
            CatchUpResult {
                devices: 1,
                events: 0,
                records: 1,
                fill_s: 0.0,
                plain_consume_rps: 0.0,
                listening_s: 0.0,
                ready_s: 0.0,
                catch_up_rps: 0.0,
                apply_rps: 0.0,
                ratio: 0.0,
                peak_rss_mib: 0.0,
                caught_up_rss_mib: 0.0,
                store_mib: 0.0,
                stop_s: 0.0,
                restart_ready_s: 0.0,
                restart_listening_s: 0.0,
                restart_peak_rss_mib: 0.0,
                restart_rss_mib: 0.0,
                e2e: Some(report),
            }
        };
        let good = Outcomes {
            allow: 9,
            deny: 1,
            ..Outcomes::default()
        };
        assert!(with(good).check_decisions().is_ok());
        for bad in [
            Outcomes {
                not_ready: 1,
                ..good
            },
            Outcomes {
                unknown_device: 1,
                ..good
            },
            Outcomes { other: 1, ..good },
            Outcomes::default(),
        ] {
            assert!(with(bad).check_decisions().is_err(), "{bad:?} passed");
        }
        let mut skipped = with(good);
        skipped.e2e = None;
        assert!(skipped.check_decisions().is_ok());
    }
}
