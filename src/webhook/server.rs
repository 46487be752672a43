//! The webhook listener, its router and its handlers.
//!
//! A delivery is checked in a fixed order, cheapest and least trusting first: size (before the
//! body is read in full), signature (on the raw bytes, before any parsing), content type,
//! computers only when signed, JSON, records. Then the replay cache decides whether it
//! publishes, and it is answered 202 only once the broker acknowledged every record.
//!
//! Two bounds: bodies being read (`max_reading`, before anyone is authenticated) and deliveries
//! in flight (`max_in_flight`, taken after the signature verified), so a crowd of slow
//! unauthenticated bodies cannot take the slots a signed delivery needs.

use super::records::{self, BodyError, Endpoint, ItemError, Record};
use super::replay::Claim;
use super::signature::Delivery;
use super::stats::Reject;
use super::WebhookState;
use crate::publish::OutRecord;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a 503 asks the sender to wait before retrying, in seconds.
const RETRY_AFTER_SECS: u64 = 5;

fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/v1/events", post(events))
        .route("/v1/computers", post(computers))
        .route("/healthz", get(healthz))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .with_state(state)
}

async fn events(State(state): State<WebhookState>, request: Request) -> Response {
    deliver(&state, Endpoint::Events, request).await
}

async fn computers(State(state): State<WebhookState>, request: Request) -> Response {
    deliver(&state, Endpoint::Computers, request).await
}

async fn healthz(State(state): State<WebhookState>) -> Response {
    let mut body = state.shared.counters.to_json();
    body["status"] = "ok".into();
    Json(body).into_response()
}

/// A refused delivery: its status follows from the reason.
#[derive(Debug)]
struct Rejection {
    reason: Reject,
    message: String,
    items: Vec<ItemError>,
}

impl Rejection {
    fn new(reason: Reject, message: impl Into<String>) -> Rejection {
        Rejection {
            reason,
            message: message.into(),
            items: Vec::new(),
        }
    }

    fn status(&self) -> StatusCode {
        match self.reason {
            Reject::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reject::BodyError | Reject::InvalidJson => StatusCode::BAD_REQUEST,
            Reject::Unauthorized => StatusCode::UNAUTHORIZED,
            Reject::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reject::InvalidRecords | Reject::UnsignedComputers => StatusCode::UNPROCESSABLE_ENTITY,
            Reject::Overloaded | Reject::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<BodyError> for Rejection {
    fn from(e: BodyError) -> Rejection {
        match e {
            BodyError::Json(_) => Rejection::new(Reject::InvalidJson, e.to_string()),
            BodyError::Shape(_) => Rejection::new(Reject::InvalidRecords, e.to_string()),
            BodyError::Records(items) => Rejection {
                reason: Reject::InvalidRecords,
                message: format!(
                    "{} record(s) cannot be used; nothing was published",
                    items.len()
                ),
                items,
            },
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if !self.items.is_empty() {
            body["items"] = json!(self.items);
        }
        let mut response = (self.status(), Json(body)).into_response();
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

enum Outcome {
    Accepted(usize),
    Duplicate,
}

async fn deliver(state: &WebhookState, endpoint: Endpoint, request: Request) -> Response {
    let counters = &state.shared.counters;
    match try_deliver(state, endpoint, request).await {
        Ok(Outcome::Accepted(n)) => {
            counters.accepted(n);
            (
                StatusCode::ACCEPTED,
                Json(json!({"status": "accepted", "records": n})),
            )
                .into_response()
        }
        Ok(Outcome::Duplicate) => {
            counters.duplicate();
            (
                StatusCode::ACCEPTED,
                Json(json!({"status": "duplicate", "records": 0})),
            )
                .into_response()
        }
        Err(rejection) => {
            counters.rejected(rejection.reason);
            // Debug, not info: anyone can send refused requests, and the counters show them.
            tracing::debug!(
                reason = rejection.reason.as_str(),
                status = rejection.status().as_u16(),
                "Webhook delivery refused."
            );
            rejection.into_response()
        }
    }
}

async fn try_deliver(
    state: &WebhookState,
    endpoint: Endpoint,
    request: Request,
) -> Result<Outcome, Rejection> {
    let shared = &state.shared;
    let overloaded = || Rejection::new(Reject::Overloaded, "too many deliveries in flight");
    // Bounds memory (at most this many bodies buffered) before anyone is authenticated.
    let reading = shared.reading.try_acquire().map_err(|_| overloaded())?;
    let (parts, body) = request.into_parts();
    let bytes = read_body(&parts.headers, body, state).await?;
    let received = chrono::Utc::now();
    let delivery = shared
        .verifier
        .verify(&parts.headers, &bytes, received.timestamp())
        .map_err(|why| {
            // Which check failed is logged for the operator, never told to the sender.
            tracing::debug!(why = %why, "Webhook signature check failed.");
            Rejection::new(Reject::Unauthorized, "unauthorized")
        })?;
    // Bounds the work (parsing, publishing) of authenticated deliveries. Taken only now, so
    // that senders who cannot authenticate never hold it; the read slot is given back.
    let _permit = shared.in_flight.try_acquire().map_err(|_| overloaded())?;
    drop(reading);
    check_content_type(&parts.headers)?;
    if endpoint == Endpoint::Computers && !delivery.signed {
        return Err(Rejection::new(
            Reject::UnsignedComputers,
            "computers need a signed delivery (webhook-signature): a bearer-token delivery has \
             no signed time and can be replayed, so its device state could clear newer \
             detections; post events with the bearer token, or sign computers",
        ));
    }
    let records = records::validate(endpoint, &bytes)?;
    let observed_at = match endpoint {
        Endpoint::Computers => Some(observed_at(&delivery, &bytes, received)?),
        Endpoint::Events => None,
    };
    let pending = match &delivery.id {
        Some(id) => match shared.replay.claim(id).await {
            Claim::Duplicate => return Ok(Outcome::Duplicate),
            Claim::First(pending) => Some(pending),
        },
        None => None,
    };
    publish(state, endpoint, observed_at, &records).await?;
    if let Some(pending) = pending {
        pending.accept();
    }
    tracing::debug!(id = ?delivery.id, records = records.len(), "Webhook delivery accepted.");
    Ok(Outcome::Accepted(records.len()))
}

/// Reads the body under the size limit and the body timeout. A declared length over the limit
/// is refused before a byte of the body is read; an undeclared one is cut off at the limit.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    state: &WebhookState,
) -> Result<Bytes, Rejection> {
    let limits = &state.shared.limits;
    let too_large = || {
        Rejection::new(
            Reject::TooLarge,
            format!("body exceeds {} bytes", limits.max_body_bytes),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(too_large());
    }
    let collect = Limited::new(body, limits.max_body_bytes).collect();
    match tokio::time::timeout(limits.body_timeout, collect).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(_)) => Err(Rejection::new(
            Reject::BodyError,
            "the body could not be read",
        )),
        Err(_) => Err(Rejection::new(
            Reject::BodyTimeout,
            "the body was not received in time",
        )),
    }
}

/// `application/json`, with or without parameters (`; charset=utf-8`), and only one of them:
/// two content types leave the body's meaning ambiguous.
fn check_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let is_json = values
        .next()
        .filter(|_| values.next().is_none())
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    is_json.then_some(()).ok_or_else(|| {
        Rejection::new(
            Reject::UnsupportedMediaType,
            "content-type must be application/json",
        )
    })
}

/// When a signed delivery's computers were observed: the earliest of the signed
/// `webhook-timestamp`, the envelope's `observed_at` and the receipt time. A computer clears
/// detections seen before its observation, so every source of time may only make it earlier:
/// a bridge that read SE a while ago says so in `observed_at`, and a sender's clock running
/// ahead (a timestamp within the tolerance but in the future) is capped at receipt.
fn observed_at(
    delivery: &Delivery,
    body: &[u8],
    received: DateTime<Utc>,
) -> Result<DateTime<Utc>, Rejection> {
    let signed = Utc
        .timestamp_opt(delivery.timestamp, 0)
        .single()
        .unwrap_or(received);
    let envelope = records::envelope_observed_at(body)?;
    Ok([Some(signed), envelope, Some(received)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(received))
}

/// Writes every record and waits for the broker's acknowledgement, within the publish timeout.
async fn publish(
    state: &WebhookState,
    endpoint: Endpoint,
    observed_at: Option<DateTime<Utc>>,
    records: &[Record<'_>],
) -> Result<(), Rejection> {
    let shared = &state.shared;
    let out: Vec<OutRecord<'_>> = records
        .iter()
        .map(|r| OutRecord {
            kind: endpoint.kind(),
            key: &r.key,
            value: r.value.get().as_bytes(),
            observed_at,
        })
        .collect();
    let timeout = shared.limits.publish_timeout;
    let unavailable = || Rejection::new(Reject::Unavailable, "the events topic is unavailable");
    match tokio::time::timeout(timeout, shared.publisher.publish_all(&out, timeout)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Webhook delivery not acknowledged by Kafka; answering 503.");
            Err(unavailable())
        }
        Err(_) => {
            tracing::warn!(
                timeout = ?timeout,
                "Kafka did not acknowledge a webhook delivery in time; answering 503."
            );
            Err(unavailable())
        }
    }
}

/// Serves until `shutdown`, then stops accepting and lets deliveries in flight finish (bounded
/// by the publish timeout).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: WebhookState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let limits = &state.shared.limits;
    let connections = crate::http_listener::Connections {
        name: "Webhook",
        header_timeout: limits.header_timeout,
        // Unauthenticated bodies are bounded inside the router (`max_reading`).
        max_open: None,
        // A delivery past its body is at most `publish_timeout` from its answer; a sender still
        // trickling its body at shutdown is cut off (and retries).
        drain: limits.publish_timeout + Duration::from_secs(2),
    };
    crate::http_listener::serve(listener, router(state), connections, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_with_parameters_are_accepted() {
        for (value, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/json ;charset=UTF-8", true),
            ("text/plain", false),
            ("application/jsonx", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(check_content_type(&h).is_ok(), ok, "{value}");
        }
        assert!(check_content_type(&HeaderMap::new()).is_err());
        let mut two = HeaderMap::new();
        two.append(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        two.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(check_content_type(&two).is_err());
    }

    #[test]
    fn rejections_are_json_with_items_only_when_records_are_at_fault() {
        let r = Rejection::from(BodyError::Records(vec![ItemError {
            index: 2,
            error: "no connector_guid".into(),
        }]));
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let unavailable = Rejection::new(Reject::Unavailable, "x").into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "5");
    }
}
