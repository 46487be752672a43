//! Telemetry: how trustgate reports on itself.
//!
//! - [`logging`]: the log subscriber (human-readable or JSON; identifiers go in fields).
//! - [`metrics`]: every exported Prometheus metric name and label, with the functions that
//!   record them; component code calls those functions and never names a metric itself.

pub mod logging;
pub mod metrics;
