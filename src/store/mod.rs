//! The sled store: device states, their identifier indexes, ingest offsets and each source's
//! liveness (newest record time).
//!
//! One sled tree holds every keyspace (see `keys.rs`), so a single `apply_batch` writes a chunk of
//! device states, the index entries they imply and the partition offsets that produced them
//! atomically: after a crash the store holds either all of a chunk or none of it, and ingest
//! resumes from the offsets stored with the state (at-least-once; the fold absorbs repeats).
//! The store is a cheap-to-clone handle; sled is already `Arc`-backed and thread-safe.

mod codec;
mod keys;
#[cfg(test)]
mod tests;

use crate::fold::DeviceState;
use crate::time::{now_millis, Millis};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// sled's cache defaults to 1 GiB; trustgate's working set is far smaller.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

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
}

/// A handle on the open store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

/// Everything one ingest chunk changes, applied atomically by [`Store::apply`].
#[derive(Debug, Default)]
pub struct ChunkUpdate {
    /// Device states after the chunk, with the state before it (for index maintenance).
    pub devices: BTreeMap<String, (Option<DeviceState>, DeviceState)>,
    /// Next offset to consume, per (topic, partition).
    pub offsets: BTreeMap<(String, i32), i64>,
    /// Newest record time per source on the events topic (liveness).
    pub liveness: BTreeMap<String, Millis>,
    /// Kafka timestamp of the chunk's last record per (topic, partition): the record just
    /// before the stored next offset.
    pub last_records: BTreeMap<(String, i32), Millis>,
}

impl Store {
    /// Opens (or creates) the store. sled allows one process per store; a second one gets
    /// [`StoreError::Locked`].
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
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
        Ok(Store { db })
    }

    /// A device's state by (normalised) connector GUID.
    pub fn device(&self, guid: &str) -> Result<Option<DeviceState>, StoreError> {
        let key = keys::device(guid);
        self.db
            .get(&key)?
            .map(|v| codec::decode_device(&key, &v))
            .transpose()
    }

    /// GUIDs of devices with this normalised `windows_processor_id`.
    pub(crate) fn guids_by_processor_id(&self, id: &str) -> Result<Vec<String>, StoreError> {
        self.exact_index(keys::PROCESSOR, id)
    }

    /// GUIDs of devices with this normalised MAC.
    pub fn guids_by_mac(&self, mac: &str) -> Result<Vec<String>, StoreError> {
        self.exact_index(keys::MAC, mac)
    }

    /// GUIDs of devices whose name matches `host` (normalised, lower case) both ways: named
    /// `host`, `host.<more labels>`, or a name that `host` is followed by `.` and more labels
    /// (the rule is `policy::hostnames_match`).
    pub fn guids_by_hostname(&self, host: &str) -> Result<Vec<String>, StoreError> {
        let prefix = keys::index_value_prefix(keys::HOSTNAME, host);
        let mut guids = Vec::new();
        for entry in self.db.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let rest = &key[prefix.len()..];
            if let Some(guid) = keys::hostname_match(rest) {
                guids.push(guid);
            }
        }
        // The other way: a request's FQDN finds a device SE knows by a shorter name. Each
        // shorter name is `host` cut before one of its dots, looked up exactly.
        for (dot, _) in host.match_indices('.').filter(|(dot, _)| *dot > 0) {
            guids.extend(self.exact_index(keys::HOSTNAME, &host[..dot])?);
        }
        guids.sort();
        guids.dedup();
        Ok(guids)
    }

    fn exact_index(&self, space: u8, value: &str) -> Result<Vec<String>, StoreError> {
        let prefix = keys::index_entry_prefix(space, value);
        let mut guids = Vec::new();
        for entry in self.db.scan_prefix(&prefix) {
            let (key, _) = entry?;
            guids.push(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
        }
        Ok(guids)
    }

    /// Stored next-offsets for every partition of `topic`.
    pub(crate) fn offsets(&self, topic: &str) -> Result<HashMap<i32, i64>, StoreError> {
        let prefix = keys::offset_prefix(topic);
        let mut out = HashMap::new();
        for entry in self.db.scan_prefix(&prefix) {
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
        for entry in self.db.scan_prefix(&prefix) {
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
        for entry in self.db.scan_prefix([keys::LIVENESS]) {
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

    /// Every device state, in GUID order (a full scan: for inspection, not the hot path).
    pub fn scan_devices(&self) -> impl Iterator<Item = Result<DeviceState, StoreError>> + '_ {
        self.db.scan_prefix([keys::DEVICE]).map(|entry| {
            let (key, value) = entry?;
            codec::decode_device(&key, &value)
        })
    }

    /// Number of devices (a full scan), which the store's tests compare with the model's.
    #[cfg(test)]
    fn device_count(&self) -> usize {
        self.db.scan_prefix([keys::DEVICE]).count()
    }

    /// The newest record time over every source; `None` when no source has ever written.
    pub fn newest_liveness(&self) -> Result<Option<Millis>, StoreError> {
        Ok(self.liveness()?.into_values().max())
    }

    /// Writes one chunk atomically: states, index changes, offsets and liveness times.
    pub fn apply(&self, update: &ChunkUpdate) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (guid, (before, after)) in &update.devices {
            batch.insert(keys::device(guid), codec::encode_device(after));
            let old = before.as_ref().map(keys::index_keys).unwrap_or_default();
            let new = keys::index_keys(after);
            for stale in old.difference(&new) {
                batch.remove(stale.as_slice());
            }
            for fresh in new.difference(&old) {
                batch.insert(fresh.as_slice(), &[] as &[u8]);
            }
        }
        for ((topic, partition), offset) in &update.offsets {
            batch.insert(keys::offset(topic, *partition), &offset.to_be_bytes());
        }
        for ((topic, partition), at) in &update.last_records {
            batch.insert(keys::last_record(topic, *partition), &at.to_be_bytes());
        }
        for (source, at) in &update.liveness {
            let key = keys::liveness(source);
            // A stored time ahead of now (see `liveness`) is replaced, not kept as the max.
            let now = now_millis();
            let newer = match self.db.get(&key)? {
                Some(v) => codec::decode_i64(&v).is_none_or(|old| *at > old || old > now),
                None => true,
            };
            if newer {
                batch.insert(key, &at.to_be_bytes());
            }
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Clears everything folded from the events topic (device states, indexes, ingest
    /// offsets, liveness) in one atomic batch, so that ingest rebuilds from the topic's
    /// beginning: after a crash the store holds either the old state with its offsets or
    /// nothing, never old state with no offsets (which would fold the topic over it again).
    pub fn clear_state(&self) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for space in [
            keys::DEVICE,
            keys::HOSTNAME,
            keys::MAC,
            keys::PROCESSOR,
            keys::OFFSET,
            keys::LIVENESS,
            keys::LAST_RECORD,
        ] {
            for entry in self.db.scan_prefix([space]) {
                let (key, _) = entry?;
                batch.remove(key);
                removed += 1;
            }
        }
        self.db.apply_batch(batch)?;
        Ok(removed)
    }

    /// Writes raw bytes under a raw key: lets tests corrupt a stored value.
    #[cfg(test)]
    pub(crate) fn write_raw_for_test(&self, key: &[u8], value: &[u8]) {
        self.db.insert(key, value).unwrap();
    }

    /// Makes everything written so far durable (sled otherwise syncs every 500 ms).
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Blocking flush for the ingest thread and shutdown paths.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}
