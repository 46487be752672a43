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
//! - [`topic`]: the events topic's record contract (headers, kinds).
//! - [`fold`]: pure fold of records into device state; the compromise rule.
//! - [`store`]: sled persistence, indexes and ingest offsets.
//! - [`ingest`]: the events-topic consumer and dead-lettering.
//! - [`policy`]: policies, device matching and the pure decision procedure.
//! - [`decision`]: request/response contract, the Kafka worker and reply routing.
//! - [`liveness`]: when a source last wrote (the age behind `stale`).
//! - [`demo`]: `trustgate demo`, the whole story in one command.
//! - [`admin`]: the admin HTTP listener.
//! - [`publish`]: the one producer path to the events topic for every source.
//! - [`poller`]: the Secure Endpoint API poller (events and inventory, within the rate limit).
//! - [`webhook`]: the signed HTTP push bridge (Standard Webhooks) into the events topic.
//! - [`kafka`]: librdkafka client construction and topic creation.
//! - [`locks`]: the one rule for poisoned locks (recover), and its helpers.
//! - [`config`]: configuration file, environment overrides, validated settings.
//! - [`simulator`]: an SE v1 API simulator (`trustgate simulate`), the poller's test double.
//! - [`bench`]: `trustgate bench`, the end-to-end load tool.
//! - [`telemetry`]: logging set-up and every exported metric name, in one place.
//! - [`app`], [`cli`], [`telemetry`]: process wiring.

pub mod admin;
pub mod app;
pub mod config;
pub mod decision;
pub mod fold;
pub mod ingest;
pub mod kafka;
pub mod liveness;
pub mod locks;
pub mod policy;
pub mod poller;
pub mod publish;
pub mod se;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod topic;
pub mod webhook;
