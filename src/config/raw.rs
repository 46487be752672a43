//! The configuration file as written: serde structs with defaults, unknown keys rejected.
//!
//! These types deliberately derive no `Debug`: they hold secrets as plain strings until
//! [`super::Settings`] wraps them. Every key is documented in `trustgate.example.toml`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) kafka: RawKafka,
    pub(super) topics: RawTopics,
    pub(super) store: RawStore,
    pub(super) admin: RawAdmin,
    pub(super) compromise: RawCompromise,
    pub(super) policy: RawPolicies,
    pub(super) poller: RawPoller,
    pub(super) webhook: RawWebhook,
    pub(super) audit: RawAudit,
    pub(super) amqp: RawAmqp,
    pub(super) log: RawLog,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawKafka {
    pub(super) brokers: String,
    pub(super) group_id: String,
    pub(super) group_instance_id: Option<String>,
    pub(super) client_id: String,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub(super) security_protocol: String,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub(super) sasl_mechanism: Option<String>,
    pub(super) sasl_username: Option<String>,
    pub(super) sasl_password: Option<String>,
    pub(super) ssl_ca_location: Option<String>,
    pub(super) ssl_certificate_location: Option<String>,
    pub(super) ssl_key_location: Option<String>,
    pub(super) ssl_key_password: Option<String>,
    pub(super) session_timeout: String,
    /// Producer batching delay; 0 favours latency.
    pub(super) linger_ms: u32,
    /// How long a consumer fetch may wait for data on an idle partition.
    pub(super) fetch_wait_max_ms: u32,
    /// Any other librdkafka property, applied last.
    pub(super) properties: BTreeMap<String, String>,
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
pub(super) struct RawTopics {
    pub(super) events: String,
    pub(super) requests: String,
    pub(super) responses: String,
    pub(super) dlq: String,
    /// Every decision, as an audit record.
    pub(super) audit: String,
    /// Partitions for topics trustgate creates.
    pub(super) partitions: i32,
    /// Replication factor for topics trustgate creates.
    pub(super) replication_factor: i32,
    /// Create missing topics at start (off where an operator or the platform owns topics).
    pub(super) create: bool,
}

impl Default for RawTopics {
    fn default() -> Self {
        RawTopics {
            events: "secure-endpoint.events".into(),
            requests: "auth.decision.requests".into(),
            responses: "auth.decision.responses".into(),
            dlq: "trustgate.dlq".into(),
            audit: "trustgate.decisions".into(),
            partitions: 3,
            replication_factor: 1,
            create: true,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStore {
    pub(super) path: String,
    pub(super) cache_bytes: u64,
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
pub(super) struct RawAdmin {
    pub(super) listen: String,
    /// When set, `/v1/*` and `/metrics` require `Authorization: Bearer <token>`.
    pub(super) token: Option<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:9464".into(),
            token: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCompromise {
    pub(super) resolution_grace: String,
    pub(super) event_types: Vec<u64>,
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
pub(super) struct RawPolicies {
    pub(super) global: RawGlobalPolicy,
    pub(super) custom: Vec<RawCustomPolicy>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawGlobalPolicy {
    pub(super) require_trusted: bool,
    pub(super) block_compromised: bool,
    pub(super) unknown_device: String,
    pub(super) stale_after: String,
    pub(super) on_stale: String,
    /// `enforce` or `report_only`.
    pub(super) mode: String,
}

impl Default for RawGlobalPolicy {
    fn default() -> Self {
        RawGlobalPolicy {
            require_trusted: true,
            block_compromised: true,
            unknown_device: "allow".into(),
            stale_after: "15m".into(),
            on_stale: "last_known".into(),
            mode: "enforce".into(),
        }
    }
}

/// A custom policy; settings it leaves out are the global policy's.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCustomPolicy {
    pub(super) name: String,
    pub(super) applications: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) require_trusted: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) block_compromised: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) unknown_device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) stale_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) on_stale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) mode: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPoller {
    pub(super) enabled: bool,
    /// The event poll; off when the Event Stream (`[amqp]`) brings the events.
    pub(super) events: bool,
    /// `nam`, `eu` or `apjc`; ignored when `base_url` is set.
    pub(super) region: String,
    pub(super) base_url: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) api_key: Option<String>,
    pub(super) events_interval: String,
    pub(super) events_overlap: String,
    pub(super) inventory_interval: String,
    pub(super) initial_lookback: String,
    pub(super) requests_per_hour: u32,
    pub(super) burst: u32,
    pub(super) reserve: u32,
    /// Unset: a directory beside the store (`settings::default_poller_state_path`).
    pub(super) state_path: Option<String>,
    /// Optional `event_type[]` filter; empty means every type.
    pub(super) event_types: Vec<u64>,
    pub(super) page_size: u32,
    pub(super) connect_timeout: String,
    pub(super) request_timeout: String,
}

impl Default for RawPoller {
    fn default() -> Self {
        RawPoller {
            enabled: false,
            events: true,
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
pub(super) struct RawWebhook {
    pub(super) enabled: bool,
    pub(super) listen: String,
    /// Standard Webhooks secrets, `whsec_<base64>`; several for rotation.
    pub(super) secrets: Vec<String>,
    /// Optional bearer token for bridges that cannot sign; off when unset.
    pub(super) bearer_token: Option<String>,
    pub(super) tolerance: String,
    pub(super) max_body_bytes: usize,
    /// How long to wait for Kafka to acknowledge a delivery before answering 503.
    pub(super) publish_timeout: String,
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
pub(super) struct RawAudit {
    /// Write every decision to `[topics] audit`.
    pub(super) enabled: bool,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit { enabled: true }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAmqp {
    pub(super) enabled: bool,
    /// `amqps://user:password@host:port/vhost`; a secret (it may carry the password).
    pub(super) url: Option<String>,
    /// The stream's `amqp_credentials` as `trustgate stream create` wrote them.
    pub(super) credentials_path: Option<String>,
    /// Overrides the credentials file's `queue_name`.
    pub(super) queue: Option<String>,
    pub(super) prefetch: u16,
    /// A PEM file of extra CA certificates for `amqps://` (a private broker's CA).
    pub(super) ca_file: Option<String>,
    pub(super) heartbeat_interval: String,
    /// How long a message's Kafka write may wait for room in the producer's queue.
    pub(super) publish_timeout: String,
}

impl Default for RawAmqp {
    fn default() -> Self {
        RawAmqp {
            enabled: false,
            url: None,
            credentials_path: None,
            queue: None,
            prefetch: 500,
            ca_file: None,
            heartbeat_interval: "30s".into(),
            publish_timeout: "30s".into(),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    /// `text` or `json`.
    pub(super) format: String,
    /// A tracing filter, e.g. `info` or `trustgate=debug,rdkafka=warn`.
    pub(super) level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
            level: "info".into(),
        }
    }
}
