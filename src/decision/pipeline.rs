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
//! stored offsets). A reply (or dead letter) that is not delivered is produced again, with
//! backoff, and the committer does not move past it: consuming stops once `IN_FLIGHT` replies
//! wait behind it. A reply whose route does not exist (an unknown reply topic or partition) goes
//! to the responses topic instead, as the caller's `unroutable` answer. A crash, or a shutdown
//! while a delivery is failing, leaves that request's offset unstored, so the next owner of its
//! partition answers it: a request may be answered twice, and is not silently dropped.

use super::reply::{route, ReplyRoute, HEADER_CORRELATION_ID};
use crate::config::TopicSettings;
use crate::kafka;
use crate::kafka::SharedProducer;
use crate::topic::dead_letter_record;
use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::Producer;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientConfig;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Replies handed to the producer but not yet acknowledged, at most. When the committer falls
/// this far behind, consuming waits.
const IN_FLIGHT: usize = 10_000;

/// The first wait before a reply that was not delivered is produced again; it doubles on each
/// failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two attempts at one reply.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How often, at most, a failed reply delivery is logged. An outage fails every reply in
/// flight at once, and each again at every retry (measured: ~30,000 failures during a 6 s
/// broker pause); a line each would bury everything else in the log. Every failure is counted
/// in `trustgate_reply_delivery_failures_total`; each logged line says how many went unlogged
/// since the one before.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(5);

/// Failed reply deliveries, for [`FAILURE_LOG_EVERY`].
static REPLY_FAILURES: Throttle = Throttle::new(FAILURE_LOG_EVERY);

/// Lets one event in per period through to the log and counts the others.
struct Throttle {
    every: Duration,
    last: std::sync::Mutex<Option<Instant>>,
    unlogged: std::sync::atomic::AtomicU64,
}

impl Throttle {
    const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: std::sync::Mutex::new(None),
            unlogged: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(unlogged since the last admitted one)` when the event at `now` is to be logged;
    /// `None` (and counted) when one was logged less than a period ago.
    fn admit(&self, now: Instant) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut last = crate::locks::lock(&self.last);
        match *last {
            Some(at) if now.saturating_duration_since(at) < self.every => {
                self.unlogged.fetch_add(1, Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.unlogged.swap(0, Relaxed))
            }
        }
    }
}

/// The longest a graceful stop waits for the revocation that precedes leaving the group.
const LEAVE_WITHIN: Duration = Duration::from_secs(5);
/// How long the consumer is still served once its partitions were revoked, for librdkafka to
/// send the LeaveGroup before the consumer is closed.
const LEAVE_AFTER_REVOKED: Duration = Duration::from_millis(500);
/// One poll of the consumer while leaving.
const LEAVE_POLL: Duration = Duration::from_millis(50);

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
        /// What to send on the responses topic instead when the request's own route (its
        /// `kafka_replyTopic` or `kafka_replyPartition`) does not exist; the worker's is an
        /// `invalid_request` answer. `None`: the reply is retried on its route like any other.
        unroutable: Option<Vec<u8>>,
    },
    /// Nobody can be answered: the request goes to the dead-letter topic, saying `error`.
    DeadLetter {
        /// Why, for the `trustgate-dlq-error` header.
        error: String,
    },
}

/// A record to produce, owned so that one that was not delivered can be produced again.
struct Outgoing {
    topic: String,
    partition: Option<i32>,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

impl Outgoing {
    fn from_record(record: &FutureRecord<'_, [u8], [u8]>) -> Outgoing {
        Outgoing {
            topic: record.topic.to_owned(),
            partition: record.partition,
            key: record.key.map(<[u8]>::to_vec),
            payload: record.payload.map(<[u8]>::to_vec).unwrap_or_default(),
            headers: record.headers.clone(),
        }
    }

    fn record(&self) -> FutureRecord<'_, [u8], [u8]> {
        let mut record = FutureRecord::to(&self.topic).payload(&self.payload[..]);
        if let Some(key) = &self.key {
            record = record.key(&key[..]);
        }
        if let Some(partition) = self.partition {
            record = record.partition(partition);
        }
        if let Some(headers) = &self.headers {
            record = record.headers(headers.clone());
        }
        record
    }
}

/// One reply (or dead letter) awaiting its acknowledgement, and the request offset it settles.
struct Pending {
    /// The first attempt: a delivery to await, or the error that kept it from being queued.
    attempt: Result<DeliveryFuture, KafkaError>,
    /// The record, to produce again if that attempt fails.
    record: Outgoing,
    /// Sent instead when the record's route does not exist (see [`Disposition::Reply`]).
    unroutable: Option<Outgoing>,
    partition: i32,
    offset: i64,
    request_id: Option<String>,
    /// One of the [`IN_FLIGHT`] places, given back once the reply is acknowledged (or dropped
    /// at a shutdown).
    in_flight: OwnedSemaphorePermit,
}

/// The Kafka side of a reply loop: a subscribed request consumer and the reply producer.
pub struct ReplyLoop {
    /// Stores offsets by hand (`enable.auto.offset.store=false`, see `kafka::Role::Decider`);
    /// shared with the committer task.
    consumer: Arc<StreamConsumer>,
    producer: SharedProducer,
    /// Reply routing refuses trustgate's own topics; dead letters go to `topics.dlq`.
    topics: TopicSettings,
    /// The topic requests are consumed from, whose offsets the committer stores.
    requests: String,
}

impl ReplyLoop {
    /// Creates the request consumer from `consumer_config` and subscribes it to `requests`.
    pub fn subscribe(
        consumer_config: &ClientConfig,
        producer: SharedProducer,
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
        // The bound on replies in flight: the channel alone would not hold it, since the
        // committer takes replies that failed out of it to retry them (`commit_in_order`).
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut routes = RouteCache::default();
        let committer = tokio::spawn(commit_in_order(
            self.consumer.clone(),
            self.producer.clone(),
            self.requests.clone(),
            rx,
            shutdown.clone(),
        ));
        loop {
            let place = tokio::select! {
                _ = shutdown.cancelled() => break,
                place = in_flight.clone().acquire_owned() => place.expect("never closed"),
            };
            let msg = tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = self.consumer.recv() => msg,
            };
            match msg {
                Ok(msg) => {
                    let pending = self.respond(&msg, &mut answer, &mut routes, place).await;
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
        self.leave_group().await;
        Ok(())
    }

    /// Leaves the consumer group explicitly, so that the partitions go to the other members now.
    ///
    /// librdkafka sends no LeaveGroup when a static member (`group.instance.id`) closes (KIP-345:
    /// its partitions wait for it to come back within the session timeout), and tansu 0.6 never
    /// hands a silent member's partitions to another member. A stopped instance may not come
    /// back, so a graceful stop leaves as a dynamic member would; only a crash keeps the place.
    /// An unsubscribe sends the LeaveGroup once the revocation it starts was served, which needs
    /// this consumer to be polled; closing the consumer before that would drop it.
    async fn leave_group(&self) {
        self.consumer.unsubscribe();
        let deadline = Instant::now() + LEAVE_WITHIN;
        let mut revoked_at = None;
        while Instant::now() < deadline {
            // Polling serves the revocation; records that still arrive are not answered and
            // their offsets not stored, so the partitions' next owner answers them.
            let _ = tokio::time::timeout(LEAVE_POLL, self.consumer.recv()).await;
            let revoked = self
                .consumer
                .assignment()
                .map(|a| a.count() == 0)
                .unwrap_or(true);
            match (revoked, revoked_at) {
                (false, _) => revoked_at = None,
                (true, None) => revoked_at = Some(Instant::now()),
                // The LeaveGroup follows the revocation once the fetchers stopped, within
                // milliseconds; the consumer's close then waits for its answer.
                (true, Some(at)) if at.elapsed() >= LEAVE_AFTER_REVOKED => return,
                (true, Some(_)) => {}
            }
        }
        tracing::warn!("Leaving the consumer group took too long; closing anyway.");
    }

    /// Routes one request, asks `answer` what becomes of it, and queues the reply or the dead
    /// letter without waiting for its acknowledgement.
    async fn respond(
        &self,
        msg: &BorrowedMessage<'_>,
        answer: &mut impl FnMut(&BorrowedMessage<'_>, &ReplyRoute) -> Disposition,
        routes: &mut RouteCache,
        in_flight: OwnedSemaphorePermit,
    ) -> Pending {
        let headers = msg.headers();
        let header_pairs = headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|h| (h.key, h.value));
        let route = route(header_pairs, &self.topics);
        let (record, unroutable, request_id) = match answer(msg, &route) {
            Disposition::Reply {
                body,
                request_id,
                unroutable,
            } => {
                let record = Outgoing::from_record(&reply_record(&route, msg.key(), &body));
                // Only a route of the requester's choosing can turn out not to exist; the
                // responses topic itself is retried like any other failure.
                let own_route = route.topic != self.topics.responses || route.partition.is_some();
                let mut unroutable = unroutable.filter(|_| own_route).map(|body| {
                    let fallback = ReplyRoute {
                        topic: self.topics.responses.clone(),
                        partition: None,
                        correlation_id: route.correlation_id.clone(),
                        refused: None,
                    };
                    Outgoing::from_record(&reply_record(&fallback, msg.key(), &body))
                });
                // Known not to exist: answered on the responses topic at once rather than after
                // the producer gives up on the topic (`message.timeout.ms`).
                if unroutable.is_some() && !routes.exists(&self.producer.get(), &route).await {
                    tracing::warn!(topic = %route.topic, partition = ?route.partition, ?request_id,
                        "Reply route does not exist; answering on the responses topic.");
                    let fallback = unroutable.take().expect("checked");
                    (fallback, None, request_id)
                } else {
                    (record, unroutable, request_id)
                }
            }
            Disposition::DeadLetter { error } => {
                let record =
                    Outgoing::from_record(&dead_letter_record(&self.topics.dlq, msg, &error));
                (record, None, None)
            }
        };
        Pending {
            attempt: kafka::enqueue(&self.producer.get(), record.record()).await,
            record,
            unroutable,
            partition: msg.partition(),
            offset: msg.offset(),
            request_id,
            in_flight,
        }
    }
}

/// How long a reply topic's metadata is trusted before it is looked up again.
const ROUTE_TTL: Duration = Duration::from_secs(30);
/// Reply topics remembered at most; past this the cache starts over (requesters choose the
/// names, so the cache must not grow with them).
const ROUTE_CACHE_MAX: usize = 1024;

/// Reply topics of the requesters' choosing, and their partition counts (`None`: no such topic),
/// as the broker's metadata said within [`ROUTE_TTL`].
#[derive(Default)]
struct RouteCache {
    topics: HashMap<String, (Option<usize>, Instant)>,
}

impl RouteCache {
    /// Whether `route`'s topic (and pinned partition) exists. A lookup that fails (the broker is
    /// unreachable) says yes: the reply is then produced and retried like any other, and its
    /// delivery error still re-routes it if the topic turns out not to exist.
    async fn exists(&mut self, producer: &FutureProducer, route: &ReplyRoute) -> bool {
        let fresh = self
            .topics
            .get(&route.topic)
            .filter(|(_, at)| at.elapsed() < ROUTE_TTL)
            .map(|(partitions, _)| *partitions);
        let partitions = match fresh {
            Some(partitions) => partitions,
            None => {
                let Some(partitions) = lookup(producer, &route.topic).await else {
                    return true;
                };
                if self.topics.len() >= ROUTE_CACHE_MAX {
                    self.topics.clear();
                }
                self.topics
                    .insert(route.topic.clone(), (partitions, Instant::now()));
                partitions
            }
        };
        match (partitions, route.partition) {
            (None, _) => false,
            (Some(count), Some(p)) => usize::try_from(p).is_ok_and(|p| p < count),
            (Some(_), None) => true,
        }
    }
}

/// The number of partitions of `topic` per the broker (`Some(None)`: no such topic), or `None`
/// when the broker could not be asked. librdkafka's metadata call blocks, so it runs off the
/// async threads.
async fn lookup(producer: &FutureProducer, topic: &str) -> Option<Option<usize>> {
    let producer = producer.clone();
    let name = topic.to_owned();
    let metadata = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(Some(&name), METADATA_TIMEOUT)
    })
    .await
    .ok()?;
    let metadata = match metadata {
        Ok(metadata) => metadata,
        Err(e) => {
            tracing::debug!(error = %e, topic, "Reply topic lookup failed.");
            return None;
        }
    };
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    Some(match found {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Some(t.partitions().len()),
        Some(t) if t.error() == Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
            None
        }
        // Another error (e.g. leader not available): not known to be missing.
        Some(_) => return None,
        None => None,
    })
}

/// How long one reply topic lookup may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The committer: awaits each reply's acknowledgement in the order the requests were consumed,
/// then stores the request's offset. This is the one place that decides what a failed delivery
/// means: it is produced again until it is acknowledged ([`deliver`]), and no later offset is
/// stored meanwhile.
///
/// A reply that failed is retried on a task of its own, and so is every reply already queued
/// behind it: an outage fails them all at once (each after `message.timeout.ms`), and retrying
/// them one after the other, each after its own backoff, took 0.1 s per reply (measured: 12,748
/// of 20,000 requests still unanswered 180 s after a 6 s broker pause). Their offsets are still
/// stored in order. Replies that are delivered at the first attempt are awaited here, with no
/// task each.
///
/// Returns once the loop is gone and every pending reply settled, or at the first reply that
/// could not be delivered after `shutdown`: that offset and every later one stay unstored, so
/// the partition's next owner answers those requests again.
async fn commit_in_order(
    consumer: Arc<StreamConsumer>,
    producer: SharedProducer,
    requests: String,
    mut rx: mpsc::Receiver<Pending>,
    shutdown: CancellationToken,
) {
    // Replies being retried, oldest first: all received before anything still in `rx`.
    let mut retrying: VecDeque<(i32, i64, tokio::task::JoinHandle<bool>)> = VecDeque::new();
    loop {
        let (partition, offset) = if let Some((partition, offset, retry)) = retrying.pop_front() {
            if !retry.await.unwrap_or(false) {
                tracing::warn!(
                    partition,
                    offset,
                    unsettled = retrying.len() + rx.len() + 1,
                    "Stopping with a reply not delivered; its request and later ones stay uncommitted."
                );
                return;
            }
            (partition, offset)
        } else {
            let Some(mut p) = rx.recv().await else {
                return;
            };
            let (partition, offset) = (p.partition, p.offset);
            match first_outcome(p.attempt).await {
                Ok(()) => {}
                Err(error) => {
                    p.attempt = Err(error);
                    let retry = |p: Pending| {
                        let (producer, shutdown) = (producer.clone(), shutdown.clone());
                        let at = (p.partition, p.offset);
                        let task =
                            tokio::spawn(async move { deliver(&producer, p, &shutdown).await });
                        (at.0, at.1, task)
                    };
                    retrying.push_back(retry(p));
                    while let Ok(next) = rx.try_recv() {
                        retrying.push_back(retry(next));
                    }
                    continue;
                }
            }
            (partition, offset)
        };
        if let Err(e) = store_next_offset(&consumer, &requests, partition, offset) {
            tracing::warn!(error = %e, partition, "Cannot store request offset.");
        }
    }
}

/// Stores `offset + 1`, the next request to read, as the partition's position to commit.
///
/// Through `store_offsets` and an explicit list, not `Consumer::store_offset`: that one calls
/// librdkafka's legacy `rd_kafka_offset_store`, which adds 1 itself, so passing `offset + 1`
/// there committed one past the next request. The partition's next owner (after a restart, a
/// graceful hand-over or a rebalance) then started one request too far: on Kafka it skipped
/// that request unanswered; on tansu 0.6, which answers a fetch from inside a batch with
/// nothing, it read nothing more from the partition at all.
fn store_next_offset(
    consumer: &StreamConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> KafkaResult<()> {
    let mut next = TopicPartitionList::with_capacity(1);
    next.add_partition_offset(topic, partition, Offset::Offset(offset + 1))?;
    consumer.store_offsets(&next)
}

/// Awaits one reply's acknowledgement, producing it again with backoff while it fails, and
/// re-routing it to the responses topic once its own route turns out not to exist. `false`
/// when it gave up because of `shutdown`.
async fn deliver(producer: &SharedProducer, p: Pending, shutdown: &CancellationToken) -> bool {
    let Pending {
        mut attempt,
        mut record,
        mut unroutable,
        request_id,
        // Held until this reply is acknowledged (or given up at a shutdown).
        in_flight: _in_flight,
        ..
    } = p;
    let mut wait = RETRY_FIRST;
    loop {
        let Err(error) = first_outcome(attempt).await else {
            return true;
        };
        if route_missing(&error) {
            if let Some(fallback) = unroutable.take() {
                tracing::warn!(error = %error, ?request_id, topic = %record.topic,
                    partition = ?record.partition,
                    "Reply route does not exist; answering on the responses topic.");
                record = fallback;
                attempt = kafka::enqueue(&producer.get(), record.record()).await;
                continue;
            }
        }
        crate::telemetry::metrics::reply_delivery_failed();
        if let Some(unlogged) = REPLY_FAILURES.admit(Instant::now()) {
            tracing::error!(error = %error, ?request_id, topic = %record.topic,
                retry_in = ?wait, unlogged_since_last = unlogged,
                "Reply was not delivered; producing it again (more failures within 5 s are counted in trustgate_reply_delivery_failures_total, not logged).");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RETRY_MAX);
        // A producer that failed for good (librdkafka's fatal state) would refuse this reply
        // forever: it is replaced first, and the reply goes through the new one.
        producer.recover(&error);
        attempt = kafka::enqueue(&producer.get(), record.record()).await;
    }
}

/// What became of one attempt: delivered, or the error it failed with (also the error that kept
/// it from being queued).
async fn first_outcome(attempt: Result<DeliveryFuture, KafkaError>) -> Result<(), KafkaError> {
    match attempt?.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e),
        // The producer dropped the delivery without an outcome: treat it as failed.
        Err(_) => Err(KafkaError::Canceled),
    }
}

/// Whether a delivery failed because its topic or partition does not exist (as opposed to the
/// broker being unreachable or slow, which retrying cures).
fn route_missing(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownPartition
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event per period gets through; the next one through says how many did not.
    #[test]
    fn the_throttle_admits_one_event_per_period_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert_eq!(throttle.admit(at(0)), Some(0));
        assert_eq!(throttle.admit(at(1)), None);
        assert_eq!(throttle.admit(at(4)), None);
        assert_eq!(throttle.admit(at(5)), Some(2));
        assert_eq!(throttle.admit(at(6)), None);
        assert_eq!(throttle.admit(at(20)), Some(1));
        assert_eq!(throttle.admit(at(30)), Some(0));
    }
}
