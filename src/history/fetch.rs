//! Reading devices' records back from the events topic by (partition, offset), as their record
//! references in the store name them: never a scan of the topic.
//!
//! Each partition with wanted records is read by a thread of its own with its own consumer (by
//! assignment, no consumer group), all under one deadline. Within a partition the reader
//! follows a cost-based plan ([`plan`]): a run of wanted offsets is read through, records not
//! wanted passing by without a copy, as long as the records between two wanted ones cost less
//! to read than a jump (a new consumer at the next wanted offset, its first fetch and, on
//! tansu, the tries further back). Both costs are measured as the read goes ([`Costs`]), so
//! the plan follows the broker and the machine: on tansu 0.6 a jump costs hundreds of
//! milliseconds and a record read through a few microseconds, so gaps of tens of thousands of
//! records are read through.

use super::timeline::FetchedRecord;
use super::HistoryError;
use crate::config::KafkaSettings;
use crate::kafka::{client_config, Role};
use crate::store::RecordRef;
use crate::topic::{HEADER_KIND, HEADER_OBSERVED_AT, HEADER_SOURCE};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// How far before a wanted offset a jump starts, so that a broker that cannot fetch from
/// inside a record batch answers from a batch at or before the wanted record (see
/// [`crate::topic::MAX_BATCH_RECORDS`]; ingest's `READ_THROUGH` is the same bound). On Kafka
/// this rereads at most this many records per jump (milliseconds).
const JUMP_BACK: i64 = crate::topic::MAX_BATCH_RECORDS;
/// How long a new consumer may go without any record before the reader starts further back
/// (tansu 0.6's answer to a fetch inside the last batch is nothing).
const NO_ANSWER: Duration = Duration::from_millis(500);
/// How long one read back may take in all.
const READ_BUDGET: Duration = Duration::from_secs(30);
/// What a jump is taken to cost before one is measured: a new consumer's connection,
/// metadata and first fetch (tens of milliseconds on loopback), more on tansu when it must
/// start further back.
const PRIOR_JUMP: Duration = Duration::from_millis(100);
/// What a record read through is taken to cost before one is measured: a plain consume of
/// small records runs at ~300,000 records/s on tansu 0.6 on this project's benchmark machine.
const PRIOR_PER_RECORD: Duration = Duration::from_micros(4);
/// How many records the prior per-record cost counts for against the measured ones.
const PRIOR_RECORDS: f64 = 10_000.0;

/// What was read back.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    /// The records found, each with the time its reference holds.
    pub(crate) records: Vec<FetchedRecord>,
    /// References whose record is no longer on the topic (retention, compaction, a topic
    /// recreated shorter).
    pub(crate) missing: usize,
}

/// Reads the records `refs` name from `topic`. Blocking: run it off the async threads.
pub(crate) fn fetch(
    kafka: &KafkaSettings,
    topic: &str,
    refs: &[RecordRef],
) -> Result<Fetched, HistoryError> {
    let mut out = Fetched::default();
    if refs.is_empty() {
        return Ok(out);
    }
    let mut config = client_config(kafka, Role::Ingest);
    // The end of a partition is how a reference past it (a topic recreated shorter) is found.
    config.set("enable.partition.eof", "true");
    let mut by_partition: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for r in refs {
        by_partition
            .entry(r.partition)
            .or_default()
            .push((r.offset, r.at));
    }
    for wanted in by_partition.values_mut() {
        wanted.sort_unstable();
        wanted.dedup_by_key(|(offset, _)| *offset);
    }
    let deadline = Instant::now() + READ_BUDGET;
    let config = &config;
    let results: Vec<Result<Fetched, Cut>> = std::thread::scope(|scope| {
        let readers: Vec<_> = by_partition
            .iter()
            .map(|(&partition, wanted)| {
                scope.spawn(move || read_partition(config, topic, partition, wanted, deadline))
            })
            .collect();
        readers
            .into_iter()
            .map(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let wanted: usize = by_partition.values().map(Vec::len).sum();
    let mut found = 0;
    let mut timed_out = false;
    for result in results {
        match result {
            Ok(part) => {
                found += part.records.len();
                out.missing += part.missing;
                out.records.extend(part.records);
            }
            Err(Cut::Timeout { found: part }) => {
                found += part;
                timed_out = true;
            }
            Err(Cut::Kafka(e)) => return Err(HistoryError::Kafka(e)),
        }
    }
    if timed_out {
        return Err(HistoryError::Timeout {
            topic: topic.to_owned(),
            found,
            wanted,
        });
    }
    Ok(out)
}

/// Why a partition's read stopped short.
#[derive(Debug)]
enum Cut {
    /// The deadline passed after `found` records.
    Timeout { found: usize },
    /// The broker failed.
    Kafka(KafkaError),
}

/// The measured costs the plan weighs: a jump, and a record read through.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Costs {
    /// Seconds from a jump's first new consumer to its first record (tries further back
    /// included), averaged over the jumps so far and the prior.
    jump: f64,
    jumps: f64,
    /// Seconds and records read through after the first record of a jump, prior included.
    read_seconds: f64,
    read_records: f64,
    /// How far before a wanted offset a jump starts: [`JUMP_BACK`], or more once a jump had
    /// to start further back (bigger batches).
    back: i64,
}

impl Costs {
    fn prior() -> Costs {
        Costs {
            jump: PRIOR_JUMP.as_secs_f64(),
            jumps: 1.0,
            read_seconds: PRIOR_PER_RECORD.as_secs_f64() * PRIOR_RECORDS,
            read_records: PRIOR_RECORDS,
            back: JUMP_BACK,
        }
    }

    fn per_record(&self) -> f64 {
        self.read_seconds / self.read_records
    }

    /// Whether jumping over `gap` records (the ones between the last record read and the next
    /// wanted one) costs less than reading them. A jump rereads `back` records before the
    /// wanted one, so only the rest of the gap is saved.
    fn jump_pays(&self, gap: i64) -> bool {
        let saved = gap - self.back;
        saved > 0 && saved as f64 * self.per_record() > self.jump
    }

    /// A jump took `took` to its first record, starting `back` records before the wanted one.
    fn jumped(&mut self, took: Duration, back: i64) {
        self.jump = (self.jump * self.jumps + took.as_secs_f64()) / (self.jumps + 1.0);
        self.jumps += 1.0;
        self.back = self.back.max(back);
    }

    /// `records` were read through in `took`.
    fn read(&mut self, records: u64, took: Duration) {
        self.read_seconds += took.as_secs_f64();
        self.read_records += records as f64;
    }
}

/// The stretches a partition is read in, each started by a jump at its first wanted offset
/// and read through to its last: sorted wanted offsets stay in one stretch while the records
/// between two of them cost less to read than a jump. Lazy: the reader takes the first
/// stretch ahead at the end of each, with the costs measured so far.
fn plan(
    wanted: impl IntoIterator<Item = i64>,
    costs: Costs,
) -> impl Iterator<Item = RangeInclusive<i64>> {
    let mut offsets = wanted.into_iter().peekable();
    std::iter::from_fn(move || {
        let first = offsets.next()?;
        let mut last = first;
        while let Some(&offset) = offsets.peek() {
            if costs.jump_pays(offset - last - 1) {
                break;
            }
            last = offset;
            offsets.next();
        }
        Some(first..=last)
    })
}

/// A consumer of its own, assigned once at `offset` of `partition`. Every jump takes a new
/// consumer rather than assigning the same one again: re-assigning one consumer in quick
/// succession (the tries further back) tripped a librdkafka assertion
/// (`rd_kafka_assignment_partition_stopped: rktp_started`) that aborts the whole process, and
/// this runs inside the instance for `GET /v1/devices/{id}/history` and decisions at a past
/// time.
fn assigned_at(
    consumer: Option<BaseConsumer>,
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<BaseConsumer, KafkaError> {
    let consumer: BaseConsumer = match consumer {
        Some(c) => c,
        None => config.create()?,
    };
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&list)?;
    Ok(consumer)
}

/// Where the reader was put by the last jump, and whether a record at or before the wanted
/// one has come since (only then is a wanted offset the reader went past known to be gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Jump {
    /// The wanted offset jumped to.
    to: i64,
    /// Where the consumer was assigned.
    from: i64,
    /// How far before `to` that is (before clamping at the start of the partition).
    back: i64,
    low: i64,
}

impl Jump {
    fn new(to: i64, back: i64, low: i64) -> Jump {
        Jump {
            to,
            from: (to - back).max(low),
            back,
            low,
        }
    }

    /// The next try: twice as far back as the last, never before the start.
    fn further_back(self) -> Jump {
        Jump::new(self.to, self.back.saturating_mul(2), self.low)
    }
}

/// Reads the `wanted` (offset, time) pairs of one partition, sorted and distinct by offset.
fn read_partition(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    wanted: &[(i64, i64)],
    deadline: Instant,
) -> Result<Fetched, Cut> {
    let mut out = Fetched::default();
    let started = Instant::now();
    let first: BaseConsumer = config.create().map_err(Cut::Kafka)?;
    // Only the start: the end is asked for once the reader reaches it (tansu 0.6 has been seen
    // to give a fresh consumer a high watermark short of records it then serves).
    let (low, _) = first
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map_err(Cut::Kafka)?;
    let mut costs = Costs::prior();
    let mut next = 0;
    let mut jump = Jump::new(wanted[0].0, costs.back, low);
    let mut consumer =
        assigned_at(Some(first), config, topic, partition, jump.from).map_err(Cut::Kafka)?;
    // When this jump's first consumer was made, and when its latest one was.
    let mut jump_started = started;
    let mut assigned = Instant::now();
    // Once the jump's first record came: since when the records read through are counted,
    // and how many there were.
    let mut counting: Option<Instant> = None;
    let mut read = 0u64;
    let (mut jumps, mut tries, mut read_all) = (1u32, 1u32, 0u64);
    let mut move_to: Option<Jump> = None;
    // The last wanted offset of the stretch being read through.
    let mut stretch_end: Option<i64> = None;
    while next < wanted.len() {
        if Instant::now() > deadline {
            return Err(Cut::Timeout {
                found: out.records.len(),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            // Nothing at all from where the reader was put: tansu 0.6 answers a fetch inside
            // the last record batch with nothing. Start further back.
            None if counting.is_none() && jump.from > low && assigned.elapsed() > NO_ANSWER => {
                tracing::debug!(
                    partition,
                    from = jump.from,
                    "No answer; starting further back."
                );
                move_to = Some(jump.further_back());
            }
            None => {}
            Some(Ok(msg)) if msg.partition() == partition => {
                let offset = msg.offset();
                match counting {
                    Some(_) => read += 1,
                    // The broker answered from past the record wanted: tansu 0.6 answers a
                    // fetch inside a record batch from the next batch. Start further back,
                    // until the answer starts at or before the record, or at the start.
                    None if offset > wanted[next].0 && jump.from > low => {
                        move_to = Some(jump.further_back());
                    }
                    None => {
                        costs.jumped(jump_started.elapsed(), jump.back);
                        counting = Some(Instant::now());
                    }
                }
                if move_to.is_none() {
                    // Wanted offsets the reader went past are gone (compaction, retention).
                    while next < wanted.len() && wanted[next].0 < offset {
                        out.missing += 1;
                        next += 1;
                    }
                    if next < wanted.len() && wanted[next].0 == offset {
                        out.records.push(fetched(&msg, wanted[next].1));
                        next += 1;
                        // The read-through cost so far goes into the plan of the gap ahead.
                        if let Some(since) = counting.replace(Instant::now()) {
                            costs.read(read, since.elapsed());
                            read_all += read;
                            read = 0;
                        }
                    }
                    // At the end of a stretch (or the first record of a jump), the next one:
                    // jump to it, or read on into it.
                    if next < wanted.len() && stretch_end.is_none_or(|end| offset >= end) {
                        if costs.jump_pays(wanted[next].0 - offset - 1) {
                            move_to = Some(Jump::new(wanted[next].0, costs.back, low));
                        } else {
                            let ahead = plan(wanted[next..].iter().map(|(o, _)| *o), costs);
                            stretch_end = ahead.map(|s| *s.end()).next();
                        }
                    }
                }
            }
            Some(Ok(_)) => {}
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition => {
                // The end as the broker says it now: every wanted offset at or past it is gone.
                let (_, high) = consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(10))
                    .map_err(Cut::Kafka)?;
                if wanted[next].0 >= high {
                    out.missing += wanted.len() - next;
                    next = wanted.len();
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => {
                tracing::debug!(partition, error = %e, "Reading back.");
                return Err(Cut::Kafka(e));
            }
        }
        if let Some(to) = move_to.take() {
            // A new jump (the last one had its first record), or a try further back.
            if counting.take().is_some() {
                jump_started = Instant::now();
                jumps += 1;
            }
            tries += 1;
            jump = to;
            stretch_end = None;
            read_all += read;
            read = 0;
            // The old consumer goes before the new one comes: one connection at a time.
            drop(consumer);
            consumer =
                assigned_at(None, config, topic, partition, jump.from).map_err(Cut::Kafka)?;
            assigned = Instant::now();
        }
    }
    tracing::debug!(
        partition,
        wanted = wanted.len(),
        found = out.records.len(),
        missing = out.missing,
        jumps,
        tries,
        records_read = read_all + read,
        jump_ms = costs.jump * 1e3,
        per_record_us = costs.per_record() * 1e6,
        took_ms = started.elapsed().as_millis() as u64,
        "Read a partition back."
    );
    Ok(out)
}

fn fetched(msg: &BorrowedMessage<'_>, at: i64) -> FetchedRecord {
    let header = |name: &str| -> Option<Vec<u8>> {
        msg.headers()?
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(<[u8]>::to_vec)
    };
    FetchedRecord {
        partition: msg.partition(),
        offset: msg.offset(),
        // The time ingest applied it with (clamped to its clock then), so that the timeline
        // and `--at` agree with what the instance knew when.
        timestamp: at,
        kind: header(HEADER_KIND),
        source: header(HEADER_SOURCE),
        observed_at: header(HEADER_OBSERVED_AT),
        value: msg.payload().map(<[u8]>::to_vec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn costs(jump_ms: u64, per_record_us: u64) -> Costs {
        let mut c = Costs::prior();
        c.jump = Duration::from_millis(jump_ms).as_secs_f64();
        c.read_seconds = Duration::from_micros(per_record_us).as_secs_f64() * c.read_records;
        c
    }

    fn stretches(wanted: &[i64], costs: Costs) -> Vec<RangeInclusive<i64>> {
        plan(wanted.iter().copied(), costs).collect()
    }

    #[test]
    fn a_gap_is_jumped_only_when_reading_it_costs_more_than_a_jump() {
        // 100 ms a jump, 4 µs a record: a jump pays past 25,000 records saved, and it rereads
        // the 10,000 before the wanted one.
        let c = costs(100, 4);
        assert!(!c.jump_pays(JUMP_BACK));
        assert!(!c.jump_pays(JUMP_BACK + 25_000));
        assert!(c.jump_pays(JUMP_BACK + 25_001));
        // Reading through a gap no wider than the jump's reread never pays to jump, however
        // costly records are.
        assert!(!costs(0, 1_000).jump_pays(JUMP_BACK));
        assert!(costs(0, 1_000).jump_pays(JUMP_BACK + 1));
    }

    #[test]
    fn the_plan_reads_through_cheap_gaps_and_jumps_costly_ones() {
        let c = costs(100, 4);
        // A device's records a few thousand apart (hundreds of records in a million): one
        // stretch, read through.
        let spread: Vec<i64> = (0..300).map(|i| 5_000 + i * 3_300).collect();
        assert_eq!(stretches(&spread, c), [5_000..=991_700]);
        // Far apart (a record now and then over weeks): a jump each.
        assert_eq!(
            stretches(&[10, 200_000, 200_005, 900_000], c),
            [10..=10, 200_000..=200_005, 900_000..=900_000]
        );
        // The threshold is the costs': the same offsets with a jump ten times dearer, or
        // records ten times cheaper, are read through.
        assert_eq!(stretches(&[10, 100_000], c), [10..=10, 100_000..=100_000]);
        assert_eq!(stretches(&[10, 100_000], costs(1_000, 4)), [10..=100_000]);
        assert_eq!(stretches(&[10, 100_000], costs(100, 0)), [10..=100_000]);
        assert!(stretches(&[], c).is_empty());
        assert_eq!(stretches(&[7], c), [7..=7]);
    }

    #[test]
    fn the_costs_follow_what_was_measured() {
        let mut c = Costs::prior();
        assert_eq!(c.per_record(), PRIOR_PER_RECORD.as_secs_f64());
        // A slow broker: 40 µs a record over a million records outweighs the prior.
        c.read(1_000_000, Duration::from_secs(40));
        assert!(
            (c.per_record() - 39.64e-6).abs() < 1e-7,
            "{}",
            c.per_record()
        );
        // Jumps average with the prior; a jump that had to start further back is remembered.
        c.jumped(Duration::from_millis(700), 4 * JUMP_BACK);
        assert!((c.jump - 0.4).abs() < 1e-9, "{}", c.jump);
        assert_eq!(c.back, 4 * JUMP_BACK);
        c.jumped(Duration::from_millis(100), JUMP_BACK);
        assert_eq!(c.back, 4 * JUMP_BACK, "the back that worked is kept");
    }

    #[test]
    fn trying_further_back_doubles_and_stops_at_the_start() {
        let mut j = Jump::new(100_000, JUMP_BACK, 100);
        assert_eq!(j.from, 90_000);
        let starts: Vec<i64> = (0..4)
            .map(|_| {
                j = j.further_back();
                j.from
            })
            .collect();
        assert_eq!(starts, [80_000, 60_000, 20_000, 100]);
        assert_eq!(j.to, 100_000);
        assert_eq!(Jump::new(50, JUMP_BACK, 100).from, 100);
    }
}
