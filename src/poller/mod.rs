//! The Secure Endpoint poller: SE's REST API into the events topic, within the request budget.
//!
//! Owns two loops sharing one SE client (`client.rs`, and so one request budget) through a
//! `PollContext`: the event poll (`/v1/events` from a checkpointed cursor, see `events.rs` and
//! `cursor.rs`) and the inventory sweep (`/v1/computers`, see `inventory.rs`); what they share
//! is in `cycle.rs`. Both publish SE's bytes unchanged through
//! [`crate::publish::EventsPublisher`]. `rate_limit.rs` keeps every request inside the governor
//! quota and SE's own `x-ratelimit-*` budget; [`plan`] is the arithmetic behind
//! `trustgate poll --plan`. It does not own what the records mean: that is [`crate::fold`].
//!
//! Failure policy: transient errors (5xx, timeouts, 429, Kafka) fail a cycle, which the next
//! cycle retries from the checkpoint; 401/403 stop the poller with an error naming the cause.

mod client;
mod cursor;
mod cycle;
mod events;
mod inventory;
pub mod plan;
mod rate_limit;

use cycle::PollContext;

use crate::config::Settings;
use crate::publish::EventsPublisher;
use crate::telemetry::metrics;
use client::Client;
use events::EventPoll;
use std::collections::HashSet;
use tokio_util::sync::CancellationToken;

/// The `trustgate-source` of every record the poller writes.
pub const SOURCE: &str = "poll";

/// Warns when an `event_type[]` filter leaves out compromise-class types: those detections
/// would never reach the fold, so they could never deny.
fn check_event_types(settings: &Settings) {
    let missing = missing_compromise_types(
        &settings.poller.event_types,
        &settings.fold.compromise_event_types,
    );
    if !missing.is_empty() {
        tracing::warn!(
            missing = ?missing,
            "poller.event_types leaves out compromise-class event types: those detections will not be polled."
        );
    }
}

/// The compromise-class types an `event_type[]` filter leaves out (none without a filter).
fn missing_compromise_types(filter: &[u64], compromise: &HashSet<u64>) -> Vec<u64> {
    if filter.is_empty() {
        return Vec::new();
    }
    let mut missing: Vec<u64> = compromise
        .iter()
        .filter(|t| !filter.contains(t))
        .copied()
        .collect();
    missing.sort_unstable();
    missing
}

/// Runs the poller until `shutdown`; returns after in-flight publishes and checkpoints are done.
/// Fails on 401/403 (with the cause) and on an unusable state directory.
pub async fn run(
    settings: Settings,
    publisher: EventsPublisher,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let poller = &settings.poller;
    check_event_types(&settings);
    let ctx = PollContext {
        client: Client::new(poller)?,
        publisher,
        settings: poller.clone(),
    };
    // Off (`[poller] events = false`) when the Event Stream brings the events: then neither
    // the cursor nor its lock is touched.
    let event_poll = if poller.events {
        Some(EventPoll::open(ctx.clone())?)
    } else {
        tracing::info!("Event poll off (poller.events = false); inventory sweep only.");
        None
    };
    tracing::info!(
        base_url = poller.base_url,
        events_interval_s = poller.events_interval.as_secs(),
        inventory_interval_s = poller.inventory_interval.as_secs(),
        requests_per_hour = poller.requests_per_hour,
        "Poller started."
    );
    metrics::poller_up(true);
    // A fatal error in one loop stops the other too.
    let stop = shutdown.child_token();
    let events_task = {
        let stop = stop.clone();
        async move {
            let Some(event_poll) = event_poll else {
                return Ok(());
            };
            let r = events::run(event_poll, poller.events_interval, stop.clone()).await;
            stop.cancel();
            r
        }
    };
    let inventory_task = {
        let stop = stop.clone();
        let grace = settings.fold.resolution_grace;
        async move {
            let r = inventory::run(ctx, grace, stop.clone()).await;
            stop.cancel();
            r
        }
    };
    let (e, i) = tokio::join!(events_task, inventory_task);
    e?;
    i?;
    tracing::info!("Poller stopped.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_without_compromise_types_is_reported() {
        let compromise: HashSet<u64> = [1090519054, 1107296272].into();
        assert_eq!(
            missing_compromise_types(&[], &compromise),
            Vec::<u64>::new()
        );
        assert_eq!(
            missing_compromise_types(&[1090519054, 553648143], &compromise),
            vec![1107296272]
        );
        assert!(missing_compromise_types(&[1107296272, 1090519054], &compromise).is_empty());
    }
}
