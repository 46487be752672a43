//! The sled store: device states, ingest offsets, each source's liveness (newest record
//! time) and where each device's records are on the events topic (for `trustgate history`),
//! with the in-memory decision index derived from the device states.
//!
//! One sled tree holds every keyspace (see `keys.rs`), so a single `apply_batch` writes a chunk of
//! device states and the partition offsets that produced them atomically: after a crash the
//! store holds either all of a chunk or none of it, and ingest resumes from the offsets stored
//! with the state (at-least-once; the fold absorbs repeats). One key per device: identifiers
//! are looked up in the [`DecisionIndex`], which [`Store::open`] rebuilds from the device
//! keyspace and [`Store::apply`] updates only after the chunk's batch is applied, so it never
//! runs ahead of the stored offsets. A crash between the two loses nothing: the next open
//! rebuilds the index from what sled holds.
//! The store is a cheap-to-clone handle on the current sled database and its index, which
//! [`Store::replace_with`] swaps in one step for every clone (ingest, the decider, the admin
//! listener): an online replay can put a rebuilt store in place of the live one without a
//! restart. Each call reads the current pair once (one uncontended read lock and an `Arc`
//! clone) and works on it to the end, so no call mixes the old store and the new one.
//! [`Store::detach_db`] leaves the index answering while the sled database is closed (its
//! directory is exchanged meanwhile): reads that need sled then fail with
//! [`StoreError::Swapping`] rather than answer from a store that is not the whole state.

mod codec;
mod keys;
#[cfg(test)]
mod tests;

pub use crate::fold::RecordRef;
use crate::fold::{DeviceState, DeviceSummary};
use crate::index::{DecisionIndex, IndexError};
use crate::time::{now_millis, Millis};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard};

/// sled's cache defaults to 1 GiB; trustgate's working set is far smaller: decisions read the
/// decision index, never sled, so the cache serves only ingest's reads of known devices and
/// `history`. A 1M-device catch-up applied records as fast with 16 MiB as with 64 MiB, and the
/// caught-up process held 84 MiB less (sled holds ~1.75× its nominal cache; #11, BENCHMARKS.md).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// The most record references kept per device: past it (plus a slack of a tenth, so that the
/// pruning scan is rare) the references with the oldest record times are dropped, keeping the
/// newest this many. A device that SE reports on every few minutes reaches it in about a month;
/// its history then starts later (`trustgate history` says so). 10,000 references are about
/// 600 KB of keys for that device, and reading them back is one prefix scan.
pub const MAX_REFS_PER_DEVICE: usize = 10_000;
/// How far over [`MAX_REFS_PER_DEVICE`] a device's count may go before it is pruned back.
const REF_SLACK: usize = MAX_REFS_PER_DEVICE / 10;
/// The most references a device's own value carries (`DeviceState::recent_refs`): one more and
/// they all move to keys of their own (`Y`), leaving none. Most devices of a fleet have a handful
/// of records, so a catch-up writes one key per record, the device's, where a key per
/// reference doubled sled's work (a batch costs about the same per key whatever its size;
/// #11, BENCHMARKS.md); a device SE reports on often pays a key per reference as before, in a
/// batch of this many plus one, and carries at most this many in its value (~20 bytes each).
pub const RECENT_REFS: usize = 16;
/// A device gets a reference count key once it has this many `Y` keys; below it, they are
/// counted when needed (a scan of at most this many keys, about what reading the count costs),
/// which spares a device that moved only a batch or two of references a third key (#11).
const COUNTED_FROM: usize = 64;

/// Store failures. `Locked` is told apart because the CLI then asks the running instance.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process has the store open.
    #[error("the store at {path} is in use by another trustgate process")]
    Locked {
        /// The store's directory.
        path: String,
    },
    /// sled failed (I/O, or its own files are damaged).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value that cannot be decoded.
    #[error("corrupt value under key {key}: {reason}")]
    Corrupt {
        /// The key, as (lossy) text.
        key: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// The decision index cannot answer (a corrupt device, see [`IndexError`]), or a thread
    /// panicked while updating it and it can no longer be trusted.
    #[error("decision index: {0}")]
    Index(#[from] IndexError),
    /// A thread panicked while holding the index's lock: its content may be half-updated.
    #[error("the decision index was left half-updated by a panic; restart to rebuild it")]
    IndexPoisoned,
    /// The sled database is closed for a moment while a replay puts the rebuilt store in place
    /// (decisions still answer from the index); retry.
    #[error("the store is being replaced by a replay; retry in a moment")]
    Swapping,
}

/// A handle on the open store.
#[derive(Clone)]
pub struct Store {
    /// The current database and index, replaced as a whole by [`Store::replace_with`]. The
    /// lock is held only to clone or replace the `Arc`, never across a call, so a panic
    /// elsewhere cannot poison it; a poisoned guard is taken as is.
    current: Arc<RwLock<Arc<Inner>>>,
}

/// One open store: its sled database and the decision index built from it.
struct Inner {
    /// `None` once detached for a swap (see [`Store::detach_db`]).
    db: Option<sled::Db>,
    /// Not recovered when poisoned (unlike `crate::locks`): a panic during a chunk's update
    /// could leave the index half-way through it, so every later lookup fails (deny
    /// `store_unavailable`) until a restart rebuilds it from sled.
    index: Arc<RwLock<DecisionIndex>>,
}

/// How long the two steps of one [`Store::apply_timed`] took.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyTimings {
    /// Reading what the batch needs (reference counts, liveness) and applying the sled batch.
    pub sled: std::time::Duration,
    /// Bringing the decision index up to the chunk.
    pub index: std::time::Duration,
}

/// Everything one ingest chunk changes, applied atomically by [`Store::apply`].
#[derive(Debug, Default)]
pub struct ChunkUpdate {
    /// Device states after the chunk, with the state before it (`None` for a new device).
    pub devices: BTreeMap<String, (Option<DeviceState>, DeviceState)>,
    /// Next offset to consume, per (topic, partition).
    pub offsets: BTreeMap<(String, i32), i64>,
    /// Newest record time per source on the events topic (liveness).
    pub liveness: BTreeMap<String, Millis>,
    /// Kafka timestamp of the chunk's last record per (topic, partition): the record just
    /// before the stored next offset.
    pub last_records: BTreeMap<(String, i32), Millis>,
    /// Per device (normalised GUID), references that get keys of their own (`Y`): written in
    /// the same batch as the states they came with. [`ChunkUpdate::add_record_ref`] fills it.
    pub record_refs: BTreeMap<String, Vec<RecordRef>>,
}

impl ChunkUpdate {
    /// Notes where one of a device's records is (`guid` normalised): in the device's state after
    /// the chunk, when the chunk changes it (ingest adds the reference of each record it
    /// folds), until that carries more than [`RECENT_REFS`]; then they all move to
    /// [`ChunkUpdate::record_refs`]. A record the state already carries (a redelivery) is not
    /// added twice. Deterministic, so the state a chunk in flight leaves is the one stored.
    pub fn add_record_ref(&mut self, guid: &str, at: RecordRef) {
        let spilled = match self.devices.get_mut(guid) {
            Some((_, after)) => {
                let refs = &mut after.recent_refs;
                if refs.iter().any(|r| r.position() == at.position()) {
                    return;
                }
                refs.push(at);
                if refs.len() <= RECENT_REFS {
                    return;
                }
                std::mem::take(refs)
            }
            None => vec![at],
        };
        match self.record_refs.get_mut(guid) {
            Some(refs) => refs.extend(spilled),
            None => {
                self.record_refs.insert(guid.to_owned(), spilled);
            }
        }
    }
}

impl Store {
    /// Opens (or creates) the store. sled allows one process per store; a second one gets
    /// [`StoreError::Locked`].
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let started = std::time::Instant::now();
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    StoreError::Locked {
                        path: path.display().to_string(),
                    }
                }
                sled::Error::Io(io) if io.to_string().contains("lock") => StoreError::Locked {
                    path: path.display().to_string(),
                },
                other => StoreError::Sled(other),
            })?;
        // sled's recovery (its log replayed since the last snapshot) and the index rebuild
        // are a restart's two costs; each is logged so that a slow start says which.
        tracing::info!(
            millis = started.elapsed().as_millis() as u64,
            resident_mib = crate::allocator::resident_bytes() >> 20,
            "sled store opened."
        );
        retire_identifier_keyspaces(&db)?;
        let index = build_index(&db)?;
        Ok(Store {
            current: Arc::new(RwLock::new(Arc::new(Inner {
                db: Some(db),
                index: Arc::new(RwLock::new(index)),
            }))),
        })
    }

    /// The current database and index, for one call.
    fn inner(&self) -> Arc<Inner> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Makes every clone of this handle use `other`'s database and index from their next call
    /// on (calls already running finish on the pair they started with). `other` and its
    /// clones keep using them too.
    pub fn replace_with(&self, other: &Store) {
        let next = other.inner();
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
    }

    /// Detaches the sled database from every clone of this handle and returns it, leaving the
    /// decision index answering: calls that need sled fail with [`StoreError::Swapping`] until
    /// [`Store::replace_with`]. Returns once no call still uses the database (the caller drops
    /// it to close it); `None` if it was detached already. The caller makes sure nothing
    /// writes meanwhile (ingest paused).
    pub fn detach_db(&self) -> Option<sled::Db> {
        let mut previous = {
            let mut current = self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            current.db.as_ref()?;
            let index = current.index.clone();
            std::mem::replace(&mut *current, Arc::new(Inner { db: None, index }))
        };
        // Calls that took the previous pair before the swap hold it only for their own
        // duration, which never blocks on anything but sled and the index lock.
        loop {
            match Arc::try_unwrap(previous) {
                Ok(mut inner) => return inner.db.take(),
                Err(shared) => {
                    previous = shared;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }

    /// A device's full state by (normalised) connector GUID, read from sled: for ingest (the
    /// state a chunk folds into) and `inspect`. Decisions read [`Store::device_summary`].
    pub fn device(&self, guid: &str) -> Result<Option<DeviceState>, StoreError> {
        let key = keys::device(guid);
        self.inner()
            .db()?
            .get(&key)?
            .map(|v| codec::decode_device(&key, &v))
            .transpose()
    }

    /// Whether the store holds a value (readable or not) for this GUID; when not, ingest need
    /// not read sled to know the device is new. A poisoned index answers "yes": reading sled is
    /// always right, only slower.
    pub(crate) fn knows_device(&self, guid: &str) -> bool {
        self.inner().index().map_or(true, |index| index.knows(guid))
    }

    /// What decisions read of a device, from the decision index.
    pub fn device_summary(&self, guid: &str) -> Result<Option<DeviceSummary>, StoreError> {
        Ok(self.inner().index()?.device(guid)?)
    }

    /// GUIDs of devices with this normalised `windows_processor_id` (decision index).
    pub fn guids_by_processor_id(&self, id: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.inner().index()?.guids_by_processor_id(id)?)
    }

    /// GUIDs of devices with this normalised MAC (decision index).
    pub fn guids_by_mac(&self, mac: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.inner().index()?.guids_by_mac(mac)?)
    }

    /// GUIDs of devices whose name matches `host` (normalised, lower case) both ways: named
    /// `host`, `host.<more labels>`, or a name that `host` is followed by `.` and more labels
    /// (the rule is `policy::hostnames_match`; decision index).
    pub fn guids_by_hostname(&self, host: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.inner().index()?.guids_by_hostname(host)?)
    }

    /// What decisions read of the devices with this processor id, sorted by GUID (decision
    /// index, one lookup).
    pub fn devices_by_processor_id(&self, id: &str) -> Result<Vec<DeviceSummary>, StoreError> {
        Ok(self.inner().index()?.devices_by_processor_id(id)?)
    }

    /// What decisions read of the devices with any of these MACs, sorted by GUID (decision
    /// index, one lookup).
    pub fn devices_by_macs(&self, macs: &[String]) -> Result<Vec<DeviceSummary>, StoreError> {
        Ok(self.inner().index()?.devices_by_macs(macs)?)
    }

    /// What decisions read of the devices whose hostname matches `host` by the hostname rule,
    /// sorted by GUID (decision index, one lookup).
    pub fn devices_by_hostname(&self, host: &str) -> Result<Vec<DeviceSummary>, StoreError> {
        Ok(self.inner().index()?.devices_by_hostname(host)?)
    }

    /// Devices in the decision index and its estimated size in bytes (for benchmarks).
    pub fn index_stats(&self) -> Result<(usize, usize), StoreError> {
        let inner = self.inner();
        let index = inner.index()?;
        Ok((index.len(), index.size_bytes()))
    }

    /// Stored next-offsets for every partition of `topic`.
    pub(crate) fn offsets(&self, topic: &str) -> Result<HashMap<i32, i64>, StoreError> {
        let prefix = keys::offset_prefix(topic);
        let mut out = HashMap::new();
        for entry in self.inner().db()?.scan_prefix(&prefix) {
            let (key, value) = entry?;
            let (partition, offset) = codec::decode_offset(&key[prefix.len()..], &value)
                .ok_or_else(|| StoreError::Corrupt {
                    key: format!("{key:?}"),
                    reason: "offset".into(),
                })?;
            out.insert(partition, offset);
        }
        Ok(out)
    }

    /// The Kafka timestamp of the record before each stored offset of `topic`, per partition
    /// (absent for offsets stored before this was kept).
    pub fn last_records(&self, topic: &str) -> Result<HashMap<i32, Millis>, StoreError> {
        let prefix = keys::last_record_prefix(topic);
        let mut out = HashMap::new();
        for entry in self.inner().db()?.scan_prefix(&prefix) {
            let (key, value) = entry?;
            let (partition, at) =
                codec::decode_offset(&key[prefix.len()..], &value).ok_or_else(|| {
                    StoreError::Corrupt {
                        key: format!("{key:?}"),
                        reason: "last record time".into(),
                    }
                })?;
            out.insert(partition, at);
        }
        Ok(out)
    }

    /// Newest record time per source (heartbeats included). A time later than now (stored by a
    /// build that did not clamp record times) is left out, as if that source had never written:
    /// it must not keep `stale` off, and forgetting it errs toward `stale`.
    fn liveness(&self) -> Result<BTreeMap<String, Millis>, StoreError> {
        let now = now_millis();
        let mut out = BTreeMap::new();
        for entry in self.inner().db()?.scan_prefix([keys::LIVENESS]) {
            let (key, value) = entry?;
            let source = String::from_utf8_lossy(&key[1..]).into_owned();
            let at = codec::decode_i64(&value).unwrap_or_default();
            if at > now {
                tracing::warn!(source = %source, at, "Stored liveness time is in the future; ignoring it.");
                continue;
            }
            out.insert(source, at);
        }
        Ok(out)
    }

    /// Where a device's records are on the events topic (at most [`MAX_REFS_PER_DEVICE`], its
    /// slack and [`RECENT_REFS`]), in (partition, offset) order: one prefix scan and the
    /// device's value, whatever the size of the topic.
    pub fn record_refs(&self, guid: &str) -> Result<Vec<RecordRef>, StoreError> {
        self.inner().record_refs(guid)
    }

    /// Every device state, in GUID order (a full scan: for inspection, not the hot path).
    pub fn scan_devices(&self) -> impl Iterator<Item = Result<DeviceState, StoreError>> + '_ {
        let (iter, detached) = match self.inner().db() {
            Ok(db) => (Some(db.scan_prefix([keys::DEVICE])), None),
            Err(e) => (None, Some(Err(e))),
        };
        detached
            .into_iter()
            .chain(iter.into_iter().flatten().map(|entry| {
                let (key, value) = entry?;
                codec::decode_device(&key, &value)
            }))
    }

    /// Number of devices (a full scan), which the store's tests compare with the model's.
    #[cfg(test)]
    fn device_count(&self) -> usize {
        self.inner()
            .db()
            .expect("attached")
            .scan_prefix([keys::DEVICE])
            .count()
    }

    /// The newest record time over every source; `None` when no source has ever written.
    pub fn newest_liveness(&self) -> Result<Option<Millis>, StoreError> {
        Ok(self.liveness()?.into_values().max())
    }

    /// Writes one chunk atomically (states, offsets and liveness times), then brings the
    /// decision index up to it.
    pub fn apply(&self, update: &ChunkUpdate) -> Result<(), StoreError> {
        self.apply_timed(update).map(|_| ())
    }

    /// [`Store::apply`], saying how long each of its two steps took (ingest reports where a
    /// catch-up's time goes).
    pub fn apply_timed(&self, update: &ChunkUpdate) -> Result<ApplyTimings, StoreError> {
        // One pair for both steps: the index brought up is the database's own.
        let inner = self.inner();
        let started = std::time::Instant::now();
        inner.apply_batch(update)?;
        let sled = started.elapsed();
        inner.update_index(update)?;
        Ok(ApplyTimings {
            sled,
            index: started.elapsed() - sled,
        })
    }

    /// A crash between the sled batch and the index update: the batch only.
    #[cfg(test)]
    pub(crate) fn apply_sled_only_for_test(&self, update: &ChunkUpdate) -> Result<(), StoreError> {
        self.inner().apply_batch(update)
    }

    /// Clears everything folded from the events topic (device states, ingest offsets,
    /// liveness, record references) in one atomic batch, so that ingest rebuilds from the topic's beginning:
    /// after a crash the store holds either the old state with its offsets or nothing, never
    /// old state with no offsets (which would fold the topic over it again). The decision
    /// index is emptied after the batch.
    pub fn clear_state(&self) -> Result<usize, StoreError> {
        let inner = self.inner();
        let db = inner.db()?;
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for space in [
            keys::DEVICE,
            keys::OFFSET,
            keys::LIVENESS,
            keys::LAST_RECORD,
            keys::RECORD_REF,
            keys::REF_COUNT,
        ] {
            for entry in db.scan_prefix([space]) {
                let (key, _) = entry?;
                batch.remove(key);
                removed += 1;
            }
        }
        db.apply_batch(batch)?;
        inner
            .index
            .write()
            .map_err(|_| StoreError::IndexPoisoned)?
            .clear();
        Ok(removed)
    }

    /// Writes raw bytes under a raw key: lets tests corrupt a stored value (seen by the
    /// decision index from the next open on, as a value damaged on disk would be).
    #[cfg(test)]
    pub(crate) fn write_raw_for_test(&self, key: &[u8], value: &[u8]) {
        self.inner().db().unwrap().insert(key, value).unwrap();
    }

    /// Makes everything written so far durable (sled otherwise syncs every 500 ms).
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let db = self.inner().db()?.clone();
        db.flush_async().await?;
        Ok(())
    }

    /// Blocking flush for the ingest thread and shutdown paths.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.inner().db()?.flush()?;
        Ok(())
    }
}

impl Inner {
    fn db(&self) -> Result<&sled::Db, StoreError> {
        self.db.as_ref().ok_or(StoreError::Swapping)
    }

    /// The decision index, for reading.
    fn index(&self) -> Result<RwLockReadGuard<'_, DecisionIndex>, StoreError> {
        self.index.read().map_err(|_| StoreError::IndexPoisoned)
    }

    /// The references of [`Store::record_refs`]: the device's own keys and those its value
    /// carries, merged (a redelivered record can be in both), in (partition, offset) order.
    fn record_refs(&self, guid: &str) -> Result<Vec<RecordRef>, StoreError> {
        let mut refs = self.spilled_refs(guid)?;
        let key = keys::device(guid);
        if let Some(value) = self.db()?.get(&key)? {
            refs.extend(codec::decode_device(&key, &value)?.recent_refs);
            refs.sort_unstable_by_key(RecordRef::position);
            refs.dedup_by_key(|r| r.position());
        }
        Ok(refs)
    }

    /// A device's references with keys of their own (`Y`), in (partition, offset) order.
    fn spilled_refs(&self, guid: &str) -> Result<Vec<RecordRef>, StoreError> {
        let prefix = keys::record_ref_prefix(guid);
        let mut out = Vec::new();
        for entry in self.db()?.scan_prefix(&prefix) {
            let (key, value) = entry?;
            let decoded = keys::decode_record_ref(&key, prefix.len())
                .zip(codec::decode_i64(&value))
                .ok_or_else(|| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    reason: "record reference".into(),
                })?;
            let ((partition, offset), at) = decoded;
            out.push(RecordRef {
                partition,
                offset,
                at,
            });
        }
        Ok(out)
    }

    /// The index update of [`Store::apply`], only ever after its batch was applied: a decision
    /// may answer from the state before the chunk, never from one sled does not hold.
    fn update_index(&self, update: &ChunkUpdate) -> Result<(), StoreError> {
        let mut index = self.index.write().map_err(|_| StoreError::IndexPoisoned)?;
        for (_, after) in update.devices.values() {
            index.upsert(after);
        }
        Ok(())
    }

    fn apply_batch(&self, update: &ChunkUpdate) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (guid, (_, after)) in &update.devices {
            batch.insert(keys::device(guid), codec::encode_device(after));
        }
        for ((topic, partition), offset) in &update.offsets {
            batch.insert(keys::offset(topic, *partition), &offset.to_be_bytes());
        }
        for ((topic, partition), at) in &update.last_records {
            batch.insert(keys::last_record(topic, *partition), &at.to_be_bytes());
        }
        for (guid, refs) in &update.record_refs {
            // A device the store held no state for has no references either (both are written
            // together and cleared together): its count need not be read, which keeps a
            // catch-up, made mostly of new devices, free of one sled read per device.
            let stored = update
                .devices
                .get(guid)
                .is_none_or(|(before, _)| before.is_some());
            self.add_record_refs(&mut batch, guid, refs, stored)?;
        }
        for (source, at) in &update.liveness {
            let key = keys::liveness(source);
            // A stored time ahead of now (see `liveness`) is replaced, not kept as the max.
            let now = now_millis();
            let newer = match self.db()?.get(&key)? {
                Some(v) => codec::decode_i64(&v).is_none_or(|old| *at > old || old > now),
                None => true,
            };
            if newer {
                batch.insert(key, &at.to_be_bytes());
            }
        }
        self.db()?.apply_batch(batch)?;
        Ok(())
    }

    /// Adds one device's references of a chunk that get keys of their own to `batch`, with
    /// their count once it is [`COUNTED_FROM`] or more; when the count would pass
    /// [`MAX_REFS_PER_DEVICE`] and its slack, those keys are read and only the newest
    /// [`MAX_REFS_PER_DEVICE`] (by record time, then position) are kept (the at most
    /// [`RECENT_REFS`] the device's value carries are newer than any of them, in the order
    /// records arrive, and are not counted). The count is an upper bound (a redelivered record
    /// is counted again though its key is only rewritten), made exact by each pruning.
    fn add_record_refs(
        &self,
        batch: &mut sled::Batch,
        guid: &str,
        refs: &[RecordRef],
        stored: bool,
    ) -> Result<(), StoreError> {
        let count_key = keys::ref_count(guid);
        let counted = match stored {
            true => self.stored_ref_count(guid, &count_key)?,
            false => 0,
        };
        let counted = counted.saturating_add(refs.len());
        if counted <= MAX_REFS_PER_DEVICE + REF_SLACK {
            for r in refs {
                batch.insert(
                    keys::record_ref(guid, r.partition, r.offset),
                    &r.at.to_be_bytes(),
                );
            }
            if counted >= COUNTED_FROM {
                batch.insert(count_key, &(counted as i64).to_be_bytes());
            }
            return Ok(());
        }
        let mut all: BTreeMap<(i32, i64), Millis> = BTreeMap::new();
        let stored = self.spilled_refs(guid)?;
        for r in stored.iter().chain(refs) {
            all.insert((r.partition, r.offset), r.at);
        }
        let mut by_age: Vec<(Millis, (i32, i64))> = all.iter().map(|(k, at)| (*at, *k)).collect();
        // Newest first: the first MAX_REFS_PER_DEVICE are kept.
        by_age.sort_unstable_by(|a, b| b.cmp(a));
        let dropped: std::collections::HashSet<(i32, i64)> = by_age
            .iter()
            .skip(MAX_REFS_PER_DEVICE)
            .map(|(_, k)| *k)
            .collect();
        for r in &stored {
            if dropped.contains(&(r.partition, r.offset)) {
                batch.remove(keys::record_ref(guid, r.partition, r.offset));
            }
        }
        for r in refs {
            if !dropped.contains(&(r.partition, r.offset)) {
                batch.insert(
                    keys::record_ref(guid, r.partition, r.offset),
                    &r.at.to_be_bytes(),
                );
            }
        }
        let kept = all.len() - dropped.len();
        batch.insert(count_key, &(kept as i64).to_be_bytes());
        Ok(())
    }

    /// How many references a stored device has, from above: its count key, or, when it has
    /// none (fewer than [`COUNTED_FROM`] references), its references counted, which reads at
    /// most that many keys.
    fn stored_ref_count(&self, guid: &str, count_key: &[u8]) -> Result<usize, StoreError> {
        if let Some(v) = self.db()?.get(count_key)? {
            return Ok(codec::decode_i64(&v).unwrap_or(0).max(0) as usize);
        }
        let mut seen = 0;
        for entry in self
            .db()?
            .scan_prefix(keys::record_ref_prefix(guid))
            .take(COUNTED_FROM)
        {
            entry?;
            seen += 1;
        }
        Ok(seen)
    }
}

/// Removes the sled identifier indexes older builds kept (`H`, `M`, `P`: three or more keys per
/// device), in one batch: the decision index replaced them. Nothing once they are gone.
fn retire_identifier_keyspaces(db: &sled::Db) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let mut removed = 0usize;
    for space in keys::RETIRED {
        for entry in db.scan_prefix([space]) {
            let (key, _) = entry?;
            batch.remove(key);
            removed += 1;
        }
    }
    if removed > 0 {
        db.apply_batch(batch)?;
        tracing::info!(
            removed,
            "Removed the identifier index keys older builds kept in sled."
        );
    }
    Ok(())
}

/// The decision index of every stored device. A value that does not decode is remembered as
/// corrupt (logged with its key): its GUID's decisions deny `store_unavailable`, and so do
/// lookups by other identifiers, which could name it (see `index`).
///
/// This is most of a restart with a large fleet (a million devices took 13–15 s, with sled's
/// open ~0.1 s), so the device keyspace is cut into ranges that one thread per core scans,
/// decodes and packs, while this thread gathers what they send; the index is then built with
/// every table sized once ([`DecisionIndex::from_prepared`]: inserting one by one spent half
/// the time rehashing growing tables). The result does not depend on the order the ranges
/// arrive in: each GUID is in exactly one range, once.
fn build_index(db: &sled::Db) -> Result<DecisionIndex, StoreError> {
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut entries = Vec::new();
    let mut corrupt = Vec::new();
    std::thread::scope(|scope| {
        let (send, receive) =
            std::sync::mpsc::sync_channel::<Result<Vec<Prepared>, StoreError>>(2 * threads);
        for range in keys::device_ranges(threads) {
            let send = send.clone();
            scope.spawn(move || prepare_range(db, range, &send));
        }
        drop(send);
        for batch in receive {
            for prepared in batch? {
                match prepared {
                    Prepared::Entry(entry) => entries.push(entry),
                    Prepared::Corrupt { key, error } => corrupt.push((key, error)),
                }
            }
        }
        Ok::<(), StoreError>(())
    })?;
    let mut index = DecisionIndex::from_prepared(entries);
    for (key, error) in corrupt {
        let guid = String::from_utf8_lossy(&key[1..]).into_owned();
        tracing::error!(key = %String::from_utf8_lossy(&key), error = %error,
            "Stored device value is corrupt; its decisions, and lookups by MAC, hostname or processor id, deny store_unavailable.");
        index.mark_corrupt(&guid, error.to_string());
    }
    tracing::info!(
        devices = index.len(),
        corrupt = index.corrupt_count(),
        index_bytes = index.size_bytes(),
        threads,
        millis = started.elapsed().as_millis() as u64,
        resident_mib = crate::allocator::resident_bytes() >> 20,
        "Decision index built from the store."
    );
    Ok(index)
}

/// One stored device value, decoded and packed for the index, or why it cannot be.
enum Prepared {
    Entry(crate::index::PreparedEntry),
    Corrupt { key: sled::IVec, error: StoreError },
}

/// How many devices a rebuild thread sends at a time: few enough sends not to matter, small
/// enough that the inserting thread starts at once.
const PREPARE_BATCH: usize = 1024;

/// Scans one range of the device keyspace for [`build_index`], sending batches of prepared
/// entries; stops at the first sled error (sent on) or when the receiver is gone.
fn prepare_range(
    db: &sled::Db,
    range: (Vec<u8>, Vec<u8>),
    send: &std::sync::mpsc::SyncSender<Result<Vec<Prepared>, StoreError>>,
) {
    let mut batch = Vec::with_capacity(PREPARE_BATCH);
    for entry in db.range(range.0..range.1) {
        let (key, value) = match entry {
            Ok(kv) => kv,
            Err(e) => {
                let _ = send.send(Err(e.into()));
                return;
            }
        };
        batch.push(match codec::decode_device(&key, &value) {
            Ok(state) => Prepared::Entry(crate::index::PreparedEntry::new(&state)),
            Err(error) => Prepared::Corrupt { key, error },
        });
        if batch.len() == PREPARE_BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(PREPARE_BATCH));
            if send.send(Ok(full)).is_err() {
                return;
            }
        }
    }
    if !batch.is_empty() {
        let _ = send.send(Ok(batch));
    }
}

/// Opens the store again right after the last handle was dropped. sled's background threads can
/// hold the file lock for a moment after the drop (seen once on a loaded machine), which a real
/// restart, a new process, never meets; so wait for it, within a bound.
#[cfg(test)]
pub(crate) fn reopen_for_test(dir: &Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir, DEFAULT_CACHE_BYTES) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}
