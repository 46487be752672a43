//! What the poller's two loops (the event poll and the inventory sweep) share: the
//! [`PollContext`] they read SE and publish through, the [`CycleError`] a cycle fails with, and
//! what a failed cycle means ([`cycle_failed`]).

use super::client::{Client, FetchError};
use super::cursor::CheckpointError;
use crate::config::PollerSettings;
use crate::publish::{EventsPublisher, OutRecord, PublishError};
use crate::telemetry::metrics;
use std::time::Duration;

/// How long a publish may wait for room in the producer's local queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a cycle (one poll or one sweep) failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum CycleError {
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

/// What both loops share: one SE client (and so one request budget), the events publisher and
/// the poller's settings. Cheap to clone.
#[derive(Clone)]
pub(super) struct PollContext {
    pub(super) client: Client,
    pub(super) publisher: EventsPublisher,
    pub(super) settings: PollerSettings,
}

impl PollContext {
    /// Publishes `records` and waits until Kafka acknowledged all of them.
    pub(super) async fn publish(&self, records: &[OutRecord<'_>]) -> Result<(), PublishError> {
        if records.is_empty() {
            return Ok(());
        }
        self.publisher.publish_all(records, QUEUE_TIMEOUT).await
    }

    /// A page's `next` link, re-rooted at the configured `base_url`.
    pub(super) fn same_origin(&self, next: &str) -> String {
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

/// Logs a failed cycle of `poll_loop` (`events` or `inventory`); returns the error when it is
/// fatal. A cancelled cycle is not a failure.
pub(super) fn cycle_failed(poll_loop: &'static str, e: CycleError) -> Result<(), CycleError> {
    if e.is_cancelled() {
        return Ok(());
    }
    metrics::poller_cycle_failed(poll_loop);
    if e.is_fatal() {
        metrics::poller_up(false);
        tracing::error!(poll_loop, error = %e, "Poller stopped.");
        return Err(e);
    }
    tracing::warn!(poll_loop, error = %e, "Cycle failed; the next one retries from the checkpoint.");
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
}
