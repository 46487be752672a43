//! `POST /v1/admin/what-if`: `trustgate what-if` inside the running instance, which holds the
//! store (sled lets one process hold it), so that asking "what if" never needs the production
//! gate stopped. The same replay as the CLI (`crate::whatif::WhatIfContext::run`), one at a
//! time (409 while one runs), its report the `--json` object (`schemas/what-if.v1.json`).
//!
//! Body: `{"policy": "<candidate TOML>", "since": "<RFC 3339>"?, "until": ...?,
//! "examples": N?}`. What the CLI prints besides the report (devices read back, records gone
//! from the events topic, unreadable audit records) travels in response headers, so that the
//! body stays exactly the schema's object.

use super::{error, AdminState};
use crate::whatif::DEFAULT_EXAMPLES;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Response header: how many devices' records were read back from the events topic.
pub const HEADER_DEVICES: &str = "trustgate-devices-read";
/// Response header: how many of those records are no longer on the events topic.
pub const HEADER_MISSING: &str = "trustgate-records-missing";
/// Response header: how many audit records were not JSON and were skipped.
pub const HEADER_UNREADABLE_AUDIT: &str = "trustgate-audit-unreadable";

/// The most examples one request may ask for: the report is one response body.
const MAX_EXAMPLES: usize = 10_000;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WhatIfBody {
    policy: String,
    since: Option<String>,
    until: Option<String>,
    examples: Option<usize>,
}

pub(super) async fn what_if(State(state): State<AdminState>, body: Bytes) -> Response {
    let body: WhatIfBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body: {e}")),
    };
    let time = |field: &str, value: &Option<String>| match value {
        None => Ok(None),
        Some(text) => crate::time::parse_rfc3339(text)
            .map(Some)
            .ok_or_else(|| format!("{field} must be an RFC 3339 time, got {text:?}")),
    };
    let (since, until) = match (time("since", &body.since), time("until", &body.until)) {
        (Ok(since), Ok(until)) => (since, until),
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    let examples = body.examples.unwrap_or(DEFAULT_EXAMPLES);
    if examples > MAX_EXAMPLES {
        return error(
            StatusCode::BAD_REQUEST,
            format!("examples may be at most {MAX_EXAMPLES}"),
        );
    }
    let candidate = match crate::config::policies_from_str(&body.policy, "the candidate policy") {
        Ok(candidate) => candidate,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Some(running) = state.whatif.try_start() else {
        return error(
            StatusCode::CONFLICT,
            "a what-if is already running on this instance; retry when it has answered",
        );
    };
    let (context, store, history) = (
        state.whatif.clone(),
        state.store.clone(),
        state.history.clone(),
    );
    let replayed = tokio::task::spawn_blocking(move || {
        // Held until the replay ends, even when the client has gone away meanwhile.
        let _running = running;
        context.run(&store, candidate, &history, since, until, examples)
    })
    .await;
    match replayed {
        Ok(Ok((report, stats))) => (
            [
                (HEADER_DEVICES, stats.devices.to_string()),
                (HEADER_MISSING, stats.missing.to_string()),
                (HEADER_UNREADABLE_AUDIT, stats.unreadable_audit.to_string()),
            ],
            Json(report.to_json()),
        )
            .into_response(),
        // Every failure is reading what exists (topics, store): retry later, not the body.
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
