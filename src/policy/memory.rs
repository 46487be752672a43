//! An in-memory [`DeviceDirectory`]: the model the sled store is tested against, and a
//! directory for table tests and benchmarks that need no disk.
//!
//! Every lookup is a scan over plain device states, written as directly as its rule reads.
//! `store::tests` applies random ingest chunks (identifiers that change and move between
//! devices, redeliveries, reopenings of the store) to a sled `Store` on disk and
//! to this model (with plain maps beside it for offsets and feed times), and requires the same
//! device by GUID, the same GUIDs by processor id, MAC and hostname, and the same offsets and
//! feed times after every chunk and every reopening. The identifiers it generates hold no NUL
//! byte: for a hostname or processor id holding one the store answers differently (the ignored
//! `store_bug_01` test there), harmlessly for matching, as the GUID it then names has no device.

use super::{DeviceDirectory, DirectoryError};
use crate::fold::{DeviceState, DeviceSummary};
use std::collections::BTreeMap;

/// Device states by (normalised) connector GUID; nothing else is stored, every index is a scan.
#[derive(Debug, Clone, Default)]
pub struct MemoryDirectory {
    pub(crate) devices: BTreeMap<String, DeviceState>,
}

impl MemoryDirectory {
    /// Adds or replaces a device's state (under its own `connector_guid`).
    pub fn insert(&mut self, state: DeviceState) {
        self.devices.insert(state.connector_guid.clone(), state);
    }

    fn guids(&self, pred: impl Fn(&DeviceState) -> bool) -> Vec<String> {
        self.devices
            .values()
            .filter(|d| pred(d))
            .map(|d| d.connector_guid.clone())
            .collect()
    }
}

impl DeviceDirectory for MemoryDirectory {
    fn device(&self, guid: &str) -> Result<Option<DeviceSummary>, DirectoryError> {
        Ok(self.devices.get(guid).map(DeviceState::summary))
    }
    fn guids_by_processor_id(&self, id: &str) -> Result<Vec<String>, DirectoryError> {
        Ok(self.guids(|d| {
            d.windows_processor_id
                .as_ref()
                .is_some_and(|p| p.value == id)
        }))
    }
    fn guids_by_mac(&self, mac: &str) -> Result<Vec<String>, DirectoryError> {
        Ok(self.guids(|d| {
            d.macs
                .as_ref()
                .is_some_and(|m| m.value.iter().any(|x| x == mac))
        }))
    }
    /// The hostname rule, both ways (`matching::hostnames_match`).
    fn guids_by_hostname(&self, host: &str) -> Result<Vec<String>, DirectoryError> {
        Ok(self.guids(|d| {
            d.hostname
                .as_ref()
                .is_some_and(|h| super::matching::hostnames_match(&h.value, host))
        }))
    }
}
