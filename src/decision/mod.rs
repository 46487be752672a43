//! Decisions: request/response contract, the shared decide path and the Kafka decision worker.
//!
//! [`Decider`] is the one code path from request bytes to a response; the Kafka worker
//! (`worker`), the admin HTTP endpoint and `trustgate decide` all call it, so they cannot
//! disagree. Reply routing (Spring Kafka's request/reply headers) lives in [`reply`]; the
//! pipelined reply loop the worker runs (and the bench's echo floor with it) in [`pipeline`].
//! `directory.rs` makes the sled store the [`DeviceDirectory`] that decisions read.

mod directory;
pub mod pipeline;
pub mod reply;
pub mod request;
mod response;
pub(crate) mod worker;

pub use request::{InvalidRequest, ValidRequest};
pub use response::DecisionResponse;

use crate::ingest::IngestStatus;
use crate::liveness::LivenessClock;
use crate::policy::{evaluate, Decision, DeviceDirectory, EvalContext, Policies};
use crate::time::now_millis;
use std::sync::Arc;

/// What became of a request body.
// Nearly every answer is a reply; boxing it would allocate once per decision to shrink the rare
// unanswerable one.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Answer {
    /// A response to send (possibly `invalid_request`).
    Reply(DecisionResponse),
    /// No `request_id` could be read: nobody can be answered. Kafka dead-letters these; HTTP
    /// answers 400.
    Unanswerable(String),
}

/// Decides requests against device state under the configured policies.
#[derive(Clone)]
pub struct Decider<D> {
    policies: Arc<Policies>,
    directory: D,
    grace_millis: i64,
    liveness: LivenessClock,
    /// Whether ingest caught up since this start: half of readiness (the other half is a
    /// store that was ever fed, which the liveness clock knows).
    ingest: IngestStatus,
}

impl<D: DeviceDirectory> Decider<D> {
    /// A decider over `directory`; `grace_millis` is the fold's `resolution_grace` (for the
    /// compromise rule) and `liveness` gives the age that makes a decision `stale`.
    pub fn new(
        policies: Arc<Policies>,
        directory: D,
        grace_millis: i64,
        liveness: LivenessClock,
        ingest: IngestStatus,
    ) -> Self {
        Decider {
            policies,
            directory,
            grace_millis,
            liveness,
            ingest,
        }
    }

    /// Ready: ingest caught up with every events partition since this start, and the store
    /// holds at least one applied record or heartbeat (a never-fed store knows no device, so
    /// every answer from it would be the `unknown_device` default).
    pub fn is_ready(&self) -> bool {
        self.ingest.is_caught_up() && self.liveness.newest().is_some()
    }

    /// Decides one request body.
    pub fn decide(&self, body: &[u8]) -> Answer {
        match request::parse_borrowed(body) {
            Ok(req) => Answer::Reply(self.decide_valid(req)),
            Err(InvalidRequest {
                request_id: Some(id),
                error,
            }) => Answer::Reply(self.invalid(id, error)),
            Err(InvalidRequest {
                request_id: None,
                error,
            }) => Answer::Unanswerable(error),
        }
    }

    /// Decides one request body as of a past time `at` (the body's `"at"`, or why it is not a
    /// time: then `invalid_request`), against `past`: the device states at that time of the
    /// devices the request names (`history::HistorySource::past_directory`). The response
    /// carries `as_of`. Readiness still applies (an instance catching up lacks records); the
    /// feed's age does not (it is about now, not about then).
    pub fn decide_as_of<E: DeviceDirectory>(
        &self,
        body: &[u8],
        at: Result<crate::time::Millis, String>,
        past: impl FnOnce(&request::ValidRequest) -> E,
    ) -> Answer {
        let req = match request::parse(body) {
            Ok(req) => req,
            Err(InvalidRequest {
                request_id: Some(id),
                error,
            }) => return Answer::Reply(self.invalid(id, error)),
            Err(InvalidRequest {
                request_id: None,
                error,
            }) => return Answer::Unanswerable(error),
        };
        let at = match at {
            Ok(at) => at,
            Err(error) => return Answer::Reply(self.invalid(req.request_id.clone(), error)),
        };
        let policy = self.policies.for_application(&req.application);
        let ctx = EvalContext {
            grace_millis: self.grace_millis,
            liveness_age: Some(std::time::Duration::ZERO),
            ready: self.is_ready(),
        };
        let directory = past(&req);
        let decision = evaluate(policy, &req.subject, &directory, &ctx);
        Answer::Reply(
            DecisionResponse::new(
                req.request_id.clone(),
                policy.name.clone(),
                decision,
                now_millis(),
            )
            .with_as_of(at),
        )
    }

    fn decide_valid(&self, req: request::BorrowedRequest<'_>) -> DecisionResponse {
        let policy = self.policies.for_application(&req.application);
        let ctx = EvalContext {
            grace_millis: self.grace_millis,
            liveness_age: self.liveness.age(),
            ready: self.is_ready(),
        };
        let decision = evaluate(policy, &req.subject, &self.directory, &ctx);
        DecisionResponse::new(
            req.request_id.into_owned(),
            policy.name.clone(),
            decision,
            now_millis(),
        )
    }

    /// An `invalid_request` answer (rule 1), e.g. for a refused reply topic.
    fn invalid(&self, request_id: String, error: String) -> DecisionResponse {
        DecisionResponse::new(
            request_id,
            self.policies.global.name.clone(),
            Decision::invalid(error),
            now_millis(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{MemoryDirectory, OnStale, Policy, Reason, UnknownDevice};

    fn decider(ingest: IngestStatus, liveness: LivenessClock) -> Decider<MemoryDirectory> {
        let global = Policy {
            name: "global".into(),
            require_trusted: true,
            block_compromised: true,
            unknown_device: UnknownDevice::Allow,
            stale_after: std::time::Duration::from_secs(900),
            on_stale: OnStale::LastKnown,
            mode: crate::policy::PolicyMode::Enforce,
        };
        let policies = Policies {
            global,
            by_application: Default::default(),
        };
        Decider::new(
            Arc::new(policies),
            MemoryDirectory::default(),
            600_000,
            liveness,
            ingest,
        )
    }

    fn reason(d: &Decider<MemoryDirectory>) -> Reason {
        let body = br#"{"request_id":"r","application":"vpn","device":{"trusted":true,"hostname":"nobody"}}"#;
        match d.decide(body) {
            Answer::Reply(resp) => resp.reason,
            Answer::Unanswerable(e) => panic!("{e}"),
        }
    }

    /// Issue #10 item 1: both halves of readiness are needed; either missing denies
    /// `not_ready` where `unknown_device = "allow"` would otherwise allow.
    #[test]
    fn ready_needs_caught_up_and_a_fed_store() {
        let fed = || LivenessClock::starting_at(Some(now_millis()));
        let catching_up = decider(IngestStatus::default(), fed());
        assert_eq!(reason(&catching_up), Reason::NotReady);
        let never_fed = decider(IngestStatus::offline(), LivenessClock::default());
        assert_eq!(reason(&never_fed), Reason::NotReady);
        let ready = decider(IngestStatus::offline(), fed());
        assert!(ready.is_ready());
        assert_eq!(reason(&ready), Reason::NotInSecureEndpoint);
    }
}
