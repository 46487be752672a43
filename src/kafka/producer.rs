//! The producer's life: started once per writing command, records handed to it without waiting
//! for their acknowledgement, flushed at shutdown.
//!
//! [`enqueue`] (and [`enqueue_blocking`] for threads that may block) is the one place that
//! waits out a full local queue; every path that hands records to librdkafka without awaiting
//! them uses it. Paths that await each acknowledgement use `FutureProducer::send` with a queue
//! timeout instead (the events publisher, ingest's dead letters).

use super::{client_config, ensure_topics, Role, SharedProducer};
use crate::config::{KafkaSettings, TopicSettings};
use anyhow::Context;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::time::Duration;

/// How long a shutdown waits for the producer's queued records to be acknowledged.
const FLUSH_BUDGET: Duration = Duration::from_secs(5);

/// How long to wait before offering a record again while the producer's local queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);

/// Start-up shared by every command that writes: missing topics are created (unless
/// `[topics] create` is off), then the one producer is built.
pub async fn start_producer(
    kafka: &KafkaSettings,
    topics: &TopicSettings,
) -> anyhow::Result<SharedProducer> {
    if topics.create {
        ensure_topics(kafka, topics)
            .await
            .context("creating topics")?;
    }
    SharedProducer::create(client_config(kafka, Role::Producer)).context("creating the producer")
}

/// Hands `record` to the producer without waiting for its acknowledgement; waits only while
/// the local queue is full. An error is permanent for this record (e.g. an invalid partition):
/// it was not queued, and the caller decides what that means.
pub async fn enqueue<K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture, KafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(QUEUE_FULL_WAIT).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// [`enqueue`] for a thread that may block (a load generator off the async runtime).
pub fn enqueue_blocking<K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture, KafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(QUEUE_FULL_WAIT);
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// The last step of every shutdown that wrote: wait (at most `FLUSH_BUDGET`, off the async
/// threads, since librdkafka's flush blocks) for queued records to be acknowledged. Records
/// still unacknowledged then were never confirmed to their senders, so nothing is lost that
/// was promised; the failure is logged.
pub async fn flush_producer(producer: &SharedProducer) {
    let producer = producer.get();
    match tokio::task::spawn_blocking(move || producer.flush(FLUSH_BUDGET)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "Producer flush on shutdown did not finish."),
        Err(e) => tracing::warn!(error = %e, "Producer flush on shutdown panicked."),
    }
}
