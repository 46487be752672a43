//! Metrics: every name trustgate exports, recorded through the `metrics` facade and rendered
//! for Prometheus on the admin listener's `/metrics`.
//!
//! Component code (the decision paths, ingest, the admin listener, the poller, the webhook)
//! calls the small functions here instead of naming metrics inline, so the set of names, labels
//! and units stays in one reviewed place. The names and labels are an external contract
//! (dashboards and tests read them): change them only on purpose. Installing the exporter is
//! [`install`]; rendering is the admin listener's.

use crate::policy::{Outcome, Reason};
use crate::time::Millis;
use ::metrics::{counter, gauge, histogram};
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
                .set_buckets_for_metric(
                    Matcher::Full("trustgate_ingest_stage_duration_seconds".into()),
                    &[
                        0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
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

// Decisions (`trustgate_decision*`, `trustgate_requests_*`).

/// One decision answered (Kafka or HTTP), with the time spent deciding it.
pub(crate) fn decision(policy: &str, outcome: Outcome, reason: Reason, spent: Duration) {
    counter!("trustgate_decisions_total", "policy" => policy.to_owned(), "decision" => snake(&outcome), "reason" => snake(&reason))
        .increment(1);
    histogram!("trustgate_decision_duration_seconds").record(spent.as_secs_f64());
}

/// A decision request that could not be answered and was dead-lettered.
pub(crate) fn request_dead_lettered() {
    counter!("trustgate_requests_dead_lettered_total").increment(1);
}

/// A reply whose delivery failed (it is produced again until acknowledged).
pub(crate) fn reply_delivery_failed() {
    counter!("trustgate_reply_delivery_failures_total").increment(1);
}

// Ingest (`trustgate_ingest_*`) and the liveness age.

/// Records applied by ingest, by kind.
pub(crate) fn ingest_records_applied(kind: &'static str, count: u64) {
    counter!("trustgate_ingest_records_applied_total", "kind" => kind).increment(count);
}

/// Time ingest spent on one chunk in `stage`. On the ingest thread: `poll` (waiting for and
/// taking its records from the consumer), `fold` (classifying them and folding them into device
/// states, beside the writer), `read` (folding the records whose devices' stored states had to
/// wait for the writer), `wait` (waiting for the writer to finish the chunk before). On the
/// writer thread: `sled` (the chunk's sled batch), `index` (the decision index update after
/// it). The sums per stage say where a slow catch-up's time goes, without a profiler.
pub(crate) fn ingest_stage_time(stage: &'static str, spent: Duration) {
    histogram!("trustgate_ingest_stage_duration_seconds", "stage" => stage)
        .record(spent.as_secs_f64());
}

/// Events records sent to the dead-letter topic.
pub(crate) fn ingest_dead_lettered(count: u64) {
    counter!("trustgate_ingest_dead_lettered_total").increment(count);
}

/// Ingest cleared its state to rebuild it from the events topic's beginning, by `cause`
/// (`beyond_end`, `partition_gone`, `offset_went_back`, `topic_recreated`, `record_changed`: see `ingest::consumer::Mismatch`).
pub fn ingest_rebuild(cause: &'static str) {
    counter!("trustgate_ingest_rebuilds_total", "cause" => cause).increment(1);
}

/// A dead-letter write that failed (ingest retries it and does not move past it).
pub fn ingest_dead_letter_failed() {
    counter!("trustgate_ingest_dead_letter_failures_total").increment(1);
}

/// 1 while ingest is held by `cause` (`dead_letter`: a dead-letter write keeps failing), else 0.
pub fn ingest_stuck(cause: &'static str, stuck: bool) {
    gauge!("trustgate_ingest_stuck", "cause" => cause).set(if stuck { 1.0 } else { 0.0 });
}

/// The shared producer failed fatally and was replaced (`kafka::SharedProducer`).
pub(crate) fn producer_recreated() {
    counter!("trustgate_producer_recreated_total").increment(1);
}

/// Records behind the high watermark, per events partition.
pub(crate) fn ingest_lag(partition: i32, lag: i64) {
    gauge!("trustgate_ingest_lag_records", "partition" => partition.to_string()).set(lag as f64);
}

/// Seconds since the newest record or heartbeat from any source, the liveness age (NaN-free:
/// never written reports +Inf).
pub(crate) fn feed_age(age: Option<Duration>) {
    gauge!("trustgate_feed_age_seconds").set(age.map_or(f64::INFINITY, |a| a.as_secs_f64()));
}

/// 1 when ingest has caught up with the events topic.
pub(crate) fn ingest_caught_up(yes: bool) {
    gauge!("trustgate_ingest_caught_up").set(if yes { 1.0 } else { 0.0 });
}

// The poller (`trustgate_poller_*`).

/// One request sent to SE (every attempt, retries included).
pub(crate) fn poller_request() {
    counter!("trustgate_poller_requests_total").increment(1);
}

/// A failed attempt, by `cause`: `transport`, `body`, `5xx`, `4xx`, `auth`.
pub(crate) fn poller_request_failed(cause: &'static str) {
    counter!("trustgate_poller_request_failures_total", "cause" => cause).increment(1);
}

/// A 429 answer from SE.
pub(crate) fn poller_rate_limited() {
    counter!("trustgate_poller_429_total").increment(1);
}

/// SE's `x-ratelimit-remaining`, as last read.
pub(crate) fn poller_budget_remaining(remaining: u32) {
    gauge!("trustgate_poller_ratelimit_remaining").set(f64::from(remaining));
}

/// SE's remaining budget fell to the reserve and requests were held.
pub(crate) fn poller_budget_held() {
    counter!("trustgate_poller_budget_holds_total").increment(1);
}

/// Records published to the events topic, by `kind` (`event`, `computer`).
pub(crate) fn poller_published(kind: &'static str, count: usize) {
    counter!("trustgate_poller_records_published_total", "kind" => kind).increment(count as u64);
}

/// A record read but not published, by `reason` (`no_connector_guid`, `unreadable`).
pub(crate) fn poller_skipped(reason: &'static str) {
    counter!("trustgate_poller_records_skipped_total", "reason" => reason).increment(1);
}

/// An event already published inside the overlap window, skipped.
pub(crate) fn poller_duplicate_event() {
    counter!("trustgate_poller_duplicate_events_total").increment(1);
}

/// A completed cycle of one of the poller's loops (`events`, `inventory`: the `feed` label).
pub(crate) fn poller_cycle_done(poll_loop: &'static str) {
    counter!("trustgate_poller_cycles_total", "feed" => poll_loop).increment(1);
}

/// A failed cycle of one of the poller's loops (the `feed` label, as above).
pub(crate) fn poller_cycle_failed(poll_loop: &'static str) {
    counter!("trustgate_poller_cycle_failures_total", "feed" => poll_loop).increment(1);
}

/// The event cursor's watermark, exported in unix seconds.
pub(crate) fn poller_watermark(watermark: Millis) {
    gauge!("trustgate_poller_watermark_seconds").set(watermark as f64 / 1000.0);
}

/// 1 while polling, 0 once stopped by an error no retry can fix (401/403).
pub(crate) fn poller_up(up: bool) {
    gauge!("trustgate_poller_up").set(if up { 1.0 } else { 0.0 });
}

// The webhook bridge (`trustgate_webhook_*`).

/// A delivery accepted (202), with how many records it carried.
pub(crate) fn webhook_accepted(records: usize) {
    counter!("trustgate_webhook_accepted_total").increment(1);
    counter!("trustgate_webhook_records_total").increment(records as u64);
}

/// A delivery whose `webhook-id` was already accepted.
pub(crate) fn webhook_duplicate() {
    counter!("trustgate_webhook_duplicates_total").increment(1);
}

/// A delivery not accepted, by `reason` (the webhook's `Reject`, in snake case).
pub(crate) fn webhook_rejected(reason: &'static str) {
    counter!("trustgate_webhook_rejected_total", "reason" => reason).increment(1);
}

// The decision audit (`trustgate_audit_*`).

/// An audit record acknowledged by the broker.
pub(crate) fn audit_written() {
    counter!("trustgate_audit_written_total").increment(1);
}

/// An audit record not written, by `cause`: `queue_full` (the writer fell behind; dropped
/// without delaying the decision), `delivery` (the producer or broker refused it), `closed`
/// (the writer had stopped).
pub(crate) fn audit_failed(cause: &'static str, count: u64) {
    counter!("trustgate_audit_failures_total", "cause" => cause).increment(count);
}

// The Secure Endpoint Event Stream consumer (`trustgate_amqp_*`).

/// A message delivered by the stream's queue.
pub(crate) fn amqp_received() {
    counter!("trustgate_amqp_received_total").increment(1);
}

/// A message's body acknowledged by Kafka on the events topic.
pub(crate) fn amqp_published() {
    counter!("trustgate_amqp_published_total").increment(1);
}

/// A message that is not a usable SE event, acknowledged by Kafka on the dead-letter topic.
pub(crate) fn amqp_dead_lettered() {
    counter!("trustgate_amqp_dead_lettered_total").increment(1);
}

/// A message read but not published, by `reason` (`no_connector_guid`: an account event).
pub(crate) fn amqp_skipped(reason: &'static str) {
    counter!("trustgate_amqp_skipped_total", "reason" => reason).increment(1);
}

/// A message acknowledged to the broker (after Kafka acknowledged what it became).
pub(crate) fn amqp_acked() {
    counter!("trustgate_amqp_acked_total").increment(1);
}

/// 1 while consuming the stream's queue, else 0.
pub(crate) fn amqp_connected(connected: bool) {
    gauge!("trustgate_amqp_connected").set(if connected { 1.0 } else { 0.0 });
}

/// A connection attempt after a failure or a lost connection.
pub(crate) fn amqp_reconnect() {
    counter!("trustgate_amqp_reconnects_total").increment(1);
}
