//! What `trustgate bench` prints: a table for people, or one JSON object with `--json`.
//!
//! Headline figures: latency percentiles are the fixed-rate phase's (the targets are
//! "at 5,000 requests/s"), throughput is the maximum-rate phase's; each is the median over
//! `--runs` rounds. The `floor_` figures are the echo responder's, and each ratio is
//! worker ÷ floor (for latency, lower is better; for throughput, higher is better).

use super::collect::Outcomes;
use super::ingest::IngestResult;
use super::load::PhaseResult;
use serde::Serialize;
use serde_json::{json, Value};

/// One phase's figures as printed (medians when there were several rounds).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseFigures {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// What the replies said, summed over rounds.
    pub outcomes: Outcomes,
    pub seconds: f64,
    pub throughput_rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

impl PhaseFigures {
    /// Per-figure medians over rounds; counts are summed.
    pub fn from_rounds(rounds: &[PhaseResult]) -> PhaseFigures {
        let m = |f: &dyn Fn(&PhaseResult) -> f64| median(rounds.iter().map(f).collect());
        PhaseFigures {
            sent: rounds.iter().map(|r| r.sent).sum(),
            received: rounds.iter().map(|r| r.received).sum(),
            lost: rounds
                .iter()
                .map(|r| r.sent.saturating_sub(r.received))
                .sum(),
            duplicates: rounds.iter().map(|r| r.duplicates).sum(),
            outcomes: rounds.iter().fold(Outcomes::default(), |mut all, r| {
                all.add(&r.outcomes);
                all
            }),
            seconds: m(&|r| r.elapsed.as_secs_f64()),
            throughput_rps: m(&|r| r.throughput_rps),
            p50_us: m(&|r| r.latency.p50_us),
            p99_us: m(&|r| r.latency.p99_us),
            p999_us: m(&|r| r.latency.p999_us),
            max_us: m(&|r| r.latency.max_us),
            mean_us: m(&|r| r.latency.mean_us),
        }
    }
}

/// Everything one `trustgate bench` run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub brokers: String,
    pub requests_topic: String,
    pub rate: u32,
    pub duration_s: u64,
    pub window: u64,
    pub runs: u32,
    pub worker_fixed: PhaseFigures,
    pub floor_fixed: PhaseFigures,
    pub worker_max: PhaseFigures,
    pub floor_max: PhaseFigures,
    pub ingest: Option<IngestResult>,
    /// Why webhook latency was not measured.
    pub webhook: &'static str,
}

impl Report {
    /// What the decision worker's measured replies said (both of its phases, every round).
    pub fn worker_outcomes(&self) -> Outcomes {
        let mut all = self.worker_fixed.outcomes;
        all.add(&self.worker_max.outcomes);
        all
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

impl Report {
    pub fn to_json(&self) -> Value {
        let (w, f) = (&self.worker_fixed, &self.floor_fixed);
        let (wm, fm) = (&self.worker_max, &self.floor_max);
        json!({
            "p50_us": w.p50_us,
            "p99_us": w.p99_us,
            "p999_us": w.p999_us,
            "throughput_rps": wm.throughput_rps,
            "floor_p50_us": f.p50_us,
            "floor_p99_us": f.p99_us,
            "floor_p999_us": f.p999_us,
            "floor_throughput_rps": fm.throughput_rps,
            "p50_ratio": ratio(w.p50_us, f.p50_us),
            "p99_ratio": ratio(w.p99_us, f.p99_us),
            "p999_ratio": ratio(w.p999_us, f.p999_us),
            "throughput_ratio": ratio(wm.throughput_rps, fm.throughput_rps),
            "rate": self.rate,
            "duration_s": self.duration_s,
            "window": self.window,
            "runs": self.runs,
            "brokers": self.brokers,
            "requests_topic": self.requests_topic,
            "worker_outcomes": self.worker_outcomes(),
            "phases": {
                "worker_fixed": w, "floor_fixed": f, "worker_max": wm, "floor_max": fm,
            },
            "ingest": self.ingest,
            "webhook": self.webhook,
        })
    }

    pub fn to_text(&self) -> String {
        let mut out = format!(
            "trustgate bench: broker {}, requests topic {}; {} req/s for {} s, then maximum \
             (window {}) for {} s; median of {} round(s)\n\n",
            self.brokers,
            self.requests_topic,
            self.rate,
            self.duration_s,
            self.window,
            self.duration_s,
            self.runs
        );
        out += &format!(
            "{:<22}{:>10}{:>10}{:>10}{:>10}{:>13}{:>10}{:>8}\n",
            "", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "replies/s", "sent", "lost"
        );
        for (name, p) in [
            ("fixed: decision", &self.worker_fixed),
            ("fixed: echo floor", &self.floor_fixed),
            ("max: decision", &self.worker_max),
            ("max: echo floor", &self.floor_max),
        ] {
            out += &format!(
                "{name:<22}{:>10.0}{:>10.0}{:>10.0}{:>10.0}{:>13.0}{:>10}{:>8}\n",
                p.p50_us, p.p99_us, p.p999_us, p.max_us, p.throughput_rps, p.sent, p.lost
            );
        }
        let o = self.worker_outcomes();
        out += &format!(
            "decision replies: {} allow, {} deny, {} not_ready, {} unknown device, {} other\n",
            o.allow, o.deny, o.not_ready, o.unknown_device, o.other
        );
        out += &self.targets_text();
        if let Some(i) = &self.ingest {
            out += &format!(
                "\ningest: {} records; applied {:.0}/s ({:.0}/s including start-up); plain \
                 consume {:.0}/s; ratio {:.2} (targets: >= 50000/s, >= 0.5x plain consume)\n",
                i.records, i.ingest_rps, i.ingest_wall_rps, i.plain_consume_rps, i.ingest_ratio
            );
        }
        out += &format!("webhook: {}\n", self.webhook);
        out
    }

    fn targets_text(&self) -> String {
        let (w, f) = (&self.worker_fixed, &self.floor_fixed);
        let verdict = |ok: bool| if ok { "met" } else { "missed" };
        let p50 = ratio(w.p50_us, f.p50_us);
        let p99 = ratio(w.p99_us, f.p99_us);
        let tput = ratio(
            self.worker_max.throughput_rps,
            self.floor_max.throughput_rps,
        );
        format!(
            "\nratios (decision ÷ floor): p50 {p50:.2}x, p99 {p99:.2}x, p99.9 {:.2}x, \
             max throughput {tput:.2}x\n\
             targets: p50 <= 1.1x floor {}; p99 <= 1.1x floor {}; throughput >= 0.8x floor {}\n",
            ratio(w.p999_us, f.p999_us),
            verdict(p50 <= 1.1),
            verdict(p99 <= 1.1),
            verdict(tput >= 0.8),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
