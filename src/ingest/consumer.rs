//! The ingest loop.

use super::IngestStatus;
use crate::config::Settings;
use crate::fold::{classify, Classified, DeviceState, Fact, RecordInput};
use crate::kafka::{client_config, Role};
use crate::liveness::LivenessClock;
use crate::store::{ChunkUpdate, Store};
use crate::telemetry::metrics;
use crate::time::now_millis;
use crate::topic::{dead_letter_record, HEADER_KIND, HEADER_OBSERVED_AT, HEADER_SOURCE};
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Most records applied in one atomic chunk.
const MAX_CHUNK: usize = 2000;
/// How often new partitions are looked for and high watermarks (for lag and broker
/// reachability) are refreshed.
const PARTITION_REFRESH: Duration = Duration::from_secs(5);

/// What ingest needs.
pub(crate) struct IngestContext {
    pub(crate) settings: Settings,
    pub(crate) store: Store,
    pub(crate) producer: FutureProducer,
    pub(crate) status: IngestStatus,
    /// Advanced with every chunk's newest record time.
    pub(crate) liveness: LivenessClock,
}

/// Runs ingest until `shutdown`; blocking, so call it from a dedicated thread. Returns after the
/// chunk in flight is stored.
pub(crate) fn run(ctx: IngestContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    let topic = ctx.settings.topics.events.clone();
    let consumer: BaseConsumer = client_config(&ctx.settings.kafka, Role::Ingest)
        .create()
        .context("creating the ingest consumer")?;
    let mut ingest = Ingest {
        ctx,
        shutdown,
        topic,
        assigned: BTreeSet::new(),
        targets: HashMap::new(),
        next: HashMap::new(),
    };
    ingest.assign_new_partitions(&consumer)?;
    let mut last_refresh = Instant::now();
    while !ingest.shutdown.is_cancelled() {
        let chunk = poll_chunk(&consumer);
        let idle = chunk.is_empty();
        if !idle {
            ingest.apply_chunk(&chunk)?;
        }
        drop(chunk);
        ingest.check_caught_up(&consumer, idle);
        if last_refresh.elapsed() > PARTITION_REFRESH {
            ingest.assign_new_partitions(&consumer)?;
            ingest.refresh_watermarks(&consumer);
            last_refresh = Instant::now();
        }
    }
    ingest.ctx.store.flush_blocking()?;
    tracing::info!("Ingest stopped.");
    Ok(())
}

struct Ingest {
    ctx: IngestContext,
    /// Stops the loop; a dead-letter write still failing then stops ingest with an error.
    shutdown: CancellationToken,
    topic: String,
    assigned: BTreeSet<i32>,
    /// High watermark per partition when it was assigned: the end to catch up to.
    targets: HashMap<i32, i64>,
    /// Next offset to apply per partition, as stored in sled.
    next: HashMap<i32, i64>,
}

impl Ingest {
    fn assign_new_partitions(&mut self, consumer: &BaseConsumer) -> anyhow::Result<()> {
        let metadata = loop {
            let fetched = consumer.fetch_metadata(Some(&self.topic), Duration::from_secs(5));
            if fetched.is_ok() {
                self.ctx.status.broker_answered();
            }
            match fetched {
                Ok(m)
                    if m.topics()
                        .first()
                        .is_some_and(|t| !t.partitions().is_empty()) =>
                {
                    break m
                }
                Ok(_) | Err(_) if self.shutdown.is_cancelled() => return Ok(()),
                Ok(_) => {
                    tracing::warn!(topic = %self.topic, "Events topic has no partitions yet; retrying.")
                }
                Err(e) => {
                    tracing::warn!(topic = %self.topic, error = %e, "Cannot read events topic metadata; retrying.")
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        let partitions: Vec<i32> = metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        let fresh: Vec<i32> = partitions
            .into_iter()
            .filter(|p| !self.assigned.contains(p))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let stored = self.ctx.store.offsets(&self.topic)?;
        let mut list = TopicPartitionList::new();
        for p in &fresh {
            let offset = stored
                .get(p)
                .map_or(Offset::Beginning, |o| Offset::Offset(*o));
            list.add_partition_offset(&self.topic, *p, offset)?;
            let (low, high) =
                consumer.fetch_watermarks(&self.topic, *p, Duration::from_secs(10))?;
            self.targets.insert(*p, high);
            self.next.insert(*p, stored.get(p).copied().unwrap_or(low));
            self.ctx.status.record_progress(*p, self.next[p], high);
        }
        consumer
            .incremental_assign(&list)
            .context("assigning events partitions")?;
        self.assigned.extend(fresh.iter().copied());
        tracing::info!(topic = %self.topic, partitions = ?fresh, "Ingest assigned partitions.");
        Ok(())
    }

    fn apply_chunk(&mut self, chunk: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
        let fold = &self.ctx.settings.fold;
        let mut update = ChunkUpdate::default();
        let mut dead = Vec::new();
        let (mut applied_devices, mut applied_heartbeats) = (0u64, 0u64);
        // One clock reading for the chunk: no time a record carries may be later than this
        // (see `fold::classify`), liveness included.
        let now = now_millis();
        for msg in chunk {
            let input = record_input(msg);
            match classify(&input, fold, now) {
                Ok(Classified::Device(fact)) => {
                    applied_devices += 1;
                    fold_fact(&self.ctx.store, &mut update, &fact)?;
                }
                Ok(Classified::Heartbeat(_)) => applied_heartbeats += 1,
                Err(e) => dead.push((msg, e.to_string())),
            }
            let source = header(msg, HEADER_SOURCE)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_else(|| "unknown".to_owned());
            let at = input.timestamp.min(now);
            let newest = update.liveness.entry(source).or_insert(at);
            *newest = (*newest).max(at);
            update
                .offsets
                .insert((msg.topic().to_owned(), msg.partition()), msg.offset() + 1);
        }
        self.dead_letter(&dead)?;
        self.ctx.status.broker_answered();
        metrics::ingest_records_applied("device", applied_devices);
        metrics::ingest_records_applied("heartbeat", applied_heartbeats);
        metrics::ingest_dead_lettered(dead.len() as u64);

        self.ctx.store.apply(&update)?;
        if let Some(newest) = update.liveness.values().max() {
            self.ctx.liveness.observe(*newest);
        }
        for ((_, partition), next) in &update.offsets {
            self.next.insert(*partition, *next);
            let high = self.targets.get(partition).copied().unwrap_or(0).max(*next);
            self.ctx.status.record_progress(*partition, *next, high);
        }
        tracing::debug!(
            records = chunk.len(),
            devices = update.devices.len(),
            dead = dead.len(),
            "Applied chunk."
        );
        Ok(())
    }

    /// Sends every unusable record of a chunk to the DLQ and waits for the broker to acknowledge
    /// them all, so that their offsets are stored only once they are safe elsewhere.
    fn dead_letter(&self, dead: &[(&BorrowedMessage<'_>, String)]) -> anyhow::Result<()> {
        let dlq = &self.ctx.settings.topics.dlq;
        let mut attempt = 0u32;
        for (msg, error) in dead {
            tracing::warn!(topic = %msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %error,
                "Dead-lettering an unusable events record.");
            loop {
                let record = dead_letter_record(dlq, msg, error);
                let sent = futures::executor::block_on(
                    self.ctx.producer.send(record, Duration::from_secs(30)),
                );
                match sent {
                    Ok(_) => break,
                    Err((e, _)) if !self.shutdown.is_cancelled() => {
                        attempt += 1;
                        tracing::warn!(error = %e, attempt, "Dead-letter write failed; retrying before moving on.");
                        std::thread::sleep(Duration::from_millis(200 * u64::from(attempt.min(25))));
                    }
                    Err((e, _)) => {
                        anyhow::bail!("stopping with an unacknowledged dead-letter record: {e}")
                    }
                }
            }
        }
        Ok(())
    }

    /// Re-reads each partition's high watermark: keeps lag current after catch-up and proves
    /// the broker still answers.
    fn refresh_watermarks(&mut self, consumer: &BaseConsumer) {
        for p in self.assigned.clone() {
            match consumer.fetch_watermarks(&self.topic, p, Duration::from_secs(2)) {
                Ok((_, high)) => {
                    self.ctx.status.broker_answered();
                    let next = self.next.get(&p).copied().unwrap_or(0);
                    self.ctx.status.record_progress(p, next, high);
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "Cannot read the events topic's watermark.")
                }
            }
        }
    }

    fn check_caught_up(&mut self, consumer: &BaseConsumer, idle: bool) {
        if self.ctx.status.is_caught_up() || self.assigned.is_empty() {
            return;
        }
        let done = self.assigned.iter().all(|p| {
            let next = self.next.get(p).copied().unwrap_or(0);
            let target = self.targets.get(p).copied().unwrap_or(0);
            next >= target || (idle && self.position_at_least(consumer, *p, target))
        });
        if done {
            tracing::info!("Ingest caught up with the events topic.");
            self.ctx.status.set_caught_up();
        }
    }

    /// Whether the consumer's position passed `target` without records to apply (e.g. the
    /// records up to it were deleted by retention, or were transaction markers).
    fn position_at_least(&self, consumer: &BaseConsumer, partition: i32, target: i64) -> bool {
        let Ok(positions) = consumer.position() else {
            return false;
        };
        positions
            .find_partition(&self.topic, partition)
            .and_then(|tp| match tp.offset() {
                Offset::Offset(o) => Some(o >= target),
                _ => None,
            })
            .unwrap_or(false)
    }
}

/// Takes what is ready, up to [`MAX_CHUNK`] records; waits briefly only for the first.
fn poll_chunk(consumer: &BaseConsumer) -> Vec<BorrowedMessage<'_>> {
    let mut chunk = Vec::new();
    let mut timeout = Duration::from_millis(100);
    while chunk.len() < MAX_CHUNK {
        match consumer.poll(timeout) {
            Some(Ok(msg)) => chunk.push(msg),
            Some(Err(e)) => tracing::warn!(error = %e, "Events consumer error."),
            None => break,
        }
        timeout = Duration::ZERO;
    }
    chunk
}

/// Folds one fact into the chunk's update, reading the device's stored state the first time
/// the chunk names it. A device whose stored value is corrupt is left as it is (logged with its
/// key): its decisions keep answering deny `store_unavailable`, where starting it afresh would
/// forget its detections, and ingest goes on for every other device.
fn fold_fact(
    store: &Store,
    update: &mut ChunkUpdate,
    fact: &Fact,
) -> Result<(), crate::store::StoreError> {
    let entry = match update.devices.entry(fact.connector_guid.clone()) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => match store.device(e.key()) {
            Ok(before) => {
                let after = before.clone().unwrap_or_else(|| DeviceState::new(e.key()));
                e.insert((before, after))
            }
            Err(crate::store::StoreError::Corrupt { key, reason }) => {
                tracing::error!(key = %key, reason = %reason,
                    "Stored device value is corrupt; leaving it (its decisions deny store_unavailable) and skipping the record.");
                return Ok(());
            }
            Err(other) => return Err(other),
        },
    };
    entry.1.apply(fact);
    Ok(())
}

fn header<'a>(msg: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a [u8]> {
    msg.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

fn record_input<'a>(msg: &'a BorrowedMessage<'_>) -> RecordInput<'a> {
    RecordInput {
        value: msg.payload(),
        kind: header(msg, HEADER_KIND),
        source: header(msg, HEADER_SOURCE),
        observed_at: header(msg, HEADER_OBSERVED_AT),
        // Brokers stamp every record; a missing timestamp is treated as "now" so it still counts.
        timestamp: msg.timestamp().to_millis().unwrap_or_else(now_millis),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::FoldConfig;
    use crate::store::DEFAULT_CACHE_BYTES;

    fn fact(guid: &str) -> Fact {
        let value = format!(r#"{{"connector_guid":"{guid}","is_compromised":false}}"#);
        let input = RecordInput {
            value: Some(value.as_bytes()),
            timestamp: 5,
            ..Default::default()
        };
        match classify(&input, &FoldConfig::default(), 10).unwrap() {
            Classified::Device(fact) => fact,
            other => panic!("device expected, got {other:?}"),
        }
    }

    /// Issue #10 item 6: a corrupt stored device value does not stop ingest; that device is
    /// left as it is and the others are folded.
    #[test]
    fn a_corrupt_device_value_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        store.write_raw_for_test(b"Dg1", b"\x01\xff\xff");
        let mut update = ChunkUpdate::default();
        fold_fact(&store, &mut update, &fact("g1")).unwrap();
        fold_fact(&store, &mut update, &fact("g2")).unwrap();
        assert_eq!(update.devices.keys().collect::<Vec<_>>(), ["g2"]);
        store.apply(&update).unwrap();
        assert!(matches!(
            store.device("g1"),
            Err(crate::store::StoreError::Corrupt { .. })
        ));
        assert!(store.device("g2").unwrap().is_some());
    }
}
