//! Checking a delivery's body before anything is published: every record must be usable, or
//! none is written.
//!
//! A record is kept as the [`RawValue`] slice of the body it came in, so what reaches the events
//! topic is the sender's bytes. Parsing here only decides whether the record is usable and which
//! connector GUID keys it.

use crate::se::{normalize_guid, split_records, Computer, Event, PageError};
use crate::topic::Kind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// At most this many per-record errors are listed in a 422, so the answer stays small.
const MAX_ITEMS: usize = 100;

/// Which endpoint a body was posted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Events,
    Computers,
}

impl Endpoint {
    pub(super) fn kind(self) -> Kind {
        match self {
            Endpoint::Events => Kind::Event,
            Endpoint::Computers => Kind::Computer,
        }
    }
}

/// One usable record.
#[derive(Debug)]
pub(super) struct Record<'a> {
    /// The normalised connector GUID: the record's key on the events topic.
    pub(super) key: String,
    /// The record's bytes exactly as received.
    pub(super) value: &'a RawValue,
}

/// What is wrong with one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct ItemError {
    pub(super) index: usize,
    pub(super) error: String,
}

/// Why a body was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum BodyError {
    /// Not JSON at all (400).
    #[error("body is not valid JSON: {0}")]
    Json(String),
    /// JSON, but not an object, an array of objects or an envelope (422).
    #[error("{0}")]
    Shape(String),
    /// Some records are unusable (422); at most [`MAX_ITEMS`] are listed.
    #[error("{} record(s) cannot be used", .0.len())]
    Records(Vec<ItemError>),
}

/// Splits and checks a body posted to `endpoint`.
pub(super) fn validate(endpoint: Endpoint, body: &[u8]) -> Result<Vec<Record<'_>>, BodyError> {
    let text =
        std::str::from_utf8(body).map_err(|e| BodyError::Json(format!("not UTF-8 ({e})")))?;
    let raw = split_records(text).map_err(|e| match e {
        PageError::Json(e) => BodyError::Json(e.to_string()),
        shape @ PageError::Shape(_) => BodyError::Shape(shape.to_string()),
    })?;
    let mut records = Vec::with_capacity(raw.records.len());
    let mut errors = Vec::new();
    for (index, value) in raw.records.into_iter().enumerate() {
        match connector_guid(endpoint, value.get()) {
            Ok(key) => records.push(Record { key, value }),
            Err(error) if errors.len() < MAX_ITEMS => errors.push(ItemError { index, error }),
            Err(_) => {}
        }
    }
    if errors.is_empty() {
        Ok(records)
    } else {
        Err(BodyError::Records(errors))
    }
}

/// The key a record is published under, or why it cannot be used.
fn connector_guid(endpoint: Endpoint, json: &str) -> Result<String, String> {
    // What ingest would dead-letter is refused here, before it reaches the topic.
    crate::json::check(json.as_bytes(), crate::fold::RECORD_LIMITS)
        .map_err(|e| format!("record refused: {e}"))?;
    match endpoint {
        Endpoint::Events => {
            let event: Event =
                serde_json::from_str(json).map_err(|e| format!("not an SE event: {e}"))?;
            event.connector_guid().ok_or_else(|| {
                "no connector_guid (top-level or computer.connector_guid)".to_owned()
            })
        }
        Endpoint::Computers => {
            // An event carries a top-level connector_guid too, so it would parse as a computer
            // with no compromise flag; refuse it rather than index it as inventory.
            let probe: Probe = serde_json::from_str(json).map_err(|e| e.to_string())?;
            if probe.event_type_id.is_some() {
                return Err("an SE event, not a computer: POST it to /v1/events".into());
            }
            let computer: Computer =
                serde_json::from_str(json).map_err(|e| format!("not an SE computer: {e}"))?;
            normalize_guid(&computer.connector_guid).ok_or_else(|| "empty connector_guid".into())
        }
    }
}

/// The envelope's optional `observed_at` (RFC 3339): when the bridge read the records from SE.
/// Only an envelope (`{"observed_at": "…", "data": […]}`) carries it; in a bare record the
/// field would be the record's own. A value that is not RFC 3339 refuses the body (422) rather
/// than being ignored: a bridge that means to date its reads must not be silently re-dated.
pub fn envelope_observed_at(body: &[u8]) -> Result<Option<DateTime<Utc>>, BodyError> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(default, borrow)]
        observed_at: Option<&'a RawValue>,
        #[serde(default)]
        data: Option<serde::de::IgnoredAny>,
    }
    let text = std::str::from_utf8(body).map_err(|e| BodyError::Json(e.to_string()))?;
    if !text.trim_start().starts_with('{') {
        return Ok(None);
    }
    let envelope: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| BodyError::Json(e.to_string()))?;
    let (Some(raw), Some(_)) = (envelope.observed_at, envelope.data) else {
        return Ok(None);
    };
    let not_rfc3339 = || BodyError::Shape("observed_at must be an RFC 3339 time".into());
    let text: &str = serde_json::from_str(raw.get()).map_err(|_| not_rfc3339())?;
    DateTime::parse_from_rfc3339(text)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| not_rfc3339())
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    event_type_id: Option<serde::de::IgnoredAny>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"id":6533241145273614339,"event_type_id":1090519054,"connector_guid":"G-1","date":"2026-01-01T00:00:00+00:00"}"#;
    const COMPUTER: &str = r#"{"connector_guid":"g-2","hostname":"h","is_compromised":true,"operating_system":"Windows 11"}"#;

    #[test]
    fn one_object_an_array_and_an_envelope_are_accepted_byte_for_byte() {
        for body in [
            EVENT.to_owned(),
            format!("[{EVENT}, {EVENT}]"),
            format!(r#"{{"version":"v1","data":[{EVENT}],"metadata":{{}}}}"#),
        ] {
            let records = validate(Endpoint::Events, body.as_bytes()).unwrap();
            assert!(!records.is_empty());
            for r in &records {
                assert_eq!(r.value.get(), EVENT);
                assert_eq!(r.key, "g-1");
            }
        }
        let records = validate(Endpoint::Computers, COMPUTER.as_bytes()).unwrap();
        assert_eq!(records[0].key, "g-2");
    }

    #[test]
    fn an_event_keyed_only_by_its_embedded_computer_is_accepted() {
        let body = r#"{"event_type_id":1,"computer":{"connector_guid":"g-3"}}"#;
        assert_eq!(
            validate(Endpoint::Events, body.as_bytes()).unwrap()[0].key,
            "g-3"
        );
    }

    #[test]
    fn the_real_computers_page_validates() {
        let page = include_str!("../../tests/fixtures/computers-page.json");
        assert_eq!(
            validate(Endpoint::Computers, page.as_bytes())
                .unwrap()
                .len(),
            38
        );
    }

    #[test]
    fn bad_records_are_listed_by_index() {
        let body = format!(
            r#"[{EVENT}, {{"event_type_id":1}}, {{"connector_guid":"g"}}, {{"event_type_id":1,"connector_guid":"  "}}]"#
        );
        let Err(BodyError::Records(items)) = validate(Endpoint::Events, body.as_bytes()) else {
            panic!("expected record errors");
        };
        assert_eq!(items.iter().map(|i| i.index).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(items[0].error.contains("connector_guid"), "{items:?}");
        assert!(items[1].error.contains("event_type_id"), "{items:?}");
    }

    #[test]
    fn events_are_not_computers_and_computers_are_not_events() {
        let Err(BodyError::Records(items)) = validate(Endpoint::Computers, EVENT.as_bytes()) else {
            panic!("an event is not a computer");
        };
        assert!(items[0].error.contains("/v1/events"));
        assert!(matches!(
            validate(Endpoint::Events, COMPUTER.as_bytes()),
            Err(BodyError::Records(_))
        ));
        assert!(matches!(
            validate(Endpoint::Computers, br#"{"hostname":"h"}"#),
            Err(BodyError::Records(_))
        ));
    }

    #[test]
    fn invalid_json_and_wrong_shapes_are_told_apart() {
        for body in [&b"{nope"[..], b"", b"\xff\xfe", b"[1,"] {
            assert!(matches!(
                validate(Endpoint::Events, body),
                Err(BodyError::Json(_))
            ));
        }
        for body in [&b"42"[..], b"[1,2]", b"\"x\""] {
            assert!(matches!(
                validate(Endpoint::Events, body),
                Err(BodyError::Shape(_))
            ));
        }
    }

    #[test]
    fn an_empty_batch_is_valid_and_publishes_nothing() {
        assert!(validate(Endpoint::Events, b"[]").unwrap().is_empty());
        assert!(validate(Endpoint::Events, br#"{"data":[]}"#)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn an_envelope_may_say_when_its_records_were_read() {
        let at = |body: &str| envelope_observed_at(body.as_bytes());
        let body = format!(r#"{{"observed_at":"2026-01-01T10:00:00+02:00","data":[{COMPUTER}]}}"#);
        assert_eq!(
            at(&body).unwrap().unwrap().to_rfc3339(),
            "2026-01-01T08:00:00+00:00"
        );
        assert_eq!(
            validate(Endpoint::Computers, body.as_bytes())
                .unwrap()
                .len(),
            1
        );
        assert_eq!(at(COMPUTER).unwrap(), None);
        assert_eq!(at(&format!("[{COMPUTER}]")).unwrap(), None);
        assert_eq!(
            at(r#"{"observed_at":"2026-01-01T00:00:00Z","connector_guid":"g"}"#).unwrap(),
            None,
            "a record's own field"
        );
        for bad in [r#""yesterday""#, "1767225600", r#""2026-01-01 00:00""#] {
            let body = format!(r#"{{"observed_at":{bad},"data":[]}}"#);
            assert!(matches!(at(&body), Err(BodyError::Shape(_))), "{bad}");
        }
    }

    #[test]
    fn the_item_list_is_capped() {
        let body = format!("[{}]", vec![r#"{"x":1}"#; MAX_ITEMS + 50].join(","));
        let Err(BodyError::Records(items)) = validate(Endpoint::Events, body.as_bytes()) else {
            panic!("expected record errors");
        };
        assert_eq!(items.len(), MAX_ITEMS);
    }

    #[test]
    fn hostile_records_are_refused_before_the_topic() {
        let body = br#"[{"connector_guid":"g","is_compromised":true,"is_compromised":false}]"#;
        match validate(Endpoint::Computers, body) {
            Err(BodyError::Records(items)) => {
                assert_eq!(items[0].index, 0);
                assert!(
                    items[0].error.contains("duplicate key"),
                    "{}",
                    items[0].error
                );
            }
            other => panic!("{other:?}"),
        }
        let body = br#"{"event_type_id":1,"connector_guid":"g","n":18446744073709551616}"#;
        assert!(matches!(
            validate(Endpoint::Events, body),
            Err(BodyError::Records(_))
        ));
    }
}
