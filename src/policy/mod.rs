//! Trusted-endpoint policies and their evaluation.
//!
//! Owns the policy model (a global policy plus named custom policies selected by application)
//! and [`evaluate`], the pure decision procedure: a validated request, the policy, and a
//! read-only view of device state in; a decision out. It does no I/O of its own: device state
//! comes through the [`DeviceDirectory`] trait: the sled store implements it on the decision
//! side (`decision/directory.rs`), [`MemoryDirectory`] in memory for tests and benchmarks.
//! Policy never names the store: a directory's failure is policy's own [`DirectoryError`].

mod evaluate;
mod matching;
mod memory;
#[cfg(test)]
mod tests;

pub use evaluate::{evaluate, Decision, EvalContext, Subject};
pub use matching::{DeviceDirectory, DirectoryError, RequestIdentifiers};
pub use memory::MemoryDirectory;

pub(crate) use evaluate::{Outcome, Reason};
pub(crate) use matching::MatchedBy;
// The audit reader finds a device by hostname with the same rule as decisions.
pub(crate) use matching::hostnames_match;
// The store's tests check that the sled store and the in-memory model match alike.
#[cfg(test)]
pub(crate) use matching::match_device;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What to answer for a trusted device that Secure Endpoint does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownDevice {
    /// Allow it.
    Allow,
    /// Deny it.
    Deny,
}

/// What to do when the liveness age is over the policy's `stale_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStale {
    /// Answer from the last known state, flagging the response `stale: true`.
    LastKnown,
    /// Deny trusted devices with reason `state_stale` (after rules 1–4).
    Deny,
}

/// Whether a policy's decisions are enforced or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Answer what the rules decide (the default).
    #[default]
    Enforce,
    /// Always answer `allow` (reason `report_only`) and record what enforcement would have
    /// answered (`would_decide`, `would_reason`): for rolling blocking out safely.
    ReportOnly,
}

/// One policy: Duo's Trusted Endpoints settings for a set of applications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `global`, or the custom policy's name; shared, since every response names its policy.
    pub name: Arc<str>,
    /// "Require endpoints to be trusted" (true) or "Allow all endpoints" (false).
    pub require_trusted: bool,
    /// "Allow Cisco Secure Endpoint to block compromised endpoints".
    pub block_compromised: bool,
    /// What to answer for a trusted device SE does not know (rule 7).
    pub unknown_device: UnknownDevice,
    /// How old the newest record or heartbeat from any source (the liveness age) may be.
    pub stale_after: Duration,
    /// What to do when the liveness age is over `stale_after`.
    pub on_stale: OnStale,
    /// Enforce the decision, or only report it.
    pub mode: PolicyMode,
}

/// The global policy and the custom policies by application.
#[derive(Debug, Clone)]
pub struct Policies {
    /// Applies to every application without a custom policy.
    pub global: Policy,
    /// Custom policies, by the application name a request gives.
    pub by_application: HashMap<String, Policy>,
}

impl Policies {
    /// Every policy: the global one, then the custom ones (a custom policy that covers several
    /// applications comes once per application).
    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        std::iter::once(&self.global).chain(self.by_application.values())
    }

    /// The policy for an application: its custom policy, else the global one.
    pub(crate) fn for_application(&self, application: &str) -> &Policy {
        self.by_application.get(application).unwrap_or(&self.global)
    }
}
