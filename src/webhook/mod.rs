//! The webhook bridge: signed HTTP pushes of Secure Endpoint events and computers into the
//! events topic.
//!
//! SE has no outbound webhook of its own; a customer's bridge (an event-stream consumer, an XDR
//! workflow, a SOAR playbook) POSTs SE JSON here, signed per Standard Webhooks. Endpoints on
//! `[webhook] listen`: `POST /v1/events`, `POST /v1/computers` (one object, an array, or a
//! `{"data": [...]}` envelope) and `GET /healthz` (with delivery counts).
//!
//! - [`signature`]: Standard Webhooks verification and the optional bearer token.
//! - [`records`]: what makes a body's records publishable.
//! - [`replay`]: remembering accepted `webhook-id`s.
//! - `server`: the router and the check order; `stats`: counters.
//!
//! A delivery is answered 202 only once Kafka acknowledged every record (through
//! [`EventsPublisher::publish_all`], source `webhook`); otherwise 503 with `Retry-After`.
//! Records go to the topic as the sender's bytes, never re-serialised.

pub mod records;
pub mod replay;
mod server;
pub mod signature;
mod stats;

pub use server::{router, RETRY_AFTER_SECS};
pub use signature::{sign, KeyError};
pub use stats::Reject;

use crate::config::WebhookSettings;
use crate::publish::EventsPublisher;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use replay::ReplayCache;
use signature::Verifier;
use stats::Counters;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The `trustgate-source` of every record the webhook writes.
pub const SOURCE: &str = "webhook";

/// Bounds that are not configuration keys; tests shorten them.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub publish_timeout: Duration,
    /// A client must send the request head within this (also the keep-alive idle limit).
    pub header_timeout: Duration,
    /// ... and its body within this.
    pub body_timeout: Duration,
    /// Authenticated deliveries handled at once (checked and published); more are answered 503.
    /// Taken only once the signature verified, so unauthenticated senders cannot hold them.
    pub max_in_flight: usize,
    /// Bodies being read at once, before anyone is authenticated; more are answered 503. Larger
    /// than `max_in_flight`, and each read is cut off at `body_timeout`, so slow unauthenticated
    /// bodies do not take the slots signed deliveries need.
    pub max_reading: usize,
    /// How long a delivery's id is remembered once accepted.
    pub replay_window: Duration,
    /// How many accepted ids are remembered at most.
    pub replay_capacity: usize,
}

impl Limits {
    pub fn from_settings(settings: &WebhookSettings) -> Limits {
        Limits {
            max_body_bytes: settings.max_body_bytes,
            publish_timeout: settings.publish_timeout,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_in_flight: 256,
            max_reading: 1024,
            // A captured delivery verifies for `tolerance` on either side of its timestamp, so
            // its id must be remembered for both halves.
            replay_window: settings.tolerance.saturating_mul(2),
            replay_capacity: 100_000,
        }
    }
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct WebhookState {
    shared: Arc<Shared>,
}

struct Shared {
    verifier: Verifier,
    replay: ReplayCache,
    publisher: EventsPublisher,
    limits: Limits,
    counters: Counters,
    /// Permits for authenticated deliveries (`limits.max_in_flight`).
    in_flight: Semaphore,
    /// Permits for bodies being read (`limits.max_reading`): bounds memory before any check.
    reading: Semaphore,
}

impl WebhookState {
    /// Fails when a configured secret is not usable (named by position, never by value).
    pub fn new(
        settings: &WebhookSettings,
        limits: Limits,
        publisher: EventsPublisher,
    ) -> Result<WebhookState, KeyError> {
        let verifier = Verifier::new(
            &settings.secrets,
            settings.bearer_token.as_ref(),
            settings.tolerance,
        )?;
        Ok(WebhookState {
            shared: Arc::new(Shared {
                verifier,
                replay: ReplayCache::new(limits.replay_window, limits.replay_capacity),
                publisher,
                in_flight: Semaphore::new(limits.max_in_flight),
                reading: Semaphore::new(limits.max_reading),
                counters: Counters::default(),
                limits,
            }),
        })
    }

    /// The delivery counts, as `GET /healthz` shows them.
    pub fn counts(&self) -> serde_json::Value {
        self.shared.counters.to_json()
    }
}

/// Serves until `shutdown`, then stops accepting and lets deliveries in flight finish (bounded
/// by the publish timeout).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: WebhookState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let limits = state.shared.limits.clone();
    let service = TowerToHyperService::new(router(state));
    let graceful = GracefulShutdown::new();
    tracing::info!(%addr, "Webhook listener started.");
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually fd exhaustion: back off instead of spinning.
                    tracing::warn!(error = %e, "Webhook listener could not accept a connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "Webhook connection ended with an error.");
            }
        });
    }
    drop(listener);
    // A delivery past its body is at most `publish_timeout` from its answer; a sender still
    // trickling its body at shutdown is cut off (and retries).
    let drain = limits.publish_timeout + Duration::from_secs(2);
    tracing::info!("Webhook listener stopping; draining deliveries in flight.");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("Webhook deliveries still in flight after {drain:?}; giving up on them.");
    }
    Ok(())
}
