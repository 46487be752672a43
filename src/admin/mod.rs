//! The admin HTTP listener: `POST /v1/decide`, `GET /v1/devices/{guid|hostname|mac}`,
//! `GET /healthz` and `GET /readyz`.
//!
//! `/v1/decide` runs the same [`Decider`] as the Kafka worker, for callers that cannot speak
//! Kafka and for `trustgate decide` while a `run` holds the store. Every error body is JSON.

mod devices;
mod health;

pub use devices::{lookup, DeviceLookup, DeviceView, EventView};
pub use health::ComponentHealth;

use crate::decision::{Answer, Decider};
use crate::ingest::IngestStatus;
use crate::liveness::LivenessClock;
use crate::store::Store;
use crate::telemetry::metrics;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the admin handlers share; cloned into each request.
#[derive(Clone)]
pub struct AdminState {
    /// Answers `POST /v1/decide`: the same decide path as the Kafka worker.
    pub decider: Decider<Store>,
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
}

fn router(state: AdminState) -> Router {
    Router::new()
        .route("/v1/decide", post(decide))
        .route("/v1/devices/{id}", get(device))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/metrics", get(prometheus))
        .with_state(state)
}

/// Serves until `shutdown`, finishing requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(%addr, "Admin listener started.");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn decide(State(state): State<AdminState>, body: Bytes) -> Response {
    let decider = state.decider.clone();
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || decider.decide(&body)).await {
        Ok(Answer::Reply(resp)) => {
            metrics::decision(&resp.policy, resp.decision, resp.reason, started.elapsed());
            Json(resp).into_response()
        }
        Ok(Answer::Unanswerable(message)) => error(StatusCode::BAD_REQUEST, message),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn device(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match lookup(&state.store, &id, state.grace_millis) {
        Ok(Some(found)) => Json(found).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no device matches {id:?}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Ready when ingest has caught up, the broker answered recently and the liveness age is
/// within the global policy's `stale_after`.
async fn ready(State(state): State<AdminState>) -> Response {
    let caught_up = state.ingest.is_caught_up();
    let broker_reachable = state.ingest.broker_reachable();
    let liveness_age = state.liveness.age();
    let fresh = liveness_age.is_some_and(|age| age <= state.stale_after);
    let body = json!({
        "caught_up": caught_up,
        "broker_reachable": broker_reachable,
        "feed_age_seconds": liveness_age.map(|a| a.as_secs()),
        "stale": !fresh,
        "ingest_lag": state.ingest.lag(),
    });
    let status = if caught_up && broker_reachable && fresh {
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
