//! The webhook bridge: signed HTTP pushes of Secure Endpoint events and computers into the
//! events topic.
//!
//! SE has no outbound webhook of its own; a customer's bridge (an event-stream consumer, an XDR
//! workflow, a SOAR playbook) POSTs SE JSON here, signed per Standard Webhooks. Endpoints on
//! `[webhook] listen`: `POST /v1/events`, `POST /v1/computers` (one object, an array, or a
//! `{"data": [...]}` envelope) and `GET /healthz` (with delivery counts).
//!
//! - `signature`: Standard Webhooks verification and the optional bearer token.
//! - `records`: what makes a body's records publishable.
//! - `replay`: remembering accepted `webhook-id`s.
//! - `server`: the listener, the router and the check order; `stats`: counters.
//!
//! A delivery is answered 202 only once Kafka acknowledged every record (through the
//! [`EventsPublisher`], source `webhook`); otherwise 503 with `Retry-After`.
//! Records go to the topic as the sender's bytes, never re-serialised.

mod records;
mod replay;
mod server;
mod signature;
mod stats;

pub use server::serve;
pub use signature::{sign, AuthError, Delivery, KeyError, Verifier};

use crate::config::WebhookSettings;
use crate::publish::EventsPublisher;
use replay::ReplayCache;
use stats::Counters;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The `trustgate-source` of every record the webhook writes.
pub const SOURCE: &str = "webhook";

/// The listener's bounds: two from `[webhook]`, the rest fixed. Tests shorten them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest body accepted (`max_body_bytes`); a larger one is answered 413, unread when
    /// its length is declared.
    pub max_body_bytes: usize,
    /// How long a delivery waits for Kafka's acknowledgement before it is answered 503
    /// (`publish_timeout`); also bounds the drain at shutdown.
    pub publish_timeout: Duration,
    /// A client must send the request head within this (also the keep-alive idle limit).
    pub header_timeout: Duration,
    /// ... and its body within this.
    pub body_timeout: Duration,
    /// Authenticated deliveries handled at once (checked and published); more are answered 503.
    /// Taken only once the signature verified, so unauthenticated senders cannot hold them.
    max_in_flight: usize,
    /// Bodies being read at once, before anyone is authenticated; more are answered 503. Larger
    /// than `max_in_flight`, and each read is cut off at `body_timeout`, so slow unauthenticated
    /// bodies do not take the slots signed deliveries need.
    max_reading: usize,
    /// How long a delivery's id is remembered once accepted.
    replay_window: Duration,
    /// How many accepted ids are remembered at most.
    replay_capacity: usize,
}

impl Limits {
    /// The configured bounds, with the fixed ones at their production values.
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
