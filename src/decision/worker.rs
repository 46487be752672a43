//! The Kafka decision worker.
//!
//! Consumes the requests topic in the consumer group `[kafka] group_id`, so instances share the
//! load, and answers each request through the pipelined reply loop ([`super::pipeline`]): its
//! reply is handed to the producer without waiting for earlier replies to be acknowledged, and
//! a request's offset is stored only after its reply (or dead letter) was acknowledged. A reply
//! that fails is produced again until it is, and the worker does not move past it. So the
//! guarantee is at-least-once: a crash or a restart may answer a request twice; a request is not
//! dropped on the worker's side (a requester may still give up waiting). Requests are taken only once ingest has caught up, so no
//! answer comes from a state that is missing records already on the events topic.

use super::pipeline::{Disposition, ReplyLoop};
use super::reply::ReplyRoute;
use super::{Answer, Decider};
use crate::audit::{AuditSink, AuditSource};
use crate::config::Settings;
use crate::ingest::IngestStatus;
use crate::kafka::{client_config, group_instance_id, Role, SharedProducer};
use crate::store::Store;
use crate::telemetry::metrics;
use rdkafka::message::{BorrowedMessage, Message};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) struct WorkerContext {
    pub(crate) settings: Settings,
    pub(crate) decider: Decider<Store>,
    pub(crate) producer: SharedProducer,
    pub(crate) ingest: IngestStatus,
    /// Every answer is also handed here (without waiting) for the audit topic.
    pub(crate) audit: AuditSink,
}

/// Runs until `shutdown`, then drains: every reply already produced is acknowledged and its
/// offset committed before the consumer leaves the group.
pub(crate) async fn run(ctx: WorkerContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    if !ctx.ingest.wait_caught_up(&shutdown).await {
        return Ok(());
    }
    let topics = &ctx.settings.topics;
    // Always a static member: the configured id, else one derived from this instance's store
    // (see `kafka::group_instance_id`), so a restarted worker takes its own place back.
    let mut kafka = ctx.settings.kafka.clone();
    let origin = match kafka.group_instance_id {
        Some(_) => "configured",
        None => "derived",
    };
    let instance = group_instance_id(&kafka, &ctx.settings.store.path);
    kafka.group_instance_id = Some(instance.clone());
    let replies = ReplyLoop::subscribe(
        &client_config(&kafka, Role::Decider),
        ctx.producer.clone(),
        topics.clone(),
        &topics.requests,
    )?;
    tracing::info!(topic = %topics.requests, group = %kafka.group_id,
        group_instance_id = %instance, group_instance_id_from = origin,
        "Decision worker started.");
    replies
        .run(
            |msg, route| answer(&ctx.decider, &ctx.audit, &topics.responses, msg, route),
            shutdown,
        )
        .await?;
    tracing::info!("Decision worker stopped.");
    Ok(())
}

/// Decides one request; a reply route that was refused turns the answer into
/// `invalid_request`, and a request without a readable `request_id` is dead-lettered. A route
/// of the requester's choosing comes with the `invalid_request` answer to send instead if it
/// turns out not to exist. Every answer is handed to `audit` as it is sent.
fn answer(
    decider: &Decider<Store>,
    audit: &AuditSink,
    responses: &str,
    msg: &BorrowedMessage<'_>,
    route: &ReplyRoute,
) -> Disposition {
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
            audit.record(AuditSource::Kafka, body, &resp);
            let unroutable = (route.topic != responses || route.partition.is_some()).then(|| {
                let invalid = decider.invalid(
                    resp.request_id.clone(),
                    format!(
                        "reply topic {:?} (partition {:?}) does not exist",
                        route.topic, route.partition
                    ),
                );
                serde_json::to_vec(&invalid).expect("responses serialise")
            });
            Disposition::Reply {
                body: serde_json::to_vec(&resp).expect("responses serialise"),
                request_id: Some(resp.request_id),
                unroutable,
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
