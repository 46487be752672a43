//! How `decide` and `inspect` reach the device state: the store itself when no instance runs,
//! else the running instance's admin listener (sled lets one process hold a store).

use trustgate::config::Settings;
use trustgate::store::{Store, StoreError};

/// The store, or `None` when a running instance holds it (then ask it over HTTP).
///
/// A path with no store is refused ([`NoStore`]) rather than opened: sled would create an
/// empty store there, and answering from it would answer from nothing.
pub fn open_store(settings: &Settings) -> anyhow::Result<Option<Store>> {
    let path = &settings.store.path;
    if !path.exists() {
        return Err(NoStore(path.display().to_string()).into());
    }
    match Store::open(path, settings.store.cache_bytes) {
        Ok(store) => Ok(Some(store)),
        Err(StoreError::Locked { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The configured store path holds no store (a typo, or an instance that never ran there).
#[derive(Debug, thiserror::Error)]
#[error("no store at {0}")]
pub struct NoStore(pub String);

/// How a command reaches the device state.
pub enum Reach {
    /// The store itself: no instance holds it.
    Store(Store),
    /// Through the running instance that holds it.
    Instance,
    /// Nothing to answer from: print the error and exit 2.
    NoStore(NoStore),
}

/// [`open_store`], with a missing store told apart so that the command can exit 2.
pub fn reach(settings: &Settings) -> anyhow::Result<Reach> {
    match open_store(settings) {
        Ok(Some(store)) => Ok(Reach::Store(store)),
        Ok(None) => Ok(Reach::Instance),
        Err(e) => match e.downcast::<NoStore>() {
            Ok(missing) => Ok(Reach::NoStore(missing)),
            Err(e) => Err(e),
        },
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
