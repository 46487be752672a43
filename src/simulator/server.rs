//! The simulator's HTTP face: SE's `/v1/` routes behind Basic auth, the hourly budget and
//! injected faults, plus the `/_sim/` test hooks.

use super::faults::Fault;
use super::pagination::{self, Metadata, PageRequest, RequestUrl};
use super::rate_limit::Quota;
use super::{catalog, query, FaultSpec, Simulator};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The `version` SE's v1 success responses carry.
const VERSION: &str = "v1.2.0";

/// Serves `sim` on `listener` until `shutdown`, finishing requests in flight.
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

pub fn router(sim: Simulator) -> Router {
    let api = Router::new()
        .route("/v1/version", get(version))
        .route("/v1/events", get(events))
        .route("/v1/computers", get(computers))
        .route("/v1/computers/{guid}", get(computer))
        .route("/v1/event_types", get(event_types))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(sim.clone(), gate));
    Router::new()
        .route("/_sim/stats", get(stats))
        .route(
            "/_sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sim/compromise/{guid}", post(compromise))
        .route("/_sim/resolve/{guid}", post(resolve))
        .route("/_sim/events", get(all_events).post(add_events))
        .route("/_sim/burst", post(burst))
        .route("/_sim/advance", post(advance))
        .route("/_sim/computers", get(all_computers))
        .merge(api)
        .with_state(sim)
}

// ---- SE's envelope and errors ----

#[derive(Serialize)]
struct Envelope<T: Serialize> {
    version: &'static str,
    metadata: Metadata,
    data: T,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    version: &'static str,
    data: serde_json::Map<String, serde_json::Value>,
    errors: [SeError<'a>; 1],
}

#[derive(Serialize)]
struct SeError<'a> {
    error_code: u16,
    description: &'a str,
    details: Vec<String>,
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn ok<T: Serialize>(metadata: Metadata, data: T) -> Response {
    let envelope = Envelope {
        version: VERSION,
        metadata,
        data,
    };
    match serde_json::to_string(&envelope) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => se_error(StatusCode::INTERNAL_SERVER_ERROR, vec![e.to_string()]),
    }
}

/// SE's error shape: `{"version":"v1.0.0","data":{},"errors":[{error_code,description,details}]}`.
fn se_error(status: StatusCode, details: Vec<String>) -> Response {
    let body = ErrorEnvelope {
        version: "v1.0.0",
        data: serde_json::Map::new(),
        errors: [SeError {
            error_code: status.as_u16(),
            description: status.canonical_reason().unwrap_or("Error"),
            details,
        }],
    };
    json_response(status, serde_json::to_string(&body).unwrap_or_default())
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

fn self_only(base: &str, uri: &Uri) -> Metadata {
    let url = RequestUrl {
        base,
        path: uri.path(),
        query: uri.query(),
    };
    Metadata {
        links: pagination::Links {
            self_: url.self_link(),
            next: None,
            prev: None,
        },
        results: None,
    }
}

// ---- the gate: auth, budget, faults, headers ----

async fn gate(State(sim): State<Simulator>, req: Request, next: Next) -> Response {
    sim.record(|s| s.requests += 1);
    let path = req.uri().path().to_string();
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
        Fault::Drop => (dropped(), quota),
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

// ---- /v1/ routes ----

async fn not_found(uri: Uri) -> Response {
    se_error(
        StatusCode::NOT_FOUND,
        vec![format!("{} is not a simulated endpoint", uri.path())],
    )
}

async fn version(headers: HeaderMap, uri: Uri) -> Response {
    ok(self_only(&base_url(&headers), &uri), json!({}))
}

async fn events(State(sim): State<Simulator>, headers: HeaderMap, uri: Uri) -> Response {
    let pairs = query::pairs(uri.query());
    let (filter, page) = match query::events(&pairs) {
        Ok(q) => q,
        Err(e) => return se_error(StatusCode::BAD_REQUEST, e.0),
    };
    let base = base_url(&headers);
    let url = RequestUrl {
        base: &base,
        path: uri.path(),
        query: uri.query(),
    };
    sim.with_world(|w| {
        let matching: Vec<&RawValue> = w.events().query(&filter).map(|e| &*e.raw).collect();
        let data = &matching[page.range(matching.len())];
        ok(
            pagination::metadata(&url, &pairs, page, matching.len(), data.len()),
            data,
        )
    })
}

async fn computers(State(sim): State<Simulator>, headers: HeaderMap, uri: Uri) -> Response {
    let pairs = query::pairs(uri.query());
    let (filter, page) = match query::computers(&pairs) {
        Ok(q) => q,
        Err(e) => return se_error(StatusCode::BAD_REQUEST, e.0),
    };
    let base = base_url(&headers);
    let url = RequestUrl {
        base: &base,
        path: uri.path(),
        query: uri.query(),
    };
    sim.with_world(|w| {
        let matching: Vec<_> = w.computers().iter().filter(|c| filter.matches(c)).collect();
        let data = &matching[page.range(matching.len())];
        ok(
            pagination::metadata(&url, &pairs, page, matching.len(), data.len()),
            data,
        )
    })
}

async fn computer(
    State(sim): State<Simulator>,
    Path(guid): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let meta = self_only(&base_url(&headers), &uri);
    sim.with_world(|w| match w.computer(&guid) {
        Some(c) => ok(meta, c),
        None => se_error(
            StatusCode::NOT_FOUND,
            vec![format!("connector_guid {guid} was not found")],
        ),
    })
}

#[derive(Serialize)]
struct EventType {
    id: u64,
    name: &'static str,
    description: &'static str,
}

async fn event_types(headers: HeaderMap, uri: Uri) -> Response {
    let all: Vec<EventType> = catalog::EVENT_TYPES
        .iter()
        .map(|&(id, name)| EventType {
            id,
            name,
            description: catalog::description(id),
        })
        .collect();
    let base = base_url(&headers);
    let url = RequestUrl {
        base: &base,
        path: uri.path(),
        query: uri.query(),
    };
    let page = PageRequest::default();
    ok(
        pagination::metadata(&url, &[], page, all.len(), all.len()),
        all,
    )
}

// ---- /_sim/ test hooks ----

fn hook_error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

async fn stats(State(sim): State<Simulator>) -> Response {
    Json(sim.stats()).into_response()
}

async fn list_faults(State(sim): State<Simulator>) -> Response {
    Json(sim.pending_faults()).into_response()
}

async fn add_fault(State(sim): State<Simulator>, Json(spec): Json<FaultSpec>) -> Response {
    match sim.inject_fault(spec) {
        Ok(()) => (StatusCode::CREATED, Json(sim.pending_faults())).into_response(),
        Err(e) => hook_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn clear_faults(State(sim): State<Simulator>) -> StatusCode {
    sim.clear_faults();
    StatusCode::NO_CONTENT
}

async fn compromise(State(sim): State<Simulator>, Path(guid): Path<String>) -> Response {
    match sim.compromise(&guid) {
        Ok(detection_id) => Json(json!({
            "connector_guid": guid,
            "is_compromised": true,
            "detection_id": detection_id,
        }))
        .into_response(),
        Err(e) => hook_error(StatusCode::NOT_FOUND, e),
    }
}

async fn resolve(State(sim): State<Simulator>, Path(guid): Path<String>) -> Response {
    match sim.resolve(&guid) {
        Ok(()) => Json(json!({"connector_guid": guid, "is_compromised": false})).into_response(),
        Err(e) => hook_error(StatusCode::NOT_FOUND, e),
    }
}

async fn all_events(State(sim): State<Simulator>) -> Response {
    json_response(StatusCode::OK, sim.events_json())
}

/// Body: one event object, an array of them, or a `/v1/events` envelope.
async fn add_events(State(sim): State<Simulator>, body: Bytes) -> Response {
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(e) => return hook_error(StatusCode::BAD_REQUEST, e),
    };
    let records = match crate::se::split_records(text) {
        Ok(r) => r.records.into_iter().map(|r| r.to_owned()).collect(),
        Err(e) => return hook_error(StatusCode::BAD_REQUEST, e),
    };
    match sim.inject_events(records) {
        Ok(added) => (StatusCode::CREATED, Json(json!({ "added": added }))).into_response(),
        Err(e) => hook_error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
struct BurstRequest {
    count: usize,
    #[serde(default = "scan_started")]
    event_type_id: u64,
}

fn scan_started() -> u64 {
    catalog::SCAN_STARTED
}

async fn burst(State(sim): State<Simulator>, Json(req): Json<BurstRequest>) -> Response {
    let at = sim.burst(req.count, req.event_type_id);
    let body = json!({ "added": req.count, "date": super::generate::event_date(at) });
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Deserialize)]
struct AdvanceRequest {
    seconds: u64,
}

async fn advance(State(sim): State<Simulator>, Json(req): Json<AdvanceRequest>) -> Response {
    sim.advance_clock(chrono::Duration::seconds(req.seconds as i64));
    Json(json!({ "now": super::generate::computer_date(sim.now()) })).into_response()
}

async fn all_computers(State(sim): State<Simulator>) -> Response {
    Json(sim.computers()).into_response()
}
