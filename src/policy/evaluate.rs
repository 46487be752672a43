//! The decision procedure. Rules are checked in a fixed order and the first that applies gives
//! the reason; the order is the product's contract (README, "Evaluation order").

use super::matching::{match_device, DeviceDirectory, MatchedBy, RequestIdentifiers};
use super::{OnStale, Policy, PolicyMode, UnknownDevice};
use crate::fold::{DeviceSummary, SummaryGuid};
use crate::se::Platform;
use crate::time::Millis;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    Allow,
    Deny,
}

/// Why a decision came out as it did. The names are the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reason {
    /// Rule 1, and rule 7 for a request with no identifier at all.
    InvalidRequest,
    /// Rule 2: the policy allows all endpoints.
    AllowAllEndpoints,
    /// Rule 3: the management integration does not trust the device.
    UntrustedEndpoint,
    /// Rule 4: the policy does not let SE block compromised endpoints.
    SeCheckOff,
    /// Rule 6: SE's check does not cover the device's platform.
    PlatformNotChecked,
    /// Rule 7: SE does not know the device; the policy's `unknown_device` decides.
    NotInSecureEndpoint,
    /// Rule 8.
    Compromised,
    /// Rule 8.
    TrustedNotCompromised,
    /// The store could not be read: never an allow.
    StoreUnavailable,
    /// The liveness age (see [`crate::liveness`]) is over the policy's `stale_after` and its
    /// `on_stale` is `deny`.
    StateStale,
    /// The instance is not ready (ingest has not caught up since this start, or the store was
    /// never fed): state cannot be trusted yet, so never an allow.
    NotReady,
    /// The policy is `report_only`: allowed whatever the rules say; what they say is in
    /// [`Decision::would`].
    ReportOnly,
}

/// What the decision says about the device it matched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DeviceVerdict {
    pub(crate) connector_guid: Option<SummaryGuid>,
    pub(crate) matched_by: Option<MatchedBy>,
    pub(crate) ambiguous: bool,
    /// `None` when SE state was not consulted.
    pub(crate) compromised: Option<bool>,
    pub(crate) state_as_of: Option<Millis>,
    /// The reported device's latest inventory observation time (for the audit).
    pub(crate) observed_at: Option<Millis>,
    /// The detection ids of the reported device's open compromise-class events: what made it
    /// compromised (for the audit).
    pub(crate) detection_ids: Vec<String>,
}

/// What [`evaluate`] decided: the outcome, the reason (the first rule that applied) and the
/// device it matched. [`DecisionResponse`](crate::decision::DecisionResponse) puts it on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub(crate) outcome: Outcome,
    pub(crate) reason: Reason,
    pub(crate) device: DeviceVerdict,
    /// Set with `invalid_request` and `store_unavailable`: what was wrong.
    pub(crate) error: Option<String>,
    /// Set when the liveness age is over the policy's `stale_after`: that age, or `None` inside
    /// when no source has ever written.
    pub(crate) stale: Option<Option<Duration>>,
    /// Set under a `report_only` policy: what enforcement would have answered.
    pub(crate) would: Option<(Outcome, Reason)>,
}

impl Decision {
    fn new(outcome: Outcome, reason: Reason) -> Decision {
        Decision {
            outcome,
            reason,
            device: DeviceVerdict::default(),
            error: None,
            stale: None,
            would: None,
        }
    }

    /// Rule 1: the request could not be read or is invalid.
    pub(crate) fn invalid(error: impl Into<String>) -> Decision {
        Decision {
            error: Some(error.into()),
            ..Decision::new(Outcome::Deny, Reason::InvalidRequest)
        }
    }
}

/// What the procedure knows besides the request and the state.
#[derive(Debug, Clone, Copy)]
pub struct EvalContext {
    /// The fold's `resolution_grace` in ms, for the compromise rule.
    pub grace_millis: i64,
    /// Time since the newest record or heartbeat from any source (the liveness age, exported
    /// as `feed_age_seconds`); `None` when there was none.
    pub liveness_age: Option<Duration>,
    /// Whether the state behind the directory can be trusted: ingest caught up since this
    /// start and the store holds at least one record or heartbeat. Passed in, so that
    /// evaluation stays pure.
    pub ready: bool,
}

/// The parts of a valid request the procedure reads.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub(crate) trusted: bool,
    pub(crate) os: Option<Platform>,
    /// The identifiers the device is matched by, normalised.
    pub ids: RequestIdentifiers,
}

/// Decides one valid request (rules 2–8; rule 1 is the caller's, see `Decision::invalid`).
pub fn evaluate(
    policy: &Policy,
    subject: &Subject,
    dir: &impl DeviceDirectory,
    ctx: &EvalContext,
) -> Decision {
    let stale = ctx
        .liveness_age
        .is_none_or(|age| age > policy.stale_after)
        .then_some(ctx.liveness_age);
    let decision = Decision {
        stale,
        ..decide(policy, subject, dir, ctx, stale.is_some())
    };
    match policy.mode {
        PolicyMode::Enforce => decision,
        // Whatever the rules said (not ready, store unavailable included): report-only never
        // enforces, which is what the operator asked for by setting it.
        PolicyMode::ReportOnly => Decision {
            outcome: Outcome::Allow,
            reason: Reason::ReportOnly,
            would: Some((decision.outcome, decision.reason)),
            ..decision
        },
    }
}

fn decide(
    policy: &Policy,
    subject: &Subject,
    dir: &impl DeviceDirectory,
    ctx: &EvalContext,
    stale: bool,
) -> Decision {
    let grace_millis = ctx.grace_millis;
    if !policy.require_trusted {
        return Decision::new(Outcome::Allow, Reason::AllowAllEndpoints);
    }
    if !subject.trusted {
        return Decision::new(Outcome::Deny, Reason::UntrustedEndpoint);
    }
    if !policy.block_compromised {
        return Decision::new(Outcome::Allow, Reason::SeCheckOff);
    }
    // Before any device-state rule: a store still catching up (or never fed) would answer
    // `not_in_secure_endpoint` or `trusted_not_compromised` for a device it simply has not
    // read yet, and with `unknown_device = "allow"` that is a wrongful allow.
    if !ctx.ready {
        return Decision::new(Outcome::Deny, Reason::NotReady);
    }
    if stale && policy.on_stale == OnStale::Deny {
        return Decision::new(Outcome::Deny, Reason::StateStale);
    }
    let matched = match match_device(dir, &subject.ids) {
        Ok(m) => m,
        Err(e) => {
            return Decision {
                error: Some(e.to_string()),
                ..Decision::new(Outcome::Deny, Reason::StoreUnavailable)
            }
        }
    };
    // The device reported is the first compromised one, else the first (devices are sorted by
    // GUID); it is moved out of the match, not copied.
    let compromised_at = matched
        .devices
        .iter()
        .position(|d| d.is_compromised(grace_millis));
    let any_compromised = compromised_at.is_some();
    let found = matched.devices.len();
    let os = platform(&matched.devices, subject.os);
    let reported = matched.devices.into_iter().nth(compromised_at.unwrap_or(0));
    let mut verdict = DeviceVerdict {
        matched_by: Some(matched.by),
        ambiguous: found > 1,
        compromised: None,
        state_as_of: reported.as_ref().and_then(|d| d.newest_record_at),
        observed_at: reported.as_ref().and_then(|d| d.observation).map(|o| o.at),
        detection_ids: reported
            .as_ref()
            .map(|d| open_detection_ids(d, grace_millis))
            .unwrap_or_default(),
        connector_guid: reported.map(|d| d.connector_guid),
    };
    if !os.is_none_or(Platform::se_checked) {
        return Decision {
            device: verdict,
            ..Decision::new(Outcome::Allow, Reason::PlatformNotChecked)
        };
    }
    if subject.ids.is_empty() {
        return Decision::invalid("device has no identifier: a trusted endpoint always has one");
    }
    if found == 0 {
        let outcome = match policy.unknown_device {
            UnknownDevice::Allow => Outcome::Allow,
            UnknownDevice::Deny => Outcome::Deny,
        };
        return Decision {
            device: verdict,
            ..Decision::new(outcome, Reason::NotInSecureEndpoint)
        };
    }
    verdict.compromised = Some(any_compromised);
    let (outcome, reason) = if any_compromised {
        (Outcome::Deny, Reason::Compromised)
    } else {
        (Outcome::Allow, Reason::TrustedNotCompromised)
    };
    Decision {
        device: verdict,
        ..Decision::new(outcome, reason)
    }
}

/// Rule 6: SE saying Windows or macOS wins over the request (a device cannot talk its way out
/// of the check); otherwise the request's `os`; otherwise SE's; otherwise unknown (`None`).
fn platform(devices: &[DeviceSummary], requested: Option<Platform>) -> Option<Platform> {
    let mut from_se = devices.iter().filter_map(|d| d.platform);
    from_se
        .clone()
        .find(|p| p.se_checked())
        .or(requested)
        .or_else(|| from_se.next())
}

/// For the audit: the detection ids of a device's compromise-class events that its latest
/// observation has not cleared (what made it compromised), sorted, each once.
fn open_detection_ids(device: &DeviceSummary, grace_millis: i64) -> Vec<String> {
    let mut ids: Vec<String> = device
        .open_events(grace_millis)
        .filter_map(|e| e.detection_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}
