//! What stands between the network and the admin handlers: the bearer token, the bound on
//! decisions in flight, and the connection-level limits the serve loop applies.
//!
//! The admin listener answers decisions and shows every device's state, so when it is reachable
//! from other hosts it must not be open: `[admin] token` makes `/v1/*` and `/metrics` require
//! `Authorization: Bearer <token>`. `/healthz` and `/readyz` stay open: probes carry no secret,
//! and they reveal no device. The check is on the path, for the whole router, so a route added
//! under `/v1/` later is covered without anyone remembering to.
//!
//! This module owns no handler; it wraps whatever router it is given.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// Bounds that are not configuration keys; tests shorten them.
#[derive(Debug, Clone)]
pub struct AdminLimits {
    /// A client must send a request head within this (also the keep-alive idle limit): a client
    /// that opens connections and trickles headers cannot hold them for ever.
    pub header_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// `POST /v1/decide` requests being decided at once; more are answered 503 with
    /// `Retry-After` rather than queued without bound behind the blocking pool.
    pub max_decisions: usize,
}

impl Default for AdminLimits {
    fn default() -> AdminLimits {
        AdminLimits {
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_decisions: 256,
        }
    }
}

/// Who may call the protected paths, and how many decisions may run at once.
pub struct AdminAccess {
    /// SHA-256 of the token: comparing digests keeps the comparison constant-time whatever the
    /// presented token's length. `None`: no token configured, every path is open (the
    /// configuration allows that only on a loopback address).
    token_digest: Option<SecretSlice<u8>>,
    /// The connection-level limits, read by the serve loop.
    pub(crate) limits: AdminLimits,
    /// Permits for decisions in flight (`limits.max_decisions`).
    decisions: Semaphore,
}

impl std::fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAccess")
            .field("token", &self.token_digest.as_ref().map(|_| "[REDACTED]"))
            .field("limits", &self.limits)
            .finish()
    }
}

/// What `Retry-After` says on a 503 for too many decisions, in seconds.
const RETRY_AFTER_SECS: u64 = 1;

impl AdminAccess {
    /// Access for `token` (`[admin] token`) under `limits`.
    pub fn new(token: Option<&SecretString>, limits: AdminLimits) -> AdminAccess {
        AdminAccess {
            token_digest: token
                .map(|t| SecretSlice::from(Sha256::digest(t.expose_secret()).to_vec())),
            decisions: Semaphore::new(limits.max_decisions),
            limits,
        }
    }

    /// Whether a request's `Authorization` header carries the configured token.
    fn authorized(&self, request: &Request) -> bool {
        let Some(digest) = &self.token_digest else {
            return true;
        };
        let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
        let presented = match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().ok().and_then(bearer),
            // None, or two headers: which one counts would be ambiguous.
            _ => None,
        };
        presented.is_some_and(|token| {
            let presented = Sha256::digest(token.as_bytes());
            presented.as_slice().ct_eq(digest.expose_secret()).into()
        })
    }
}

/// The token of a `Bearer <token>` header value (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Paths that need the token when one is configured.
fn protected(path: &str) -> bool {
    path.starts_with("/v1/") || path == "/v1" || path == "/metrics"
}

/// Wraps `router` (every route and the fallback) in the token check and the decision bound.
pub(crate) fn guard(router: Router, access: Arc<AdminAccess>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(access, check))
}

async fn check(State(access): State<Arc<AdminAccess>>, request: Request, next: Next) -> Response {
    if protected(request.uri().path()) && !access.authorized(&request) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "unauthorized"})),
        )
            .into_response();
    }
    if request.uri().path() != "/v1/decide" {
        return next.run(request).await;
    }
    // Held until the answer is produced: bounds the blocking decisions queued at once.
    let Ok(_permit) = access.decisions.try_acquire() else {
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "too many decisions in flight"})),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        return response;
    };
    next.run(request).await
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
