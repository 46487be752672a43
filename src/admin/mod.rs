//! The admin HTTP listener: `POST /v1/decide`, `GET /v1/devices/{guid|hostname|mac}`,
//! `GET /healthz` and `GET /readyz`.
//!
//! `/v1/decide` runs the same [`Decider`] as the Kafka worker, for callers that cannot speak
//! Kafka and for `trustgate decide` while a `run` holds the store. Every error body is JSON.

mod devices;

pub use devices::{lookup, DeviceLookup, DeviceView};

use crate::decision::{Answer, Decider};
use crate::ingest::IngestStatus;
use crate::store::Store;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct AdminState {
    pub decider: Decider<Store>,
    pub store: Store,
    pub ingest: IngestStatus,
    pub grace_millis: i64,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/v1/decide", post(decide))
        .route("/v1/devices/{id}", get(device))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
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
    match tokio::task::spawn_blocking(move || decider.decide(&body)).await {
        Ok(Answer::Reply(resp)) => Json(resp).into_response(),
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

async fn ready(State(state): State<AdminState>) -> Response {
    let lag = state.ingest.lag();
    let body = json!({ "caught_up": state.ingest.is_caught_up(), "ingest_lag": lag });
    let status = if state.ingest.is_caught_up() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
