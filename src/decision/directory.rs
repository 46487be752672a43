//! The store as the device directory decisions read: every lookup goes to the store's in-memory
//! decision index (`crate::index`), none to sled. It lives here, not in `policy` (which stays
//! pure and never names the store's handle). A [`StoreError`] becomes policy's
//! [`DirectoryError`] with its text unchanged, so a `store_unavailable` decision still says what
//! the store said (for a corrupt device value, its key).

use crate::fold::DeviceSummary;
use crate::policy::{DeviceDirectory, DirectoryError};
use crate::store::{Store, StoreError};

impl From<StoreError> for DirectoryError {
    fn from(e: StoreError) -> Self {
        DirectoryError::new(e)
    }
}

impl DeviceDirectory for Store {
    fn device(&self, guid: &str) -> Result<Option<DeviceSummary>, DirectoryError> {
        Ok(logged(Store::device_summary(self, guid))?)
    }
    fn guids_by_processor_id(&self, id: &str) -> Result<Vec<String>, DirectoryError> {
        Ok(logged(Store::guids_by_processor_id(self, id))?)
    }
    fn guids_by_mac(&self, mac: &str) -> Result<Vec<String>, DirectoryError> {
        Ok(logged(Store::guids_by_mac(self, mac))?)
    }
    fn guids_by_hostname(&self, hostname: &str) -> Result<Vec<String>, DirectoryError> {
        Ok(logged(Store::guids_by_hostname(self, hostname))?)
    }
    // One index lookup (one read lock) per level, summaries included, instead of the GUIDs
    // and then each device by GUID.
    fn devices_by_processor_id(&self, id: &str) -> Result<Vec<DeviceSummary>, DirectoryError> {
        Ok(logged(Store::devices_by_processor_id(self, id))?)
    }
    fn devices_by_macs(&self, macs: &[String]) -> Result<Vec<DeviceSummary>, DirectoryError> {
        Ok(logged(Store::devices_by_macs(self, macs))?)
    }
    fn devices_by_hostname(&self, hostname: &str) -> Result<Vec<DeviceSummary>, DirectoryError> {
        Ok(logged(Store::devices_by_hostname(self, hostname))?)
    }
}

/// A failed lookup is logged with what the store said (for a corrupt value, its key) so that
/// an operator can find it; the decision denies `store_unavailable` with the same text.
fn logged<T>(result: Result<T, StoreError>) -> Result<T, StoreError> {
    result.inspect_err(|e| {
        tracing::error!(error = %e, "The store cannot answer a lookup; deciding store_unavailable.");
    })
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

#[cfg(test)]
mod corrupt_tests {
    use crate::fold::{DeviceState, Observation};
    use crate::policy::{
        evaluate, EvalContext, OnStale, Outcome, Policy, Reason, RequestIdentifiers, Subject,
        UnknownDevice,
    };
    use crate::store::{ChunkUpdate, Store, DEFAULT_CACHE_BYTES};

    fn decide(store: &Store, guid: &str) -> (Outcome, Reason) {
        let ids = RequestIdentifiers {
            connector_guid: Some(guid.into()),
            ..Default::default()
        };
        decide_by(store, ids)
    }

    fn decide_by(store: &Store, ids: RequestIdentifiers) -> (Outcome, Reason) {
        let policy = Policy {
            name: "p".into(),
            require_trusted: true,
            block_compromised: true,
            unknown_device: UnknownDevice::Allow,
            stale_after: std::time::Duration::from_secs(900),
            on_stale: OnStale::LastKnown,
            mode: crate::policy::PolicyMode::Enforce,
        };
        let subject = Subject {
            trusted: true,
            os: None,
            ids,
        };
        let ctx = EvalContext {
            grace_millis: 600_000,
            liveness_age: Some(std::time::Duration::from_secs(1)),
            ready: true,
        };
        let d = evaluate(&policy, &subject, store, &ctx);
        (d.outcome, d.reason)
    }

    /// Issue #10 item 6: a corrupt stored device value (damaged on disk, seen when the store
    /// opens) denies that device with `store_unavailable` and leaves the others as they were.
    /// A lookup by hostname, MAC or processor id denies too while the corrupt device exists:
    /// its identifiers are unknown, and "unknown device" would allow it.
    #[test]
    fn a_corrupt_device_value_denies_only_that_device() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        let mut update = ChunkUpdate::default();
        for guid in ["g1", "g2"] {
            let mut state = DeviceState::new(guid);
            state.observation = Some(Observation {
                at: 1,
                compromised: false,
            });
            update.devices.insert(guid.into(), (None, state));
        }
        store.apply(&update).unwrap();
        assert_eq!(decide(&store, "g1").1, Reason::TrustedNotCompromised);
        store.write_raw_for_test(b"Dg1", b"\x01\xff\xff\xff");
        store.flush_blocking().unwrap();
        drop(store);
        let store = crate::store::reopen_for_test(dir.path());
        assert_eq!(
            decide(&store, "g1"),
            (Outcome::Deny, Reason::StoreUnavailable)
        );
        assert_eq!(
            decide(&store, "g2"),
            (Outcome::Allow, Reason::TrustedNotCompromised)
        );
        let by_host = RequestIdentifiers {
            hostname: Some("nobody-knows".into()),
            ..Default::default()
        };
        assert_eq!(
            decide_by(&store, by_host),
            (Outcome::Deny, Reason::StoreUnavailable)
        );
    }
}
