//! One connection's life: connect, declare the queue (passive, durable), consume with a bounded
//! prefetch, and acknowledge each delivery only once Kafka acknowledged what it became.
//!
//! The pipeline: each delivery's Kafka write starts as soon as it arrives and joins an ordered
//! queue of writes in flight (at most `prefetch`, which the broker enforces); the loop takes the
//! next delivery without waiting for earlier writes, and acknowledges deliveries in order as
//! their writes complete. A write that fails ends the session: the connection is closed, the
//! broker requeues every unacknowledged delivery, and the next session gets them again (a
//! duplicate on the events topic, which the fold absorbs; never a loss).

use super::endpoint::Endpoint;
use super::message::{classify, Verdict};
use super::AmqpContext;
use crate::publish::OutRecord;
use crate::telemetry::metrics;
use crate::topic::{Kind, HEADER_DLQ_ERROR, HEADER_DLQ_QUEUE, HEADER_SOURCE};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::FieldTable;
use lapin::{Acker, Connection, ConnectionProperties};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long connecting (TCP, TLS, AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a shutdown waits for writes in flight before closing (their deliveries are
/// redelivered to the next consumer).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The consumer tag trustgate consumes under.
const CONSUMER_TAG: &str = "trustgate";

/// Why a session ended, other than shutdown.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    /// Connecting, declaring, consuming or acknowledging failed.
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    /// No connection within [`CONNECT_TIMEOUT`].
    #[error("connecting timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The broker cancelled the consumer (the queue was deleted, …).
    #[error("the broker cancelled the consumer")]
    Cancelled,
    /// A Kafka write failed; its delivery and every later one are redelivered.
    #[error("Kafka write failed: {0}")]
    Publish(String),
}

/// What a delivery became once Kafka acknowledged it.
enum Outcome {
    Published,
    DeadLettered,
    Skipped,
}

/// A delivery whose Kafka write finished.
struct Written {
    acker: Acker,
    outcome: Result<Outcome, String>,
}

type InFlight = Pin<Box<dyn Future<Output = Written> + Send>>;

/// Consumes until `shutdown` (then `Ok`) or until something fails. `attached` is set once the
/// consumer is registered, so the caller can reset its backoff.
pub(super) async fn consume(
    ctx: &AmqpContext,
    endpoint: &Endpoint,
    shutdown: &CancellationToken,
    attached: &mut bool,
) -> Result<(), SessionError> {
    let conn = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        conn = tokio::time::timeout(CONNECT_TIMEOUT, connect(endpoint)) => {
            conn.map_err(|_| SessionError::ConnectTimeout(CONNECT_TIMEOUT))??
        }
    };
    let result = attach_and_run(ctx, endpoint, &conn, shutdown, attached).await;
    // Closing returns every unacknowledged delivery to the queue; a connection already lost
    // has done so.
    let _ = conn.close(200, "trustgate stopping".into()).await;
    result
}

async fn connect(endpoint: &Endpoint) -> Result<Connection, SessionError> {
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: endpoint.ca_pem.clone(),
    };
    let properties = ConnectionProperties::default().with_connection_name("trustgate".into());
    let runtime = lapin::runtime::default_runtime()?;
    Ok(Connection::connect_uri_with_config(endpoint.uri.clone(), properties, tls, runtime).await?)
}

async fn attach_and_run(
    ctx: &AmqpContext,
    endpoint: &Endpoint,
    conn: &Connection,
    shutdown: &CancellationToken,
    attached: &mut bool,
) -> Result<(), SessionError> {
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(ctx.settings.prefetch, BasicQosOptions::default())
        .await?;
    // Passive: SE owns the queue; declaring it here would create a stray one on a typo.
    channel
        .queue_declare(
            endpoint.queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            endpoint.queue.as_str().into(),
            CONSUMER_TAG.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    *attached = true;
    metrics::amqp_connected(true);
    tracing::info!(
        target_addr = endpoint.target(),
        queue = endpoint.queue,
        prefetch = ctx.settings.prefetch,
        "AMQP stream consumer attached."
    );

    let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
    let mut heartbeat = tokio::time::interval(ctx.settings.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(written) = in_flight.next(), if !in_flight.is_empty() => {
                acknowledge(written).await?;
            }
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    metrics::amqp_received();
                    in_flight.push_back(write(ctx, &endpoint.queue, delivery.data, delivery.acker));
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(SessionError::Cancelled),
            },
            _ = heartbeat.tick() => ctx.spawn_heartbeat(&endpoint.queue),
        }
    }
    // Shutdown: take no more deliveries, acknowledge what Kafka acknowledges in time; the rest
    // are redelivered to whoever consumes next.
    let _ = channel
        .basic_cancel(CONSUMER_TAG.into(), BasicCancelOptions::default())
        .await;
    let drain = async {
        while let Some(written) = in_flight.next().await {
            acknowledge(written).await?;
        }
        Ok::<(), SessionError>(())
    };
    match tokio::time::timeout(DRAIN_TIMEOUT, drain).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("AMQP deliveries still unacknowledged at shutdown will be redelivered.");
            Ok(())
        }
    }
}

/// Acknowledges a delivery whose write Kafka acknowledged; a failed write ends the session.
async fn acknowledge(written: Written) -> Result<(), SessionError> {
    match written.outcome {
        Ok(outcome) => {
            match outcome {
                Outcome::Published => metrics::amqp_published(),
                Outcome::DeadLettered => metrics::amqp_dead_lettered(),
                Outcome::Skipped => metrics::amqp_skipped("no_connector_guid"),
            }
            written.acker.ack(BasicAckOptions::default()).await?;
            metrics::amqp_acked();
            Ok(())
        }
        Err(e) => Err(SessionError::Publish(e)),
    }
}

/// Starts the Kafka write for one delivery; resolves once Kafka acknowledged it (or failed).
fn write(ctx: &AmqpContext, queue: &str, body: Vec<u8>, acker: Acker) -> InFlight {
    let verdict = classify(&body, &ctx.compromise_types);
    let publisher = ctx.publisher.clone();
    let producer = ctx.producer.clone();
    let dlq = ctx.dlq_topic.clone();
    let queue = queue.to_owned();
    let timeout = ctx.settings.publish_timeout;
    Box::pin(async move {
        let outcome = match verdict {
            Verdict::Event { guid } => {
                let record = OutRecord {
                    kind: Kind::Event,
                    key: &guid,
                    value: &body,
                    observed_at: None,
                };
                publisher
                    .publish_all(&[record], timeout)
                    .await
                    .map(|()| Outcome::Published)
                    .map_err(|e| e.to_string())
            }
            Verdict::Account => Ok(Outcome::Skipped),
            Verdict::DeadLetter { reason } => {
                tracing::warn!(
                    queue,
                    reason,
                    "AMQP message is not a usable SE event; dead-lettered."
                );
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: HEADER_SOURCE,
                        value: Some(super::SOURCE),
                    })
                    .insert(Header {
                        key: HEADER_DLQ_QUEUE,
                        value: Some(queue.as_str()),
                    })
                    .insert(Header {
                        key: HEADER_DLQ_ERROR,
                        value: Some(reason.as_str()),
                    });
                let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&dlq)
                    .payload(&body[..])
                    .headers(headers)
                    .timestamp(crate::time::now_millis());
                producer
                    .get()
                    .send(record, timeout)
                    .await
                    .map(|_| Outcome::DeadLettered)
                    .map_err(|(e, _)| {
                        producer.recover(&e);
                        format!("dead-lettering to {dlq}: {e}")
                    })
            }
        };
        Written { acker, outcome }
    })
}
