//! Logging set-up: human-readable by default, JSON on request; identifiers go in fields.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// The most the AMQP client may log: its trace lines carry the broker password (the
/// connection URI's `Debug`, the login frame).
const AMQP_CAPS: [&str; 2] = ["amq_protocol_tcp=debug", "lapin=debug"];

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init_logging(format: LogFormat, level: &str) {
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Whatever level is asked for, the AMQP client stops at debug.
    for cap in AMQP_CAPS {
        filter = filter.add_directive(cap.parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
