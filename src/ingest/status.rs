//! What ingest tells the rest of the process: whether it has caught up, and how far behind
//! each partition is.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Shared, cheap-to-clone view of ingest progress.
#[derive(Clone)]
pub struct IngestStatus {
    caught_up: watch::Sender<bool>,
    /// Per partition: (next offset to apply, high watermark last seen).
    progress: Arc<Mutex<BTreeMap<i32, (i64, i64)>>>,
}

impl Default for IngestStatus {
    fn default() -> Self {
        IngestStatus {
            caught_up: watch::channel(false).0,
            progress: Arc::default(),
        }
    }
}

impl IngestStatus {
    /// True once every partition was applied up to the end it had when ingest started.
    pub fn is_caught_up(&self) -> bool {
        *self.caught_up.borrow()
    }

    pub(super) fn set_caught_up(&self) {
        self.caught_up
            .send_if_modified(|v| !std::mem::replace(v, true));
    }

    /// Waits until caught up; returns false if `cancelled` fired first.
    pub async fn wait_caught_up(&self, cancelled: &tokio_util::sync::CancellationToken) -> bool {
        let mut rx = self.caught_up.subscribe();
        tokio::select! {
            r = rx.wait_for(|v| *v) => r.is_ok(),
            _ = cancelled.cancelled() => false,
        }
    }

    pub(super) fn record_progress(&self, partition: i32, next: i64, high: i64) {
        self.progress
            .lock()
            .expect("progress lock")
            .insert(partition, (next, high));
    }

    /// Records behind the last known high watermark, per partition.
    pub fn lag(&self) -> BTreeMap<i32, i64> {
        self.progress
            .lock()
            .expect("progress lock")
            .iter()
            .map(|(p, (next, high))| (*p, (high - next).max(0)))
            .collect()
    }
}
