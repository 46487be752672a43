//! The echo responder: the floor that decision latency is compared against.
//!
//! It is the decision worker's Kafka path with the decision taken out: the same consumer role
//! and producer settings, a consumer group of its own, reply routing by the same Spring
//! headers, replies pipelined with acknowledgements awaited in order by a second task before
//! the request's offset is stored. The reply is the request's own bytes: no parse, no lookup.

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trustgate::config::Settings;
use trustgate::decision::reply::route;
use trustgate::kafka::{client_config, Role};

/// Same bound as the worker's.
const IN_FLIGHT: usize = 10_000;

/// A running echo responder.
pub struct Echo {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Echo {
    /// Starts answering requests on `requests` in consumer group `group`.
    pub fn start(settings: &Settings, requests: &str, group: &str) -> anyhow::Result<Echo> {
        let mut config = client_config(&settings.kafka, Role::Decider);
        // Never the worker's group (or its static identity): the echo must not take its load.
        config.set("group.id", group).remove("group.instance.id");
        let consumer: Arc<StreamConsumer> =
            Arc::new(config.create().context("creating the echo consumer")?);
        consumer
            .subscribe(&[requests])
            .context("subscribing the echo responder")?;
        let producer: FutureProducer = client_config(&settings.kafka, Role::Producer)
            .create()
            .context("creating the echo producer")?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            consumer,
            producer,
            settings.topics.clone(),
            requests.to_owned(),
            shutdown.clone(),
        ));
        Ok(Echo { shutdown, task })
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

async fn serve(
    consumer: Arc<StreamConsumer>,
    producer: FutureProducer,
    topics: trustgate::config::TopicSettings,
    requests: String,
    shutdown: CancellationToken,
) {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let acks = tokio::spawn(store_in_order(consumer.clone(), requests, rx));
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            msg = consumer.recv() => msg,
        };
        match msg {
            Ok(msg) => {
                let delivery = echo(&producer, &topics, &msg).await;
                if tx
                    .send((delivery, msg.partition(), msg.offset()))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Err(e) => tracing::warn!(error = %e, "Echo consumer error."),
        }
    }
    drop(tx);
    let _ = acks.await;
}

async fn echo(
    producer: &FutureProducer,
    topics: &trustgate::config::TopicSettings,
    msg: &BorrowedMessage<'_>,
) -> Option<DeliveryFuture> {
    let headers = msg.headers();
    let pairs = headers
        .iter()
        .flat_map(|h| h.iter())
        .map(|h| (h.key, h.value));
    let route = route(pairs, topics);
    trustgate::decision::worker::produce_reply(
        producer,
        &route,
        msg.key(),
        msg.payload().unwrap_or_default(),
    )
    .await
}

async fn store_in_order(
    consumer: Arc<StreamConsumer>,
    topic: String,
    mut rx: mpsc::Receiver<(Option<DeliveryFuture>, i32, i64)>,
) {
    while let Some((delivery, partition, offset)) = rx.recv().await {
        if let Some(delivery) = delivery {
            let _ = delivery.await;
        }
        let _ = consumer.store_offset(&topic, partition, offset + 1);
    }
}
