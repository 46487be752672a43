//! Seeded construction of simulated events: device events, account events without a device,
//! and detections with their follow-ups, shaped like the recorded `/v1/events` items.

use super::catalog;
use super::generate::{event_date, hex_string};
use super::shapes::{
    Computer, Event, EventAddress, EventComputer, EventError, EventFile, Identity, ParentFile,
};
use chrono::{DateTime, Utc};
use rand::Rng;

/// The fields every event has, for an event of `type_id` at `at`.
pub(crate) fn account_event(id: u64, at: DateTime<Utc>, type_id: u64) -> Event {
    Event {
        id,
        timestamp: at.timestamp(),
        // SE reports milliseconds in this nanosecond field (e.g. 742000000).
        timestamp_nanoseconds: at.timestamp_subsec_millis() * 1_000_000,
        date: event_date(at),
        event_type: catalog::name(type_id).unwrap_or("Unknown").to_string(),
        event_type_id: type_id,
        detection: None,
        detection_id: None,
        connector_guid: None,
        group_guids: None,
        severity: None,
        computer: None,
        file: None,
        error: None,
    }
}

/// An event about `c` with no detection (Policy Update, scans).
pub(crate) fn device_event(id: u64, at: DateTime<Utc>, type_id: u64, c: &Computer) -> Event {
    Event {
        connector_guid: Some(c.connector_guid.clone()),
        group_guids: Some(vec![c.group_guid.clone()]),
        computer: Some(event_computer(c, None)),
        ..account_event(id, at, type_id)
    }
}

fn event_computer(c: &Computer, user: Option<String>) -> EventComputer {
    EventComputer {
        connector_guid: c.connector_guid.clone(),
        hostname: c.hostname.clone(),
        external_ip: c.external_ip.clone(),
        user,
        active: c.active,
        network_addresses: c
            .network_addresses
            .iter()
            .map(|a| EventAddress {
                ip: a.ip.clone(),
                mac: a.mac.clone(),
            })
            .collect(),
        links: c.links.clone(),
    }
}

/// The malware of one detection, shared by the events that report it.
#[derive(Debug, Clone)]
pub(crate) struct Threat {
    pub(crate) detection: &'static str,
    pub(crate) detection_id: String,
    pub(crate) file_name: String,
    pub(crate) file_path: String,
    pub(crate) identity: Identity,
    pub(crate) severity: &'static str,
}

const DETECTIONS: &[&str] = &[
    "W32.Overdrive.RET",
    "W32.GenericKD:ZVETJ.18gs.1201",
    "W32.12081E6CA3-95.SBX.TG",
    "Win.Ransomware.Wannacry::1201",
    "Osx.Trojan.Shlayer::tpd",
];

fn identity(rng: &mut impl Rng) -> Identity {
    Identity {
        sha256: hex_string(rng, 64),
        sha1: Some(hex_string(rng, 40)),
        md5: Some(hex_string(rng, 32)),
    }
}

pub(crate) fn threat(rng: &mut impl Rng, c: &Computer) -> Threat {
    let file_name = format!("{}.exe", hex_string(rng, 8));
    let file_path = if c.operating_system.starts_with("Windows") {
        format!("\\\\?\\C:\\Users\\user\\AppData\\Local\\Temp\\{file_name}")
    } else {
        format!("/tmp/{file_name}")
    };
    Threat {
        detection: DETECTIONS[rng.gen_range(0..DETECTIONS.len())],
        detection_id: rng.gen_range(1u64 << 60..i64::MAX as u64).to_string(),
        file_name,
        file_path,
        identity: identity(rng),
        severity: if rng.gen_bool(0.3) { "High" } else { "Medium" },
    }
}

/// Threat Detected: the compromise-class event, with `detection_id` and the full file.
pub(crate) fn threat_detected(
    rng: &mut impl Rng,
    id: u64,
    at: DateTime<Utc>,
    c: &Computer,
    t: &Threat,
) -> Event {
    let user = format!("user@{}.corp.example", c.hostname);
    Event {
        detection: Some(t.detection.to_string()),
        detection_id: Some(t.detection_id.clone()),
        severity: Some(t.severity.to_string()),
        computer: Some(event_computer(c, Some(user))),
        file: Some(EventFile {
            disposition: "Malicious".to_string(),
            file_name: Some(t.file_name.clone()),
            file_path: Some(t.file_path.clone()),
            identity: t.identity.clone(),
            parent: Some(ParentFile {
                process_id: rng.gen_range(100..9000),
                disposition: "Clean".to_string(),
                file_name: "explorer.exe".to_string(),
                identity: identity(rng),
            }),
        }),
        ..device_event(id, at, catalog::THREAT_DETECTED, c)
    }
}

/// A follow-up of a detection (Threat Quarantined, Quarantine Failure): same `detection_id`,
/// only the file's hash, as in the recorded pairs.
pub(crate) fn follow_up(
    id: u64,
    at: DateTime<Utc>,
    type_id: u64,
    c: &Computer,
    t: &Threat,
) -> Event {
    Event {
        detection_id: Some(t.detection_id.clone()),
        severity: Some(t.severity.to_string()),
        file: Some(EventFile {
            disposition: "Malicious".to_string(),
            file_name: None,
            file_path: None,
            identity: Identity {
                sha256: t.identity.sha256.clone(),
                sha1: None,
                md5: None,
            },
            parent: None,
        }),
        error: (type_id == catalog::QUARANTINE_FAILURE).then(|| EventError {
            error_code: 3221225524,
            description: "Object name not found".to_string(),
        }),
        ..device_event(id, at, type_id, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_second_time_is_reported_in_milliseconds() {
        let t = DateTime::parse_from_rfc3339("2021-01-14T10:33:46.742Z")
            .unwrap()
            .with_timezone(&Utc);
        let e = account_event(1, t, catalog::EMAIL_CONFIRMATION);
        assert_eq!(
            (e.timestamp, e.timestamp_nanoseconds),
            (1610620426, 742_000_000)
        );
        assert_eq!(e.event_type, "Email Confirmation");
    }
}
