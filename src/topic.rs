//! Record contracts: the events topic's, shared by every producer (poller, webhook) and by
//! ingest, and the dead-letter topic's, shared by ingest and the decision worker.
//!
//! An events record's value is SE's JSON object byte-for-byte; its key is the connector GUID;
//! the `trustgate-kind`/`-source`/`-observed-at` headers say what it is and where it came from.
//! Ingest also accepts records without them. A dead-letter record (`dead_letter_record`) is
//! the original key, value and headers, plus the `trustgate-dlq-*` headers saying where it came
//! from and why.

use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;

/// Most records one record batch of the events topic holds: librdkafka packs at most
/// `batch.num.messages` (10,000 by default) records in a batch. A reader that must reach a
/// record inside a batch on a broker that only answers fetches from batch starts (tansu 0.6's
/// memory storage answers a fetch inside a batch from the next batch, or with nothing) starts
/// this many records earlier and drops what comes before the record it wants; on Kafka, which
/// answers from the batch holding the offset, that rereads at most this many records.
pub(crate) const MAX_BATCH_RECORDS: i64 = 10_000;

/// `event`, `computer` or `heartbeat`.
pub const HEADER_KIND: &str = "trustgate-kind";
/// Which source wrote the record: `poll`, `webhook`, …
pub const HEADER_SOURCE: &str = "trustgate-source";
/// For computers: RFC 3339 time at which the inventory was read.
pub const HEADER_OBSERVED_AT: &str = "trustgate-observed-at";

// Dead-letter headers, each a UTF-8 string.
/// The topic the original record was read from.
pub const HEADER_DLQ_TOPIC: &str = "trustgate-dlq-topic";
/// The original record's partition, in decimal.
pub const HEADER_DLQ_PARTITION: &str = "trustgate-dlq-partition";
/// The original record's offset, in decimal.
pub const HEADER_DLQ_OFFSET: &str = "trustgate-dlq-offset";
/// Why the record could not be used.
pub const HEADER_DLQ_ERROR: &str = "trustgate-dlq-error";
/// For a message from the SE Event Stream (AMQP): the queue it was read from (it has no topic,
/// partition or offset).
pub const HEADER_DLQ_QUEUE: &str = "trustgate-dlq-queue";

/// What an events-topic record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An SE event (a `/v1/events` item).
    Event,
    /// An SE computer (a `/v1/computers` item).
    Computer,
    /// Liveness written by a source; carries no device.
    Heartbeat,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Computer => "computer",
            Kind::Heartbeat => "heartbeat",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        match s {
            "event" => Some(Kind::Event),
            "computer" => Some(Kind::Computer),
            "heartbeat" => Some(Kind::Heartbeat),
            _ => None,
        }
    }
}

/// Headers for a record a source publishes, in the contract's names.
pub fn record_headers(
    kind: Kind,
    source: &str,
    observed_at: Option<chrono::DateTime<chrono::Utc>>,
) -> OwnedHeaders {
    let observed = observed_at.map(crate::time::rfc3339);
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: HEADER_KIND,
            value: Some(kind.as_str()),
        })
        .insert(Header {
            key: HEADER_SOURCE,
            value: Some(source),
        });
    if let Some(observed) = &observed {
        headers = headers.insert(Header {
            key: HEADER_OBSERVED_AT,
            value: Some(observed.as_str()),
        });
    }
    headers
}

/// Builds the dead-letter record for `msg`, which could not be used because of `error`. The
/// caller sends it to the dead-letter topic `dlq_topic`.
pub(crate) fn dead_letter_record<'a>(
    dlq_topic: &'a str,
    msg: &'a BorrowedMessage<'a>,
    error: &str,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = msg.headers() {
        for h in original.iter() {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    headers = headers
        .insert(Header {
            key: HEADER_DLQ_TOPIC,
            value: Some(msg.topic()),
        })
        .insert(Header {
            key: HEADER_DLQ_PARTITION,
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: HEADER_DLQ_OFFSET,
            value: Some(offset.as_str()),
        })
        .insert(Header {
            key: HEADER_DLQ_ERROR,
            value: Some(error),
        });
    let mut record = FutureRecord::to(dlq_topic).headers(headers);
    if let Some(key) = msg.key() {
        record = record.key(key);
    }
    if let Some(value) = msg.payload() {
        record = record.payload(value);
    }
    record
}
