//! `trustgate what-if`: the audited requests of a period replayed against a candidate policy
//! set, each decided on its device's state as it was at its time (`Decider::decide_as_of` with
//! the device's records read back from the events topic, once per device), compared with what
//! was answered (`trustgate::whatif`), as a summary or one JSON object.
//!
//! Reads the store itself (to find each request's devices and where their records are): a
//! store a running instance holds is refused, as `replay` refuses it.

use crate::args::{ConfigArg, EXIT_BAD_INPUT};
use crate::local::{reach, Reach};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use trustgate::audit::{self, AuditFilter};
use trustgate::config::Settings;
use trustgate::decision::{Answer, Decider};
use trustgate::history::{HistorySource, PastDirectory, PastRecords};
use trustgate::ingest::IngestStatus;
use trustgate::liveness::LivenessClock;
use trustgate::time::format_millis;
use trustgate::whatif::{Answered, Audited, Replayed, WhatIfReport, DEFAULT_EXAMPLES};

#[derive(clap::Args, Debug)]
pub struct WhatIfArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The candidate policy set: a TOML file with a `[policy]` table shaped like the
    /// configuration's (global and `[[policy.custom]]`), validated as the live one is.
    #[arg(long)]
    pub policy: PathBuf,
    /// Only requests decided at or after this time (RFC 3339).
    #[arg(long, value_parser = AuditFilter::parse_time)]
    pub since: Option<i64>,
    /// Only requests decided at or before this time (RFC 3339).
    #[arg(long, value_parser = AuditFilter::parse_time)]
    pub until: Option<i64>,
    /// One JSON object (schemas/what-if.v1.json) instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// How many changed requests to show in full.
    #[arg(long, default_value_t = DEFAULT_EXAMPLES)]
    pub examples: usize,
}

/// Replays the period's audited requests against the candidate and prints what would change.
pub async fn run(settings: Settings, args: WhatIfArgs) -> anyhow::Result<ExitCode> {
    let candidate = match trustgate::config::load_policies(&args.policy) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("trustgate: candidate policy: {e}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let store = match reach(&settings)? {
        Reach::Store(store) => store,
        Reach::NoStore(missing) => {
            eprintln!("trustgate: {missing}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
        Reach::Instance => {
            eprintln!(
                "trustgate: the store at {} is in use by a running trustgate instance; what-if reads the store itself: run it while the instance is stopped, or on a second store kept for investigations",
                settings.store.path.display()
            );
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let filter = AuditFilter {
        since: args.since,
        until: args.until,
        ..Default::default()
    };
    let (kafka, topic) = (settings.kafka.clone(), settings.topics.audit.clone());
    let read = tokio::task::spawn_blocking(move || audit::read(&kafka, &topic, &filter)).await??;
    if read.unreadable > 0 {
        eprintln!(
            "trustgate: {} record(s) on {} were not JSON and were skipped",
            read.unreadable, settings.topics.audit
        );
    }
    let liveness = LivenessClock::starting_at(store.newest_liveness()?);
    let decider = Decider::new(
        Arc::new(candidate),
        store.clone(),
        settings.fold.grace_millis(),
        liveness,
        IngestStatus::offline(),
    );
    let source = HistorySource::new(&settings);
    let examples = args.examples;
    let (report, cache) = tokio::task::spawn_blocking(move || {
        let mut cache = PastRecords::default();
        let mut skipped = 0;
        let mut replayed = Vec::with_capacity(read.records.len());
        for record in &read.records {
            let Some(audited) = Audited::from_record(record) else {
                skipped += 1;
                continue;
            };
            let mut unreadable = None;
            let answer = decider.decide_as_of(&audited.request, Ok(audited.at), |req| {
                let past =
                    source.past_directory_cached(&store, &req.subject, audited.at, &mut cache);
                if let PastDirectory::Unavailable(e) = &past {
                    unreadable = Some(e.clone());
                }
                past
            });
            // The candidate would answer `store_unavailable`: a count of changes that includes
            // records we could not read would be a wrong answer, not a partial one.
            if let Some(e) = unreadable {
                anyhow::bail!(
                    "reading the records of request {}'s devices from the events topic: {e}",
                    audited.request_id
                );
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
        anyhow::Ok((report, cache))
    })
    .await??;
    if cache.missing > 0 {
        eprintln!(
            "trustgate: {} of the devices' records are no longer on the events topic (retention or compaction); their states then lack them",
            cache.missing
        );
    }
    if report.skipped > 0 {
        eprintln!(
            "trustgate: {} audit record(s) could not be replayed (no request object or id) and were skipped",
            report.skipped
        );
    }
    if args.json {
        println!("{}", report.to_json());
    } else {
        print_summary(&report, cache.devices());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(report: &WhatIfReport, devices: usize) {
    println!(
        "{} audited request(s) replayed ({devices} device(s) read back); {} decision(s) would change.",
        report.requests, report.changed
    );
    let counts = |title: &str, map: &BTreeMap<String, usize>| {
        if map.is_empty() {
            return;
        }
        let mut rows: Vec<(&String, &usize)> = map.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        println!("\nBy {title}:");
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (k, n) in rows {
            println!("  {k:<width$}  {n}");
        }
    };
    counts("application", &report.by_application);
    counts("user", &report.by_user);
    counts("reason (the candidate's)", &report.by_reason);
    if report.examples.is_empty() {
        return;
    }
    println!("\nChanged requests (first {}):", report.examples.len());
    let answer = |a: &Answered| match (&a.would_decide, &a.would_reason) {
        (Some(d), Some(r)) => format!("{} {} (would {d} {r})", a.decision, a.reason),
        _ => format!("{} {}", a.decision, a.reason),
    };
    let header = ["AT", "REQUEST_ID", "USER", "APPLICATION", "BEFORE", "AFTER"].map(String::from);
    let rows: Vec<[String; 6]> = report
        .examples
        .iter()
        .map(|e| {
            [
                format_millis(e.at),
                e.request_id.clone(),
                e.user.clone().unwrap_or_else(|| "-".into()),
                e.application.clone(),
                answer(&e.before),
                answer(&e.after),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
