//! The ingest loop.

use super::writer::Writer;
use super::IngestStatus;
use crate::config::Settings;
use crate::fold::{classify, Classified, DeviceState, Fact, RecordInput};
use crate::kafka::SharedProducer;
use crate::kafka::{client_config, Role};
use crate::liveness::LivenessClock;
use crate::store::{ApplyTimings, ChunkUpdate, RecordRef, Store};
use crate::telemetry::metrics;
use crate::time::{now_millis, Millis};
use crate::topic::{dead_letter_record, HEADER_KIND, HEADER_OBSERVED_AT, HEADER_SOURCE};
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Most records applied in one atomic chunk.
const MAX_CHUNK: usize = 2000;
/// How far before a stored offset ingest starts reading when it resumes a partition (and
/// when it reads one record back), dropping what comes before the offset it wants: resuming at
/// an offset inside a batch on tansu 0.6's memory storage read nothing until the next batch
/// arrived, then went on from there, skipping the rest of the batch (records, detections among
/// them, never applied). See [`crate::topic::MAX_BATCH_RECORDS`].
const READ_THROUGH: i64 = crate::topic::MAX_BATCH_RECORDS;
/// How many times in a row a short reported end may go undecided (the last applied record
/// neither read back nor shown gone) before the end is believed: a broker's passing error
/// clears within this many partition refreshes; a shorter topic on a broker that answers a
/// read past the end with nothing is then rebuilt all the same.
const MAX_UNDECIDED: u32 = 6;
/// How often new partitions are looked for and high watermarks (for lag and broker
/// reachability) are refreshed.
const PARTITION_REFRESH: Duration = Duration::from_secs(5);

/// Stored offsets that do not belong to the events topic as it is now: the topic was
/// recreated under the same name, truncated, or lost partitions. rdkafka 0.39 does not expose
/// the broker's topic id, so these are the checks that offsets alone make sound: an offset
/// ingest stored came from a record it read, so it can never be past the partition's end,
/// and a partition's offsets never go backwards under one assignment.
#[derive(Debug, thiserror::Error)]
enum Mismatch {
    #[error(
        "partition {partition}: stored next offset {stored} is beyond the high watermark {high}"
    )]
    BeyondEnd {
        partition: i32,
        stored: i64,
        high: i64,
    },
    #[error("offsets are stored for partition {partition}, which the topic no longer has")]
    PartitionGone { partition: i32 },
    #[error("partition {partition}: the record before stored offset {stored} is stamped {found}, not {expected}")]
    RecordChanged {
        partition: i32,
        stored: i64,
        expected: i64,
        found: i64,
    },
    #[error("the topic disappeared from the broker's metadata and came back")]
    TopicRecreated,
    #[error("partition {partition}: read offset {offset} where {expected} was next")]
    OffsetWentBack {
        partition: i32,
        offset: i64,
        expected: i64,
    },
}

impl Mismatch {
    /// The metric label.
    fn cause(&self) -> &'static str {
        match self {
            Mismatch::BeyondEnd { .. } => "beyond_end",
            Mismatch::PartitionGone { .. } => "partition_gone",
            Mismatch::OffsetWentBack { .. } => "offset_went_back",
            Mismatch::TopicRecreated => "topic_recreated",
            Mismatch::RecordChanged { .. } => "record_changed",
        }
    }
}

/// The wait before the `attempt`th retry of a dead-letter write: doubling from 200 ms, capped
/// at 30 s, so that a long outage is not hammered and a short one costs little.
fn dead_letter_backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.saturating_sub(1).min(8)).min(30_000))
}

/// What ingest needs.
pub(crate) struct IngestContext {
    pub(crate) settings: Settings,
    pub(crate) store: Store,
    pub(crate) producer: SharedProducer,
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
    let writer = Writer::start(ctx.store.clone()).context("starting the ingest store writer")?;
    let mut ingest = Ingest {
        ctx,
        writer,
        shutdown,
        topic,
        assigned: BTreeSet::new(),
        targets: HashMap::new(),
        next: HashMap::new(),
        short_ends: HashMap::new(),
        resuming: HashMap::new(),
        undecided: HashMap::new(),
        read_next: HashMap::new(),
        stages: StageTotals::default(),
    };
    ingest.assign_new_partitions(&consumer)?;
    let mut last_refresh = Instant::now();
    while !ingest.shutdown.is_cancelled() {
        if ingest.ctx.status.gate().pause_requested() {
            // A pause (a replay about to exchange the store) parks ingest only when nothing
            // is in flight: everything read so far is stored.
            ingest.finish_in_flight()?;
            ingest.ctx.status.gate().checkpoint(&ingest.shutdown);
        }
        if ingest.shutdown.is_cancelled() {
            break;
        }
        let polling = Instant::now();
        let mut chunk = poll_chunk(&consumer);
        ingest.stages.add(Stage::Poll, polling.elapsed());
        ingest.drop_read_through(&mut chunk);
        let idle = chunk.is_empty();
        if let Some(mismatch) = ingest.went_back(&chunk) {
            // librdkafka reset an out-of-range position to the beginning of a recreated
            // topic: these records are not the continuation of the stored state.
            drop(chunk);
            ingest.finish_in_flight()?;
            ingest.rebuild(&consumer, mismatch)?;
            continue;
        }
        if idle {
            // Nothing to overlap with: what is in flight is finished now, so that the caught-up
            // check below sees it.
            ingest.finish_in_flight()?;
        } else {
            // Folded while the writer applies the previous chunk, except the records whose
            // device's state must be read from sled: those once that chunk is applied.
            let folded = ingest.fold_chunk(&chunk)?;
            ingest.finish_in_flight()?;
            let update = ingest.complete_chunk(&chunk, folded)?;
            ingest.writer.submit(update)?;
        }
        drop(chunk);
        ingest.check_caught_up(&consumer, idle);
        if last_refresh.elapsed() > PARTITION_REFRESH {
            // The checks below compare stored offsets with the broker's: nothing in flight.
            ingest.finish_in_flight()?;
            ingest.assign_new_partitions(&consumer)?;
            if let Some(mismatch) = ingest.refresh_watermarks(&consumer) {
                ingest.rebuild(&consumer, mismatch)?;
            }
            last_refresh = Instant::now();
        }
    }
    ingest.finish_in_flight()?;
    ingest.ctx.store.flush_blocking()?;
    tracing::info!("Ingest stopped.");
    Ok(())
}

struct Ingest {
    ctx: IngestContext,
    /// Applies folded chunks to the store on its own thread, one at a time.
    writer: Writer,
    /// Stops the loop; a dead-letter write still failing then stops ingest with an error.
    shutdown: CancellationToken,
    topic: String,
    assigned: BTreeSet<i32>,
    /// High watermark per partition when it was assigned: the end to catch up to.
    targets: HashMap<i32, i64>,
    /// Next offset to apply per partition, as stored in sled (the chunk in flight not counted).
    next: HashMap<i32, i64>,
    /// Next offset to read per partition: past the chunk in flight, for [`Ingest::went_back`].
    read_next: HashMap<i32, i64>,
    /// Per partition, the short end the broker last reported while the applied records were
    /// still there (see `applied_records_still_there`): logged once per value.
    short_ends: HashMap<i32, i64>,
    /// Partitions resumed from before their stored offset ([`READ_THROUGH`]): (where reading
    /// started, the stored offset), until a record at or past the stored offset arrives.
    resuming: HashMap<i32, (i64, i64)>,
    /// Per partition, how many reads of the last applied record in a row answered nothing
    /// (see [`MAX_UNDECIDED`]).
    undecided: HashMap<i32, u32>,
    /// Where the ingest thread's time went since it started, reported when it has caught up.
    stages: StageTotals,
}

/// The ingest thread's stages, in the order a chunk goes through them.
#[derive(Clone, Copy)]
enum Stage {
    Poll,
    /// Parsing, checking and folding records, beside the writer.
    Fold,
    /// The ingest thread waiting for the writer to finish the previous chunk.
    Wait,
    /// Reading the stored states of the devices the fold deferred, after the writer.
    Read,
    Sled,
    Index,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Poll => "poll",
            Stage::Fold => "fold",
            Stage::Wait => "wait",
            Stage::Read => "read",
            Stage::Sled => "sled",
            Stage::Index => "index",
        }
    }
}

/// Time per [`Stage`] since ingest started, and records applied: a catch-up that is slower than
/// expected says in its "caught up" log line which stage to look at (the same sums are
/// exported per chunk as `trustgate_ingest_stage_duration_seconds`). `sled` and `index` run on
/// the writer thread, beside `poll` and `fold` on the ingest thread; `wait` is the ingest
/// thread waiting for the writer (when it is large, the writer sets the pace).
#[derive(Default)]
struct StageTotals {
    spent: [Duration; 6],
    records: u64,
}

impl StageTotals {
    fn add(&mut self, stage: Stage, spent: Duration) {
        self.spent[stage as usize] += spent;
        metrics::ingest_stage_time(stage.name(), spent);
    }

    fn millis(&self, stage: Stage) -> u64 {
        self.spent[stage as usize].as_millis() as u64
    }
}

/// A chunk folded by [`Ingest::fold_chunk`], waiting for [`Ingest::complete_chunk`].
#[derive(Default)]
struct FoldedChunk {
    update: ChunkUpdate,
    /// Records of devices whose stored state is still to be read, with where they are.
    deferred: Vec<(Fact, RecordRef)>,
    /// Unusable records: position in the chunk, and why.
    dead: Vec<(usize, String)>,
    devices: u64,
    heartbeats: u64,
}

/// What reading one record back found.
enum ReadBack {
    /// The record at the offset asked for, with its timestamp.
    At(Millis),
    /// Another offset came first: the record asked for is gone (compaction).
    Elsewhere,
    /// Nothing within the time allowed, or no timestamp.
    Unreadable,
}

impl Ingest {
    fn assign_new_partitions(&mut self, consumer: &BaseConsumer) -> anyhow::Result<()> {
        // The topic missing after partitions were assigned: it was deleted, and whatever comes
        // back under its name is another topic (offsets alone cannot tell when the new one
        // already holds more records than were applied from the old one).
        let mut vanished = false;
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
                    vanished |= !self.assigned.is_empty();
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
        if vanished {
            return self.rebuild(consumer, Mismatch::TopicRecreated);
        }
        let stored = self.ctx.store.offsets(&self.topic)?;
        let gone = stored
            .keys()
            .chain(self.assigned.iter())
            .find(|p| !partitions.contains(p));
        if let Some(partition) = gone {
            let mismatch = Mismatch::PartitionGone {
                partition: *partition,
            };
            return self.rebuild(consumer, mismatch);
        }
        let fresh: Vec<i32> = partitions
            .into_iter()
            .filter(|p| !self.assigned.contains(p))
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let last_records = self.ctx.store.last_records(&self.topic)?;
        let mut list = TopicPartitionList::new();
        for p in &fresh {
            // Unanswered, the partitions are assigned at a later refresh: not caught up (and so
            // not ready) meanwhile, rather than ingest failing and taking the process down.
            let (low, mut high) =
                match consumer.fetch_watermarks(&self.topic, *p, Duration::from_secs(10)) {
                    Ok(marks) => marks,
                    Err(e) => {
                        tracing::warn!(partition = *p, error = %e,
                            "Cannot read the events partition's watermarks; assigning later.");
                        return Ok(());
                    }
                };
            let offset = match stored.get(p).copied() {
                Some(at) if at > low => {
                    let from = (at - READ_THROUGH).max(low);
                    self.resuming.insert(*p, (from, at));
                    Offset::Offset(from)
                }
                Some(at) => Offset::Offset(at),
                None => Offset::Beginning,
            };
            list.add_partition_offset(&self.topic, *p, offset)?;
            if let Some(applied) = stored.get(p).copied().filter(|s| *s > high) {
                match self.applied_records_still_there(
                    *p,
                    applied,
                    high,
                    low,
                    last_records.get(p).copied(),
                ) {
                    Some(true) => high = applied,
                    Some(false) => {}
                    // Assigned at a later refresh, when the broker answers.
                    None => return Ok(()),
                }
            }
            if let Some(stored) = stored.get(p).copied().filter(|s| *s > high) {
                let mismatch = Mismatch::BeyondEnd {
                    partition: *p,
                    stored,
                    high,
                };
                return self.rebuild(consumer, mismatch);
            }
            if let Some(mismatch) = stored
                .get(p)
                .and_then(|s| self.record_changed(*p, *s, low, last_records.get(p).copied()))
            {
                return self.rebuild(consumer, mismatch);
            }
            self.targets.insert(*p, high);
            let next = stored.get(p).copied().unwrap_or(low);
            self.next.insert(*p, next);
            self.read_next.insert(*p, next);
            self.ctx.status.record_progress(*p, next, high);
        }
        consumer
            .incremental_assign(&list)
            .context("assigning events partitions")?;
        self.assigned.extend(fresh.iter().copied());
        tracing::info!(topic = %self.topic, partitions = ?fresh, "Ingest assigned partitions.");
        Ok(())
    }

    /// Parses and checks a chunk's records (`fold::classify`) and folds each into the state of
    /// its device: the state this chunk already made, the chunk in flight's, a new one, or,
    /// for a device sled holds and nothing in flight changes, deferred to
    /// [`Ingest::complete_chunk`] (sled is not read while the writer applies a batch).
    fn fold_chunk(&mut self, chunk: &[BorrowedMessage<'_>]) -> anyhow::Result<FoldedChunk> {
        let fold = &self.ctx.settings.fold;
        let mut folded = FoldedChunk::default();
        // One clock reading for the chunk: no time a record carries may be later than this
        // (see `fold::classify`), liveness included.
        let now = now_millis();
        let folding = Instant::now();
        for (position, msg) in chunk.iter().enumerate() {
            let input = record_input(msg);
            match classify(&input, fold, now) {
                Ok(Classified::Device(fact)) => {
                    folded.devices += 1;
                    let at = RecordRef {
                        partition: msg.partition(),
                        offset: msg.offset(),
                        at: fact.record_timestamp,
                    };
                    let in_flight = self.writer.in_flight();
                    match fold_fact(&self.ctx.store, in_flight, &mut folded.update, &fact)? {
                        Folded::Applied => folded.update.add_record_ref(&fact.connector_guid, at),
                        Folded::Skipped => {}
                        Folded::NeedsStoredState => folded.deferred.push((fact, at)),
                    }
                }
                Ok(Classified::Heartbeat(_)) => folded.heartbeats += 1,
                Err(e) => folded.dead.push((position, e.to_string())),
            }
            let update = &mut folded.update;
            let source = header(msg, HEADER_SOURCE)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_else(|| "unknown".to_owned());
            let at = input.timestamp.min(now);
            let newest = update.liveness.entry(source).or_insert(at);
            *newest = (*newest).max(at);
            update
                .offsets
                .insert((msg.topic().to_owned(), msg.partition()), msg.offset() + 1);
            if let Some(at) = msg.timestamp().to_millis() {
                update
                    .last_records
                    .insert((msg.topic().to_owned(), msg.partition()), at);
            }
        }
        self.stages.add(Stage::Fold, folding.elapsed());
        Ok(folded)
    }

    /// Once nothing is in flight: folds the records [`Ingest::fold_chunk`] deferred (reading
    /// their devices' stored states), dead-letters the chunk's unusable records, and returns
    /// the update to apply.
    fn complete_chunk(
        &mut self,
        chunk: &[BorrowedMessage<'_>],
        folded: FoldedChunk,
    ) -> anyhow::Result<ChunkUpdate> {
        debug_assert!(self.writer.in_flight().is_none());
        let FoldedChunk {
            mut update,
            deferred,
            dead,
            devices,
            heartbeats,
        } = folded;
        let reading = Instant::now();
        for (fact, at) in deferred {
            // Device states merge in any order (`DeviceState::apply`), so a deferred record
            // folded after later ones of the chunk makes the same state.
            match fold_fact(&self.ctx.store, None, &mut update, &fact)? {
                Folded::Applied => update.add_record_ref(&fact.connector_guid, at),
                Folded::Skipped => {}
                Folded::NeedsStoredState => unreachable!("nothing is in flight"),
            }
        }
        self.stages.add(Stage::Read, reading.elapsed());
        self.stages.records += chunk.len() as u64;
        let dead: Vec<_> = dead
            .into_iter()
            .map(|(position, reason)| (&chunk[position], reason))
            .collect();
        self.dead_letter(&dead)?;
        self.ctx.status.broker_answered();
        metrics::ingest_records_applied("device", devices);
        metrics::ingest_records_applied("heartbeat", heartbeats);
        metrics::ingest_dead_lettered(dead.len() as u64);
        for ((_, partition), next) in &update.offsets {
            self.read_next.insert(*partition, *next);
        }
        tracing::debug!(
            records = chunk.len(),
            devices = update.devices.len(),
            dead = dead.len(),
            "Folded chunk."
        );
        Ok(update)
    }

    /// Waits for the chunk in flight, if any, to be applied, then moves the applied offsets,
    /// the liveness clock and the progress readiness reads past it.
    fn finish_in_flight(&mut self) -> anyhow::Result<()> {
        let waiting = Instant::now();
        let Some((update, timings)) = self.writer.finish()? else {
            return Ok(());
        };
        self.stages.add(Stage::Wait, waiting.elapsed());
        self.committed(&update, timings);
        Ok(())
    }

    fn committed(&mut self, update: &ChunkUpdate, timings: ApplyTimings) {
        self.stages.add(Stage::Sled, timings.sled);
        self.stages.add(Stage::Index, timings.index);
        if let Some(newest) = update.liveness.values().max() {
            self.ctx.liveness.observe(*newest);
        }
        for ((_, partition), next) in &update.offsets {
            self.next.insert(*partition, *next);
            let high = self.targets.get(partition).copied().unwrap_or(0).max(*next);
            self.ctx.status.record_progress(*partition, *next, high);
        }
    }

    /// Sends every unusable record of a chunk to the DLQ and waits for the broker to acknowledge
    /// them all, so that their offsets are stored only once they are safe elsewhere. A write
    /// that keeps failing is retried with backoff; meanwhile ingest is held, and `/readyz` and
    /// `trustgate_ingest_stuck{cause="dead_letter"}` say so (a held ingest looks like a quiet
    /// feed otherwise).
    fn dead_letter(&self, dead: &[(&BorrowedMessage<'_>, String)]) -> anyhow::Result<()> {
        let dlq = &self.ctx.settings.topics.dlq;
        for (msg, error) in dead {
            tracing::warn!(topic = %msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %error,
                "Dead-lettering an unusable events record.");
            let mut attempt = 0u32;
            loop {
                let record = dead_letter_record(dlq, msg, error);
                let sent = futures::executor::block_on(
                    self.ctx
                        .producer
                        .get()
                        .send(record, Duration::from_secs(30)),
                );
                match sent {
                    Ok(_) => {
                        if attempt > 0 {
                            tracing::info!(
                                attempt,
                                "Dead-letter write succeeded; ingest moves on."
                            );
                            self.ctx.status.set_stuck(None);
                            metrics::ingest_stuck("dead_letter", false);
                        }
                        break;
                    }
                    Err((e, _)) if !self.shutdown.is_cancelled() => {
                        // A producer that failed for good is replaced before the retry.
                        self.ctx.producer.recover(&e);
                        attempt += 1;
                        let wait = dead_letter_backoff(attempt);
                        tracing::warn!(error = %e, attempt, retry_in_ms = wait.as_millis() as u64,
                            "Dead-letter write failed; retrying before moving on.");
                        metrics::ingest_dead_letter_failed();
                        metrics::ingest_stuck("dead_letter", true);
                        self.ctx.status.set_stuck(Some(format!(
                            "dead_letter: writing to {dlq} failed {attempt} time(s): {e}"
                        )));
                        self.sleep_unless_shutdown(wait);
                    }
                    Err((e, _)) => {
                        anyhow::bail!("stopping with an unacknowledged dead-letter record: {e}")
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the record before `stored` (the last one applied) is another record than the
    /// one applied: a topic recreated with at least as many records as were applied passes
    /// every offset check. When the record cannot be read (retention or compaction removed
    /// it, or the broker does not answer in time) nothing is concluded.
    fn record_changed(
        &self,
        partition: i32,
        stored: i64,
        low: i64,
        expected: Option<Millis>,
    ) -> Option<Mismatch> {
        let expected = expected?;
        let before = stored - 1;
        if before < low {
            return None;
        }
        match self.read_back(partition, before, low) {
            ReadBack::At(found) => (found != expected).then_some(Mismatch::RecordChanged {
                partition,
                stored,
                expected,
                found,
            }),
            ReadBack::Elsewhere => None,
            ReadBack::Unreadable => {
                tracing::warn!(
                    partition,
                    offset = before,
                    "Could not read the last applied record back; resuming from the stored offset."
                );
                None
            }
        }
    }

    /// Whether a partition whose reported end (`high`) is short of `next` (what was applied)
    /// still holds the last applied record as it was applied. Then the topic is the one the
    /// state came from and the reported end is the broker's error: tansu 0.6's in-memory
    /// storage reports an idle partition's end a few records short for minutes (measured: 2767
    /// against 2777 delivered), and taking that for a truncated topic rebuilt the whole state
    /// every few seconds. Without the record read back as it was (`expected`: its stored
    /// timestamp), the end is believed. `None` when the broker answered nothing at all within
    /// the read-back's time (tansu 0.6 has also reported a 400,000-record partition ending at
    /// 3 right after a restart, and served nothing below it): neither proven there nor gone,
    /// so nothing is concluded and the caller asks again later, up to [`MAX_UNDECIDED`] times
    /// in a row. A topic that really is shorter answers on Kafka (the read is reset to the
    /// partition's start and another record comes); on tansu it answers nothing, and is
    /// rebuilt once the tries are spent.
    fn applied_records_still_there(
        &mut self,
        partition: i32,
        next: i64,
        high: i64,
        low: i64,
        expected: Option<Millis>,
    ) -> Option<bool> {
        let Some(expected) = expected else {
            return Some(false);
        };
        let read = self.read_back(partition, next - 1, low);
        // A read cut short by shutdown proves nothing: answering "gone" here would clear the
        // store on the way out (seen on tansu 0.6, whose short high watermarks sent a stopping
        // instance through this check). Nothing is concluded; the next start checks again.
        if self.shutdown.is_cancelled() {
            return None;
        }
        let there = match read {
            ReadBack::At(t) => t == expected,
            ReadBack::Elsewhere => false,
            ReadBack::Unreadable => {
                let tries = self.undecided.entry(partition).or_default();
                *tries += 1;
                if *tries <= MAX_UNDECIDED {
                    tracing::warn!(partition, applied_up_to = next, reported_end = high, tries = *tries,
                        "The broker reports the events partition ending before records already applied and does not answer a read of the last one; deciding later.");
                    return None;
                }
                false
            }
        };
        self.undecided.remove(&partition);
        if there && self.short_ends.insert(partition, high) != Some(high) {
            tracing::warn!(partition, applied_up_to = next, reported_end = high,
                "The broker reports the events partition ending before records already applied, which are still there; keeping the state.");
        }
        Some(there)
    }

    /// The stored timestamp of the last record applied from `partition`, when there is one.
    fn last_record(&self, partition: i32) -> Option<Millis> {
        self.ctx
            .store
            .last_records(&self.topic)
            .ok()?
            .get(&partition)
            .copied()
    }

    /// Reads the record at `offset` of `partition` with a short-lived consumer of its own, so
    /// the main one's assignment is untouched; from up to [`READ_THROUGH`] records before it
    /// (but not before `low`), so that a broker that cannot fetch from inside a batch still
    /// hands over the batch holding it.
    fn read_back(&self, partition: i32, offset: i64, low: i64) -> ReadBack {
        let Ok(probe) = client_config(&self.ctx.settings.kafka, Role::Ingest)
            .create::<BaseConsumer>()
            .map_err(|e| tracing::warn!(error = %e, "Cannot create the consumer that reads a record back."))
        else {
            return ReadBack::Unreadable;
        };
        let from = (offset - READ_THROUGH).max(low);
        let mut list = TopicPartitionList::new();
        if list
            .add_partition_offset(&self.topic, partition, Offset::Offset(from))
            .is_err()
            || probe.assign(&list).is_err()
        {
            return ReadBack::Unreadable;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut read_some = false;
        while Instant::now() < deadline && !self.shutdown.is_cancelled() {
            match probe.poll(Duration::from_millis(200)) {
                // Read through to the record wanted. A record before where reading started
                // means the position was reset (out of range): the record is not there.
                Some(Ok(msg))
                    if msg.partition() == partition && (from..offset).contains(&msg.offset()) =>
                {
                    read_some = true;
                }
                Some(Ok(msg)) if msg.partition() == partition && msg.offset() == offset => {
                    return msg
                        .timestamp()
                        .to_millis()
                        .map_or(ReadBack::Unreadable, ReadBack::At);
                }
                // The record there is gone (a compacted topic): another one came first.
                Some(Ok(msg)) if msg.partition() == partition => return ReadBack::Elsewhere,
                Some(Ok(_)) | None => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "Reading a record back.")
                }
            }
        }
        // The partition was served up to its end without the record: it is not there (tansu
        // answers a read past a partition's end with nothing, not with an error).
        if read_some && !self.shutdown.is_cancelled() {
            return ReadBack::Elsewhere;
        }
        ReadBack::Unreadable
    }

    /// Sleeps `wait`, cut short by shutdown (a backoff may be longer than the shutdown budget).
    fn sleep_unless_shutdown(&self, wait: Duration) {
        let until = Instant::now() + wait;
        while !self.shutdown.is_cancelled() && Instant::now() < until {
            std::thread::sleep(
                Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())),
            );
        }
    }

    /// Re-reads each partition's high watermark: keeps lag current after catch-up, proves
    /// the broker still answers, and finds a partition that now ends before what was applied
    /// (the topic was recreated or truncated under this instance).
    fn refresh_watermarks(&mut self, consumer: &BaseConsumer) -> Option<Mismatch> {
        for p in self.assigned.clone() {
            match consumer.fetch_watermarks(&self.topic, p, Duration::from_secs(2)) {
                Ok((low, high)) => {
                    self.ctx.status.broker_answered();
                    let next = self.next.get(&p).copied().unwrap_or(0);
                    if next > high
                        && self.applied_records_still_there(p, next, high, low, self.last_record(p))
                            == Some(false)
                    {
                        return Some(Mismatch::BeyondEnd {
                            partition: p,
                            stored: next,
                            high,
                        });
                    }
                    self.ctx.status.record_progress(p, next, high.max(next));
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "Cannot read the events topic's watermark.")
                }
            }
        }
        None
    }

    /// Drops the records a resumed partition reads again before its stored offset (see
    /// [`READ_THROUGH`]); the first record at or past it ends the resumption. One past it means
    /// the broker skipped offsets: logged (on Kafka, transaction markers and compaction do).
    /// A record before where reading started is left for [`Ingest::went_back`]: the position
    /// was reset to the beginning of a recreated topic.
    fn drop_read_through(&mut self, chunk: &mut Vec<BorrowedMessage<'_>>) {
        if self.resuming.is_empty() {
            return;
        }
        chunk.retain(|msg| {
            let partition = msg.partition();
            let Some(&(from, at)) = self.resuming.get(&partition) else {
                return true;
            };
            let offset = msg.offset();
            if (from..at).contains(&offset) {
                return false;
            }
            if offset >= at {
                self.resuming.remove(&partition);
                if offset > at {
                    tracing::warn!(partition, resumed_at = at, first = offset,
                        "The first record after resuming is past the stored offset; the offsets between hold no record.");
                }
            }
            true
        });
    }

    /// A record before the partition's next offset: the consumer's position was reset (an
    /// out-of-range offset after the topic was recreated), so the stored state is not this
    /// topic's.
    fn went_back(&self, chunk: &[BorrowedMessage<'_>]) -> Option<Mismatch> {
        chunk.iter().find_map(|msg| {
            let expected = self.read_next.get(&msg.partition()).copied()?;
            (msg.offset() < expected).then(|| Mismatch::OffsetWentBack {
                partition: msg.partition(),
                offset: msg.offset(),
                expected,
            })
        })
    }

    /// Clears the state folded from the topic as it was and reads the topic as it is now from
    /// its beginning. Not ready from the first step: deciders deny `not_ready` rather than
    /// answer from state that is about to go, until the rebuild caught up and fed the store.
    fn rebuild(&mut self, consumer: &BaseConsumer, mismatch: Mismatch) -> anyhow::Result<()> {
        tracing::warn!(topic = %self.topic, cause = mismatch.cause(), detail = %mismatch,
            "Stored offsets do not belong to the events topic as it is now; rebuilding the state from its beginning.");
        metrics::ingest_rebuild(mismatch.cause());
        self.ctx.status.restart_catch_up();
        consumer
            .unassign()
            .context("unassigning events partitions before a rebuild")?;
        let removed = self
            .ctx
            .store
            .clear_state()
            .context("clearing the store before a rebuild")?;
        self.ctx.liveness.reset();
        self.ctx.status.clear_progress();
        self.assigned.clear();
        self.targets.clear();
        self.next.clear();
        self.read_next.clear();
        self.resuming.clear();
        self.undecided.clear();
        tracing::info!(keys = removed, "Store cleared for the rebuild.");
        // The store now holds no offsets, so this assigns every partition from its beginning
        // and cannot find another mismatch.
        self.assign_new_partitions(consumer)
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
            self.ctx.status.set_caught_up();
            // A catch-up's transient memory (sled's page versions, decoded chunks) is free now;
            // give it back so that a caught-up instance holds what it uses (#11).
            let released = crate::allocator::release_free_memory();
            let stages = &self.stages;
            tracing::info!(
                released_mib = released >> 20,
                records = stages.records,
                poll_ms = stages.millis(Stage::Poll),
                fold_ms = stages.millis(Stage::Fold),
                wait_ms = stages.millis(Stage::Wait),
                read_ms = stages.millis(Stage::Read),
                sled_ms = stages.millis(Stage::Sled),
                index_ms = stages.millis(Stage::Index),
                "Ingest caught up with the events topic."
            );
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
    // Room for a whole chunk up front: growing it by doubling was ~9% of a catch-up's CPU
    // (issue #11, perf on a 120k-record catch-up).
    let mut chunk = Vec::with_capacity(MAX_CHUNK);
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

/// What [`fold_fact`] did with a fact.
#[derive(Debug, PartialEq, Eq)]
enum Folded {
    Applied,
    /// Not applied: the device's stored value is corrupt (logged).
    Skipped,
    /// Not applied yet: its device's state is in sled, which is not read while a chunk is in
    /// flight.
    NeedsStoredState,
}

/// Folds one fact into the chunk's update onto the device's newest state: the one this chunk
/// already made, else the chunk in flight's (applied before this one), else sled's. A device
/// the store holds no value for (the decision index knows every stored GUID, corrupt ones
/// included) starts afresh without a sled read, which is most of a catch-up. While a chunk is in
/// flight sled is not read: the fact is handed back ([`Folded::NeedsStoredState`]) to fold
/// once the chunk is applied. A device whose stored value is corrupt is left as it is (logged
/// with its key): its decisions keep answering deny `store_unavailable`, where starting it
/// afresh would forget its detections, and ingest goes on for every other device.
fn fold_fact(
    store: &Store,
    in_flight: Option<&ChunkUpdate>,
    update: &mut ChunkUpdate,
    fact: &Fact,
) -> Result<Folded, crate::store::StoreError> {
    let pending = in_flight.and_then(|chunk| chunk.devices.get(&fact.connector_guid));
    let entry = match (update.devices.entry(fact.connector_guid.clone()), pending) {
        (std::collections::btree_map::Entry::Occupied(e), _) => e.into_mut(),
        // Stored before this chunk is, so this chunk's "before" is that state.
        (std::collections::btree_map::Entry::Vacant(e), Some((_, after))) => {
            e.insert((Some(after.clone()), after.clone()))
        }
        (std::collections::btree_map::Entry::Vacant(e), None) if !store.knows_device(e.key()) => {
            let after = DeviceState::new(e.key());
            e.insert((None, after))
        }
        (std::collections::btree_map::Entry::Vacant(_), None) if in_flight.is_some() => {
            return Ok(Folded::NeedsStoredState)
        }
        (std::collections::btree_map::Entry::Vacant(e), None) => match store.device(e.key()) {
            Ok(before) => {
                let after = before.clone().unwrap_or_else(|| DeviceState::new(e.key()));
                e.insert((before, after))
            }
            Err(crate::store::StoreError::Corrupt { key, reason }) => {
                tracing::error!(key = %key, reason = %reason,
                    "Stored device value is corrupt; leaving it (its decisions deny store_unavailable) and skipping the record.");
                return Ok(Folded::Skipped);
            }
            Err(other) => return Err(other),
        },
    };
    entry.1.apply(fact);
    Ok(Folded::Applied)
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

    #[test]
    fn dead_letter_backoff_doubles_and_is_capped() {
        let waits: Vec<u64> = (1..=12)
            .map(|a| dead_letter_backoff(a).as_millis() as u64)
            .collect();
        assert_eq!(&waits[..4], &[200, 400, 800, 1600]);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().unwrap(), 30_000);
    }

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
        store.flush_blocking().unwrap();
        drop(store);
        // Damaged on disk: the store sees it when it opens.
        let store = crate::store::reopen_for_test(dir.path());
        let mut update = ChunkUpdate::default();
        fold_fact(&store, None, &mut update, &fact("g1")).unwrap();
        fold_fact(&store, None, &mut update, &fact("g2")).unwrap();
        assert_eq!(update.devices.keys().collect::<Vec<_>>(), ["g2"]);
        store.apply(&update).unwrap();
        assert!(matches!(
            store.device("g1"),
            Err(crate::store::StoreError::Corrupt { .. })
        ));
        assert!(store.device("g2").unwrap().is_some());
    }

    /// A device the store holds is folded onto its stored state; one it does not hold starts
    /// afresh (without a sled read: the decision index says it is new).
    #[test]
    fn a_known_device_is_read_and_a_new_one_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let mut first = ChunkUpdate::default();
        fold_fact(&store, None, &mut first, &fact("g1")).unwrap();
        store.apply(&first).unwrap();
        let mut update = ChunkUpdate::default();
        fold_fact(&store, None, &mut update, &fact("g1")).unwrap();
        fold_fact(&store, None, &mut update, &fact("g2")).unwrap();
        assert_eq!(update.devices["g1"].0, store.device("g1").unwrap());
        assert!(update.devices["g1"].0.is_some());
        assert_eq!(update.devices["g2"].0, None);
        assert_eq!(update.devices["g2"].1.connector_guid, "g2");
    }

    /// While a chunk is in flight, a device it names is folded onto its state there (newer
    /// than sled's: the next chunk would otherwise store a state without the records of the
    /// one before), a new device starts afresh, and a device only sled holds is handed back
    /// to fold once the chunk is applied, without reading sled meanwhile.
    #[test]
    fn with_a_chunk_in_flight_its_states_are_used_and_sled_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let mut stored = ChunkUpdate::default();
        for guid in ["g1", "g4"] {
            fold_fact(&store, None, &mut stored, &fact(guid)).unwrap();
        }
        store.apply(&stored).unwrap();

        // In flight, not applied: g1 with a hostname it did not have, and a new g3.
        let mut in_flight = ChunkUpdate::default();
        let mut renamed = fact("g1");
        renamed.identifiers.hostname = Some(crate::fold::Stamped {
            value: "renamed-host".into(),
            at: 7,
        });
        fold_fact(&store, None, &mut in_flight, &renamed).unwrap();
        fold_fact(&store, None, &mut in_flight, &fact("g3")).unwrap();
        let at = |offset| RecordRef {
            partition: 0,
            offset,
            at: 1,
        };
        in_flight.add_record_ref("g1", at(5));

        let mut next = ChunkUpdate::default();
        let folded: Vec<Folded> = ["g1", "g2", "g3", "g4"]
            .into_iter()
            .map(|guid| fold_fact(&store, Some(&in_flight), &mut next, &fact(guid)).unwrap())
            .collect();
        assert_eq!(
            folded,
            [
                Folded::Applied,
                Folded::Applied,
                Folded::Applied,
                Folded::NeedsStoredState
            ]
        );
        next.add_record_ref("g1", at(6));
        let g1 = &next.devices["g1"];
        assert_eq!(g1.0.as_ref(), Some(&in_flight.devices["g1"].1));
        assert_eq!(
            g1.1.recent_refs,
            [at(5), at(6)],
            "the in-flight chunk's record references are carried on"
        );
        assert_eq!(
            g1.1.hostname.as_ref().map(|h| h.value.as_str()),
            Some("renamed-host"),
            "the in-flight chunk's hostname is kept"
        );
        assert_eq!(next.devices["g2"].0, None, "new everywhere");
        assert_eq!(
            next.devices["g3"].0.as_ref(),
            Some(&in_flight.devices["g3"].1),
            "new in sled but in flight: stored before this chunk, so not new"
        );
        assert!(!next.devices.contains_key("g4"), "deferred, not folded");

        // Once the chunk is applied, the deferred fact is folded onto sled's state.
        store.apply(&in_flight).unwrap();
        assert_eq!(
            fold_fact(&store, None, &mut next, &fact("g4")).unwrap(),
            Folded::Applied
        );
        assert_eq!(next.devices["g4"].0, store.device("g4").unwrap());
        assert!(next.devices["g4"].0.is_some());
        store.apply(&next).unwrap();
        assert_eq!(store.record_refs("g1").unwrap(), [at(5), at(6)]);
    }
}
