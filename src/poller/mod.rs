//! The Secure Endpoint poller: SE's REST API into the events topic, within the request budget.
//!
//! Owns two feeds sharing one [`client::Client`] (and so one request budget): the event feed
//! (`/v1/events` from a checkpointed cursor, see [`events`] and [`cursor`]) and the inventory
//! sweep (`/v1/computers`, see [`inventory`]). Both publish SE's bytes unchanged through
//! [`crate::publish::EventsPublisher`]. [`rate_limit`] keeps every request inside the governor
//! quota and SE's own `x-ratelimit-*` budget; [`plan`] is the arithmetic behind
//! `trustgate poll --plan`. It does not own what the records mean: that is [`crate::fold`].
//!
//! Failure policy: transient errors (5xx, timeouts, 429, Kafka) fail a cycle, which the next
//! cycle retries from the checkpoint; 401/403 stop the poller with an error naming the cause.

pub mod client;
pub mod cursor;
pub mod events;
pub mod inventory;
pub mod plan;
pub mod rate_limit;

use crate::config::{PollerSettings, Settings};
use crate::publish::{EventsPublisher, OutRecord, PublishError};
use crate::telemetry::metrics;
use client::{Client, FetchError};
use cursor::CheckpointError;
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a publish may wait for room in the producer's local queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a cycle (one poll or one sweep) failed.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("SE page could not be split: {0}")]
    Page(#[from] crate::se::PageError),
}

impl CycleError {
    /// Errors that no retry can fix: bad credentials, an unusable state directory.
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            CycleError::Fetch(FetchError::Unauthorized { .. }) | CycleError::Checkpoint(_)
        )
    }

    fn is_cancelled(&self) -> bool {
        matches!(self, CycleError::Fetch(FetchError::Cancelled(_)))
    }
}

/// What both feeds share.
#[derive(Clone)]
pub struct Feed {
    pub client: Client,
    pub publisher: EventsPublisher,
    pub settings: PollerSettings,
}

impl Feed {
    async fn publish(&self, records: &[OutRecord<'_>]) -> Result<(), PublishError> {
        if records.is_empty() {
            return Ok(());
        }
        self.publisher.publish_all(records, QUEUE_TIMEOUT).await
    }

    fn same_origin(&self, next: &str) -> String {
        reroot(&self.settings.base_url, next)
    }
}

/// A `next` link re-rooted at the configured `base_url`: credentials only ever go to the
/// configured host, and a proxy in front of SE stays in the path.
fn reroot(base_url: &str, next: &str) -> String {
    match reqwest::Url::parse(next) {
        Ok(u) => {
            let query = u.query().map(|q| format!("?{q}")).unwrap_or_default();
            format!("{base_url}{}{query}", u.path())
        }
        Err(_) => format!("{base_url}{next}"),
    }
}

/// Logs a failed cycle; returns the error when it is fatal. A cancelled cycle is not a failure.
fn cycle_failed(feed: &'static str, e: CycleError) -> Result<(), CycleError> {
    if e.is_cancelled() {
        return Ok(());
    }
    metrics::poller_cycle_failed(feed);
    if e.is_fatal() {
        metrics::poller_up(false);
        tracing::error!(feed, error = %e, "Poller stopped.");
        return Err(e);
    }
    tracing::warn!(feed, error = %e, "Cycle failed; the next one retries from the checkpoint.");
    Ok(())
}

/// Runs the event feed until cancelled.
async fn run_events(
    mut feed: events::EventFeed,
    interval: Duration,
    cancel: CancellationToken,
) -> Result<(), CycleError> {
    loop {
        match feed.cycle(&cancel).await {
            Ok(stats) => {
                metrics::poller_cycle_done("events");
                tracing::info!(
                    pages = stats.pages,
                    published = stats.published,
                    duplicates = stats.duplicates,
                    skipped = stats.skipped,
                    watermark = feed.cursor().describe(),
                    "Event poll done."
                );
            }
            Err(e) => cycle_failed("events", e)?,
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

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
    let feed = Feed {
        client: Client::new(poller)?,
        publisher,
        settings: poller.clone(),
    };
    let events = events::EventFeed::open(feed.clone())?;
    tracing::info!(
        base_url = poller.base_url,
        events_interval_s = poller.events_interval.as_secs(),
        inventory_interval_s = poller.inventory_interval.as_secs(),
        requests_per_hour = poller.requests_per_hour,
        "Poller started."
    );
    metrics::poller_up(true);
    // A fatal error in one feed stops the other too.
    let stop = shutdown.child_token();
    let events_task = {
        let stop = stop.clone();
        async move {
            let r = run_events(events, poller.events_interval, stop.clone()).await;
            stop.cancel();
            r
        }
    };
    let inventory_task = {
        let stop = stop.clone();
        let grace = settings.fold.resolution_grace;
        async move {
            let r = inventory::run(feed, grace, stop.clone()).await;
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
    fn next_links_are_rerooted_at_the_configured_base_url() {
        assert_eq!(
            reroot(
                "http://127.0.0.1:9000",
                "https://api.amp.cisco.com/v1/events?start_date=x&limit=5&offset=5"
            ),
            "http://127.0.0.1:9000/v1/events?start_date=x&limit=5&offset=5"
        );
    }

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
