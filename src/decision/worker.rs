//! The Kafka decision worker.
//!
//! Consumes the requests topic in the consumer group `[kafka] group_id`, so instances share the
//! load, and answers each request through the pipelined reply loop ([`super::pipeline`]): its
//! reply is handed to the producer without waiting for earlier replies to be acknowledged, and
//! a request's offset is stored only after its reply was (at-least-once: a crash may answer a
//! request twice, never zero times). Requests are taken only once ingest has caught up, so no
//! answer comes from a state that is missing records already on the events topic.

use super::pipeline::{Disposition, ReplyLoop};
use super::reply::ReplyRoute;
use super::{Answer, Decider};
use crate::config::Settings;
use crate::ingest::IngestStatus;
use crate::kafka::{client_config, Role};
use crate::store::Store;
use crate::telemetry::metrics;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) struct WorkerContext {
    pub(crate) settings: Settings,
    pub(crate) decider: Decider<Store>,
    pub(crate) producer: FutureProducer,
    pub(crate) ingest: IngestStatus,
}

/// Runs until `shutdown`, then drains: every reply already produced is acknowledged and its
/// offset committed before the consumer leaves the group.
pub(crate) async fn run(ctx: WorkerContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    if !ctx.ingest.wait_caught_up(&shutdown).await {
        return Ok(());
    }
    let topics = &ctx.settings.topics;
    let replies = ReplyLoop::subscribe(
        &client_config(&ctx.settings.kafka, Role::Decider),
        ctx.producer.clone(),
        topics.clone(),
        &topics.requests,
    )?;
    tracing::info!(topic = %topics.requests, group = %ctx.settings.kafka.group_id, "Decision worker started.");
    replies
        .run(|msg, route| answer(&ctx.decider, msg, route), shutdown)
        .await?;
    tracing::info!("Decision worker stopped.");
    Ok(())
}

/// Decides one request; a reply route that was refused turns the answer into
/// `invalid_request`, and a request without a readable `request_id` is dead-lettered.
fn answer(decider: &Decider<Store>, msg: &BorrowedMessage<'_>, route: &ReplyRoute) -> Disposition {
    let started = Instant::now();
    let body = msg.payload().unwrap_or_default();
    let answer = match (decider.decide(body), &route.refused) {
        (Answer::Reply(resp), Some(reason)) => {
            Answer::Reply(decider.invalid(resp.request_id, reason.clone()))
        }
        (answer, _) => answer,
    };
    match answer {
        Answer::Reply(resp) => {
            metrics::decision(&resp.policy, resp.decision, resp.reason, started.elapsed());
            Disposition::Reply {
                body: serde_json::to_vec(&resp).expect("responses serialise"),
                request_id: Some(resp.request_id),
            }
        }
        Answer::Unanswerable(error) => {
            tracing::warn!(partition = msg.partition(), offset = msg.offset(), error = %error,
                "Dead-lettering a decision request without a readable request_id.");
            metrics::request_dead_lettered();
            Disposition::DeadLetter { error }
        }
    }
}
