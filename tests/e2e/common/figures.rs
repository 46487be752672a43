//! The figures a reliability test measured (issue #14), for RELIABILITY.md's table.
//!
//! Always printed on stderr (`--nocapture` shows them); appended as one JSON line to the file
//! named by `TRUSTGATE_RELIABILITY_RESULTS` when it is set, which the scripts under `scripts/`
//! point at `reliability/results.jsonl`. A plain `cargo test` writes no file.

use std::io::Write;

/// Reports `fields` (a JSON object of figures) for the catalog row (`suite`, `test`).
pub fn record(suite: &str, test: &str, fields: serde_json::Value) {
    let mut line = serde_json::json!({
        "suite": suite,
        "test": test,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "commit": std::env::var("TRUSTGATE_RELIABILITY_COMMIT").ok(),
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    if let (Some(line), serde_json::Value::Object(fields)) = (line.as_object_mut(), fields) {
        line.extend(fields);
    }
    eprintln!("reliability figures: {line}");
    let Ok(path) = std::env::var("TRUSTGATE_RELIABILITY_RESULTS") else {
        return;
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    writeln!(file, "{line}").unwrap_or_else(|e| panic!("{path}: {e}"));
}

/// Seconds, to a tenth, for a figure.
pub fn secs(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}
