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

/// What one phase's replies came to.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub count: u64,
    pub duplicates: u64,
    pub latency: Summary,
    pub last_at: Option<Instant>,
}

#[derive(Default)]
struct PhaseState {
    tag: u32,
    seen: Vec<bool>,
    count: u64,
    duplicates: u64,
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
}
