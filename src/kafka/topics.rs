//! Creating missing topics at start.

use crate::config::{KafkaSettings, TopicSettings};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use std::time::Duration;

/// Creates the events, requests, responses, dead-letter and audit topics when they are missing.
pub async fn ensure_topics(kafka: &KafkaSettings, topics: &TopicSettings) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        super::client_config(kafka, super::Role::Admin).create()?;
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
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(name) => {
                tracing::info!(topic = %name, partitions = topics.partitions, "Created topic.")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}
