//! An in-memory [`DeviceDirectory`]: the model the sled store is tested against, and a
//! directory for table tests and benchmarks that need no disk.

use super::DeviceDirectory;
use crate::fold::DeviceState;
use crate::store::StoreError;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct MemoryDirectory {
    pub devices: BTreeMap<String, DeviceState>,
}

impl MemoryDirectory {
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
    fn device(&self, guid: &str) -> Result<Option<DeviceState>, StoreError> {
        Ok(self.devices.get(guid).cloned())
    }
    fn guids_by_processor_id(&self, id: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.guids(|d| {
            d.windows_processor_id
                .as_ref()
                .is_some_and(|p| p.value == id)
        }))
    }
    fn guids_by_mac(&self, mac: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.guids(|d| {
            d.macs
                .as_ref()
                .is_some_and(|m| m.value.iter().any(|x| x == mac))
        }))
    }
    fn guids_by_hostname(&self, host: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.guids(|d| {
            d.hostname.as_ref().is_some_and(|h| {
                h.value == host
                    || (h.value.starts_with(host)
                        && h.value.as_bytes().get(host.len()) == Some(&b'.'))
            })
        }))
    }
}
