//! The event poll: every `events_interval`, read `/v1/events` from the cursor (minus the
//! overlap) to the end, publish what is new byte-for-byte, then checkpoint and heartbeat.
//!
//! Order per cycle, which is what makes a SIGKILL anywhere harmless: publish a page and wait for
//! Kafka's acknowledgement, then the next page, …, then store the checkpoint, then the
//! heartbeat. The cycle works on a copy of the cursor: a failed cycle leaves the checkpointed
//! one in force, so the next cycle re-reads (duplicates) instead of skipping (loss).

use super::client::Page;
use super::cursor::{event_key, Checkpoint, Cursor, StateLock, Tenant};
use super::cycle::{cycle_failed, CycleError, PollContext};
use crate::publish::OutRecord;
use crate::se::{split_records, Event};
use crate::telemetry::metrics;
use crate::time::{parse_rfc3339, rfc3339, Millis};
use crate::topic::Kind;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::value::RawValue;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What one cycle did, for the log.
#[derive(Debug, Default)]
struct CycleStats {
    pages: u32,
    published: usize,
    duplicates: usize,
    skipped: usize,
}

/// The event poll with its cursor.
pub(super) struct EventPoll {
    ctx: PollContext,
    checkpoint: Checkpoint,
    cursor: Cursor,
    /// Held while the poll lives: no second poller can share the state directory.
    _lock: StateLock,
}

/// One event of a page that is new and publishable.
struct Fresh<'a> {
    guid: String,
    raw: &'a RawValue,
}

impl EventPoll {
    /// Locks the state directory and loads this tenant's checkpoint; a corrupt one, or a
    /// directory another poller holds, stops start-up rather than re-reading silently.
    pub(super) fn open(ctx: PollContext) -> Result<EventPoll, CycleError> {
        let tenant = Tenant {
            base_url: ctx.settings.base_url.clone(),
            client_id: ctx.settings.client_id.clone(),
        };
        let checkpoint = Checkpoint::new(&ctx.settings.state_path, tenant);
        let lock = checkpoint.lock()?;
        let cursor = checkpoint.load()?;
        tracing::info!(
            watermark = cursor.describe(),
            known = cursor.seen.len(),
            "Event poll cursor loaded."
        );
        Ok(EventPoll {
            ctx,
            checkpoint,
            cursor,
            _lock: lock,
        })
    }

    fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// One poll: read every page, publish what is new, checkpoint, heartbeat.
    async fn cycle(&mut self, cancel: &CancellationToken) -> Result<CycleStats, CycleError> {
        let polled_at = Utc::now();
        let polled_ms = polled_at.timestamp_millis();
        let s = &self.ctx.settings;
        let overlap = millis(s.events_overlap);
        let mut working = self.cursor.clone();
        let start = working.start_date(polled_ms, overlap, millis(s.initial_lookback));
        let mut url = events_url(
            &self.ctx.client.url("/v1/events"),
            start,
            s.page_size,
            &s.event_types,
        );
        let mut newest: Option<Millis> = None;
        let mut stats = CycleStats::default();
        loop {
            let page = self.ctx.client.get(&url, cancel).await?;
            stats.pages += 1;
            let next = self
                .publish_page(&page, &mut working, &mut newest, &mut stats, polled_ms)
                .await?;
            match next {
                Some(next) => url = self.ctx.same_origin(&next),
                None => break,
            }
        }
        working.advance(newest, polled_ms, overlap);
        let checkpoint = self.checkpoint.clone();
        let stored = working.clone();
        tokio::task::spawn_blocking(move || checkpoint.store(&stored))
            .await
            .expect("checkpoint task")?;
        self.cursor = working;
        if let Some(w) = self.cursor.watermark {
            metrics::poller_watermark(w);
        }
        self.heartbeat(polled_at).await;
        Ok(stats)
    }

    /// Publishes a page's new events and waits for Kafka; returns its `next` link.
    async fn publish_page(
        &self,
        page: &Page,
        cursor: &mut Cursor,
        newest: &mut Option<Millis>,
        stats: &mut CycleStats,
        polled_ms: Millis,
    ) -> Result<Option<String>, CycleError> {
        let records = split_records(&page.body)?;
        let mut fresh: Vec<Fresh<'_>> = Vec::new();
        for raw in &records.records {
            let Ok(event) = serde_json::from_str::<Event>(raw.get()) else {
                metrics::poller_skipped("unreadable");
                tracing::warn!("Skipping an SE event without a readable event_type_id/id.");
                stats.skipped += 1;
                continue;
            };
            let date = event.date.as_deref().and_then(parse_rfc3339);
            *newest = (*newest).max(date);
            let key = event_key(event.id, event.event_type_id, raw.get().as_bytes());
            if cursor.seen(&key) {
                metrics::poller_duplicate_event();
                stats.duplicates += 1;
                continue;
            }
            // Marked now, kept only if the whole cycle succeeds (the cursor is a copy).
            cursor.mark(key, date.unwrap_or(polled_ms));
            match event.connector_guid() {
                Some(guid) => fresh.push(Fresh { guid, raw }),
                None => {
                    // Account events (password resets, …) are about no device.
                    metrics::poller_skipped("no_connector_guid");
                    stats.skipped += 1;
                }
            }
        }
        let out: Vec<OutRecord<'_>> = fresh
            .iter()
            .map(|f| OutRecord {
                kind: Kind::Event,
                key: &f.guid,
                value: f.raw.get().as_bytes(),
                observed_at: None,
            })
            .collect();
        self.ctx.publish(&out).await?;
        metrics::poller_published("event", out.len());
        stats.published += out.len();
        Ok(records.next)
    }

    /// Tells consumers the poller is alive (liveness). A lost heartbeat is only logged: the next cycle
    /// sends another, and the events themselves are already durable.
    async fn heartbeat(&self, polled_at: DateTime<Utc>) {
        let value = serde_json::json!({
            "source": self.ctx.publisher.source(),
            "polled_at": rfc3339(polled_at),
            "watermark": self.cursor.watermark.map(crate::time::format_millis),
        })
        .to_string();
        let record = OutRecord {
            kind: Kind::Heartbeat,
            key: "poller",
            value: value.as_bytes(),
            observed_at: None,
        };
        if let Err(e) = self.ctx.publish(&[record]).await {
            tracing::warn!(error = %e, "Heartbeat not published.");
        }
    }
}

/// Runs the event poll every `interval` until `shutdown`. Failures are logged and retried at
/// the next poll; authentication failures stop it.
pub(super) async fn run(
    mut poll: EventPoll,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), CycleError> {
    loop {
        match poll.cycle(&shutdown).await {
            Ok(stats) => {
                metrics::poller_cycle_done("events");
                tracing::info!(
                    pages = stats.pages,
                    published = stats.published,
                    duplicates = stats.duplicates,
                    skipped = stats.skipped,
                    watermark = poll.cursor().describe(),
                    "Event poll done."
                );
            }
            Err(e) => cycle_failed("events", e)?,
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// The first URL of a poll starting at `start` (unix ms, inclusive; SE takes whole seconds, so
/// it is rounded down, which only widens the window).
fn events_url(endpoint: &str, start: Millis, page_size: u32, event_types: &[u64]) -> String {
    let start = Utc
        .timestamp_opt(start.div_euclid(1000), 0)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut url = reqwest::Url::parse(endpoint).expect("base_url is a URL");
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("start_date", &start);
        q.append_pair("limit", &page_size.to_string());
        for t in event_types {
            q.append_pair("event_type[]", &t.to_string());
        }
    }
    url.into()
}

fn millis(d: Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_url_has_an_inclusive_start_in_whole_seconds_and_the_type_filter() {
        let start = crate::time::parse_rfc3339("2026-11-28T10:15:29.750Z").unwrap();
        let url = events_url(
            "http://127.0.0.1:8080/v1/events",
            start,
            500,
            &[1090519054, 553648143],
        );
        assert_eq!(
            url,
            "http://127.0.0.1:8080/v1/events?start_date=2026-11-28T10%3A15%3A29Z&limit=500\
             &event_type%5B%5D=1090519054&event_type%5B%5D=553648143"
        );
    }
}
