//! The Secure Endpoint Event Stream source: SE pushes every event to an AMQP 0.9.1 queue
//! (RabbitMQ, TLS) within seconds, spending no API budget; this module drains that queue into
//! the events topic.
//!
//! Owns the connection target and the stream's credentials file (`endpoint.rs`), what a message
//! is (`message.rs`), one connection's consume-publish-acknowledge pipeline (`session.rs`), SE's
//! stream management API ([`streams`]) and, here, reconnecting with backoff and the source's
//! heartbeat. Each message body reaches the
//! events topic byte-for-byte (kind `event`, source `amqp`, key = connector GUID) through
//! [`crate::publish::EventsPublisher`], and is acknowledged to the broker only after Kafka
//! acknowledged it, so a crash anywhere redelivers rather than loses. It does not own what the
//! records mean: that is [`crate::fold`].

mod endpoint;
mod message;
mod session;
pub mod streams;

pub use endpoint::{Credentials, Endpoint, EndpointError};

use crate::config::{AmqpSettings, Settings};
use crate::kafka::SharedProducer;
use crate::publish::{EventsPublisher, OutRecord};
use crate::telemetry::metrics;
use crate::topic::Kind;
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The `trustgate-source` of every record the stream consumer writes.
pub const SOURCE: &str = "amqp";
/// The first reconnect waits about this long; each failure doubles it.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Reconnects never wait longer than this.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// What the consumer writes with and decides by. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AmqpContext {
    pub(crate) settings: AmqpSettings,
    pub(crate) publisher: EventsPublisher,
    pub(crate) producer: SharedProducer,
    pub(crate) dlq_topic: String,
    /// Event types that must name a device (see `message.rs`).
    pub(crate) compromise_types: HashSet<u64>,
}

impl AmqpContext {
    /// A heartbeat record (key `amqp`): the stream is attached, so a quiet stream stays fresh.
    /// Not awaited by the consumer; a lost heartbeat is only logged (the next one follows).
    fn spawn_heartbeat(&self, queue: &str) {
        let publisher = self.publisher.clone();
        let timeout = self.settings.publish_timeout;
        let value = serde_json::json!({
            "source": SOURCE,
            "queue": queue,
            "at": crate::time::rfc3339(chrono::Utc::now()),
        })
        .to_string();
        tokio::spawn(async move {
            let record = OutRecord {
                kind: Kind::Heartbeat,
                key: SOURCE,
                value: value.as_bytes(),
                observed_at: None,
            };
            if let Err(e) = publisher.publish_all(&[record], timeout).await {
                tracing::warn!(error = %e, "AMQP heartbeat not published.");
            }
        });
    }
}

/// Exponential backoff with jitter: each wait is between half and all of the current step, so
/// many instances that lost one broker do not all come back at once.
struct Backoff {
    step: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { step: BACKOFF_BASE }
    }

    fn next(&mut self) -> Duration {
        let half = self.step / 2;
        let wait = half + half.mul_f64(rand::random::<f64>());
        self.step = (self.step * 2).min(BACKOFF_CAP);
        wait
    }

    fn reset(&mut self) {
        self.step = BACKOFF_BASE;
    }
}

/// Runs the stream consumer until `shutdown`, reconnecting after every failure. Fails only
/// when the credentials file or `[amqp]` cannot give an endpoint at start.
pub async fn run(
    settings: &Settings,
    producer: SharedProducer,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let endpoint = Endpoint::resolve(&settings.amqp)?;
    let ctx = AmqpContext {
        settings: settings.amqp.clone(),
        publisher: EventsPublisher::new(producer.clone(), settings.topics.events.clone(), SOURCE),
        producer,
        dlq_topic: settings.topics.dlq.clone(),
        compromise_types: settings.fold.compromise_event_types.clone(),
    };
    tracing::info!(
        target_addr = endpoint.target(),
        queue = endpoint.queue(),
        tls = endpoint.tls(),
        "AMQP stream consumer started."
    );
    metrics::amqp_connected(false);
    let mut backoff = Backoff::new();
    while !shutdown.is_cancelled() {
        let mut attached = false;
        let result = session::consume(&ctx, &endpoint, &shutdown, &mut attached).await;
        metrics::amqp_connected(false);
        let error = match result {
            Ok(()) => break,
            Err(e) => e,
        };
        if attached {
            backoff.reset();
        }
        let wait = backoff.next();
        tracing::warn!(
            error = %error,
            retry_in_ms = wait.as_millis() as u64,
            "AMQP stream connection failed or lost; reconnecting."
        );
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => metrics::amqp_reconnect(),
        }
    }
    tracing::info!("AMQP stream consumer stopped.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!(
            first >= BACKOFF_BASE / 2 && first <= BACKOFF_BASE,
            "{first:?}"
        );
        let second = b.next();
        assert!(
            second >= BACKOFF_BASE && second <= BACKOFF_BASE * 2,
            "{second:?}"
        );
        for _ in 0..20 {
            assert!(b.next() <= BACKOFF_CAP);
        }
        assert!(b.next() >= BACKOFF_CAP / 2);
        b.reset();
        assert!(b.next() <= BACKOFF_BASE);
    }
}
