//! The simulated tenant's event log: SE events as raw JSON, newest first, with the few fields
//! `/v1/events` filters on pulled out once at insertion.
//!
//! Events are kept as bytes (not re-serialised per request) so an injected event is served
//! exactly as the test wrote it, and an `id` above 2^53 never passes through `f64`.

use super::shapes::Event;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashSet;

/// Why an event could not be added.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EventError {
    #[error("not a JSON event object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("event has neither `timestamp` nor a valid RFC 3339 `date`")]
    NoTime,
}

/// One stored event.
#[derive(Debug)]
pub(crate) struct StoredEvent {
    pub(crate) secs: i64,
    pub(crate) nanos: u32,
    /// Insertion order: breaks ties between events sharing a timestamp, so pages are stable.
    seq: u64,
    pub(crate) event_type_id: u64,
    pub(crate) connector_guid: Option<String>,
    pub(crate) group_guids: Vec<String>,
    detection_sha256: Option<String>,
    application_sha256: Option<String>,
    pub(crate) raw: Box<RawValue>,
}

impl StoredEvent {
    fn order_key(&self) -> (i64, u32, u64) {
        (self.secs, self.nanos, self.seq)
    }
}

/// `/v1/events` filters. Different criteria AND together; values of one criterion OR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EventFilter {
    /// Inclusive, in whole seconds: an event whose `date` second equals it is returned.
    pub(crate) start_secs: Option<i64>,
    pub(crate) event_types: Vec<u64>,
    pub(crate) connector_guids: Vec<String>,
    pub(crate) group_guids: Vec<String>,
    pub(crate) detection_sha256: Option<String>,
    pub(crate) application_sha256: Option<String>,
}

impl EventFilter {
    pub(crate) fn matches(&self, e: &StoredEvent) -> bool {
        self.start_secs.is_none_or(|s| e.secs >= s)
            && (self.event_types.is_empty() || self.event_types.contains(&e.event_type_id))
            && (self.connector_guids.is_empty()
                || e.connector_guid.as_ref().is_some_and(|g| {
                    self.connector_guids
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case(g))
                }))
            && (self.group_guids.is_empty()
                || e.group_guids.iter().any(|g| self.group_guids.contains(g)))
            && same(&self.detection_sha256, &e.detection_sha256)
            && same(&self.application_sha256, &e.application_sha256)
    }
}

fn same(filter: &Option<String>, value: &Option<String>) -> bool {
    match filter {
        None => true,
        Some(f) => value.as_ref().is_some_and(|v| v.eq_ignore_ascii_case(f)),
    }
}

#[derive(Default)]
pub(crate) struct EventLog {
    /// Newest first: descending (timestamp, insertion order).
    events: Vec<StoredEvent>,
    ids: HashSet<u64>,
    next_seq: u64,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    timestamp_nanoseconds: Option<u32>,
    #[serde(default)]
    date: Option<String>,
    event_type_id: u64,
    #[serde(default)]
    connector_guid: Option<String>,
    #[serde(default)]
    group_guids: Vec<String>,
    #[serde(default)]
    computer: Option<MetaComputer>,
    #[serde(default)]
    file: Option<MetaFile>,
}

#[derive(Deserialize)]
struct MetaComputer {
    #[serde(default)]
    connector_guid: Option<String>,
}

#[derive(Deserialize)]
struct MetaFile {
    #[serde(default)]
    identity: Option<MetaIdentity>,
    #[serde(default)]
    parent: Option<Box<MetaFile>>,
}

#[derive(Deserialize)]
struct MetaIdentity {
    #[serde(default)]
    sha256: Option<String>,
}

impl MetaFile {
    fn sha256(&self) -> Option<String> {
        self.identity.as_ref()?.sha256.clone()
    }
}

impl EventLog {
    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn contains_id(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }

    /// Every event, newest first.
    /// The sequence number the next event will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Events added at or after sequence number `seq`, in the order they were added.
    pub(crate) fn added_since(&self, seq: u64) -> Vec<&StoredEvent> {
        let mut added: Vec<&StoredEvent> = self.events.iter().filter(|e| e.seq >= seq).collect();
        added.sort_by_key(|e| e.seq);
        added
    }

    pub(crate) fn all(&self) -> &[StoredEvent] {
        &self.events
    }

    /// The events passing `filter`, newest first.
    pub(crate) fn query<'a>(
        &'a self,
        filter: &'a EventFilter,
    ) -> impl Iterator<Item = &'a StoredEvent> {
        self.events.iter().filter(move |e| filter.matches(e))
    }

    pub(crate) fn push(&mut self, event: &Event) {
        let raw = serde_json::value::to_raw_value(event).expect("simulated events serialise");
        self.push_raw(raw)
            .expect("simulated events carry a timestamp");
    }

    /// Adds an event exactly as given (the bytes are served back unchanged).
    pub(crate) fn push_raw(&mut self, raw: Box<RawValue>) -> Result<(), EventError> {
        let meta: Meta = serde_json::from_str(raw.get())?;
        let (secs, nanos) = event_time(&meta).ok_or(EventError::NoTime)?;
        let id = meta.id.as_ref().and_then(|v| match v {
            serde_json::Value::String(s) => s.parse().ok(),
            other => other.as_u64(),
        });
        if let Some(id) = id {
            // Generated ids must not collide with injected ones.
            self.ids.insert(id);
        }
        let stored = StoredEvent {
            secs,
            nanos,
            seq: self.next_seq,
            event_type_id: meta.event_type_id,
            connector_guid: meta
                .connector_guid
                .or_else(|| meta.computer.and_then(|c| c.connector_guid)),
            group_guids: meta.group_guids,
            detection_sha256: meta.file.as_ref().and_then(MetaFile::sha256),
            application_sha256: meta
                .file
                .as_ref()
                .and_then(|f| f.parent.as_ref())
                .and_then(|p| p.sha256()),
            raw,
        };
        self.next_seq += 1;
        let key = stored.order_key();
        let at = self.events.partition_point(|e| e.order_key() > key);
        self.events.insert(at, stored);
        Ok(())
    }
}

fn event_time(meta: &Meta) -> Option<(i64, u32)> {
    if let Some(secs) = meta.timestamp {
        return Some((secs, meta.timestamp_nanoseconds.unwrap_or(0)));
    }
    let t = chrono::DateTime::parse_from_rfc3339(meta.date.as_deref()?).ok()?;
    Some((t.timestamp(), t.timestamp_subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(e: &StoredEvent) -> u64 {
        serde_json::from_str::<serde_json::Value>(e.raw.get()).unwrap()["id"]
            .as_u64()
            .unwrap()
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    fn log_of(events: &[&str]) -> EventLog {
        let mut log = EventLog::default();
        for e in events {
            log.push_raw(raw(e)).unwrap();
        }
        log
    }

    #[test]
    fn newest_first_with_stable_ties() {
        let log = log_of(&[
            r#"{"id":1,"timestamp":100,"event_type_id":1}"#,
            r#"{"id":2,"timestamp":300,"event_type_id":1}"#,
            r#"{"id":3,"timestamp":200,"event_type_id":1}"#,
            r#"{"id":4,"timestamp":200,"event_type_id":1}"#,
        ]);
        let ids: Vec<_> = log.all().iter().map(id_of).collect();
        assert_eq!(ids, [2, 4, 3, 1]);
    }

    #[test]
    fn raw_bytes_and_big_ids_survive() {
        let text = r#"{"id":6533241145273614339,"date":"2020-06-25T10:05:52+00:00","event_type_id":1090519054,"x":1.50}"#;
        let log = log_of(&[text]);
        assert_eq!(log.all()[0].raw.get(), text);
        assert_eq!(id_of(&log.all()[0]), 6533241145273614339);
        assert!(log.contains_id(6533241145273614339));
    }

    #[test]
    fn an_event_without_time_is_refused() {
        let mut log = EventLog::default();
        assert!(matches!(
            log.push_raw(raw(r#"{"event_type_id":1}"#)),
            Err(EventError::NoTime)
        ));
        assert!(matches!(
            log.push_raw(raw(r#"{"date":"yesterday","event_type_id":1}"#)),
            Err(EventError::NoTime)
        ));
        assert!(log.all().is_empty());
    }

    #[test]
    fn filters_and_together_and_or_within() {
        let log = log_of(&[
            r#"{"id":1,"timestamp":100,"event_type_id":10,"connector_guid":"a"}"#,
            r#"{"id":2,"timestamp":200,"event_type_id":20,"connector_guid":"a"}"#,
            r#"{"id":3,"timestamp":300,"event_type_id":30,"computer":{"connector_guid":"b"}}"#,
            r#"{"id":4,"timestamp":400,"event_type_id":10}"#,
        ]);
        let ids = |f: &EventFilter| log.query(f).map(id_of).collect::<Vec<_>>();
        let types = EventFilter {
            event_types: vec![10, 30],
            ..Default::default()
        };
        assert_eq!(ids(&types), [4, 3, 1]);
        let both = EventFilter {
            connector_guids: vec!["A".into()],
            ..types.clone()
        };
        assert_eq!(ids(&both), [1]);
        let since = EventFilter {
            start_secs: Some(200),
            ..Default::default()
        };
        assert_eq!(ids(&since), [4, 3, 2], "start_date is inclusive");
    }
}
