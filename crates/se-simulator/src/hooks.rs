//! The `/_sim/` test hooks: faults, scripted compromises and resolutions, raw events, bursts,
//! the clock, and read-outs for assertions. No auth and no rate limit: they are not SE's API.

use super::{catalog, Simulator};
use crate::envelope::json_response;
use crate::faults::FaultSpec;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

fn hook_error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

pub(super) async fn stats(State(sim): State<Simulator>) -> Response {
    Json(sim.stats()).into_response()
}

pub(super) async fn list_faults(State(sim): State<Simulator>) -> Response {
    Json(sim.pending_faults()).into_response()
}

pub(super) async fn add_fault(
    State(sim): State<Simulator>,
    Json(spec): Json<FaultSpec>,
) -> Response {
    match sim.inject_fault(spec) {
        Ok(()) => (StatusCode::CREATED, Json(sim.pending_faults())).into_response(),
        Err(e) => hook_error(StatusCode::BAD_REQUEST, e),
    }
}

pub(super) async fn clear_faults(State(sim): State<Simulator>) -> StatusCode {
    sim.clear_faults();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize, Default)]
pub(super) struct CompromiseRequest {
    /// Date the detection this many seconds in the past (a late upload).
    #[serde(default)]
    backdate_seconds: u64,
}

/// Body (optional): `{"backdate_seconds": N}`.
pub(super) async fn compromise(
    State(sim): State<Simulator>,
    Path(guid): Path<String>,
    body: Bytes,
) -> Response {
    let req: CompromiseRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CompromiseRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return hook_error(StatusCode::BAD_REQUEST, e),
        }
    };
    let backdate =
        chrono::Duration::seconds(req.backdate_seconds.min(i64::MAX as u64 / 1000) as i64);
    match sim.compromise_backdated(&guid, backdate) {
        Ok(detection_id) => Json(json!({
            "connector_guid": guid,
            "is_compromised": true,
            "detection_id": detection_id,
        }))
        .into_response(),
        Err(e) => hook_error(StatusCode::NOT_FOUND, e),
    }
}

pub(super) async fn resolve(State(sim): State<Simulator>, Path(guid): Path<String>) -> Response {
    match sim.resolve(&guid) {
        Ok(()) => Json(json!({"connector_guid": guid, "is_compromised": false})).into_response(),
        Err(e) => hook_error(StatusCode::NOT_FOUND, e),
    }
}

pub(super) async fn all_events(State(sim): State<Simulator>) -> Response {
    json_response(StatusCode::OK, sim.events_json())
}

/// Body: one event object, an array of them, or a `/v1/events` envelope.
pub(super) async fn add_events(State(sim): State<Simulator>, body: Bytes) -> Response {
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(e) => return hook_error(StatusCode::BAD_REQUEST, e),
    };
    let records = match split_events(text) {
        Ok(r) => r,
        Err(e) => return hook_error(StatusCode::BAD_REQUEST, e),
    };
    match sim.inject_events(records) {
        Ok(added) => (StatusCode::CREATED, Json(json!({ "added": added }))).into_response(),
        Err(e) => hook_error(StatusCode::BAD_REQUEST, e),
    }
}

/// The events of a hook body, each kept as its exact JSON text: one object, an array of them, or
/// an envelope whose `data` is either.
fn split_events(text: &str) -> Result<Vec<Box<RawValue>>, String> {
    #[derive(Deserialize)]
    struct Envelope {
        data: Box<RawValue>,
    }
    let data = match text.trim_start().as_bytes().first() {
        Some(b'{') if serde_json::from_str::<Envelope>(text).is_ok() => {
            serde_json::from_str::<Envelope>(text).map(|e| e.data)
        }
        _ => serde_json::from_str::<Box<RawValue>>(text),
    }
    .map_err(|e| e.to_string())?;
    let items = if data.get().trim_start().starts_with('[') {
        serde_json::from_str::<Vec<Box<RawValue>>>(data.get()).map_err(|e| e.to_string())?
    } else {
        vec![data]
    };
    match items.iter().all(|i| i.get().trim_start().starts_with('{')) {
        true => Ok(items),
        false => Err("every event must be a JSON object".to_string()),
    }
}

#[derive(Deserialize)]
pub(super) struct BurstRequest {
    count: usize,
    #[serde(default = "scan_started")]
    event_type_id: u64,
}

fn scan_started() -> u64 {
    catalog::SCAN_STARTED
}

pub(super) async fn burst(State(sim): State<Simulator>, Json(req): Json<BurstRequest>) -> Response {
    let at = sim.burst(req.count, req.event_type_id);
    let body = json!({ "added": req.count, "date": super::generate::event_date(at) });
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Deserialize)]
pub(super) struct AdvanceRequest {
    seconds: u64,
}

pub(super) async fn advance(
    State(sim): State<Simulator>,
    Json(req): Json<AdvanceRequest>,
) -> Response {
    sim.advance_clock(chrono::Duration::seconds(req.seconds as i64));
    Json(json!({ "now": super::generate::computer_date(sim.now()) })).into_response()
}

pub(super) async fn all_computers(State(sim): State<Simulator>) -> Response {
    Json(sim.computers()).into_response()
}
