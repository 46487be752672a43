//! Ingest: the events topic folded into the sled store.
//!
//! Every instance consumes every partition of the events topic by assignment, without a
//! consumer group, and so keeps a full replica of device state (like a Kafka Streams
//! GlobalKTable). Records are applied in chunks; each chunk's device states, index changes and
//! next offsets are written in one atomic sled batch, and on start ingest resumes from the
//! offsets in sled. The guarantee is at-least-once with no loss: a crash replays at most the
//! chunk in flight, and the fold absorbs the repeat. A record that cannot be used goes to the
//! dead-letter topic (acknowledged before its offset is stored) and ingest moves on.
//!
//! Ingest runs on its own thread: its work is CPU and sled bound, with nothing to await. A
//! second thread (`writer`) applies each folded chunk to the store while the ingest thread reads
//! and folds the next: one chunk in flight at most, applied whole and in order.

mod consumer;
mod gate;
mod status;
mod writer;

pub use gate::{IngestGate, PauseError, Paused};
pub use status::IngestStatus;

pub(crate) use consumer::{run, IngestContext};
