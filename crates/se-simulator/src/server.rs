//! The simulator's HTTP face: the router, SE's envelope and error shape, and the gate every
//! `/v1/` request passes (Basic auth, the hourly budget, injected faults, rate-limit headers).

use super::faults::Fault;
use super::rate_limit::Quota;
use super::{hooks, routes, streams, Simulator};
use crate::envelope::se_error;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Serves `sim` on `listener` until `shutdown` is cancelled, then finishes the requests in
/// flight and returns. Logs "SE API simulator listening." with the bound `addr` first, so that
/// a caller that bound port 0 can learn the port from the log.
///
/// # Errors
///
/// Only if the listener's address cannot be read or the server fails outright; a failed
/// connection is the client's problem and is not reported.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sim: Simulator,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "SE API simulator listening.");
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

/// The whole surface: SE's `/v1/` API behind the gate, and the `/_sim/` hooks beside it.
fn router(sim: Simulator) -> Router {
    let api = Router::new()
        .route("/v1/version", get(routes::version))
        .route("/v1/events", get(routes::events))
        .route("/v1/computers", get(routes::computers))
        .route("/v1/computers/{guid}", get(routes::computer))
        .route("/v1/event_types", get(routes::event_types))
        .route(
            "/v1/event_streams",
            get(streams::list).post(streams::create),
        )
        .route("/v1/event_streams/{id}", delete(streams::delete))
        .fallback(routes::not_found)
        .layer(middleware::from_fn_with_state(sim.clone(), gate));
    Router::new()
        .route("/_sim/stats", get(hooks::stats))
        .route(
            "/_sim/faults",
            get(hooks::list_faults)
                .post(hooks::add_fault)
                .delete(hooks::clear_faults),
        )
        .route("/_sim/compromise/{guid}", post(hooks::compromise))
        .route("/_sim/resolve/{guid}", post(hooks::resolve))
        .route(
            "/_sim/events",
            get(hooks::all_events).post(hooks::add_events),
        )
        .route("/_sim/burst", post(hooks::burst))
        .route("/_sim/advance", post(hooks::advance))
        .route("/_sim/computers", get(hooks::all_computers))
        .merge(api)
        .with_state(sim)
}

// ---- the gate: auth, budget, faults, headers ----

async fn gate(State(sim): State<Simulator>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    // The API's fallback catches every unknown path; only `/v1/` ones are SE's to answer.
    if !path.starts_with("/v1/") {
        let body = serde_json::json!({ "error": format!("no route {path}") });
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    }
    sim.record(|s| s.requests += 1);
    let (mut resp, quota) = admit(&sim, &path, req, next).await;
    let status = resp.status().as_u16();
    if resp.extensions().get::<Dropped>().is_none() {
        sim.record(|s| *s.responses.entry(status).or_default() += 1);
    }
    tracing::debug!(%path, status, remaining = quota.remaining, "SE API request");
    for (name, value) in quota.headers() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

async fn admit(sim: &Simulator, path: &str, req: Request, next: Next) -> (Response, Quota) {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !sim.authorized(auth) {
        sim.record(|s| s.unauthorized += 1);
        let details = vec!["Unknown API key or Client ID".to_string()];
        return (
            se_error(StatusCode::UNAUTHORIZED, details),
            sim.peek_quota(),
        );
    }
    let quota = match sim.take_quota() {
        Ok(q) => q,
        Err(q) => {
            sim.record(|s| s.rate_limited += 1);
            let details = vec!["Rate limit exceeded".to_string()];
            return (se_error(StatusCode::TOO_MANY_REQUESTS, details), q);
        }
    };
    let Some(fault) = sim.take_fault(path) else {
        return (next.run(req).await, quota);
    };
    sim.record(|s| s.faults_injected += 1);
    tracing::info!(path, ?fault, "Injecting a fault.");
    match fault {
        Fault::Latency { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (next.run(req).await, quota)
        }
        Fault::Status { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            (se_error(status, vec!["Simulated fault".to_string()]), quota)
        }
        Fault::RateLimited { reset, retry_after } => rate_limited(sim, quota, reset, retry_after),
        Fault::Malformed => (truncate(next.run(req).await).await, quota),
        Fault::InvalidPage => (invalid_page(), quota),
        Fault::Drop => (dropped(), quota),
        Fault::Shift { events } => {
            sim.burst(events as usize, crate::catalog::SCAN_STARTED);
            (next.run(req).await, quota)
        }
    }
}

fn rate_limited(
    sim: &Simulator,
    quota: Quota,
    reset: Option<u64>,
    retry_after: Option<u64>,
) -> (Response, Quota) {
    let quota = match reset {
        Some(secs) => Quota {
            remaining: 0,
            reset_secs: secs as i64,
            reset_at: sim.now() + chrono::Duration::seconds(secs as i64),
            ..quota
        },
        None => Quota {
            remaining: 0,
            ..quota
        },
    };
    let mut resp = se_error(
        StatusCode::TOO_MANY_REQUESTS,
        vec!["Rate limit exceeded".to_string()],
    );
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    (resp, quota)
}

/// The real response with its body cut in half: valid headers, invalid JSON.
async fn truncate(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let cut = bytes.slice(..bytes.len() / 2);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(cut))
}

/// A 200 that parses as JSON, in SE's envelope, and still holds no record: `data` is numbers.
fn invalid_page() -> Response {
    let body = serde_json::json!({
        "version": "v1.2.0",
        "metadata": { "links": { "self": "" }, "results": { "total": 3, "current_item_count": 3 } },
        "data": [1, 2, 3],
    });
    crate::envelope::json_response(StatusCode::OK, body.to_string())
}

/// A response whose body fails before any byte is sent: hyper then closes the connection
/// without writing a response, which a client sees as a dropped connection.
#[derive(Clone, Copy)]
struct Dropped;

fn dropped() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated dropped connection",
        ))
    });
    let mut resp = Response::new(Body::from_stream(failing));
    resp.extensions_mut().insert(Dropped);
    resp
}
