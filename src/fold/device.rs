//! One device's state and the merge of a fact into it.

use crate::time::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The most compromise-class events a device remembers. Every decision used to decode the whole
/// list and nothing ever pruned it; past this bound the event with the oldest
/// [`time`](CompromiseEvent::time) is forgotten. That never changes a verdict: the compromise
/// rule asks whether *any* event is later than a cutoff (or, with no observation, whether any
/// exists), and the newest event, which is kept, answers both. The kept events keep their
/// identity and first sighting, so a redelivery of one cannot re-date it; a forgotten one that
/// comes again is remembered afresh, at a first sighting no earlier than before, which can only
/// make the device look compromised for longer (the safe direction).
pub const MAX_EVENTS_PER_DEVICE: usize = 64;

/// A value with the time it was true at. Merging keeps the greatest `(at, value)`: newest wins,
/// and a tie is broken by the value itself so that the result never depends on arrival order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamped<T> {
    /// When the value was true (unix ms).
    pub at: Millis,
    /// The value itself.
    pub value: T,
}

fn merge_stamped<T: Ord + Clone>(slot: &mut Option<Stamped<T>>, incoming: &Option<Stamped<T>>) {
    if let Some(new) = incoming {
        if slot.as_ref().is_none_or(|old| new > old) {
            *slot = Some(new.clone());
        }
    }
}

/// An inventory observation of SE's `is_compromised` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Observation {
    /// `trustgate-observed-at`, capped at the Kafka record timestamp.
    pub at: Millis,
    /// Ordered after `at` so that of two observations at the same time the compromised one wins.
    pub compromised: bool,
}

/// An event's identity: SE's (`id`, `event_type_id`), or a hash of its bytes when it has no id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventKey {
    /// SE's event `id` with its `event_type_id`: the pair names one event.
    Id {
        /// SE's 64-bit event id.
        id: u64,
        /// SE's event type.
        event_type_id: u64,
    },
    /// The first 16 bytes of the SHA-256 of the record value, for an event without an id.
    Hash([u8; 16]),
}

/// A compromise-class event remembered for a device. Cleared events are kept (they are small and
/// rare) so that a redelivery of an old detection is recognised and keeps its first-seen time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompromiseEvent {
    /// SE's event type; [`FoldConfig`](super::FoldConfig) says which types are compromise-class.
    pub event_type_id: u64,
    /// SE's detection id, when it has one.
    pub detection_id: Option<String>,
    /// SE's `date`, when readable.
    pub date: Option<Millis>,
    /// The earliest Kafka record timestamp this event was seen at.
    pub first_seen: Millis,
}

impl CompromiseEvent {
    /// When SE could first have known: the later of its `date` and its first sighting (an
    /// offline laptop uploads a detection hours after its `date`; SE's flag could not reflect
    /// it before the upload).
    pub(crate) fn time(&self) -> Millis {
        self.date
            .map_or(self.first_seen, |d| d.max(self.first_seen))
    }

    fn merge(&mut self, other: &CompromiseEvent) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.date = self.date.max(other.date);
        self.detection_id = self.detection_id.clone().max(other.detection_id.clone());
    }
}

/// Identifiers a record states about its device, each stamped with the record's time. (What a
/// decision request gives to match a device by is `policy::RequestIdentifiers`.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RecordIdentifiers {
    pub(crate) hostname: Option<Stamped<String>>,
    /// Normalised MACs, sorted and deduplicated: a record states the device's whole set.
    pub(crate) macs: Option<Stamped<Vec<String>>>,
    pub(crate) windows_processor_id: Option<Stamped<String>>,
    pub(crate) operating_system: Option<Stamped<String>>,
}

/// What one record says about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// The device, normalised: the key of the state the fact merges into.
    pub connector_guid: String,
    pub(crate) record_timestamp: Millis,
    pub(crate) identifiers: RecordIdentifiers,
    pub(crate) last_seen: Option<Millis>,
    pub(crate) observation: Option<Observation>,
    pub(crate) compromise_event: Option<(EventKey, CompromiseEvent)>,
}

/// Everything trustgate knows about one connector GUID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// The device's key, normalised (lower case).
    pub connector_guid: String,
    /// Normalised hostname; the newest stated wins.
    pub hostname: Option<Stamped<String>>,
    /// Normalised MACs, as the newest record stated the whole set.
    pub macs: Option<Stamped<Vec<String>>>,
    /// Normalised `windows_processor_id`, from computer records.
    pub windows_processor_id: Option<Stamped<String>>,
    /// SE's free-text `operating_system`, from computer records.
    pub operating_system: Option<Stamped<String>>,
    /// SE's `last_seen` for the computer, newest seen.
    pub last_seen: Option<Millis>,
    /// The latest inventory observation of `is_compromised`.
    pub observation: Option<Observation>,
    /// Compromise-class events seen, cleared ones included (see [`CompromiseEvent`]): the
    /// newest [`MAX_EVENTS_PER_DEVICE`] of them.
    pub events: BTreeMap<EventKey, CompromiseEvent>,
    /// Kafka timestamp of the newest record applied for this device.
    pub newest_record_at: Option<Millis>,
    /// Where this device's newest records are on the events topic (`trustgate history`), kept
    /// beside its state so that a record costs the store one key, not two (#11). No fact
    /// changes it: ingest adds each applied record's reference
    /// (`store::ChunkUpdate::add_record_ref`), and the store moves them to keys of their own
    /// once there are more than a few. Not in the serde form: the store encodes it after the
    /// state.
    #[serde(skip)]
    pub recent_refs: Vec<RecordRef>,
}

/// Where one of a device's records is on the events topic, and its Kafka timestamp (as
/// applied: clamped to the applying instance's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordRef {
    /// The events-topic partition.
    pub partition: i32,
    /// The record's offset there.
    pub offset: i64,
    /// Its Kafka timestamp, unix ms.
    pub at: Millis,
}

impl RecordRef {
    /// Where the record is, which names it: a redelivered record has the same position (its
    /// applied time may differ).
    pub fn position(&self) -> (i32, i64) {
        (self.partition, self.offset)
    }
}

impl DeviceState {
    /// The state of a device nothing is known about yet.
    pub fn new(connector_guid: &str) -> Self {
        DeviceState {
            connector_guid: connector_guid.to_owned(),
            ..Default::default()
        }
    }

    /// Merges a fact about this device. Idempotent, commutative and associative (up to the
    /// bound on remembered events, see [`MAX_EVENTS_PER_DEVICE`]).
    pub fn apply(&mut self, fact: &Fact) {
        debug_assert_eq!(fact.connector_guid, self.connector_guid);
        merge_stamped(&mut self.hostname, &fact.identifiers.hostname);
        merge_stamped(&mut self.macs, &fact.identifiers.macs);
        merge_stamped(
            &mut self.windows_processor_id,
            &fact.identifiers.windows_processor_id,
        );
        merge_stamped(
            &mut self.operating_system,
            &fact.identifiers.operating_system,
        );
        self.last_seen = self.last_seen.max(fact.last_seen);
        self.observation = self.observation.max(fact.observation);
        if let Some((key, event)) = &fact.compromise_event {
            self.events
                .entry(*key)
                .and_modify(|known| known.merge(event))
                .or_insert_with(|| event.clone());
            self.forget_oldest_events();
        }
        self.newest_record_at = self.newest_record_at.max(Some(fact.record_timestamp));
    }

    /// Keeps the newest [`MAX_EVENTS_PER_DEVICE`] events by time (ties by key, so the result
    /// does not depend on arrival order).
    fn forget_oldest_events(&mut self) {
        while self.events.len() > MAX_EVENTS_PER_DEVICE {
            let oldest = self
                .events
                .iter()
                .min_by_key(|(key, e)| (e.time(), **key))
                .map(|(key, _)| *key);
            match oldest {
                Some(key) => self.events.remove(&key),
                None => break,
            };
        }
    }

    /// The compromise rule: the latest observation says compromised, or a compromise-class event
    /// is later than (that observation − `grace`). With no observation, any such event counts.
    pub fn is_compromised(&self, grace_millis: i64) -> bool {
        match self.observation {
            Some(obs) => {
                obs.compromised
                    || self
                        .events
                        .values()
                        .any(|e| e.time() > obs.at.saturating_sub(grace_millis))
            }
            None => !self.events.is_empty(),
        }
    }

    /// The compromise-class events the latest observation has not cleared.
    pub(crate) fn open_events(
        &self,
        grace_millis: i64,
    ) -> impl Iterator<Item = (&EventKey, &CompromiseEvent)> {
        let cutoff = self.observation.map(|o| o.at.saturating_sub(grace_millis));
        self.events
            .iter()
            .filter(move |(_, e)| cutoff.is_none_or(|c| e.time() > c))
    }
}
