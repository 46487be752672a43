//! The reply side of the load: a consumer on the bench's own reply topic that matches each
//! reply to its request by `kafka_correlationId` and records the round trip.
//!
//! The correlation id is 16 bytes (Spring sends 16 too): phase tag, sequence number and the
//! send time in nanoseconds since the run's epoch. Carrying the send time in the id means the
//! two sides share no map; the sequence number detects duplicates (the worker is
//! at-least-once) and replies left over from an earlier phase are told apart by the tag.

use super::latency::{Latencies, Summary};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use trustgate::decision::reply::HEADER_CORRELATION_ID;
use trustgate::locks;

/// What a request carries back in `kafka_correlationId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Correlation {
    pub tag: u32,
    pub seq: u32,
    /// Nanoseconds since the run's epoch when the request was handed to the producer.
    pub sent_ns: u64,
}

impl Correlation {
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&self.tag.to_be_bytes());
        out[4..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..].copy_from_slice(&self.sent_ns.to_be_bytes());
        out
    }

    pub fn decode(raw: &[u8]) -> Option<Correlation> {
        let raw: &[u8; 16] = raw.try_into().ok()?;
        Some(Correlation {
            tag: u32::from_be_bytes(raw[..4].try_into().ok()?),
            seq: u32::from_be_bytes(raw[4..8].try_into().ok()?),
            sent_ns: u64::from_be_bytes(raw[8..].try_into().ok()?),
        })
    }
}

/// What the replies said: a bench of a decision worker is only a bench if its replies are
/// real decisions, not `not_ready` (or misses, when the requests should all name devices).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Outcomes {
    /// Decisions on a device the store knows.
    pub allow: u64,
    pub deny: u64,
    /// `reason: not_ready`: the worker had no full state yet.
    pub not_ready: u64,
    /// `reason: not_in_secure_endpoint`: the named device is not in the store.
    pub unknown_device: u64,
    /// Anything else: other reasons (stale, store unavailable, invalid request…) or a body
    /// that is no decision at all (the echo's).
    pub other: u64,
}

impl Outcomes {
    /// Sorts one reply body. A byte search rather than a parse: it runs on the reply thread
    /// for every reply of every phase, the floor's included, and must not slow it down.
    /// The worker's replies are serde's compact JSON, so the fields appear exactly so.
    pub fn count(&mut self, body: &[u8]) {
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        if has(br#""reason":"not_ready""#) {
            self.not_ready += 1;
        } else if has(br#""reason":"not_in_secure_endpoint""#) {
            self.unknown_device += 1;
        } else if has(br#""decision":"allow""#) {
            self.allow += 1;
        } else if has(br#""decision":"deny""#) {
            self.deny += 1;
        } else {
            self.other += 1;
        }
    }

    pub fn add(&mut self, o: &Outcomes) {
        self.allow += o.allow;
        self.deny += o.deny;
        self.not_ready += o.not_ready;
        self.unknown_device += o.unknown_device;
        self.other += o.other;
    }
}

/// What one phase's replies came to.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub count: u64,
    pub duplicates: u64,
    pub outcomes: Outcomes,
    pub latency: Summary,
    pub last_at: Option<Instant>,
}

#[derive(Default)]
struct PhaseState {
    tag: u32,
    seen: Vec<bool>,
    count: u64,
    duplicates: u64,
    outcomes: Outcomes,
    latencies: Latencies,
    last_at: Option<Instant>,
}

struct Shared {
    stop: AtomicBool,
    state: Mutex<PhaseState>,
    changed: Condvar,
}

/// A running reply consumer; one per reply topic for the whole run.
pub struct Collector {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Collector {
    /// Starts consuming `topic` (partition 0, which the bench created) from its current end.
    pub fn start(config: ClientConfig, topic: &str, epoch: Instant) -> anyhow::Result<Collector> {
        let consumer: BaseConsumer = config.create()?;
        let (_, high) = consumer.fetch_watermarks(topic, 0, Duration::from_secs(10))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(high))?;
        consumer.assign(&tpl)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            state: Mutex::new(PhaseState::default()),
            changed: Condvar::new(),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("bench-replies".into())
            .spawn(move || consume(consumer, thread_shared, epoch))?;
        Ok(Collector {
            shared,
            thread: Some(thread),
        })
    }

    /// Starts counting replies tagged `tag`; `capacity` bounds the sequence numbers.
    pub fn begin(&self, tag: u32, capacity: usize) {
        *self.lock() = PhaseState {
            tag,
            seen: vec![false; capacity],
            ..PhaseState::default()
        };
    }

    /// Waits until at least `count` replies arrived or `deadline` passed; returns the count.
    pub fn wait_for(&self, count: u64, deadline: Instant) -> u64 {
        let mut state = self.lock();
        while state.count < count {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = locks::wait_timeout(&self.shared.changed, state, deadline - now).0;
        }
        state.count
    }

    pub fn finish(&self) -> Received {
        let state = self.lock();
        Received {
            count: state.count,
            duplicates: state.duplicates,
            outcomes: state.outcomes,
            latency: state.latencies.summary(),
            last_at: state.last_at,
        }
    }

    fn lock(&self) -> MutexGuard<'_, PhaseState> {
        locks::lock(&self.shared.state)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn consume(consumer: BaseConsumer, shared: Arc<Shared>, epoch: Instant) {
    while !shared.stop.load(Ordering::Relaxed) {
        let msg = match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "Bench reply consumer error.");
                continue;
            }
            None => continue,
        };
        let arrived = Instant::now();
        let Some(corr) = msg
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == HEADER_CORRELATION_ID))
            .and_then(|h| h.value)
            .and_then(Correlation::decode)
        else {
            continue;
        };
        let mut state = locks::lock(&shared.state);
        if corr.tag != state.tag {
            continue;
        }
        match state.seen.get_mut(corr.seq as usize) {
            Some(seen) if !*seen => *seen = true,
            Some(_) => {
                state.duplicates += 1;
                continue;
            }
            None => continue,
        }
        let sent = epoch + Duration::from_nanos(corr.sent_ns);
        state
            .latencies
            .record(arrived.saturating_duration_since(sent));
        state.count += 1;
        state.outcomes.count(msg.payload().unwrap_or_default());
        state.last_at = Some(arrived);
        drop(state);
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_round_trip_in_16_bytes() {
        let c = Correlation {
            tag: 3,
            seq: 70_000,
            sent_ns: 12_345_678_901,
        };
        assert_eq!(Correlation::decode(&c.encode()), Some(c));
        assert_eq!(Correlation::decode(b"short"), None);
    }

    /// Replies are sorted by what they decided; a not-ready deny is never counted as a deny.
    #[test]
    fn reply_bodies_are_sorted_by_outcome() {
        let mut o = Outcomes::default();
        for body in [
            &br#"{"request_id":"a","decision":"allow","reason":"trusted_not_compromised"}"#[..],
            br#"{"request_id":"b","decision":"deny","reason":"compromised"}"#,
            br#"{"request_id":"c","decision":"deny","reason":"not_ready"}"#,
            br#"{"request_id":"d","decision":"deny","reason":"not_in_secure_endpoint"}"#,
            br#"{"request_id":"e","application":"echo"}"#,
        ] {
            o.count(body);
        }
        assert_eq!(
            o,
            Outcomes {
                allow: 1,
                deny: 1,
                not_ready: 1,
                unknown_device: 1,
                other: 1
            }
        );
    }
}
