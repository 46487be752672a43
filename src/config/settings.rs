//! Typed, validated settings. Secrets are [`SecretString`]s: their `Debug` is redacted and
//! reading one takes an explicit `expose_secret()`.

use super::raw::*;
use super::ConfigError;
use crate::fold::FoldConfig;
use crate::policy::{OnStale, Policies, Policy, PolicyMode, UnknownDevice};
use secrecy::SecretString;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration, validated: built once by [`load`](super::load) or
/// [`load_str`](super::load_str) and handed down from `main`, so no component reads the file
/// or the environment itself.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How every Kafka client connects (`[kafka]`).
    pub kafka: KafkaSettings,
    /// The topics trustgate reads and writes (`[topics]`).
    pub topics: TopicSettings,
    /// Where device state is kept (`[store]`).
    pub store: StoreSettings,
    /// The admin HTTP listener (`[admin]`).
    pub admin: AdminSettings,
    /// The compromise rule: which event types compromise a device, and how long a resolution
    /// must hold (`[compromise]`).
    pub fold: FoldConfig,
    /// The global policy and the custom policies by application (`[policy]`).
    pub policies: Policies,
    /// The Secure Endpoint API poller (`[poller]`).
    pub poller: PollerSettings,
    /// The webhook listener (`[webhook]`).
    pub webhook: WebhookSettings,
    /// The decision audit (`[audit]`).
    pub audit: AuditSettings,
    /// The Secure Endpoint Event Stream consumer (`[amqp]`).
    pub amqp: AmqpSettings,
    /// Log format and level (`[log]`).
    pub log: LogSettings,
}

/// Connection, security and client settings shared by every Kafka client;
/// [`client_config`](crate::kafka::client_config) turns them into librdkafka properties.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `bootstrap.servers`: comma-separated `host:port` pairs.
    pub brokers: String,
    /// The decision workers' consumer group. Ingest joins no group; it only derives a
    /// `<group_id>-ingest` id from it because librdkafka requires one.
    pub group_id: String,
    /// The decision worker's static membership id (`group.instance.id`): a restarted worker gets
    /// its partitions back without a rebalance. Unset: derived per instance from the host name
    /// and the store path (`kafka::group_instance_id`); the worker is a static member either way.
    pub group_instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) security_protocol: String,
    pub(crate) sasl_mechanism: Option<String>,
    pub(crate) sasl_username: Option<String>,
    pub(crate) sasl_password: Option<SecretString>,
    pub(crate) ssl_ca_location: Option<String>,
    pub(crate) ssl_certificate_location: Option<String>,
    pub(crate) ssl_key_location: Option<String>,
    pub(crate) ssl_key_password: Option<SecretString>,
    pub(crate) session_timeout: Duration,
    pub(crate) linger_ms: u32,
    pub(crate) fetch_wait_max_ms: u32,
    pub(crate) properties: BTreeMap<String, KafkaProperty>,
}

/// A `[kafka.properties]` entry: a librdkafka property passed through as given. Its value
/// prints `[REDACTED]` when the property is secret-bearing (see `config::secrets`).
#[derive(Clone)]
pub(crate) struct KafkaProperty {
    key: String,
    pub(crate) value: String,
}

impl std::fmt::Debug for KafkaProperty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if super::secrets::is_secret_key(&self.key) {
            f.write_str("[REDACTED]")
        } else {
            write!(f, "{:?}", self.value)
        }
    }
}

/// The topics trustgate uses, and how it creates them when they are missing.
#[derive(Debug, Clone)]
pub struct TopicSettings {
    /// Secure Endpoint records from every source; ingest folds them into the store.
    pub events: String,
    /// Decision requests, read by the decision workers.
    pub requests: String,
    /// Replies to requests that name no `kafka_replyTopic`, or name one that is refused.
    pub responses: String,
    /// Dead letters: events records and requests that could not be used, with the reason.
    pub dlq: String,
    /// Every decision as an audit record (when `[audit] enabled`).
    pub audit: String,
    /// Partitions of the topics trustgate creates.
    pub partitions: i32,
    /// Replication factor of the topics trustgate creates.
    pub replication_factor: i32,
    pub(crate) create: bool,
}

impl TopicSettings {
    /// trustgate's own topics: never a valid reply destination (a reply on the audit topic
    /// would read as a decision trustgate made).
    pub(crate) fn is_own(&self, topic: &str) -> bool {
        topic == self.events || topic == self.requests || topic == self.dlq || topic == self.audit
    }
}

/// The sled store that holds device state.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The store's directory.
    pub path: PathBuf,
    /// sled's page cache, in bytes (at least 1 MiB).
    pub cache_bytes: u64,
}

/// The admin HTTP listener.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Where it binds.
    pub listen: SocketAddr,
    /// The bearer token `/v1/*` and `/metrics` require; `None` leaves them open, which
    /// configuration allows only on a loopback address.
    pub token: Option<SecretString>,
}

/// The Secure Endpoint API poller: where and as whom it asks, how often, and within which
/// request budget.
#[derive(Debug, Clone)]
pub struct PollerSettings {
    /// Whether `trustgate run` starts the poller (`trustgate poll` runs it regardless).
    pub enabled: bool,
    /// Whether the event poll runs (`[poller] events`); the inventory sweep always does.
    pub events: bool,
    pub(crate) base_url: String,
    pub(crate) client_id: Option<String>,
    pub(crate) api_key: Option<SecretString>,
    pub(crate) events_interval: Duration,
    pub(crate) events_overlap: Duration,
    pub(crate) inventory_interval: Duration,
    pub(crate) initial_lookback: Duration,
    pub(crate) requests_per_hour: u32,
    pub(crate) burst: u32,
    pub(crate) reserve: u32,
    pub(crate) state_path: PathBuf,
    pub(crate) event_types: Vec<u64>,
    pub(crate) page_size: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
}

/// The webhook listener: where it binds, the secrets it verifies against, and its limits.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Whether `trustgate run` starts the webhook listener.
    pub enabled: bool,
    pub(crate) listen: SocketAddr,
    pub(crate) secrets: Vec<SecretString>,
    pub(crate) bearer_token: Option<SecretString>,
    pub(crate) tolerance: Duration,
    pub(crate) max_body_bytes: usize,
    pub(crate) publish_timeout: Duration,
}

/// The decision audit.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Whether every decision is also written to `[topics] audit`.
    pub enabled: bool,
}

/// The Secure Endpoint Event Stream consumer (AMQP 0.9.1): where it connects, which queue it
/// drains, and how much it holds unacknowledged.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// Whether `trustgate run` starts the consumer (`trustgate stream consume` runs it
    /// regardless).
    pub enabled: bool,
    /// `[amqp] url`, when set: scheme, host, port and virtual host, and the user and password
    /// unless the credentials file gives them. A secret: it may carry the password.
    pub url: Option<SecretString>,
    /// Where `trustgate stream create` writes the stream's `amqp_credentials` and the consumer
    /// reads them.
    pub credentials_path: Option<PathBuf>,
    /// The queue to drain, when the credentials file's `queue_name` is not the one.
    pub queue: Option<String>,
    /// Unacknowledged deliveries the broker may send ahead (`basic.qos`).
    pub prefetch: u16,
    /// Extra CA certificates (PEM) trusted for `amqps://`, beside the public roots.
    pub ca_file: Option<PathBuf>,
    /// How often a heartbeat record is written while the consumer is attached.
    pub heartbeat_interval: Duration,
    /// How long a message's Kafka write may wait for room in the producer's local queue.
    pub publish_timeout: Duration,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Log output.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Text or JSON; the command line's `--log-format` overrides it.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `trustgate=debug,rdkafka=warn`; `RUST_LOG` overrides
    /// it.
    pub level: String,
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// Parses `"30s"`, `"10m"`, `"1h"`, `"1h 30m"`.
fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(format!(
            "{key} = {text:?}: {e} (use e.g. \"30s\", \"10m\", \"1h\")"
        ))
    })
}

fn secret(value: Option<String>) -> Option<SecretString> {
    value.filter(|v| !v.is_empty()).map(SecretString::from)
}

fn listen(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|e| invalid(format!("{key} = {text:?}: {e}")))
}

impl Settings {
    pub(super) fn from_raw(raw: RawConfig) -> Result<Settings, ConfigError> {
        let topics = topics(raw.topics)?;
        let policies = policies(raw.policy)?;
        let grace = duration(
            "compromise.resolution_grace",
            &raw.compromise.resolution_grace,
        )?;
        if raw.compromise.event_types.is_empty() {
            return Err(invalid(
                "compromise.event_types is empty: no detection could ever deny",
            ));
        }
        let store = StoreSettings {
            path: PathBuf::from(raw.store.path),
            cache_bytes: raw.store.cache_bytes.max(1024 * 1024),
        };
        let poller = poller(raw.poller, &store.path)?;
        Ok(Settings {
            kafka: kafka(raw.kafka)?,
            topics,
            store,
            admin: admin(raw.admin)?,
            fold: FoldConfig {
                compromise_event_types: raw.compromise.event_types.into_iter().collect(),
                resolution_grace: grace,
            },
            policies,
            poller,
            webhook: webhook(raw.webhook)?,
            audit: AuditSettings {
                enabled: raw.audit.enabled,
            },
            amqp: amqp(raw.amqp)?,
            log: LogSettings {
                format: match raw.log.format.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => {
                        return Err(invalid(format!(
                            "log.format = {other:?}: expected text or json"
                        )))
                    }
                },
                level: raw.log.level,
            },
        })
    }
}

/// The admin listener answers decisions and shows every device: reachable from other hosts, it
/// must ask for a token, so a non-loopback `listen` without one is refused rather than served.
fn admin(raw: RawAdmin) -> Result<AdminSettings, ConfigError> {
    let addr = listen("admin.listen", &raw.listen)?;
    let token = secret(raw.token);
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(invalid(format!(
            "admin.listen = \"{addr}\" is not a loopback address and admin.token is not set: \
             set admin.token (or TRUSTGATE_ADMIN__TOKEN), or listen on 127.0.0.1"
        )));
    }
    Ok(AdminSettings {
        listen: addr,
        token,
    })
}

fn kafka(raw: RawKafka) -> Result<KafkaSettings, ConfigError> {
    if raw.brokers.trim().is_empty() {
        return Err(invalid("kafka.brokers is empty"));
    }
    let protocol = raw.security_protocol.to_ascii_lowercase();
    if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&protocol.as_str()) {
        return Err(invalid(format!(
            "kafka.security_protocol = {:?}: expected plaintext, ssl, sasl_plaintext or sasl_ssl",
            raw.security_protocol
        )));
    }
    if protocol.starts_with("sasl") {
        let mech = raw.sasl_mechanism.as_deref().unwrap_or("");
        if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&mech) {
            return Err(invalid(format!(
                "kafka.sasl_mechanism = {mech:?}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
            )));
        }
        if raw.sasl_username.is_none() || raw.sasl_password.is_none() {
            return Err(invalid(
                "kafka.sasl_username and kafka.sasl_password are required with SASL",
            ));
        }
    }
    let group_instance_id = raw.group_instance_id.filter(|g| !g.is_empty());
    Ok(KafkaSettings {
        brokers: raw.brokers,
        group_id: raw.group_id,
        group_instance_id,
        client_id: raw.client_id,
        security_protocol: protocol,
        sasl_mechanism: raw.sasl_mechanism,
        sasl_username: raw.sasl_username,
        sasl_password: secret(raw.sasl_password),
        ssl_ca_location: raw.ssl_ca_location,
        ssl_certificate_location: raw.ssl_certificate_location,
        ssl_key_location: raw.ssl_key_location,
        ssl_key_password: secret(raw.ssl_key_password),
        session_timeout: duration("kafka.session_timeout", &raw.session_timeout)?,
        linger_ms: raw.linger_ms,
        fetch_wait_max_ms: raw.fetch_wait_max_ms,
        properties: raw
            .properties
            .into_iter()
            .map(|(key, value)| (key.clone(), KafkaProperty { key, value }))
            .collect(),
    })
}

fn topics(raw: RawTopics) -> Result<TopicSettings, ConfigError> {
    let names = [
        &raw.events,
        &raw.requests,
        &raw.responses,
        &raw.dlq,
        &raw.audit,
    ];
    if names.iter().any(|n| n.trim().is_empty()) {
        return Err(invalid("topic names must not be empty"));
    }
    for (i, a) in names.iter().enumerate() {
        if names[i + 1..].contains(a) {
            return Err(invalid(format!(
                "topic {a:?} is configured for two purposes"
            )));
        }
    }
    if raw.partitions < 1 {
        return Err(invalid("topics.partitions must be at least 1"));
    }
    Ok(TopicSettings {
        events: raw.events,
        requests: raw.requests,
        responses: raw.responses,
        dlq: raw.dlq,
        audit: raw.audit,
        partitions: raw.partitions,
        replication_factor: raw.replication_factor,
        create: raw.create,
    })
}

fn unknown_device(key: &str, text: &str) -> Result<UnknownDevice, ConfigError> {
    match text {
        "allow" => Ok(UnknownDevice::Allow),
        "deny" => Ok(UnknownDevice::Deny),
        other => Err(invalid(format!(
            "{key} = {other:?}: expected allow or deny"
        ))),
    }
}

fn on_stale(key: &str, text: &str) -> Result<OnStale, ConfigError> {
    match text {
        "last_known" => Ok(OnStale::LastKnown),
        "deny" => Ok(OnStale::Deny),
        other => Err(invalid(format!(
            "{key} = {other:?}: expected last_known or deny"
        ))),
    }
}

fn mode(key: &str, text: &str) -> Result<PolicyMode, ConfigError> {
    match text {
        "enforce" => Ok(PolicyMode::Enforce),
        "report_only" => Ok(PolicyMode::ReportOnly),
        other => Err(invalid(format!(
            "{key} = {other:?}: expected enforce or report_only"
        ))),
    }
}

fn policies(raw: RawPolicies) -> Result<Policies, ConfigError> {
    let g = raw.global;
    let global = Policy {
        name: "global".into(),
        require_trusted: g.require_trusted,
        block_compromised: g.block_compromised,
        unknown_device: unknown_device("policy.global.unknown_device", &g.unknown_device)?,
        stale_after: duration("policy.global.stale_after", &g.stale_after)?,
        on_stale: on_stale("policy.global.on_stale", &g.on_stale)?,
        mode: mode("policy.global.mode", &g.mode)?,
    };
    let mut names = HashSet::from(["global".to_owned()]);
    let mut by_application = HashMap::new();
    for custom in raw.custom {
        let name = custom.name.trim().to_owned();
        if name.is_empty() || !names.insert(name.clone()) {
            return Err(invalid(format!(
                "policy.custom name {name:?} is empty, reserved or used twice"
            )));
        }
        if custom.applications.is_empty() {
            return Err(invalid(format!(
                "policy.custom {name:?} has no applications"
            )));
        }
        let key = |k: &str| format!("policy.custom[{name}].{k}");
        let policy = Policy {
            name: name.as_str().into(),
            require_trusted: custom.require_trusted.unwrap_or(global.require_trusted),
            block_compromised: custom.block_compromised.unwrap_or(global.block_compromised),
            unknown_device: match &custom.unknown_device {
                Some(u) => unknown_device(&key("unknown_device"), u)?,
                None => global.unknown_device,
            },
            stale_after: match &custom.stale_after {
                Some(s) => duration(&key("stale_after"), s)?,
                None => global.stale_after,
            },
            on_stale: match &custom.on_stale {
                Some(s) => on_stale(&key("on_stale"), s)?,
                None => global.on_stale,
            },
            mode: match &custom.mode {
                Some(m) => mode(&key("mode"), m)?,
                None => global.mode,
            },
        };
        for app in custom.applications {
            if by_application.insert(app.clone(), policy.clone()).is_some() {
                return Err(invalid(format!(
                    "application {app:?} is in two custom policies"
                )));
            }
        }
    }
    Ok(Policies {
        global,
        by_application,
    })
}

/// `[poller] state_path` when unset: a directory beside the store, named after it. Beside the
/// store rather than in the working directory, where two configurations run from one folder
/// would share one cursor.
pub fn default_poller_state_path(store_path: &std::path::Path) -> PathBuf {
    let mut name = store_path
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_else(|| "trustgate-store".into());
    name.push("-poller");
    store_path.with_file_name(name)
}

/// Checks `[poller] base_url` is an absolute http(s) URL with a host and no query or fragment
/// (the client appends paths to it), so a typo is refused by `check-config` rather than by a
/// panic at the first poll. The value is not echoed: it may carry credentials.
fn check_base_url(url: &str) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| invalid(format!("poller.base_url is not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("poller.base_url must be an http or https URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("poller.base_url has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("poller.base_url must not have a query or fragment"));
    }
    Ok(())
}

fn poller(raw: RawPoller, store_path: &std::path::Path) -> Result<PollerSettings, ConfigError> {
    let base_url = match raw.base_url.filter(|u| !u.is_empty()) {
        Some(url) => {
            let url = url.trim_end_matches('/').to_owned();
            check_base_url(&url)?;
            url
        }
        None => match raw.region.as_str() {
            "nam" => "https://api.amp.cisco.com".into(),
            "eu" => "https://api.eu.amp.cisco.com".into(),
            "apjc" => "https://api.apjc.amp.cisco.com".into(),
            other => {
                return Err(invalid(format!(
                    "poller.region = {other:?}: expected nam, eu or apjc (or set poller.base_url)"
                )))
            }
        },
    };
    let api_key = secret(raw.api_key);
    if raw.enabled && (raw.client_id.is_none() || api_key.is_none()) {
        return Err(invalid("poller.client_id and poller.api_key (or TRUSTGATE_POLLER__API_KEY) are required when the poller is enabled"));
    }
    if raw.requests_per_hour == 0 || raw.burst == 0 {
        return Err(invalid(
            "poller.requests_per_hour and poller.burst must be positive",
        ));
    }
    if !(1..=500).contains(&raw.page_size) {
        return Err(invalid("poller.page_size must be between 1 and 500"));
    }
    Ok(PollerSettings {
        enabled: raw.enabled,
        events: raw.events,
        base_url,
        client_id: raw.client_id,
        api_key,
        events_interval: duration("poller.events_interval", &raw.events_interval)?,
        events_overlap: duration("poller.events_overlap", &raw.events_overlap)?,
        inventory_interval: duration("poller.inventory_interval", &raw.inventory_interval)?,
        initial_lookback: duration("poller.initial_lookback", &raw.initial_lookback)?,
        requests_per_hour: raw.requests_per_hour,
        burst: raw.burst,
        reserve: raw.reserve,
        state_path: raw
            .state_path
            .filter(|p| !p.is_empty())
            .map_or_else(|| default_poller_state_path(store_path), PathBuf::from),
        event_types: raw.event_types,
        page_size: raw.page_size,
        connect_timeout: duration("poller.connect_timeout", &raw.connect_timeout)?,
        request_timeout: duration("poller.request_timeout", &raw.request_timeout)?,
    })
}

fn webhook(raw: RawWebhook) -> Result<WebhookSettings, ConfigError> {
    for s in &raw.secrets {
        if !s.starts_with("whsec_") {
            // Say which position, never the value.
            return Err(invalid(
                "webhook.secrets entries must look like whsec_<base64>",
            ));
        }
    }
    let bearer_token = secret(raw.bearer_token);
    if raw.enabled && raw.secrets.is_empty() && bearer_token.is_none() {
        return Err(invalid(
            "webhook.enabled needs webhook.secrets (or webhook.bearer_token)",
        ));
    }
    Ok(WebhookSettings {
        enabled: raw.enabled,
        listen: listen("webhook.listen", &raw.listen)?,
        secrets: raw.secrets.into_iter().map(SecretString::from).collect(),
        bearer_token,
        tolerance: duration("webhook.tolerance", &raw.tolerance)?,
        max_body_bytes: raw.max_body_bytes,
        publish_timeout: duration("webhook.publish_timeout", &raw.publish_timeout)?,
    })
}

/// Checks `[amqp]`: a usable URL (never echoed: it may carry the password), something to
/// connect with when enabled, a prefetch that bounds what is in flight.
fn amqp(raw: RawAmqp) -> Result<AmqpSettings, ConfigError> {
    let url = secret(raw.url);
    if let Some(url) = &url {
        use secrecy::ExposeSecret;
        let parsed: lapin::uri::AMQPUri = url
            .expose_secret()
            .parse()
            .map_err(|_| invalid("amqp.url is not an amqp:// or amqps:// URL"))?;
        if parsed.authority.host.is_empty() {
            return Err(invalid("amqp.url has no host"));
        }
    }
    let credentials_path = raw
        .credentials_path
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    if raw.enabled && url.is_none() && credentials_path.is_none() {
        return Err(invalid(
            "amqp.enabled needs amqp.credentials_path (written by `trustgate stream create`) or amqp.url",
        ));
    }
    if raw.prefetch == 0 {
        return Err(invalid(
            "amqp.prefetch must be at least 1 (0 would let the broker send without bound)",
        ));
    }
    let heartbeat_interval = duration("amqp.heartbeat_interval", &raw.heartbeat_interval)?;
    if heartbeat_interval.is_zero() {
        return Err(invalid("amqp.heartbeat_interval must be positive"));
    }
    Ok(AmqpSettings {
        enabled: raw.enabled,
        url,
        credentials_path,
        queue: raw.queue.filter(|q| !q.is_empty()),
        prefetch: raw.prefetch,
        ca_file: raw.ca_file.filter(|p| !p.is_empty()).map(PathBuf::from),
        heartbeat_interval,
        publish_timeout: duration("amqp.publish_timeout", &raw.publish_timeout)?,
    })
}
