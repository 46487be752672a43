//! The echo responder: the floor that decision latency is compared against.
//!
//! It is the decision worker's Kafka path with the decision taken out: the same reply loop
//! ([`trustgate::decision::pipeline`]: reply routing by the Spring headers, replies pipelined
//! with acknowledgements awaited in order by a second task before the request's offset is
//! stored), the same consumer role and producer settings, and a consumer group of its own. The
//! reply is a copy of the request's own bytes: no parse, no lookup.

use anyhow::Context;
use rdkafka::message::{BorrowedMessage, Message};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trustgate::config::Settings;
use trustgate::decision::pipeline::{Disposition, ReplyLoop};
use trustgate::decision::reply::ReplyRoute;
use trustgate::kafka::SharedProducer;
use trustgate::kafka::{client_config, Role};

/// A running echo responder.
pub struct Echo {
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Echo {
    /// Starts answering requests on `requests` in consumer group `group`.
    pub fn start(settings: &Settings, requests: &str, group: &str) -> anyhow::Result<Echo> {
        let mut config = client_config(&settings.kafka, Role::Decider);
        // Never the worker's group (or its static identity): the echo must not take its load.
        config.set("group.id", group).remove("group.instance.id");
        let producer = SharedProducer::create(client_config(&settings.kafka, Role::Producer))
            .context("creating the echo producer")?;
        let replies = ReplyLoop::subscribe(&config, producer, settings.topics.clone(), requests)
            .context("starting the echo responder")?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(replies.run(echo, shutdown.clone()));
        Ok(Echo { shutdown, task })
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "Echo responder failed."),
            Err(e) => tracing::warn!(error = %e, "Echo responder panicked."),
        }
    }
}

/// The echo's answer: the request's bytes, back on its route.
fn echo(msg: &BorrowedMessage<'_>, _: &ReplyRoute) -> Disposition {
    Disposition::Reply {
        body: msg.payload().unwrap_or_default().to_vec(),
        request_id: None,
        unroutable: None,
    }
}
