//! Matching a request's identifiers to known devices.

use crate::fold::DeviceSummary;

/// Read access to device state, as the decision procedure needs it. Identifier arguments are
/// already normalised (see `se::normalize_mac` and friends). The sled store's impl is
/// in `decision` (`decision/directory.rs`); [`super::MemoryDirectory`] is the in-memory one.
pub trait DeviceDirectory {
    /// What decisions read of a device (its [`DeviceSummary`]), by connector GUID.
    fn device(&self, guid: &str) -> Result<Option<DeviceSummary>, DirectoryError>;
    /// GUIDs of devices with this `windows_processor_id`.
    fn guids_by_processor_id(&self, id: &str) -> Result<Vec<String>, DirectoryError>;
    /// GUIDs of devices with this MAC (12 lower-case hex digits).
    fn guids_by_mac(&self, mac: &str) -> Result<Vec<String>, DirectoryError>;
    /// GUIDs of devices whose hostname matches `hostname` by the hostname rule, both ways
    /// (`hostnames_match`): `hostname` itself, `hostname.<more labels>`, or a name that
    /// `hostname` is followed by `.` and more labels.
    fn guids_by_hostname(&self, hostname: &str) -> Result<Vec<String>, DirectoryError>;

    /// What decisions read of the devices with this `windows_processor_id`, sorted by GUID.
    /// The default asks [`Self::guids_by_processor_id`], then [`Self::device`] for each; a
    /// directory that can answer in one lookup (the store's index) overrides it.
    fn devices_by_processor_id(&self, id: &str) -> Result<Vec<DeviceSummary>, DirectoryError> {
        devices_of(self, self.guids_by_processor_id(id)?)
    }
    /// What decisions read of the devices with any of these MACs, sorted by GUID, each once.
    fn devices_by_macs(&self, macs: &[String]) -> Result<Vec<DeviceSummary>, DirectoryError> {
        let mut guids = Vec::new();
        for mac in macs {
            guids.extend(self.guids_by_mac(mac)?);
        }
        devices_of(self, guids)
    }
    /// What decisions read of the devices whose hostname matches `hostname` by the hostname
    /// rule ([`Self::guids_by_hostname`]), sorted by GUID.
    fn devices_by_hostname(&self, hostname: &str) -> Result<Vec<DeviceSummary>, DirectoryError> {
        devices_of(self, self.guids_by_hostname(hostname)?)
    }
}

/// The devices of `guids`, sorted by GUID, each once.
fn devices_of<D: DeviceDirectory + ?Sized>(
    dir: &D,
    mut guids: Vec<String>,
) -> Result<Vec<DeviceSummary>, DirectoryError> {
    guids.sort();
    guids.dedup();
    let mut devices = Vec::with_capacity(guids.len());
    for guid in guids {
        // An index entry without its device is a torn write that the next chunk repairs;
        // skipping it is right because the entry asserts nothing by itself.
        if let Some(state) = dir.device(&guid)? {
            devices.push(state);
        }
    }
    Ok(devices)
}

/// A directory that could not be read, e.g. a sled I/O error or a corrupt value. Policy's own
/// type, so that it never depends on the store: an implementation wraps its error here, and
/// a decision that meets one denies with `store_unavailable`, carrying its text unchanged.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DirectoryError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl DirectoryError {
    /// Wraps an implementation's error; its text (`Display`) and source chain are kept.
    pub(crate) fn new(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        DirectoryError(Box::new(source))
    }
}

/// The hostname rule, both ways: one (normalised, lower-case) name matches the other when it
/// equals it or is it followed by `.` and more labels. So a request's short name finds a device
/// SE knows by its FQDN, a request's FQDN finds a device SE knows by its short name
/// (`ws-q-0200.corp.example.com` finds `ws-q-0200`), and two FQDNs with different domains do
/// not match (`ws-q-0200.a.example` is not `ws-q-0200.b.example`).
pub(crate) fn hostnames_match(a: &str, b: &str) -> bool {
    // Compared byte by byte ignoring ASCII case, without lower-cased copies: this runs for
    // every candidate of a hostname lookup on the decision path.
    fn extends(long: &[u8], short: &[u8]) -> bool {
        long.len() > short.len()
            && long[..short.len()].eq_ignore_ascii_case(short)
            && long[short.len()] == b'.'
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.eq_ignore_ascii_case(b) || extends(a, b) || extends(b, a)
}

/// Which identifier matched. Ordered from strongest to weakest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MatchedBy {
    ConnectorGuid,
    WindowsProcessorId,
    Mac,
    Hostname,
    None,
}

/// The devices found at the strongest identifier level that matched anything.
#[derive(Debug, Clone)]
pub(crate) struct Matched {
    pub(crate) by: MatchedBy,
    /// Sorted by GUID; more than one means the match is ambiguous.
    pub(crate) devices: Vec<DeviceSummary>,
}

/// The identifiers a decision request gives for its device, normalised: what a device is
/// matched by. (What a record states about a device is `fold::RecordIdentifiers`.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestIdentifiers {
    pub(crate) connector_guid: Option<String>,
    pub(crate) windows_processor_id: Option<String>,
    /// MACs as 12 lower-case hex digits, sorted and deduplicated; any one may match.
    pub macs: Vec<String>,
    /// Matches a device named exactly so, or so followed by `.` and a domain.
    pub hostname: Option<String>,
}

impl RequestIdentifiers {
    pub(crate) fn is_empty(&self) -> bool {
        self.connector_guid.is_none()
            && self.windows_processor_id.is_none()
            && self.macs.is_empty()
            && self.hostname.is_none()
    }
}

/// Looks the identifiers up strongest first: connector_guid > windows_processor_id > MAC >
/// hostname. The first level that finds any device decides, and weaker levels are not asked
/// (a directory error at a weaker level cannot change a match found at a stronger one; the
/// store's index fails every level but the GUID alike, so it is met at the first one asked).
pub(crate) fn match_device(
    dir: &impl DeviceDirectory,
    ids: &RequestIdentifiers,
) -> Result<Matched, DirectoryError> {
    let found =
        |by, devices: Vec<DeviceSummary>| (!devices.is_empty()).then_some(Matched { by, devices });
    if let Some(guid) = &ids.connector_guid {
        if let Some(state) = dir.device(guid)? {
            return Ok(Matched {
                by: MatchedBy::ConnectorGuid,
                devices: vec![state],
            });
        }
    }
    if let Some(id) = &ids.windows_processor_id {
        if let Some(m) = found(
            MatchedBy::WindowsProcessorId,
            dir.devices_by_processor_id(id)?,
        ) {
            return Ok(m);
        }
    }
    if !ids.macs.is_empty() {
        if let Some(m) = found(MatchedBy::Mac, dir.devices_by_macs(&ids.macs)?) {
            return Ok(m);
        }
    }
    if let Some(host) = &ids.hostname {
        if let Some(m) = found(MatchedBy::Hostname, dir.devices_by_hostname(host)?) {
            return Ok(m);
        }
    }
    Ok(Matched {
        by: MatchedBy::None,
        devices: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::hostnames_match;

    /// The hostname rule's table, both ways.
    #[test]
    fn hostname_rule_table() {
        let table = [
            ("ws-q-0200", "ws-q-0200", true),
            ("WS-Q-0200", "ws-q-0200", true),
            ("ws-q-0200", "ws-q-0200.corp.example.com", true),
            ("ws-q-0200.corp.example.com", "WS-Q-0200", true),
            ("ws-q-0200.corp", "ws-q-0200.corp.example.com", true),
            (
                "ws-q-0200.corp.example.com",
                "ws-q-0200.other.example.org",
                false,
            ),
            ("ws-q-0200.a.example", "ws-q-0200.b.example", false),
            ("ws-q-0200", "ws-q-02001", false),
            ("ws-q-0200", "ws-q-0200-b.corp", false),
            ("ws-q", "ws-q-0200", false),
            ("ws-q-0200.c", "ws-q-0200.corp", false),
        ];
        for (a, b, expected) in table {
            assert_eq!(hostnames_match(a, b), expected, "{a} vs {b}");
            assert_eq!(hostnames_match(b, a), expected, "{b} vs {a}");
        }
    }
}
