//! The end-to-end harness: a real broker, the built `trustgate` binary, and Kafka clients.

pub mod broker;
pub mod instance;
pub mod kafka;
pub mod webhook;

pub use broker::{brokers, free_port, OwnBroker};
pub use instance::*;
pub use kafka::*;

/// A random suffix so that every test has its own topics and groups.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}
