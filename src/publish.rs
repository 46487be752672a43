//! Writing SE records to the events topic: the one producer path for every source (poller,
//! webhook, simulator-driven demo).
//!
//! A record's value is SE's JSON bytes exactly as received, its key the connector GUID, and its
//! headers the [`crate::topic`] contract. [`EventsPublisher`]'s `publish_all` returns only once
//! the broker acknowledged every record (`acks=all`, idempotent producer), which is what lets a
//! source advance its cursor or answer 202: nothing is acknowledged upstream before it is durable.

use crate::kafka::SharedProducer;
use crate::time::now_millis;
use crate::topic::{record_headers, Kind};
use futures::future::try_join_all;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use std::time::Duration;

/// One record to write.
#[derive(Debug, Clone)]
pub(crate) struct OutRecord<'a> {
    pub(crate) kind: Kind,
    /// The connector GUID (or `poller`, … for heartbeats).
    pub(crate) key: &'a str,
    /// SE's JSON bytes, unchanged.
    pub(crate) value: &'a [u8],
    /// For computers: when the inventory was read.
    pub(crate) observed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Why a batch was not (fully) written. Some records may already be durable; writing the batch
/// again is harmless because the fold absorbs duplicates.
#[derive(Debug, thiserror::Error)]
#[error("publishing to {topic} failed: {source}")]
pub(crate) struct PublishError {
    topic: String,
    #[source]
    source: KafkaError,
}

/// A cheap-to-clone handle that writes to the events topic as one named source.
#[derive(Clone)]
pub struct EventsPublisher {
    producer: SharedProducer,
    topic: String,
    source: String,
}

impl EventsPublisher {
    /// Writes to `topic` as `source` (its `trustgate-source` header) through `producer`, a
    /// shared handle: every source of one process uses the same producer.
    pub fn new(
        producer: SharedProducer,
        topic: impl Into<String>,
        source: impl Into<String>,
    ) -> Self {
        EventsPublisher {
            producer,
            topic: topic.into(),
            source: source.into(),
        }
    }

    /// The `trustgate-source` this publisher writes as (`poll`, `webhook`, …).
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Writes every record and waits until the broker acknowledged all of them. `queue_timeout`
    /// bounds the wait for room in the local queue; delivery itself is bounded by the
    /// producer's `message.timeout.ms` (30 s, see [`crate::kafka::client_config`]).
    pub(crate) async fn publish_all(
        &self,
        records: &[OutRecord<'_>],
        queue_timeout: Duration,
    ) -> Result<(), PublishError> {
        let producer = self.producer.get();
        let sends = records.iter().map(|r| {
            let headers = record_headers(r.kind, &self.source, r.observed_at);
            let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&self.topic)
                .key(r.key)
                .payload(r.value)
                .headers(headers)
                .timestamp(now_millis());
            producer.send(record, queue_timeout)
        });
        try_join_all(sends)
            .await
            .map(|_| ())
            .map_err(|(source, _)| {
                // A producer that failed for good is replaced, so that the sender's retry (the
                // webhook's client after its 503, the poller keeping its cursor) can succeed.
                self.producer.recover(&source);
                PublishError {
                    topic: self.topic.clone(),
                    source,
                }
            })
    }
}
