//! Kafka client construction, topic administration and the producer's life.
//!
//! Every client is built from [`client_config`], which maps [`KafkaSettings`] to librdkafka
//! properties in one place: connection and security first, then the role's safety-relevant
//! keys, then the operator's `[kafka.properties]` overrides last. Topics are created in
//! `topics.rs`; starting, enqueueing on (queue-full waits) and flushing the producer live in
//! `producer.rs`.

mod producer;
mod shared;
mod topics;

pub use producer::{enqueue, enqueue_blocking, flush_producer, start_producer};
pub use shared::SharedProducer;
pub(crate) use topics::partition_ids;
pub use topics::{ensure_topics, ensure_topics_until_created, TopicSetupError};

use crate::config::KafkaSettings;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::ClientConfig;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

/// What a client is for; each role gets the settings its guarantees depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Writes to the events topic, the DLQ, and replies: idempotent, `acks=all`.
    Producer,
    /// Reads the events topic by assignment (no consumer group), offsets kept in sled.
    Ingest,
    /// Reads decision requests in the consumer group `[kafka] group_id`.
    Decider,
    /// Administers topics (creates them at start); needs no role-specific keys.
    Admin,
}

/// librdkafka configuration for a role.
pub fn client_config(settings: &KafkaSettings, role: Role) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &settings.brokers)
        .set("client.id", &settings.client_id)
        .set("security.protocol", &settings.security_protocol)
        .set("socket.nagle.disable", "true")
        .set_log_level(RDKafkaLogLevel::Warning);
    if let Some(mech) = &settings.sasl_mechanism {
        cfg.set("sasl.mechanisms", mech);
    }
    if let Some(user) = &settings.sasl_username {
        cfg.set("sasl.username", user);
    }
    if let Some(password) = &settings.sasl_password {
        cfg.set("sasl.password", password.expose_secret());
    }
    for (key, value) in [
        ("ssl.ca.location", &settings.ssl_ca_location),
        (
            "ssl.certificate.location",
            &settings.ssl_certificate_location,
        ),
        ("ssl.key.location", &settings.ssl_key_location),
    ] {
        if let Some(v) = value {
            cfg.set(key, v);
        }
    }
    if let Some(password) = &settings.ssl_key_password {
        cfg.set("ssl.key.password", password.expose_secret());
    }
    match role {
        Role::Producer => {
            cfg.set("enable.idempotence", "true")
                .set("acks", "all")
                // Topics are created at start (`ensure_topics`), never as a side effect of a
                // produce: a requester's `kafka_replyTopic` must not create topics, and a reply
                // topic that does not exist fails its delivery (then re-routed, see
                // `decision::pipeline`).
                .set("allow.auto.create.topics", "false")
                .set("linger.ms", settings.linger_ms.to_string())
                .set("message.timeout.ms", "30000");
        }
        Role::Ingest => {
            // Assignment only: the group id is required by librdkafka but no group is joined,
            // and offsets live in sled next to the state they produced.
            cfg.set("group.id", format!("{}-ingest", settings.group_id))
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
                // librdkafka prefetches up to 64 MiB by default: in a catch-up, where the broker
                // serves ~10× faster than ingest applies, that queue stays full and is resident
                // memory. A small queue holds only if it is refilled at once: past the
                // threshold librdkafka postpones the partition's next fetch by
                // `fetch.queue.backoff.ms`, 1 s by default, and a 1M-device catch-up with a
                // 16 MiB queue spent 6–8 s of its 29 s waiting on an empty queue (#11,
                // BENCHMARKS.md). Refilled within 10 ms, 8 MiB (~0.15 s of records at
                // ingest's rate) never runs dry.
                .set(
                    "queued.max.messages.kbytes",
                    INGEST_PREFETCH_KBYTES.to_string(),
                )
                .set(
                    "fetch.queue.backoff.ms",
                    INGEST_FETCH_QUEUE_BACKOFF_MS.to_string(),
                )
                .set("enable.partition.eof", "false");
        }
        Role::Decider => {
            // At-least-once: an offset is stored only after its reply was acknowledged, and the
            // background auto-commit commits stored offsets.
            cfg.set("group.id", &settings.group_id)
                .set("enable.auto.commit", "true")
                .set("auto.commit.interval.ms", "1000")
                .set("enable.auto.offset.store", "false")
                .set("auto.offset.reset", "earliest")
                .set(
                    "session.timeout.ms",
                    settings.session_timeout.as_millis().to_string(),
                )
                .set(
                    "heartbeat.interval.ms",
                    heartbeat_interval(settings.session_timeout)
                        .as_millis()
                        .to_string(),
                )
                .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
                .set("enable.partition.eof", "false");
            if let Some(instance) = &settings.group_instance_id {
                cfg.set("group.instance.id", instance);
            }
        }
        Role::Admin => {}
    }
    for (key, value) in &settings.properties {
        cfg.set(key, &value.value);
    }
    cfg
}

/// The ingest consumer's `queued.max.messages.kbytes` (see `client_config`); `[kafka.properties]`
/// can still set another.
const INGEST_PREFETCH_KBYTES: u32 = 8 * 1024;
/// The ingest consumer's `fetch.queue.backoff.ms` (see `client_config`); `[kafka.properties]`
/// can still set another.
const INGEST_FETCH_QUEUE_BACKOFF_MS: u32 = 10;

/// The decision worker's heartbeat interval: a tenth of the session timeout, at most librdkafka's
/// default 3 s.
///
/// A static member's first heartbeat must reach the coordinator within the session timeout of
/// its JoinGroup: tansu 0.6 holds a static member's JoinGroup and its SyncGroup 3 s each, does
/// not count either as contact, and drops a member whose last contact is older than the session
/// timeout before it counts the heartbeat. Measured with the default 3 s interval and a 6 s
/// session: a fresh worker answered none of 10 requests in 90 s (expired at each first
/// heartbeat, it rejoined forever). The default 10 s session passed, with little to spare.
fn heartbeat_interval(session_timeout: Duration) -> Duration {
    (session_timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(3))
}

/// The decision worker's `group.instance.id`: `[kafka] group_instance_id` when set, else one
/// derived from this host's name and a short hash of the store's canonical path.
///
/// Static membership is the default because a SIGKILLed and restarted dynamic member may never
/// get its partitions back (tansu 0.6 does not expire the vanished one) and costs a rebalance
/// everywhere else; a static member restarted with the same id takes its own place back. The
/// derived id is stable across restarts of one instance and distinct between instances: sled
/// locks its directory, so no two running processes share a store path.
pub(crate) fn group_instance_id(settings: &KafkaSettings, store: &Path) -> String {
    if let Some(id) = &settings.group_instance_id {
        return id.clone();
    }
    let path = std::fs::canonicalize(store).unwrap_or_else(|_| store.to_path_buf());
    derived_instance_id(&host_name(), &path)
}

fn derived_instance_id(host: &str, store: &Path) -> String {
    let digest = Sha256::digest(store.as_os_str().as_encoded_bytes());
    format!("trustgate-{host}-{}", hex::encode(&digest[..4]))
}

/// This host's name as the kernel knows it (`HOSTNAME` elsewhere); `localhost` if neither says.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    // group.instance.id allows only [a-zA-Z0-9._-]; anything else becomes '_'.
    let name: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_derived_instance_id_is_stable_and_differs_by_store() {
        let a = derived_instance_id("host-1", Path::new("/var/lib/trustgate/a"));
        assert_eq!(
            a,
            derived_instance_id("host-1", Path::new("/var/lib/trustgate/a"))
        );
        assert!(a.starts_with("trustgate-host-1-"), "{a}");
        assert_ne!(
            a,
            derived_instance_id("host-1", Path::new("/var/lib/trustgate/b"))
        );
        assert_ne!(
            a,
            derived_instance_id("host-2", Path::new("/var/lib/trustgate/a"))
        );
    }

    #[test]
    fn the_first_heartbeat_lands_well_within_the_session_timeout() {
        // tansu 0.6 holds a static member's join and sync 3 s each before any heartbeat counts.
        let broker_holds = Duration::from_secs(6);
        let session = Duration::from_secs(10);
        let interval = heartbeat_interval(session);
        assert!(broker_holds + interval * 2 < session, "{interval:?}");
        assert_eq!(
            heartbeat_interval(Duration::from_secs(45)),
            Duration::from_secs(3)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_millis(500)),
            Duration::from_millis(100)
        );
        let settings = crate::config::load_str("", "t", std::iter::empty())
            .unwrap()
            .settings
            .kafka;
        let config = client_config(&settings, Role::Decider);
        assert_eq!(
            config.get("heartbeat.interval.ms"),
            Some(
                heartbeat_interval(settings.session_timeout)
                    .as_millis()
                    .to_string()
                    .as_str()
            )
        );
    }

    #[test]
    fn an_explicit_instance_id_wins() {
        let mut settings = crate::config::load_str("", "t", std::iter::empty())
            .unwrap()
            .settings
            .kafka;
        settings.group_instance_id = Some("gate-7".into());
        assert_eq!(group_instance_id(&settings, Path::new("/x")), "gate-7");
        settings.group_instance_id = None;
        assert!(group_instance_id(&settings, Path::new("/x")).starts_with("trustgate-"));
    }
}
