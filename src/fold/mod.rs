//! The state fold: how events-topic records become one device state per connector GUID.
//!
//! Pure, synchronous code with no I/O. [`record::classify`] turns a Kafka record (value, headers,
//! timestamp) into a [`Fact`] about one device, and [`DeviceState::apply`] merges a fact into the
//! device's state. Every merge is a join (max, min or set union on values that carry their own
//! time), so the fold is idempotent and order-insensitive: the same records, in any order, any
//! number of times, give the same state. That is what makes at-least-once ingest, replays and
//! redeliveries harmless. Storage is [`crate::store`]'s job; matching and policy are elsewhere.
//!
//! The fold takes no clock of its own: the applying instance passes its "now" to
//! [`record::classify`], which clamps every time taken from a record (Kafka timestamp,
//! `trustgate-observed-at`, an event's date and first sighting, a computer's `last_seen`) to it.
//! A record stamped ahead is taken as of now, so no producer's clock can keep `stale` off or
//! outrank detections the others saw. The merges stay joins: the clamp only lowers a record's
//! times, and a record applied twice at two nows keeps the earlier first sighting.

mod compromise;
mod device;
mod record;
mod summary;
#[cfg(test)]
mod tests;

pub use compromise::FoldConfig;
pub use device::{
    CompromiseEvent, DeviceState, EventKey, Fact, Observation, RecordRef, Stamped,
    MAX_EVENTS_PER_DEVICE,
};
pub use record::{classify, Classified, Heartbeat, RecordError, RecordInput, RECORD_LIMITS};
pub use summary::{DeviceSummary, SummaryEvent, SummaryGuid};

pub(crate) use compromise::DEFAULT_COMPROMISE_EVENT_TYPES;
