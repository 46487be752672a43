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
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Records between two wanted offsets past which the reader jumps instead of reading through:
/// reading a few hundred small records costs less than a new fetch.
const MAX_GAP: i64 = 256;
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
    let consumer: BaseConsumer = config.create().map_err(HistoryError::Kafka)?;
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
        read_partition(&consumer, topic, partition, &wanted, deadline, &mut out)?;
    }
    Ok(out)
}

fn assign(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<(), HistoryError> {
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(HistoryError::Kafka)?;
    // A new assignment drops what was fetched for the old one (librdkafka's version barrier).
    consumer.assign(&list).map_err(HistoryError::Kafka)
}

/// Reads the `wanted` (offset, time) pairs of one partition, in offset order.
fn read_partition(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    wanted: &[(i64, i64)],
    deadline: Instant,
    out: &mut Fetched,
) -> Result<(), HistoryError> {
    let mut next = 0;
    assign(consumer, topic, partition, wanted[0].0)?;
    while next < wanted.len() {
        if Instant::now() > deadline {
            return Err(HistoryError::Timeout {
                topic: topic.to_owned(),
                found: out.records.len(),
                wanted: out.records.len() + out.missing + (wanted.len() - next),
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(msg)) if msg.partition() == partition => {
                let offset = msg.offset();
                // Wanted offsets the reader went past are gone (compaction, retention).
                while next < wanted.len() && wanted[next].0 < offset {
                    out.missing += 1;
                    next += 1;
                }
                if next < wanted.len() && wanted[next].0 == offset {
                    out.records.push(fetched(&msg, wanted[next].1));
                    next += 1;
                }
                if next < wanted.len() && wanted[next].0 - offset > MAX_GAP {
                    assign(consumer, topic, partition, wanted[next].0)?;
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
            Some(Err(e)) => return Err(HistoryError::Kafka(e)),
        }
    }
    Ok(())
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
