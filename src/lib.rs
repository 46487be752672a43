//! trustgate: trusted-endpoint decisions from Cisco Secure Endpoint state, as a Kafka stream
//! processor.
//!
//! # Layout
//!
//! Data flows left to right:
//!
//! ```text
//! SE API / webhook ──▶ events topic ──▶ ingest ──▶ fold ──▶ store (sled)
//!                                                              │
//! requests topic ──▶ decision worker ──▶ policy::evaluate ◀────┘ ──▶ reply topic
//! ```
//!
//! - [`se`]: Secure Endpoint JSON shapes, parsed leniently; page slicing.
//! - [`topic`]: record contracts: the events topic's (headers, kinds) and dead-letter records.
//! - [`fold`]: pure fold of records into device state; the compromise rule.
//! - [`store`]: sled persistence (device states, ingest offsets, each source's liveness) and
//!   the decision index derived from it.
//! - [`index`]: the in-memory decision index: per device what rules 5–8 read, found by GUID,
//!   processor id, MAC or hostname.
//! - [`ingest`]: the events-topic consumer and dead-lettering.
//! - [`replay`]: the state rebuilt from the events topic's beginning into a fresh store and
//!   swapped in for the live one (`trustgate replay`; also the repair path).
//! - [`liveness`]: when a source last wrote (the age behind `stale`, exported as
//!   `feed_age_seconds`).
//! - [`policy`]: policies, device matching and the pure decision procedure.
//! - [`decision`]: request/response contract, the shared decide path, the pipelined reply loop,
//!   the Kafka worker and reply routing; the sled store as the decisions' device directory.
//! - [`admin`]: the admin HTTP listener.
//! - [`audit`]: the decision audit: every decision written to the audit topic, and read back.
//! - [`history`]: a device's timeline from the events topic, and its state at a past time,
//!   read back through the store's per-device record references.
//! - [`whatif`]: audited requests compared with a candidate policy set's answers
//!   (`trustgate what-if`): what would change, by application, user and reason.
//! - `http_listener`: the one HTTP/1 serve loop (header timeout, connection cap, drain) under
//!   the admin and webhook listeners.
//! - [`publish`]: the one producer path to the events topic for every source.
//! - [`poller`]: the Secure Endpoint API poller (event poll and inventory sweep, within the rate
//!   limit).
//! - [`webhook`]: the signed HTTP push bridge (Standard Webhooks) into the events topic.
//! - [`amqp`]: the Secure Endpoint Event Stream consumer (AMQP 0.9.1) into the events topic.
//! - [`kafka`]: librdkafka client construction, topic creation, the producer (start, enqueue,
//!   flush).
//! - [`config`]: configuration file, environment overrides, validated settings.
//! - [`telemetry`]: logging set-up and every exported metric name, in one place.
//! - [`allocator`]: mimalloc (the binary's allocator), glibc's arena cap for librdkafka, and
//!   freed memory returned after a catch-up.
//! - [`locks`]: the one rule for poisoned locks (recover), and its helpers.
//! - [`time`]: time representation (unix ms inside, RFC 3339 outside).
//! - [`app`]: `trustgate run`'s component wiring and ordered shutdown; [`shutdown`]: the one
//!   signal handler.
//!
//! The command line, the demo, the load tool (`trustgate bench`) and the `poll` command are the
//! `trustgate` binary's (`src/bin/trustgate/`); the SE API simulator is its own crate
//! (`crates/se-simulator`).

// Every public item is part of the library's contract with the binary, the tests and the
// benches, so each says what it is for; everything else is `pub(crate)` or private.
#![warn(missing_docs)]

pub mod admin;
pub mod allocator;
pub mod amqp;
pub mod app;
pub mod audit;
pub mod config;
pub mod decision;
pub mod fold;
pub mod history;
mod http_listener;
pub mod index;
pub mod ingest;
pub mod json;
pub mod kafka;
pub mod liveness;
pub mod locks;
pub mod policy;
pub mod poller;
pub mod publish;
pub mod replay;
pub mod se;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod topic;
pub mod webhook;
pub mod whatif;
