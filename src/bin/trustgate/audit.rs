//! `trustgate audit`: the decision audit read back, filtered, as a table or JSON lines.

use crate::args::ConfigArg;
use clap::ValueEnum;
use serde_json::Value;
use std::process::ExitCode;
use trustgate::audit::{self, AuditFilter};
use trustgate::config::Settings;

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only requests for this user.
    #[arg(long)]
    pub user: Option<String>,
    /// Only decisions about this device: a connector GUID, hostname or MAC address.
    #[arg(long)]
    pub device: Option<String>,
    /// Only requests for this application.
    #[arg(long)]
    pub application: Option<String>,
    /// Only decisions that answered this (`deny` or `allow`).
    #[arg(long, value_enum)]
    pub decision: Option<DecisionArg>,
    /// Only decisions made at or after this time (RFC 3339).
    #[arg(long, value_parser = AuditFilter::parse_time)]
    pub since: Option<i64>,
    /// Only decisions made at or before this time (RFC 3339).
    #[arg(long, value_parser = AuditFilter::parse_time)]
    pub until: Option<i64>,
    /// One audit record (JSON) per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DecisionArg {
    Allow,
    Deny,
}

/// Reads the audit topic from its beginning to its end and prints what passes the filters.
pub async fn run(settings: Settings, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let filter = AuditFilter {
        user: args.user,
        device: args.device,
        application: args.application,
        decision: args.decision.map(|d| match d {
            DecisionArg::Allow => "allow".to_owned(),
            DecisionArg::Deny => "deny".to_owned(),
        }),
        since: args.since,
        until: args.until,
    };
    let topic = settings.topics.audit.clone();
    let kafka = settings.kafka.clone();
    let read = tokio::task::spawn_blocking(move || audit::read(&kafka, &topic, &filter)).await??;
    if read.unreadable > 0 {
        eprintln!(
            "trustgate: {} record(s) on {} were not JSON and were skipped",
            read.unreadable, settings.topics.audit
        );
    }
    if args.json {
        for record in &read.records {
            println!("{record}");
        }
    } else {
        print_table(&read.records);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(records: &[Value]) {
    let rows: Vec<[String; 10]> = records.iter().map(row).collect();
    let header = [
        "DECIDED_AT",
        "SOURCE",
        "REQUEST_ID",
        "USER",
        "APPLICATION",
        "DEVICE",
        "DECISION",
        "REASON",
        "POLICY",
        "DETECTIONS",
    ]
    .map(String::from);
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

fn row(record: &Value) -> [String; 10] {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let (request, response) = (&record["request"], &record["response"]);
    let device = response["device"]["connector_guid"]
        .as_str()
        .or(request["device"]["hostname"].as_str())
        .unwrap_or("-")
        .to_owned();
    // Report-only: what was answered, and what enforcement would have answered.
    let (decision, reason) = match response["would_decide"].as_str() {
        Some(would) => (
            format!("{} (would {would})", text(&response["decision"])),
            format!(
                "{} (would {})",
                text(&response["reason"]),
                text(&response["would_reason"])
            ),
        ),
        None => (text(&response["decision"]), text(&response["reason"])),
    };
    let detections: Vec<&str> = record["state"]["detection_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    [
        text(&response["decided_at"]),
        text(&record["source"]),
        text(&response["request_id"]),
        text(&request["user"]),
        text(&request["application"]),
        device,
        decision,
        reason,
        text(&record["policy"]["name"]),
        if detections.is_empty() {
            "-".to_owned()
        } else {
            detections.join(",")
        },
    ]
}
