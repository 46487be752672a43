//! The demo's live terminal view: a status line every second and the story as it happens.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use trustgate::store::Store;

#[derive(Clone)]
pub struct View {
    state: Arc<Mutex<State>>,
    store: Store,
    grace_millis: i64,
}

struct State {
    started: Instant,
    /// (decision, reason) → count, for the whole run.
    totals: BTreeMap<(String, String), u64>,
    /// Latencies (µs) and decisions of the current one-second window.
    window_latency: Vec<u64>,
    window_decisions: BTreeMap<(String, String), u64>,
    /// Last SE-based verdict per device, to tell the story of transitions.
    verdicts: HashMap<String, String>,
}

/// The end-of-run summary.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub total: u64,
    pub allow: u64,
    pub deny: u64,
    pub by_reason: BTreeMap<String, u64>,
}

impl Summary {
    /// e.g. `1234 decisions: 1100 allow, 134 deny`.
    pub fn line(&self) -> String {
        format!(
            "{} decisions: {} allow, {} deny",
            self.total, self.allow, self.deny
        )
    }

    pub fn by_reason(&self) -> String {
        let parts: Vec<String> = self
            .by_reason
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        format!("by reason: {}", parts.join(", "))
    }
}

impl View {
    pub fn new(store: Store, grace_millis: i64) -> View {
        let state = State {
            started: Instant::now(),
            totals: BTreeMap::new(),
            window_latency: Vec::new(),
            window_decisions: BTreeMap::new(),
            verdicts: HashMap::new(),
        };
        View {
            state: Arc::new(Mutex::new(state)),
            store,
            grace_millis,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        trustgate::locks::lock(&self.state)
    }

    fn stamp(&self) -> String {
        let secs = self.lock().started.elapsed().as_secs();
        format!("[{:02}:{:02}]", secs / 60, secs % 60)
    }

    /// Prints a story line.
    pub fn say(&self, line: impl AsRef<str>) {
        println!("{} {}", self.stamp(), line.as_ref());
    }

    /// One reply received by the auth-traffic generator.
    pub fn record(&self, device: &str, decision: &str, reason: &str, latency: Duration) {
        let story = {
            let mut s = self.lock();
            let key = (decision.to_owned(), reason.to_owned());
            *s.totals.entry(key.clone()).or_default() += 1;
            *s.window_decisions.entry(key).or_default() += 1;
            s.window_latency.push(latency.as_micros() as u64);
            let se_based = reason == "compromised" || reason == "trusted_not_compromised";
            let previous = se_based
                .then(|| s.verdicts.insert(device.to_owned(), reason.to_owned()))
                .flatten();
            match (previous.as_deref(), reason) {
                (Some("trusted_not_compromised"), "compromised") => {
                    Some(format!("!! {device} is compromised in Secure Endpoint: its logins are now denied (compromised)"))
                }
                (Some("compromised"), "trusted_not_compromised") => {
                    Some(format!("ok {device} was resolved in Secure Endpoint: its logins are allowed again"))
                }
                _ => None,
            }
        };
        if let Some(line) = story {
            self.say(line);
        }
    }

    /// Prints a status line every second until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.status(),
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn status(&self) {
        let (mut latencies, decisions) = {
            let mut s = self.lock();
            (
                std::mem::take(&mut s.window_latency),
                std::mem::take(&mut s.window_decisions),
            )
        };
        let (devices, compromised) = self.device_counts();
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        let rate: u64 = decisions.values().sum();
        let reasons: Vec<String> = decisions
            .iter()
            .map(|((d, r), n)| format!("{d}/{r} {n}"))
            .collect();
        self.say(format!(
            "devices {devices} | compromised {compromised} | {rate} decisions/s [{}] | latency p50 {:.1} ms p99 {:.1} ms",
            reasons.join(", "),
            pct(0.5) as f64 / 1000.0,
            pct(0.99) as f64 / 1000.0,
        ));
    }

    fn device_counts(&self) -> (usize, usize) {
        let mut devices = 0;
        let mut compromised = 0;
        for state in self.store.scan_devices().flatten() {
            devices += 1;
            compromised += usize::from(state.is_compromised(self.grace_millis));
        }
        (devices, compromised)
    }

    pub fn summary(&self) -> Summary {
        let s = self.lock();
        let mut summary = Summary::default();
        for ((decision, reason), n) in &s.totals {
            summary.total += n;
            match decision.as_str() {
                "allow" => summary.allow += n,
                _ => summary.deny += n,
            }
            *summary.by_reason.entry(reason.clone()).or_default() += n;
        }
        summary
    }
}
