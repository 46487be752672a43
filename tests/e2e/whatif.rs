//! (#12 item 6) `trustgate what-if`: the audited requests of a period replayed against a
//! candidate policy set, each on its device's state at its time; the counts of changed
//! decisions checked exactly on a known history, and `--json` against its schema. Asked while
//! the instance runs (it holds the store: `POST /v1/admin/what-if`, behind the admin token),
//! then offline on the same store: the same reports.

use crate::common::*;
use serde_json::{json, Value};
use std::time::Duration;
use trustgate::time::{format_millis, now_millis};

const MINUTE: i64 = 60_000;
const BAD: &str = "5c2e8f1a-whatif-bad-4b8e-9d1a5c7b8e9f";
const BAD_HOST: &str = "fin-lt-whatif";
const GOOD: &str = "6d3f9a2b-whatif-good-4b8e-9d1a5c7b8e9f";
const TOKEN: &str = "e2e-whatif-token-7a2f";

/// Writes a candidate policy file beside the instance's configuration.
fn candidate(inst: &Instance, name: &str, toml: &str) -> String {
    let path = inst.dir.path().join(name);
    std::fs::write(&path, toml).unwrap();
    path.display().to_string()
}

/// `trustgate what-if --json` with `args`: its one object, validated against the schema.
fn what_if(inst: &Instance, args: &[&str]) -> Value {
    let all: Vec<&str> = ["what-if", "--json"].iter().chain(args).copied().collect();
    let out = run_cli(inst, &all, "");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one object: {text}");
    valid(serde_json::from_str(&text).unwrap())
}

/// `report`, once validated against schemas/what-if.v1.json.
fn valid(report: Value) -> Value {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/schemas/what-if.v1.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&report)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{report}\n{errors:#?}");
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn what_if_counts_changed_decisions_exactly_on_a_known_history() {
    let mut inst = Instance::new("whatif");
    // The finance applications are rolled out report-only; everything else is enforced.
    // The CLI reads the token from the configuration (extra lines start in `[admin]`).
    inst.extra_config = format!("token = \"{TOKEN}\"\n")
        + "[[policy.custom]]\nname = \"finance\"\napplications = [\"ledger\", \"payroll\"]\n\
                         mode = \"report_only\"\n";
    create_topic(&inst.events, 1).await;
    let producer = producer();
    let base = now_millis() - 3 * 60 * MINUTE;
    let t = |minutes: i64| base + minutes * MINUTE;
    // BAD: observed clean at t(0), a detection at t(10) (compromised since, never resolved).
    // GOOD: observed clean at t(0).
    let computer = |guid: &str, host: &str| {
        Out::new(format!(
            r#"{{"connector_guid":"{guid}","hostname":"{host}","operating_system":"Windows 11","is_compromised":false}}"#
        ))
        .key(guid)
        .header(trustgate::topic::HEADER_KIND, "computer")
        .header(trustgate::topic::HEADER_OBSERVED_AT, format_millis(t(0)))
        .at(t(0))
    };
    publish(&producer, &inst.events, &computer(BAD, BAD_HOST)).await;
    publish(&producer, &inst.events, &computer(GOOD, "ws-good")).await;
    let detection = format!(
        r#"{{"id":4242,"event_type_id":1090519054,"event_type":"Threat Detected","detection_id":"4242","date":"{}","connector_guid":"{BAD}"}}"#,
        format_millis(t(10))
    );
    publish(
        &producer,
        &inst.events,
        &Out::new(detection)
            .key(BAD)
            .header(trustgate::topic::HEADER_KIND, "event")
            .at(t(10)),
    )
    .await;
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;

    let request = |id: &str, app: &str, user: &str, device: Value| json!({"request_id": id, "application": app, "user": user, "device": device});
    let bad = || json!({"trusted": true, "hostname": BAD_HOST});
    let good = || json!({"trusted": true, "connector_guid": GOOD});
    let decide_http = |body: Value| {
        let url = inst.admin("/v1/decide");
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(TOKEN)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    // First batch, over HTTP at past times (the audit records carry `as_of`): the finance
    // app before and during the compromise, vpn on the good device.
    let at = |mut body: Value, when: i64| {
        body["at"] = json!(format_millis(when));
        body
    };
    let before = decide_http(at(request("l-before", "ledger", "alice", bad()), t(5))).await;
    assert_eq!(before["would_decide"], "allow", "{before}");
    let during = decide_http(at(request("l-during", "ledger", "alice", bad()), t(20))).await;
    assert_eq!(during["would_decide"], "deny", "{during}");
    let v_good = decide_http(at(request("v-good", "vpn", "carol", good()), t(20))).await;
    assert_eq!(v_good["reason"], "trusted_not_compromised", "{v_good}");
    std::thread::sleep(Duration::from_millis(20));
    let mid = now_millis();
    std::thread::sleep(Duration::from_millis(20));
    // Second batch, on the requests topic, decided on the state now.
    let second = [
        request("l-now", "payroll", "bob", bad()),
        request("l-good", "ledger", "bob", good()),
        request("v-bad", "vpn", "carol", bad()),
        request(
            "v-untrusted",
            "vpn",
            "dave",
            json!({"trusted": false, "connector_guid": GOOD}),
        ),
    ];
    for body in &second {
        publish(&producer, &inst.requests, &Out::new(body.to_string())).await;
    }
    let replies = read_topic(&inst.responses, second.len(), Duration::from_secs(30));
    assert_eq!(replies.len(), second.len(), "{}", inst.log());
    let audited = read_topic(&inst.audit, 3 + second.len(), Duration::from_secs(30));
    assert_eq!(audited.len(), 3 + second.len(), "{}", inst.log());

    let finance_on_text =
        "[[policy.custom]]\nname = \"finance\"\napplications = [\"ledger\", \"payroll\"]\n\
         mode = \"enforce\"\n";
    let finance_on = candidate(&inst, "finance-on.toml", finance_on_text);
    // The route: behind the token, and a candidate that is not a policy set is a 400 in JSON.
    let route = |token: Option<&str>, body: Value| {
        let url = inst.admin("/v1/admin/what-if");
        let token = token.map(str::to_owned);
        async move {
            let mut request = reqwest::Client::new().post(url).body(body.to_string());
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let r = request.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (code, _) = route(None, json!({"policy": finance_on_text})).await;
    assert_eq!(code, 401, "without the token");
    let (code, body) = route(
        Some(TOKEN),
        json!({"policy": "[kafka]\nbrokers = \"x:1\"\n"}),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (code, body) = route(
        Some(TOKEN),
        json!({"policy": finance_on_text, "since": "yesterday"}),
    )
    .await;
    assert_eq!((code, body["error"].is_string()), (400, true), "{body}");
    let (code, online) = route(Some(TOKEN), json!({"policy": finance_on_text})).await;
    assert_eq!(code, 200, "{online}");
    let online = valid(online);

    // Everything below asks the running instance (`trustgate what-if` reaches it as `decide`
    // does), which answers the route's object. Enforcing the finance rollout: exactly the
    // requests recorded `would_decide: deny` change, the one before the compromise (at its
    // `as_of`) does not.
    let report = what_if(&inst, &["--policy", &finance_on]);
    assert_eq!(report, online);
    assert_eq!(report["requests"], 7, "{report:#}");
    assert_eq!(report["changed"], 2, "{report:#}");
    assert_eq!(report["by_application"], json!({"ledger": 1, "payroll": 1}));
    assert_eq!(report["by_user"], json!({"alice": 1, "bob": 1}));
    assert_eq!(report["by_reason"], json!({"compromised": 2}));
    let ids: Vec<&str> = report["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["l-during", "l-now"], "in decision-time order");
    let first = &report["examples"][0];
    assert_eq!(
        first["before"],
        json!({"decision": "allow", "reason": "report_only",
            "would_decide": "deny", "would_reason": "compromised"})
    );
    assert_eq!(
        first["after"],
        json!({"decision": "deny", "reason": "compromised"})
    );
    assert_eq!(first["at"], format_millis(t(20)), "the audited as_of");

    // `--examples` bounds the examples, not the counts; `--until` bounds the period.
    let one = what_if(&inst, &["--policy", &finance_on, "--examples", "1"]);
    assert_eq!(
        (&one["changed"], one["examples"].as_array().unwrap().len()),
        (&json!(2), 1)
    );
    let first_batch = what_if(
        &inst,
        &["--policy", &finance_on, "--until", &format_millis(mid)],
    );
    assert_eq!(
        (&first_batch["requests"], &first_batch["changed"]),
        (&json!(3), &json!(1))
    );
    let second_batch = what_if(
        &inst,
        &["--policy", &finance_on, "--since", &format_millis(mid)],
    );
    assert_eq!(
        (&second_batch["requests"], &second_batch["changed"]),
        (&json!(4), &json!(1))
    );

    // Allowing every endpoint: the two enforced denies change; the finance allows do not.
    let allow_all = candidate(
        &inst,
        "allow-all.toml",
        "[policy.global]\nrequire_trusted = false\n",
    );
    let report = what_if(&inst, &["--policy", &allow_all]);
    assert_eq!(
        (&report["requests"], &report["changed"]),
        (&json!(7), &json!(2)),
        "{report:#}"
    );
    assert_eq!(report["by_application"], json!({"vpn": 2}));
    assert_eq!(report["by_user"], json!({"carol": 1, "dave": 1}));
    assert_eq!(report["by_reason"], json!({"allow_all_endpoints": 2}));

    // The live policies themselves: nothing changes.
    let live = candidate(
        &inst,
        "live.toml",
        "[[policy.custom]]\nname = \"finance\"\napplications = [\"ledger\", \"payroll\"]\n\
         mode = \"report_only\"\n",
    );
    let report = what_if(&inst, &["--policy", &live]);
    assert_eq!(
        (&report["requests"], &report["changed"]),
        (&json!(7), &json!(0)),
        "{report:#}"
    );

    // The summary, and a candidate that is not a policy set.
    let out = run_cli(&inst, &["what-if", "--policy", &finance_on], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("7 audited request(s) replayed")
            && text.contains("2 decision(s) would change"),
        "{text}"
    );
    assert!(text.contains("l-during"), "{text}");
    // The README's walk-through shows this output (`--nocapture`).
    eprintln!("{text}");
    let broken = candidate(&inst, "broken.toml", "[kafka]\nbrokers = \"x:1\"\n");
    let out = run_cli(&inst, &["what-if", "--policy", &broken], "");
    assert_eq!(out.status.code(), Some(2));

    // Offline on the same store (the instance stopped): the same report, from the same replay.
    assert!(stop(&mut child).success());
    let offline = what_if(&inst, &["--policy", &finance_on]);
    assert_eq!(offline, online, "offline and online replays agree");
}
