//! A simulated Cisco Secure Endpoint (SE) v1 API: the test double of trustgate's poller and the
//! data source of its demo, usable by anything that talks to SE's REST API.
//!
//! One seeded tenant: computers and a day of history, compromises and resolutions that happen as
//! time passes, served the way SE serves them (its envelope, `limit`/`offset` paging and links,
//! filters, HTTP Basic auth, the hourly rate limit and its headers, SE's error bodies), plus
//! faults injected on demand and `/_sim/` hooks that let a test script the tenant and read it
//! back. Nothing here reads trustgate's configuration or depends on its crate.
//!
//! # Layout
//!
//! - [`Simulator`] (this file): the cheap-clone handle on one tenant, its clock and counters;
//!   [`SimConfig`] and [`Credentials`] configure it.
//! - `command.rs`: the command line ([`SimulateArgs`], [`run`]) of the `se-simulator` binary
//!   (`main.rs`) and of `trustgate simulate`, which embeds it.
//! - The HTTP face: `server.rs` runs it ([`serve`]) and owns the gate every `/v1/` request passes
//!   (Basic auth, the hourly budget, injected faults, rate-limit headers); `envelope.rs` SE's
//!   success envelope and error body; `routes.rs` the `/v1/` endpoints; `hooks.rs` the `/_sim/`
//!   test hooks (no auth, no rate limit); `params.rs` splits query strings into decoded pairs,
//!   `query.rs` reads each endpoint's parameters from them (a 400 for unknown ones), and
//!   `pagination.rs` pages a listing and writes its `metadata` links.
//! - The tenant: `scenario.rs` ([`ScenarioConfig`]) is pure and seeded and never reads a clock;
//!   it builds computers with `generate.rs` (also ids and dates) and events with
//!   `detections.rs`, and keeps them in `events.rs`, the newest-first log served byte for byte.
//! - Around it: `faults.rs` queues injected faults (latency, a status, a 429, a malformed body,
//!   a page that holds no record, a dropped connection, new events shifting a listing); `rate_limit.rs` is the hourly budget; `catalog.rs` the 102 event types
//!   of a real dump; [`shapes`] the JSON records, field for field as recorded.
//! - `tests.rs`: the scenario over time, and the simulated shapes against the recorded fixtures.
//!
//! The recorded fixtures this crate checks itself against are the repository's
//! `tests/fixtures/` (read as `../../../tests/fixtures/…` from `src/`), shared with trustgate's
//! contract tests.
//!
//! # Example
//!
//! A tenant in-process, on a port the OS picks, stopped by its shutdown token:
//!
//! ```
//! use se_simulator::{serve, Credentials, SimConfig, Simulator};
//! use tokio_util::sync::CancellationToken;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let sim = Simulator::new(SimConfig {
//!     credentials: Some(Credentials {
//!         client_id: "sim".into(),
//!         api_key: "sim-key".into(),
//!     }),
//!     ..SimConfig::default()
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let base = format!("http://{}", listener.local_addr()?);
//! let shutdown = CancellationToken::new();
//! let server = tokio::spawn(serve(listener, sim.clone(), shutdown.clone()));
//!
//! let page: serde_json::Value = reqwest::Client::new()
//!     .get(format!("{base}/v1/computers?limit=10"))
//!     .basic_auth("sim", Some("sim-key"))
//!     .send()
//!     .await?
//!     .json()
//!     .await?;
//! assert_eq!(page["metadata"]["results"]["total"], sim.computers().len());
//!
//! shutdown.cancel();
//! server.await??;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs, unreachable_pub)]

mod catalog;
mod command;
mod detections;
mod envelope;
mod events;
mod faults;
mod generate;
mod hooks;
mod pagination;
mod params;
mod query;
mod rate_limit;
mod routes;
mod scenario;
mod server;
pub mod shapes;
mod streams;
#[cfg(test)]
mod tests;

pub use command::{run, SimulateArgs};
pub use generate::OsMix;
pub use scenario::ScenarioConfig;
pub use server::serve;

use chrono::{DateTime, Utc};
use events::{EventError, EventLog};
use faults::{Fault, FaultError, FaultQueue, FaultSpec};
use rate_limit::{HourlyLimit, Quota};
use scenario::{ScenarioError, World};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The one API client the simulator accepts (HTTP Basic: the client ID as user, the API key as
/// password). `Debug` redacts the key, so a logged configuration never shows it.
#[derive(Clone)]
pub struct Credentials {
    /// The client ID, SE's Basic-auth user name.
    pub client_id: String,
    /// The API key, SE's Basic-auth password; compared in constant time.
    pub api_key: SecretString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("api_key", &"[REDACTED]")
            .finish()
    }
}

/// Everything a [`Simulator`] is built from: the tenant, who may call it, and how often.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The tenant and how it evolves.
    pub scenario: ScenarioConfig,
    /// The client that `/v1/` accepts; `None`: any request is accepted, with or without
    /// credentials.
    pub credentials: Option<Credentials>,
    /// Requests per hour before 429 (SE tenants observed: 3000).
    pub hourly_limit: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            scenario: ScenarioConfig::default(),
            credentials: None,
            hourly_limit: 3000,
        }
    }
}

/// The request counters behind `GET /_sim/stats`; only `/v1/` requests count.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// API requests received (everything under `/v1/`).
    pub requests: u64,
    /// Responses by status code. A dropped connection (the `drop` fault) sent none, so it
    /// counts as a request and not here.
    pub responses: BTreeMap<u16, u64>,
    /// 429s sent because the hourly limit was reached (injected 429s count as faults).
    pub rate_limited: u64,
    /// 401s: no credentials, or not the configured ones.
    pub unauthorized: u64,
    /// Requests that an injected fault hit.
    pub faults_injected: u64,
}

/// What `GET /_sim/stats` returns: the counters plus the tenant's size and the budget.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// The request counters (flattened into the JSON object).
    #[serde(flatten)]
    pub stats: Stats,
    /// Events in the log.
    pub events: usize,
    /// Computers in the tenant.
    pub computers: usize,
    /// Computers whose `is_compromised` is true now.
    pub compromised: usize,
    /// Requests left in the current hour's budget.
    pub ratelimit_remaining: u32,
    /// The simulator's clock ([`Simulator::now`]), as SE prints computer dates.
    pub now: String,
}

/// A cheap-clone handle on one simulated tenant; every clone sees the same state. [`serve`]
/// puts it on the network; a test keeps a clone to read the tenant directly.
///
/// The tenant is scripted through the `/_sim/` hooks (compromise, resolve, faults, events,
/// bursts, the clock), the same way whether it runs in-process or as `se-simulator`.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

/// Each part behind its own std mutex: every critical section is short and holds no `.await`.
struct Inner {
    world: Mutex<World>,
    limit: Mutex<HourlyLimit>,
    faults: Mutex<FaultQueue>,
    stats: Mutex<Stats>,
    credentials: Option<Credentials>,
    /// The tenant's event streams (`/v1/event_streams`).
    streams: Mutex<streams::Streams>,
    /// The RabbitMQ the streams push to (`--amqp-url`), once set.
    broker: std::sync::OnceLock<streams::Broker>,
    /// Added to the wall clock, so tests can jump ahead (`POST /_sim/advance`).
    offset_ms: AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Simulator {
    /// A tenant whose history ends now; its schedules run from now on.
    pub fn new(config: SimConfig) -> Simulator {
        let seed = config.scenario.seed;
        Simulator {
            inner: Arc::new(Inner {
                world: Mutex::new(World::new(config.scenario, Utc::now())),
                limit: Mutex::new(HourlyLimit::new(config.hourly_limit)),
                faults: Mutex::new(FaultQueue::new(seed)),
                stats: Mutex::new(Stats::default()),
                credentials: config.credentials,
                streams: Mutex::new(streams::Streams::default()),
                broker: std::sync::OnceLock::new(),
                offset_ms: AtomicI64::new(0),
            }),
        }
    }

    /// The simulator's clock: the wall clock plus every jump of `POST /_sim/advance`. Dates in
    /// the tenant, and `start_date` filters, are on this clock.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.inner.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock forward: scheduled compromises, resolutions and the rate-limit window
    /// all see the jump.
    pub(crate) fn advance_clock(&self, by: chrono::Duration) {
        self.inner
            .offset_ms
            .fetch_add(by.num_milliseconds().max(0), Ordering::Relaxed);
    }

    /// Runs `f` on the tenant brought up to the current time.
    pub(crate) fn with_world<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let now = self.now();
        let mut world = lock(&self.inner.world);
        world.advance_to(now);
        f(&mut world)
    }

    /// Compromises a computer now, with a detection dated `backdate` ago (zero: now; more: a
    /// late upload from an endpoint that was offline, which a poll with too little overlap
    /// misses). Returns the `detection_id` of its Threat Detected event.
    pub(crate) fn compromise_backdated(
        &self,
        connector_guid: &str,
        backdate: chrono::Duration,
    ) -> Result<String, ScenarioError> {
        let now = self.now();
        lock(&self.inner.world).compromise_dated(connector_guid, now, now - backdate)
    }

    /// Resolves a computer's compromise now (`is_compromised` back to false).
    pub(crate) fn resolve(&self, connector_guid: &str) -> Result<(), ScenarioError> {
        let now = self.now();
        lock(&self.inner.world).resolve(connector_guid, now)
    }

    /// Adds events exactly as given (served back byte for byte). All or nothing.
    pub(crate) fn inject_events(&self, events: Vec<Box<RawValue>>) -> Result<usize, EventError> {
        self.with_world(|w| {
            let mut staged = EventLog::default();
            for e in &events {
                staged.push_raw(e.clone())?;
            }
            let n = events.len();
            for e in events {
                w.log_mut().push_raw(e)?;
            }
            Ok(n)
        })
    }

    /// Adds `count` events of `event_type_id` sharing one timestamp (now).
    pub(crate) fn burst(&self, count: usize, event_type_id: u64) -> DateTime<Utc> {
        let now = self.now();
        lock(&self.inner.world).burst(count, event_type_id, now);
        now
    }

    /// Queues a fault for the requests to come (`POST /_sim/faults`, `--fault`).
    pub(crate) fn inject_fault(&self, spec: FaultSpec) -> Result<(), FaultError> {
        lock(&self.inner.faults).push(spec)
    }

    /// Drops every queued fault (`DELETE /_sim/faults`).
    pub(crate) fn clear_faults(&self) {
        lock(&self.inner.faults).clear();
    }

    /// The queued faults with their remaining counts (`GET /_sim/faults`).
    pub(crate) fn pending_faults(&self) -> serde_json::Value {
        lock(&self.inner.faults).snapshot()
    }

    /// The fault for a request to `path`, if one is queued, counting it.
    pub(crate) fn take_fault(&self, path: &str) -> Option<Fault> {
        lock(&self.inner.faults).take(path)
    }

    /// Every event, newest first, as a JSON array of the raw bytes of each: an event id above
    /// 2^53 reads back exactly unless the reader goes through `f64`.
    pub fn events_json(&self) -> String {
        self.with_world(|w| {
            let all: Vec<&RawValue> = w.events().all().iter().map(|e| &*e.raw).collect();
            serde_json::to_string(&all).unwrap_or_default()
        })
    }

    /// The computers as they stand now.
    pub fn computers(&self) -> Vec<shapes::Computer> {
        self.with_world(|w| w.computers().to_vec())
    }

    /// The counters, the tenant's size and the budget (what `GET /_sim/stats` serves). Brings
    /// the tenant up to the current time first, as a request would.
    pub fn stats(&self) -> StatsSnapshot {
        let now = self.now();
        let (events, computers, compromised) = self.with_world(|w| {
            let compromised = w.computers().iter().filter(|c| c.is_compromised).count();
            (w.events().len(), w.computers().len(), compromised)
        });
        StatsSnapshot {
            stats: lock(&self.inner.stats).clone(),
            events,
            computers,
            compromised,
            ratelimit_remaining: lock(&self.inner.limit).peek(now).remaining,
            now: generate::computer_date(now),
        }
    }

    /// Runs `f` on the event streams.
    pub(crate) fn streams<R>(&self, f: impl FnOnce(&mut streams::Streams) -> R) -> R {
        f(&mut lock(&self.inner.streams))
    }

    /// The broker event streams push to, if one was given.
    pub(crate) fn stream_broker(&self) -> Option<streams::Broker> {
        self.inner.broker.get().cloned()
    }

    /// Pushes every event created after a stream's creation to that stream's queue on the
    /// RabbitMQ at `amqp_url` (`amqp://user:password@host:port`; its user and password become
    /// every stream's credentials), until `shutdown`. Call once; a second call is refused.
    ///
    /// # Errors
    ///
    /// `amqp_url` is not an `amqp://` / `amqps://` URL with user info, or a broker is already set.
    pub fn push_streams_to(
        &self,
        amqp_url: &str,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let broker = streams::Broker::parse(amqp_url)?;
        self.inner
            .broker
            .set(broker.clone())
            .map_err(|_| anyhow::anyhow!("event streams already push to a broker"))?;
        Ok(tokio::spawn(streams::push(self.clone(), broker, shutdown)))
    }

    /// Updates the request counters.
    pub(crate) fn record(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut lock(&self.inner.stats));
    }

    /// Counts a request against the hourly budget.
    pub(crate) fn take_quota(&self) -> Result<Quota, Quota> {
        let now = self.now();
        lock(&self.inner.limit).take(now)
    }

    /// The budget without counting a request (for a refused one).
    pub(crate) fn peek_quota(&self) -> Quota {
        let now = self.now();
        lock(&self.inner.limit).peek(now)
    }

    /// Whether an `Authorization` header carries the configured client ID and API key.
    pub(crate) fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some(expected) = &self.inner.credentials else {
            return true;
        };
        let Some((id, key)) = authorization.and_then(basic_credentials) else {
            return false;
        };
        use subtle::ConstantTimeEq;
        let id_ok = id.as_bytes().ct_eq(expected.client_id.as_bytes());
        let key_ok = key
            .as_bytes()
            .ct_eq(expected.api_key.expose_secret().as_bytes());
        bool::from(id_ok & key_ok)
    }
}

/// `Basic base64(id:key)` → (id, key).
fn basic_credentials(header: &[u8]) -> Option<(String, String)> {
    use base64::Engine;
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let (id, key) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((id.to_string(), key.to_string()))
}
