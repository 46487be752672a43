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

use crate::liveness::LivenessClock;
use crate::policy::{evaluate, Decision, DeviceDirectory, EvalContext, Policies};
use crate::time::now_millis;
use std::sync::Arc;

/// What became of a request body.
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
}

impl<D: DeviceDirectory> Decider<D> {
    /// A decider over `directory`; `grace_millis` is the fold's `resolution_grace` (for the
    /// compromise rule) and `liveness` gives the age that makes a decision `stale`.
    pub fn new(
        policies: Arc<Policies>,
        directory: D,
        grace_millis: i64,
        liveness: LivenessClock,
    ) -> Self {
        Decider {
            policies,
            directory,
            grace_millis,
            liveness,
        }
    }

    /// Decides one request body.
    pub fn decide(&self, body: &[u8]) -> Answer {
        match request::parse(body) {
            Ok(req) => Answer::Reply(self.decide_valid(&req)),
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

    fn decide_valid(&self, req: &ValidRequest) -> DecisionResponse {
        let policy = self.policies.for_application(&req.application);
        let ctx = EvalContext {
            grace_millis: self.grace_millis,
            liveness_age: self.liveness.age(),
        };
        let decision = evaluate(policy, &req.subject, &self.directory, &ctx);
        DecisionResponse::new(
            req.request_id.clone(),
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
