//! The poller within SE's limits and through SE's faults: the quota, the reserve, 429s, 5xx,
//! timeouts, truncated and invalid pages, dropped connections, pages that shift between
//! requests, and bad credentials.

use crate::common::poller::*;
use crate::common::*;
use std::time::Duration;

/// Runs a poller against a simulator whose hourly limit is `limit` for `run_for`, then stops
/// it; returns (requests the simulator saw, its 429s).
async fn budget_run(
    name: &str,
    limit: &str,
    poller: &str,
    run_for: Duration,
) -> (u64, u64, Instance) {
    let mut inst = Instance::new(name);
    let sim = Tenant::new(5)
        .sim(&["--hourly-limit", limit, "--noise-every", "1s"])
        .poller(poller)
        .start(&mut inst);
    create_topic(&inst.events, 1).await;
    let mut child = spawn_poller(&inst);
    tokio::time::sleep(run_for).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "poller exited:\n{}",
        read_log(&inst)
    );
    // It stops promptly even while waiting for budget.
    assert!(stop(&mut child).success(), "{}", read_log(&inst));
    let stats = sim.stats().await;
    let requests = stats["requests"].as_u64().unwrap();
    let limited = stats["rate_limited"].as_u64().unwrap();
    (requests, limited, inst)
}

/// A quota below the simulator's limit: the poller wants a poll a second, the quota holds it to
/// its burst, and SE never answers 429.
#[tokio::test(flavor = "multi_thread")]
async fn a_quota_below_the_limit_never_meets_a_429() {
    let (requests, limited, inst) = budget_run(
        "poll-quota",
        "30",
        "events_interval = \"1s\"\nrequests_per_hour = 20\nburst = 10\nreserve = 0",
        Duration::from_secs(12),
    )
    .await;
    eprintln!("{requests} requests, {limited} 429s");
    assert_eq!(limited, 0);
    // Burst 10, then one every 3 minutes.
    assert!((10..=11).contains(&requests), "{requests} requests");
    assert_key_never_logged(&inst);
}

/// A quota above SE's limit: SE's `x-ratelimit-remaining` header holds requests at the reserve,
/// so SE's budget is never exhausted and no 429 comes back.
#[tokio::test(flavor = "multi_thread")]
async fn remaining_at_the_reserve_holds_requests_before_any_429() {
    let (requests, limited, inst) = budget_run(
        "poll-reserve",
        "30",
        "events_interval = \"1s\"\npage_size = 2\nrequests_per_hour = 360000\nburst = 100\nreserve = 5",
        Duration::from_secs(12),
    )
    .await;
    eprintln!("{requests} requests, {limited} 429s");
    assert_eq!(limited, 0);
    // 25 fit above the reserve; the two feeds may each have one request in flight.
    assert!((24..=26).contains(&requests), "{requests} requests");
    assert!(read_log(&inst).contains("holding requests"));
    assert_key_never_logged(&inst);
}

/// 429 (with and without Retry-After), 5xx, timeouts, dropped connections, truncated and
/// invalid pages, and new events arriving between page requests: the poller rides them out and
/// every event still arrives.
#[tokio::test(flavor = "multi_thread")]
async fn the_poller_recovers_from_429_5xx_timeouts_and_bad_pages() {
    let started = std::time::Instant::now();
    let mut inst = Instance::new("poll-faults");
    let sim = Tenant::new(8)
        .quiet()
        .sim(&["--history", "1h"])
        .fast_poller()
        .poller("page_size = 4\nrequest_timeout = \"1s\"")
        .start(&mut inst);
    sim.burst(12).await;
    let faults = [
        serde_json::json!({"kind": "status", "status": 503, "count": 2}),
        // Retry-After wins over a reset an hour away: waiting for the reset would time out.
        serde_json::json!({"kind": "rate_limited", "retry_after": 1, "reset": 3000}),
        serde_json::json!({"kind": "latency", "ms": 4000}),
        serde_json::json!({"kind": "malformed"}),
        serde_json::json!({"kind": "drop"}),
        serde_json::json!({"kind": "rate_limited", "reset": 2}),
        serde_json::json!({"kind": "status", "status": 500}),
        serde_json::json!({"kind": "invalid_page"}),
        serde_json::json!({"kind": "shift", "events": 2, "count": 3, "path": "/v1/events"}),
    ];
    let injected: u64 = faults
        .iter()
        .map(|f| f["count"].as_u64().unwrap_or(1))
        .sum();
    for f in &faults {
        sim.fault(f.clone()).await;
    }
    create_topic(&inst.events, 3).await;
    let mut child = spawn_poller(&inst);
    // The shifts add events: what SE holds is known once every fault has been served.
    wait_for_faults(&sim, injected, &inst).await;
    let expected = device_events(&sim.events().await);
    let msgs = wait_for_topic(&inst.events, Duration::from_secs(90), |m| {
        missing(&expected, m).is_empty() && heartbeats(m) >= 2
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "poller exited:\n{}",
        read_log(&inst)
    );
    assert!(stop(&mut child).success());
    let lost = missing(&expected, &msgs);
    assert_eq!(lost, Vec::<&String>::new(), "{}", read_log(&inst));
    let stats = sim.stats().await;
    assert_eq!(stats["faults_injected"].as_u64(), Some(injected), "{stats}");
    let log = read_log(&inst);
    assert!(log.contains("SE answered 429"), "{log}");
    assert!(log.contains("HTTP 503"), "{log}");
    assert_key_never_logged(&inst);
    figures::record(
        "poller",
        "poller_faults",
        serde_json::json!({
            "events_checked": expected.len(),
            "lost": lost.len(),
            "faults_injected": injected,
            "requests": stats["requests"],
            "seconds": started.elapsed().as_secs(),
        }),
    );
}

/// Waits until the simulator has served `count` injected faults.
async fn wait_for_faults(sim: &Simulator, count: u64, inst: &Instance) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while sim.stats().await["faults_injected"].as_u64() < Some(count) {
        assert!(
            std::time::Instant::now() < deadline,
            "the faults were not all served: {}\n{}",
            sim.stats().await,
            read_log(inst)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// New events arrive between the page requests of one poll: SE lists events newest first and
/// pages by offset, so each arrival moves every item down under the poller, and a page repeats
/// items of the page before it. Nothing is skipped and nothing is published twice.
#[tokio::test(flavor = "multi_thread")]
async fn pages_that_shift_between_requests_lose_and_repeat_no_event() {
    let started = std::time::Instant::now();
    let mut inst = Instance::new("poll-shift");
    let sim = Tenant::new(8)
        .quiet()
        .sim(&["--history", "1h"])
        .fast_poller()
        .poller("page_size = 4")
        .start(&mut inst);
    sim.burst(40).await;
    const SHIFTS: u64 = 10;
    let before = device_events(&sim.events().await).len() as u64;
    // The first poll reads at least SHIFTS pages of 4, so at least SHIFTS - 1 of the shifts
    // land between two of its page requests.
    assert!(before >= 4 * SHIFTS, "{before} events");
    sim.fault(
        serde_json::json!({"kind": "shift", "events": 3, "count": SHIFTS, "path": "/v1/events"}),
    )
    .await;
    create_topic(&inst.events, 3).await;
    let mut child = spawn_poller(&inst);
    wait_for_faults(&sim, SHIFTS, &inst).await;
    let expected = device_events(&sim.events().await);
    assert_eq!(expected.len() as u64, before + 3 * SHIFTS);
    let msgs = wait_for_topic(&inst.events, Duration::from_secs(90), |m| {
        missing(&expected, m).is_empty() && heartbeats(m) >= 2
    });
    assert!(stop(&mut child).success(), "{}", read_log(&inst));
    let lost = missing(&expected, &msgs);
    assert_eq!(lost, Vec::<&String>::new(), "{}", read_log(&inst));
    let got = events_on_topic(&msgs);
    let repeated: Vec<&String> = expected.keys().filter(|k| got[*k].len() > 1).collect();
    assert_eq!(repeated, Vec::<&String>::new(), "published more than once");
    let stats = sim.stats().await;
    figures::record(
        "poller",
        "poller_shifting_pages",
        serde_json::json!({
            "events_checked": expected.len(),
            "lost": lost.len(),
            "published_twice": repeated.len(),
            "shifts": SHIFTS,
            "events_added_while_paging": 3 * SHIFTS,
            "requests": stats["requests"],
            "seconds": started.elapsed().as_secs(),
        }),
    );
}

/// A wrong API key: the poller stops at once with an error naming the cause, without a retry
/// storm, and without printing the key it was given.
#[tokio::test(flavor = "multi_thread")]
async fn a_401_stops_the_poller_with_a_clear_error() {
    let mut inst = Instance::new("poll-401");
    let sim = Tenant::new(3)
        .key("SENTINEL-wrong-key-0b7e")
        .start(&mut inst);
    create_topic(&inst.events, 1).await;
    let mut child = spawn_poller(&inst);
    let status = wait_exit(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the poller kept running after a 401:\n{}", read_log(&inst))
    });
    assert!(!status.success());
    let log = read_log(&inst);
    assert!(log.contains("refused the credentials"), "{log}");
    assert!(log.contains("401"), "{log}");
    assert!(
        log.contains(CLIENT_ID),
        "the error names the client id: {log}"
    );
    assert!(!log.contains("SENTINEL-wrong-key-0b7e"), "{log}");
    let stats = sim.stats().await;
    // One request per feed at most: no retries.
    assert!(stats["unauthorized"].as_u64().unwrap() <= 2, "{stats}");
    assert_key_never_logged(&inst);
}

/// Under `trustgate run`, a 401 stops the poller but not decisions: `/healthz` names the failed
/// poller and its cause, and requests are still answered (from the last known state).
#[tokio::test(flavor = "multi_thread")]
async fn under_run_a_401_marks_the_poller_unhealthy_and_decisions_continue() {
    let mut inst = Instance::new("run-401");
    let _sim = Tenant::new(3)
        .key("SENTINEL-wrong-key-5d1c")
        .poller("enabled = true")
        .start(&mut inst);
    create_topic(&inst.events, 1).await;
    // State from before the poller failed (another source's record): a store never fed would
    // answer `not_ready` instead, whatever the poller does.
    publish(
        &producer(),
        &inst.events,
        &Out::new(r#"{"connector_guid":"known-before","operating_system":"Windows 11","is_compromised":false}"#),
    )
    .await;
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let health = loop {
        let r = reqwest::get(inst.admin("/healthz")).await.unwrap();
        if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            break r.json::<serde_json::Value>().await.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "healthz never reported the poller:\n{}",
            inst.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(health["status"], "unhealthy");
    assert!(
        health["failed"]["poller"].as_str().unwrap().contains("401"),
        "{health}"
    );
    let resp: serde_json::Value = reqwest::Client::new()
        .post(inst.admin("/v1/decide"))
        .body(r#"{"request_id":"r","application":"vpn","device":{"trusted":true,"hostname":"nobody","os":"windows"}}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        resp["reason"], "not_in_secure_endpoint",
        "decisions continue: {resp}"
    );
    assert!(child.try_wait().unwrap().is_none(), "run keeps serving");
    let metrics = inst.metrics().await;
    assert!(
        metrics.contains("trustgate_poller_requests_total"),
        "poller metrics exported: {metrics}"
    );
    assert!(stop(&mut child).success());
    assert!(!inst.log().contains("SENTINEL-wrong-key-5d1c"));
}
