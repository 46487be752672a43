//! The process's one producer, replaced when librdkafka declares it fatally failed.
//!
//! An idempotent producer that meets a fatal error (librdkafka's `ERR__FATAL`: e.g. a broker
//! that forgot the producer's sequence numbers across a restart and answers its retries with an
//! unexpected error) fails every record after it, for good. Measured on tansu 0.6: an outside
//! idempotent client lost 2,075 of 3,000 records that way across a broker restart. Every path
//! that writes (replies, dead letters, the events publisher of the poller, webhook and stream
//! consumer, the audit) holds a [`SharedProducer`], takes the current producer for each send,
//! and calls [`SharedProducer::recover`] when a send failed: a fatally failed producer is then
//! replaced by a fresh one (new producer id) built from the same configuration, and the caller's
//! retry goes through it. Records the failed producer still held fail to their senders, who
//! retry them as they retry any failed delivery.

use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::ClientConfig;
use std::sync::{Arc, Mutex};

/// A cheap-to-clone handle on the current producer (see the module header).
#[derive(Clone)]
pub struct SharedProducer {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    current: Mutex<FutureProducer>,
}

impl SharedProducer {
    /// Builds the producer from `config`, kept to build its replacements. Does not connect.
    pub fn create(config: ClientConfig) -> rdkafka::error::KafkaResult<SharedProducer> {
        let producer = config.create()?;
        Ok(SharedProducer {
            inner: Arc::new(Inner {
                config,
                current: Mutex::new(producer),
            }),
        })
    }

    /// The producer to send through now.
    pub fn get(&self) -> FutureProducer {
        crate::locks::lock(&self.inner.current).clone()
    }

    /// Called after a send or a delivery failed. When the current producer is in librdkafka's
    /// fatal state, replaces it with a new one from the same configuration and returns `true`
    /// (as it does when another caller already replaced it); `false` when the producer is
    /// healthy (the failure was the broker's or the record's, and retrying the same producer is
    /// right) or a replacement could not be built.
    pub fn recover(&self) -> bool {
        if self.get().client().fatal_error().is_none() {
            return false;
        }
        let mut current = crate::locks::lock(&self.inner.current);
        let Some((code, reason)) = current.client().fatal_error() else {
            return true;
        };
        match self.inner.config.create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::warn!(code = ?code, reason = %reason,
                    "The producer failed fatally; replaced it with a new one (records it held are produced again by their senders).");
                crate::telemetry::metrics::producer_recreated();
                *current = fresh;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "The producer failed fatally and a new one cannot be built.");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::FutureRecord;
    use std::time::Duration;

    async fn send(producer: &SharedProducer, topic: &str) -> Result<(), String> {
        producer
            .get()
            .send(
                FutureRecord::to(topic).key("k").payload("v"),
                Duration::from_secs(5),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e.to_string())
    }

    /// A producer in librdkafka's fatal state fails every record; `recover` replaces it and
    /// the retry is delivered. A healthy producer is left alone.
    #[tokio::test]
    async fn a_fatally_failed_producer_is_replaced_and_the_retry_delivered() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "5000");
        let producer = SharedProducer::create(config).unwrap();
        send(&producer, "t")
            .await
            .expect("a healthy producer delivers");
        assert!(!producer.recover(), "a healthy producer is not replaced");

        let failed = producer.get();
        let reason = std::ffi::CString::new("injected by the test").unwrap();
        // SAFETY: a live client handle and a NUL-terminated reason; librdkafka's test hook
        // only raises the fatal error on that client.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                failed.client().native_ptr(),
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
        assert!(failed.client().fatal_error().is_some());
        assert!(
            send(&producer, "t").await.is_err(),
            "a fatally failed producer refuses records"
        );

        assert!(producer.recover(), "the fatal producer is replaced");
        assert!(producer.get().client().fatal_error().is_none());
        send(&producer, "t")
            .await
            .expect("the retry goes through the new producer");
        assert!(!producer.recover(), "the new producer is healthy");
    }
}
