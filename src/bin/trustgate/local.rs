//! How `decide` and `inspect` reach the device state: the store itself when no instance runs,
//! else the running instance's admin listener (sled lets one process hold a store).

use trustgate::config::Settings;
use trustgate::store::{Store, StoreError};

/// The store, or `None` when a running instance holds it (then ask it over HTTP).
pub fn open_store(settings: &Settings) -> anyhow::Result<Option<Store>> {
    match Store::open(&settings.store.path, settings.store.cache_bytes) {
        Ok(store) => Ok(Some(store)),
        Err(StoreError::Locked { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The running instance's admin URL for `path`.
pub fn admin_url(settings: &Settings, path: &str) -> String {
    format!("http://{}{}", settings.admin.listen, path)
}
