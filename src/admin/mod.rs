//! The admin HTTP listener: `POST /v1/decide`, `GET /v1/devices/{guid|hostname|mac}`,
//! `GET /v1/devices/{id}/history`, `POST`/`GET /v1/admin/replay` (the online replay, see
//! `crate::replay`), `POST /v1/admin/what-if` (`whatif`), `GET /healthz` and `GET /readyz`.
//!
//! `/v1/decide` runs the same [`Decider`] as the Kafka worker, for callers that cannot speak
//! Kafka and for `trustgate decide` while a `run` holds the store; with `"at"` in the body it
//! decides on the device's state at that time (`crate::history`). Every error body is JSON.

mod devices;
mod guard;
mod health;
mod whatif;

pub use devices::{lookup, DeviceLookup, DeviceView, EventView};
pub use guard::{AdminAccess, AdminLimits};
pub use health::ComponentHealth;
pub use whatif::{HEADER_DEVICES, HEADER_MISSING, HEADER_UNREADABLE_AUDIT};

use crate::audit::{AuditSink, AuditSource};
use crate::decision::{Answer, Decider};
use crate::history::{requested_at, HistoryError, HistoryQuery, HistorySource};
use crate::ingest::IngestStatus;
use crate::liveness::LivenessClock;
use crate::policy::Reason;
use crate::store::Store;
use crate::telemetry::metrics;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the admin handlers share; cloned into each request.
#[derive(Clone)]
pub struct AdminState {
    /// Answers `POST /v1/decide`: the same decide path as the Kafka worker.
    pub decider: Decider<Store>,
    /// Every `/v1/decide` answer is also handed here (without waiting) for the audit topic.
    pub audit: AuditSink,
    /// Read by `GET /v1/devices/{id}`.
    pub store: Store,
    /// Catch-up, lag and broker reachability, for `/readyz` and `/metrics`.
    pub ingest: IngestStatus,
    /// The fold's `resolution_grace` in ms: device views apply the compromise rule with it.
    pub grace_millis: i64,
    /// The liveness age behind `/readyz`'s `stale` and `feed_age_seconds`.
    pub liveness: LivenessClock,
    /// How old the liveness age may be before readiness fails (the global policy's `stale_after`).
    pub stale_after: Duration,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Components that stopped for good: `/healthz` fails while any has.
    pub health: ComponentHealth,
    /// Reads devices' records back from the events topic: `GET /v1/devices/{id}/history` and
    /// decisions at a past time.
    pub history: HistorySource,
    /// `POST /v1/admin/replay` starts it, `GET /v1/admin/replay` shows its progress.
    pub replay: crate::replay::OnlineReplay,
    /// `POST /v1/admin/what-if`: where the audit topic is, the fold's grace, one at a time.
    pub whatif: crate::whatif::WhatIfContext,
}

fn router(state: AdminState) -> Router {
    Router::new()
        .route("/v1/decide", post(decide))
        .route("/v1/devices/{id}", get(device))
        .route("/v1/devices/{id}/history", get(device_history))
        .route("/v1/admin/replay", post(start_replay).get(replay_progress))
        .route("/v1/admin/what-if", post(whatif::what_if))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/metrics", get(prometheus))
        .with_state(state)
}

/// Serves until `shutdown`, finishing requests in flight. `access` decides who may call
/// `/v1/*` and `/metrics` and bounds connections, header reads and decisions in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    access: AdminAccess,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_router(listener, router(state), access, shutdown).await
}

/// The serve loop for any router, behind [`guard::guard`] (tests pass their own routes), with
/// the admin listener's connection limits.
async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    access: AdminAccess,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let connections = crate::http_listener::Connections {
        name: "Admin",
        header_timeout: access.limits.header_timeout,
        max_open: Some(access.limits.max_connections),
        // A decision is quick; a client that keeps a connection idle is not waited for long.
        drain: Duration::from_secs(5),
    };
    let router = guard::guard(router, Arc::new(access));
    crate::http_listener::serve(listener, router, connections, shutdown).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Sent by `trustgate decide` when it asks a running instance, so that the audit says `cli`.
pub const HEADER_SOURCE: &str = "trustgate-source";

async fn decide(State(state): State<AdminState>, headers: HeaderMap, body: Bytes) -> Response {
    let decider = state.decider.clone();
    let started = std::time::Instant::now();
    // Only the audit's provenance: it changes nothing about the decision.
    let source = match headers.get(HEADER_SOURCE).map(|v| v.as_bytes()) {
        Some(b"cli") => AuditSource::Cli,
        _ => AuditSource::Http,
    };
    let request = body.clone();
    let (history, store) = (state.history.clone(), state.store.clone());
    let decided = tokio::task::spawn_blocking(move || match requested_at(&body) {
        // A decision at a past time reads the device's records back from the events topic.
        Some(at) => {
            let when = at.clone().unwrap_or_default();
            decider.decide_as_of(&body, at, |req| {
                history.past_directory(&store, &req.subject, when)
            })
        }
        None => decider.decide(&body),
    });
    match decided.await {
        Ok(Answer::Reply(resp)) => {
            metrics::decision(&resp.policy, resp.decision, resp.reason, started.elapsed());
            state.audit.record(source, &request, &resp);
            // Not ready is a deny the caller should retry elsewhere or later: 503, with the
            // deny in the body for callers that read it.
            let status = if resp.reason == Reason::NotReady {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (status, Json(resp)).into_response()
        }
        Ok(Answer::Unanswerable(message)) => error(StatusCode::BAD_REQUEST, message),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Starts an online replay: 202 with its progress, 409 while one runs.
async fn start_replay(State(state): State<AdminState>) -> Response {
    match state.replay.start() {
        Ok(progress) => (StatusCode::ACCEPTED, Json(progress)).into_response(),
        Err(busy) => error(StatusCode::CONFLICT, busy.to_string()),
    }
}

/// The online replay's progress (`idle` when none was started).
async fn replay_progress(State(state): State<AdminState>) -> Response {
    Json(state.replay.progress()).into_response()
}

async fn device(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match lookup(&state.store, &id, state.grace_millis) {
        Ok(Some(found)) => Json(found).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no device matches {id:?}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `GET /v1/devices/{id}/history`'s query: RFC 3339 bounds and the application whose policy
/// decides.
#[derive(Debug, serde::Deserialize)]
struct HistoryParams {
    since: Option<String>,
    until: Option<String>,
    application: Option<String>,
}

async fn device_history(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Query(params): Query<HistoryParams>,
) -> Response {
    let time = |field: &str, value: &Option<String>| match value {
        None => Ok(None),
        Some(text) => crate::time::parse_rfc3339(text)
            .map(Some)
            .ok_or_else(|| format!("{field} must be an RFC 3339 time, got {text:?}")),
    };
    let query = match (time("since", &params.since), time("until", &params.until)) {
        (Ok(since), Ok(until)) => HistoryQuery {
            since,
            until,
            application: params.application,
        },
        (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
    };
    let (history, store) = (state.history.clone(), state.store.clone());
    let read =
        tokio::task::spawn_blocking(move || history.device_history(&store, &id, &query)).await;
    match read {
        Ok(Ok(found)) => Json(found.to_json()).into_response(),
        Ok(Err(e @ HistoryError::NotFound(_))) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e @ HistoryError::Ambiguous { .. })) => error(StatusCode::CONFLICT, e.to_string()),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Ready when ingest has caught up, the store was ever fed, ingest is not held, the broker
/// answered recently and the liveness age is within the global policy's `stale_after`.
/// `missing` names every condition that does not hold.
async fn ready(State(state): State<AdminState>) -> Response {
    let caught_up = state.ingest.is_caught_up();
    let store_fed = state.liveness.newest().is_some();
    let broker_reachable = state.ingest.broker_reachable();
    let ingest_stuck = state.ingest.stuck();
    let liveness_age = state.liveness.age();
    let fresh = liveness_age.is_some_and(|age| age <= state.stale_after);
    let missing: Vec<&str> = [
        (caught_up, "caught_up"),
        (store_fed, "store_fed"),
        (ingest_stuck.is_none(), "ingest_moving"),
        (broker_reachable, "broker_reachable"),
        (fresh, "fresh"),
    ]
    .into_iter()
    .filter(|(holds, _)| !holds)
    .map(|(_, name)| name)
    .collect();
    let body = json!({
        "caught_up": caught_up,
        "store_fed": store_fed,
        "broker_reachable": broker_reachable,
        "ingest_stuck": ingest_stuck,
        "feed_age_seconds": liveness_age.map(|a| a.as_secs()),
        "stale": !fresh,
        "ingest_lag": state.ingest.lag(),
        "missing": missing,
    });
    let status = if missing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Alive, unless a component stopped for good (e.g. the poller on a 401): then 503 naming it.
async fn health(State(state): State<AdminState>) -> Response {
    let failed = state.health.failures();
    if failed.is_empty() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy", "failed": failed})),
        )
            .into_response()
    }
}

/// The exported metrics, with the gauges read at scrape time refreshed first.
async fn prometheus(State(state): State<AdminState>) -> Response {
    metrics::feed_age(state.liveness.age());
    metrics::ingest_caught_up(state.ingest.is_caught_up());
    for (partition, lag) in state.ingest.lag() {
        metrics::ingest_lag(partition, lag);
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
