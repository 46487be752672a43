//! Time as trustgate stores and prints it: unix milliseconds inside, RFC 3339 UTC outside.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// Milliseconds since the unix epoch, UTC. Kafka record timestamps have this resolution.
pub(crate) type Millis = i64;

/// Parses RFC 3339 (`2021-01-14T10:33:46+00:00`, `2022-03-31T17:46:01Z`) into milliseconds.
pub(crate) fn parse_rfc3339(s: &str) -> Option<Millis> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Formats milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_millis(ms: Millis) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(rfc3339)
        .unwrap_or_else(|| ms.to_string())
}

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The current time, in the representation every stored time uses.
pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_offsets() {
        let ms = parse_rfc3339("2021-01-14T10:33:46+01:00").unwrap();
        assert_eq!(format_millis(ms), "2021-01-14T09:33:46.000Z");
        assert_eq!(parse_rfc3339("not a date"), None);
    }
}
