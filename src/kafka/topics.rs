//! Creating missing topics at start: at once for the one-shot commands, or in the background,
//! retried until the broker answers, for `trustgate run` (a broker that is down when the
//! service starts must not stop it; the service waits, not ready, and recovers by itself).

use crate::config::{KafkaSettings, TopicSettings};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// First and longest wait between two attempts at creating the topics while the broker does
/// not answer.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Why the topics could not be created: worth another try (the broker is down, slow, or
/// electing a controller), or a refusal no retry will change (a replication factor the cluster
/// cannot hold, no permission, an invalid name).
#[derive(Debug, thiserror::Error)]
pub enum TopicSetupError {
    /// The broker did not answer, or answered with an error that may pass.
    #[error("cannot create topics yet: {0}")]
    Transient(String),
    /// The broker refused the topics for good.
    #[error("cannot create topic {topic}: {code}")]
    Refused {
        /// The topic refused.
        topic: String,
        /// The broker's reason.
        code: RDKafkaErrorCode,
    },
}

/// Creates the events, requests, responses, dead-letter and audit topics when they are missing.
pub async fn ensure_topics(
    kafka: &KafkaSettings,
    topics: &TopicSettings,
) -> Result<(), TopicSetupError> {
    let admin: AdminClient<DefaultClientContext> = super::client_config(kafka, super::Role::Admin)
        .create()
        .map_err(|e| TopicSetupError::Transient(e.to_string()))?;
    let names = [
        &topics.events,
        &topics.requests,
        &topics.responses,
        &topics.dlq,
        &topics.audit,
    ];
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                topics.partitions,
                TopicReplication::Fixed(topics.replication_factor),
            )
        })
        .collect();
    // Bounded, so that a broker that is not there is told (and retried) within seconds.
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e: KafkaError| TopicSetupError::Transient(e.to_string()))?;
    for result in results {
        match result {
            Ok(name) => {
                tracing::info!(topic = %name, partitions = topics.partitions, "Created topic.")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) if refused_for_good(code) => {
                return Err(TopicSetupError::Refused { topic, code })
            }
            Err((topic, code)) => {
                return Err(TopicSetupError::Transient(format!("{topic}: {code}")))
            }
        }
    }
    Ok(())
}

/// Creates the topics in the background for a running service: retries with backoff while the
/// broker does not answer (logging each failure), returns `Ok` once they exist or at
/// `shutdown`, and fails only on a refusal no retry will change. Ingest meanwhile waits for the
/// events topic, so the instance stays up and not ready until the broker is back.
pub async fn ensure_topics_until_created(
    kafka: &KafkaSettings,
    topics: &TopicSettings,
    shutdown: &CancellationToken,
) -> Result<(), TopicSetupError> {
    let mut wait = RETRY_FIRST;
    loop {
        match ensure_topics(kafka, topics).await {
            Ok(()) => return Ok(()),
            Err(refused @ TopicSetupError::Refused { .. }) => return Err(refused),
            Err(TopicSetupError::Transient(why)) => {
                tracing::warn!(error = %why, retry_in = ?wait, "Cannot create the topics yet (is the broker up?); retrying.");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// The partition ids `metadata` lists for `topic`; none when the topic does not exist (or the
/// broker reported an error for it).
pub(crate) fn partition_ids(metadata: &rdkafka::metadata::Metadata, topic: &str) -> Vec<i32> {
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect()
}

/// Broker answers to a topic creation that another attempt would only repeat.
fn refused_for_good(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::InvalidReplicationFactor
            | RDKafkaErrorCode::InvalidPartitions
            | RDKafkaErrorCode::InvalidReplicaAssignment
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::InvalidConfig
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broker that is not there is worth waiting for; a refusal is not. Nothing listens on
    /// port 9 (discard) on loopback here, so the attempt fails as a down broker does.
    #[tokio::test]
    async fn a_down_broker_is_retried_until_shutdown_and_a_refusal_is_not() {
        let kafka = crate::config::load_str(
            "[kafka]\nbrokers = \"127.0.0.1:9\"\n[kafka.properties]\n\"socket.connection.setup.timeout.ms\" = \"1000\"\n",
            "test",
            std::iter::empty(),
        )
        .unwrap()
        .settings;
        let shutdown = CancellationToken::new();
        let stopper = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            stopper.cancel();
        });
        let started = std::time::Instant::now();
        let outcome = ensure_topics_until_created(&kafka.kafka, &kafka.topics, &shutdown).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "returned before shutdown"
        );
        assert!(refused_for_good(RDKafkaErrorCode::InvalidReplicationFactor));
        assert!(!refused_for_good(RDKafkaErrorCode::RequestTimedOut));
        assert!(!refused_for_good(RDKafkaErrorCode::NotController));
    }
}
