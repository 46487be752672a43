//! Reading a device's records back from the events topic by (partition, offset), as its record
//! references in the store name them: never a scan of the topic. One consumer, by assignment
//! (no consumer group); per partition the wanted offsets in order, jumping (a new assignment at
//! the next wanted offset) over gaps wider than [`MAX_GAP`] and reading through narrower ones.

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
use std::time::{Duration, Instant};

/// Records between two wanted offsets past which the reader jumps instead of reading through:
/// reading a few hundred small records costs less than a new fetch.
const MAX_GAP: i64 = 256;
/// How long a new assignment may go without any record before the reader starts further back.
/// Kafka answers a fetch at once; tansu 0.6 answers one in the middle of a record batch with
/// nothing, so on tansu a record inside a batch is reached by reading from an earlier offset.
const NO_ANSWER: Duration = Duration::from_millis(500);
/// How long one read back may take in all.
const READ_BUDGET: Duration = Duration::from_secs(30);

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
    let deadline = Instant::now() + READ_BUDGET;
    for (partition, mut wanted) in by_partition {
        wanted.sort_unstable();
        wanted.dedup_by_key(|(offset, _)| *offset);
        read_partition(&config, topic, partition, &wanted, deadline, &mut out)?;
    }
    Ok(out)
}

/// A consumer of its own, assigned once at `offset` of `partition`. Every move of the reader
/// takes a new consumer rather than assigning the same one again: re-assigning one consumer
/// in quick succession (the back-offs below) tripped a librdkafka assertion
/// (`rd_kafka_assignment_partition_stopped: rktp_started`) that aborts the whole process, and
/// this runs inside the instance for `GET /v1/devices/{id}/history` and decisions at a past
/// time.
fn assigned_at(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<BaseConsumer, HistoryError> {
    let consumer: BaseConsumer = config.create().map_err(HistoryError::Kafka)?;
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(HistoryError::Kafka)?;
    consumer.assign(&list).map_err(HistoryError::Kafka)?;
    Ok(consumer)
}

/// Reads the `wanted` (offset, time) pairs of one partition, in offset order.
fn read_partition(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    wanted: &[(i64, i64)],
    deadline: Instant,
    out: &mut Fetched,
) -> Result<(), HistoryError> {
    let mut next = 0;
    let (low, _) = config
        .create::<BaseConsumer>()
        .map_err(HistoryError::Kafka)?
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map_err(HistoryError::Kafka)?;
    let mut read = Position::new(wanted[0].0, low);
    let mut consumer = assigned_at(config, topic, partition, read.from)?;
    let mut assigned = Instant::now();
    // Where to move the reader once the record in hand is done with (it borrows the consumer).
    let mut move_to: Option<i64> = None;
    while next < wanted.len() {
        if Instant::now() > deadline {
            return Err(HistoryError::Timeout {
                topic: topic.to_owned(),
                found: out.records.len(),
                wanted: out.records.len() + out.missing + (wanted.len() - next),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            // Nothing at all from where the reader was put: tansu 0.6 answers a fetch in the
            // middle of a record batch with nothing. Start further back (see below).
            None if !read.anchored && read.from > low && assigned.elapsed() > NO_ANSWER => {
                tracing::debug!(
                    partition,
                    from = read.from,
                    "No answer; starting further back."
                );
                read.back_off(wanted[next].0);
                move_to = Some(read.from);
            }
            None => {}
            Some(Ok(msg)) if msg.partition() == partition => {
                let offset = msg.offset();
                tracing::debug!(
                    partition,
                    offset,
                    from = read.from,
                    wanted = wanted[next].0,
                    anchored = read.anchored,
                    "Read back a record."
                );
                if !read.anchored {
                    if offset > wanted[next].0 && read.from > low {
                        // The broker answered from past the record wanted: tansu 0.6 answers a
                        // fetch in the middle of a record batch from the next batch (Kafka
                        // answers from the batch that holds it). Start further back, until the
                        // answer starts at or before the record wanted, or from the beginning.
                        read.back_off(wanted[next].0);
                        move_to = Some(read.from);
                    } else {
                        read.anchored = true;
                    }
                }
                // Unless moving back (the record in hand is past the one wanted):
                if move_to.is_none() {
                    // Wanted offsets the reader went past are gone (compaction, retention).
                    while next < wanted.len() && wanted[next].0 < offset {
                        out.missing += 1;
                        next += 1;
                    }
                    if next < wanted.len() && wanted[next].0 == offset {
                        out.records.push(fetched(&msg, wanted[next].1));
                        next += 1;
                    }
                    // Not for a record a back-off started before: the jump would land where the
                    // broker answered from too far on.
                    if next < wanted.len()
                        && wanted[next].0 - offset > MAX_GAP
                        && read.backed_off_for != Some(wanted[next].0)
                    {
                        read = Position::new(wanted[next].0, low);
                        move_to = Some(read.from);
                    }
                }
            }
            Some(Ok(_)) => {}
            Some(Err(KafkaError::PartitionEOF(p))) if p == partition => {
                // The end as the broker says it now: every wanted offset at or past it is gone.
                let (_, high) = consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(10))
                    .map_err(HistoryError::Kafka)?;
                if wanted[next].0 >= high {
                    out.missing += wanted.len() - next;
                    next = wanted.len();
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => {
                tracing::debug!(partition, error = %e, "Reading back.");
                return Err(HistoryError::Kafka(e));
            }
        }
        if let Some(from) = move_to.take() {
            consumer = assigned_at(config, topic, partition, from)?;
            assigned = Instant::now();
        }
    }
    Ok(())
}

/// Where the reader was last assigned in a partition, and whether a record at or before the
/// wanted one has come since (only then is a wanted offset the reader went past known to be
/// gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    from: i64,
    low: i64,
    anchored: bool,
    /// How far before the wanted offset the next attempt starts.
    back: i64,
    /// The wanted offset the reader last started further back for.
    backed_off_for: Option<i64>,
}

impl Position {
    fn new(from: i64, low: i64) -> Position {
        Position {
            from: from.max(low),
            low,
            anchored: false,
            back: MAX_GAP,
            backed_off_for: None,
        }
    }

    /// The next attempt at `wanted`: twice as far back as the last, never before the start.
    fn back_off(&mut self, wanted: i64) {
        self.from = (wanted - self.back).max(self.low);
        self.back = self.back.saturating_mul(2);
        self.anchored = false;
        self.backed_off_for = Some(wanted);
    }
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

    #[test]
    fn backing_off_doubles_and_stops_at_the_start() {
        let mut p = Position::new(10_000, 100);
        assert_eq!(p.from, 10_000);
        let starts: Vec<i64> = (0..7)
            .map(|_| {
                p.back_off(10_000);
                p.from
            })
            .collect();
        assert_eq!(starts, [9_744, 9_488, 8_976, 7_952, 5_904, 1_808, 100]);
        assert_eq!(Position::new(50, 100).from, 100);
    }
}
