//! Issue #12 items 4 and 5: every decision (Kafka, HTTP, CLI) is written to the audit topic,
//! keyed by device, with the request, response, policy, device state and source; report-only
//! allows and records the would-be deny; `trustgate audit` reads it back, filtered.

use crate::common::*;
use rdkafka::Message;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use trustgate::time::{format_millis, now_millis};

const MINUTE: i64 = 60_000;

/// `trustgate audit --json` with `filters`: the request ids it printed, in order.
fn audit_ids(inst: &Instance, filters: &[&str]) -> Vec<String> {
    let args: Vec<&str> = ["audit", "--json"].iter().chain(filters).copied().collect();
    let out = run_cli(inst, &args, "");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{filters:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            record["response"]["request_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_decision_is_audited_and_read_back_filtered() {
    let mut inst = Instance::new("audit");
    inst.extra_config = "[[policy.custom]]\nname = \"wiki-rollout\"\napplications = [\"wiki\"]\n\
                         mode = \"report_only\"\n"
        .into();
    create_topic(&inst.events, 1).await;
    let producer = producer();
    let now = now_millis();
    // A device observed clean 10 minutes ago, then detected: compromised by detection 777.
    publish(
        &producer,
        &inst.events,
        &clean_computer_record("audit-bad", now - 10 * MINUTE),
    )
    .await;
    let detection = format!(
        r#"{{"id":777,"event_type_id":1090519054,"event_type":"Threat Detected","detection_id":"777","date":"{}","computer":{{"connector_guid":"audit-bad","hostname":"fin-lt-0042"}}}}"#,
        format_millis(now - MINUTE)
    );
    publish(
        &producer,
        &inst.events,
        &Out::new(detection).key("audit-bad").at(now - MINUTE),
    )
    .await;
    publish(
        &producer,
        &inst.events,
        &clean_computer_record("audit-good", now - MINUTE),
    )
    .await;
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;

    let request = |id: &str, app: &str, user: &str, mut device: Value| {
        device["trusted"] = json!(true);
        json!({"request_id": id, "application": app, "user": user, "device": device})
    };
    let sent: Vec<(Value, &str)> = vec![
        (
            request(
                "k-deny",
                "vpn",
                "alice",
                json!({"connector_guid": "AUDIT-BAD"}),
            ),
            "kafka",
        ),
        (
            request(
                "k-allow",
                "vpn",
                "bob",
                json!({"connector_guid": "audit-good"}),
            ),
            "kafka",
        ),
        (
            request(
                "h-report",
                "wiki",
                "alice",
                json!({"hostname": "fin-lt-0042"}),
            ),
            "http",
        ),
        (
            request("h-unknown", "vpn", "carol", json!({"hostname": "nobody"})),
            "http",
        ),
        (
            request(
                "c-deny",
                "vpn",
                "dave",
                json!({"connector_guid": "audit-bad"}),
            ),
            "cli",
        ),
    ];

    for (req, source) in &sent {
        match *source {
            "kafka" => {
                publish(&producer, &inst.requests, &Out::new(req.to_string())).await;
            }
            "http" => {
                let r = reqwest::Client::new()
                    .post(inst.admin("/v1/decide"))
                    .body(req.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let body: Value = r.json().await.unwrap();
                if req["request_id"] == "h-report" {
                    // Report-only: allowed, with what enforcement would have answered.
                    assert_eq!(
                        (&body["decision"], &body["reason"]),
                        (&json!("allow"), &json!("report_only")),
                        "{body}"
                    );
                    assert_eq!(body["would_decide"], "deny", "{body}");
                    assert_eq!(body["would_reason"], "compromised", "{body}");
                }
            }
            _ => {
                // Through the running instance (it holds the store): audited as `cli`.
                let out = run_cli(&inst, &["decide"], &req.to_string());
                assert_eq!(
                    out.status.code(),
                    Some(0),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    let replies = read_topic(&inst.responses, 2, Duration::from_secs(30));
    assert_eq!(replies.len(), 2, "{}", inst.log());

    let records = read_topic(&inst.audit, sent.len(), Duration::from_secs(30));
    assert_eq!(
        records.len(),
        sent.len(),
        "one record per decision\n{}",
        inst.log()
    );
    let by_id: HashMap<String, (Option<String>, Value)> = records
        .iter()
        .map(|m| {
            let value: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            (
                value["response"]["request_id"].as_str().unwrap().to_owned(),
                (key, value),
            )
        })
        .collect();
    for (req, source) in &sent {
        let id = req["request_id"].as_str().unwrap();
        let (key, record) = by_id.get(id).unwrap_or_else(|| panic!("{id} not audited"));
        assert_eq!(record["request"], *req, "{id}: the request as received");
        assert_eq!(record["source"], *source, "{id}");
        let (expected_key, decision, reason, policy) = match id {
            "k-deny" | "c-deny" => ("audit-bad", "deny", "compromised", "global"),
            "k-allow" => ("audit-good", "allow", "trusted_not_compromised", "global"),
            "h-report" => ("audit-bad", "allow", "report_only", "wiki-rollout"),
            _ => ("h-unknown", "allow", "not_in_secure_endpoint", "global"),
        };
        assert_eq!(key.as_deref(), Some(expected_key), "{id}: keyed by device");
        assert_eq!(
            (
                record["response"]["decision"].as_str(),
                record["response"]["reason"].as_str()
            ),
            (Some(decision), Some(reason)),
            "{id}: {record}"
        );
        assert_eq!(record["policy"]["name"], policy, "{id}");
        let state = &record["state"];
        match expected_key {
            "audit-bad" => {
                assert_eq!(state["compromised"], true, "{id}: {state}");
                assert_eq!(state["detection_ids"], json!(["777"]), "{id}");
                assert_eq!(
                    state["observed_at"],
                    format_millis(now - 10 * MINUTE),
                    "{id}"
                );
            }
            "audit-good" => {
                assert_eq!(state["compromised"], false, "{id}");
                assert_eq!(state["detection_ids"], json!([]), "{id}");
                assert_eq!(state["observed_at"], format_millis(now - MINUTE), "{id}");
            }
            _ => assert_eq!(
                *state,
                json!({"compromised": null, "observed_at": null, "detection_ids": []}),
                "{id}"
            ),
        }
    }
    let report = &by_id["h-report"].1;
    assert_eq!(report["response"]["would_decide"], "deny");
    assert_eq!(report["response"]["would_reason"], "compromised");
    assert_eq!(report["policy"]["mode"], "report_only");

    // Read back through the CLI, with the filters.
    let mut denies = audit_ids(&inst, &["--decision", "deny"]);
    denies.sort();
    assert_eq!(denies, ["c-deny", "k-deny"], "report-only allowed h-report");
    assert_eq!(
        audit_ids(&inst, &["--user", "alice", "--application", "wiki"]),
        ["h-report"]
    );
    let mut bad = audit_ids(&inst, &["--device", "fin-lt-0042"]);
    bad.sort();
    assert_eq!(bad, ["h-report"], "by the hostname the request gave");
    let mut bad = audit_ids(&inst, &["--device", "AUDIT-BAD"]);
    bad.sort();
    assert_eq!(
        bad,
        ["c-deny", "h-report", "k-deny"],
        "by the matched device"
    );
    assert_eq!(audit_ids(&inst, &[]).len(), sent.len());
    let future = format_millis(now_millis() + 60 * MINUTE);
    assert!(audit_ids(&inst, &["--since", &future]).is_empty());
    let past = format_millis(now - 60 * MINUTE);
    assert!(audit_ids(&inst, &["--until", &past]).is_empty());
    assert_eq!(audit_ids(&inst, &["--since", &past]).len(), sent.len());

    let table = run_cli(&inst, &["audit", "--decision", "deny"], "");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("DECIDED_AT"), "{text}");
    assert_eq!(text.lines().count(), 3, "header and two denies:\n{text}");
    assert!(text.contains("777"), "the detection id is shown:\n{text}");

    assert!(stop(&mut child).success());

    // With no instance running, `decide` answers from the store and writes the record itself.
    let offline = request(
        "c-offline",
        "vpn",
        "erin",
        json!({"connector_guid": "audit-bad"}),
    );
    let out = run_cli(&inst, &["decide"], &offline.to_string());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["reason"], "compromised", "{answer}");
    let out = run_cli(&inst, &["audit", "--json", "--user", "erin"], "");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["source"], "cli");
    assert_eq!(lines[0]["request"], offline);
    assert_eq!(lines[0]["state"]["detection_ids"], json!(["777"]));
}
