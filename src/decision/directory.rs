//! The sled store as the device directory decisions read: the one [`DeviceDirectory`] that does
//! I/O. It lives here, not in `policy` (which stays pure and never names the store's handle)
//! nor in `store` (which would then depend on `policy`, and `policy` names the store's error).

use crate::fold::DeviceState;
use crate::policy::DeviceDirectory;
use crate::store::{Store, StoreError};

impl DeviceDirectory for Store {
    fn device(&self, guid: &str) -> Result<Option<DeviceState>, StoreError> {
        Store::device(self, guid)
    }
    fn guids_by_processor_id(&self, id: &str) -> Result<Vec<String>, StoreError> {
        Store::guids_by_processor_id(self, id)
    }
    fn guids_by_mac(&self, mac: &str) -> Result<Vec<String>, StoreError> {
        Store::guids_by_mac(self, mac)
    }
    fn guids_by_hostname(&self, hostname: &str) -> Result<Vec<String>, StoreError> {
        Store::guids_by_hostname(self, hostname)
    }
}
