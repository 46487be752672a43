//! `trustgate bench --json` runs end to end against a running worker with a tiny load and
//! prints the report's keys. This checks the tool's shape, never its speed.

use crate::common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEYS: [&str; 14] = [
    "p50_us",
    "p99_us",
    "p999_us",
    "throughput_rps",
    "floor_p50_us",
    "floor_p99_us",
    "floor_p999_us",
    "floor_throughput_rps",
    "p50_ratio",
    "p99_ratio",
    "p999_ratio",
    "throughput_ratio",
    "rate",
    "duration_s",
];

#[tokio::test(flavor = "multi_thread")]
async fn bench_json_reports_worker_and_floor_figures() {
    let inst = Instance::new("bench");
    create_topic(&inst.events, 1).await;
    let mut worker = inst.spawn();
    inst.wait_ready(&mut worker).await;

    let mut bench = Command::new(binary())
        .args(["bench", "--json", "--rate", "50", "--duration", "1"])
        .args([
            "--window",
            "20",
            "--max-requests",
            "100",
            "--ingest-records",
            "200",
        ])
        .arg("--config")
        .arg(inst.config_path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning trustgate bench");
    let deadline = Instant::now() + Duration::from_secs(180);
    while bench.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = bench.kill();
            panic!("trustgate bench did not finish within 180 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = bench.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed: {stderr}\nworker:\n{}",
        inst.log()
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stderr}"));
    for key in KEYS {
        assert!(report[key].is_number(), "{key} missing in {report}");
    }
    // Every request of the tiny load was answered, by the worker and by the echo floor.
    for phase in ["worker_fixed", "floor_fixed", "worker_max", "floor_max"] {
        let p = &report["phases"][phase];
        assert!(p["received"].as_u64() > Some(0), "{phase}: {p}");
        assert_eq!(p["lost"], 0, "{phase}: {p}");
    }
    assert_eq!(report["ingest"]["records"], 200, "{report}");
    assert!(report["ingest"]["ingest_rps"].is_number(), "{report}");
    assert_eq!(
        report["webhook"],
        "not measured: the bench sends no webhook deliveries; webhook latency is measured by \
         `cargo test --test e2e webhook_latency -- --ignored --nocapture`",
        "the report says where webhook latency is measured"
    );
    assert!(stop(&mut worker).success());
}
