//! A Cisco Secure Endpoint (SE) v1 API simulator: the test double for the poller, the data source
//! of the demo.
//!
//! Owns a simulated tenant and its HTTP face, nothing trustgate runs on in production:
//!
//! - `scenario`: the tenant, pure and seeded: computers, history, compromises and resolutions
//!   driven by time; built from `generate` (computers, ids, dates) and `detections` (events),
//!   shaped per [`shapes`] like the recorded fixtures in `tests/fixtures/`; `events` is its log.
//! - `server`: the router and the gate (Basic auth, the hourly budget of `rate_limit`, injected
//!   `faults`, rate-limit headers); `routes`: `/v1/version`, `/v1/events`, `/v1/computers`,
//!   `/v1/computers/{guid}`, `/v1/event_types` with SE's envelope and `pagination`, parameters
//!   read by `query`; `hooks`: the `/_sim/` test hooks (no auth, no rate limit).
//! - `command`: the command line ([`SimulateArgs`], [`run`]) of `se-simulator` and
//!   `trustgate simulate`.
//!
//! [`Simulator`] is a cheap-clone handle; [`serve`] runs it on a listener until cancelled.

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
#[cfg(test)]
mod tests;

pub use command::{run, SimulateArgs};
pub use events::EventError;
pub use faults::{Fault, FaultError, FaultSpec};
pub use generate::OsMix;
pub use scenario::{ScenarioConfig, ScenarioError};
pub use server::{router, serve};

use chrono::{DateTime, Utc};
use events::EventLog;
use faults::FaultQueue;
use rate_limit::{HourlyLimit, Quota};
use scenario::World;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The API client the simulator accepts (HTTP Basic: client ID as user, API key as password).
#[derive(Clone)]
pub struct Credentials {
    pub client_id: String,
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

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub scenario: ScenarioConfig,
    /// `None`: any request is accepted, with or without credentials.
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

/// Counters for `GET /_sim/stats`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// API requests received (everything under `/v1/`).
    pub requests: u64,
    /// Responses by status code.
    pub responses: BTreeMap<u16, u64>,
    /// 429s sent because the hourly limit was reached (injected 429s count as faults).
    pub rate_limited: u64,
    pub unauthorized: u64,
    pub faults_injected: u64,
}

/// A snapshot for `GET /_sim/stats`: counters plus the tenant's size and the budget.
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    #[serde(flatten)]
    pub stats: Stats,
    pub events: usize,
    pub computers: usize,
    pub compromised: usize,
    pub ratelimit_remaining: u32,
    pub now: String,
}

/// A cheap-clone handle on one simulated tenant; every clone sees the same state.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    world: Mutex<World>,
    limit: Mutex<HourlyLimit>,
    faults: Mutex<FaultQueue>,
    stats: Mutex<Stats>,
    credentials: Option<Credentials>,
    /// Added to the wall clock, so tests can jump ahead (`POST /_sim/advance`).
    offset_ms: AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Simulator {
    /// A tenant whose history ends now.
    pub fn new(config: SimConfig) -> Simulator {
        Simulator::starting_at(config, Utc::now())
    }

    /// A tenant whose history ends at `start` (the clock still runs from the wall clock).
    pub fn starting_at(config: SimConfig, start: DateTime<Utc>) -> Simulator {
        let seed = config.scenario.seed;
        Simulator {
            inner: Arc::new(Inner {
                world: Mutex::new(World::new(config.scenario, start)),
                limit: Mutex::new(HourlyLimit::new(config.hourly_limit)),
                faults: Mutex::new(FaultQueue::new(seed)),
                stats: Mutex::new(Stats::default()),
                credentials: config.credentials,
                offset_ms: AtomicI64::new(0),
            }),
        }
    }

    /// The simulator's clock: the wall clock plus any [`Simulator::advance_clock`].
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.inner.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the clock forward: scheduled compromises, resolutions and the rate-limit window
    /// all see the jump.
    pub fn advance_clock(&self, by: chrono::Duration) {
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

    /// Compromises a computer now; returns the `detection_id` of its Threat Detected event.
    pub fn compromise(&self, connector_guid: &str) -> Result<String, ScenarioError> {
        self.compromise_backdated(connector_guid, chrono::Duration::zero())
    }

    /// Compromises a computer now with a detection dated `backdate` ago: a late upload from an
    /// endpoint that was offline, which a poll with too little overlap misses.
    pub fn compromise_backdated(
        &self,
        connector_guid: &str,
        backdate: chrono::Duration,
    ) -> Result<String, ScenarioError> {
        let now = self.now();
        lock(&self.inner.world).compromise_dated(connector_guid, now, now - backdate)
    }

    /// Resolves a computer's compromise now (`is_compromised` back to false).
    pub fn resolve(&self, connector_guid: &str) -> Result<(), ScenarioError> {
        let now = self.now();
        lock(&self.inner.world).resolve(connector_guid, now)
    }

    /// Adds events exactly as given (served back byte for byte). All or nothing.
    pub fn inject_events(&self, events: Vec<Box<RawValue>>) -> Result<usize, EventError> {
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
    pub fn burst(&self, count: usize, event_type_id: u64) -> DateTime<Utc> {
        let now = self.now();
        lock(&self.inner.world).burst(count, event_type_id, now);
        now
    }

    pub fn inject_fault(&self, spec: FaultSpec) -> Result<(), FaultError> {
        lock(&self.inner.faults).push(spec)
    }

    pub fn clear_faults(&self) {
        lock(&self.inner.faults).clear();
    }

    pub(crate) fn pending_faults(&self) -> serde_json::Value {
        lock(&self.inner.faults).snapshot()
    }

    pub(crate) fn take_fault(&self, path: &str) -> Option<Fault> {
        lock(&self.inner.faults).take(path)
    }

    /// Every event, newest first, as a JSON array (the raw bytes of each).
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

    pub(crate) fn record(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut lock(&self.inner.stats));
    }

    /// Counts a request against the hourly budget.
    pub(crate) fn take_quota(&self) -> Result<Quota, Quota> {
        let now = self.now();
        lock(&self.inner.limit).take(now)
    }

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
