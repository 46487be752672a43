//! Seeded construction of simulated computers (and the ids and dates events use): pure functions of an RNG, a time and
//! the records they refer to, so a scenario replays identically for one seed.

use super::shapes::{
    AvUpdateDefinitions, Computer, ComputerAddress, ComputerLinks, Isolation, Named, Orbital,
};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;

/// The operating systems of the recorded tenant, plus macOS (which Duo's SE check covers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Os {
    Windows,
    Mac,
    Ios,
    Linux,
}

/// The share of each OS among generated computers; Linux takes what is left. The shares are
/// each within 0..1 and add up to at most 1 (`se-simulator` checks its flags; a share past
/// that only starves the OSes after it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OsMix {
    /// Share of Windows computers.
    pub windows: f64,
    /// Share of macOS computers.
    pub macos: f64,
    /// Share of iOS computers.
    pub ios: f64,
}

impl Default for OsMix {
    fn default() -> Self {
        OsMix {
            windows: 0.6,
            macos: 0.25,
            ios: 0.1,
        }
    }
}

impl OsMix {
    pub(crate) fn pick(&self, rng: &mut impl Rng) -> Os {
        let x: f64 = rng.gen();
        if x < self.windows {
            Os::Windows
        } else if x < self.windows + self.macos {
            Os::Mac
        } else if x < self.windows + self.macos + self.ios {
            Os::Ios
        } else {
            Os::Linux
        }
    }
}

/// A computer group with its policy, as `/v1/computers` names them.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) guid: String,
    pub(crate) name: &'static str,
    pub(crate) policy: Named,
}

pub(crate) fn groups(rng: &mut impl Rng) -> Vec<Group> {
    ["Triage", "Audit", "Protect"]
        .into_iter()
        .map(|name| Group {
            guid: guid(rng),
            name,
            policy: Named {
                guid: guid(rng),
                name: name.to_string(),
            },
        })
        .collect()
}

/// A random version-4 UUID, lower case, as SE prints connector and group GUIDs.
pub(crate) fn guid(rng: &mut impl Rng) -> String {
    let b: [u8; 16] = rng.gen();
    let h = hex::encode(
        [
            &b[0..6],
            &[0x40 | (b[6] & 0x0f), b[7], 0x80 | (b[8] & 0x3f)],
            &b[9..16],
        ]
        .concat(),
    );
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub(super) fn hex_string(rng: &mut impl Rng, chars: usize) -> String {
    (0..chars)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
        .collect()
}

fn mac(rng: &mut impl Rng) -> String {
    let b: [u8; 6] = rng.gen();
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn private_ip(rng: &mut impl Rng) -> String {
    format!(
        "10.{}.{}.{}",
        rng.gen::<u8>(),
        rng.gen::<u8>(),
        rng.gen_range(1..255)
    )
}

fn public_ip(rng: &mut impl Rng) -> String {
    format!(
        "{}.{}.{}.{}",
        rng.gen_range(11..200),
        rng.gen::<u8>(),
        rng.gen::<u8>(),
        rng.gen_range(1..255)
    )
}

/// An event id like SE's: 64-bit, far above 2^53, drawn at random so ids are not time-ordered.
pub(crate) fn event_id(rng: &mut impl Rng) -> u64 {
    rng.gen_range(1u64 << 60..i64::MAX as u64)
}

/// `2022-03-31T17:46:01Z`, as computers print their dates.
pub(crate) fn computer_date(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `2021-01-14T10:33:46+00:00`, as events print `date`.
pub(crate) fn event_date(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn links(link_base: &str, guid: &str, group_guid: &str) -> ComputerLinks {
    ComputerLinks {
        computer: format!("{link_base}/v1/computers/{guid}"),
        trajectory: format!("{link_base}/v1/computers/{guid}/trajectory"),
        group: format!("{link_base}/v1/groups/{group_guid}"),
    }
}

/// OS-specific fields: (hostname, operating_system, os_version, connector_version).
fn os_identity(os: Os, index: usize) -> (String, &'static str, &'static str, &'static str) {
    match os {
        Os::Windows => (
            format!("fin-lt-{index:04}"),
            "Windows 10",
            "10.0.19044.1466",
            "7.5.3.20938",
        ),
        Os::Mac => (
            format!("eng-mbp-{index:04}"),
            "macOS 14.1",
            "14.1",
            "1.24.1.1007",
        ),
        Os::Ios => (
            format!("iphone-{index:04}"),
            "iOS 16.0 (iPhone11,6)",
            "16.0.0",
            "1.5.3.197",
        ),
        Os::Linux => (
            format!("srv-{index:04}"),
            "Ubuntu 20.04",
            "20.04",
            "1.18.0.814",
        ),
    }
}

/// One computer. `index` makes the hostname unique.
pub(crate) fn computer(
    rng: &mut impl Rng,
    index: usize,
    os: Os,
    group: &Group,
    link_base: &str,
    installed: DateTime<Utc>,
    last_seen: DateTime<Utc>,
) -> Computer {
    let connector_guid = guid(rng);
    let (hostname, operating_system, os_version, connector_version) = os_identity(os, index);
    let ip = private_ip(rng);
    Computer {
        links: links(link_base, &connector_guid, &group.guid),
        connector_guid,
        hostname,
        windows_processor_id: (os == Os::Windows).then(|| hex_string(rng, 15)),
        active: true,
        connector_version: connector_version.to_string(),
        operating_system: operating_system.to_string(),
        os_version: os_version.to_string(),
        internal_ips: vec![ip.clone()],
        external_ip: public_ip(rng),
        group_guid: group.guid.clone(),
        install_date: computer_date(installed),
        is_compromised: false,
        demo: false,
        network_addresses: vec![ComputerAddress { mac: mac(rng), ip }],
        policy: group.policy.clone(),
        groups: vec![Named {
            guid: group.guid.clone(),
            name: group.name.to_string(),
        }],
        last_seen: computer_date(last_seen),
        // Only the recorded Linux connector reports ClamAV definitions.
        av_update_definitions: (os == Os::Linux).then(|| AvUpdateDefinitions {
            status: "Definitions Up To Date".to_string(),
            detection_engine: "ClamAV Linux-Full".to_string(),
            updated_at: event_date(last_seen),
        }),
        faults: Vec::new(),
        isolation: Isolation {
            available: false,
            status: "not_isolated".to_string(),
        },
        orbital: Orbital {
            status: "not_enabled".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn guids_look_like_v4_uuids() {
        let mut rng = StdRng::seed_from_u64(7);
        let g = guid(&mut rng);
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "4");
        assert!(g.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn event_ids_exceed_f64_precision() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..100 {
            assert!(event_id(&mut rng) > 1u64 << 53);
        }
    }

    #[test]
    fn dates_use_se_formats() {
        let t = DateTime::parse_from_rfc3339("2021-01-14T10:33:46.742Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(event_date(t), "2021-01-14T10:33:46+00:00");
        assert_eq!(computer_date(t), "2021-01-14T10:33:46Z");
    }
}
