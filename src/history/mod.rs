//! A device's history from the events topic: its timeline (`trustgate history`,
//! `GET /v1/devices/{id}/history`) and its state at a past time (`trustgate decide --at`,
//! `"at"` in `POST /v1/decide`).
//!
//! Never a scan of the topic: ingest keeps, per device, where its records are (the store's
//! record references, written in the same batch as the states they produced, at most
//! [`MAX_REFS_PER_DEVICE`](crate::store::MAX_REFS_PER_DEVICE) per device). A query resolves the
//! identifier to a GUID on the decision index, lists that device's references (one prefix scan),
//! reads those records back by partition and offset (`fetch.rs`) and folds them one at a time
//! from nothing with the pure fold, evaluating a trusted device's decision after each step with
//! the pure policy (`timeline.rs`, no I/O, unit-tested on its own).

mod fetch;
#[cfg(test)]
mod tests;
mod timeline;

pub use timeline::{
    state_at, timeline, trusted_decision, EntryDetail, FetchedRecord, HistoryEntry, Timeline,
    TimelineContext, Transition,
};

use crate::config::{KafkaSettings, Settings};
use crate::fold::{DeviceSummary, FoldConfig};
use crate::policy::{DeviceDirectory, DirectoryError, MemoryDirectory, Policies, Subject};
use crate::se;
use crate::store::{RecordRef, Store, StoreError, MAX_REFS_PER_DEVICE};
use crate::time::{now_millis, parse_rfc3339, Millis};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The most devices a `decide --at` request's identifiers may name (ambiguous hostnames): each
/// is a read of its records from the topic.
const MAX_PAST_DEVICES: usize = 16;

/// Why a history cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// No device is known by this identifier.
    #[error("no device matches {0:?}")]
    NotFound(String),
    /// Several devices match; the history is one device's.
    #[error("{id:?} matches {} devices ({}); name one by its connector GUID", guids.len(), guids.join(", "))]
    Ambiguous {
        /// The identifier given.
        id: String,
        /// The devices it matches.
        guids: Vec<String>,
    },
    /// The store could not be read.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The events topic could not be read.
    #[error("reading the events topic: {0}")]
    Kafka(rdkafka::error::KafkaError),
    /// The records were not all read back within the time allowed.
    #[error("reading {topic} timed out: {found} of {wanted} records read")]
    Timeout {
        /// The events topic.
        topic: String,
        /// Records read.
        found: usize,
        /// Records wanted.
        wanted: usize,
    },
    /// A `decide --at` request names more devices than are read back for one decision.
    #[error("the request's identifiers name {0} devices; at most {MAX_PAST_DEVICES} are read back for a decision at a past time")]
    TooManyDevices(usize),
}

/// Which part of a device's history to show, and under which policy.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Entries at or after this time (the state before it still counts).
    pub since: Option<Millis>,
    /// Entries at or before this time.
    pub until: Option<Millis>,
    /// The application whose policy decides (its custom policy, else the global one).
    pub application: Option<String>,
}

/// One device's timeline, as `trustgate history` and the admin route give it.
#[derive(Debug, Clone)]
pub struct DeviceHistory {
    /// The device.
    pub connector_guid: String,
    /// The policy the decisions were taken under.
    pub policy: String,
    /// The entries within the query's bounds, in time order.
    pub entries: Vec<HistoryEntry>,
    /// Records the device's references name that are no longer on the topic.
    pub records_missing: usize,
    /// Records read back that were not this device's (see [`Timeline::skipped`]).
    pub records_skipped: usize,
    /// Whether the device reached the bound on references: its oldest records were dropped
    /// from the index, so the timeline starts later than its first record.
    pub references_capped: bool,
}

impl DeviceHistory {
    /// The JSON object of the admin route: the entries as `history --json` prints them, and
    /// what the history covers.
    pub fn to_json(&self) -> Value {
        json!({
            "connector_guid": self.connector_guid,
            "policy": self.policy,
            "entries": self.entries.iter().map(HistoryEntry::to_json).collect::<Vec<_>>(),
            "records_missing": self.records_missing,
            "records_skipped": self.records_skipped,
            "references_capped": self.references_capped,
        })
    }
}

/// What reading a device's history needs besides the store: the events topic, the fold's
/// configuration and the policies.
#[derive(Clone)]
pub struct HistorySource {
    kafka: KafkaSettings,
    topic: String,
    fold: FoldConfig,
    policies: Arc<Policies>,
}

impl HistorySource {
    /// From the configuration.
    pub fn new(settings: &Settings) -> HistorySource {
        HistorySource {
            kafka: settings.kafka.clone(),
            topic: settings.topics.events.clone(),
            fold: settings.fold.clone(),
            policies: Arc::new(settings.policies.clone()),
        }
    }

    /// The timeline of the device `id` names (connector GUID, MAC, processor id or hostname).
    /// Blocking (reads Kafka): run it off the async threads.
    pub fn device_history(
        &self,
        store: &Store,
        id: &str,
        query: &HistoryQuery,
    ) -> Result<DeviceHistory, HistoryError> {
        let guid = resolve(store, id)?;
        let refs = store.record_refs(&guid)?;
        let references_capped = refs.len() >= MAX_REFS_PER_DEVICE;
        // Records after `until` cannot change what is shown: they are not read.
        let wanted: Vec<RecordRef> = refs
            .into_iter()
            .filter(|r| query.until.is_none_or(|u| r.at <= u))
            .collect();
        let fetched = fetch::fetch(&self.kafka, &self.topic, &wanted)?;
        let policy = match &query.application {
            Some(app) => self.policies.for_application(app),
            None => &self.policies.global,
        };
        let ctx = TimelineContext {
            fold: &self.fold,
            policy,
            now: now_millis(),
        };
        let timeline = timeline(&guid, &fetched.records, ctx);
        let entries = timeline
            .entries
            .into_iter()
            .filter(|e| query.since.is_none_or(|s| e.at >= s))
            .filter(|e| query.until.is_none_or(|u| e.at <= u))
            .collect();
        Ok(DeviceHistory {
            connector_guid: guid,
            policy: policy.name.to_string(),
            entries,
            records_missing: fetched.missing,
            records_skipped: timeline.skipped,
            references_capped,
        })
    }

    /// The states at `at` of the devices a request's identifiers name now (at any level: the
    /// decision then matches among them by the identifiers they had at `at`).
    pub fn past_directory(&self, store: &Store, subject: &Subject, at: Millis) -> PastDirectory {
        match self.states_at(store, subject, at) {
            Ok(directory) => PastDirectory::Known(directory),
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the device's records for a decision at a past time.");
                PastDirectory::Unavailable(e.to_string())
            }
        }
    }

    /// [`past_directory`](Self::past_directory) for many decisions (`trustgate what-if`): each
    /// device's records are read back once, into `cache` (all of them in one pass by
    /// [`preload`](Self::preload), else here at the device's first decision), and folded up to
    /// each `at`.
    pub fn past_directory_cached(
        &self,
        store: &Store,
        subject: &Subject,
        at: Millis,
        cache: &mut PastRecords,
    ) -> PastDirectory {
        let directory = self.named_guids(store, subject).and_then(|guids| {
            let now = now_millis();
            let mut directory = MemoryDirectory::default();
            for guid in guids {
                let records = match cache.by_guid.get(&guid) {
                    Some(records) => records,
                    None => {
                        let refs = store.record_refs(&guid)?;
                        let fetched = fetch::fetch(&self.kafka, &self.topic, &refs)?;
                        cache.missing += fetched.missing;
                        cache.by_guid.entry(guid.clone()).or_insert(fetched.records)
                    }
                };
                if let Some(state) = state_at(&guid, records, at, &self.fold, now) {
                    directory.insert(state);
                }
            }
            Ok(directory)
        });
        match directory {
            Ok(directory) => PastDirectory::Known(directory),
            Err(e) => PastDirectory::Unavailable(e.to_string()),
        }
    }

    /// Reads back, in one pass over the events topic, the records of every device the
    /// `subjects` name that `cache` does not hold yet (`trustgate what-if`: one read for all
    /// the devices of the period rather than one per device, each of which would read through
    /// much the same stretches of the topic). A subject whose devices cannot be listed (too
    /// many) is left to [`past_directory_cached`](Self::past_directory_cached), which says why.
    pub fn preload<'a>(
        &self,
        store: &Store,
        subjects: impl IntoIterator<Item = &'a Subject>,
        cache: &mut PastRecords,
    ) -> Result<(), HistoryError> {
        let mut guids = BTreeSet::new();
        for subject in subjects {
            if let Ok(named) = self.named_guids(store, subject) {
                guids.extend(named);
            }
        }
        guids.retain(|g| !cache.by_guid.contains_key(g));
        // Which devices each record is one of (one, unless two devices' references name it).
        let mut owners: HashMap<(i32, i64), Vec<usize>> = HashMap::new();
        let mut refs = Vec::new();
        let guids: Vec<String> = guids.into_iter().collect();
        for (i, guid) in guids.iter().enumerate() {
            for r in store.record_refs(guid)? {
                let devices = owners.entry((r.partition, r.offset)).or_default();
                if !devices.contains(&i) {
                    devices.push(i);
                }
                refs.push(r);
            }
        }
        let fetched = fetch::fetch(&self.kafka, &self.topic, &refs)?;
        let mut by_device: Vec<Vec<FetchedRecord>> = vec![Vec::new(); guids.len()];
        for record in fetched.records {
            if let Some(devices) = owners.get(&(record.partition, record.offset)) {
                for &i in devices {
                    by_device[i].push(record.clone());
                }
            }
        }
        // Each device's references whose record was not found are its missing ones, as a read
        // of that device alone would count them.
        let mut references = vec![0usize; guids.len()];
        for devices in owners.values() {
            for &i in devices {
                references[i] += 1;
            }
        }
        for ((guid, records), wanted) in guids.into_iter().zip(by_device).zip(references) {
            cache.missing += wanted.saturating_sub(records.len());
            cache.by_guid.insert(guid, records);
        }
        Ok(())
    }

    /// The devices a request's identifiers name now, at any level.
    fn named_guids(
        &self,
        store: &Store,
        subject: &Subject,
    ) -> Result<BTreeSet<String>, HistoryError> {
        let ids = &subject.ids;
        let mut guids = BTreeSet::new();
        if let Some(guid) = &ids.connector_guid {
            if store.knows_device(guid) {
                guids.insert(guid.clone());
            }
        }
        if let Some(pid) = &ids.windows_processor_id {
            guids.extend(store.guids_by_processor_id(pid)?);
        }
        for mac in &ids.macs {
            guids.extend(store.guids_by_mac(mac)?);
        }
        if let Some(host) = &ids.hostname {
            guids.extend(store.guids_by_hostname(host)?);
        }
        if guids.len() > MAX_PAST_DEVICES {
            return Err(HistoryError::TooManyDevices(guids.len()));
        }
        Ok(guids)
    }

    fn states_at(
        &self,
        store: &Store,
        subject: &Subject,
        at: Millis,
    ) -> Result<MemoryDirectory, HistoryError> {
        let guids = self.named_guids(store, subject)?;
        let now = now_millis();
        let mut directory = MemoryDirectory::default();
        for guid in guids {
            let refs: Vec<RecordRef> = store
                .record_refs(&guid)?
                .into_iter()
                .filter(|r| r.at <= at)
                .collect();
            let fetched = fetch::fetch(&self.kafka, &self.topic, &refs)?;
            if let Some(state) = state_at(&guid, &fetched.records, at, &self.fold, now) {
                directory.insert(state);
            }
        }
        Ok(directory)
    }
}

/// Devices' records read back from the events topic, kept for many decisions at past times
/// (read once, however many of a device's requests are replayed).
#[derive(Debug, Default)]
pub struct PastRecords {
    by_guid: HashMap<String, Vec<FetchedRecord>>,
    /// Records the devices' references name that are no longer on the topic.
    pub missing: usize,
}

impl PastRecords {
    /// How many devices' records were read back.
    pub fn devices(&self) -> usize {
        self.by_guid.len()
    }
}

/// The device states a decision at a past time reads, or why they could not be read (then
/// the decision denies `store_unavailable`, never guesses).
#[derive(Debug, Clone)]
pub enum PastDirectory {
    /// The states at that time of the devices the request names.
    Known(MemoryDirectory),
    /// The records could not be read back.
    Unavailable(String),
}

/// [`PastDirectory::Unavailable`]'s error, as a directory failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unreadable(String);

impl PastDirectory {
    fn known(&self) -> Result<&MemoryDirectory, DirectoryError> {
        match self {
            PastDirectory::Known(d) => Ok(d),
            PastDirectory::Unavailable(e) => Err(DirectoryError::new(Unreadable(e.clone()))),
        }
    }
}

impl DeviceDirectory for PastDirectory {
    fn device(&self, guid: &str) -> Result<Option<DeviceSummary>, DirectoryError> {
        self.known()?.device(guid)
    }
    fn guids_by_processor_id(&self, id: &str) -> Result<Vec<String>, DirectoryError> {
        self.known()?.guids_by_processor_id(id)
    }
    fn guids_by_mac(&self, mac: &str) -> Result<Vec<String>, DirectoryError> {
        self.known()?.guids_by_mac(mac)
    }
    fn guids_by_hostname(&self, hostname: &str) -> Result<Vec<String>, DirectoryError> {
        self.known()?.guids_by_hostname(hostname)
    }
}

/// The `"at"` of a decision request body: `None` without one (or when the body is not a JSON
/// object: the decision path says what is wrong with it), else the time or why it is not one.
pub fn requested_at(body: &[u8]) -> Option<Result<Millis, String>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let at = value.as_object()?.get("at")?;
    Some(match at.as_str().and_then(parse_rfc3339) {
        Some(ms) => Ok(ms),
        None => Err(format!(
            "at must be an RFC 3339 time (e.g. 2026-01-14T09:12:00Z), got {at}"
        )),
    })
}

/// The one device `id` names: by connector GUID, else the first of MAC, processor id and
/// hostname that matches anything (the hostname rule both ways, as `inspect` matches).
fn resolve(store: &Store, id: &str) -> Result<String, HistoryError> {
    if let Some(guid) = se::normalize_guid(id) {
        if store.knows_device(&guid) {
            return Ok(guid);
        }
    }
    let mut levels = Vec::new();
    if let Some(mac) = se::normalize_mac(id) {
        levels.push(store.guids_by_mac(&mac)?);
    }
    if let Some(pid) = se::normalize_processor_id(id) {
        levels.push(store.guids_by_processor_id(&pid)?);
    }
    if let Some(host) = se::normalize_hostname(id) {
        levels.push(store.guids_by_hostname(&host)?);
    }
    match levels.into_iter().find(|guids| !guids.is_empty()) {
        Some(guids) if guids.len() == 1 => Ok(guids.into_iter().next().expect("one")),
        Some(guids) => Err(HistoryError::Ambiguous {
            id: id.to_owned(),
            guids,
        }),
        None => Err(HistoryError::NotFound(id.to_owned())),
    }
}
