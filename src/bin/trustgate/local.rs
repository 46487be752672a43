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

/// A client for the running instance's admin listener: it sends `[admin] token` when one is
/// configured, since `/v1/*` then refuses requests without it.
pub fn admin_client(settings: &Settings) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &settings.admin.token {
        use secrecy::ExposeSecret;
        let mut value =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                .map_err(|_| anyhow::anyhow!("admin.token is not a valid header value"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

/// The running instance's admin URL for `path`.
pub fn admin_url(settings: &Settings, path: &str) -> String {
    format!("http://{}{}", settings.admin.listen, path)
}
