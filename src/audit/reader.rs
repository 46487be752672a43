//! Reading the audit topic back (`trustgate audit`): every partition from the beginning (or from
//! `--since`, by timestamp) to its end as it was when the read started, by assignment (no
//! consumer group), filtered, in decision-time order.

use crate::config::KafkaSettings;
use crate::kafka::{client_config, Role};
use crate::policy::hostnames_match;
use crate::se;
use crate::time::{parse_rfc3339, Millis};
use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long a metadata, watermark or offset lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the read may go without a record or a partition end before it gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Which audit records to keep: every filter that is set must hold.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    /// The request's `user`, exactly.
    pub user: Option<String>,
    /// A connector GUID, hostname or MAC address: the device the decision matched, or an
    /// identifier the request gave (hostnames by the hostname rule, both ways).
    pub device: Option<String>,
    /// The request's `application`, exactly.
    pub application: Option<String>,
    /// The response's `decision` (`allow` or `deny`).
    pub decision: Option<String>,
    /// Decided at or after this time (unix ms).
    pub since: Option<i64>,
    /// Decided at or before this time (unix ms).
    pub until: Option<i64>,
}

impl AuditFilter {
    /// Reads an RFC 3339 time for `--since` / `--until`.
    pub fn parse_time(text: &str) -> Result<i64, String> {
        parse_rfc3339(text)
            .ok_or_else(|| format!("{text:?} is not an RFC 3339 time (e.g. 2026-01-14T09:12:00Z)"))
    }

    /// Whether one audit record passes every filter that is set.
    pub fn matches(&self, record: &Value) -> bool {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let same = |want: &Option<String>, got: &Value| {
            want.as_ref().is_none_or(|w| got.as_str() == Some(w))
        };
        let decided = text(&record["response"]["decided_at"])
            .as_deref()
            .and_then(parse_rfc3339);
        let within = |bound: Option<Millis>, ok: fn(Millis, Millis) -> bool| {
            bound.is_none_or(|b| decided.is_some_and(|d| ok(d, b)))
        };
        same(&self.user, &record["request"]["user"])
            && same(&self.application, &record["request"]["application"])
            && same(&self.decision, &record["response"]["decision"])
            && within(self.since, |d, b| d >= b)
            && within(self.until, |d, b| d <= b)
            && self
                .device
                .as_ref()
                .is_none_or(|d| device_matches(d, record))
    }
}

fn device_matches(wanted: &str, record: &Value) -> bool {
    let device = &record["request"]["device"];
    let guids = [
        &record["response"]["device"]["connector_guid"],
        &device["connector_guid"],
    ];
    let by_guid = se::normalize_guid(wanted).is_some_and(|w| {
        guids
            .iter()
            .filter_map(|g| g.as_str().and_then(se::normalize_guid))
            .any(|g| g == w)
    });
    let by_host = se::normalize_hostname(wanted).is_some_and(|w| {
        device["hostname"]
            .as_str()
            .and_then(se::normalize_hostname)
            .is_some_and(|h| hostnames_match(&h, &w))
    });
    let by_mac = se::normalize_mac(wanted).is_some_and(|w| {
        device["mac_addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m.as_str().and_then(se::normalize_mac))
            .any(|m| m == w)
    });
    by_guid || by_host || by_mac
}

/// What a read found.
#[derive(Debug, Default)]
pub struct AuditRead {
    /// The records that passed the filter, in decision-time order (then partition, offset).
    pub records: Vec<Value>,
    /// Records on the topic that were not JSON (not written by trustgate).
    pub unreadable: usize,
}

/// Reads `topic` from its beginning (or from `filter.since`) to its end as of now, keeping the
/// records `filter` passes. Blocking: run it off the async threads.
pub fn read(kafka: &KafkaSettings, topic: &str, filter: &AuditFilter) -> anyhow::Result<AuditRead> {
    let mut config = client_config(kafka, Role::Ingest);
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer = config.create().context("creating the audit reader")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), LOOKUP_TIMEOUT)
        .with_context(|| format!("reading metadata of {topic}"))?;
    let partitions = crate::kafka::partition_ids(&metadata, topic);
    if partitions.is_empty() {
        bail!("audit topic {topic} does not exist (nothing audited yet, or [topics] audit names another topic)");
    }
    // Where each partition starts and ends now: records appended during the read are left for
    // next time.
    let mut ends = HashMap::new();
    let mut next = HashMap::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, LOOKUP_TIMEOUT)
            .with_context(|| format!("reading the end of {topic}/{p}"))?;
        ends.insert(p, high);
        next.insert(p, low);
    }
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        let start = filter.since.map_or(Offset::Beginning, Offset::Offset);
        assignment.add_partition_offset(topic, p, start)?;
    }
    if filter.since.is_some() {
        // Records are stamped with their decision time, so the first record at or after
        // `since` by timestamp is where the read can start.
        assignment = consumer
            .offsets_for_times(assignment, LOOKUP_TIMEOUT)
            .context("seeking to --since")?;
        for element in assignment.elements() {
            let p = element.partition();
            match element.offset() {
                Offset::Offset(o) => next.insert(p, o),
                // No record at or after `since`: nothing to read there.
                _ => next.insert(p, ends[&p]),
            };
        }
    }
    consumer.assign(&assignment)?;

    // A partition is read once the consumer says it reached the end (partition EOF) and the
    // read got at least as far as the end noted above. Neither alone: tansu 0.6 has been seen
    // noting an end short of records already there, and an end-of-partition can come from a
    // fetch that saw an older end.
    let mut open: HashSet<i32> = partitions.iter().copied().collect();
    let mut found: Vec<(i64, i32, i64, Value)> = Vec::new();
    let mut unreadable = 0;
    let mut last_progress = Instant::now();
    while !open.is_empty() {
        let Some(polled) = consumer.poll(Duration::from_millis(200)) else {
            if last_progress.elapsed() > STALL_TIMEOUT {
                bail!(
                    "reading {topic} stalled: partitions {open:?} gave no record or end for {STALL_TIMEOUT:?}"
                );
            }
            continue;
        };
        last_progress = Instant::now();
        match polled {
            Ok(msg) => {
                let p = msg.partition();
                next.insert(p, msg.offset() + 1);
                match msg.payload().map(serde_json::from_slice::<Value>) {
                    Some(Ok(record)) if filter.matches(&record) => {
                        let at = msg.timestamp().to_millis().unwrap_or_default();
                        found.push((at, p, msg.offset(), record));
                    }
                    Some(Ok(_)) => {}
                    _ => unreadable += 1,
                }
            }
            Err(KafkaError::PartitionEOF(p)) => {
                if next.get(&p).copied().unwrap_or(0) >= ends.get(&p).copied().unwrap_or(0) {
                    open.remove(&p);
                }
            }
            Err(e) => bail!("reading {topic}: {e}"),
        }
    }
    found.sort_by_key(|(at, p, offset, _)| (*at, *p, *offset));
    Ok(AuditRead {
        records: found.into_iter().map(|(.., record)| record).collect(),
        unreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(user: &str, app: &str, decision: &str, at: &str) -> Value {
        json!({
            "request": {"request_id": "r", "application": app, "user": user,
                "device": {"trusted": true, "hostname": "FIN-LT-0042.corp.example.com",
                    "mac_addresses": ["22:88:FE:2C:89:5C"]}},
            "response": {"decision": decision, "decided_at": at,
                "device": {"connector_guid": "0d5e4f3a-aaaa"}},
        })
    }

    #[test]
    fn every_set_filter_must_hold() {
        let r = record("alice", "vpn", "deny", "2026-01-14T09:12:00.000Z");
        assert!(AuditFilter::default().matches(&r));
        let f = |edit: fn(&mut AuditFilter)| {
            let mut filter = AuditFilter::default();
            edit(&mut filter);
            filter.matches(&r)
        };
        assert!(f(|f| f.user = Some("alice".into())));
        assert!(!f(|f| f.user = Some("bob".into())));
        assert!(f(|f| f.application = Some("vpn".into())));
        assert!(!f(|f| f.application = Some("wiki".into())));
        assert!(f(|f| f.decision = Some("deny".into())));
        assert!(!f(|f| f.decision = Some("allow".into())));
        let t = |s: &str| Some(AuditFilter::parse_time(s).unwrap());
        let mut filter = AuditFilter {
            since: t("2026-01-14T09:12:00Z"),
            until: t("2026-01-14T10:12:00+01:00"),
            ..Default::default()
        };
        assert!(filter.matches(&r), "both bounds inclusive");
        filter.since = t("2026-01-14T09:12:00.001Z");
        assert!(!filter.matches(&r));
        assert!(AuditFilter::parse_time("yesterday").is_err());
    }

    #[test]
    fn a_device_is_found_by_guid_hostname_or_mac() {
        let r = record("alice", "vpn", "deny", "2026-01-14T09:12:00.000Z");
        let device = |d: &str| {
            AuditFilter {
                device: Some(d.into()),
                ..Default::default()
            }
            .matches(&r)
        };
        assert!(device("0D5E4F3A-AAAA"));
        assert!(
            device("fin-lt-0042"),
            "short name against the request's FQDN"
        );
        assert!(device("22-88-fe-2c-89-5c"));
        assert!(!device("fin-lt-0043"));
        assert!(!device("22-88-fe-2c-89-5d"));
    }
}
