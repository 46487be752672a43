//! Publishes records read from stdin to a Kafka topic, for `scripts/bench-investigation`
//! (kcat's librdkafka does not speak to tansu 0.6; this one, the crate's, does).
//!
//! Usage: `fill_topic BROKERS TOPIC < lines`, one record a line: `KEY<TAB>VALUE` or
//! `KEY<TAB>VALUE<TAB>KIND` (KIND becomes the `trustgate-kind` header, with
//! `trustgate-source: poll`; without it trustgate infers the kind from the value).
//! Prints the number of records handed to the producer (all flushed before it exits; ingest's
//! applied count is what the script checks).

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::types::RDKafkaErrorCode;
use std::io::BufRead;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(brokers), Some(topic)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: fill_topic BROKERS TOPIC < KEY<TAB>VALUE[<TAB>KIND] lines");
    };
    let producer: BaseProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    let mut sent = 0u64;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut parts = line.splitn(3, '\t');
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            anyhow::bail!("not KEY<TAB>VALUE: {line:?}");
        };
        let headers = parts.next().map(|kind| {
            OwnedHeaders::new()
                .insert(Header {
                    key: trustgate::topic::HEADER_KIND,
                    value: Some(kind),
                })
                .insert(Header {
                    key: trustgate::topic::HEADER_SOURCE,
                    value: Some("poll"),
                })
        });
        loop {
            let mut record = BaseRecord::to(&topic).key(key).payload(value);
            if let Some(h) = &headers {
                record = record.headers(h.clone());
            }
            match producer.send(record) {
                Ok(()) => break,
                // The local queue is full: let deliveries drain it.
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(120))?;
    println!("{sent}");
    Ok(())
}
