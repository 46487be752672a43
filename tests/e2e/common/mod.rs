//! The end-to-end harness: a real broker, the built `trustgate` binary, and Kafka clients.

pub mod broker;
pub mod figures;
pub mod instance;
pub mod kafka;
pub mod pause_proxy;
pub mod poller;
pub mod process;
pub mod rabbitmq;
pub mod simulator;
pub mod tansu;
pub mod webhook;

pub use broker::{brokers, OwnBroker};
pub use instance::*;
pub use kafka::*;
pub use pause_proxy::PauseProxy;
pub use process::Spawned;
pub use simulator::Simulator;

/// A random suffix so that every test has its own topics and groups.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}
