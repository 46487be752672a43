//! Writing audit records: the decision paths hand each decision to an [`AuditSink`] (a bounded
//! queue, `try_send`: never a wait), and one [`AuditWriter`] task turns them into records and
//! hands those to the producer, counting acknowledgements and failures as they come.
//!
//! Why a queue and a task rather than producing in the decision path: building the record
//! (serialising request, response, policy and state) and waiting out a full producer queue
//! must not be paid by the requester. When the writer falls `QUEUE` records behind, further
//! records are dropped and counted: the audit is best-effort by design, the decision is not.

use super::record::{encode, policy_views, AuditSource};
use crate::decision::DecisionResponse;
use crate::kafka;
use crate::kafka::SharedProducer;
use crate::policy::Policies;
use crate::telemetry::metrics;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Decisions queued for the writer, at most; more are dropped (and counted).
const QUEUE: usize = 10_000;

/// How long the writer waits, once its queue closed, for the records it produced to be
/// acknowledged (the producer's flush at shutdown then gets its own budget).
const DRAIN: Duration = Duration::from_secs(5);

/// How long after shutdown the writer still takes records (the decision paths drain their
/// last decisions meanwhile) if its queue is not closed first; with `DRAIN` after it, well
/// inside the instance's 20 s shutdown budget.
const LAST_RECORDS: Duration = Duration::from_secs(8);

/// One decision to audit, as the decision path handed it over.
struct Entry {
    source: AuditSource,
    request: Vec<u8>,
    response: DecisionResponse,
}

/// Where the decision paths hand their decisions. Cloned into each path; a disabled sink
/// (`[audit] enabled = false`) takes nothing.
#[derive(Clone)]
pub struct AuditSink {
    tx: Option<mpsc::Sender<Entry>>,
    /// Set while records are being dropped, so that a full queue is logged once per episode
    /// rather than once per decision.
    dropping: Arc<AtomicBool>,
}

impl AuditSink {
    /// A sink that audits nothing.
    pub fn disabled() -> AuditSink {
        AuditSink {
            tx: None,
            dropping: Arc::default(),
        }
    }

    /// Queues one decision's audit record without waiting; a full queue drops it (counted,
    /// logged) and never holds the decision back.
    pub fn record(&self, source: AuditSource, request: &[u8], response: &DecisionResponse) {
        let Some(tx) = &self.tx else { return };
        let entry = Entry {
            source,
            request: request.to_vec(),
            response: response.clone(),
        };
        match tx.try_send(entry) {
            Ok(()) => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    tracing::info!("Audit queue has room again.");
                }
            }
            Err(mpsc::error::TrySendError::Full(entry)) => {
                metrics::audit_failed("queue_full", 1);
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(request_id = %entry.response.request_id,
                        "Audit queue is full; audit records are dropped until it has room \
                         (decisions are answered regardless).");
                }
            }
            Err(mpsc::error::TrySendError::Closed(entry)) => {
                metrics::audit_failed("closed", 1);
                tracing::warn!(request_id = %entry.response.request_id,
                    "Audit writer has stopped; audit record dropped.");
            }
        }
    }
}

/// The task that produces queued audit records to the audit topic. Runs until every
/// [`AuditSink`] clone is dropped and the queue is empty.
pub struct AuditWriter {
    rx: mpsc::Receiver<Entry>,
    producer: SharedProducer,
    topic: String,
    policies: HashMap<String, Value>,
}

/// What a writer did, for a one-shot command to report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AuditSummary {
    /// Records acknowledged by the broker.
    pub written: u64,
    /// Records that were not (not queued by the producer, or their delivery failed).
    pub failed: u64,
    /// Records still unacknowledged when the writer stopped waiting.
    pub unconfirmed: u64,
}

/// The writer's counts, and whether writes are failing now: an outage (a missing topic, a
/// broker down) is logged once when it starts and once when it ends, not once per decision.
#[derive(Default)]
struct Tally {
    summary: AuditSummary,
    failing: bool,
}

/// A sink and its writer for `topic` (the writer is `None`, and the sink takes nothing, when
/// `enabled` is false).
pub fn channel(
    enabled: bool,
    producer: SharedProducer,
    topic: &str,
    policies: &Policies,
) -> (AuditSink, Option<AuditWriter>) {
    if !enabled {
        return (AuditSink::disabled(), None);
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    let writer = AuditWriter {
        rx,
        producer,
        topic: topic.to_owned(),
        policies: policy_views(policies),
    };
    let sink = AuditSink {
        tx: Some(tx),
        dropping: Arc::default(),
    };
    (sink, Some(writer))
}

impl AuditWriter {
    /// Produces every queued record until the queue closes (every sink dropped) or
    /// `LAST_RECORDS` after `shutdown`, then waits (at most `DRAIN`) for the outstanding
    /// acknowledgements.
    pub async fn run(mut self, shutdown: CancellationToken) -> AuditSummary {
        let mut tally = Tally::default();
        let mut pending = FuturesUnordered::new();
        let last_records = async {
            shutdown.cancelled().await;
            tokio::time::sleep(LAST_RECORDS).await;
        };
        tokio::pin!(last_records);
        loop {
            tokio::select! {
                _ = &mut last_records => {
                    self.rx.close();
                    if !self.rx.is_empty() {
                        metrics::audit_failed("closed", self.rx.len() as u64);
                        tracing::warn!(queued = self.rx.len(),
                            "Audit writer stopping at the shutdown deadline; queued records are not written.");
                    }
                    break;
                }
                entry = self.rx.recv() => match entry {
                    Some(entry) => {
                        if let Some(delivery) = self.produce(&entry, &mut tally).await {
                            pending.push(delivery);
                        }
                    }
                    None => break,
                },
                Some(outcome) = pending.next(), if !pending.is_empty() => {
                    settle(outcome, &mut tally);
                }
            }
        }
        let drained = tokio::time::timeout(DRAIN, async {
            while let Some(outcome) = pending.next().await {
                settle(outcome, &mut tally);
            }
        })
        .await;
        if drained.is_err() {
            tally.summary.unconfirmed = pending.len() as u64;
            tracing::warn!(
                unconfirmed = pending.len(),
                "Audit records still unacknowledged at shutdown."
            );
        }
        tally.summary
    }

    /// Builds one record and hands it to the producer (waiting only while the producer's own
    /// queue is full: the sink's queue absorbs that, not the decision).
    async fn produce(&self, entry: &Entry, tally: &mut Tally) -> Option<DeliveryFuture> {
        let (key, value) = encode(
            entry.source,
            &entry.request,
            &entry.response,
            &self.policies,
        );
        // Stamped with the decision's time, so that a reader can seek to `--since` by
        // timestamp.
        let record = FutureRecord::to(&self.topic)
            .key(key.as_bytes())
            .payload(&value[..])
            .timestamp(entry.response.decided_millis());
        match kafka::enqueue(&self.producer.get(), record).await {
            Ok(delivery) => Some(delivery),
            Err(e) => {
                failed(tally, &e.to_string());
                None
            }
        }
    }
}

/// Counts one acknowledgement or failure (`E`: the producer dropped the delivery unsettled).
fn settle<E>(outcome: Result<OwnedDeliveryResult, E>, tally: &mut Tally) {
    match outcome {
        Ok(Ok(_)) => {
            tally.summary.written += 1;
            metrics::audit_written();
            if std::mem::take(&mut tally.failing) {
                tracing::info!("Audit records are written again.");
            }
        }
        Ok(Err((e, _))) => failed(tally, &e.to_string()),
        Err(_) => failed(tally, "the producer dropped the delivery"),
    }
}

/// One record not written: counted, and logged when it starts an outage.
fn failed(tally: &mut Tally, error: &str) {
    tally.summary.failed += 1;
    metrics::audit_failed("delivery", 1);
    if !std::mem::replace(&mut tally.failing, true) {
        tracing::warn!(
            error,
            "Audit records are not being written (counted in trustgate_audit_failures_total; \
             decisions are answered regardless)."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_sink_takes_nothing_and_a_full_queue_never_blocks() {
        let producer = SharedProducer::create(
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:9")
                .clone(),
        )
        .unwrap();
        let policies = Policies {
            global: crate::policy::Policy {
                name: "global".into(),
                require_trusted: true,
                block_compromised: true,
                unknown_device: crate::policy::UnknownDevice::Allow,
                stale_after: Duration::from_secs(900),
                on_stale: crate::policy::OnStale::LastKnown,
                mode: crate::policy::PolicyMode::Enforce,
            },
            by_application: HashMap::new(),
        };
        let (sink, writer) = channel(false, producer.clone(), "t", &policies);
        assert!(writer.is_none());
        assert!(sink.tx.is_none());

        let (sink, writer) = channel(true, producer, "t", &policies);
        let writer = writer.unwrap();
        let response = DecisionResponse::new(
            "r".into(),
            "global".into(),
            crate::policy::Decision::invalid("x"),
            0,
        );
        // Nobody drains the queue: the records past its bound are dropped, and none waits.
        for _ in 0..QUEUE + 5 {
            sink.record(AuditSource::Http, b"{}", &response);
        }
        assert_eq!(writer.rx.len(), QUEUE);
        assert!(sink.dropping.load(Ordering::Relaxed), "the drop is noticed");
    }
}
