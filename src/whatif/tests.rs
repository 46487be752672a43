use super::*;

fn answered(decision: &str, reason: &str) -> Answered {
    Answered {
        decision: decision.into(),
        reason: reason.into(),
        would_decide: None,
        would_reason: None,
    }
}

fn report_only(would: &str, why: &str) -> Answered {
    Answered {
        would_decide: Some(would.into()),
        would_reason: Some(why.into()),
        ..answered("allow", "report_only")
    }
}

fn replayed(
    id: &str,
    app: &str,
    user: Option<&str>,
    before: Answered,
    after: Answered,
) -> Replayed {
    Replayed {
        request_id: id.into(),
        application: app.into(),
        user: user.map(str::to_owned),
        at: 1_000,
        before,
        after,
    }
}

/// Which before/after pairs count as a change: the answered decision, nothing else.
#[test]
fn a_change_is_a_different_answered_decision() {
    let table = [
        (
            answered("allow", "trusted_not_compromised"),
            answered("deny", "compromised"),
            true,
        ),
        (
            answered("deny", "compromised"),
            answered("allow", "se_check_off"),
            true,
        ),
        (
            answered("deny", "untrusted_endpoint"),
            answered("allow", "allow_all_endpoints"),
            true,
        ),
        // Same decision, another reason: not a change.
        (
            answered("allow", "se_check_off"),
            answered("allow", "trusted_not_compromised"),
            false,
        ),
        (
            answered("deny", "compromised"),
            answered("deny", "compromised"),
            false,
        ),
        // Report-only rolled into enforcement: the would-be deny becomes the answer.
        (
            report_only("deny", "compromised"),
            answered("deny", "compromised"),
            true,
        ),
        (
            report_only("allow", "trusted_not_compromised"),
            answered("allow", "trusted_not_compromised"),
            false,
        ),
        // Enforcement rolled back to report-only: a deny is no longer answered.
        (
            answered("deny", "compromised"),
            report_only("deny", "compromised"),
            true,
        ),
        (answered("invalid", "x"), answered("invalid", "x"), false),
    ];
    for (before, after, changed) in table {
        let r = replayed("r", "vpn", None, before.clone(), after.clone());
        assert_eq!(r.changed(), changed, "{before:?} -> {after:?}");
    }
}

#[test]
fn counts_by_application_user_and_reason_with_the_first_examples() {
    let deny = || answered("deny", "compromised");
    let allow = || answered("allow", "trusted_not_compromised");
    let all = vec![
        replayed(
            "1",
            "ledger",
            Some("alice"),
            report_only("deny", "compromised"),
            deny(),
        ),
        replayed("2", "ledger", Some("bob"), allow(), allow()),
        replayed(
            "3",
            "vpn",
            Some("alice"),
            allow(),
            answered("deny", "untrusted_endpoint"),
        ),
        replayed(
            "4",
            "ledger",
            None,
            report_only("deny", "compromised"),
            deny(),
        ),
        replayed("5", "payroll", Some("alice"), deny(), deny()),
        replayed(
            "6",
            "vpn",
            Some("carol"),
            deny(),
            answered("allow", "se_check_off"),
        ),
    ];
    let report = WhatIfReport::compare(all.clone(), 2);
    assert_eq!(report.requests, 6);
    assert_eq!(report.changed, 4);
    let map = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    assert_eq!(report.by_application, map(&[("ledger", 2), ("vpn", 2)]));
    assert_eq!(
        report.by_user,
        map(&[("alice", 2), (NO_USER, 1), ("carol", 1)])
    );
    assert_eq!(
        report.by_reason,
        map(&[
            ("compromised", 2),
            ("se_check_off", 1),
            ("untrusted_endpoint", 1)
        ])
    );
    let ids: Vec<&str> = report
        .examples
        .iter()
        .map(|e| e.request_id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["1", "3"],
        "the first changed ones, in order, up to the limit"
    );
    assert_eq!(WhatIfReport::compare(all.clone(), 100).examples.len(), 4);
    assert!(WhatIfReport::compare(all, 0).examples.is_empty());

    let json = report.to_json();
    assert_eq!(json["requests"], 6);
    assert_eq!(json["changed"], 4);
    assert_eq!(json["by_application"]["ledger"], 2);
    let first = &json["examples"][0];
    assert_eq!(first["request_id"], "1");
    assert_eq!(first["user"], "alice");
    assert_eq!(
        first["before"],
        json!({"decision": "allow", "reason": "report_only",
            "would_decide": "deny", "would_reason": "compromised"})
    );
    assert_eq!(
        first["after"],
        json!({"decision": "deny", "reason": "compromised"})
    );
    assert_eq!(json["examples"][1]["user"], "alice");
    assert_eq!(
        WhatIfReport::compare(Vec::new(), 5).to_json()["by_application"],
        json!({})
    );
}

#[test]
fn an_audit_record_gives_the_request_its_time_and_the_answer() {
    let record = json!({
        "request": {"request_id": "r1", "application": "ledger", "user": "alice",
            "device": {"trusted": true, "hostname": "fin-lt-1"}},
        "response": {"request_id": "r1", "decision": "allow", "reason": "report_only",
            "would_decide": "deny", "would_reason": "compromised",
            "decided_at": "2026-01-14T09:12:03.418Z"},
        "source": "kafka",
    });
    let a = Audited::from_record(&record).unwrap();
    assert_eq!(a.request_id, "r1");
    assert_eq!(a.application, "ledger");
    assert_eq!(a.user.as_deref(), Some("alice"));
    assert_eq!(a.at, parse_rfc3339("2026-01-14T09:12:03.418Z").unwrap());
    assert_eq!(a.before, report_only("deny", "compromised"));
    assert_eq!(
        serde_json::from_slice::<Value>(&a.request).unwrap(),
        record["request"]
    );

    // A decision at a past time was based on the state then, not when it was made.
    let mut at_past = record.clone();
    at_past["response"]["as_of"] = json!("2026-01-01T00:00:00Z");
    assert_eq!(
        Audited::from_record(&at_past).unwrap().at,
        parse_rfc3339("2026-01-01T00:00:00Z").unwrap()
    );

    // Nothing to replay without a request object, a time or an answer.
    for broken in [
        json!({"request": null, "response": record["response"]}),
        json!({"request": record["request"], "response": {"request_id": "r1", "decision": "allow", "reason": "x"}}),
        json!({"request": record["request"], "response": {"request_id": "r1", "decided_at": "2026-01-14T09:12:03.418Z"}}),
    ] {
        assert_eq!(Audited::from_record(&broken), None, "{broken}");
    }
}

/// The CLI prints a running instance's report from its JSON: reading it back gives the report.
#[test]
fn a_report_reads_back_from_its_json() {
    let report = WhatIfReport {
        skipped: 3,
        ..WhatIfReport::compare(
            [
                replayed(
                    "a",
                    "ledger",
                    Some("alice"),
                    report_only("deny", "compromised"),
                    answered("deny", "compromised"),
                ),
                replayed(
                    "b",
                    "vpn",
                    None,
                    answered("deny", "untrusted"),
                    answered("allow", "allow_all_endpoints"),
                ),
                replayed(
                    "c",
                    "vpn",
                    None,
                    answered("allow", "trusted_not_compromised"),
                    answered("allow", "trusted_not_compromised"),
                ),
            ],
            5,
        )
    };
    assert_eq!(report.changed, 2);
    assert_eq!(WhatIfReport::from_json(&report.to_json()), Some(report));
    assert_eq!(WhatIfReport::from_json(&json!({"error": "x"})), None);
}
