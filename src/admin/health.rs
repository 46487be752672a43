//! Components that stopped for good while the process keeps serving.
//!
//! A source failing for a reason no retry can fix (the poller's 401/403) must not take decisions
//! down with it: auth systems keep their answers, the liveness age grows into `stale`, and `/healthz`
//! says which component failed and why until an operator acts.

use crate::locks;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Shared record of components that stopped for good and why, keyed by component name; what
/// `/healthz` reports. Cheap to clone.
#[derive(Clone, Default, Debug)]
pub struct ComponentHealth(Arc<Mutex<BTreeMap<&'static str, String>>>);

impl ComponentHealth {
    pub(crate) fn fail(&self, component: &'static str, reason: String) {
        locks::lock(&self.0).insert(component, reason);
    }

    /// Failed components and why; empty when healthy.
    pub(crate) fn failures(&self) -> BTreeMap<&'static str, String> {
        locks::lock(&self.0).clone()
    }
}
