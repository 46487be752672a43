//! The configuration file as written: serde structs with defaults, unknown keys rejected.
//!
//! These types deliberately derive no `Debug`: they hold secrets as plain strings until
//! [`super::Settings`] wraps them. Every key is documented in `trustgate.example.toml`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub kafka: RawKafka,
    pub topics: RawTopics,
    pub store: RawStore,
    pub admin: RawAdmin,
    pub compromise: RawCompromise,
    pub policy: RawPolicies,
    pub poller: RawPoller,
    pub webhook: RawWebhook,
    pub log: RawLog,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawKafka {
    pub brokers: String,
    pub group_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: String,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<String>,
    pub ssl_ca_location: Option<String>,
    pub ssl_certificate_location: Option<String>,
    pub ssl_key_location: Option<String>,
    pub ssl_key_password: Option<String>,
    pub session_timeout: String,
    /// Producer batching delay; 0 favours latency.
    pub linger_ms: u32,
    /// How long a consumer fetch may wait for data on an idle partition.
    pub fetch_wait_max_ms: u32,
    /// Any other librdkafka property, applied last.
    pub properties: BTreeMap<String, String>,
}

impl Default for RawKafka {
    fn default() -> Self {
        RawKafka {
            brokers: "127.0.0.1:9092".into(),
            group_id: "trustgate-deciders".into(),
            group_instance_id: None,
            client_id: "trustgate".into(),
            security_protocol: "plaintext".into(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            session_timeout: "10s".into(),
            linger_ms: 0,
            fetch_wait_max_ms: 10,
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTopics {
    pub events: String,
    pub requests: String,
    pub responses: String,
    pub dlq: String,
    /// Partitions for topics trustgate creates.
    pub partitions: i32,
    /// Replication factor for topics trustgate creates.
    pub replication_factor: i32,
    /// Create missing topics at start (off where an operator or the platform owns topics).
    pub create: bool,
}

impl Default for RawTopics {
    fn default() -> Self {
        RawTopics {
            events: "secure-endpoint.events".into(),
            requests: "auth.decision.requests".into(),
            responses: "auth.decision.responses".into(),
            dlq: "trustgate.dlq".into(),
            partitions: 3,
            replication_factor: 1,
            create: true,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub path: String,
    pub cache_bytes: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            path: "./trustgate-data".into(),
            cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub listen: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCompromise {
    pub resolution_grace: String,
    pub event_types: Vec<u64>,
}

impl Default for RawCompromise {
    fn default() -> Self {
        RawCompromise {
            resolution_grace: "10m".into(),
            event_types: crate::fold::DEFAULT_COMPROMISE_EVENT_TYPES.to_vec(),
        }
    }
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawPolicies {
    pub global: RawGlobalPolicy,
    pub custom: Vec<RawCustomPolicy>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGlobalPolicy {
    pub require_trusted: bool,
    pub block_compromised: bool,
    pub unknown_device: String,
    pub stale_after: String,
    pub on_stale: String,
}

impl Default for RawGlobalPolicy {
    fn default() -> Self {
        RawGlobalPolicy {
            require_trusted: true,
            block_compromised: true,
            unknown_device: "allow".into(),
            stale_after: "15m".into(),
            on_stale: "last_known".into(),
        }
    }
}

/// A custom policy; settings it leaves out are the global policy's.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCustomPolicy {
    pub name: String,
    pub applications: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_trusted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_compromised: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_stale: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPoller {
    pub enabled: bool,
    /// `nam`, `eu` or `apjc`; ignored when `base_url` is set.
    pub region: String,
    pub base_url: Option<String>,
    pub client_id: Option<String>,
    pub api_key: Option<String>,
    pub events_interval: String,
    pub events_overlap: String,
    pub inventory_interval: String,
    pub initial_lookback: String,
    pub requests_per_hour: u32,
    pub burst: u32,
    pub reserve: u32,
    /// Unset: a directory beside the store (`settings::default_poller_state_path`).
    pub state_path: Option<String>,
    /// Optional `event_type[]` filter; empty means every type.
    pub event_types: Vec<u64>,
    pub page_size: u32,
    pub connect_timeout: String,
    pub request_timeout: String,
}

impl Default for RawPoller {
    fn default() -> Self {
        RawPoller {
            enabled: false,
            region: "nam".into(),
            base_url: None,
            client_id: None,
            api_key: None,
            events_interval: "30s".into(),
            events_overlap: "10m".into(),
            inventory_interval: "1h".into(),
            initial_lookback: "24h".into(),
            requests_per_hour: 2400,
            burst: 10,
            reserve: 100,
            state_path: None,
            event_types: Vec::new(),
            page_size: 500,
            connect_timeout: "10s".into(),
            request_timeout: "30s".into(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebhook {
    pub enabled: bool,
    pub listen: String,
    /// Standard Webhooks secrets, `whsec_<base64>`; several for rotation.
    pub secrets: Vec<String>,
    /// Optional bearer token for bridges that cannot sign; off when unset.
    pub bearer_token: Option<String>,
    pub tolerance: String,
    pub max_body_bytes: usize,
    /// How long to wait for Kafka to acknowledge a delivery before answering 503.
    pub publish_timeout: String,
}

impl Default for RawWebhook {
    fn default() -> Self {
        RawWebhook {
            enabled: false,
            listen: "127.0.0.1:8088".into(),
            secrets: Vec::new(),
            bearer_token: None,
            tolerance: "5m".into(),
            max_body_bytes: 1024 * 1024,
            publish_timeout: "10s".into(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info` or `trustgate=debug,rdkafka=warn`.
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
            level: "info".into(),
        }
    }
}
