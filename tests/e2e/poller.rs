//! The poller over real HTTP against `trustgate simulate`, into the test broker.

use crate::common::poller::*;
use crate::common::*;
use rdkafka::Message;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};
use trustgate::topic::{HEADER_OBSERVED_AT, HEADER_SOURCE};

mod limits;

/// Pagination across many pages, a burst sharing one timestamp across page boundaries, and
/// dedupe across polls that re-read the overlap: every event exactly once, byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn every_event_arrives_once_byte_for_byte_across_pages_and_polls() {
    let mut inst = Instance::new("poll-pages");
    let sim = Tenant::new(12)
        .quiet()
        .sim(&["--seed", "11", "--history", "2h"])
        .fast_poller()
        .poller("page_size = 5")
        .start(&mut inst);
    sim.burst(23).await;
    create_topic(&inst.events, 3).await;
    let mut child = spawn_poller(&inst);

    // A second burst after the first poll: later polls re-read the first burst (overlap).
    let first = wait_for_topic(&inst.events, Duration::from_secs(60), |m| {
        heartbeats(m) >= 1
    });
    assert!(
        heartbeats(&first) >= 1,
        "no poll completed:\n{}",
        read_log(&inst)
    );
    sim.burst(17).await;
    let expected = device_events(&sim.events().await);
    assert!(expected.len() >= 40);
    let msgs = wait_for_topic(&inst.events, Duration::from_secs(60), |m| {
        heartbeats(m) >= heartbeats(&first) + 4 && missing(&expected, m).is_empty()
    });
    assert!(stop(&mut child).success(), "{}", read_log(&inst));

    let got = events_on_topic(&msgs);
    assert_eq!(
        missing(&expected, &msgs),
        Vec::<&String>::new(),
        "{}",
        read_log(&inst)
    );
    for (key, raw) in &expected {
        let copies = &got[key];
        assert_eq!(copies.len(), 1, "{key} published {} times", copies.len());
        let m = copies[0];
        assert_eq!(payload(m), raw, "SE's bytes, unchanged");
        let e: trustgate::se::Event = serde_json::from_str(raw).unwrap();
        assert_eq!(m.key(), Some(e.connector_guid().unwrap().as_bytes()));
        assert_eq!(header_str(m, HEADER_SOURCE).as_deref(), Some("poll"));
    }
    // More than one page per poll: the first poll alone read 23+ events in pages of 5.
    assert!(sim.stats().await["requests"].as_u64().unwrap() >= 5);

    let computers: BTreeSet<String> = msgs
        .iter()
        .filter(|m| kind(m) == "computer")
        .inspect(|m| assert!(header_str(m, HEADER_OBSERVED_AT).is_some()))
        .map(|m| String::from_utf8(m.key().unwrap().to_vec()).unwrap())
        .collect();
    let sim_computers: BTreeSet<String> = sim
        .computers()
        .await
        .iter()
        .map(|c| c["connector_guid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        computers, sim_computers,
        "the sweep read every computer page"
    );

    let beat = msgs.iter().rev().find(|m| kind(m) == "heartbeat").unwrap();
    assert_eq!(beat.key(), Some(&b"poller"[..]));
    let v: serde_json::Value = serde_json::from_str(payload(beat)).unwrap();
    assert_eq!(v["source"], "poll");
    assert!(
        v["polled_at"].is_string() && v["watermark"].is_string(),
        "{v}"
    );
    assert_key_never_logged(&inst);
}

/// How many times the kill loop kills the poller: 20, or `TRUSTGATE_POLLER_KILLS` (what
/// `scripts/poller-faults` sets for a long run).
fn kill_cycles() -> usize {
    std::env::var("TRUSTGATE_POLLER_KILLS")
        .ok()
        .map(|v| v.parse().expect("TRUSTGATE_POLLER_KILLS: a whole number"))
        .unwrap_or(20)
}

/// The HTTP faults the kill loop mixes in, one drawn now and then: each is one the poller must
/// ride out without losing or skipping an event.
fn random_fault(rng: &mut impl rand::Rng) -> serde_json::Value {
    match rng.gen_range(0..7) {
        0 => serde_json::json!({"kind": "status", "status": 503}),
        1 => serde_json::json!({"kind": "status", "status": 500}),
        // A reset a few seconds away: the real window's (up to an hour) would stall the loop.
        2 => serde_json::json!({"kind": "rate_limited", "reset": 2, "retry_after": 1}),
        3 => serde_json::json!({"kind": "malformed"}),
        4 => serde_json::json!({"kind": "invalid_page"}),
        5 => serde_json::json!({"kind": "drop"}),
        _ => {
            serde_json::json!({"kind": "shift", "events": rng.gen_range(1..8), "path": "/v1/events"})
        }
    }
}

/// One more kill, aimed where the random schedule may miss (it did once in 20 kills): after
/// some pages of a poll are published and acknowledged, before the poll's checkpoint. 60 new
/// events are 20 pages of 3, five seconds of requests at four a second; the kill comes 4 API
/// requests into the run, so at least one events page is out and most of them are still to
/// come. The next run must publish those pages again (duplicates, never a loss).
async fn kill_mid_poll(inst: &Instance, sim: &Simulator, earlier_runs: usize) {
    sim.burst(60).await;
    let requests = || async { sim.stats().await["requests"].as_u64().expect("requests") };
    let mut child = spawn_poller(inst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_log(inst).matches("Poller started.").count() <= earlier_runs {
        assert!(Instant::now() < deadline, "{}", read_log(inst));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started_at = requests().await;
    while requests().await < started_at + 4 {
        assert!(Instant::now() < deadline, "{}", read_log(inst));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// SIGKILL at random points (20 times; `TRUSTGATE_POLLER_KILLS`) while SE keeps producing
/// events and answers some requests with a fault: afterwards the topic holds every simulated
/// device event (duplicates allowed).
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_loop_loses_no_event() {
    use rand::{Rng, SeedableRng};
    let started = Instant::now();
    let cycles = kill_cycles();
    let mut inst = Instance::new("poll-kill");
    let sim = Tenant::new(20)
        .sim(&["--seed", "5", "--history", "40m", "--noise-every", "3s"])
        .sim(&["--compromise-every", "5s", "--resolve-after", "20s"])
        .sim(&["--hourly-limit", "100000"])
        .poller("events_interval = \"1s\"\nevents_overlap = \"2s\"\npage_size = 3")
        .poller("requests_per_hour = 14400\nburst = 1")
        .start(&mut inst);
    create_topic(&inst.events, 3).await;
    let seed: u64 = std::env::var("TRUSTGATE_POLLER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("kill schedule seed {seed} (TRUSTGATE_POLLER_SEED replays it), {cycles} kills");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..cycles {
        if rng.gen_bool(0.5) {
            sim.burst(rng.gen_range(1..15)).await;
        }
        if rng.gen_bool(0.5) {
            sim.fault(random_fault(&mut rng)).await;
        }
        let mut child = spawn_poller(&inst);
        // Start-up (topics, producer) takes a variable while; count from when polling starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        while read_log(&inst).matches("Poller started.").count() <= round {
            assert!(Instant::now() < deadline, "{}", read_log(&inst));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Four requests a second and pages of 3: the first poll takes seconds and later ones
        // a good part of each second, so kills land mid-page, between a page's acknowledgement
        // and the checkpoint, and after checkpoints. A 2 s overlap (SE's real one is minutes)
        // leaves nothing but the checkpoint order between a premature checkpoint and a loss.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..10_000))).await;
        child.kill().unwrap();
        child.wait().unwrap();
    }
    kill_mid_poll(&inst, &sim, cycles).await;
    let expected = device_events(&sim.events().await);
    let mut child = spawn_poller(&inst);
    let msgs = wait_for_topic(&inst.events, Duration::from_secs(120), |m| {
        missing(&expected, m).is_empty()
    });
    assert!(stop(&mut child).success(), "{}", read_log(&inst));
    let lost = missing(&expected, &msgs);
    assert!(
        lost.is_empty(),
        "{} of {} events lost (seed {seed}): {lost:?}",
        lost.len(),
        expected.len()
    );
    let got = events_on_topic(&msgs);
    let dups: usize = got.values().map(|c| c.len() - 1).sum();
    eprintln!(
        "{} events, {dups} duplicate copies after {cycles} kills",
        expected.len()
    );
    // Re-published events show that kills landed between publishing and checkpointing.
    assert!(
        dups > 0,
        "no kill landed mid-poll: the loop did not exercise the checkpoint"
    );
    assert_key_never_logged(&inst);
    let stats = sim.stats().await;
    figures::record(
        "poller",
        "poller_kill_loop",
        serde_json::json!({
            "cycles": cycles,
            "events_checked": expected.len(),
            "lost": lost.len(),
            "duplicate_copies": dups,
            "faults_injected": stats["faults_injected"],
            "requests": stats["requests"],
            "seconds": started.elapsed().as_secs(),
            "seed": seed.to_string(),
        }),
    );
}

/// `trustgate run` with `[poller] enabled`: a compromise in SE denies within a poll, and its
/// resolution in SE's console clears it after an inventory sweep.
#[tokio::test(flavor = "multi_thread")]
async fn run_with_the_poller_turns_se_compromises_and_resolutions_into_state() {
    let mut inst = Instance::new("poll-run");
    let sim = Tenant::new(6)
        .quiet()
        .sim(&[
            "--windows-share",
            "1",
            "--macos-share",
            "0",
            "--ios-share",
            "0",
        ])
        .sim(&["--initially-compromised", "0"])
        .fast_poller()
        .poller("enabled = true\ninventory_interval = \"3s\"")
        .start(&mut inst);
    inst.extra_config += "[compromise]\nresolution_grace = \"2s\"\n";
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    let computers = sim.computers().await;
    let guid = computers[0]["connector_guid"].as_str().unwrap().to_owned();
    let compromised = |inst: &Instance, guid: String| {
        let url = inst.admin(&format!("/v1/devices/{guid}"));
        async move {
            let r = reqwest::get(url).await.unwrap();
            if !r.status().is_success() {
                return None;
            }
            let v: serde_json::Value = r.json().await.unwrap();
            v["devices"][0]["compromised"].as_bool()
        }
    };
    let wait_until = |want: bool| {
        let guid = guid.clone();
        let inst = &inst;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while compromised(inst, guid.clone()).await != Some(want) {
                assert!(
                    Instant::now() < deadline,
                    "never compromised={want}:\n{}",
                    inst.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    wait_until(false).await;
    sim.compromise(&guid).await;
    wait_until(true).await;
    sim.resolve(&guid).await;
    wait_until(false).await;
    assert!(stop(&mut child).success(), "{}", inst.log());
    assert!(!inst.log().contains(KEY));
}

/// `trustgate poll --plan`: the budget table, exit 0 when it fits and 1 with a warning when not.
#[test]
fn the_plan_command_prints_the_budget_and_fails_when_it_cannot_fit() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trustgate.toml");
    let plan = |events_interval: &str| {
        std::fs::write(
            &config,
            format!(
                "[poller]\nevents_interval = \"{events_interval}\"\nrequests_per_hour = 2400\n"
            ),
        )
        .unwrap();
        Command::new(binary())
            .args([
                "poll",
                "--plan",
                "--computers",
                "10000",
                "--events-per-hour",
                "1000",
            ])
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let fits = plan("30s");
    let text = String::from_utf8_lossy(&fits.stdout);
    assert!(fits.status.success(), "{text}");
    assert!(
        text.contains("events (1 pages/poll)") && text.contains("140.0"),
        "{text}"
    );
    assert!(text.contains("compromise (event poll) 47s"), "{text}");
    let too_often = plan("1s");
    assert_eq!(too_often.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&too_often.stderr).contains("warning: the poller needs"));
}

/// A detection uploaded late (dated 5 minutes before the watermark, inside the overlap) is still
/// polled, and a restart resumes from the checkpoint: re-read events are not published again.
#[tokio::test(flavor = "multi_thread")]
async fn late_uploads_and_restarts_neither_lose_nor_repeat_events() {
    let mut inst = Instance::new("poll-late");
    let sim = Tenant::new(6)
        .quiet()
        .sim(&["--history", "1h"])
        .fast_poller()
        .poller("page_size = 3")
        .start(&mut inst);
    sim.burst(5).await;
    create_topic(&inst.events, 3).await;
    let mut child = spawn_poller(&inst);
    let first = wait_for_topic(&inst.events, Duration::from_secs(60), |m| {
        heartbeats(m) >= 2
    });
    assert!(heartbeats(&first) >= 2, "{}", read_log(&inst));

    let guid = sim.computers().await[0]["connector_guid"]
        .as_str()
        .unwrap()
        .to_owned();
    let date = chrono::Utc::now() - chrono::Duration::minutes(5);
    let late = format!(
        r#"{{"id":9000000000000000001,"timestamp":{},"date":"{}","event_type":"Threat Detected","event_type_id":1090519054,"connector_guid":"{guid}","computer":{{"connector_guid":"{guid}","hostname":"late"}}}}"#,
        date.timestamp(),
        date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    sim.inject(&late).await;
    let late_key = "9000000000000000001:1090519054".to_owned();
    let msgs = wait_for_topic(&inst.events, Duration::from_secs(60), |m| {
        events_on_topic(m).contains_key(&late_key)
    });
    assert!(
        events_on_topic(&msgs).contains_key(&late_key),
        "{}",
        read_log(&inst)
    );
    assert!(stop(&mut child).success());

    let before = heartbeats(&read_topic(
        &inst.events,
        usize::MAX,
        Duration::from_secs(2),
    ));
    let mut child = spawn_poller(&inst);
    let msgs = wait_for_topic(&inst.events, Duration::from_secs(60), |m| {
        heartbeats(m) >= before + 3
    });
    assert!(stop(&mut child).success());
    let expected = device_events(&sim.events().await);
    assert!(expected.contains_key(&late_key));
    let got = events_on_topic(&msgs);
    assert_eq!(missing(&expected, &msgs), Vec::<&String>::new());
    for key in expected.keys() {
        assert_eq!(
            got[key].len(),
            1,
            "{key} published {} times",
            got[key].len()
        );
    }
    assert_eq!(payload(got[&late_key][0]), late, "byte for byte");
    assert_key_never_logged(&inst);
}

/// Issue #14 item 2: the broker restarts (tansu on sqlite storage) while the poller runs, with
/// events arriving before, during and after the outage. The poller keeps running, keeps its
/// cursor while it cannot publish, and every event reaches the topic.
#[tokio::test(flavor = "multi_thread")]
async fn the_poller_survives_a_broker_restart_and_loses_no_event() {
    let mut broker = OwnBroker::start();
    let brokers = broker.addr();
    let mut inst = Instance::new("poll-brestart");
    inst.brokers = Some(brokers.clone());
    let sim = Tenant::new(12)
        .quiet()
        .sim(&["--seed", "23", "--history", "1h"])
        .fast_poller()
        .poller("page_size = 5")
        .start(&mut inst);
    create_topic_at(&brokers, &inst.events, 3).await;
    sim.burst(20).await;
    let mut child = spawn_poller(&inst);

    // A read while the broker is away, or just back, may fail: it counts as nothing read.
    let read = |within: Duration| {
        let (brokers, topic) = (brokers.clone(), inst.events.clone());
        std::thread::spawn(move || read_topic_at(&brokers, &topic, usize::MAX, within))
            .join()
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while heartbeats(&read(Duration::from_secs(2))) == 0 {
        assert!(
            Instant::now() < deadline,
            "no poll completed:\n{}",
            read_log(&inst)
        );
    }

    broker.stop();
    sim.burst(15).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    broker.restart();
    let back = Instant::now();
    sim.burst(10).await;

    let expected = device_events(&sim.events().await);
    assert!(expected.len() >= 45, "{}", expected.len());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut broker_repairs = 0;
    let lost = loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the poller exited ({status}):\n{}", read_log(&inst));
        }
        let msgs = read(Duration::from_secs(3));
        let lost: Vec<String> = missing(&expected, &msgs).into_iter().cloned().collect();
        if lost.is_empty() || Instant::now() > deadline {
            break lost;
        }
        if broker.restart_if_storage_died() {
            broker_repairs += 1;
        }
    };
    assert!(
        lost.is_empty(),
        "{} of {} events never reached the topic (broker restarted {broker_repairs} more time(s) after its storage died), e.g. {:?}:\n{}",
        lost.len(),
        expected.len(),
        &lost[..lost.len().min(5)],
        read_log(&inst)
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n--- broker ---\n"
            + &broker.log_tail(40)
    );
    // Measured to the read of the whole topic (each takes about 3 s) that found the last event.
    let recovered = back.elapsed();
    assert!(stop(&mut child).success(), "{}", read_log(&inst));
    figures::record(
        "broker",
        "broker_restart_poller",
        serde_json::json!({
            "events_checked": expected.len(),
            "lost": lost.len(),
            "outage_seconds": 6,
            "all_published_after_seconds": figures::secs(recovered),
            "broker_storage_repairs": broker_repairs,
        }),
    );
}
