//! Shared fixtures for the criterion benches: synthetic devices, a sled store holding many of
//! them (built once per bench process), request bodies and resident-memory readings.
//!
//! `TRUSTGATE_BENCH_DEVICES` scales the store (default 1,000,000) and
//! `TRUSTGATE_BENCH_CACHE_BYTES` sets sled's cache (default [`DEFAULT_CACHE_BYTES`]: the
//! issue asks for it to be set explicitly, sled's own default is 1 GiB). Building a million
//! devices takes minutes on two cores, so `TRUSTGATE_BENCH_STORE=DIR` keeps the store in `DIR`
//! and later runs with the same device count open it instead of building it again (which
//! also shows the resident memory of a process that only opened the store, like a restart).
//! `TRUSTGATE_BENCH_HOT_DEVICES` narrows lookups to that many devices (see [`hot_devices`]).
//! Run as a test (`cargo test --benches`, without `--bench`) the store holds 1,000 devices so
//! that checking the benches compile and run stays quick.

#![allow(dead_code)] // each bench binary uses its own subset

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The binary's allocator (`src/bin/trustgate/main.rs`): the benches measure what runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;
use trustgate::fold::{CompromiseEvent, DeviceState, EventKey, Observation, Stamped};
use trustgate::store::{ChunkUpdate, Store, DEFAULT_CACHE_BYTES};

/// Devices written per `Store::apply`: ingest's largest chunk.
const CHUNK: u64 = 2_000;
/// Record time of every synthetic fact (2026-01-01T00:00:00Z).
pub const AT: i64 = 1_767_225_600_000;

pub fn device_count() -> u64 {
    if !std::env::args().any(|a| a == "--bench") {
        return 1_000;
    }
    env_u64("TRUSTGATE_BENCH_DEVICES").unwrap_or(1_000_000)
}

fn cache_bytes() -> u64 {
    env_u64("TRUSTGATE_BENCH_CACHE_BYTES").unwrap_or(DEFAULT_CACHE_BYTES)
}

fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    Some(
        raw.replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={raw:?} is not a number")),
    )
}

pub fn guid(i: u64) -> String {
    format!(
        "{:08x}-7d1c-4e2a-9b3f-{:012x}",
        i.wrapping_mul(2_654_435_761) as u32,
        i
    )
}

/// The short name a request would send; the store holds it with a domain.
pub fn hostname(i: u64) -> String {
    format!("fin-lt-{i:07}")
}

pub fn mac(i: u64) -> String {
    format!("02{:010x}", i)
}

/// A realistic device: Windows, two MACs, a processor id; every 50th compromised by its
/// inventory flag and every 100th with an open detection.
pub fn device(i: u64) -> DeviceState {
    let stamped = |value: String| Some(Stamped { at: AT, value });
    let mut d = DeviceState::new(&guid(i));
    d.hostname = stamped(format!("{}.corp.example.com", hostname(i)));
    d.macs = Some(Stamped {
        at: AT,
        value: vec![mac(i), format!("06{:010x}", i)],
    });
    d.windows_processor_id = stamped(format!("{:016x}", i.wrapping_mul(0x9e37_79b9)));
    d.operating_system = stamped("Windows 10, SP 0.0".to_owned());
    d.last_seen = Some(AT);
    d.observation = Some(Observation {
        at: AT,
        compromised: i.is_multiple_of(50),
    });
    if i % 100 == 1 {
        d.events.insert(
            EventKey::Id {
                id: 6_411_425_813_945_647_000 + i,
                event_type_id: 1_090_519_054,
            },
            CompromiseEvent {
                event_type_id: 1_090_519_054,
                detection_id: Some(format!("{}", 6_411_425_813_945_647_105u64 + i)),
                date: Some(AT),
                first_seen: AT + 1_000,
            },
        );
    }
    d.newest_record_at = Some(AT + 1_000);
    d
}

/// A sled store holding [`device_count`] devices, built once per process.
pub struct Fixture {
    /// The temporary directory when no `TRUSTGATE_BENCH_STORE` was given.
    _dir: Option<tempfile::TempDir>,
    pub store: Store,
    pub devices: u64,
    pub cache_bytes: u64,
    /// Whether the store was opened from an earlier run rather than built.
    pub reused: bool,
    pub build_secs: f64,
    pub rss_before_build_kib: Option<u64>,
    pub rss_after_build_kib: Option<u64>,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build)
}

fn build() -> Fixture {
    let devices = device_count();
    let cache_bytes = cache_bytes();
    let (dir, kept) = match std::env::var_os("TRUSTGATE_BENCH_STORE") {
        Some(path) => (None, std::path::PathBuf::from(path)),
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("trustgate-bench-store")
                .tempdir()
                .expect("temp dir");
            let path = tmp.path().to_owned();
            (Some(tmp), path)
        }
    };
    let marker = kept.join(format!("built-{devices}"));
    let rss_before_build_kib = vm_rss_kib();
    let started = Instant::now();
    // Opening rebuilds the decision index from every stored device: for a kept store this is
    // the restart cost.
    let store = Store::open(&kept.join("store"), cache_bytes).expect("open store");
    let reused = marker.exists();
    if !reused {
        fill(&store, devices);
        std::fs::write(&marker, b"").expect("marker");
    }
    let build_secs = started.elapsed().as_secs_f64();
    let fixture = Fixture {
        _dir: dir,
        store,
        devices,
        cache_bytes,
        reused,
        build_secs,
        rss_before_build_kib,
        rss_after_build_kib: vm_rss_kib(),
    };
    eprintln!(
        "fixture: {} devices {} in {:.1} s ({:.0} devices/s), sled cache {} MiB, VmRSS {} -> {} MiB",
        devices,
        if fixture.reused { "opened" } else { "built" },
        build_secs,
        devices as f64 / build_secs,
        cache_bytes >> 20,
        mib(fixture.rss_before_build_kib),
        mib(fixture.rss_after_build_kib),
    );
    fixture
}

/// Writes `devices` devices in chunks, as ingest would, then makes them durable.
fn fill(store: &Store, devices: u64) {
    let mut next = 0;
    while next < devices {
        let end = (next + CHUNK).min(devices);
        let update = ChunkUpdate {
            devices: (next..end)
                .map(|i| {
                    let d = device(i);
                    (d.connector_guid.clone(), (None, d))
                })
                .collect(),
            offsets: BTreeMap::from([(("bench.events".to_owned(), 0), end as i64)]),
            liveness: BTreeMap::from([("bench".to_owned(), AT)]),
            last_records: BTreeMap::new(),
            record_refs: BTreeMap::new(),
        };
        store.apply(&update).expect("apply chunk");
        next = end;
    }
    store.flush_blocking().expect("flush");
}

/// Resident memory of this process, from `/proc/self/status`.
pub fn vm_rss_kib() -> Option<u64> {
    proc_status_kib("VmRSS:")
}

/// Peak resident memory of this process so far (`VmHWM`).
pub fn vm_hwm_kib() -> Option<u64> {
    proc_status_kib("VmHWM:")
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.0}", k as f64 / 1024.0))
}

/// How many of the devices lookups touch: `TRUSTGATE_BENCH_HOT_DEVICES` (default all of them).
/// Uniform over a million devices is the worst case for sled's cache; real sign-ins
/// concentrate on the devices in use, and a smaller hot set shows the cache-resident cost.
pub fn hot_devices(devices: u64) -> u64 {
    env_u64("TRUSTGATE_BENCH_HOT_DEVICES")
        .unwrap_or(devices)
        .clamp(1, devices)
}

/// Pseudo-random device indices, fixed per run, spread uniformly over the hot set (see
/// [`hot_devices`]) instead of hitting one hot page.
pub fn sample_indices(count: usize, devices: u64) -> Vec<u64> {
    let devices = hot_devices(devices);
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..count)
        .map(|_| {
            // xorshift64*: fast and good enough to scatter lookups.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d) % devices
        })
        .collect()
}

/// Which identifier a request carries.
#[derive(Debug, Clone, Copy)]
pub enum By {
    Guid,
    Mac,
    Hostname,
}

impl By {
    pub const ALL: [By; 3] = [By::Guid, By::Mac, By::Hostname];

    pub fn name(self) -> &'static str {
        match self {
            By::Guid => "guid",
            By::Mac => "mac",
            By::Hostname => "hostname",
        }
    }
}

/// A decision request body for device `i`, as an auth system would send it.
pub fn request_body(i: u64, by: By) -> Vec<u8> {
    let id = match by {
        By::Guid => format!(r#""connector_guid":"{}""#, guid(i).to_uppercase()),
        By::Mac => format!(
            r#""mac_addresses":["{}"]"#,
            mac(i)
                .as_bytes()
                .chunks(2)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join(":")
        ),
        By::Hostname => format!(r#""hostname":"{}""#, hostname(i).to_uppercase()),
    };
    format!(
        r#"{{"request_id":"req-{i}","application":"vpn","user":"user{i}@example.com","device":{{"trusted":true,"os":"windows",{id}}}}}"#
    )
    .into_bytes()
}
