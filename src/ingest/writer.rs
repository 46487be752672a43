//! Ingest's store writer: a thread that applies one chunk to the store ([`Store::apply_timed`],
//! the sled batch and then the decision index) while the ingest thread reads and folds the
//! next one.
//!
//! Measured in #11: in a 1M-device catch-up the ingest thread spent about a quarter of its time
//! parsing, checking and folding records and the rest writing them; one thread doing both in
//! turn left the second core idle. At most one chunk is in flight. The ingest thread folds the
//! next one onto the in-flight chunk's states where it names the same devices (they are newer
//! than sled's), and reads no stored state from sled until the chunk is applied (sled holds its
//! readers while it applies a batch, and the state it would read may be about to change). So
//! the store still sees chunks one at a time, in order, each applied whole.

use crate::store::{ApplyTimings, ChunkUpdate, Store, StoreError};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The writer thread and the chunk it is applying, if any.
pub(super) struct Writer {
    /// `None` once the writer is shut down (see [`Drop`]).
    chunks: Option<SyncSender<Arc<ChunkUpdate>>>,
    done: Receiver<Result<ApplyTimings, StoreError>>,
    thread: Option<JoinHandle<()>>,
    in_flight: Option<Arc<ChunkUpdate>>,
}

/// Why a chunk in flight did not complete.
#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer thread is gone (it panicked): whether the chunk was applied is unknown, so
    /// ingest stops; the next start resumes from the offsets sled holds.
    #[error("the store writer thread stopped while applying a chunk")]
    WriterGone,
}

impl Writer {
    /// Starts the writer thread on `store`.
    pub(super) fn start(store: Store) -> std::io::Result<Writer> {
        // Capacity 1 both ways: a chunk is handed over and its result sent back without either
        // side waiting on the other's pickup (`submit` refuses a second chunk in flight).
        let (chunks, incoming) = sync_channel::<Arc<ChunkUpdate>>(1);
        let (report, done) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("ingest-writer".into())
            .spawn(move || {
                for update in incoming {
                    if report.send(store.apply_timed(&update)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Writer {
            chunks: Some(chunks),
            done,
            thread: Some(thread),
            in_flight: None,
        })
    }

    /// The chunk being applied, if any: its device states are newer than sled's.
    pub(super) fn in_flight(&self) -> Option<&ChunkUpdate> {
        self.in_flight.as_deref()
    }

    /// Hands `update` to the writer. The chunk in flight, if any, must have been finished
    /// ([`Writer::finish`]) first.
    pub(super) fn submit(&mut self, update: ChunkUpdate) -> Result<(), WriteError> {
        assert!(
            self.in_flight.is_none(),
            "one chunk in flight at a time: finish it before submitting the next"
        );
        let update = Arc::new(update);
        self.chunks
            .as_ref()
            .ok_or(WriteError::WriterGone)?
            .send(update.clone())
            .map_err(|_| WriteError::WriterGone)?;
        self.in_flight = Some(update);
        Ok(())
    }

    /// Waits for the chunk in flight to be applied and returns it with its timings; `None`
    /// when nothing is in flight.
    pub(super) fn finish(
        &mut self,
    ) -> Result<Option<(Arc<ChunkUpdate>, ApplyTimings)>, WriteError> {
        let Some(update) = self.in_flight.take() else {
            return Ok(None);
        };
        let timings = self.done.recv().map_err(|_| WriteError::WriterGone)??;
        Ok(Some((update, timings)))
    }
}

impl Drop for Writer {
    /// Stops the thread after the chunk it is applying, if any: a chunk handed over is always
    /// applied whole (as the single-threaded loop applied it before returning).
    fn drop(&mut self) {
        self.chunks.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::DeviceState;
    use std::collections::BTreeMap;

    fn chunk(guids: &[&str], next: i64) -> ChunkUpdate {
        ChunkUpdate {
            devices: guids
                .iter()
                .map(|g| (g.to_string(), (None, DeviceState::new(g))))
                .collect(),
            offsets: BTreeMap::from([(("events".to_owned(), 0), next)]),
            ..ChunkUpdate::default()
        }
    }

    /// Chunks are applied in order, one at a time, and each is in the store and the index
    /// when `finish` returns it.
    #[test]
    fn chunks_are_applied_in_order_and_finished_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::store::DEFAULT_CACHE_BYTES).unwrap();
        let mut writer = Writer::start(store.clone()).unwrap();
        assert!(writer.finish().unwrap().is_none());

        writer.submit(chunk(&["a", "b"], 2)).unwrap();
        assert_eq!(writer.in_flight().unwrap().devices.len(), 2);
        let (applied, _) = writer.finish().unwrap().expect("a chunk was in flight");
        assert!(writer.in_flight().is_none());
        assert_eq!(applied.devices.len(), 2);
        assert!(writer.finish().unwrap().is_none(), "finished once");
        assert!(store.device("a").unwrap().is_some());
        assert!(
            store.device_summary("b").unwrap().is_some(),
            "index updated"
        );

        writer.submit(chunk(&["c"], 3)).unwrap();
        drop(writer);
        // Dropping the writer applies what was handed over before the thread stops.
        assert!(store.device("c").unwrap().is_some());
        assert!(store.device_summary("c").unwrap().is_some());
        assert_eq!(store.offsets("events").unwrap()[&0], 3);
    }

    #[test]
    #[should_panic(expected = "one chunk in flight at a time")]
    fn a_second_chunk_is_refused_while_one_is_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::store::DEFAULT_CACHE_BYTES).unwrap();
        let mut writer = Writer::start(store).unwrap();
        writer.submit(chunk(&["a"], 1)).unwrap();
        let _ = writer.submit(chunk(&["b"], 2));
    }
}
