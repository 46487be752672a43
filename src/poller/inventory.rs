//! The inventory sweep: all of `/v1/computers`, page by page, every `inventory_interval`.
//!
//! Each computer is published byte-for-byte with `trustgate-observed-at` = when its page was
//! requested (SE's state can only be newer than that). This is what clears a compromise
//! resolved in SE's console, and what gives identifiers for devices that have no events.
//!
//! After a start, one extra sweep runs `resolution_grace` later: events backfilled at start count
//! from when they were first seen, so only an observation that much later can clear the
//! detections SE had already resolved.

use super::cycle::{cycle_failed, CycleError, PollContext};
use crate::publish::OutRecord;
use crate::se::{normalize_guid, split_records, Computer};
use crate::telemetry::metrics;
use crate::topic::Kind;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What one sweep did, for the log.
#[derive(Debug, Default)]
struct SweepStats {
    pages: u32,
    published: usize,
    skipped: usize,
}

/// Reads every page of `/v1/computers` and publishes each computer.
async fn sweep(ctx: &PollContext, cancel: &CancellationToken) -> Result<SweepStats, CycleError> {
    let mut url = ctx.client.url(&format!(
        "/v1/computers?limit={}&offset=0",
        ctx.settings.page_size
    ));
    let mut stats = SweepStats::default();
    loop {
        let page = ctx.client.get(&url, cancel).await?;
        stats.pages += 1;
        let records = split_records(&page.body)?;
        let mut keyed = Vec::with_capacity(records.records.len());
        for raw in &records.records {
            match serde_json::from_str::<Computer>(raw.get())
                .ok()
                .and_then(|c| normalize_guid(&c.connector_guid))
            {
                Some(guid) => keyed.push((guid, *raw)),
                None => {
                    metrics::poller_skipped("no_connector_guid");
                    stats.skipped += 1;
                }
            }
        }
        let out: Vec<OutRecord<'_>> = keyed
            .iter()
            .map(|(guid, raw)| OutRecord {
                kind: Kind::Computer,
                key: guid,
                value: raw.get().as_bytes(),
                observed_at: Some(page.sent_at),
            })
            .collect();
        ctx.publish(&out).await?;
        metrics::poller_published("computer", out.len());
        stats.published += out.len();
        match records.next {
            Some(next) => url = ctx.same_origin(&next),
            None => return Ok(stats),
        }
    }
}

/// When sweeps run: at start, once more `grace` after start, then every `interval`.
#[derive(Debug, Clone)]
struct Schedule {
    interval: Duration,
    extra: Option<Instant>,
    regular: Instant,
}

impl Schedule {
    fn new(started: Instant, interval: Duration, grace: Duration) -> Schedule {
        Schedule {
            interval,
            extra: (grace < interval).then(|| started + grace),
            regular: started,
        }
    }

    /// The next sweep time, consuming it.
    fn take_next(&mut self) -> Instant {
        match self.extra {
            Some(extra) if extra <= self.regular => {
                self.extra = None;
                extra
            }
            _ => {
                let at = self.regular;
                self.regular += self.interval;
                at
            }
        }
    }
}

/// Runs sweeps on the schedule until `shutdown`. Failures are logged and retried at the next
/// sweep; authentication failures stop the sweeps.
pub(super) async fn run(
    ctx: PollContext,
    grace: Duration,
    shutdown: CancellationToken,
) -> Result<(), CycleError> {
    let mut schedule = Schedule::new(Instant::now(), ctx.settings.inventory_interval, grace);
    loop {
        let at = schedule.take_next();
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(at) => {}
        }
        match sweep(&ctx, &shutdown).await {
            Ok(stats) => {
                metrics::poller_cycle_done("inventory");
                tracing::info!(
                    pages = stats.pages,
                    computers = stats.published,
                    skipped = stats.skipped,
                    "Inventory sweep done."
                );
            }
            Err(e) => cycle_failed("inventory", e)?,
        }
        // A sweep longer than the interval: skip the missed slots rather than run back to back.
        while schedule.regular < Instant::now() {
            schedule.regular += schedule.interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_at_start_after_the_grace_then_every_interval() {
        let t0 = Instant::now();
        let (h, g) = (Duration::from_secs(3600), Duration::from_secs(600));
        let mut s = Schedule::new(t0, h, g);
        let got: Vec<_> = (0..4).map(|_| s.take_next() - t0).collect();
        assert_eq!(got, vec![Duration::ZERO, g, h, 2 * h]);
    }

    #[test]
    fn no_extra_sweep_when_the_interval_is_shorter_than_the_grace() {
        let t0 = Instant::now();
        let (h, g) = (Duration::from_secs(60), Duration::from_secs(600));
        let mut s = Schedule::new(t0, h, g);
        let got: Vec<_> = (0..3).map(|_| s.take_next() - t0).collect();
        assert_eq!(got, vec![Duration::ZERO, h, 2 * h]);
    }
}
