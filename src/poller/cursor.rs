//! The event poll's cursor: a date watermark plus the identities already published inside the
//! overlap window, checkpointed to disk only after Kafka acknowledged everything before it.
//!
//! SE's `id` is not time-ordered, so the cursor is the newest event `date` seen. Each poll asks
//! for `start_date = watermark − overlap` (inclusive), which re-reads the boundary (many events
//! can share one timestamp, and offline laptops upload detections late); the identities seen in
//! that window make the re-read events duplicates we skip. A crash between publishing and
//! checkpointing re-reads from the previous checkpoint: duplicates, never gaps.
//!
//! A cursor belongs to one tenant: the checkpoint records the `base_url` and `client_id` it was
//! made for, and a checkpoint made for another tenant (or by a build that did not record one) is
//! never used: it is logged and the poll starts from `initial_lookback` (re-reads are harmless
//! duplicates; a foreign watermark would skip this tenant's detections). Two pollers on one
//! `state_path` are refused by a lock file held for the poller's life.

use crate::time::{format_millis, Millis};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An event's identity: `id:event_type_id`, or `sha256:<hex>` of its bytes when it has no id
/// (the same rule as the fold's).
pub(super) fn event_key(id: Option<u64>, event_type_id: u64, bytes: &[u8]) -> String {
    match id {
        Some(id) => format!("{id}:{event_type_id}"),
        None => {
            use sha2::Digest;
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
        }
    }
}

/// The checkpointed state of the event poll.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Cursor {
    /// The newest event date published (unix ms); `None` before the first successful poll.
    pub(super) watermark: Option<Millis>,
    /// Identities published whose date is inside the overlap window, with that date.
    pub(super) seen: HashMap<String, Millis>,
}

impl Cursor {
    /// The inclusive `start_date` of the next poll.
    pub(super) fn start_date(
        &self,
        now: Millis,
        overlap_ms: Millis,
        initial_lookback_ms: Millis,
    ) -> Millis {
        match self.watermark {
            Some(w) => w.saturating_sub(overlap_ms),
            None => now.saturating_sub(initial_lookback_ms),
        }
    }

    /// True when this identity was already published.
    pub(super) fn seen(&self, key: &str) -> bool {
        self.seen.contains_key(key)
    }

    /// Records a published event.
    pub(super) fn mark(&mut self, key: String, date: Millis) {
        let entry = self.seen.entry(key).or_insert(date);
        *entry = (*entry).max(date);
    }

    /// Ends a poll whose every event Kafka acknowledged: moves the watermark to the newest date
    /// seen, never past `polled_at` (when the poll's first request was sent: an event dated
    /// later, from a skewed clock, must not push the start of the next poll beyond events SE has
    /// not returned yet) and never backwards; then forgets identities that fell out of the
    /// overlap window.
    pub(super) fn advance(
        &mut self,
        newest_date: Option<Millis>,
        polled_at: Millis,
        overlap_ms: Millis,
    ) {
        if let Some(newest) = newest_date {
            let candidate = newest.min(polled_at);
            self.watermark = Some(self.watermark.map_or(candidate, |w| w.max(candidate)));
        } else if self.watermark.is_none() {
            // An empty first poll: nothing in the lookback window, so start from now next time
            // (minus the overlap, which still catches late uploads).
            self.watermark = Some(polled_at);
        }
        let floor = self
            .watermark
            .unwrap_or(polled_at)
            .saturating_sub(overlap_ms);
        self.seen.retain(|_, date| *date >= floor);
    }

    pub(super) fn describe(&self) -> String {
        self.watermark
            .map_or_else(|| "none".to_owned(), format_millis)
    }
}

/// Whom a cursor was made for: the SE API and the API client it polled with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Tenant {
    /// `[poller] base_url` (normalised, no trailing `/`).
    pub(super) base_url: String,
    /// `[poller] client_id`.
    pub(super) client_id: Option<String>,
}

/// The checkpoint file: the cursor with the tenant it belongs to.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// Absent in checkpoints written before cursors recorded their tenant.
    #[serde(default)]
    tenant: Option<Tenant>,
    #[serde(flatten)]
    cursor: Cursor,
}

/// [`Stored`] as written, borrowing.
#[derive(Serialize)]
struct StoredRef<'a> {
    tenant: &'a Tenant,
    #[serde(flatten)]
    cursor: &'a Cursor,
}

/// Why the checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(super) enum CheckpointError {
    #[error("poller state {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("poller state {path} is unreadable: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "poller state {path} is in use by another poller (two pollers must not share a state_path)"
    )]
    Locked { path: PathBuf },
}

/// The poller's hold on its `state_path`: an exclusive lock on a file in it, released when
/// dropped (or when the process dies, so a crash leaves no stale lock).
#[derive(Debug)]
pub(super) struct StateLock {
    _file: std::fs::File,
}

/// The cursor file inside `[poller] state_path` (a directory), for one tenant.
#[derive(Debug, Clone)]
pub(super) struct Checkpoint {
    dir: PathBuf,
    tenant: Tenant,
}

const FILE: &str = "events-cursor.json";
const LOCK_FILE: &str = "poller.lock";

impl Checkpoint {
    /// The checkpoint in `dir` for `tenant`.
    pub(super) fn new(dir: impl Into<PathBuf>, tenant: Tenant) -> Checkpoint {
        Checkpoint {
            dir: dir.into(),
            tenant,
        }
    }

    /// Takes the exclusive lock on the state directory (creating it), or fails with
    /// [`CheckpointError::Locked`] when another poller holds it.
    pub(super) fn lock(&self) -> Result<StateLock, CheckpointError> {
        std::fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
        let path = self.dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(self.io(&path))?;
        match fs2::FileExt::try_lock_exclusive(&file) {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(e) if e.kind() == fs2::lock_contended_error().kind() => {
                Err(CheckpointError::Locked { path })
            }
            Err(e) => Err(self.io(&path)(e)),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
        let path = path.to_owned();
        move |source| CheckpointError::Io { path, source }
    }

    /// The last checkpoint, or an empty cursor when there is none yet or the one there was
    /// made for another tenant (logged).
    pub(super) fn load(&self) -> Result<Cursor, CheckpointError> {
        let path = self.path();
        let stored: Stored = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Corrupt {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Cursor::default()),
            Err(e) => return Err(self.io(&path)(e)),
        };
        if stored.tenant.as_ref() == Some(&self.tenant) {
            return Ok(stored.cursor);
        }
        tracing::warn!(
            path = %path.display(),
            cursor_base_url = stored.tenant.as_ref().map(|t| t.base_url.as_str()),
            cursor_client_id = stored.tenant.as_ref().and_then(|t| t.client_id.as_deref()),
            base_url = %self.tenant.base_url,
            client_id = self.tenant.client_id.as_deref(),
            "Poller cursor was made for another tenant; ignoring it and polling from initial_lookback."
        );
        Ok(Cursor::default())
    }

    /// Replaces the checkpoint atomically: a crash leaves either the old or the new one.
    /// Write a temporary file, fsync it, rename it over the old one, fsync the directory.
    pub(super) fn store(&self, cursor: &Cursor) -> Result<(), CheckpointError> {
        std::fs::create_dir_all(&self.dir).map_err(self.io(&self.dir))?;
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let stored = StoredRef {
            tenant: &self.tenant,
            cursor,
        };
        let bytes = serde_json::to_vec(&stored).expect("a cursor serialises");
        let mut file = std::fs::File::create(&tmp).map_err(self.io(&tmp))?;
        file.write_all(&bytes).map_err(self.io(&tmp))?;
        file.sync_all().map_err(self.io(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(self.io(&path))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io(&self.dir))
    }
}

#[cfg(test)]
#[path = "cursor_tests.rs"]
mod tests;
