//! The online replay (`POST /v1/admin/replay`, progress at `GET /v1/admin/replay`): the same
//! rebuild as `trustgate replay`, on a running instance that keeps answering from the old
//! state, and keeps applying new records to it, until the rebuilt one has caught up.
//!
//! Steps (the [`Phase`] the progress shows):
//! 1. `rebuilding`: ingest on an empty store at `<store>.replay-<unix ms>`, up to every
//!    partition's high watermark as read at the start (and confirmed, see `confirm_end`).
//!    Live ingest runs on meanwhile.
//! 2. `catching_up`: live ingest is paused at a chunk boundary (so the live store's offsets are
//!    exactly what its state holds) and the rebuild runs on until its offsets reach the live
//!    ones. It is then stopped, flushed, closed, and opened again to check that it opens and
//!    that every device decodes.
//! 3. `swapping`: the live sled database is detached from every handle ([`Store::detach_db`];
//!    decisions keep answering from the old index) and closed, and its lock is waited for so
//!    that no sled thread of it is left: sled keeps its configured path and would create files
//!    there (snapshots), which after the exchange would be inside the new store. The
//!    directories are exchanged (`swap::swap_in`), the new store is opened at the configured
//!    path and put behind every handle ([`Store::replace_with`]), and ingest resumes on it
//!    from where it paused (records the rebuild applied past that point are folded again,
//!    which the fold absorbs). The replaced store is kept at `<store>.before-replay-<unix ms>`.
//!
//! Crash safety: until the exchange the configured path holds the live store, untouched
//! (only live ingest writes to it, and it is paused from step 2); after it, the rebuilt store,
//! closed and checked. A crash in between leaves one of them whole there, as the offline
//! swap does, plus a clearly named `<store>.replay-<ms>` or `<store>.before-replay-<ms>`.
//! A failure before the exchange removes the rebuild and leaves the live store in use; a
//! failure to open the new store after it exchanges the directories back.
//! Shutdown stops the rebuild (its directory is removed once its sled database is closed) and
//! resumes nothing: the instance is stopping. `trustgate run` waits for that
//! ([`OnlineReplay::stopped`]) before its final flush; a switch-over already under way is
//! finished first.

use super::{extent, first_truncated, previous_path, rebuild_path, swap, PartitionExtent};
use crate::config::Settings;
use crate::ingest::{self, IngestContext, IngestStatus};
use crate::kafka::{client_config, Role};
use crate::liveness::LivenessClock;
use crate::store::{Store, StoreError};
use crate::time::{format_millis, now_millis, Millis};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The longest live ingest may take to reach a chunk boundary when asked to pause.
const PAUSE_WITHIN: Duration = Duration::from_secs(30);
/// How long the rebuild may make no progress before it is abandoned.
const STALL: Duration = Duration::from_secs(60);
/// How long a closed sled database may keep its lock (its threads ending) before giving up.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// Where an online replay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// None was started since the instance started.
    Idle,
    /// Folding the topic into the fresh store up to the ends read at the start.
    Rebuilding,
    /// Live ingest paused; the rebuild reaches the live store's offsets.
    CatchingUp,
    /// Exchanging the stores.
    Swapping,
    /// The rebuilt store is the live one.
    Done,
    /// Abandoned; the live store is the one before (see `error`).
    Failed,
}

/// One partition: where the rebuild must reach, and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionProgress {
    /// The next offset it must reach (the high watermark, then the live store's offset).
    pub target: i64,
    /// The rebuild's next offset.
    pub position: i64,
}

/// What `GET /v1/admin/replay` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// The phase.
    pub state: Phase,
    /// Offsets the rebuild has read from the topic's beginning (all partitions).
    pub records_applied: u64,
    /// Per partition (as text, for JSON).
    pub partitions: BTreeMap<String, PartitionProgress>,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339, once done or failed.
    pub finished_at: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Where the replaced store is kept, once done.
    pub previous: Option<String>,
    /// Devices in the rebuilt store, once done.
    pub devices: Option<usize>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            state: Phase::Idle,
            records_applied: 0,
            partitions: BTreeMap::new(),
            started_at: None,
            finished_at: None,
            error: None,
            previous: None,
            devices: None,
        }
    }
}

/// A replay is running already.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a replay is already running (state {0:?})")]
pub struct Busy(pub Phase);

impl Progress {
    /// Whether a replay is under way.
    pub fn running(&self) -> bool {
        matches!(
            self.state,
            Phase::Rebuilding | Phase::CatchingUp | Phase::Swapping
        )
    }

    /// A new replay starts (from idle, done or failed: one at a time).
    pub fn begin(&mut self, now: Millis) -> Result<(), Busy> {
        if self.running() {
            return Err(Busy(self.state));
        }
        *self = Progress {
            state: Phase::Rebuilding,
            started_at: Some(format_millis(now)),
            ..Progress::default()
        };
        Ok(())
    }

    /// Moves on to the next running phase (never back, never out of a finished one).
    pub fn enter(&mut self, phase: Phase) {
        let order = |p: Phase| match p {
            Phase::Rebuilding => 1,
            Phase::CatchingUp => 2,
            Phase::Swapping => 3,
            _ => 0,
        };
        if self.running() && order(phase) > order(self.state) {
            self.state = phase;
        }
    }

    /// The rebuild's targets and positions, and the records read to there.
    pub fn track(&mut self, targets: &BTreeMap<i32, i64>, positions: &BTreeMap<i32, i64>) {
        let mut records = 0u64;
        self.partitions = targets
            .iter()
            .map(|(p, target)| {
                let position = positions.get(p).copied().unwrap_or(0);
                records += u64::try_from(position).unwrap_or(0);
                (
                    p.to_string(),
                    PartitionProgress {
                        target: *target,
                        position,
                    },
                )
            })
            .collect();
        self.records_applied = records;
    }

    /// The replay ended: done, or failed with why.
    pub fn finish(&mut self, now: Millis, outcome: Result<Finished, String>) {
        self.finished_at = Some(format_millis(now));
        match outcome {
            Ok(done) => {
                self.state = Phase::Done;
                self.previous = Some(done.previous.display().to_string());
                self.devices = Some(done.devices);
            }
            Err(e) => {
                self.state = Phase::Failed;
                self.error = Some(e);
            }
        }
    }
}

/// What a replay that swapped left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The replaced store.
    pub previous: PathBuf,
    /// Devices in the rebuilt one.
    pub devices: usize,
}

/// The running instance's replay: cheap to clone (the admin listener holds one).
#[derive(Clone)]
pub struct OnlineReplay {
    settings: Arc<Settings>,
    store: Store,
    ingest: IngestStatus,
    progress: Arc<Mutex<Progress>>,
    shutdown: CancellationToken,
    /// The replay task, for waiting until it stopped.
    tasks: tokio_util::task::TaskTracker,
}

impl OnlineReplay {
    /// For the instance whose store, ingest and shutdown token these are.
    pub fn new(
        settings: &Settings,
        store: Store,
        ingest: IngestStatus,
        shutdown: CancellationToken,
    ) -> Self {
        OnlineReplay {
            settings: Arc::new(settings.clone()),
            store,
            ingest,
            progress: Arc::default(),
            shutdown,
            tasks: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Waits until no replay runs (call after shutdown: a rebuild then stops and removes its
    /// directory).
    pub async fn stopped(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Where the replay is.
    pub fn progress(&self) -> Progress {
        crate::locks::lock(&self.progress).clone()
    }

    fn update(&self, change: impl FnOnce(&mut Progress)) {
        change(&mut crate::locks::lock(&self.progress));
    }

    /// Starts a replay in the background; [`Busy`] when one runs.
    pub fn start(&self) -> Result<Progress, Busy> {
        let started = {
            let mut progress = crate::locks::lock(&self.progress);
            progress.begin(now_millis())?;
            progress.clone()
        };
        let this = self.clone();
        self.tasks.spawn(async move {
            let outcome = this.rebuild_and_swap().await.map_err(|e| format!("{e:#}"));
            match &outcome {
                Ok(done) => {
                    tracing::info!(previous = %done.previous.display(), devices = done.devices, "Online replay done: the rebuilt store is live.")
                }
                Err(e) => {
                    tracing::error!(error = %e, "Online replay failed; the live store is unchanged.")
                }
            }
            this.update(|p| p.finish(now_millis(), outcome));
        });
        Ok(started)
    }

    async fn rebuild_and_swap(&self) -> anyhow::Result<Finished> {
        let settings = &*self.settings;
        let topic = settings.topics.events.clone();
        let live_path = settings.store.path.clone();
        let (kafka, read_topic) = (settings.kafka.clone(), topic.clone());
        let extents: BTreeMap<i32, PartitionExtent> =
            tokio::task::spawn_blocking(move || extent::read(&kafka, &read_topic)).await??;
        if let Some((partition, low)) = first_truncated(&extents) {
            anyhow::bail!(
                "partition {partition} of {topic} starts at offset {low}, not 0: a state rebuilt \
                 without its oldest records would forget the detections they held"
            );
        }
        let stamp = now_millis();
        let fresh_path = rebuild_path(&live_path, stamp);
        if fresh_path.exists() {
            anyhow::bail!("{} exists already", fresh_path.display());
        }
        let built = self.build(&fresh_path, &extents).await;
        let (paused, devices) = match built {
            Ok(done) => done,
            Err(e) => {
                remove_rebuild(&fresh_path);
                return Err(e);
            }
        };
        self.update(|p| p.enter(Phase::Swapping));
        let previous = previous_path(&live_path, stamp);
        let store = self.store.clone();
        let (fresh, live, prev) = (fresh_path.clone(), live_path.clone(), previous.clone());
        let cache = settings.store.cache_bytes;
        let swapped =
            tokio::task::spawn_blocking(move || switch_over(&store, &fresh, &live, &prev, cache))
                .await?;
        // Ingest resumes on whichever store is now behind the handle.
        drop(paused);
        swapped?;
        Ok(Finished { previous, devices })
    }

    /// Steps 1 and 2: the rebuild, caught up with the live store, closed and checked. Returns
    /// with live ingest paused (the guard) and the rebuilt store's device count.
    async fn build(
        &self,
        fresh_path: &Path,
        extents: &BTreeMap<i32, PartitionExtent>,
    ) -> anyhow::Result<(ingest::Paused, usize)> {
        let settings = &*self.settings;
        let topic = &settings.topics.events;
        let fresh = Store::open(fresh_path, settings.store.cache_bytes)?;
        let producer =
            crate::kafka::SharedProducer::create(client_config(&settings.kafka, Role::Producer))?;
        let status = IngestStatus::default();
        let ctx = IngestContext {
            settings: settings.clone(),
            store: fresh.clone(),
            producer,
            status: status.clone(),
            liveness: LivenessClock::starting_at(None),
        };
        let stop = self.shutdown.child_token();
        let ingest_stop = stop.clone();
        let mut rebuild = tokio::task::spawn_blocking(move || ingest::run(ctx, ingest_stop));
        // Set once the rebuild's task was awaited to its end (a finished handle is not awaited
        // twice).
        let mut ended_early = false;

        let mut targets: BTreeMap<i32, i64> = extents.iter().map(|(p, e)| (*p, e.high)).collect();
        let reached = self
            .until_reached(&fresh, &targets, &mut rebuild, &status, &mut ended_early)
            .await;
        let paused = match reached {
            Ok(()) => {
                self.update(|p| p.enter(Phase::CatchingUp));
                let gate = self.ingest.gate().clone();
                tokio::task::spawn_blocking(move || gate.pause(PAUSE_WITHIN))
                    .await?
                    .map_err(anyhow::Error::from)
            }
            Err(e) => Err(e),
        };
        let caught_up = match paused {
            Ok(paused) => {
                let live = self.store.offsets(topic)?;
                for (p, next) in live {
                    let target = targets.entry(p).or_insert(next);
                    *target = (*target).max(next);
                }
                self.until_reached(&fresh, &targets, &mut rebuild, &status, &mut ended_early)
                    .await
                    .map(|()| paused)
            }
            Err(e) => Err(e),
        };
        stop.cancel();
        // Waited for even on failure: the directory is removed only once nothing writes to it.
        let ended = match ended_early {
            true => Ok(Ok(())),
            false => rebuild.await,
        };
        let paused = caught_up?;
        match ended {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("the rebuild's ingest: {e:#}"),
            Err(e) => anyhow::bail!("the rebuild's ingest panicked: {e}"),
        }
        let positions = fresh.offsets(topic)?.into_iter().collect();
        self.update(|p| p.track(&targets, &positions));
        fresh.flush_blocking()?;
        drop(fresh);
        // Opened again from disk: what the swap puts in place must open, and every device in it
        // must decode.
        let path = fresh_path.to_owned();
        let cache = settings.store.cache_bytes;
        let devices = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            wait_closed(&path)?;
            let reopened = Store::open(&path, cache)?;
            let devices = reopened
                .scan_devices()
                .collect::<Result<Vec<_>, _>>()?
                .len();
            reopened.flush_blocking()?;
            drop(reopened);
            wait_closed(&path)?;
            Ok(devices)
        })
        .await??;
        Ok((paused, devices))
    }

    /// Runs until the rebuild's stored offsets reach `targets` (progress tracked), the
    /// rebuild's ingest stops, it stalls, or shutdown.
    async fn until_reached(
        &self,
        fresh: &Store,
        targets: &BTreeMap<i32, i64>,
        rebuild: &mut tokio::task::JoinHandle<anyhow::Result<()>>,
        status: &IngestStatus,
        ended_early: &mut bool,
    ) -> anyhow::Result<()> {
        let topic = &self.settings.topics.events;
        let mut last = None;
        let mut moved_at = Instant::now();
        loop {
            let positions: BTreeMap<i32, i64> = fresh.offsets(topic)?.into_iter().collect();
            self.update(|p| p.track(targets, &positions));
            let short: BTreeMap<i32, i64> = targets
                .iter()
                .filter(|(p, target)| positions.get(p).copied().unwrap_or(0) < **target)
                .map(|(p, _)| (*p, positions.get(p).copied().unwrap_or(0)))
                .collect();
            if short.is_empty() && status.is_caught_up() {
                return Ok(());
            }
            if last.as_ref() != Some(&short) {
                last = Some(short);
                moved_at = Instant::now();
            } else if moved_at.elapsed() > STALL {
                anyhow::bail!("the rebuild made no progress for {STALL:?} short of {targets:?}");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                ended = &mut *rebuild => {
                    *ended_early = true;
                    return Err(match ended {
                        Ok(Ok(())) => anyhow::anyhow!("the rebuild's ingest stopped"),
                        Ok(Err(e)) => e.context("the rebuild's ingest"),
                        Err(e) => anyhow::anyhow!("the rebuild's ingest panicked: {e}"),
                    });
                }
                _ = self.shutdown.cancelled() => anyhow::bail!("shutdown before the rebuild caught up"),
            }
        }
    }
}

/// Step 3, blocking, with live ingest paused: closes the live database, exchanges the
/// directories, opens the rebuilt store at the configured path and puts it behind `store`.
/// When the new store does not open, the directories are exchanged back and the old one is
/// reopened.
fn switch_over(
    store: &Store,
    fresh: &Path,
    live: &Path,
    previous: &Path,
    cache: u64,
) -> anyhow::Result<()> {
    let db = store
        .detach_db()
        .ok_or_else(|| anyhow::anyhow!("the live store is detached already"))?;
    let closed = db.flush().map_err(StoreError::from).map(drop);
    drop(db);
    let reattach =
        |why: anyhow::Error| -> anyhow::Error {
            match wait_closed(live).and_then(|()| Ok(Store::open(live, cache)?)) {
                Ok(old) => store.replace_with(&old),
                Err(e) => tracing::error!(error = format!("{e:#}"),
                "The live store cannot be opened again after a failed swap; restart the instance."),
            }
            why
        };
    if let Err(e) = closed
        .map_err(anyhow::Error::from)
        .and_then(|()| wait_closed(live))
    {
        remove_rebuild(fresh);
        return Err(reattach(e.context("closing the live store")));
    }
    if let Err(e) = swap::swap_in(fresh, live, previous) {
        remove_rebuild(fresh);
        return Err(reattach(
            anyhow::Error::from(e).context("exchanging the stores"),
        ));
    }
    match Store::open(live, cache) {
        Ok(new) => {
            store.replace_with(&new);
            Ok(())
        }
        Err(e) => {
            // Put the old store back where it was; the rebuilt one is kept at `fresh`'s name.
            let back = swap::swap_in(previous, live, fresh);
            let e = anyhow::Error::from(e).context("opening the rebuilt store in place");
            match back {
                Ok(_) => Err(reattach(e)),
                Err(back) => {
                    tracing::error!(error = %back, "Could not put the replaced store back; restart the instance.");
                    Err(e)
                }
            }
        }
    }
}

/// Waits until no sled thread of a closed database holds its lock (bounded): until then it
/// may still create files in its directory.
fn wait_closed(path: &Path) -> anyhow::Result<()> {
    use fs2::FileExt;
    let deadline = Instant::now() + CLOSE_WITHIN;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path.join("db"))?;
    loop {
        match file.try_lock_exclusive() {
            Ok(()) => {
                FileExt::unlock(&file)?;
                return Ok(());
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("{} is still held after closing", path.display())))
            }
        }
    }
}

/// Deletes an abandoned rebuild, once its sled database is closed (a sled thread still running
/// could otherwise create files in it again).
fn remove_rebuild(path: &Path) {
    if let Err(e) = wait_closed(path) {
        tracing::warn!(path = %path.display(), error = format!("{e:#}"), "The abandoned rebuild may still be open.");
    }
    if let Err(e) = std::fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), error = %e, "Could not remove the abandoned rebuild; delete it.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_replay_at_a_time_and_phases_only_move_forward() {
        let mut p = Progress::default();
        assert_eq!(p.state, Phase::Idle);
        p.begin(1_000).unwrap();
        assert_eq!(p.state, Phase::Rebuilding);
        assert_eq!(p.begin(2_000), Err(Busy(Phase::Rebuilding)));
        p.enter(Phase::Swapping);
        p.enter(Phase::CatchingUp);
        assert_eq!(p.state, Phase::Swapping, "never back");
        assert_eq!(p.begin(2_000), Err(Busy(Phase::Swapping)));
        p.finish(3_000, Err("broker gone".into()));
        assert_eq!(p.state, Phase::Failed);
        assert_eq!(p.error.as_deref(), Some("broker gone"));
        p.enter(Phase::Rebuilding);
        assert_eq!(p.state, Phase::Failed, "a finished replay stays finished");
        // A failed one may be retried, and the new one starts clean.
        p.begin(4_000).unwrap();
        assert_eq!(p.state, Phase::Rebuilding);
        assert_eq!(p.error, None);
        assert_eq!(p.finished_at, None);
    }

    #[test]
    fn progress_counts_positions_against_targets() {
        let mut p = Progress::default();
        p.begin(0).unwrap();
        p.track(
            &BTreeMap::from([(0, 10), (1, 4)]),
            &BTreeMap::from([(0, 7)]),
        );
        assert_eq!(p.records_applied, 7);
        assert_eq!(
            p.partitions["1"],
            PartitionProgress {
                target: 4,
                position: 0
            }
        );
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["state"], "rebuilding");
        assert_eq!(json["partitions"]["0"]["target"], 10);
    }

    #[test]
    fn a_finished_replay_says_where_the_old_store_is() {
        let mut p = Progress::default();
        p.begin(0).unwrap();
        p.finish(
            5,
            Ok(Finished {
                previous: PathBuf::from("/s.before-replay-1"),
                devices: 3,
            }),
        );
        assert_eq!(p.state, Phase::Done);
        assert_eq!(p.previous.as_deref(), Some("/s.before-replay-1"));
        assert_eq!(p.devices, Some(3));
        assert!(!p.running());
    }

    /// The switch-over on real stores: the handle ends on the rebuilt store at the configured
    /// path, and the old one is kept aside whole.
    #[test]
    fn switch_over_puts_the_rebuilt_store_behind_every_handle() {
        use crate::store::{ChunkUpdate, DEFAULT_CACHE_BYTES};
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("store");
        let (fresh, previous) = (rebuild_path(&live, 1), previous_path(&live, 1));
        let store = Store::open(&live, DEFAULT_CACHE_BYTES).unwrap();
        let decider_clone = store.clone();
        let offset = |n| ChunkUpdate {
            offsets: BTreeMap::from([(("events".to_owned(), 0), n)]),
            ..ChunkUpdate::default()
        };
        store.apply(&offset(3)).unwrap();
        let rebuilt = Store::open(&fresh, DEFAULT_CACHE_BYTES).unwrap();
        rebuilt.apply(&offset(9)).unwrap();
        rebuilt.flush_blocking().unwrap();
        drop(rebuilt);
        wait_closed(&fresh).unwrap();

        switch_over(&store, &fresh, &live, &previous, DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(decider_clone.offsets("events").unwrap()[&0], 9);
        assert!(!fresh.exists());
        drop((store, decider_clone));
        wait_closed(&live).unwrap();
        let old = Store::open(&previous, DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(old.offsets("events").unwrap()[&0], 3);
    }

    /// A rebuild that is not there (removed, never built): the live store stays behind the
    /// handle, open and writable.
    #[test]
    fn a_failed_switch_over_leaves_the_live_store_in_use() {
        use crate::store::DEFAULT_CACHE_BYTES;
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("store");
        let store = Store::open(&live, DEFAULT_CACHE_BYTES).unwrap();
        let err = switch_over(
            &store,
            &rebuild_path(&live, 2),
            &live,
            &previous_path(&live, 2),
            DEFAULT_CACHE_BYTES,
        );
        assert!(err.is_err());
        assert!(store.offsets("events").is_ok());
        assert!(store.apply(&Default::default()).is_ok());
    }
}
