//! The what-if replay itself, shared by `trustgate what-if` (on a store no instance holds) and
//! `POST /v1/admin/what-if` (inside the running instance): the audit topic read with the
//! instance's settings ([`WhatIfContext`]), and each audited request decided by the candidate
//! on its device's state at its time ([`replay`]). Blocking (Kafka reads): callers run it off
//! the async threads.

use super::{Answered, Audited, Replayed, WhatIfReport};
use crate::audit::{self, AuditFilter, AuditRead};
use crate::config::{KafkaSettings, Settings};
use crate::decision::{request, Answer, Decider};
use crate::history::{HistorySource, PastDirectory, PastRecords};
use crate::ingest::IngestStatus;
use crate::liveness::LivenessClock;
use crate::policy::Policies;
use crate::store::{Store, StoreError};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why a what-if could not give a report. Every variant is about reading what exists; a bad
/// candidate is refused before (it is the caller's input).
#[derive(Debug, thiserror::Error)]
pub enum WhatIfError {
    /// The audit topic could not be read.
    #[error("reading the audit topic: {0}")]
    Audit(String),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A request's devices' records could not be read back from the events topic: the
    /// candidate would answer `store_unavailable`, so counting it would be a wrong answer.
    #[error(
        "reading the records of request {request_id}'s devices from the events topic: {message}"
    )]
    Records {
        /// The audited request whose devices could not be read.
        request_id: String,
        /// Why.
        message: String,
    },
    /// The instance is shutting down: the replay stopped between two requests.
    #[error("the instance is shutting down; the what-if stopped")]
    ShuttingDown,
}

/// What a replay read besides the report: for the summary and the warnings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Devices whose records were read back from the events topic.
    pub devices: usize,
    /// Records the devices' references name that are no longer on the topic.
    pub missing: usize,
    /// Records on the audit topic that were not JSON and were skipped.
    pub unreadable_audit: usize,
}

/// What a what-if needs of the instance's configuration, and the one-at-a-time flag of the
/// admin route (a what-if reads whole topics: two at once would only halve each's speed).
#[derive(Clone, Debug)]
pub struct WhatIfContext {
    /// Where the audit topic is.
    pub kafka: KafkaSettings,
    /// `[topics] audit`.
    pub audit_topic: String,
    /// The fold's `resolution_grace` in ms (the compromise rule).
    pub grace_millis: i64,
    running: Arc<AtomicBool>,
    /// A running instance's shutdown: a replay in progress stops at the next request rather
    /// than hold the store (and the shutdown) until it ends.
    shutdown: CancellationToken,
}

/// Held while a what-if runs; dropping it lets the next one start.
pub struct WhatIfRunning(Arc<AtomicBool>);

impl Drop for WhatIfRunning {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl WhatIfContext {
    /// From the configuration.
    pub fn new(settings: &Settings) -> WhatIfContext {
        WhatIfContext {
            kafka: settings.kafka.clone(),
            audit_topic: settings.topics.audit.clone(),
            grace_millis: settings.fold.grace_millis(),
            running: Arc::default(),
            shutdown: CancellationToken::new(),
        }
    }

    /// The same, stopping replays in progress when `shutdown` is cancelled.
    pub fn with_shutdown(self, shutdown: CancellationToken) -> WhatIfContext {
        WhatIfContext { shutdown, ..self }
    }

    /// Marks a what-if as running; `None` while another one is.
    pub fn try_start(&self) -> Option<WhatIfRunning> {
        self.running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| WhatIfRunning(self.running.clone()))
    }

    /// Reads the audited requests decided between `since` and `until` (unix ms, inclusive).
    pub fn read_audit(
        &self,
        since: Option<i64>,
        until: Option<i64>,
    ) -> Result<AuditRead, WhatIfError> {
        let filter = AuditFilter {
            since,
            until,
            ..Default::default()
        };
        audit::read(&self.kafka, &self.audit_topic, &filter)
            .map_err(|e| WhatIfError::Audit(format!("{e:#}")))
    }

    /// Reads the period's audit records and replays them against `candidate`.
    pub fn run(
        &self,
        store: &Store,
        candidate: Policies,
        source: &HistorySource,
        since: Option<i64>,
        until: Option<i64>,
        examples: usize,
    ) -> Result<(WhatIfReport, ReplayStats), WhatIfError> {
        let read = self.read_audit(since, until)?;
        let (report, mut stats) = replay(
            self.grace_millis,
            store,
            candidate,
            &read.records,
            source,
            examples,
            &self.shutdown,
        )?;
        stats.unreadable_audit = read.unreadable;
        Ok((report, stats))
    }
}

/// Decides every audit record's request with `candidate` on its devices' state at the time its
/// audited answer was based on (records read back from the events topic, once per device) and
/// compares the answers. Records that cannot be replayed are counted in `skipped`. Stops with
/// [`WhatIfError::ShuttingDown`] between two records once `shutdown` is cancelled.
pub fn replay(
    grace_millis: i64,
    store: &Store,
    candidate: Policies,
    records: &[Value],
    source: &HistorySource,
    examples: usize,
    shutdown: &CancellationToken,
) -> Result<(WhatIfReport, ReplayStats), WhatIfError> {
    let liveness = LivenessClock::starting_at(store.newest_liveness()?);
    let decider = Decider::new(
        Arc::new(candidate),
        store.clone(),
        grace_millis,
        liveness,
        IngestStatus::offline(),
    );
    let mut cache = PastRecords::default();
    // Every device of the period read back in one pass, before the requests are decided one
    // by one on them. Should that read fail, each device is read when its first request comes,
    // and a failure then names the request.
    let requests: Vec<_> = records
        .iter()
        .filter_map(Audited::from_record)
        .filter_map(|a| request::parse(&a.request).ok())
        .collect();
    if let Err(e) = source.preload(store, requests.iter().map(|r| &r.subject), &mut cache) {
        tracing::warn!(error = %e, "Cannot read the devices' records back in one pass; reading them one device at a time.");
    }
    drop(requests);
    let mut skipped = 0;
    let mut replayed = Vec::with_capacity(records.len());
    for record in records {
        if shutdown.is_cancelled() {
            return Err(WhatIfError::ShuttingDown);
        }
        let Some(audited) = Audited::from_record(record) else {
            skipped += 1;
            continue;
        };
        let mut unreadable = None;
        let answer = decider.decide_as_of(&audited.request, Ok(audited.at), |req| {
            let past = source.past_directory_cached(store, &req.subject, audited.at, &mut cache);
            if let PastDirectory::Unavailable(e) = &past {
                unreadable = Some(e.clone());
            }
            past
        });
        if let Some(message) = unreadable {
            return Err(WhatIfError::Records {
                request_id: audited.request_id,
                message,
            });
        }
        let after = match answer {
            Answer::Reply(resp) => serde_json::to_value(&resp)
                .ok()
                .as_ref()
                .and_then(Answered::of_response),
            Answer::Unanswerable(_) => None,
        };
        match after {
            Some(after) => replayed.push(Replayed::new(audited, after)),
            None => skipped += 1,
        }
    }
    let mut report = WhatIfReport::compare(replayed, examples);
    report.skipped = skipped;
    let stats = ReplayStats {
        devices: cache.devices(),
        missing: cache.missing,
        unreadable_audit: 0,
    };
    Ok((report, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The admin route answers 409 while a what-if runs: the flag is held until the running
    /// one's guard drops, and its clones (one per request) share it.
    #[test]
    fn one_what_if_at_a_time() {
        let settings = crate::config::load_str("", "test", std::iter::empty())
            .unwrap()
            .settings;
        let context = WhatIfContext::new(&settings);
        let running = context.try_start().expect("none runs yet");
        assert!(context.clone().try_start().is_none(), "one is running");
        drop(running);
        assert!(context.clone().try_start().is_some(), "the first one ended");
    }

    /// A shutdown stops the replay before the next record; records without a request are
    /// skipped, not failed (neither reads a topic).
    #[test]
    fn a_shutdown_stops_the_replay_and_unreplayable_records_are_skipped() {
        let settings = crate::config::load_str("", "test", std::iter::empty())
            .unwrap()
            .settings;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), crate::store::DEFAULT_CACHE_BYTES).unwrap();
        let source = HistorySource::new(&settings);
        let records = [serde_json::json!({"response": {"decision": "allow"}})];
        let replayed = |shutdown: &CancellationToken| {
            replay(
                0,
                &store,
                settings.policies.clone(),
                &records,
                &source,
                5,
                shutdown,
            )
        };
        let (report, stats) = replayed(&CancellationToken::new()).unwrap();
        assert_eq!((report.requests, report.skipped), (0, 1));
        assert_eq!(stats, ReplayStats::default());
        let stopped = CancellationToken::new();
        stopped.cancel();
        assert!(matches!(replayed(&stopped), Err(WhatIfError::ShuttingDown)));
    }
}
