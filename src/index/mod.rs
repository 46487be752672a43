//! The decision index: what rules 5–8 read of every device, in memory.
//!
//! Decisions used to read sled: a B-tree walk and a postcard decode of the whole device state
//! per lookup, which over a million devices meant page-ins and a p99 in milliseconds. The index
//! holds, per device, a compact [`Entry`] (identifiers for matching, the [`DeviceSummary`]
//! fields) in a slot vector, and four hash tables of slot numbers: by connector GUID, by
//! processor id, by MAC, and by the *first label* of the hostname. A table stores only slot
//! numbers (4 bytes a bucket; 8 for MACs, which also name which of the device's MACs); the key
//! is recomputed from the entry when the table grows, and every candidate a hash finds is
//! checked against the entry's own value, so hash collisions cost time, never a wrong match.
//!
//! Hostnames match both ways (`policy::hostnames_match`: a name matches itself and the names
//! that extend it by `.` and more labels), and any two names that match share their first label.
//! So the hostname table is keyed by the first label (lower case): a request for `a.b.c` looks
//! up `a` and keeps the candidates whose full name matches by the rule.
//!
//! The index is derived: sled is the durable copy. The store rebuilds it by scanning the device
//! keyspace when it opens, and updates it after each chunk's sled batch is applied, never
//! before (`store::Store::apply`), so it never runs ahead of the stored offsets. A stored device
//! value that does not decode is remembered as corrupt by GUID: a lookup of that GUID fails,
//! and so does every lookup by MAC, hostname or processor id while any corrupt device exists,
//! since that device's identifiers are unknown and "no device matched" could be a wrongful
//! allow under `unknown_device = "allow"`.
//!
//! Pure data structure: no I/O, no clock, no locking (the store wraps it in a lock).

mod entry;
#[cfg(test)]
mod tests;

use crate::fold::{DeviceState, DeviceSummary};
use crate::policy::hostnames_match;
use entry::Entry;
use hashbrown::HashTable;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

/// Why the index cannot answer a lookup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The device's stored value did not decode when the index was built.
    #[error("device {guid} cannot be read: {reason}")]
    CorruptDevice {
        /// The device's connector GUID.
        guid: String,
        /// What the store said (it names the key).
        reason: String,
    },
    /// A lookup by an identifier other than the GUID while some stored device value does not
    /// decode: that device could be the one the identifier names.
    #[error("{count} stored device value(s) cannot be read (first: {reason}); a device found by MAC, hostname or processor id could be one of them")]
    CorruptDevicesUnsearchable {
        /// How many devices are corrupt.
        count: usize,
        /// What the store said about the first of them (by GUID).
        reason: String,
    },
}

/// The in-memory decision index; see the module documentation.
#[derive(Debug)]
pub struct DecisionIndex {
    /// Entries by slot; `None` for a freed slot (a device that became corrupt).
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    by_guid: HashTable<u32>,
    by_processor: HashTable<u32>,
    /// `slot << 32 | i`, where `i` is the position of the MAC in the entry's MACs.
    by_mac: HashTable<u64>,
    /// Keyed by the hostname's first label.
    by_host_label: HashTable<u32>,
    /// Devices whose stored value does not decode: GUID → what the store said.
    corrupt: BTreeMap<String, String>,
    /// Keyed (per process) SipHash: identifiers come from outside, so no one can aim collisions.
    hasher: RandomState,
}

impl Default for DecisionIndex {
    fn default() -> Self {
        DecisionIndex::with_capacity(0)
    }
}

/// A device's index entry, built from its state apart from the index: the decode-and-pack work
/// of an insertion, which needs no access to the index and so can run on any thread (the
/// store's rebuild at open prepares on every core, then [`DecisionIndex::from_prepared`]).
#[derive(Debug)]
pub struct PreparedEntry(Entry);

impl PreparedEntry {
    /// The entry `state` will have in the index.
    pub fn new(state: &DeviceState) -> PreparedEntry {
        PreparedEntry(Entry::new(state))
    }
}

/// The first label of a hostname, in lower case (normalised names already are).
fn first_label(host: &str) -> Cow<'_, str> {
    let label = host.split('.').next().unwrap_or(host);
    if label.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(label.to_ascii_lowercase())
    } else {
        Cow::Borrowed(label)
    }
}

fn slot_of(mac_key: u64) -> u32 {
    (mac_key >> 32) as u32
}

fn mac_position(mac_key: u64) -> usize {
    (mac_key & u64::from(u32::MAX)) as usize
}

impl DecisionIndex {
    /// An empty index with room for `devices` devices.
    pub fn with_capacity(devices: usize) -> DecisionIndex {
        DecisionIndex {
            slots: Vec::with_capacity(devices),
            free: Vec::new(),
            by_guid: HashTable::with_capacity(devices),
            by_processor: HashTable::with_capacity(devices),
            by_mac: HashTable::with_capacity(devices),
            by_host_label: HashTable::with_capacity(devices),
            corrupt: BTreeMap::new(),
            hasher: RandomState::new(),
        }
    }

    /// Devices indexed (corrupt ones not counted).
    pub fn len(&self) -> usize {
        self.by_guid.len()
    }

    /// Whether no device is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_guid.is_empty()
    }

    /// Devices remembered as corrupt.
    pub fn corrupt_count(&self) -> usize {
        self.corrupt.len()
    }

    /// Whether the store holds a value for this GUID (a decodable one or a corrupt one): when
    /// not, ingest knows the device is new without reading sled.
    pub fn knows(&self, guid: &str) -> bool {
        self.find_guid(guid).is_some() || self.corrupt.contains_key(guid)
    }

    /// Drops everything (the store's state was cleared for a rebuild).
    pub fn clear(&mut self) {
        *self = DecisionIndex::with_capacity(0);
    }

    fn hash(&self, value: &str) -> u64 {
        self.hasher.hash_one(value)
    }

    fn entry(&self, slot: u32) -> Option<&Entry> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn find_guid(&self, guid: &str) -> Option<u32> {
        self.find_guid_hashed(self.hash(guid), guid)
    }

    /// [`Self::find_guid`] with the GUID's hash already computed (an insertion needs it too).
    fn find_guid_hashed(&self, hash: u64, guid: &str) -> Option<u32> {
        self.by_guid
            .find(hash, |s| self.entry(*s).is_some_and(|e| e.guid() == guid))
            .copied()
    }

    /// Adds `slot` to the GUID table under `hash`, its entry's GUID hash.
    fn link_guid(&mut self, hash: u64, slot: u32) {
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_guid.insert_unique(hash, slot, |s| {
            hasher.hash_one(slots[*s as usize].as_ref().map_or("", |e| e.guid()))
        });
    }

    /// The index of many devices at once, from their entries prepared beforehand (the store's
    /// rebuild at open). Every table is sized once for all of them before anything goes in:
    /// growing a table rehashes it, which re-reads every entry it holds (a cache miss each),
    /// and that was half of a 1M-device rebuild when entries were inserted one by one.
    /// Entries are expected to name distinct GUIDs (the store has one key per device); should
    /// two name the same, the first is kept.
    pub fn from_prepared(prepared: Vec<PreparedEntry>) -> DecisionIndex {
        let mut index = DecisionIndex::with_capacity(0);
        // Same layout (the entry's boxed text is a niche for `None`): collected in place.
        index.slots = prepared.into_iter().map(|p| Some(p.0)).collect();
        let (mut processors, mut macs, mut hosts) = (0, 0, 0);
        for entry in index.slots.iter().flatten() {
            processors += usize::from(entry.processor_id().is_some());
            hosts += usize::from(entry.hostname().is_some());
            macs += entry.macs().count();
        }
        index.by_guid = HashTable::with_capacity(index.slots.len());
        index.by_processor = HashTable::with_capacity(processors);
        index.by_mac = HashTable::with_capacity(macs);
        index.by_host_label = HashTable::with_capacity(hosts);
        let devices =
            u32::try_from(index.slots.len()).expect("fewer than 2^32 devices in one index");
        for slot in 0..devices {
            let Some(guid) = index.entry(slot).map(Entry::guid) else {
                continue;
            };
            let hash = index.hash(guid);
            if index.find_guid_hashed(hash, guid).is_some() {
                index.slots[slot as usize] = None;
                index.free.push(slot);
                continue;
            }
            index.link_guid(hash, slot);
            index.link_identifiers(slot);
        }
        index
    }

    /// Adds a device or replaces what is indexed for it (its identifiers may have changed).
    pub fn upsert(&mut self, state: &DeviceState) {
        let entry = Entry::new(state);
        // A value that was written whole is readable again.
        if !self.corrupt.is_empty() {
            self.corrupt.remove(entry.guid());
        }
        let hash = self.hash(entry.guid());
        let slot = match self.find_guid_hashed(hash, entry.guid()) {
            Some(slot) => {
                self.unlink_identifiers(slot);
                self.slots[slot as usize] = Some(entry);
                slot
            }
            None => {
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.slots[slot as usize] = Some(entry);
                        slot
                    }
                    None => {
                        let slot = u32::try_from(self.slots.len())
                            .expect("fewer than 2^32 devices in one index");
                        self.slots.push(Some(entry));
                        slot
                    }
                };
                self.link_guid(hash, slot);
                slot
            }
        };
        self.link_identifiers(slot);
    }

    /// Remembers that the device's stored value does not decode (see [`IndexError`]); whatever
    /// was indexed for it is dropped, so nothing answers from a state that is no longer stored.
    pub fn mark_corrupt(&mut self, guid: &str, reason: String) {
        if let Some(slot) = self.find_guid(guid) {
            self.unlink_identifiers(slot);
            let hash = self.hash(guid);
            if let Ok(found) = self.by_guid.find_entry(hash, |s| *s == slot) {
                found.remove();
            }
            self.slots[slot as usize] = None;
            self.free.push(slot);
        }
        self.corrupt.insert(guid.to_owned(), reason);
    }

    /// Adds the slot's processor id, MACs and hostname label to their tables.
    fn link_identifiers(&mut self, slot: u32) {
        let Some(entry) = self.entry(slot) else {
            return;
        };
        let processor = entry.processor_id().map(|p| self.hash(p));
        let macs: Vec<u64> = entry.macs().map(|m| self.hash(m)).collect();
        let label = entry.hostname().map(|h| self.hash(&first_label(h)));
        let (slots, hasher) = (&self.slots, &self.hasher);
        let entry_of = |s: u32| slots[s as usize].as_ref();
        if let Some(hash) = processor {
            self.by_processor.insert_unique(hash, slot, |s| {
                hasher.hash_one(entry_of(*s).and_then(Entry::processor_id).unwrap_or(""))
            });
        }
        for (i, hash) in macs.into_iter().enumerate() {
            self.by_mac
                .insert_unique(hash, u64::from(slot) << 32 | i as u64, |k| {
                    let mac = entry_of(slot_of(*k)).and_then(|e| e.macs().nth(mac_position(*k)));
                    hasher.hash_one(mac.unwrap_or(""))
                });
        }
        if let Some(hash) = label {
            self.by_host_label.insert_unique(hash, slot, |s| {
                let host = entry_of(*s).and_then(Entry::hostname).unwrap_or("");
                hasher.hash_one(&*first_label(host))
            });
        }
    }

    /// Removes the slot's processor id, MACs and hostname label from their tables (before the
    /// entry they were computed from is replaced).
    fn unlink_identifiers(&mut self, slot: u32) {
        let Some(entry) = self.entry(slot) else {
            return;
        };
        let processor = entry.processor_id().map(|p| self.hash(p));
        let macs: Vec<u64> = entry.macs().map(|m| self.hash(m)).collect();
        let label = entry.hostname().map(|h| self.hash(&first_label(h)));
        if let Some(hash) = processor {
            if let Ok(found) = self.by_processor.find_entry(hash, |s| *s == slot) {
                found.remove();
            }
        }
        for (i, hash) in macs.into_iter().enumerate() {
            let key = u64::from(slot) << 32 | i as u64;
            if let Ok(found) = self.by_mac.find_entry(hash, |k| *k == key) {
                found.remove();
            }
        }
        if let Some(hash) = label {
            if let Ok(found) = self.by_host_label.find_entry(hash, |s| *s == slot) {
                found.remove();
            }
        }
    }

    /// Fails when any device is corrupt: a lookup by anything but the GUID could miss it.
    fn searchable(&self) -> Result<(), IndexError> {
        match self.corrupt.iter().next() {
            None => Ok(()),
            Some((_, reason)) => Err(IndexError::CorruptDevicesUnsearchable {
                count: self.corrupt.len(),
                reason: reason.clone(),
            }),
        }
    }

    /// What decisions read of a device, by (normalised) connector GUID.
    pub fn device(&self, guid: &str) -> Result<Option<DeviceSummary>, IndexError> {
        if let Some(reason) = self.corrupt.get(guid) {
            return Err(IndexError::CorruptDevice {
                guid: guid.to_owned(),
                reason: reason.clone(),
            });
        }
        Ok(self
            .find_guid(guid)
            .and_then(|s| self.entry(s))
            .map(Entry::summary))
    }

    fn guids(&self, slots: impl Iterator<Item = u32>) -> Vec<String> {
        let mut guids: Vec<String> = slots
            .filter_map(|s| self.entry(s))
            .map(|e| e.guid().to_owned())
            .collect();
        guids.sort_unstable();
        guids.dedup();
        guids
    }

    /// GUIDs of the devices with this (normalised) processor id, sorted.
    pub fn guids_by_processor_id(&self, id: &str) -> Result<Vec<String>, IndexError> {
        self.searchable()?;
        let found = self
            .by_processor
            .iter_hash(self.hash(id))
            .copied()
            .filter(|s| self.entry(*s).and_then(Entry::processor_id) == Some(id));
        Ok(self.guids(found))
    }

    /// GUIDs of the devices with this MAC (12 lower-case hex digits), sorted.
    pub fn guids_by_mac(&self, mac: &str) -> Result<Vec<String>, IndexError> {
        self.searchable()?;
        let found = self
            .by_mac
            .iter_hash(self.hash(mac))
            .map(|k| slot_of(*k))
            .filter(|s| self.entry(*s).is_some_and(|e| e.macs().any(|m| m == mac)));
        Ok(self.guids(found))
    }

    /// GUIDs of the devices whose hostname matches `host` by the hostname rule, both ways
    /// (`policy::hostnames_match`), sorted.
    pub fn guids_by_hostname(&self, host: &str) -> Result<Vec<String>, IndexError> {
        self.searchable()?;
        let found = self
            .by_host_label
            .iter_hash(self.hash(&first_label(host)))
            .copied()
            .filter(|s| {
                self.entry(*s)
                    .and_then(Entry::hostname)
                    .is_some_and(|h| hostnames_match(h, host))
            });
        Ok(self.guids(found))
    }

    /// The summaries of the entries at `slots` (candidates already checked), sorted by GUID,
    /// each device once: the answer of one lookup level, in one pass under the caller's lock.
    fn summaries(&self, slots: impl Iterator<Item = u32>) -> Vec<DeviceSummary> {
        let mut found = slots.filter_map(|s| self.entry(s));
        // Nearly every lookup finds one device: then no list of entries to sort.
        let Some(first) = found.next() else {
            return Vec::new();
        };
        let Some(second) = found.next() else {
            return vec![first.summary()];
        };
        let mut entries: Vec<&Entry> = [first, second].into_iter().chain(found).collect();
        entries.sort_unstable_by(|a, b| a.guid().cmp(b.guid()));
        entries.dedup_by(|a, b| a.guid() == b.guid());
        entries.into_iter().map(Entry::summary).collect()
    }

    /// What decisions read of the devices with this (normalised) processor id, sorted by GUID.
    pub fn devices_by_processor_id(&self, id: &str) -> Result<Vec<DeviceSummary>, IndexError> {
        self.searchable()?;
        let found = self
            .by_processor
            .iter_hash(self.hash(id))
            .copied()
            .filter(|s| self.entry(*s).and_then(Entry::processor_id) == Some(id));
        Ok(self.summaries(found))
    }

    /// What decisions read of the devices with any of these MACs (12 lower-case hex digits
    /// each), sorted by GUID, each device once.
    pub fn devices_by_macs(&self, macs: &[String]) -> Result<Vec<DeviceSummary>, IndexError> {
        self.searchable()?;
        let found = macs.iter().flat_map(|mac| {
            self.by_mac
                .iter_hash(self.hash(mac))
                .map(|k| slot_of(*k))
                .filter(move |s| self.entry(*s).is_some_and(|e| e.macs().any(|m| m == mac)))
        });
        Ok(self.summaries(found))
    }

    /// What decisions read of the devices whose hostname matches `host` by the hostname rule,
    /// both ways (`policy::hostnames_match`), sorted by GUID.
    pub fn devices_by_hostname(&self, host: &str) -> Result<Vec<DeviceSummary>, IndexError> {
        self.searchable()?;
        let found = self
            .by_host_label
            .iter_hash(self.hash(&first_label(host)))
            .copied()
            .filter(|s| {
                self.entry(*s)
                    .and_then(Entry::hostname)
                    .is_some_and(|h| hostnames_match(h, host))
            });
        Ok(self.summaries(found))
    }

    /// An estimate of the bytes the index holds: slots, tables and each entry's heap text.
    pub fn size_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<Entry>>()
            + self
                .slots
                .iter()
                .flatten()
                .map(Entry::heap_bytes)
                .sum::<usize>()
            + self.by_guid.allocation_size()
            + self.by_processor.allocation_size()
            + self.by_mac.allocation_size()
            + self.by_host_label.allocation_size()
    }
}
