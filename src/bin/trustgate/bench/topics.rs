//! The bench's own topics: created for the run, named after it, deleted afterwards.

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use trustgate::config::Settings;
use trustgate::kafka::{client_config, Role};

/// Topics the bench creates, each `trustgate-bench.<run>.<purpose>`.
#[derive(Debug, Clone)]
pub struct BenchTopics {
    pub run: String,
    /// Replies from the decision worker.
    pub replies: String,
    /// The echo responder's pair.
    pub echo_requests: String,
    pub echo_replies: String,
    /// The pre-filled events topic for the ingest measurement.
    pub events: String,
}

impl BenchTopics {
    /// Names for a new run (random, so runs never share topics).
    pub fn fresh() -> BenchTopics {
        let run = format!("trustgate-bench.{:08x}", rand::random::<u32>());
        BenchTopics {
            replies: format!("{run}.replies"),
            echo_requests: format!("{run}.echo-requests"),
            echo_replies: format!("{run}.echo-replies"),
            events: format!("{run}.events"),
            run,
        }
    }

    /// The topics the in-process instance of the ingest measurement creates for itself.
    /// (The catch-up measurement's child process also names its audit topic so.)
    fn ingest_instance_topics(&self) -> [String; 4] {
        [
            format!("{}.requests", self.events),
            format!("{}.responses", self.events),
            format!("{}.dlq", self.events),
            format!("{}.audit", self.events),
        ]
    }
}

fn admin(settings: &Settings) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    client_config(&settings.kafka, Role::Admin)
        .create()
        .context("creating the bench admin client")
}

/// Creates `(name, partitions)` topics; existing ones are fine.
pub async fn create(settings: &Settings, topics: &[(&str, i32)]) -> anyhow::Result<()> {
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| {
            NewTopic::new(
                name,
                *partitions,
                TopicReplication::Fixed(settings.topics.replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin(settings)?.create_topics(&new, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create bench topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Deletes every topic of the run; failures are logged, never fatal.
pub async fn delete_all(settings: &Settings, topics: &BenchTopics) {
    let mut names = vec![
        topics.replies.clone(),
        topics.echo_requests.clone(),
        topics.echo_replies.clone(),
        topics.events.clone(),
    ];
    names.extend(topics.ingest_instance_topics());
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let deleted = match admin(settings) {
        Ok(admin) => admin
            .delete_topics(&refs, &opts)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    match deleted {
        Ok(results) => {
            for (name, code) in results.into_iter().filter_map(Result::err) {
                if code != RDKafkaErrorCode::UnknownTopicOrPartition {
                    tracing::warn!(topic = %name, error = %code, "Cannot delete a bench topic.");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "Cannot delete the bench topics."),
    }
}

/// Settings for an in-process instance that must not touch the configured deployment: its
/// own events topic and store, its own request/response/dead-letter topics and consumer
/// group, an ephemeral admin port, and no sources.
pub fn unique_settings(settings: &Settings, events: &str, store: &Path) -> Settings {
    let mut s = settings.clone();
    s.topics.events = events.to_owned();
    s.topics.requests = format!("{events}.requests");
    s.topics.responses = format!("{events}.responses");
    s.topics.dlq = format!("{events}.dlq");
    s.kafka.group_id = format!("{events}-deciders");
    s.kafka.group_instance_id = None;
    s.store.path = store.to_owned();
    s.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    s.poller.enabled = false;
    s.webhook.enabled = false;
    s
}
