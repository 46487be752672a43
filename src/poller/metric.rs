//! Metric names (the `metrics` facade; the exporter is wired elsewhere).

/// Requests sent to SE (every attempt, retries included).
pub const REQUESTS: &str = "trustgate_poller_requests_total";
/// Failed attempts, by `cause`: transport, body, 5xx, 4xx, auth.
pub const FAILURES: &str = "trustgate_poller_request_failures_total";
/// 429 answers from SE.
pub const RATE_LIMITED: &str = "trustgate_poller_429_total";
/// Times SE's remaining budget fell to the reserve and requests were held.
pub const HOLDS: &str = "trustgate_poller_budget_holds_total";
/// SE's `x-ratelimit-remaining`, as last read.
pub const REMAINING: &str = "trustgate_poller_ratelimit_remaining";
/// Records published, by `kind` (event, computer).
pub const PUBLISHED: &str = "trustgate_poller_records_published_total";
/// Records read but not published, by `reason` (no_connector_guid, unreadable).
pub const SKIPPED: &str = "trustgate_poller_records_skipped_total";
/// Events already published inside the overlap window, skipped.
pub const DUPLICATES: &str = "trustgate_poller_duplicate_events_total";
/// Completed cycles, by `feed` (events, inventory).
pub const CYCLES: &str = "trustgate_poller_cycles_total";
/// Failed cycles, by `feed`.
pub const CYCLE_FAILURES: &str = "trustgate_poller_cycle_failures_total";
/// The event watermark, unix seconds.
pub const WATERMARK: &str = "trustgate_poller_watermark_seconds";
/// 1 while polling, 0 once stopped by an authentication failure.
pub const UP: &str = "trustgate_poller_up";
