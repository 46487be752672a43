//! `trustgate history`: one device's records in time order, each with the compromise verdict
//! after it, its transition and what a trusted device would have been answered; read from the
//! store and the events topic, or through the running instance that holds the store.

use crate::args::{ConfigArg, EXIT_BAD_INPUT, EXIT_NOT_FOUND};
use crate::inspect::urlencode;
use crate::local::{admin_client, admin_url, reach, Reach};
use anyhow::Context;
use serde_json::Value;
use std::process::ExitCode;
use trustgate::audit::AuditFilter;
use trustgate::config::Settings;
use trustgate::history::{HistoryError, HistoryQuery, HistorySource};
use trustgate::time::format_millis;

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// A connector GUID, MAC address, Windows processor id or hostname (one device).
    pub id: String,
    /// Only records at or after this time (RFC 3339); the state before it still counts.
    #[arg(long, value_parser = AuditFilter::parse_time)]
    pub since: Option<i64>,
    /// Only records at or before this time (RFC 3339).
    #[arg(long, value_parser = AuditFilter::parse_time)]
    pub until: Option<i64>,
    /// Decide under this application's policy (its custom policy, else the global one).
    #[arg(long)]
    pub application: Option<String>,
    /// One JSON object per record (schemas/history-entry.v1.json) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the device's timeline (exit 1 when no device matches, 2 when several do).
pub async fn run(settings: Settings, args: HistoryArgs) -> anyhow::Result<ExitCode> {
    if args.id.trim().is_empty() {
        eprintln!("trustgate: give a connector GUID, MAC address or hostname");
        return Ok(ExitCode::from(EXIT_BAD_INPUT));
    }
    let query = HistoryQuery {
        since: args.since,
        until: args.until,
        application: args.application.clone(),
    };
    let history: Value = match reach(&settings)? {
        Reach::NoStore(missing) => {
            eprintln!("trustgate: {missing}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
        Reach::Store(store) => {
            let source = HistorySource::new(&settings);
            let id = args.id.clone();
            let read =
                tokio::task::spawn_blocking(move || source.device_history(&store, &id, &query))
                    .await?;
            match read {
                Ok(found) => found.to_json(),
                Err(e @ HistoryError::NotFound(_)) => {
                    eprintln!("trustgate: {e}");
                    return Ok(ExitCode::from(EXIT_NOT_FOUND));
                }
                Err(e @ HistoryError::Ambiguous { .. }) => {
                    eprintln!("trustgate: {e}");
                    return Ok(ExitCode::from(EXIT_BAD_INPUT));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Reach::Instance => {
            let mut path = format!("/v1/devices/{}/history", urlencode(&args.id));
            let params: Vec<String> = [
                ("since", args.since.map(format_millis)),
                ("until", args.until.map(format_millis)),
                ("application", args.application.clone()),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={}", urlencode(&v))))
            .collect();
            if !params.is_empty() {
                path = format!("{path}?{}", params.join("&"));
            }
            let resp = admin_client(&settings)?
                .get(admin_url(&settings, &path))
                .send()
                .await
                .context("the store is in use; asking the running instance's admin listener")?;
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or_default();
            let said = body["error"].as_str().unwrap_or("unknown").to_owned();
            match status {
                reqwest::StatusCode::NOT_FOUND => {
                    eprintln!("trustgate: {said}");
                    return Ok(ExitCode::from(EXIT_NOT_FOUND));
                }
                reqwest::StatusCode::CONFLICT => {
                    eprintln!("trustgate: {said}");
                    return Ok(ExitCode::from(EXIT_BAD_INPUT));
                }
                s if s.is_success() => body,
                s => anyhow::bail!("admin listener answered {s}: {said}"),
            }
        }
    };
    let entries = history["entries"].as_array().cloned().unwrap_or_default();
    if args.json {
        for entry in &entries {
            println!("{entry}");
        }
    } else {
        println!(
            "Device {} (decisions under policy {}):",
            history["connector_guid"].as_str().unwrap_or("-"),
            history["policy"].as_str().unwrap_or("-")
        );
        print_table(&entries);
    }
    notes(&history);
    Ok(ExitCode::SUCCESS)
}

/// What the timeline does not cover, on stderr (it is not part of the output's shape).
fn notes(history: &Value) {
    let count = |field: &str| history[field].as_u64().unwrap_or(0);
    if count("records_missing") > 0 {
        eprintln!(
            "trustgate: {} of the device's records are no longer on the events topic (retention or compaction); the timeline lacks them",
            count("records_missing")
        );
    }
    if count("records_skipped") > 0 {
        eprintln!(
            "trustgate: {} indexed record(s) no longer hold this device's data (the events topic was changed under the store) and were left out",
            count("records_skipped")
        );
    }
    if history["references_capped"] == true {
        eprintln!(
            "trustgate: the device reached the bound on indexed records ({}); its oldest records are not in the timeline",
            trustgate::store::MAX_REFS_PER_DEVICE
        );
    }
}

fn print_table(entries: &[Value]) {
    let header = [
        "TIME",
        "KIND",
        "RECORD",
        "COMPROMISED",
        "TRANSITION",
        "DECISION",
        "REASON",
    ]
    .map(String::from);
    let rows: Vec<[String; 7]> = entries.iter().map(row).collect();
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

fn row(entry: &Value) -> [String; 7] {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let record = if entry["kind"] == "event" {
        let mut what = format!(
            "{} ({})",
            entry["event_type"].as_str().unwrap_or("event"),
            entry["event_type_id"]
        );
        if let Some(detection) = entry["detection"].as_str() {
            what.push_str(&format!(" {detection}"));
        }
        if let Some(id) = entry["detection_id"].as_str() {
            what.push_str(&format!(" detection_id={id}"));
        }
        what
    } else {
        format!(
            "is_compromised={} observed_at={}",
            entry["is_compromised"],
            text(&entry["observed_at"])
        )
    };
    [
        text(&entry["time"]),
        text(&entry["kind"]),
        record,
        entry["compromised"].to_string(),
        entry["transition"].as_str().unwrap_or("").to_owned(),
        text(&entry["decision"]),
        text(&entry["reason"]),
    ]
}
