//! What ingest tells the rest of the process: whether it has caught up, and how far behind
//! each partition is.

use crate::locks;
use crate::time::now_millis;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Shared, cheap-to-clone view of ingest progress.
#[derive(Clone)]
pub struct IngestStatus {
    caught_up: watch::Sender<bool>,
    /// Per partition: (next offset to apply, high watermark last seen).
    progress: Arc<Mutex<BTreeMap<i32, (i64, i64)>>>,
    /// When the broker last answered ingest (unix ms).
    broker_ok_at: Arc<AtomicI64>,
    /// Why ingest cannot move on right now (e.g. a dead-letter write that keeps failing);
    /// `None` while it can.
    stuck: Arc<Mutex<Option<String>>>,
    /// Where ingest can be paused between chunks (the online replay's switch-over).
    gate: super::IngestGate,
}

/// How long without an answer from the broker before it counts as unreachable.
const BROKER_SILENCE_MS: i64 = 30_000;

impl Default for IngestStatus {
    fn default() -> Self {
        IngestStatus {
            caught_up: watch::channel(false).0,
            progress: Arc::default(),
            broker_ok_at: Arc::new(AtomicI64::new(i64::MIN)),
            stuck: Arc::default(),
            gate: super::IngestGate::default(),
        }
    }
}

impl IngestStatus {
    /// The gate ingest parks at between chunks when asked.
    pub fn gate(&self) -> &super::IngestGate {
        &self.gate
    }

    /// True once every partition was applied up to the end it had when ingest started.
    pub fn is_caught_up(&self) -> bool {
        *self.caught_up.borrow()
    }

    /// The status of a store that no ingest feeds (one-shot `decide` and `inspect` on a
    /// stopped instance's store): it is as caught up as it will ever be.
    pub fn offline() -> Self {
        let status = IngestStatus::default();
        status.set_caught_up();
        status
    }

    pub(super) fn set_caught_up(&self) {
        self.caught_up
            .send_if_modified(|v| !std::mem::replace(v, true));
    }

    /// Not caught up any more: the state is being rebuilt from the topic's beginning.
    pub(super) fn restart_catch_up(&self) {
        self.caught_up.send_if_modified(std::mem::take);
    }

    /// Forgets every partition's progress (before a rebuild reassigns them).
    pub(super) fn clear_progress(&self) {
        locks::lock(&self.progress).clear();
    }

    /// Why ingest is held (for `/readyz`), or `None`.
    pub fn stuck(&self) -> Option<String> {
        locks::lock(&self.stuck).clone()
    }

    pub(super) fn set_stuck(&self, cause: Option<String>) {
        *locks::lock(&self.stuck) = cause;
    }

    /// Waits until caught up; returns false if `cancelled` fired first.
    pub(crate) async fn wait_caught_up(
        &self,
        cancelled: &tokio_util::sync::CancellationToken,
    ) -> bool {
        let mut rx = self.caught_up.subscribe();
        tokio::select! {
            r = rx.wait_for(|v| *v) => r.is_ok(),
            _ = cancelled.cancelled() => false,
        }
    }

    pub(super) fn broker_answered(&self) {
        self.broker_ok_at.store(now_millis(), Ordering::Relaxed);
    }

    /// Whether the broker answered ingest within the last 30 seconds.
    pub(crate) fn broker_reachable(&self) -> bool {
        now_millis().saturating_sub(self.broker_ok_at.load(Ordering::Relaxed)) < BROKER_SILENCE_MS
    }

    pub(super) fn record_progress(&self, partition: i32, next: i64, high: i64) {
        locks::lock(&self.progress).insert(partition, (next, high));
    }

    /// Records behind the last known high watermark, per partition.
    pub fn lag(&self) -> BTreeMap<i32, i64> {
        locks::lock(&self.progress)
            .iter()
            .map(|(p, (next, high))| (*p, (high - next).max(0)))
            .collect()
    }
}
