//! (a) The Secure Endpoint Event Stream on a real RabbitMQ: SE events published to the stream's
//! queue reach the events topic byte-for-byte and become decisions; garbage is dead-lettered
//! and acknowledged; a SIGKILL between delivery and Kafka's acknowledgement loses nothing; a
//! RabbitMQ restart is survived; TLS is verified; the password never reaches a log.

use crate::common::rabbitmq::{self, RabbitMq, PASSWORD_SENTINEL};
use crate::common::webhook::{decide, wait_for_reason};
use crate::common::*;
use rdkafka::Message;
use std::time::{Duration, Instant};
use trustgate::topic::{HEADER_DLQ_ERROR, HEADER_DLQ_QUEUE, HEADER_KIND, HEADER_SOURCE};

/// The fixture's Threat Detected events (SE's own JSON), each moved to `guid`.
fn threat_detected_fixtures(guid: &str) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/events-elastic.jsonl"),
    )
    .unwrap();
    let events: Vec<Vec<u8>> = text
        .lines()
        .filter(|l| l.contains("\"event_type_id\":1090519054"))
        .map(|l| l.replace("test_connector_guid", guid).into_bytes())
        .collect();
    assert!(!events.is_empty(), "the fixture has Threat Detected events");
    events
}

/// `[amqp]` for `url` and `queue`, plus `more` lines.
fn amqp_toml(url: &str, queue: &str, more: &str) -> String {
    format!("[amqp]\nenabled = true\nurl = \"{url}\"\nqueue = \"{queue}\"\n{more}\n")
}

/// A queue of this test's own on `rabbit`, and an instance consuming it.
async fn instance(name: &str, rabbit: &RabbitMq, more: &str) -> (Instance, String) {
    let queue = unique("se-stream");
    rabbit.declare_queue(&queue).await;
    let mut inst = Instance::new(name);
    inst.extra_config = amqp_toml(&rabbit.url(), &queue, more);
    create_topic(&inst.events, 2).await;
    (inst, queue)
}

/// Waits until the log says the consumer is attached (`n`-th time in this log).
fn wait_attached(inst: &Instance, child: &mut std::process::Child, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while inst.log().matches("AMQP stream consumer attached.").count() < n {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("trustgate exited with {status}:\n{}", inst.log());
        }
        assert!(Instant::now() < deadline, "never attached:\n{}", inst.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `name` reaches `at_least`.
async fn wait_metric(inst: &Instance, name: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while inst.metric(name).await < at_least {
        assert!(
            Instant::now() < deadline,
            "{name} never reached {at_least}:\n{}",
            inst.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_events_reach_the_topic_and_deny_and_garbage_is_dead_lettered() {
    let rabbit = rabbitmq::shared();
    // One heartbeat (at attach) among the records read back below.
    let (inst, queue) = instance("amqp-flow", rabbit, "heartbeat_interval = \"1h\"").await;
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    wait_attached(&inst, &mut child, 1);

    let guid = unique("g");
    let events = threat_detected_fixtures(&guid);
    let account = br#"{"id":77,"event_type_id":1004,"event_type":"Forgotten Password Reset","date":"2026-01-01T00:00:00+00:00"}"#.to_vec();
    let garbage = b"this is not an SE event".to_vec();
    let guidless_detection = br#"{"id":78,"event_type_id":1090519054}"#.to_vec();
    let mut bodies = events.clone();
    bodies.extend([account, garbage.clone(), guidless_detection.clone()]);
    rabbit.publish(&queue, &bodies).await;

    wait_for_reason(&inst, &guid, "compromised").await;
    assert_eq!(decide(&inst, &guid).await["decision"], "deny");

    let records = read_topic(&inst.events, events.len() + 1, Duration::from_secs(20));
    let on_topic: Vec<_> = records
        .iter()
        .filter(|r| header_str(r, HEADER_KIND).as_deref() == Some("event"))
        .collect();
    assert_eq!(
        on_topic.len(),
        events.len(),
        "each event once, the account event not at all"
    );
    for (r, sent) in on_topic.iter().zip(&events) {
        assert_eq!(r.payload(), Some(&sent[..]), "byte-for-byte");
        assert_eq!(r.key(), Some(guid.as_bytes()));
        assert_eq!(header_str(r, HEADER_SOURCE).as_deref(), Some("amqp"));
    }
    let dead = read_topic(&inst.dlq, 2, Duration::from_secs(20));
    assert_eq!(dead.len(), 2);
    for (body, why) in [
        (&garbage, "not an SE event"),
        (&guidless_detection, "no connector_guid"),
    ] {
        let r = dead
            .iter()
            .find(|r| r.payload() == Some(&body[..]))
            .expect("dead-lettered byte-for-byte");
        assert!(header_str(r, HEADER_DLQ_ERROR).unwrap().contains(why));
        assert_eq!(
            header_str(r, HEADER_DLQ_QUEUE).as_deref(),
            Some(queue.as_str())
        );
        assert_eq!(header_str(r, HEADER_SOURCE).as_deref(), Some("amqp"));
    }

    wait_metric(&inst, "trustgate_amqp_acked_total", bodies.len() as f64).await;
    assert_eq!(inst.metric("trustgate_amqp_dead_lettered_total").await, 2.0);
    assert!(stop(&mut child).success(), "{}", inst.log());
    assert_eq!(
        rabbit.ready(&queue).await,
        0,
        "every message was acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkill_before_kafka_acknowledged_loses_nothing() {
    let rabbit = rabbitmq::shared();
    let mut broker = OwnBroker::start();
    let (inst, queue) = {
        let queue = unique("se-stream");
        rabbit.declare_queue(&queue).await;
        let mut inst = Instance::new("amqp-kill");
        inst.brokers = Some(broker.addr());
        inst.extra_config = amqp_toml(&rabbit.url(), &queue, "");
        create_topic_at(&broker.addr(), &inst.events, 2).await;
        (inst, queue)
    };
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    wait_attached(&inst, &mut child, 1);

    // Kafka is gone: trustgate takes the deliveries but can get no acknowledgement for them.
    broker.stop();
    let guid = unique("g");
    let events = threat_detected_fixtures(&guid);
    rabbit.publish(&queue, &events).await;
    wait_metric(&inst, "trustgate_amqp_received_total", events.len() as f64).await;
    assert_eq!(inst.metric("trustgate_amqp_acked_total").await, 0.0);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        rabbit.ready(&queue).await,
        events.len() as u32,
        "unacknowledged deliveries go back to the queue"
    );

    // Everything comes back: the broker, then trustgate, which is redelivered the messages.
    broker.restart();
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    wait_for_reason(&inst, &guid, "compromised").await;
    wait_metric(&inst, "trustgate_amqp_acked_total", events.len() as f64).await;
    // Delivered twice on purpose: the fold keeps one event per identity.
    rabbit.publish(&queue, &events[..1]).await;
    wait_metric(
        &inst,
        "trustgate_amqp_acked_total",
        events.len() as f64 + 1.0,
    )
    .await;
    // Applied by ingest too: the redelivered events and the duplicate.
    let applied = "trustgate_ingest_records_applied_total{kind=\"device\"}";
    wait_metric(&inst, applied, events.len() as f64 + 1.0).await;
    assert_eq!(decide(&inst, &guid).await["decision"], "deny");
    let device = inst.device(&guid).await.expect("the device is known");
    assert_eq!(
        device["devices"][0]["events_remembered"],
        events.len(),
        "each event once, however often delivered: {device}"
    );
    assert!(stop(&mut child).success(), "{}", inst.log());
    assert_eq!(rabbit.ready(&queue).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rabbitmq_restart_is_survived() {
    let mut rabbit = RabbitMq::start();
    let (inst, queue) = instance("amqp-restart", &rabbit, "").await;
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    wait_attached(&inst, &mut child, 1);
    let first = unique("g");
    rabbit
        .publish(&queue, &threat_detected_fixtures(&first)[..1])
        .await;
    wait_for_reason(&inst, &first, "compromised").await;

    rabbit.stop();
    rabbit.restart();
    wait_attached(&inst, &mut child, 2);
    let second = unique("g");
    rabbit
        .publish(&queue, &threat_detected_fixtures(&second)[..1])
        .await;
    wait_for_reason(&inst, &second, "compromised").await;
    assert!(inst.metric("trustgate_amqp_reconnects_total").await >= 1.0);
    assert!(stop(&mut child).success(), "{}", inst.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_is_verified_against_the_configured_ca() {
    let rabbit = rabbitmq::shared();
    // Without the test CA the broker's certificate is refused: never attached.
    let (untrusting, queue) = instance("amqp-tls-no-ca", rabbit, "").await;
    let mut untrusting = untrusting;
    untrusting.extra_config = amqp_toml(&rabbit.tls_url(), &queue, "");
    let mut child = untrusting.spawn();
    untrusting.wait_ready(&mut child).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !untrusting.log().contains("reconnecting") {
        assert!(Instant::now() < deadline, "{}", untrusting.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = untrusting.log();
    assert!(!log.contains("AMQP stream consumer attached."), "{log}");
    assert!(
        log.to_lowercase().contains("certificate") || log.contains("UnknownIssuer"),
        "refused for its certificate:\n{log}"
    );
    assert!(stop(&mut child).success());

    let (mut inst, queue) = instance("amqp-tls", rabbit, "").await;
    let ca = format!("ca_file = \"{}\"", rabbit.ca_path().display());
    inst.extra_config = amqp_toml(&rabbit.tls_url(), &queue, &ca);
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    wait_attached(&inst, &mut child, 1);
    assert!(inst.log().contains("amqps://127.0.0.1"), "{}", inst.log());
    let guid = unique("g");
    rabbit
        .publish(&queue, &threat_detected_fixtures(&guid))
        .await;
    wait_for_reason(&inst, &guid, "compromised").await;
    assert!(stop(&mut child).success(), "{}", inst.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_password_never_reaches_a_log() {
    let rabbit = rabbitmq::shared();
    let queue = unique("se-stream");
    rabbit.declare_queue(&queue).await;
    let mut inst = Instance::new("amqp-secret");
    // The credentials file as `stream create` writes it, plus a wrong password in the URL's
    // place for a second run, so the refusal is logged too.
    let creds = inst.dir.path().join("amqp-credentials.json");
    let write = |password: &str| {
        let json = serde_json::json!({"user_name": rabbitmq::USER, "password": password,
            "queue_name": queue, "host": "127.0.0.1", "port": rabbit.port.to_string(), "proto": "amqp"});
        std::fs::write(&creds, json.to_string()).unwrap();
    };
    write(&rabbit.password);
    inst.extra_config = format!(
        "[amqp]\nenabled = true\ncredentials_path = \"{}\"\n",
        creds.display()
    );
    create_topic(&inst.events, 2).await;
    let debug = |c: &mut std::process::Command| {
        // Everything at trace: the AMQP client's own trace lines (which carry the password) are
        // capped by trustgate whatever RUST_LOG says.
        c.env(
            "RUST_LOG",
            "trace,rdkafka=warn,h2=info,hyper=info,sled=info",
        );
    };
    let mut child = inst.spawn_with(debug);
    inst.wait_ready(&mut child).await;
    wait_attached(&inst, &mut child, 1);
    let guid = unique("g");
    rabbit
        .publish(&queue, &threat_detected_fixtures(&guid))
        .await;
    wait_for_reason(&inst, &guid, "compromised").await;
    assert!(stop(&mut child).success());

    write(&format!("{PASSWORD_SENTINEL}-wrong"));
    let mut child = inst.spawn_with(debug);
    inst.wait_ready(&mut child).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !inst.log().contains("reconnecting") {
        assert!(Instant::now() < deadline, "{}", inst.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stop(&mut child).success());
    // `check-config` with the password in `[amqp] url`.
    inst.extra_config = amqp_toml(&rabbit.url(), &queue, "");
    let check = std::process::Command::new(binary())
        .args(["check-config", "--config"])
        .arg(inst.config_path())
        .output()
        .unwrap();
    assert!(check.status.success());
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(printed.contains("[REDACTED]"), "{printed}");
    let log = inst.log();
    assert!(log.contains("AMQP stream consumer attached."), "{log}");
    for text in [&log, &printed.into_owned()] {
        assert!(
            !text.contains(PASSWORD_SENTINEL),
            "the password leaked:\n{text}"
        );
    }
}

/// Runs `trustgate stream ARGS --config CONFIG`; returns (exit code, stdout, stderr).
fn stream_cli(inst: &Instance, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(binary())
        .arg("stream")
        .args(args)
        .arg("--config")
        .arg(inst.config_path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_create_writes_the_credentials_and_the_simulator_pushes_detections() {
    use crate::common::poller::Tenant;
    use std::os::unix::fs::PermissionsExt;
    let rabbit = rabbitmq::shared();
    let mut inst = Instance::new("amqp-sim");
    let url = rabbit.url();
    let sim = Tenant::new(4)
        .quiet()
        .sim(&["--amqp-url", &url])
        .start(&mut inst);
    let creds = inst.dir.path().join("amqp-credentials.json");
    inst.extra_config += &format!(
        "[amqp]\nenabled = true\ncredentials_path = \"{}\"\n",
        creds.display()
    );
    create_topic(&inst.events, 2).await;

    let (code, out, err) = stream_cli(
        &inst,
        &[
            "create",
            "--name",
            "trustgate e2e",
            "--event-type",
            "1090519054",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let mode = std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the password is kept owner-only");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    assert_eq!(written["password"], rabbit.password.as_str());
    assert!(
        !format!("{out}{err}").contains(PASSWORD_SENTINEL),
        "{out}{err}"
    );
    let (code, listed, _) = stream_cli(&inst, &["list"]);
    assert_eq!(code, 0);
    assert!(
        listed.contains("trustgate e2e") && listed.contains("1090519054"),
        "{listed}"
    );
    assert!(!listed.contains(PASSWORD_SENTINEL));

    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    wait_attached(&inst, &mut child, 1);
    let guid = sim.computers().await[0]["connector_guid"]
        .as_str()
        .unwrap()
        .to_owned();
    sim.compromise(&guid).await;
    wait_for_reason(&inst, &guid, "compromised").await;
    assert!(stop(&mut child).success(), "{}", inst.log());

    // SE's limit: five streams per organisation, then a clear refusal.
    let other = inst.dir.path().join("other.json");
    inst.extra_config = inst
        .extra_config
        .replace(&creds.display().to_string(), &other.display().to_string());
    for i in 2..=5 {
        let (code, out, err) = stream_cli(&inst, &["create", "--name", &format!("s{i}")]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, _, err) = stream_cli(&inst, &["create", "--name", "s6"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("limit is 5") && err.contains("stream delete"),
        "{err}"
    );
    let (code, out, err) = stream_cli(&inst, &["delete", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, listed, _) = stream_cli(&inst, &["list"]);
    assert_eq!(listed.lines().count(), 4, "{listed}");
}

/// Measures (does not assert) Event Stream latency: from publishing a Threat Detected to the
/// stream's queue (confirmed by RabbitMQ) to the first deny for its device, p50/p99. Run with
/// `cargo test --release --test e2e amqp_latency -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark, not a test"]
async fn amqp_latency_report() {
    let rabbit = rabbitmq::shared();
    let (inst, queue) = instance("amqp-latency", rabbit, "").await;
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    wait_attached(&inst, &mut child, 1);
    let conn = rabbit.connect().await;
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut to_deny = Vec::new();
    // The first events also pay for the producer's connection and topic metadata.
    const WARM_UP: usize = 5;
    for i in 0..200 + WARM_UP {
        let guid = unique("g");
        let body = threat_detected_fixtures(&guid).remove(0);
        let sent = Instant::now();
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                &body,
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let denied = wait_for_reason(&inst, &guid, "compromised").await - sent;
        if i >= WARM_UP {
            to_deny.push(denied);
        }
    }
    to_deny.sort();
    let pct = |p: usize| to_deny[(to_deny.len() * p / 100).min(to_deny.len() - 1)];
    println!(
        "amqp publish (confirmed) -> deny: p50 {:?} p99 {:?} max {:?} (n = {})",
        pct(50),
        pct(99),
        to_deny[to_deny.len() - 1],
        to_deny.len()
    );
    assert!(stop(&mut child).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_consume_runs_the_consumer_alone() {
    let rabbit = rabbitmq::shared();
    let (inst, queue) = instance("amqp-consume", rabbit, "heartbeat_interval = \"1h\"").await;
    let log = inst.dir.path().join("consume.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Spawned::new(
        std::process::Command::new(binary())
            .args(["stream", "consume", "--config"])
            .arg(inst.config_path())
            .env("RUST_LOG", "info,rdkafka=warn")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read_log().contains("AMQP stream consumer attached.") {
        assert!(Instant::now() < deadline, "{}", read_log());
        assert!(child.try_wait().unwrap().is_none(), "{}", read_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let guid = unique("g");
    let events = threat_detected_fixtures(&guid);
    rabbit.publish(&queue, &events).await;
    // The heartbeat written at attach, then the events.
    let records = read_topic(&inst.events, events.len() + 1, Duration::from_secs(30));
    let published: Vec<_> = records
        .iter()
        .filter(|r| r.key() == Some(guid.as_bytes()))
        .map(|r| r.payload().unwrap().to_vec())
        .collect();
    assert_eq!(published, events, "{}", read_log());
    assert!(stop(&mut child).success(), "{}", read_log());
    assert_eq!(rabbit.ready(&queue).await, 0, "acknowledged before exit");
}
