//! The events topic's record contract, shared by every producer (poller, webhook) and by ingest.
//!
//! A record's value is SE's JSON object byte-for-byte; its key is the connector GUID; these
//! headers say what it is and where it came from. Ingest also accepts records without them.

/// `event`, `computer` or `heartbeat`.
pub const HEADER_KIND: &str = "trustgate-kind";
/// Which source wrote the record: `poll`, `webhook`, …
pub const HEADER_SOURCE: &str = "trustgate-source";
/// For computers: RFC 3339 time at which the inventory was read.
pub const HEADER_OBSERVED_AT: &str = "trustgate-observed-at";

/// Dead-letter headers, each a UTF-8 string.
pub const HEADER_DLQ_TOPIC: &str = "trustgate-dlq-topic";
pub const HEADER_DLQ_PARTITION: &str = "trustgate-dlq-partition";
pub const HEADER_DLQ_OFFSET: &str = "trustgate-dlq-offset";
pub const HEADER_DLQ_ERROR: &str = "trustgate-dlq-error";

/// What an events-topic record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Event,
    Computer,
    /// Feed liveness written by a source; carries no device.
    Heartbeat,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Event => "event",
            Kind::Computer => "computer",
            Kind::Heartbeat => "heartbeat",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "event" => Some(Kind::Event),
            "computer" => Some(Kind::Computer),
            "heartbeat" => Some(Kind::Heartbeat),
            _ => None,
        }
    }
}

/// Headers for a record a source publishes, in the contract's names.
pub fn record_headers(
    kind: Kind,
    source: &str,
    observed_at: Option<chrono::DateTime<chrono::Utc>>,
) -> rdkafka::message::OwnedHeaders {
    use rdkafka::message::{Header, OwnedHeaders};
    let observed = observed_at.map(crate::time::rfc3339);
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: HEADER_KIND,
            value: Some(kind.as_str()),
        })
        .insert(Header {
            key: HEADER_SOURCE,
            value: Some(source),
        });
    if let Some(observed) = &observed {
        headers = headers.insert(Header {
            key: HEADER_OBSERVED_AT,
            value: Some(observed.as_str()),
        });
    }
    headers
}
