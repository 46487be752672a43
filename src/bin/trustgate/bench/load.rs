//! The load generator: decision requests at a fixed rate, or as fast as a bounded in-flight
//! window allows, each carrying `kafka_replyTopic` and a `kafka_correlationId` (see
//! [`super::collect`]).
//!
//! Both modes are bounded in count and time. Latency is measured from the moment a request is
//! built for the producer (a wait for room in a full local queue counts); at a fixed rate the generator never waits for replies, so a slow
//! responder shows up as latency, not as a lower offered rate.

use super::collect::{Collector, Correlation};
use super::latency::Summary;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::{Duration, Instant};
use trustgate::decision::reply::{HEADER_CORRELATION_ID, HEADER_REPLY_TOPIC};
use trustgate::kafka::enqueue_blocking;

/// How long replies may still arrive after the last request was sent.
const DRAIN: Duration = Duration::from_secs(10);

/// Where requests go and where their replies come back.
#[derive(Debug, Clone)]
pub struct Target {
    pub requests: String,
    pub replies: String,
}

#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// `rate` requests per second, evenly spaced.
    Fixed { rate: u32 },
    /// As fast as replies come back, with at most `window` requests unanswered.
    Max { window: u64 },
}

#[derive(Debug, Clone, Copy)]
pub struct PhaseSpec {
    /// Tells this phase's replies from any other's.
    pub tag: u32,
    pub mode: Mode,
    pub duration: Duration,
    /// Upper bound on requests, whatever the duration.
    pub max_requests: u64,
}

/// What one phase measured.
#[derive(Debug, Clone, Default)]
pub struct PhaseResult {
    pub sent: u64,
    pub received: u64,
    pub duplicates: u64,
    /// From the first send to the last reply.
    pub elapsed: Duration,
    pub throughput_rps: f64,
    pub latency: Summary,
}

/// Devices the requests name, spread over the whole key space.
const DEVICES: u64 = 1_000_000;

/// A request body shaped like an auth system's: a device by MAC and hostname, so that a
/// decision reads two indexes and, when they match, the device record. The names follow the
/// criterion benches' fixture (`benches/common`), so a worker whose store that fixture built
/// finds every device; against any other store the same lookups simply miss.
fn body(tag: u32, seq: u32) -> String {
    let device = (u64::from(seq) * 7_919) % DEVICES;
    let mac = format!("{:010x}", device);
    format!(
        r#"{{"request_id":"bench-{tag}-{seq}","application":"trustgate-bench","user":"bench-user-{device}","device":{{"trusted":true,"os":"windows","mac_addresses":["02:{}:{}:{}:{}:{}"],"hostname":"fin-lt-{device:07}"}}}}"#,
        &mac[0..2],
        &mac[2..4],
        &mac[4..6],
        &mac[6..8],
        &mac[8..10],
    )
}

/// Runs one phase to completion (blocking: call it off the async runtime).
pub fn run_phase(
    producer: &FutureProducer,
    collector: &Collector,
    target: &Target,
    spec: PhaseSpec,
    epoch: Instant,
) -> PhaseResult {
    let capacity = match spec.mode {
        Mode::Fixed { rate } => {
            (u64::from(rate) * spec.duration.as_secs().max(1)).min(spec.max_requests)
        }
        Mode::Max { .. } => spec.max_requests,
    }
    .min(u64::from(u32::MAX));
    collector.begin(spec.tag, capacity as usize);
    let started = Instant::now();
    let deadline = started + spec.duration;
    let mut sent = 0u64;
    while sent < capacity && Instant::now() < deadline {
        match spec.mode {
            Mode::Fixed { rate } => {
                let due = started + Duration::from_secs_f64(sent as f64 / f64::from(rate));
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            Mode::Max { window } => {
                if collector.wait_for(sent.saturating_sub(window - 1), deadline) + window <= sent {
                    break; // the window never opened again before the deadline
                }
            }
        }
        send(producer, target, spec.tag, sent as u32, epoch);
        sent += 1;
    }
    collector.wait_for(sent, Instant::now() + DRAIN);
    let got = collector.finish();
    let elapsed = got.last_at.map_or(Duration::ZERO, |last| {
        last.saturating_duration_since(started)
    });
    PhaseResult {
        sent,
        received: got.count,
        duplicates: got.duplicates,
        elapsed,
        throughput_rps: if elapsed.is_zero() {
            0.0
        } else {
            got.count as f64 / elapsed.as_secs_f64()
        },
        latency: got.latency,
    }
}

/// Hands one request to the producer without waiting for its acknowledgement.
fn send(producer: &FutureProducer, target: &Target, tag: u32, seq: u32, epoch: Instant) {
    let payload = body(tag, seq);
    let key = format!("bench-{seq}");
    let corr = Correlation {
        tag,
        seq,
        sent_ns: epoch.elapsed().as_nanos() as u64,
    }
    .encode();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: HEADER_REPLY_TOPIC,
            value: Some(target.replies.as_bytes()),
        })
        .insert(Header {
            key: HEADER_CORRELATION_ID,
            value: Some(&corr[..]),
        });
    let record = FutureRecord::to(&target.requests)
        .key(key.as_bytes())
        .payload(payload.as_bytes())
        .headers(headers);
    // The delivery report is not awaited: a request that is not delivered simply gets no
    // reply and is counted as lost.
    if let Err(e) = enqueue_blocking(producer, record) {
        tracing::warn!(error = %e, "Bench request could not be produced.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_are_valid_decision_requests() {
        let req = trustgate::decision::request::parse(body(1, 12_345).as_bytes()).unwrap();
        assert_eq!(req.request_id, "bench-1-12345");
        // Device 12345 * 7919 mod 1M = 760055, named as benches/common names it.
        assert_eq!(req.subject.ids.hostname.as_deref(), Some("fin-lt-0760055"));
        assert_eq!(req.subject.ids.macs, vec!["0200000b98f7".to_string()]);
    }
}
