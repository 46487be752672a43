//! The simulated tenant: seeded computers and events, and what happens to them as time passes.
//!
//! Pure and deterministic: a [`World`] is a function of its [`ScenarioConfig`] (seed included),
//! its start time and the times it is advanced to; it never reads a clock. Every `compromise_every`
//! a computer is compromised the way SE's console shows it (`is_compromised` flips to true and a
//! Threat Detected event, sometimes followed by Threat Quarantined or Quarantine Failure with the
//! same `detection_id`, is logged); `resolve_after` later the compromise is resolved (the flag
//! flips back; SE logs no event for a resolution). Operational "noise" events and account events
//! without a connector GUID arrive every `noise_every`.

use super::catalog;
use super::detections;
use super::events::EventLog;
use super::generate::{self, OsMix};
use super::shapes::{Computer, Event};
use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, HashMap};

/// What the simulated tenant looks like and how it evolves. Every field is public so that a
/// caller can override a few and take the rest from [`ScenarioConfig::default`]; the defaults are
/// those of `se-simulator`'s flags.
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    /// Number of simulated computers.
    pub devices: usize,
    /// Seed of everything random: the same seed (and start time) gives the same tenant and the
    /// same history.
    pub seed: u64,
    /// The share of each operating system among the computers.
    pub os_mix: OsMix,
    /// Share of computers compromised somewhere in the history before the start.
    pub initially_compromised: f64,
    /// How far back the generated history reaches.
    pub history: Duration,
    /// How often a random clean computer is compromised; `None`: never.
    pub compromise_every: Option<Duration>,
    /// How long after its compromise a computer is resolved; `None`: never.
    pub resolve_after: Option<Duration>,
    /// How often an operational event (policy update, scan, account event) is logged; `None`:
    /// never.
    pub noise_every: Option<Duration>,
    /// Prefix of the resource links inside records (`computer.links`); nothing follows them.
    pub link_base: String,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig {
            devices: 50,
            seed: 1,
            os_mix: OsMix::default(),
            initially_compromised: 0.1,
            history: Duration::hours(24),
            compromise_every: Some(Duration::seconds(60)),
            resolve_after: Some(Duration::minutes(5)),
            noise_every: Some(Duration::seconds(10)),
            link_base: "https://api.amp.cisco.com".to_string(),
        }
    }
}

/// Why a scripted action was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ScenarioError {
    #[error("no computer with connector GUID {0}")]
    UnknownComputer(String),
}

pub(crate) struct World {
    config: ScenarioConfig,
    rng: StdRng,
    computers: Vec<Computer>,
    by_guid: HashMap<String, usize>,
    log: EventLog,
    next_compromise: Option<DateTime<Utc>>,
    next_noise: Option<DateTime<Utc>>,
    /// Due resolutions; an entry counts only while it equals `resolve_at[device]`, so a manual
    /// resolve or a re-compromise cancels it without a search.
    resolutions: BTreeSet<(DateTime<Utc>, usize)>,
    resolve_at: Vec<Option<DateTime<Utc>>>,
}

/// The next scheduled change, in the order ties are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Resolution(usize),
    Compromise,
    Noise,
}

impl World {
    /// Builds the tenant as it stands at `start`, with `config.history` of past events.
    pub(crate) fn new(config: ScenarioConfig, start: DateTime<Utc>) -> World {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let groups = generate::groups(&mut rng);
        let computers: Vec<Computer> = (0..config.devices)
            .map(|i| {
                let os = config.os_mix.pick(&mut rng);
                let group = &groups[rng.gen_range(0..groups.len())];
                let installed = start - config.history - Duration::days(rng.gen_range(1..90));
                let seen = start - Duration::seconds(rng.gen_range(0..3600));
                generate::computer(&mut rng, i, os, group, &config.link_base, installed, seen)
            })
            .collect();
        let by_guid = computers
            .iter()
            .enumerate()
            .map(|(i, c)| (c.connector_guid.clone(), i))
            .collect();
        let mut world = World {
            next_compromise: config.compromise_every.map(|d| start + d),
            next_noise: config.noise_every.map(|d| start + d),
            resolve_at: vec![None; computers.len()],
            config,
            rng,
            computers,
            by_guid,
            log: EventLog::default(),
            resolutions: BTreeSet::new(),
        };
        world.write_history(start);
        world
    }

    pub(crate) fn computers(&self) -> &[Computer] {
        &self.computers
    }

    pub(crate) fn computer(&self, guid: &str) -> Option<&Computer> {
        self.index_of(guid).map(|i| &self.computers[i])
    }

    pub(crate) fn events(&self) -> &EventLog {
        &self.log
    }

    fn index_of(&self, guid: &str) -> Option<usize> {
        self.by_guid
            .get(guid)
            .or_else(|| self.by_guid.get(&guid.to_ascii_lowercase()))
            .copied()
    }

    /// Applies every scheduled change up to and including `now`; an earlier `now` changes nothing.
    pub(crate) fn advance_to(&mut self, now: DateTime<Utc>) {
        while let Some((at, due)) = self.next_due().filter(|(at, _)| *at <= now) {
            match due {
                Due::Resolution(i) => {
                    self.resolutions.remove(&(at, i));
                    self.apply_resolution(i);
                }
                Due::Compromise => {
                    self.next_compromise = self.config.compromise_every.map(|d| at + d);
                    self.compromise_random(at);
                }
                Due::Noise => {
                    self.next_noise = self.config.noise_every.map(|d| at + d);
                    self.noise(at);
                }
            }
        }
    }

    fn next_due(&mut self) -> Option<(DateTime<Utc>, Due)> {
        // Drop cancelled resolutions first so they never hide a live one.
        while let Some(&(at, i)) = self.resolutions.first() {
            if self.resolve_at[i] == Some(at) {
                break;
            }
            self.resolutions.pop_first();
        }
        let resolution = self
            .resolutions
            .first()
            .map(|&(at, i)| (at, Due::Resolution(i)));
        let compromise = self.next_compromise.map(|at| (at, Due::Compromise));
        let noise = self.next_noise.map(|at| (at, Due::Noise));
        [resolution, compromise, noise].into_iter().flatten().min()
    }

    /// Compromises `guid` at `at` (after advancing to it), as a detection on the endpoint would.
    /// Returns the Threat Detected event's `detection_id`.
    #[cfg(test)]
    pub(crate) fn compromise(
        &mut self,
        guid: &str,
        at: DateTime<Utc>,
    ) -> Result<String, ScenarioError> {
        self.compromise_dated(guid, at, at)
    }

    /// Like [`World::compromise`], but the detection events carry the earlier date `dated`: the
    /// upload of an endpoint that was offline when it detected the threat. They appear in the
    /// log at `at` yet sort (and match `start_date`) by `dated`.
    pub(crate) fn compromise_dated(
        &mut self,
        guid: &str,
        at: DateTime<Utc>,
        dated: DateTime<Utc>,
    ) -> Result<String, ScenarioError> {
        let i = self
            .index_of(guid)
            .ok_or_else(|| ScenarioError::UnknownComputer(guid.to_string()))?;
        self.advance_to(at);
        Ok(self.apply_dated_compromise(i, at, dated.min(at)))
    }

    /// Resolves `guid`'s compromise at `at`, as an analyst would in SE's console.
    pub(crate) fn resolve(&mut self, guid: &str, at: DateTime<Utc>) -> Result<(), ScenarioError> {
        let i = self
            .index_of(guid)
            .ok_or_else(|| ScenarioError::UnknownComputer(guid.to_string()))?;
        self.advance_to(at);
        self.apply_resolution(i);
        Ok(())
    }

    /// Logs `count` events of `type_id` that share one timestamp, spread over the computers.
    pub(crate) fn burst(&mut self, count: usize, type_id: u64, at: DateTime<Utc>) {
        self.advance_to(at);
        for k in 0..count {
            let id = self.fresh_id();
            let event = match self.computers.len() {
                0 => detections::account_event(id, at, type_id),
                n => detections::device_event(id, at, type_id, &self.computers[k % n]),
            };
            self.log.push(&event);
        }
    }

    /// Mutable access for raw injection; ids pushed there are then never generated.
    pub(crate) fn log_mut(&mut self) -> &mut EventLog {
        &mut self.log
    }

    fn fresh_id(&mut self) -> u64 {
        loop {
            let id = generate::event_id(&mut self.rng);
            if !self.log.contains_id(id) {
                return id;
            }
        }
    }

    fn compromise_random(&mut self, at: DateTime<Utc>) {
        let clean: Vec<usize> = (0..self.computers.len())
            .filter(|&i| !self.computers[i].is_compromised)
            .collect();
        if clean.is_empty() {
            return;
        }
        let i = clean[self.rng.gen_range(0..clean.len())];
        self.apply_compromise(i, at);
    }

    fn apply_compromise(&mut self, i: usize, at: DateTime<Utc>) -> String {
        self.apply_dated_compromise(i, at, at)
    }

    /// Flags computer `i` at `at`, with detection events dated `dated` (earlier for a detection
    /// an offline endpoint uploads late).
    fn apply_dated_compromise(
        &mut self,
        i: usize,
        at: DateTime<Utc>,
        dated: DateTime<Utc>,
    ) -> String {
        let threat = detections::threat(&mut self.rng, &self.computers[i]);
        self.touch(i, at);
        self.computers[i].is_compromised = true;
        let id = self.fresh_id();
        let detected =
            detections::threat_detected(&mut self.rng, id, dated, &self.computers[i], &threat);
        self.log.push(&detected);
        // Follow-ups share the detection's timestamp, as in SE's recorded pair.
        let follow_up = match self.rng.gen_range(0..10) {
            0..=4 => Some(catalog::THREAT_QUARANTINED),
            5 => Some(catalog::QUARANTINE_FAILURE),
            _ => None,
        };
        if let Some(type_id) = follow_up {
            let id = self.fresh_id();
            let event = detections::follow_up(id, dated, type_id, &self.computers[i], &threat);
            self.log.push(&event);
        }
        self.resolve_at[i] = self.config.resolve_after.map(|d| at + d);
        if let Some(due) = self.resolve_at[i] {
            self.resolutions.insert((due, i));
        }
        threat.detection_id
    }

    fn apply_resolution(&mut self, i: usize) {
        self.computers[i].is_compromised = false;
        self.resolve_at[i] = None;
    }

    fn touch(&mut self, i: usize, at: DateTime<Utc>) {
        self.computers[i].last_seen = generate::computer_date(at);
    }

    fn noise(&mut self, at: DateTime<Utc>) {
        let id = self.fresh_id();
        if self.computers.is_empty() || self.rng.gen_range(0..20) == 0 {
            self.log.push(&detections::account_event(
                id,
                at,
                catalog::EMAIL_CONFIRMATION,
            ));
            return;
        }
        let i = self.rng.gen_range(0..self.computers.len());
        let type_id = [
            catalog::POLICY_UPDATE,
            catalog::SCAN_STARTED,
            catalog::SCAN_COMPLETED_CLEAN,
        ][self.rng.gen_range(0..3)];
        self.touch(i, at);
        let event = detections::device_event(id, at, type_id, &self.computers[i]);
        self.log.push(&event);
    }

    /// Past events: noise per computer, compromises (resolved or not by `start`), account events,
    /// and one scan burst sharing a timestamp.
    fn write_history(&mut self, start: DateTime<Utc>) {
        let span = self.config.history.num_milliseconds().max(1);
        let past = |rng: &mut StdRng| start - Duration::milliseconds(rng.gen_range(1..=span));
        let mut script: Vec<(DateTime<Utc>, Option<usize>, bool)> = Vec::new();
        for i in 0..self.computers.len() {
            for _ in 0..self.rng.gen_range(1..=3) {
                script.push((past(&mut self.rng), Some(i), false));
            }
            if self
                .rng
                .gen_bool(self.config.initially_compromised.clamp(0.0, 1.0))
            {
                script.push((past(&mut self.rng), Some(i), true));
            }
        }
        for _ in 0..3 {
            script.push((past(&mut self.rng), None, false));
        }
        // Chronological, so a compromise and its resolution replay in order.
        script.sort_by_key(|(at, i, _)| (*at, *i));
        for (at, device, compromise) in script {
            self.advance_history_to(at);
            match (device, compromise) {
                (Some(i), true) => {
                    self.apply_compromise(i, at);
                }
                (Some(i), false) => {
                    let id = self.fresh_id();
                    let type_id = catalog::POLICY_UPDATE;
                    self.touch(i, at);
                    let e: Event = detections::device_event(id, at, type_id, &self.computers[i]);
                    self.log.push(&e);
                }
                (None, _) => {
                    let id = self.fresh_id();
                    let e = detections::account_event(id, at, catalog::EMAIL_CONFIRMATION);
                    self.log.push(&e);
                }
            }
        }
        self.advance_history_to(start);
        let burst_at = start - Duration::milliseconds(span / 2);
        let burst = self.computers.len().min(6);
        for k in 0..burst {
            let id = self.fresh_id();
            let e =
                detections::device_event(id, burst_at, catalog::SCAN_STARTED, &self.computers[k]);
            self.log.push(&e);
        }
    }

    /// Applies only resolutions up to `at` (the live schedules start at `start`).
    fn advance_history_to(&mut self, at: DateTime<Utc>) {
        while let Some(&(due, i)) = self.resolutions.first() {
            if due > at {
                break;
            }
            self.resolutions.pop_first();
            if self.resolve_at[i] == Some(due) {
                self.apply_resolution(i);
            }
        }
    }
}
