//! The load generator: decision requests at a fixed rate, or as fast as a bounded in-flight
//! window allows, each carrying `kafka_replyTopic` and a `kafka_correlationId` (see
//! [`super::collect`]).
//!
//! Both modes are bounded in count and time. Latency is measured from the moment a request is
//! built for the producer (a wait for room in a full local queue counts); at a fixed rate the generator never waits for replies, so a slow
//! responder shows up as latency, not as a lower offered rate.

use super::collect::{Collector, Correlation, Outcomes};
use super::latency::Summary;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::{Duration, Instant};
use trustgate::decision::reply::{HEADER_CORRELATION_ID, HEADER_REPLY_TOPIC};
use trustgate::kafka::enqueue_blocking;

/// How long replies may still arrive after the last request was sent.
const DRAIN: Duration = Duration::from_secs(10);

/// Where requests go, where their replies come back, and which devices they name.
#[derive(Debug, Clone)]
pub struct Target {
    pub requests: String,
    pub replies: String,
    pub naming: Naming,
}

/// Which devices the requests name, and how (the store the worker decides on determines
/// which naming makes every request a hit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// The criterion benches' fixture (`benches/common`): 1M devices `fin-lt-NNNNNNN`, MAC
    /// `02:` + the device number in hex. Against any other store every lookup misses.
    Fixture,
    /// The catch-up bench's fleet ([`super::catchup`]): `devices` SE computers
    /// `fleet-{i}.corp.example.com`, MAC `02:00:xx:xx:xx:01`; requests spread uniformly
    /// (pseudo-randomly) over all of them.
    Fleet { devices: u64 },
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
    /// What the replies said.
    pub outcomes: Outcomes,
    /// From the first send to the last reply.
    pub elapsed: Duration,
    pub throughput_rps: f64,
    pub latency: Summary,
}

/// Devices the fixture naming spreads requests over, the whole key space.
const FIXTURE_DEVICES: u64 = 1_000_000;

/// SplitMix64's finaliser: a bijection of u64 whose outputs are spread evenly, so
/// `mix(x) % n` names the `n` fleet devices uniformly whatever `n` is (a fixed stride would
/// cycle over a fraction of them whenever it shares a factor with `n`).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A request body shaped like an auth system's: a device by MAC and hostname, so that a
/// decision reads two indexes and, when they match, the device record.
fn body(naming: Naming, tag: u32, seq: u32) -> String {
    match naming {
        Naming::Fixture => fixture_body(tag, seq),
        Naming::Fleet { devices } => {
            let i = mix((u64::from(tag) << 32) | u64::from(seq)) % devices.max(1);
            format!(
                r#"{{"request_id":"bench-{tag}-{seq}","application":"trustgate-bench","user":"bench-user-{i}","device":{{"trusted":true,"os":"windows","mac_addresses":["02:00:{:02x}:{:02x}:{:02x}:01"],"hostname":"fleet-{i}.corp.example.com"}}}}"#,
                (i >> 16) & 0xff,
                (i >> 8) & 0xff,
                i & 0xff,
            )
        }
    }
}

/// The fixture's names (`benches/common`), so a worker whose store that fixture built finds
/// every device.
fn fixture_body(tag: u32, seq: u32) -> String {
    let device = (u64::from(seq) * 7_919) % FIXTURE_DEVICES;
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
        outcomes: got.outcomes,
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
    let payload = body(target.naming, tag, seq);
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
        let req = trustgate::decision::request::parse(body(Naming::Fixture, 1, 12_345).as_bytes())
            .unwrap();
        assert_eq!(req.request_id, "bench-1-12345");
        // Device 12345 * 7919 mod 1M = 760055, named as benches/common names it.
        assert_eq!(req.subject.ids.hostname.as_deref(), Some("fin-lt-0760055"));
        assert_eq!(req.subject.ids.macs, vec!["0200000b98f7".to_string()]);
    }

    /// Every fleet request names, by MAC and hostname, one computer of the topic the catch-up
    /// bench fills (so every decision is a hit on the caught-up store), and the requests
    /// reach every device of the fleet about equally often.
    #[test]
    fn fleet_requests_name_existing_fleet_devices_uniformly() {
        use std::collections::BTreeMap;
        for devices in [1u64, 7, 1_000, 7_919] {
            // (hostname, MAC) -> device number, from the computer records of the fleet topic.
            let mut fleet = BTreeMap::new();
            for n in 0..devices {
                let (key, kind, value) = super::super::catchup::record(n, devices, 0);
                assert_eq!(kind, trustgate::topic::Kind::Computer);
                let doc: serde_json::Value = serde_json::from_str(&value).unwrap();
                let host = doc["hostname"].as_str().unwrap().to_ascii_lowercase();
                let mac = doc["network_addresses"][0]["mac"]
                    .as_str()
                    .unwrap()
                    .replace(':', "")
                    .to_ascii_lowercase();
                fleet.insert((host, mac), key);
            }
            assert_eq!(fleet.len() as u64, devices, "fleet names are distinct");
            let mut hits: BTreeMap<String, u64> = BTreeMap::new();
            let requests = devices * 50;
            for seq in 0..requests {
                let (tag, seq) = ((seq % 3) as u32, seq as u32);
                let raw = body(Naming::Fleet { devices }, tag, seq);
                let req = trustgate::decision::request::parse(raw.as_bytes()).unwrap();
                let ids = &req.subject.ids;
                assert_eq!(ids.macs.len(), 1);
                let name = (ids.hostname.clone().unwrap(), ids.macs[0].clone());
                let guid = fleet
                    .get(&name)
                    .unwrap_or_else(|| panic!("{name:?} is no device of a fleet of {devices}"));
                *hits.entry(guid.clone()).or_default() += 1;
            }
            assert_eq!(hits.len() as u64, devices, "every device is named");
            let (least, most) = (*hits.values().min().unwrap(), *hits.values().max().unwrap());
            // 50 requests per device on average; a uniform spread stays well within 2x.
            assert!(
                least >= 15 && most <= 100,
                "uneven spread over {devices}: {least}..{most}"
            );
        }
    }
}
