//! Metrics: every name trustgate exports, recorded through the `metrics` facade and rendered
//! for Prometheus on the admin listener's `/metrics`.
//!
//! Handler code calls the small functions here instead of naming metrics inline, so the set of
//! names, labels and units stays in one reviewed place.

use crate::policy::{Outcome, Reason};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("trustgate_decision_duration_seconds".into()),
                    &[
                        0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5,
                        0.001, 0.005, 0.01, 0.05,
                    ],
                )
                .expect("valid buckets")
                .install_recorder()
                .expect("the Prometheus recorder is installed once")
        })
        .clone()
}

fn snake<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// One decision answered (Kafka or HTTP), with the time spent deciding it.
pub fn decision(policy: &str, outcome: Outcome, reason: Reason, spent: Duration) {
    counter!("trustgate_decisions_total", "policy" => policy.to_owned(), "decision" => snake(&outcome), "reason" => snake(&reason))
        .increment(1);
    histogram!("trustgate_decision_duration_seconds").record(spent.as_secs_f64());
}

/// A decision request that could not be answered and was dead-lettered.
pub fn request_dead_lettered() {
    counter!("trustgate_requests_dead_lettered_total").increment(1);
}

/// Records applied by ingest, by kind.
pub fn records_applied(kind: &'static str, count: u64) {
    counter!("trustgate_ingest_records_applied_total", "kind" => kind).increment(count);
}

/// Events records sent to the dead-letter topic.
pub fn records_dead_lettered(count: u64) {
    counter!("trustgate_ingest_dead_lettered_total").increment(count);
}

/// Records behind the high watermark, per events partition.
pub fn ingest_lag(partition: i32, lag: i64) {
    gauge!("trustgate_ingest_lag_records", "partition" => partition.to_string()).set(lag as f64);
}

/// Seconds since the newest feed record or heartbeat (NaN-free: never fed reports +Inf).
pub fn feed_age(age: Option<Duration>) {
    gauge!("trustgate_feed_age_seconds").set(age.map_or(f64::INFINITY, |a| a.as_secs_f64()));
}

/// 1 when ingest has caught up with the events topic.
pub fn caught_up(yes: bool) {
    gauge!("trustgate_ingest_caught_up").set(if yes { 1.0 } else { 0.0 });
}
