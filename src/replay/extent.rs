//! The events topic's extent when a replay starts: its partitions, where each one's history
//! begins (low watermark) and ends (high watermark).

use crate::config::KafkaSettings;
use crate::kafka::{client_config, Role};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long the broker gets to answer each metadata or watermark request.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// One partition's offsets when the replay started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionExtent {
    /// The first offset still held: above 0 once retention or compaction deleted records.
    pub low: i64,
    /// The offset the next record will get.
    pub high: i64,
}

/// Reading the extent failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtentError {
    /// The broker does not know the topic (or it has no partitions).
    #[error("the events topic {0} does not exist on the broker")]
    NoTopic(String),
    /// The broker did not answer, or refused.
    #[error("reading the events topic {topic}: {source}")]
    Kafka {
        /// The events topic.
        topic: String,
        /// What librdkafka said.
        #[source]
        source: rdkafka::error::KafkaError,
    },
}

/// Every partition of `topic` with its watermarks, asked of the broker now.
pub fn read(
    kafka: &KafkaSettings,
    topic: &str,
) -> Result<BTreeMap<i32, PartitionExtent>, ExtentError> {
    let kafka_error = |source| ExtentError::Kafka {
        topic: topic.to_owned(),
        source,
    };
    let consumer: BaseConsumer = client_config(kafka, Role::Ingest)
        .create()
        .map_err(kafka_error)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), BROKER_TIMEOUT)
        .map_err(kafka_error)?;
    let partitions = crate::kafka::partition_ids(&metadata, topic);
    if partitions.is_empty() {
        return Err(ExtentError::NoTopic(topic.to_owned()));
    }
    let mut extent = BTreeMap::new();
    for p in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, BROKER_TIMEOUT)
            .map_err(kafka_error)?;
        extent.insert(p, PartitionExtent { low, high });
    }
    Ok(extent)
}
