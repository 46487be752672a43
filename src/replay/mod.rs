//! Replay: the device state rebuilt from the beginning of the events topic into a fresh store
//! beside the live one, then swapped in (`trustgate replay`). It is also the repair path for a
//! store that fails to open or holds a corrupt value.
//!
//! The rebuild is ingest itself (`ingest::run`, the same fold, chunking, offsets and
//! dead-lettering) on an empty store at `<store>.replay-<unix ms>`, stopped once it has reached
//! every partition's high watermark as it was when it started. The rebuilt store is flushed,
//! closed and opened again (it must open, and its devices must decode) before it replaces the
//! live one (see `swap`): a crash at any point leaves a whole store at the configured path.
//! The replaced store is kept as `<store>.before-replay-<unix ms>` unless asked otherwise.
//!
//! Offline (`replay_offline`), the live store is held open (sled's lock) from the start to the
//! swap, so no instance can start on it meanwhile, and a store an instance holds is refused.
//! Online (`POST /v1/admin/replay`, see `online`), the running instance rebuilds beside its
//! live store and switches over to the rebuilt one once it has caught up.

mod extent;
mod online;
mod swap;

pub use extent::{ExtentError, PartitionExtent};
pub use online::{Busy, OnlineReplay, Phase, Progress};
pub use swap::{previous_path, rebuild_path, Swap};

use crate::config::{Settings, StoreSettings};
use crate::ingest::{self, IngestContext, IngestStatus};
use crate::kafka::{client_config, Role};
use crate::liveness::LivenessClock;
use crate::store::{Store, StoreError};
use crate::time::now_millis;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the rebuild's progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How long the rebuild may stay short of the topic's end without progress before it is
/// abandoned.
const STALL: Duration = Duration::from_secs(60);

/// What the operator chose.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// Rebuild even though the topic no longer starts at offset 0 (retention or compaction
    /// deleted its oldest records): the rebuilt state will not know what they said.
    pub accept_truncated: bool,
    /// Delete the replaced store once the rebuilt one is in place, instead of keeping it.
    pub remove_previous: bool,
}

/// Why a replay did not happen (or did not finish). The live store is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A running instance holds the live store.
    #[error("the store at {path} is in use by a running trustgate instance")]
    InUse {
        /// The configured store path.
        path: String,
    },
    /// The live store could not be opened for a reason that does not prove it unused.
    #[error("cannot open the store at {path} to take its lock: {source}")]
    LiveUnopenable {
        /// The configured store path.
        path: String,
        /// What sled said.
        #[source]
        source: StoreError,
    },
    /// The events topic could not be read.
    #[error(transparent)]
    Extent(#[from] ExtentError),
    /// Records were deleted from the topic's beginning: replaying would forget them.
    #[error(
        "partition {partition} of {topic} starts at offset {low}, not 0: retention or compaction \
         deleted its oldest records, and a state rebuilt without them would forget the \
         detections they held"
    )]
    Truncated {
        /// The events topic.
        topic: String,
        /// The first partition found truncated.
        partition: i32,
        /// Its low watermark.
        low: i64,
    },
    /// The rebuild's directory exists already (two replays started in the same millisecond).
    #[error("{path} exists already")]
    RebuildExists {
        /// The rebuild's path.
        path: String,
    },
    /// The rebuilt store failed.
    #[error("the rebuilt store: {0}")]
    Store(#[from] StoreError),
    /// The producer that ingest dead-letters with could not be created.
    #[error("creating the producer for dead letters: {0}")]
    Producer(#[source] rdkafka::error::KafkaError),
    /// Ingest stopped with an error before it caught up.
    #[error("ingest stopped before the rebuild caught up: {0}")]
    Ingest(String),
    /// SIGINT/SIGTERM before the rebuild caught up.
    #[error("interrupted before the rebuild caught up")]
    Interrupted,
    /// A filesystem step failed.
    #[error("{what}: {source}")]
    Io {
        /// The step.
        what: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// What a replay did.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    /// The events topic replayed.
    pub topic: String,
    /// Its partitions, with their extent when the replay started.
    pub partitions: BTreeMap<i32, PartitionExtent>,
    /// Offsets read from the topic's beginning to where the rebuild stopped, over every
    /// partition (records applied, dead-lettered or heartbeats).
    pub records: u64,
    /// Devices in the rebuilt store.
    pub devices: usize,
    /// From the start of the rebuild to the swap.
    pub elapsed: Duration,
    /// The configured store path, which now holds the rebuilt store.
    pub store: PathBuf,
    /// How it was put there.
    pub swap: Swap,
    /// What became of the store it replaced.
    pub previous: Previous,
}

/// The store the replay replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Previous {
    /// There was none at the configured path.
    None,
    /// Kept at `path`. `unreadable` says why it did not open, `corrupt` counts the device
    /// values in it that did not decode.
    Kept {
        /// Where it is now.
        path: PathBuf,
        /// Why sled refused to open it, if it did.
        unreadable: Option<String>,
        /// Device values that did not decode.
        corrupt: usize,
    },
    /// Deleted, as asked.
    Removed {
        /// Why sled refused to open it, if it did.
        unreadable: Option<String>,
        /// Device values that did not decode.
        corrupt: usize,
    },
}

/// The live store as the replay found it.
enum Live {
    /// Open (and so locked) by this process until the swap.
    Held(Store),
    /// sled refused to open it, for a reason that is not the lock: no instance holds it.
    Unreadable(String),
    /// Nothing at the path.
    Absent,
}

/// Rebuilds the state from the events topic's beginning and swaps it in for the store at
/// `[store] path`, which no process may hold. `interrupt` abandons the rebuild (its directory
/// is removed and the live store is untouched).
pub async fn replay_offline(
    settings: &Settings,
    options: ReplayOptions,
    interrupt: CancellationToken,
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let live_path = settings.store.path.clone();
    let live = hold_live(&settings.store)?;
    let topic = settings.topics.events.clone();
    let kafka = settings.kafka.clone();
    let read_topic = topic.clone();
    let partitions = tokio::task::spawn_blocking(move || extent::read(&kafka, &read_topic))
        .await
        .map_err(|e| ReplayError::Ingest(format!("reading the topic's extent: {e}")))??;
    if let Some((partition, low)) = first_truncated(&partitions) {
        if !options.accept_truncated {
            return Err(ReplayError::Truncated {
                topic,
                partition,
                low,
            });
        }
        tracing::warn!(topic = %topic, partition, low, "Replaying a topic whose oldest records were deleted, as asked.");
    }

    let stamp = now_millis();
    let fresh_path = rebuild_path(&live_path, stamp);
    if fresh_path.exists() {
        return Err(ReplayError::RebuildExists {
            path: fresh_path.display().to_string(),
        });
    }
    tracing::info!(topic = %topic, partitions = partitions.len(), rebuild = %fresh_path.display(), "Replaying the events topic into a fresh store.");
    let built = build(settings, &fresh_path, &partitions, &interrupt).await;
    let (records, devices) = match built {
        Ok(counts) => counts,
        Err(e) => {
            if let Err(rm) = std::fs::remove_dir_all(&fresh_path) {
                tracing::warn!(path = %fresh_path.display(), error = %rm, "Could not remove the abandoned rebuild; delete it.");
            }
            return Err(e);
        }
    };

    let previous_at = previous_path(&live_path, stamp);
    let (unreadable, corrupt) = match &live {
        Live::Held(store) => (None, count_corrupt(store)),
        Live::Unreadable(reason) => (Some(reason.clone()), 0),
        Live::Absent => (None, 0),
    };
    let swap =
        swap::swap_in(&fresh_path, &live_path, &previous_at).map_err(|source| ReplayError::Io {
            what: format!(
                "putting {} in place of {}",
                fresh_path.display(),
                live_path.display()
            ),
            source,
        })?;
    // The lock is let go only now that the rebuilt store is at the configured path.
    drop(live);
    let previous = match swap {
        Swap::Installed => Previous::None,
        // The swap is done whatever becomes of the old store: failing to delete it is told,
        // not an error (which would say the live store is unchanged).
        _ if options.remove_previous && remove(&previous_at) => Previous::Removed {
            unreadable,
            corrupt,
        },
        _ => Previous::Kept {
            path: previous_at,
            unreadable,
            corrupt,
        },
    };
    Ok(ReplayReport {
        topic,
        partitions,
        records,
        devices,
        elapsed: started.elapsed(),
        store: live_path,
        swap,
        previous,
    })
}

/// Deletes the replaced store; false (logged) when it could not be.
fn remove(previous: &Path) -> bool {
    let removed = std::fs::remove_dir_all(previous).or_else(|_| std::fs::remove_file(previous));
    if let Err(e) = &removed {
        tracing::warn!(path = %previous.display(), error = %e, "Could not remove the replaced store; it is kept.");
    }
    removed.is_ok()
}

/// The first partition that no longer starts at offset 0, with its low watermark: records
/// before it were deleted (retention, compaction, `DeleteRecords`).
fn first_truncated(partitions: &BTreeMap<i32, PartitionExtent>) -> Option<(i32, i64)> {
    partitions
        .iter()
        .find(|(_, e)| e.low > 0)
        .map(|(p, e)| (*p, e.low))
}

/// Opens the live store to hold its lock until the swap. A store that fails to open for
/// another reason than the lock is the repair case: nobody can be running on it.
fn hold_live(store: &StoreSettings) -> Result<Live, ReplayError> {
    let path = &store.path;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Live::Absent),
        Err(source) => {
            return Err(ReplayError::Io {
                what: format!("reading {}", path.display()),
                source,
            })
        }
        Ok(_) => {}
    }
    match Store::open(path, store.cache_bytes) {
        Ok(held) => Ok(Live::Held(held)),
        Err(StoreError::Locked { path }) => Err(ReplayError::InUse { path }),
        // Not allowed to read it is not proof that nobody runs on it.
        Err(StoreError::Sled(sled::Error::Io(io)))
            if io.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Err(ReplayError::LiveUnopenable {
                path: path.display().to_string(),
                source: StoreError::Sled(sled::Error::Io(io)),
            })
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "The live store does not open; replaying replaces it.");
            Ok(Live::Unreadable(e.to_string()))
        }
    }
}

/// Device values in `store` that do not decode (what the repair path repaired).
fn count_corrupt(store: &Store) -> usize {
    store
        .scan_devices()
        .filter(|d| matches!(d, Err(StoreError::Corrupt { .. })))
        .count()
}

/// Folds the topic into a new store at `path` up to the extent read at the start, then closes
/// it and opens it again to check it. Returns (offsets read, devices).
async fn build(
    settings: &Settings,
    path: &Path,
    partitions: &BTreeMap<i32, PartitionExtent>,
    interrupt: &CancellationToken,
) -> Result<(u64, usize), ReplayError> {
    let store = Store::open(path, settings.store.cache_bytes)?;
    run_ingest_until_caught_up(settings, store.clone(), partitions, interrupt).await?;
    let offsets = store.offsets(&settings.topics.events)?;
    let records = partitions
        .iter()
        .map(|(p, extent)| {
            let next = offsets.get(p).copied().unwrap_or(extent.low);
            u64::try_from(next - extent.low).unwrap_or(0)
        })
        .sum();
    store.flush_blocking()?;
    drop(store);
    // Opened again from disk: what the swap will put in place must open, and every device in
    // it must decode.
    let reopened = Store::open(path, settings.store.cache_bytes)?;
    let devices = reopened
        .scan_devices()
        .collect::<Result<Vec<_>, _>>()?
        .len();
    reopened.flush_blocking()?;
    Ok((records, devices))
}

/// Runs ingest on `store` until it has caught up with the high watermarks read when the replay
/// started (`start`), then stops it (it stores its last chunk and flushes before returning).
async fn run_ingest_until_caught_up(
    settings: &Settings,
    store: Store,
    start: &BTreeMap<i32, PartitionExtent>,
    interrupt: &CancellationToken,
) -> Result<(), ReplayError> {
    let producer =
        crate::kafka::SharedProducer::create(client_config(&settings.kafka, Role::Producer))
            .map_err(ReplayError::Producer)?;
    let status = IngestStatus::default();
    let ctx = IngestContext {
        settings: settings.clone(),
        store: store.clone(),
        producer,
        status: status.clone(),
        liveness: LivenessClock::starting_at(None),
    };
    let stop = CancellationToken::new();
    let ingest_stop = stop.clone();
    let mut ingest = tokio::task::spawn_blocking(move || ingest::run(ctx, ingest_stop));
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.tick().await;
    let reached = async {
        if !status.wait_caught_up(interrupt).await {
            return Err(ReplayError::Interrupted);
        }
        confirm_end(settings, &store, start, interrupt).await
    };
    tokio::pin!(reached);
    let reached = loop {
        tokio::select! {
            reached = &mut reached => break reached,
            ended = &mut ingest => {
                let why = match ended {
                    Ok(Ok(())) => "it stopped".to_owned(),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(e) => format!("it panicked: {e}"),
                };
                return Err(ReplayError::Ingest(why));
            }
            _ = progress.tick() => {
                let behind: i64 = status.lag().values().sum();
                tracing::info!(records_behind = behind, "Replay in progress.");
            }
        }
    };
    stop.cancel();
    let ended = ingest.await;
    reached?;
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ReplayError::Ingest(format!("{e:#}"))),
        Err(e) => Err(ReplayError::Ingest(format!("it panicked: {e}"))),
    }
}

/// Once ingest says it caught up, waits until the offsets stored in the rebuilt store reach
/// every partition's high watermark, read again now (never below the one read at the start):
/// a broker may note an end short of records already there (tansu 0.6 has been seen to), and
/// a replay that stopped short would swap in a state missing them. Ingest makes no progress
/// for [`STALL`]: the rebuild is abandoned rather than swapped in incomplete.
async fn confirm_end(
    settings: &Settings,
    store: &Store,
    start: &BTreeMap<i32, PartitionExtent>,
    interrupt: &CancellationToken,
) -> Result<(), ReplayError> {
    let kafka = settings.kafka.clone();
    let topic = settings.topics.events.clone();
    let now = tokio::task::spawn_blocking(move || extent::read(&kafka, &topic))
        .await
        .map_err(|e| ReplayError::Ingest(format!("reading the topic's extent: {e}")))??;
    let target: BTreeMap<i32, i64> = start
        .iter()
        .map(|(p, e)| (*p, e.high.max(now.get(p).map_or(0, |n| n.high))))
        .collect();
    let mut last = None;
    let mut moved_at = Instant::now();
    loop {
        let offsets = store.offsets(&settings.topics.events)?;
        let short: BTreeMap<i32, (i64, i64)> = target
            .iter()
            .filter_map(|(p, high)| {
                let next = offsets.get(p).copied().unwrap_or(start[p].low);
                (next < *high).then_some((*p, (next, *high)))
            })
            .collect();
        if short.is_empty() {
            return Ok(());
        }
        if last.as_ref() != Some(&short) {
            last = Some(short);
            moved_at = Instant::now();
        } else if moved_at.elapsed() > STALL {
            return Err(ReplayError::Ingest(format!(
                "no progress for {STALL:?} short of the topic's end: (next offset, end) per partition {:?}",
                last.unwrap_or_default()
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = interrupt.cancelled() => return Err(ReplayError::Interrupted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DEFAULT_CACHE_BYTES;

    fn settings_at(path: &Path) -> StoreSettings {
        StoreSettings {
            path: path.to_owned(),
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }

    #[test]
    fn a_store_another_handle_holds_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let _running = Store::open(&path, DEFAULT_CACHE_BYTES).unwrap();
        assert!(matches!(
            hold_live(&settings_at(&path)),
            Err(ReplayError::InUse { .. })
        ));
    }

    #[test]
    fn a_free_store_is_held_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        drop(Store::open(&path, DEFAULT_CACHE_BYTES).unwrap());
        let held = hold_live(&settings_at(&path)).unwrap();
        assert!(matches!(held, Live::Held(_)));
        // While replay holds it, an instance starting on it is locked out.
        assert!(matches!(
            Store::open(&path, DEFAULT_CACHE_BYTES),
            Err(StoreError::Locked { .. })
        ));
        drop(held);
        assert!(Store::open(&path, DEFAULT_CACHE_BYTES).is_ok());
    }

    #[test]
    fn a_store_whose_files_are_damaged_is_the_repair_case() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        drop(Store::open(&path, DEFAULT_CACHE_BYTES).unwrap());
        std::fs::write(path.join("conf"), b"\xde\xad\xbe\xef garbage").unwrap();
        assert!(matches!(
            hold_live(&settings_at(&path)).unwrap(),
            Live::Unreadable(_)
        ));
    }

    #[test]
    fn no_store_at_the_path_is_absent_and_none_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        assert!(matches!(
            hold_live(&settings_at(&path)).unwrap(),
            Live::Absent
        ));
        assert!(!path.exists());
    }

    #[test]
    fn a_partition_whose_oldest_records_were_deleted_is_found() {
        let extent = |low, high| PartitionExtent { low, high };
        let whole = BTreeMap::from([(0, extent(0, 10)), (1, extent(0, 0))]);
        assert_eq!(first_truncated(&whole), None);
        let cut = BTreeMap::from([(0, extent(0, 10)), (1, extent(4, 9)), (2, extent(7, 7))]);
        assert_eq!(first_truncated(&cut), Some((1, 4)));
    }

    #[test]
    fn corrupt_device_values_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store"), DEFAULT_CACHE_BYTES).unwrap();
        store.write_raw_for_test(b"Dg1", b"\x01\xff\xff");
        store.write_raw_for_test(b"Dg2", b"\x01\xff\xff");
        assert_eq!(count_corrupt(&store), 2);
    }
}
