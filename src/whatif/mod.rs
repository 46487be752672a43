//! What-if (`trustgate what-if`): the audited requests of a period replayed against a candidate
//! policy set, and how many decisions would change, and which.
//!
//! Owns the pure part: reading what the replay needs out of an audit record ([`Audited`]),
//! comparing each audited answer with the candidate's ([`Replayed`]) and the aggregation into a
//! [`WhatIfReport`] (`schemas/what-if.v1.json`), and reading that JSON back (the CLI prints a
//! running instance's report). No I/O here: the replay (reading the audit topic, deciding as of
//! each record's time with `Decider::decide_as_of` and `crate::history`) is in [`replay`], which
//! `trustgate what-if` and `POST /v1/admin/what-if` share.
//!
//! `before` and `after` are what was, and would be, *answered* (`decision`, `reason`), so a
//! report-only policy's answer is `allow`/`report_only` on either side; its would-be answer
//! (`would_decide`, `would_reason`) is carried alongside. A decision "changes" when the
//! answered `decision` (allow/deny) differs: that is what users and auth systems see. So
//! turning a report-only rollout into enforcement changes exactly the requests that were
//! recorded `would_decide: deny`, and a candidate that only renames the reason of an allow
//! changes nothing.

mod replay;

pub use replay::{replay, ReplayStats, WhatIfContext, WhatIfError, WhatIfRunning};

use crate::time::{format_millis, parse_rfc3339, Millis};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The default `--examples`.
pub const DEFAULT_EXAMPLES: usize = 20;

/// One answer: what was (or would be) answered, and under report-only what enforcement would
/// have answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// `allow` or `deny`.
    pub decision: String,
    /// The reason code.
    pub reason: String,
    /// Under a report-only policy: what enforcement would have answered.
    pub would_decide: Option<String>,
    /// With `would_decide`: its reason.
    pub would_reason: Option<String>,
}

impl Answered {
    /// From a decision response object (as sent, or as the audit recorded it); `None` when it
    /// has no `decision` or `reason`.
    pub fn of_response(response: &Value) -> Option<Answered> {
        let text = |k: &str| response[k].as_str().map(str::to_owned);
        Some(Answered {
            decision: text("decision")?,
            reason: text("reason")?,
            would_decide: text("would_decide"),
            would_reason: text("would_reason"),
        })
    }

    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("decision".into(), json!(self.decision));
        out.insert("reason".into(), json!(self.reason));
        if let Some(d) = &self.would_decide {
            out.insert("would_decide".into(), json!(d));
        }
        if let Some(r) = &self.would_reason {
            out.insert("would_reason".into(), json!(r));
        }
        Value::Object(out)
    }
}

/// What the replay needs of one audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct Audited {
    /// The request as received, re-encoded (the body the candidate decides).
    pub request: Vec<u8>,
    /// The time whose device state the audited answer was based on: the response's `as_of`
    /// (a decision at a past time) or else its `decided_at`.
    pub at: Millis,
    /// The request id.
    pub request_id: String,
    /// The request's `application`.
    pub application: String,
    /// The request's `user`, when it gave one.
    pub user: Option<String>,
    /// The audited answer.
    pub before: Answered,
}

impl Audited {
    /// Reads an audit record (`schemas/audit-record.v1.json`); `None` for one that cannot be
    /// replayed (no request object, no response time or answer).
    pub fn from_record(record: &Value) -> Option<Audited> {
        let (request, response) = (&record["request"], &record["response"]);
        if !request.is_object() {
            return None;
        }
        let time = |k: &str| response[k].as_str().and_then(parse_rfc3339);
        Some(Audited {
            request: serde_json::to_vec(request).ok()?,
            at: time("as_of").or_else(|| time("decided_at"))?,
            request_id: response["request_id"]
                .as_str()
                .or(request["request_id"].as_str())?
                .to_owned(),
            application: request["application"].as_str().unwrap_or("").to_owned(),
            user: request["user"].as_str().map(str::to_owned),
            before: Answered::of_response(response)?,
        })
    }
}

/// One audited request and the candidate's answer to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// The request id.
    pub request_id: String,
    /// The request's application.
    pub application: String,
    /// The request's user.
    pub user: Option<String>,
    /// When the audited answer was based (see [`Audited::at`]).
    pub at: Millis,
    /// What was answered.
    pub before: Answered,
    /// What the candidate answers.
    pub after: Answered,
}

impl Replayed {
    /// The audited request with the candidate's answer.
    pub fn new(audited: Audited, after: Answered) -> Replayed {
        Replayed {
            request_id: audited.request_id,
            application: audited.application,
            user: audited.user,
            at: audited.at,
            before: audited.before,
            after,
        }
    }

    /// Whether the answered decision differs.
    pub fn changed(&self) -> bool {
        self.before.decision != self.after.decision
    }

    fn to_json(&self) -> Value {
        json!({
            "request_id": self.request_id,
            "application": self.application,
            "user": self.user,
            "at": format_millis(self.at),
            "before": self.before.to_json(),
            "after": self.after.to_json(),
        })
    }

    fn from_json(value: &Value) -> Option<Replayed> {
        Some(Replayed {
            request_id: value["request_id"].as_str()?.to_owned(),
            application: value["application"].as_str()?.to_owned(),
            user: value["user"].as_str().map(str::to_owned),
            at: value["at"].as_str().and_then(parse_rfc3339)?,
            before: Answered::of_response(&value["before"])?,
            after: Answered::of_response(&value["after"])?,
        })
    }
}

/// How many decisions a candidate would change, and which.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WhatIfReport {
    /// Audited requests replayed.
    pub requests: usize,
    /// Of those, how many would be answered another decision.
    pub changed: usize,
    /// Changed requests by application.
    pub by_application: BTreeMap<String, usize>,
    /// Changed requests by user ([`NO_USER`] for requests without one).
    pub by_user: BTreeMap<String, usize>,
    /// Changed requests by the candidate's reason (why they would change).
    pub by_reason: BTreeMap<String, usize>,
    /// The first changed requests, in the order given (decision-time order), up to the limit.
    pub examples: Vec<Replayed>,
    /// Audit records that could not be replayed (no request object, or no request id).
    pub skipped: usize,
}

/// The `by_user` key of requests that carried no `user`.
pub const NO_USER: &str = "(none)";

impl WhatIfReport {
    /// Compares every replayed request, keeping the first `examples` changed ones in full.
    pub fn compare(replayed: impl IntoIterator<Item = Replayed>, examples: usize) -> Self {
        let mut report = WhatIfReport::default();
        for r in replayed {
            report.requests += 1;
            if !r.changed() {
                continue;
            }
            report.changed += 1;
            *report
                .by_application
                .entry(r.application.clone())
                .or_default() += 1;
            let user = r.user.clone().unwrap_or_else(|| NO_USER.to_owned());
            *report.by_user.entry(user).or_default() += 1;
            *report.by_reason.entry(r.after.reason.clone()).or_default() += 1;
            if report.examples.len() < examples {
                report.examples.push(r);
            }
        }
        report
    }

    /// The `--json` object (`schemas/what-if.v1.json`).
    pub fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "changed": self.changed,
            "by_application": self.by_application,
            "by_user": self.by_user,
            "by_reason": self.by_reason,
            "examples": self.examples.iter().map(Replayed::to_json).collect::<Vec<_>>(),
            "skipped": self.skipped,
        })
    }

    /// Reads [`WhatIfReport::to_json`]'s object back; `None` when it is not one.
    pub fn from_json(value: &Value) -> Option<WhatIfReport> {
        let count = |k: &str| value[k].as_u64().map(|n| n as usize);
        let counts = |k: &str| -> Option<BTreeMap<String, usize>> {
            match &value[k] {
                Value::Null => Some(BTreeMap::new()),
                Value::Object(map) => map
                    .iter()
                    .map(|(k, n)| Some((k.clone(), n.as_u64()? as usize)))
                    .collect(),
                _ => None,
            }
        };
        Some(WhatIfReport {
            requests: count("requests")?,
            changed: count("changed")?,
            by_application: counts("by_application")?,
            by_user: counts("by_user")?,
            by_reason: counts("by_reason")?,
            examples: value["examples"]
                .as_array()?
                .iter()
                .map(Replayed::from_json)
                .collect::<Option<_>>()?,
            skipped: count("skipped").unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests;
