//! The process's one producer, replaced when librdkafka declares it fatally failed.
//!
//! An idempotent producer that meets a fatal error (librdkafka's `ERR__FATAL`: e.g. a broker
//! that forgot the producer's sequence numbers across a restart and answers its retries with an
//! unexpected error) fails every record after it, for good. Measured on tansu 0.6: an outside
//! idempotent client lost 2,075 of 3,000 records that way across a broker restart. Every path
//! that writes (replies, dead letters, the events publisher of the poller, webhook and stream
//! consumer, the audit) holds a [`SharedProducer`], takes the current producer for each send,
//! and calls [`SharedProducer::recover`] when a send failed: a fatally failed producer, or one
//! whose producer id or epoch the broker refuses (`UNKNOWN_SERVER_ERROR`, tansu 0.6's answer to
//! a sequence it lost; `PRODUCER_FENCED` or `INVALID_PRODUCER_EPOCH`), is then replaced by a
//! fresh one (new producer id) built from the same configuration, and the caller's retry goes
//! through it. Records the failed producer still held fail to their senders, who retry them as
//! they retry any failed delivery.
//!
//! The epoch case: when records time out while in flight (a broker frozen past
//! `message.timeout.ms`), librdkafka's idempotent producer bumps its own epoch, as KIP-360
//! allows. tansu 0.6's memory storage answers every later record of that producer
//! `PRODUCER_FENCED`, and librdkafka treats that, outside transactions, as the record's own
//! failure: the producer stays as it is and fails every record after. Measured (e2e
//! `a_broker_pause_past_the_message_timeout_leaves_no_request_unanswered`, before this was
//! handled): 19,081 of 20,000 requests never answered after a 6 s pause.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::ClientConfig;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The least time between two replacements for `UNKNOWN_SERVER_ERROR` (a fatal producer is
/// replaced whenever it is met).
pub const MIN_REPLACEMENT_GAP: Duration = Duration::from_secs(5);

/// A cheap-to-clone handle on the current producer (see the module header).
#[derive(Clone)]
pub struct SharedProducer {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    current: Mutex<FutureProducer>,
    /// When the producer was last replaced.
    replaced_at: Mutex<Option<Instant>>,
}

impl SharedProducer {
    /// Builds the producer from `config`, kept to build its replacements. Does not connect.
    pub fn create(config: ClientConfig) -> rdkafka::error::KafkaResult<SharedProducer> {
        let producer = config.create()?;
        Ok(SharedProducer {
            inner: Arc::new(Inner {
                config,
                current: Mutex::new(producer),
                replaced_at: Mutex::new(None),
            }),
        })
    }

    /// The producer to send through now.
    pub fn get(&self) -> FutureProducer {
        crate::locks::lock(&self.inner.current).clone()
    }

    /// Called after a send or a delivery failed with `error`. Replaces the current producer
    /// with a new one from the same configuration, and returns `true`, when it is in
    /// librdkafka's fatal state, or when the broker refused the producer itself
    /// ([`refuses_the_producer`]: it would refuse every later record of that producer; a new
    /// producer gets a new producer id). At most one replacement per [`MIN_REPLACEMENT_GAP`]
    /// for the latter, so a broker that answers every request so does not churn producers.
    /// `false` when the producer is kept: the failure was the broker being away or the
    /// record's own, and retrying through it is right.
    pub fn recover(&self, error: &KafkaError) -> bool {
        let fatal = self.get().client().fatal_error().is_some();
        if !fatal && !refuses_the_producer(error) {
            return false;
        }
        let mut current = crate::locks::lock(&self.inner.current);
        let mut replaced_at = crate::locks::lock(&self.inner.replaced_at);
        let fatal_now = current.client().fatal_error();
        if fatal_now.is_none() && replaced_at.is_some_and(|at| at.elapsed() < MIN_REPLACEMENT_GAP) {
            // Replaced a moment ago (by this caller or another): retry through that one.
            return fatal;
        }
        match self.inner.config.create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::warn!(error = %error, fatal = ?fatal_now,
                    "Replaced the producer after a failure it would repeat (records it held are produced again by their senders).");
                crate::telemetry::metrics::producer_recreated();
                *current = fresh;
                *replaced_at = Some(Instant::now());
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "The producer cannot be replaced.");
                false
            }
        }
    }
}

/// Whether the broker answered `error` to this producer's id or epoch rather than to the
/// record: it answers every later record of the producer the same way, so only a new producer
/// (a new id) gets through. `UNKNOWN_SERVER_ERROR` is tansu 0.6's answer to an idempotent
/// producer's sequence that it lost across a restart; `PRODUCER_FENCED` its memory storage's
/// answer to an epoch the producer bumped itself (see the module header); `INVALID_PRODUCER_EPOCH`
/// the answer (Kafka's, tansu's) to an epoch the broker does not hold for that producer. Neither
/// of the latter two is fatal in librdkafka for a producer outside transactions.
fn refuses_the_producer(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::Unknown
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    )
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
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(
            !producer.recover(&timed_out),
            "a healthy producer is not replaced for a time-out"
        );

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

        assert!(
            producer.recover(&timed_out),
            "the fatal producer is replaced"
        );
        assert!(producer.get().client().fatal_error().is_none());
        send(&producer, "t")
            .await
            .expect("the retry goes through the new producer");
        assert!(!producer.recover(&timed_out), "the new producer is healthy");
    }

    /// An answer that refuses the producer itself (`UNKNOWN_SERVER_ERROR`, `PRODUCER_FENCED`,
    /// `INVALID_PRODUCER_EPOCH`) replaces a healthy producer, at most once per gap; an answer
    /// about the record (a time-out, a missing topic, a duplicate) does not.
    #[test]
    fn an_answer_refusing_the_producer_replaces_it_once_per_gap() {
        for code in [
            RDKafkaErrorCode::Unknown,
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::InvalidProducerEpoch,
        ] {
            let producer = SharedProducer::create(
                ClientConfig::new()
                    .set("bootstrap.servers", "127.0.0.1:9")
                    .clone(),
            )
            .unwrap();
            let refused = KafkaError::MessageProduction(code);
            let first = producer.get();
            assert!(producer.recover(&refused), "{code:?}");
            let second = producer.get();
            assert!(
                !std::ptr::eq(first.client().native_ptr(), second.client().native_ptr()),
                "{code:?}"
            );
            assert!(
                !producer.recover(&refused),
                "{code:?}: not again within the gap"
            );
            assert!(std::ptr::eq(
                second.client().native_ptr(),
                producer.get().client().native_ptr()
            ));
        }
        let producer = SharedProducer::create(
            ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:9")
                .clone(),
        )
        .unwrap();
        let kept = producer.get();
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::DuplicateSequenceNumber,
            RDKafkaErrorCode::BrokerTransportFailure,
        ] {
            assert!(
                !producer.recover(&KafkaError::MessageProduction(code)),
                "{code:?}"
            );
        }
        assert!(std::ptr::eq(
            kept.client().native_ptr(),
            producer.get().client().native_ptr()
        ));
    }
}
