//! The sled store as the device directory decisions read: the one [`DeviceDirectory`] that does
//! I/O. It lives here, not in `policy` (which stays pure and never names the store's handle)
//! nor in `store` (which would then depend on `policy`). A [`StoreError`] becomes policy's
//! [`DirectoryError`] with its text unchanged, so a `store_unavailable` decision still says what
//! sled said.

use crate::fold::DeviceState;
use crate::policy::{DeviceDirectory, DirectoryError};
use crate::store::{Store, StoreError};

impl From<StoreError> for DirectoryError {
    fn from(e: StoreError) -> Self {
        DirectoryError::new(e)
    }
}

impl DeviceDirectory for Store {
    fn device(&self, guid: &str) -> Result<Option<DeviceState>, DirectoryError> {
        Ok(Store::device(self, guid)?)
    }
    fn guids_by_processor_id(&self, id: &str) -> Result<Vec<String>, DirectoryError> {
        Ok(Store::guids_by_processor_id(self, id)?)
    }
    fn guids_by_mac(&self, mac: &str) -> Result<Vec<String>, DirectoryError> {
        Ok(Store::guids_by_mac(self, mac)?)
    }
    fn guids_by_hostname(&self, hostname: &str) -> Result<Vec<String>, DirectoryError> {
        Ok(Store::guids_by_hostname(self, hostname)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_keeps_its_text_and_source() {
        let e = StoreError::Corrupt {
            key: "Dg1".into(),
            reason: "empty value".into(),
        };
        let text = e.to_string();
        let wrapped = DirectoryError::from(e);
        assert_eq!(wrapped.to_string(), text);
        assert!(std::error::Error::source(&wrapped).is_none());
    }
}
