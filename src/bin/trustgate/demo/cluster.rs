//! The demo's broker: librdkafka's in-process mock cluster. It does not answer CreateTopics, so
//! topics are created through its own API (and `[topics] create` is off).

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use trustgate::config::TopicSettings;

pub struct Cluster {
    mock: MockCluster<'static, DefaultProducerContext>,
    pub bootstrap: String,
}

pub const REPLY_TOPIC: &str = "demo.auth.replies";

pub fn start() -> anyhow::Result<Cluster> {
    let mock = MockCluster::new(1)?;
    let bootstrap = mock.bootstrap_servers();
    Ok(Cluster { mock, bootstrap })
}

impl Cluster {
    pub fn create_topics(&self, topics: &TopicSettings) -> anyhow::Result<()> {
        for name in [
            &topics.events,
            &topics.requests,
            &topics.responses,
            &topics.dlq,
        ] {
            self.mock.create_topic(name, topics.partitions, 1)?;
        }
        self.mock.create_topic(REPLY_TOPIC, 1, 1)?;
        Ok(())
    }
}
