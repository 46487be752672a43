//! Test-side Kafka clients.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", super::brokers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()
        .expect("test producer")
}

pub async fn create_topic(name: &str, partitions: i32) {
    create_topic_at(super::brokers(), name, partitions).await
}

/// [`create_topic`] on another broker than the shared one.
pub async fn create_topic_at(brokers: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let res = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap();
    for r in res {
        if let Err((t, e)) = r {
            assert_eq!(
                e,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "creating {t}"
            );
        }
    }
}

/// An SE computer record for `guid` (Windows, not compromised), observed and stamped at `at`.
pub fn clean_computer_record(guid: &str, at: i64) -> Out {
    Out::new(format!(
        r#"{{"connector_guid":"{guid}","operating_system":"Windows 10","is_compromised":false}}"#
    ))
    .key(guid)
    .header(trustgate::topic::HEADER_KIND, "computer")
    .header(
        trustgate::topic::HEADER_OBSERVED_AT,
        trustgate::time::format_millis(at),
    )
    .at(at)
}

/// One record to publish.
#[derive(Clone, Debug, Default)]
pub struct Out {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp: Option<i64>,
    pub partition: Option<i32>,
}

impl Out {
    pub fn new(value: impl Into<Vec<u8>>) -> Out {
        Out {
            value: value.into(),
            ..Default::default()
        }
    }
    pub fn key(mut self, key: &str) -> Out {
        self.key = Some(key.as_bytes().to_vec());
        self
    }
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Out {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn at(mut self, ms: i64) -> Out {
        self.timestamp = Some(ms);
        self
    }
}

/// Publishes and waits for the broker's acknowledgement.
pub async fn publish(producer: &FutureProducer, topic: &str, out: &Out) -> (i32, i64) {
    let mut headers = OwnedHeaders::new();
    for (k, v) in &out.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_slice()),
        });
    }
    let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
        .payload(&out.value[..])
        .headers(headers);
    if let Some(k) = &out.key {
        rec = rec.key(&k[..]);
    }
    if let Some(ts) = out.timestamp {
        rec = rec.timestamp(ts);
    }
    if let Some(p) = out.partition {
        rec = rec.partition(p);
    }
    let delivery = producer
        .send(rec, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("publish");
    (delivery.partition, delivery.offset)
}

/// A consumer outside any group, assigned every partition of `topic` from its beginning
/// (waiting up to `metadata_timeout` for the topic's metadata).
pub fn reader_from_beginning(
    brokers: &str,
    topic: &str,
    metadata_timeout: Duration,
) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", super::unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), metadata_timeout)
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer
}

/// Reads every record of `topic` from the beginning until `count` arrived or `timeout` passed.
pub fn read_topic(topic: &str, count: usize, timeout: Duration) -> Vec<OwnedMessage> {
    read_topic_at(super::brokers(), topic, count, timeout)
}

/// [`read_topic`] on another broker than the shared one.
pub fn read_topic_at(
    brokers: &str,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let consumer = reader_from_beginning(brokers, topic, Duration::from_secs(10));
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(m.detach());
        }
    }
    out
}

pub fn header<'a>(msg: &'a OwnedMessage, name: &str) -> Option<&'a [u8]> {
    msg.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

pub fn header_str(msg: &OwnedMessage, name: &str) -> Option<String> {
    header(msg, name).map(|v| String::from_utf8_lossy(v).into_owned())
}
