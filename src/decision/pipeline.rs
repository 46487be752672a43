//! The pipelined reply loop: consume a request, hand its reply to the producer without waiting,
//! and store the request's offset only once that reply was acknowledged.
//!
//! The decision worker runs it with the decider as the answer; the bench's echo floor runs it
//! with an answer that copies the request's bytes back. So the floor measures exactly the
//! worker's Kafka path, and a fix here fixes both.
//!
//! Owns: reply routing per request (`reply::route`), producing the reply or the dead letter, the
//! bound on replies in flight, the committer (`commit_in_order`) and the drain on shutdown.
//! Does not own what a request means: that is the caller's answer ([`Disposition`]).
//!
//! Guarantee: at-least-once. A second task awaits acknowledgements in the order the requests
//! were consumed and only then stores each request's offset (the consumer's auto-commit commits
//! stored offsets), so a crash may answer a request twice, never zero times.

use super::reply::{route, ReplyRoute, HEADER_CORRELATION_ID};
use crate::config::TopicSettings;
use crate::kafka;
use crate::topic::dead_letter_record;
use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Replies handed to the producer but not yet acknowledged, at most. When the committer falls
/// this far behind, consuming waits.
const IN_FLIGHT: usize = 10_000;

/// What becomes of one request: the answer a caller of [`ReplyLoop::run`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Reply with `body` on the request's route (topic, partition, correlation id copied back).
    /// `request_id` names the request in logs when its reply is not delivered.
    Reply {
        /// The reply's value, as produced.
        body: Vec<u8>,
        /// The request's id for logs, when it has one.
        request_id: Option<String>,
    },
    /// Nobody can be answered: the request goes to the dead-letter topic, saying `error`.
    DeadLetter {
        /// Why, for the `trustgate-dlq-error` header.
        error: String,
    },
}

/// One reply (or dead letter) awaiting its acknowledgement, and the request offset it settles.
struct Pending {
    /// `None` when the record could not even be queued (already logged).
    delivery: Option<DeliveryFuture>,
    partition: i32,
    offset: i64,
    request_id: Option<String>,
}

/// The Kafka side of a reply loop: a subscribed request consumer and the reply producer.
pub struct ReplyLoop {
    /// Stores offsets by hand (`enable.auto.offset.store=false`, see `kafka::Role::Decider`);
    /// shared with the committer task.
    consumer: Arc<StreamConsumer>,
    producer: FutureProducer,
    /// Reply routing refuses trustgate's own topics; dead letters go to `topics.dlq`.
    topics: TopicSettings,
    /// The topic requests are consumed from, whose offsets the committer stores.
    requests: String,
}

impl ReplyLoop {
    /// Creates the request consumer from `consumer_config` and subscribes it to `requests`.
    pub fn subscribe(
        consumer_config: &ClientConfig,
        producer: FutureProducer,
        topics: TopicSettings,
        requests: &str,
    ) -> anyhow::Result<ReplyLoop> {
        let consumer: StreamConsumer = consumer_config
            .create()
            .context("creating the request consumer")?;
        consumer
            .subscribe(&[requests])
            .with_context(|| format!("subscribing to {requests}"))?;
        Ok(ReplyLoop {
            consumer: Arc::new(consumer),
            producer,
            topics,
            requests: requests.to_owned(),
        })
    }

    /// Answers every request with `answer` until `shutdown`, then drains: every reply already
    /// produced is acknowledged (or has failed) and its offset stored and committed before
    /// this returns and the consumer leaves the group.
    pub async fn run(
        self,
        mut answer: impl FnMut(&BorrowedMessage<'_>, &ReplyRoute) -> Disposition,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (tx, rx) = mpsc::channel::<Pending>(IN_FLIGHT);
        let committer = tokio::spawn(commit_in_order(
            self.consumer.clone(),
            self.requests.clone(),
            rx,
        ));
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = self.consumer.recv() => msg,
            };
            match msg {
                Ok(msg) => {
                    let pending = self.respond(&msg, &mut answer).await;
                    if tx.send(pending).await.is_err() {
                        break;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Request consumer error."),
            }
        }
        drop(tx);
        committer.await.context("committer task")?;
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last auto-commit is a normal outcome here.
            tracing::debug!(error = %e, "Final offset commit.");
        }
        Ok(())
    }

    /// Routes one request, asks `answer` what becomes of it, and queues the reply or the dead
    /// letter without waiting for its acknowledgement.
    async fn respond(
        &self,
        msg: &BorrowedMessage<'_>,
        answer: &mut impl FnMut(&BorrowedMessage<'_>, &ReplyRoute) -> Disposition,
    ) -> Pending {
        let headers = msg.headers();
        let header_pairs = headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|h| (h.key, h.value));
        let route = route(header_pairs, &self.topics);
        let (delivery, request_id) = match answer(msg, &route) {
            Disposition::Reply { body, request_id } => (
                enqueue(&self.producer, reply_record(&route, msg.key(), &body)).await,
                request_id,
            ),
            Disposition::DeadLetter { error } => {
                let record = dead_letter_record(&self.topics.dlq, msg, &error);
                (enqueue(&self.producer, record).await, None)
            }
        };
        Pending {
            delivery,
            partition: msg.partition(),
            offset: msg.offset(),
            request_id,
        }
    }
}

/// A reply body on its route: topic, partition when pinned, correlation id copied back, and
/// the request's key.
fn reply_record<'a>(
    route: &'a ReplyRoute,
    key: Option<&'a [u8]>,
    body: &'a [u8],
) -> FutureRecord<'a, [u8], [u8]> {
    let mut headers = OwnedHeaders::new();
    if let Some(corr) = &route.correlation_id {
        headers = headers.insert(Header {
            key: HEADER_CORRELATION_ID,
            value: Some(corr.as_slice()),
        });
    }
    let mut record = FutureRecord::to(&route.topic)
        .payload(body)
        .headers(headers);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(partition) = route.partition {
        record = record.partition(partition);
    }
    record
}

/// Hands a record to the producer without waiting for its acknowledgement; a record that
/// cannot be queued is logged and yields no delivery (its offset is still stored).
async fn enqueue(
    producer: &FutureProducer,
    record: FutureRecord<'_, [u8], [u8]>,
) -> Option<DeliveryFuture> {
    let topic = record.topic;
    match kafka::enqueue(producer, record).await {
        Ok(delivery) => Some(delivery),
        Err(e) => {
            tracing::error!(error = %e, topic, "Reply could not be produced.");
            None
        }
    }
}

/// The committer: awaits each reply's acknowledgement in the order the requests were consumed,
/// then stores the request's offset.
///
/// On a failed or cancelled delivery the failure is logged and the offset is stored anyway, so
/// that request is not answered again. This is the one place that decides what a failed
/// delivery means.
async fn commit_in_order(
    consumer: Arc<StreamConsumer>,
    requests: String,
    mut rx: mpsc::Receiver<Pending>,
) {
    while let Some(p) = rx.recv().await {
        if let Some(delivery) = p.delivery {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    tracing::error!(error = %e, request_id = ?p.request_id, "Reply was not delivered.")
                }
                Err(_) => {
                    tracing::error!(request_id = ?p.request_id, "Reply delivery was cancelled.")
                }
            }
        }
        if let Err(e) = consumer.store_offset(&requests, p.partition, p.offset + 1) {
            tracing::warn!(error = %e, partition = p.partition, "Cannot store request offset.");
        }
    }
}
