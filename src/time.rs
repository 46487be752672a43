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
    if let Some(text) = Rfc3339Millis::new(ms) {
        return text.as_str().to_owned();
    }
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(rfc3339)
        .unwrap_or_else(|| ms.to_string())
}

/// Serialises milliseconds as [`format_millis`] formats them, without a `String` in between
/// for the years 1970–9999 (every response carries one or two times).
pub(crate) fn serialize_millis<S: serde::Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
    match Rfc3339Millis::new(*ms) {
        Some(text) => s.serialize_str(text.as_str()),
        None => s.serialize_str(&format_millis(*ms)),
    }
}

/// [`serialize_millis`] for an optional time (`null` when absent).
pub(crate) fn serialize_optional_millis<S: serde::Serializer>(
    ms: &Option<Millis>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => serialize_millis(ms, s),
        None => s.serialize_none(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` on the stack: what chrono's RFC 3339 with milliseconds and `Z`
/// gives for a time from 1970 to 9999, written without chrono's formatting machinery.
struct Rfc3339Millis([u8; 24]);

/// 10000-01-01T00:00:00Z: the first time that needs a fifth year digit.
const YEAR_10000_MILLIS: Millis = 253_402_300_800_000;

impl Rfc3339Millis {
    /// `None` before 1970 or from year 10000 on (left to chrono).
    fn new(ms: Millis) -> Option<Rfc3339Millis> {
        if !(0..YEAR_10000_MILLIS).contains(&ms) {
            return None;
        }
        let (days, in_day) = (ms / 86_400_000, ms % 86_400_000);
        let (year, month, day) = civil_from_days(days);
        let (secs, millis) = (in_day / 1000, in_day % 1000);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for digit in out[at..at + width].iter_mut().rev() {
                *digit = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, secs / 3600);
        put(14, 2, secs / 60 % 60);
        put(17, 2, secs % 60);
        put(20, 3, millis);
        Some(Rfc3339Millis(out))
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (≥ 0), by
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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

    /// The hand-written formatter gives chrono's text for every time it covers.
    #[test]
    fn the_fast_format_is_chronos() {
        let chrono = |ms: Millis| Utc.timestamp_millis_opt(ms).single().map(rfc3339).unwrap();
        let edges = [
            0,
            1,
            999,
            86_399_999,
            86_400_000,
            951_782_400_000, // 2000-02-29
            4_107_542_399_999,
            YEAR_10000_MILLIS - 1,
        ];
        for ms in edges {
            assert_eq!(format_millis(ms), chrono(ms), "{ms}");
        }
        // Past the fast range: chrono's text (or the number) as before.
        for ms in [-1, -86_400_001, YEAR_10000_MILLIS, i64::MAX, i64::MIN] {
            let before = Utc
                .timestamp_millis_opt(ms)
                .single()
                .map(rfc3339)
                .unwrap_or_else(|| ms.to_string());
            assert_eq!(format_millis(ms), before, "{ms}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_format_is_chronos_anywhere(ms in 0..YEAR_10000_MILLIS) {
            let chrono = Utc.timestamp_millis_opt(ms).single().map(rfc3339).unwrap();
            proptest::prop_assert_eq!(format_millis(ms), chrono);
        }
    }

    #[test]
    fn round_trips_with_offsets() {
        let ms = parse_rfc3339("2021-01-14T10:33:46+01:00").unwrap();
        assert_eq!(format_millis(ms), "2021-01-14T09:33:46.000Z");
        assert_eq!(parse_rfc3339("not a date"), None);
    }
}
