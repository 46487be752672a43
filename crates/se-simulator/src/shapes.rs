//! The JSON shapes the simulator serves, field for field as in SE's real `/v1/computers` and
//! `/v1/events` records (the repository's `tests/fixtures/`). Field order follows the
//! recordings too, so a simulated page reads like a real one.
//!
//! Optional fields are skipped rather than sent as `null`, because SE omits them (e.g.
//! `windows_processor_id` exists only on Windows computers).
//!
//! The computer's types are public because [`Simulator::computers`](crate::Simulator::computers)
//! returns them; the event's stay inside the crate, since events leave it only as JSON (the log
//! keeps each as the bytes it serves).

use serde::Serialize;

/// A `/v1/computers` item.
#[derive(Debug, Clone, Serialize)]
pub struct Computer {
    /// The connector's GUID (a lower-case v4 UUID): the computer's identity in SE.
    pub connector_guid: String,
    /// Unique within a tenant; the OS shows in its prefix (`fin-lt-`, `eng-mbp-`, …).
    pub hostname: String,
    /// Only on Windows computers; absent (not `null`) elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows_processor_id: Option<String>,
    /// Always true: the simulator does not retire connectors.
    pub active: bool,
    /// Links to the computer, its trajectory and its group (under the scenario's `link_base`).
    pub links: ComputerLinks,
    /// The Secure Endpoint connector version the OS's recorded computer runs.
    pub connector_version: String,
    /// E.g. `Windows 10`, `macOS 14.1`, `iOS 16.0 (iPhone11,6)`, `Ubuntu 20.04`.
    pub operating_system: String,
    /// The OS version proper, e.g. `10.0.19044.1466`.
    pub os_version: String,
    /// Private (10.x) addresses; one per computer.
    pub internal_ips: Vec<String>,
    /// The public address the connector was last seen from.
    pub external_ip: String,
    /// The GUID of the computer's group (one of three per tenant).
    pub group_guid: String,
    /// When the connector was installed (`2022-03-31T17:46:01Z`), before the history starts.
    pub install_date: String,
    /// SE's compromise flag: set by a detection, cleared when the compromise is resolved.
    pub is_compromised: bool,
    /// Always false, as on every recorded computer.
    pub demo: bool,
    /// The computer's MAC and IP pairs.
    pub network_addresses: Vec<ComputerAddress>,
    /// The group's policy.
    pub policy: Named,
    /// The computer's group, as a one-item list.
    pub groups: Vec<Named>,
    /// When the connector last reported; moves with every event the computer logs.
    pub last_seen: String,
    /// Only on Linux computers, as recorded (ClamAV definitions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub av_update_definitions: Option<AvUpdateDefinitions>,
    /// Always empty, as in every recorded computer; kept so the key set matches.
    pub faults: Vec<serde_json::Value>,
    /// Never isolated.
    pub isolation: Isolation,
    /// Never enabled.
    pub orbital: Orbital,
}

/// `links` on a computer (and on an event's computer): SE's resource URLs, which the simulator
/// does not serve.
#[derive(Debug, Clone, Serialize)]
pub struct ComputerLinks {
    /// `{link_base}/v1/computers/{guid}`.
    pub computer: String,
    /// `{link_base}/v1/computers/{guid}/trajectory`.
    pub trajectory: String,
    /// `{link_base}/v1/groups/{group_guid}`.
    pub group: String,
}

/// `network_addresses[]` on a computer: SE writes `mac` first there, `ip` first on events.
#[derive(Debug, Clone, Serialize)]
pub struct ComputerAddress {
    /// Colon-separated, lower case.
    pub mac: String,
    /// The same address as in `internal_ips`.
    pub ip: String,
}

/// A reference to a group or a policy: its GUID and its name.
#[derive(Debug, Clone, Serialize)]
pub struct Named {
    /// The group's or policy's GUID.
    pub guid: String,
    /// `Triage`, `Audit` or `Protect`.
    pub name: String,
}

/// `av_update_definitions` on a Linux computer.
#[derive(Debug, Clone, Serialize)]
pub struct AvUpdateDefinitions {
    /// Always `Definitions Up To Date`.
    pub status: String,
    /// Always `ClamAV Linux-Full`.
    pub detection_engine: String,
    /// When the definitions were last updated (an event-style date).
    pub updated_at: String,
}

/// `isolation` on a computer; the simulator never isolates one.
#[derive(Debug, Clone, Serialize)]
pub struct Isolation {
    /// Always false.
    pub available: bool,
    /// Always `not_isolated`.
    pub status: String,
}

/// `orbital` on a computer; the simulator has no Orbital.
#[derive(Debug, Clone, Serialize)]
pub struct Orbital {
    /// Always `not_enabled`.
    pub status: String,
}

/// A `/v1/events` item. Account events (e.g. Email Confirmation) carry no device: no
/// `connector_guid`, `group_guids` or `computer`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    /// 64-bit, above 2^53: serialised as a JSON integer by serde_json's u64 path, never via f64.
    pub(crate) id: u64,
    pub(crate) timestamp: i64,
    pub(crate) timestamp_nanoseconds: u32,
    pub(crate) date: String,
    pub(crate) event_type: String,
    pub(crate) event_type_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detection: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detection_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) connector_guid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) group_guids: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) severity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) computer: Option<EventComputer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) file: Option<EventFile>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<EventError>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EventComputer {
    pub(crate) connector_guid: String,
    pub(crate) hostname: String,
    pub(crate) external_ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
    pub(crate) active: bool,
    pub(crate) network_addresses: Vec<EventAddress>,
    pub(crate) links: ComputerLinks,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EventAddress {
    pub(crate) ip: String,
    pub(crate) mac: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EventFile {
    pub(crate) disposition: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) file_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) file_path: Option<String>,
    pub(crate) identity: Identity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) parent: Option<ParentFile>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Identity {
    pub(crate) sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sha1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) md5: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ParentFile {
    pub(crate) process_id: u32,
    pub(crate) disposition: String,
    pub(crate) file_name: String,
    pub(crate) identity: Identity,
}

/// The `error` object of failure events (Quarantine Failure).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EventError {
    pub(crate) error_code: u64,
    pub(crate) description: String,
}
