//! The decision audit: every decision (Kafka, HTTP, CLI) also written to the audit topic
//! (`[topics] audit`, default `trustgate.decisions`), and read back by `trustgate audit`.
//!
//! Owns the audit record's shape (`record.rs`, `schemas/audit-record.v1.json`), the writer
//! (`writer.rs`: an [`AuditSink`] the decision paths hand records to without waiting, and the
//! [`AuditWriter`] task that produces them) and the reader with its filters (`reader.rs`).
//!
//! Writing the audit never delays or fails a decision: a full queue or a failed delivery is
//! counted (`trustgate_audit_failures_total`) and logged, and the decision is answered anyway.

mod reader;
mod record;
mod writer;

pub use reader::{read, AuditFilter, AuditRead};
pub use record::{audit_record, AuditSource};
pub use writer::{channel, AuditSink, AuditSummary, AuditWriter};

/// Logs, at start, each policy that is `report_only`: its decisions never deny, which an
/// operator must not find out from a breach.
pub fn warn_report_only(policies: &crate::policy::Policies) {
    let names: std::collections::BTreeSet<&str> = policies
        .iter()
        .filter(|p| p.mode == crate::policy::PolicyMode::ReportOnly)
        .map(|p| &*p.name)
        .collect();
    for name in names {
        tracing::warn!(policy = %name,
            "Policy is report_only: its decisions are all allow; what enforcement would answer is only recorded.");
    }
}
