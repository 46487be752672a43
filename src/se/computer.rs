//! A `/v1/computers` `data[]` item.

use super::NetworkAddress;
use serde::Deserialize;

/// The fields of an SE computer that trustgate relies on.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Computer {
    pub(crate) connector_guid: String,
    #[serde(default)]
    pub(crate) hostname: Option<String>,
    #[serde(default)]
    pub(crate) operating_system: Option<String>,
    #[serde(default)]
    pub(crate) network_addresses: Vec<NetworkAddress>,
    #[serde(default)]
    pub(crate) windows_processor_id: Option<String>,
    /// SE's compromise flag. Absent on older or partial shapes (e.g. `/v1/computers/activity`):
    /// such a record is not an observation of compromise state, only of identifiers.
    #[serde(default)]
    pub(crate) is_compromised: Option<bool>,
    #[serde(default)]
    pub(crate) last_seen: Option<String>,
    #[serde(default)]
    active: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_computer_of_the_real_page_parses() {
        let page: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/computers-page.json")).unwrap();
        let computers: Vec<Computer> = serde_json::from_value(page["data"].clone()).unwrap();
        assert_eq!(computers.len(), 38);
        assert_eq!(
            computers
                .iter()
                .filter(|c| c.is_compromised == Some(true))
                .count(),
            30
        );
        assert_eq!(
            computers
                .iter()
                .filter(|c| c.windows_processor_id.is_some())
                .count(),
            32
        );
    }
}
