//! Kafka client construction, topic administration and the producer's life.
//!
//! Every client is built from [`client_config`], which maps [`KafkaSettings`] to librdkafka
//! properties in one place: connection and security first, then the role's safety-relevant
//! keys, then the operator's `[kafka.properties]` overrides last. Topics are created in
//! `topics.rs`; starting, enqueueing on (queue-full waits) and flushing the producer live in
//! `producer.rs`.

mod producer;
mod topics;

pub use producer::{enqueue, enqueue_blocking, flush_producer, start_producer};
pub use topics::ensure_topics;

use crate::config::KafkaSettings;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::ClientConfig;
use secrecy::ExposeSecret;

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
