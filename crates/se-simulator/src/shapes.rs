//! The JSON shapes the simulator serves, field for field as in SE's real `/v1/computers` and
//! `/v1/events` records (see `tests/fixtures/`). Field order follows the recordings too, so a
//! simulated page reads like a real one.
//!
//! Optional fields are skipped rather than sent as `null`, because SE omits them (e.g.
//! `windows_processor_id` exists only on Windows computers).

use serde::Serialize;

/// A `/v1/computers` item.
#[derive(Debug, Clone, Serialize)]
pub struct Computer {
    pub connector_guid: String,
    pub hostname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows_processor_id: Option<String>,
    pub active: bool,
    pub links: ComputerLinks,
    pub connector_version: String,
    pub operating_system: String,
    pub os_version: String,
    pub internal_ips: Vec<String>,
    pub external_ip: String,
    pub group_guid: String,
    pub install_date: String,
    pub is_compromised: bool,
    pub demo: bool,
    pub network_addresses: Vec<ComputerAddress>,
    pub policy: Named,
    pub groups: Vec<Named>,
    pub last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub av_update_definitions: Option<AvUpdateDefinitions>,
    /// Always empty, as in every recorded computer; kept so the key set matches.
    pub faults: Vec<serde_json::Value>,
    pub isolation: Isolation,
    pub orbital: Orbital,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComputerLinks {
    pub computer: String,
    pub trajectory: String,
    pub group: String,
}

/// `network_addresses[]` on a computer: SE writes `mac` first there, `ip` first on events.
#[derive(Debug, Clone, Serialize)]
pub struct ComputerAddress {
    pub mac: String,
    pub ip: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Named {
    pub guid: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AvUpdateDefinitions {
    pub status: String,
    pub detection_engine: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Isolation {
    pub available: bool,
    pub status: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Orbital {
    pub status: String,
}

/// A `/v1/events` item. Account events (e.g. Email Confirmation) carry no device: no
/// `connector_guid`, `group_guids` or `computer`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// 64-bit, above 2^53: serialised as a JSON integer by serde_json's u64 path, never via f64.
    pub id: u64,
    pub timestamp: i64,
    pub timestamp_nanoseconds: u32,
    pub date: String,
    pub event_type: String,
    pub event_type_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connector_guid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_guids: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub computer: Option<EventComputer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<EventFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventComputer {
    pub connector_guid: String,
    pub hostname: String,
    pub external_ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub active: bool,
    pub network_addresses: Vec<EventAddress>,
    pub links: ComputerLinks,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventAddress {
    pub ip: String,
    pub mac: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventFile {
    pub disposition: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_path: Option<String>,
    pub identity: Identity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentFile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParentFile {
    pub process_id: u32,
    pub disposition: String,
    pub file_name: String,
    pub identity: Identity,
}

/// The `error` object of failure events (Quarantine Failure).
#[derive(Debug, Clone, Serialize)]
pub struct EventError {
    pub error_code: u64,
    pub description: String,
}
