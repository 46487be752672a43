//! The state fold: how events-topic records become one device state per connector GUID.
//!
//! Pure, synchronous code with no I/O. [`record::classify`] turns a Kafka record (value, headers,
//! timestamp) into a [`Fact`] about one device, and [`DeviceState::apply`] merges a fact into the
//! device's state. Every merge is a join (max, min or set union on values that carry their own
//! time), so the fold is idempotent and order-insensitive: the same records, in any order, any
//! number of times, give the same state. That is what makes at-least-once ingest, replays and
//! redeliveries harmless. Storage is [`crate::store`]'s job; matching and policy are elsewhere.

mod compromise;
mod device;
mod record;
#[cfg(test)]
mod tests;

pub use compromise::FoldConfig;
pub use device::{CompromiseEvent, DeviceState, EventKey, Fact, Observation, Stamped};
pub use record::{classify, Classified, Heartbeat, RecordError, RecordInput};

pub(crate) use compromise::DEFAULT_COMPROMISE_EVENT_TYPES;
