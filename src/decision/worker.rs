//! The Kafka decision worker.
//!
//! Consumes the requests topic in the consumer group `[kafka] group_id`, so instances share the
//! load, and pipelines: each request is decided and its reply handed to the producer without
//! waiting for earlier replies to be acknowledged. A committer task awaits the acknowledgements
//! in order and only then stores each request's offset (at-least-once: a crash may answer a
//! request twice, never zero times). Requests are taken only once ingest has caught up, so no
//! answer comes from a state that is missing records already on the events topic.

use super::reply::{route, ReplyRoute, HEADER_CORRELATION_ID};
use super::{Answer, Decider, DecisionResponse};
use crate::config::Settings;
use crate::ingest::IngestStatus;
use crate::kafka::{self, client_config, Role};
use crate::store::Store;
use crate::topic::dead_letter_record;
use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Replies handed to the producer but not yet acknowledged, at most.
const IN_FLIGHT: usize = 10_000;

pub struct WorkerContext {
    pub settings: Settings,
    pub decider: Decider<Store>,
    pub producer: FutureProducer,
    pub ingest: IngestStatus,
    pub shutdown: CancellationToken,
}

/// One reply (or dead letter) awaiting its acknowledgement, and the request offset it settles.
struct Pending {
    /// `None` when the record could not even be queued (already logged).
    delivery: Option<DeliveryFuture>,
    partition: i32,
    offset: i64,
    request_id: Option<String>,
}

/// Runs until `shutdown`, then drains: every reply already produced is acknowledged and its
/// offset committed before the consumer leaves the group.
pub async fn run(ctx: WorkerContext) -> anyhow::Result<()> {
    if !ctx.ingest.wait_caught_up(&ctx.shutdown).await {
        return Ok(());
    }
    let consumer: Arc<StreamConsumer> = Arc::new(
        client_config(&ctx.settings.kafka, Role::Decider)
            .create()
            .context("creating the decision consumer")?,
    );
    consumer
        .subscribe(&[&ctx.settings.topics.requests])
        .context("subscribing to the requests topic")?;
    tracing::info!(topic = %ctx.settings.topics.requests, group = %ctx.settings.kafka.group_id, "Decision worker started.");
    let (tx, rx) = mpsc::channel::<Pending>(IN_FLIGHT);
    let committer = tokio::spawn(commit_in_order(
        consumer.clone(),
        ctx.settings.topics.requests.clone(),
        rx,
    ));
    loop {
        let msg = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            msg = consumer.recv() => msg,
        };
        match msg {
            Ok(msg) => {
                let pending = handle(&ctx, &msg).await;
                if tx.send(pending).await.is_err() {
                    break;
                }
            }
            Err(e) => tracing::warn!(error = %e, "Decision consumer error."),
        }
    }
    drop(tx);
    committer.await.context("committer task")?;
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored since the last auto-commit is a normal outcome here.
        tracing::debug!(error = %e, "Final offset commit.");
    }
    tracing::info!("Decision worker stopped.");
    Ok(())
}

async fn handle(ctx: &WorkerContext, msg: &BorrowedMessage<'_>) -> Pending {
    let headers = msg.headers();
    let header_pairs = headers
        .iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value));
    let route = route(header_pairs, &ctx.settings.topics);
    let started = std::time::Instant::now();
    let body = msg.payload().unwrap_or_default();
    let answer = match (ctx.decider.decide(body), &route.refused) {
        (Answer::Reply(resp), Some(reason)) => {
            Answer::Reply(ctx.decider.invalid(resp.request_id, reason.clone()))
        }
        (answer, _) => answer,
    };
    let (delivery, request_id) = match answer {
        Answer::Reply(resp) => {
            crate::metrics::decision(&resp.policy, resp.decision, resp.reason, started.elapsed());
            let id = resp.request_id.clone();
            (
                send_reply(&ctx.producer, &route, msg.key(), &resp).await,
                Some(id),
            )
        }
        Answer::Unanswerable(error) => {
            tracing::warn!(partition = msg.partition(), offset = msg.offset(), error = %error,
                "Dead-lettering a decision request without a readable request_id.");
            crate::metrics::request_dead_lettered();
            let record = dead_letter_record(&ctx.settings.topics.dlq, msg, &error);
            (enqueue(&ctx.producer, record).await, None)
        }
    };
    Pending {
        delivery,
        partition: msg.partition(),
        offset: msg.offset(),
        request_id,
    }
}

async fn send_reply(
    producer: &FutureProducer,
    route: &ReplyRoute,
    key: Option<&[u8]>,
    resp: &DecisionResponse,
) -> Option<DeliveryFuture> {
    let body = serde_json::to_vec(resp).expect("responses serialise");
    produce_reply(producer, route, key, &body).await
}

/// Queues one reply body on its route (topic, partition, correlation id copied back) without
/// waiting for its acknowledgement. The bench's echo floor calls it too, so the floor measures
/// exactly the worker's Kafka path.
pub async fn produce_reply(
    producer: &FutureProducer,
    route: &ReplyRoute,
    key: Option<&[u8]>,
    body: &[u8],
) -> Option<DeliveryFuture> {
    let mut headers = OwnedHeaders::new();
    if let Some(corr) = &route.correlation_id {
        headers = headers.insert(Header {
            key: HEADER_CORRELATION_ID,
            value: Some(corr.as_slice()),
        });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&route.topic)
        .payload(body)
        .headers(headers);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(partition) = route.partition {
        record = record.partition(partition);
    }
    enqueue(producer, record).await
}

/// Hands a record to the producer without waiting for its acknowledgement; a record that
/// cannot be queued is logged and yields no delivery.
async fn enqueue(
    producer: &FutureProducer,
    record: FutureRecord<'_, [u8], [u8]>,
) -> Option<DeliveryFuture> {
    match kafka::enqueue(producer, record).await {
        Ok(delivery) => Some(delivery),
        Err((e, back)) => {
            tracing::error!(error = %e, topic = back.topic, "Reply could not be produced.");
            None
        }
    }
}

async fn commit_in_order(
    consumer: Arc<StreamConsumer>,
    topic: String,
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
        if let Err(e) = consumer.store_offset(&topic, p.partition, p.offset + 1) {
            tracing::warn!(error = %e, partition = p.partition, "Cannot store request offset.");
        }
    }
}
