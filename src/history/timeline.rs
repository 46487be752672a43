//! The pure half of a device's history: its records, as read back from the events topic, folded
//! one at a time from nothing, with the compromise rule and a trusted device's decision after
//! each step. No I/O: the records come from `fetch.rs` (or a test).
//!
//! The fold is order-insensitive, so the state after a record is the state of every record of
//! the device up to it in time order, whatever order ingest met them in: the same state ingest
//! stored once it had them all.

use crate::fold::{classify, Classified, DeviceState, FoldConfig, RecordInput};
use crate::policy::{
    evaluate, Decision, EvalContext, MemoryDirectory, Policy, RequestIdentifiers, Subject,
};
use crate::time::{format_millis, parse_rfc3339, Millis};
use crate::topic::Kind;
use serde_json::{json, Value};
use std::time::Duration;

/// One record of a device, as read back from the events topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchedRecord {
    /// Where it is.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its time: the Kafka timestamp ingest applied it with (the record reference's).
    pub timestamp: Millis,
    /// The `trustgate-kind` header.
    pub kind: Option<Vec<u8>>,
    /// The `trustgate-source` header.
    pub source: Option<Vec<u8>>,
    /// The `trustgate-observed-at` header.
    pub observed_at: Option<Vec<u8>>,
    /// SE's JSON, byte-for-byte.
    pub value: Option<Vec<u8>>,
}

impl FetchedRecord {
    fn input(&self) -> RecordInput<'_> {
        RecordInput {
            value: self.value.as_deref(),
            kind: self.kind.as_deref(),
            source: self.source.as_deref(),
            observed_at: self.observed_at.as_deref(),
            timestamp: self.timestamp,
        }
    }
}

/// A change of the compromise verdict made by one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Not compromised before the record, compromised after it.
    Compromised,
    /// Compromised before the record, not after it.
    Resolved,
}

impl Transition {
    /// The wire name (`history --json`'s `transition`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Compromised => "compromised",
            Transition::Resolved => "resolved",
        }
    }
}

/// What kind of record an entry is, with what the timeline shows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryDetail {
    /// An SE event.
    Event {
        /// SE's event type.
        event_type_id: u64,
        /// SE's name for it (`event_type`), when the record has one.
        event_type: Option<String>,
        /// SE's `detection` (the threat's name), when the record has one.
        detection: Option<String>,
        /// SE's `detection_id`, when the record has one.
        detection_id: Option<String>,
        /// Whether the type is compromise-class (`[compromise] event_types`).
        compromise_class: bool,
    },
    /// An SE inventory observation.
    Computer {
        /// SE's `is_compromised`, when the record has it.
        is_compromised: Option<bool>,
        /// When the inventory was read (`trustgate-observed-at`, never after the record).
        observed_at: Millis,
    },
}

/// One step of a device's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The record's time (its Kafka timestamp: when the events topic, and so trustgate, had it).
    pub at: Millis,
    /// Where the record is.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// The `trustgate-source` header, when present.
    pub source: Option<String>,
    /// What the record says.
    pub detail: EntryDetail,
    /// The compromise verdict after this record.
    pub compromised: bool,
    /// Whether this record changed the verdict.
    pub transition: Option<Transition>,
    /// What a trusted device named by this GUID would have been answered right after it.
    pub decision: Decision,
}

impl HistoryEntry {
    /// The entry as `history --json` prints it (`schemas/history-entry.v1.json`).
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "time": format_millis(self.at),
            "partition": self.partition,
            "offset": self.offset,
            "source": self.source,
            "compromised": self.compromised,
            "transition": self.transition.map(Transition::as_str),
            "decision": wire_name(&self.decision.outcome),
            "reason": wire_name(&self.decision.reason),
        });
        let fields = out.as_object_mut().expect("an object");
        match &self.detail {
            EntryDetail::Event {
                event_type_id,
                event_type,
                detection,
                detection_id,
                compromise_class,
            } => {
                fields.insert("kind".into(), json!("event"));
                fields.insert("event_type_id".into(), json!(event_type_id));
                fields.insert("event_type".into(), json!(event_type));
                fields.insert("detection".into(), json!(detection));
                fields.insert("detection_id".into(), json!(detection_id));
                fields.insert("compromise_class".into(), json!(compromise_class));
            }
            EntryDetail::Computer {
                is_compromised,
                observed_at,
            } => {
                fields.insert("kind".into(), json!("computer"));
                fields.insert("is_compromised".into(), json!(is_compromised));
                fields.insert("observed_at".into(), json!(format_millis(*observed_at)));
            }
        }
        out
    }
}

/// The wire name of policy's outcome or reason: its `serde` name, as in a decision response.
fn wire_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A device's timeline and the state its records fold to.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Every record of the device, in time order (then partition, offset), each once.
    pub entries: Vec<HistoryEntry>,
    /// The state after the last entry.
    pub state: DeviceState,
    /// Records read back that are not this device's or not usable (an index entry that no
    /// longer points at the device's record, e.g. after the topic was recreated): left out.
    pub skipped: usize,
}

/// What the timeline is computed under.
#[derive(Debug, Clone, Copy)]
pub struct TimelineContext<'a> {
    /// The compromise rule's configuration, as ingest applies it.
    pub fold: &'a FoldConfig,
    /// The policy a trusted device's decision is taken under (global, or `--application`'s).
    pub policy: &'a Policy,
    /// The reading instance's clock: record times are clamped to it, as ingest clamps them.
    pub now: Millis,
}

/// Folds `records` of device `guid`, one at a time in time order, from an empty state.
pub fn timeline(guid: &str, records: &[FetchedRecord], ctx: TimelineContext<'_>) -> Timeline {
    let grace = ctx.fold.grace_millis();
    let mut state = DeviceState::new(guid);
    let mut entries = Vec::new();
    let mut skipped = 0;
    let mut compromised = false;
    for record in in_time_order(records) {
        let Some((fact, detail)) = read(guid, record, ctx.fold, ctx.now) else {
            skipped += 1;
            continue;
        };
        state.apply(&fact);
        let now_compromised = state.is_compromised(grace);
        let transition = match (compromised, now_compromised) {
            (false, true) => Some(Transition::Compromised),
            (true, false) => Some(Transition::Resolved),
            _ => None,
        };
        compromised = now_compromised;
        entries.push(HistoryEntry {
            at: record.timestamp.min(ctx.now),
            partition: record.partition,
            offset: record.offset,
            source: record
                .source
                .as_deref()
                .map(|s| String::from_utf8_lossy(s).trim().to_owned()),
            detail,
            compromised,
            transition,
            decision: trusted_decision(&state, ctx.policy, grace),
        });
    }
    Timeline {
        entries,
        state,
        skipped,
    }
}

/// The device's state from its records stamped at or before `at` (`None` when there is none:
/// trustgate did not know the device then).
pub fn state_at(
    guid: &str,
    records: &[FetchedRecord],
    at: Millis,
    fold: &FoldConfig,
    now: Millis,
) -> Option<DeviceState> {
    let mut state = None;
    for record in in_time_order(records) {
        if record.timestamp.min(now) > at {
            break;
        }
        if let Some((fact, _)) = read(guid, record, fold, now) {
            state
                .get_or_insert_with(|| DeviceState::new(guid))
                .apply(&fact);
        }
    }
    state
}

/// The records in time order (then partition, offset), each (partition, offset) once.
fn in_time_order(records: &[FetchedRecord]) -> Vec<&FetchedRecord> {
    let mut sorted: Vec<&FetchedRecord> = records.iter().collect();
    sorted.sort_by_key(|r| (r.timestamp, r.partition, r.offset));
    sorted.dedup_by_key(|r| (r.partition, r.offset));
    sorted
}

/// The fact a record states about `guid` (as ingest classifies it) and what the timeline shows
/// of it; `None` for a record about another device or one ingest would not apply.
fn read(
    guid: &str,
    record: &FetchedRecord,
    fold: &FoldConfig,
    now: Millis,
) -> Option<(crate::fold::Fact, EntryDetail)> {
    let Ok(Classified::Device(fact)) = classify(&record.input(), fold, now) else {
        return None;
    };
    if fact.connector_guid != guid {
        return None;
    }
    let value: Value = serde_json::from_slice(record.value.as_deref()?).ok()?;
    let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
    let header_kind = record
        .kind
        .as_deref()
        .and_then(|k| Kind::parse(String::from_utf8_lossy(k).trim()));
    let is_event = match header_kind {
        Some(kind) => kind == Kind::Event,
        // Inferred as `fold::classify` infers it.
        None => value.get("event_type_id").is_some(),
    };
    let detail = if is_event {
        let event: crate::se::Event = serde_json::from_value(value.clone()).ok()?;
        EntryDetail::Event {
            event_type_id: event.event_type_id,
            event_type: text("event_type"),
            detection: text("detection"),
            detection_id: event.detection_id.clone(),
            compromise_class: fold.is_compromise_class(event.event_type_id),
        }
    } else {
        let timestamp = record.timestamp.min(now);
        let observed_at = record
            .observed_at
            .as_deref()
            .and_then(|raw| std::str::from_utf8(raw).ok())
            .and_then(parse_rfc3339)
            .map_or(timestamp, |t| t.min(timestamp));
        EntryDetail::Computer {
            is_compromised: value.get("is_compromised").and_then(Value::as_bool),
            observed_at,
        }
    };
    Some((fact, detail))
}

/// What a trusted device named by its connector GUID is answered from `state` under `policy`:
/// the pure evaluation, with the instance taken as ready and the feed as fresh (readiness and
/// staleness are about the instance answering, not about the device's past).
pub fn trusted_decision(state: &DeviceState, policy: &Policy, grace_millis: i64) -> Decision {
    let mut directory = MemoryDirectory::default();
    directory.insert(state.clone());
    let subject = Subject {
        trusted: true,
        os: None,
        ids: RequestIdentifiers {
            connector_guid: Some(state.connector_guid.clone()),
            ..Default::default()
        },
    };
    let ctx = EvalContext {
        grace_millis,
        liveness_age: Some(Duration::ZERO),
        ready: true,
    };
    evaluate(policy, &subject, &directory, &ctx)
}
