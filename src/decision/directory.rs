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
        // A corrupt value fails only the decisions that reach this device (deny
        // `store_unavailable`); the key is logged so an operator can find it.
        Ok(Store::device(self, guid).inspect_err(|e| {
            if let StoreError::Corrupt { key, reason } = e {
                tracing::error!(key = %key, reason = %reason, "Stored device value is corrupt; deciding store_unavailable.");
            }
        })?)
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

#[cfg(test)]
mod corrupt_tests {
    use crate::fold::{DeviceState, Observation};
    use crate::policy::{
        evaluate, EvalContext, OnStale, Outcome, Policy, Reason, RequestIdentifiers, Subject,
        UnknownDevice,
    };
    use crate::store::{ChunkUpdate, Store, DEFAULT_CACHE_BYTES};

    fn decide(store: &Store, guid: &str) -> (Outcome, Reason) {
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
            ids: RequestIdentifiers {
                connector_guid: Some(guid.into()),
                ..Default::default()
            },
        };
        let ctx = EvalContext {
            grace_millis: 600_000,
            liveness_age: Some(std::time::Duration::from_secs(1)),
            ready: true,
        };
        let d = evaluate(&policy, &subject, store, &ctx);
        (d.outcome, d.reason)
    }

    /// Issue #10 item 6: a corrupt stored device value denies that device with
    /// `store_unavailable` and leaves the others as they were, also after a reopen.
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
        assert_eq!(
            decide(&store, "g1"),
            (Outcome::Deny, Reason::StoreUnavailable)
        );
        assert_eq!(
            decide(&store, "g2"),
            (Outcome::Allow, Reason::TrustedNotCompromised)
        );
        drop(store);
        let store = Store::open(dir.path(), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(
            decide(&store, "g1"),
            (Outcome::Deny, Reason::StoreUnavailable)
        );
        assert_eq!(
            decide(&store, "g2"),
            (Outcome::Allow, Reason::TrustedNotCompromised)
        );
    }
}
