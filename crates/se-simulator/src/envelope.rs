//! SE's response shapes: the success envelope (`version`, `metadata`, `data`), the error body,
//! and the links of a response that has a single page. Shared by the API routes, the test
//! hooks and the gate.

use crate::pagination::{self, Metadata, RequestUrl};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The `version` SE's v1 success responses carry.
const VERSION: &str = "v1.2.0";

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

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

pub(crate) fn ok<T: Serialize>(metadata: Metadata, data: T) -> Response {
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
pub(crate) fn se_error(status: StatusCode, details: Vec<String>) -> Response {
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

pub(crate) fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

pub(crate) fn self_only(base: &str, uri: &Uri) -> Metadata {
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
