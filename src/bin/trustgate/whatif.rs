//! `trustgate what-if`: the audited requests of a period replayed against a candidate policy
//! set, each decided on its device's state as it was at its time (`Decider::decide_as_of` with
//! the device's records read back from the events topic, once per device), compared with what
//! was answered (`trustgate::whatif`), as a summary or one JSON object.
//!
//! The replay reads the store (to find each request's devices and where their records are):
//! on a store no instance holds it runs here (`trustgate::whatif::WhatIfContext::run`), else
//! the running instance runs the same replay (`POST /v1/admin/what-if`) and this prints its
//! report.

use crate::args::{ConfigArg, EXIT_BAD_INPUT};
use crate::local::{admin_client, admin_url, reach, Reach};
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use trustgate::admin::{HEADER_DEVICES, HEADER_MISSING, HEADER_UNREADABLE_AUDIT};
use trustgate::audit::AuditFilter;
use trustgate::config::Settings;
use trustgate::history::HistorySource;
use trustgate::time::format_millis;
use trustgate::whatif::{Answered, ReplayStats, WhatIfContext, WhatIfReport, DEFAULT_EXAMPLES};

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
    // Validated here in both cases: a typo is reported as the local file's, before any request.
    let name = args.policy.display().to_string();
    let read = std::fs::read_to_string(&args.policy)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            trustgate::config::policies_from_str(&text, &name)
                .map(|policies| (text, policies))
                .map_err(|e| e.to_string())
        });
    let (text, candidate) = match read {
        Ok(read) => read,
        Err(e) => {
            eprintln!("trustgate: candidate policy {name}: {e}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let store = match reach(&settings)? {
        Reach::Store(store) => store,
        Reach::NoStore(missing) => {
            eprintln!("trustgate: {missing}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
        Reach::Instance => return ask_instance(&settings, &args, text).await,
    };
    let context = WhatIfContext::new(&settings);
    let source = HistorySource::new(&settings);
    let (since, until, examples) = (args.since, args.until, args.examples);
    let (report, stats) = tokio::task::spawn_blocking(move || {
        context.run(&store, candidate, &source, since, until, examples)
    })
    .await??;
    finish(&settings, &args, &report, stats);
    Ok(ExitCode::SUCCESS)
}

/// Asks the running instance (`POST /v1/admin/what-if`) with the candidate's text.
async fn ask_instance(
    settings: &Settings,
    args: &WhatIfArgs,
    text: String,
) -> anyhow::Result<ExitCode> {
    let mut body = serde_json::json!({ "policy": text, "examples": args.examples });
    if let Some(since) = args.since {
        body["since"] = format_millis(since).into();
    }
    if let Some(until) = args.until {
        body["until"] = format_millis(until).into();
    }
    let url = admin_url(settings, "/v1/admin/what-if");
    let response = admin_client(settings)?
        .post(&url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("asking the running instance at {url}"))?;
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let stats = ReplayStats {
        devices: header(HEADER_DEVICES),
        missing: header(HEADER_MISSING),
        unreadable_audit: header(HEADER_UNREADABLE_AUDIT),
    };
    let value: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("reading {url}'s answer ({status})"))?;
    if !status.is_success() {
        let message = value["error"].as_str().unwrap_or("no error message");
        eprintln!("trustgate: the running instance answered {status}: {message}");
        return Ok(if status.is_client_error() {
            ExitCode::from(EXIT_BAD_INPUT)
        } else {
            ExitCode::FAILURE
        });
    }
    let report = WhatIfReport::from_json(&value)
        .ok_or_else(|| anyhow::anyhow!("{url} answered something that is not a what-if report"))?;
    finish(settings, args, &report, stats);
    Ok(ExitCode::SUCCESS)
}

/// The warnings on stderr, then the summary or the JSON object on stdout.
fn finish(settings: &Settings, args: &WhatIfArgs, report: &WhatIfReport, stats: ReplayStats) {
    if stats.unreadable_audit > 0 {
        eprintln!(
            "trustgate: {} record(s) on {} were not JSON and were skipped",
            stats.unreadable_audit, settings.topics.audit
        );
    }
    if stats.missing > 0 {
        eprintln!(
            "trustgate: {} of the devices' records are no longer on the events topic (retention or compaction); their states then lack them",
            stats.missing
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
        print_summary(report, stats.devices);
    }
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
