//! A device's state as JSON, found by GUID, MAC or hostname.
//!
//! Identifiers are matched on the decision index (the same rule decisions use); the states
//! shown are read whole from sled, the source of `inspect`, since an operator wants every
//! identifier and event the fold remembers, not the summary a decision reads.

use crate::fold::{DeviceState, EventKey};
use crate::policy::{DeviceDirectory, DirectoryError, MatchedBy};
use crate::se;
use crate::store::Store;
use crate::time::format_millis;
use serde::{Deserialize, Serialize};

/// What `GET /v1/devices/{id}` and `trustgate inspect` print.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceLookup {
    matched_by: MatchedBy,
    /// The devices found at the first level that matched; more than one when the identifier names
    /// several.
    pub devices: Vec<DeviceView>,
}

/// One device as an operator reads it: identifiers as text (MACs with colons, times in RFC 3339)
/// and the compromise verdict with the observation and events behind it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceView {
    /// SE's connector GUID, lower case.
    pub connector_guid: String,
    /// The newest hostname any record stated.
    pub hostname: Option<String>,
    /// The newest set of MACs, as `aa:bb:cc:dd:ee:ff`.
    pub mac_addresses: Vec<String>,
    windows_processor_id: Option<String>,
    /// SE's free-text `operating_system`, as the newest computer record gave it.
    pub operating_system: Option<String>,
    last_seen: Option<String>,
    /// The compromise rule's verdict now.
    pub compromised: bool,
    /// SE's latest `is_compromised` observation and its time.
    observation: Option<ObservationView>,
    /// Compromise-class events that observation has not cleared.
    pub open_events: Vec<EventView>,
    /// All compromise-class events remembered (cleared ones included).
    events_remembered: usize,
    /// Kafka time of the newest record applied to this device.
    pub state_as_of: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ObservationView {
    is_compromised: bool,
    observed_at: String,
}

/// A compromise-class event of [`DeviceView::open_events`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventView {
    /// SE's id as a string: it exceeds 2^53, which JSON readers in many languages round.
    id: Option<String>,
    event_type_id: u64,
    detection_id: Option<String>,
    date: Option<String>,
    first_seen: String,
}

impl DeviceView {
    /// The view of `state`, with the compromise rule applied under `grace_millis` (the fold's
    /// `resolution_grace`).
    pub fn new(state: &DeviceState, grace_millis: i64) -> DeviceView {
        DeviceView {
            connector_guid: state.connector_guid.clone(),
            hostname: state.hostname.as_ref().map(|h| h.value.clone()),
            mac_addresses: state
                .macs
                .as_ref()
                .map(|m| m.value.iter().map(|m| colon_mac(m)).collect())
                .unwrap_or_default(),
            windows_processor_id: state.windows_processor_id.as_ref().map(|p| p.value.clone()),
            operating_system: state.operating_system.as_ref().map(|o| o.value.clone()),
            last_seen: state.last_seen.map(format_millis),
            compromised: state.is_compromised(grace_millis),
            observation: state.observation.map(|o| ObservationView {
                is_compromised: o.compromised,
                observed_at: format_millis(o.at),
            }),
            open_events: state
                .open_events(grace_millis)
                .map(|(key, e)| EventView {
                    id: match key {
                        EventKey::Id { id, .. } => Some(id.to_string()),
                        EventKey::Hash(_) => None,
                    },
                    event_type_id: e.event_type_id,
                    detection_id: e.detection_id.clone(),
                    date: e.date.map(format_millis),
                    first_seen: format_millis(e.first_seen),
                })
                .collect(),
            events_remembered: state.events.len(),
            state_as_of: state.newest_record_at.map(format_millis),
        }
    }
}

fn colon_mac(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// Finds devices by connector GUID, then MAC, then hostname (with the domain-suffix rule).
pub fn lookup(
    store: &Store,
    id: &str,
    grace_millis: i64,
) -> Result<Option<DeviceLookup>, DirectoryError> {
    let view = |states: Vec<DeviceState>| {
        states
            .iter()
            .map(|s| DeviceView::new(s, grace_millis))
            .collect::<Vec<_>>()
    };
    if let Some(guid) = se::normalize_guid(id) {
        if let Some(state) = store.device(&guid)? {
            return Ok(Some(DeviceLookup {
                matched_by: MatchedBy::ConnectorGuid,
                devices: view(vec![state]),
            }));
        }
    }
    let mut levels = Vec::new();
    if let Some(mac) = se::normalize_mac(id) {
        levels.push((MatchedBy::Mac, DeviceDirectory::guids_by_mac(store, &mac)?));
    }
    if let Some(pid) = se::normalize_processor_id(id) {
        levels.push((
            MatchedBy::WindowsProcessorId,
            DeviceDirectory::guids_by_processor_id(store, &pid)?,
        ));
    }
    if let Some(host) = se::normalize_hostname(id) {
        levels.push((
            MatchedBy::Hostname,
            DeviceDirectory::guids_by_hostname(store, &host)?,
        ));
    }
    for (by, guids) in levels {
        let mut states = Vec::new();
        for guid in guids {
            states.extend(store.device(&guid)?);
        }
        if !states.is_empty() {
            return Ok(Some(DeviceLookup {
                matched_by: by,
                devices: view(states),
            }));
        }
    }
    Ok(None)
}
