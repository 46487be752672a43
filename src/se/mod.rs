//! Secure Endpoint (SE) records as trustgate reads them.
//!
//! Owns the lenient parsing of SE's v1 JSON shapes (`/v1/events` and `/v1/computers` items), the
//! slicing of pages into per-record raw bytes, and the classification of SE's free-text
//! `operating_system`. It does not own what a record *means* for a device: that is [`crate::fold`].
//!
//! Two rules hold everywhere here: unknown fields are ignored and optional fields stay optional
//! (SE's field set drifts between tenants and years), and 64-bit integers (`id`, `event_type_id`)
//! are read as integers, never through `f64`, because event ids exceed 2^53.

mod computer;
mod event;
mod ids;
mod page;
mod platform;

pub use computer::Computer;
pub use event::Event;
pub use page::{split_records, PageError, RawRecords};
pub use platform::Platform;

pub(crate) use ids::{
    normalize_guid, normalize_hostname, normalize_mac, normalize_processor_id, MAX_IDENTIFIER_BYTES,
};

use serde::Deserialize;

/// One entry of `network_addresses[]`, on both events (`computer.network_addresses`) and computers.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub(crate) struct NetworkAddress {
    #[serde(default)]
    pub(crate) mac: Option<String>,
    #[serde(default)]
    ip: Option<String>,
}
