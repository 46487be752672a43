//! (w) The webhook bridge over real HTTP and a real broker: a signed Threat Detected event turns
//! the next decision into a deny; hostile deliveries are refused and publish nothing; a broker
//! outage is a 503 whose retry lands; slow clients are cut off.

use crate::common::webhook::*;
use crate::common::*;
use rdkafka::Message;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use trustgate::topic::{HEADER_KIND, HEADER_OBSERVED_AT, HEADER_SOURCE};

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_threat_detected_event_flips_the_decision_to_deny() {
    let key = secret("flip-secret");
    let (inst, mut child, sender) = start_with_webhook("wh-flip", &[&key], "").await;
    let guid = unique("g");

    let computer = clean_computer(&guid);
    let ts = now_secs();
    let (status, body) =
        send(sender.signed("/v1/computers", &key, "c-1", ts, computer.as_bytes())).await;
    assert_eq!((status, &body["records"]), (202, &1.into()), "{body}");
    wait_for_reason(&inst, &guid, "trusted_not_compromised").await;

    let event = threat_detected(&guid, 6_533_241_145_273_614_339);
    let sent = Instant::now();
    let (status, body) = sender
        .deliver("/v1/events", &key, "e-1", event.as_bytes())
        .await;
    assert_eq!(status, 202, "{body}");
    let accepted = sent.elapsed();
    let denied = wait_for_reason(&inst, &guid, "compromised").await - sent;
    println!("webhook accept {accepted:?}, accept -> deny {denied:?}");
    assert_eq!(decide(&inst, &guid).await["decision"], "deny");

    let records = read_topic(&inst.events, 2, Duration::from_secs(20));
    assert_eq!(records.len(), 2);
    for r in &records {
        assert_eq!(r.key(), Some(guid.as_bytes()));
        assert_eq!(header_str(r, HEADER_SOURCE).as_deref(), Some("webhook"));
        match header_str(r, HEADER_KIND).as_deref() {
            Some("computer") => {
                assert_eq!(r.payload(), Some(computer.as_bytes()), "byte-for-byte");
                let observed = header_str(r, HEADER_OBSERVED_AT).unwrap();
                let signed = trustgate::time::format_millis(ts * 1000);
                assert_eq!(observed, signed, "observed-at is the signed timestamp");
            }
            Some("event") => {
                assert_eq!(r.payload(), Some(event.as_bytes()), "byte-for-byte");
                assert_eq!(header_str(r, HEADER_OBSERVED_AT), None);
            }
            other => panic!("unexpected kind {other:?}"),
        }
    }
    assert!(stop(&mut child).success(), "{}", inst.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_deliveries_are_refused_and_publish_nothing() {
    let old = secret("sentinel-old-secret");
    let new = secret("sentinel-new-secret");
    let stranger = secret("stranger-secret");
    let token = "sentinel-bearer-token-5a0c9e";
    let more = format!("bearer_token = \"{token}\"\nmax_body_bytes = 65536");
    let (inst, mut child, s) = start_with_webhook("wh-hostile", &[&old, &new], &more).await;
    let guid = unique("g");
    let a = threat_detected(&guid, 1);
    let b = threat_detected(&guid, 2);
    let c = threat_detected(&guid, 3);
    let ev = "/v1/events";
    let now = now_secs();

    // Accepted: the old secret, the rotated new one, and the bearer token.
    assert_eq!(s.deliver(ev, &old, "a", a.as_bytes()).await.0, 202);
    assert_eq!(s.deliver(ev, &new, "b", b.as_bytes()).await.0, 202);
    let bearer = s.post(ev, c.clone()).bearer_auth(token);
    assert_eq!(send(bearer).await.0, 202);
    // The same id again (a sender's retry, freshly signed): 202, not published again.
    let (status, body) = s.deliver(ev, &new, "a", a.as_bytes()).await;
    assert_eq!((status, &body["status"]), (202, &"duplicate".into()));

    let unauthorized = serde_json::json!({"error": "unauthorized"});
    let mut flipped = a.clone().into_bytes();
    flipped[20] ^= 0x01;
    let refused = [
        (
            "bit-flipped body",
            s.signed(ev, &old, "x1", now, a.as_bytes()).body(flipped),
        ),
        (
            "wrong secret",
            s.signed(ev, &stranger, "x2", now, a.as_bytes()),
        ),
        (
            "stale timestamp",
            s.signed(ev, &old, "x3", now - 301, a.as_bytes()),
        ),
        (
            "future timestamp",
            s.signed(ev, &old, "x4", now + 400, a.as_bytes()),
        ),
        (
            "no signature",
            s.post(ev, a.clone())
                .header("webhook-id", "x5")
                .header("webhook-timestamp", now.to_string()),
        ),
        ("no headers at all", s.post(ev, a.clone())),
        (
            "wrong bearer token",
            s.post(ev, a.clone())
                .bearer_auth("sentinel-bearer-token-5a0c9f"),
        ),
    ];
    for (what, request) in refused {
        let (status, body) = send(request).await;
        assert_eq!((status, &body), (401, &unauthorized), "{what}");
    }
    for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut request = s.post(ev, a.clone());
        let sig = trustgate::webhook::sign(&old, "x6", now, a.as_bytes()).unwrap();
        for (name, value) in [
            ("webhook-id", "x6".to_owned()),
            ("webhook-timestamp", now.to_string()),
            ("webhook-signature", sig),
        ] {
            if name != header {
                request = request.header(name, value);
            }
        }
        let (status, body) = send(request).await;
        assert_eq!((status, &body), (401, &unauthorized), "missing {header}");
    }

    let big = format!("[{}]", vec![a.as_str(); 300].join(","));
    assert!(big.len() > 65536);
    // The listener refuses on the declared length without reading the body (and then closes),
    // so the body is never sent: a client still writing it could see a broken pipe instead of
    // the answer, depending on timing.
    let (status, body) = declare_only(&s, ev, &old, "y1", big.as_bytes());
    assert_eq!(status, 413, "{body}");
    let text_plain = s
        .client
        .post(s.url(ev))
        .headers(Sender::signature_headers(&old, "y2", now, a.as_bytes()))
        .header("content-type", "text/plain")
        .body(a.clone());
    assert_eq!(send(text_plain).await.0, 415);
    let two_types = s
        .signed(ev, &old, "y2", now, a.as_bytes())
        .header("content-type", "text/plain");
    assert_eq!(send(two_types).await.0, 415);
    let (status, body) = s.deliver(ev, &old, "y3", b"{\"event_type_id\": 1,").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].is_string() && body.get("items").is_none(),
        "{body}"
    );
    let no_guid = format!(r#"[{a}, {{"id": 9, "event_type_id": 1090519054}}]"#);
    let (status, body) = s.deliver(ev, &old, "y4", no_guid.as_bytes()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["items"][0]["index"], 1, "{body}");
    assert!(body["items"][0]["error"]
        .as_str()
        .unwrap()
        .contains("connector_guid"));
    let (status, body) = s.deliver("/v1/computers", &old, "y5", a.as_bytes()).await;
    assert_eq!(
        (status, &body["items"][0]["index"]),
        (422, &0.into()),
        "{body}"
    );

    // Only a, b and c reached the topic, once each.
    let records = read_topic(&inst.events, 4, Duration::from_secs(5));
    let mut values: Vec<&[u8]> = records.iter().map(|r| r.payload().unwrap()).collect();
    values.sort();
    let mut expected = [a.as_bytes(), b.as_bytes(), c.as_bytes()];
    expected.sort();
    assert_eq!(values, expected);

    let counts = s.healthz().await;
    assert_eq!(counts["status"], "ok");
    assert_eq!(
        (counts["accepted"].as_u64(), counts["duplicates"].as_u64()),
        (Some(3), Some(1)),
        "{counts}"
    );
    assert_eq!(counts["rejected"]["unauthorized"], 10, "{counts}");
    assert_eq!(counts["rejected"]["too_large"], 1, "{counts}");
    assert_eq!(counts["rejected"]["unsupported_media_type"], 2, "{counts}");
    assert_eq!(counts["rejected"]["invalid_json"], 1, "{counts}");
    assert_eq!(counts["rejected"]["invalid_records"], 2, "{counts}");

    // No secret reaches the log or the printed configuration.
    let check = std::process::Command::new(binary())
        .args(["check-config", "--config"])
        .arg(inst.config_path())
        .output()
        .unwrap();
    assert!(stop(&mut child).success(), "{}", inst.log());
    let printed = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    for sentinel in [&old[6..], &new[6..], token] {
        assert!(!inst.log().contains(sentinel), "a secret is in the log");
        assert!(
            !printed.contains(sentinel),
            "a secret is in check-config output"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_broker_stopped_the_answer_is_503_and_the_retry_lands() {
    let mut broker = OwnBroker::start();
    let events = unique("outage.events");
    let key = secret("outage-secret");
    let bridge = Bridge::start(&broker.addr(), &events, &[&key], |l| {
        l.publish_timeout = Duration::from_secs(3);
    })
    .await;
    let s = &bridge.sender;
    let guid = unique("g");
    let event = threat_detected(&guid, 77);
    assert_eq!(
        s.deliver("/v1/events", &key, "warm-up", event.as_bytes())
            .await
            .0,
        202
    );

    broker.stop();
    let retried = threat_detected(&guid, 78);
    let response = s
        .signed("/v1/events", &key, "m-1", now_secs(), retried.as_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");

    broker.restart();
    // The sender retries the same delivery, freshly signed; 503s until the producer reconnects.
    let back = Instant::now();
    let deadline = back + Duration::from_secs(60);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (status, body) = s
            .deliver("/v1/events", &key, "m-1", retried.as_bytes())
            .await;
        if status == 202 {
            assert_eq!(
                body["status"], "accepted",
                "a 503 is not remembered: {body}"
            );
            println!(
                "accepted {:?} after the restart, attempt {attempts}",
                back.elapsed()
            );
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "the broker never came back:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The warm-up and (at least one copy of) the retried record: an attempt that timed out may
    // have been written too once the broker was back, harmlessly.
    let records = read_topic_at(&broker.addr(), &events, 2, Duration::from_secs(10));
    let landed = records
        .iter()
        .filter(|r| r.payload() == Some(retried.as_bytes()))
        .count();
    assert!(landed >= 1, "the retried delivery is on the topic");
    let unavailable = s.healthz().await["rejected"]["unavailable"]
        .as_u64()
        .unwrap();
    assert!(unavailable >= 1, "503s are counted");

    // Shutdown with a delivery in flight: the delivery is still answered (503 here, as the
    // broker is gone again), then the listener stops.
    broker.stop();
    let in_flight = tokio::spawn(
        s.signed("/v1/events", &key, "m-2", now_secs(), retried.as_bytes())
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    bridge.shutdown.cancel();
    let answered = in_flight
        .await
        .unwrap()
        .expect("the in-flight delivery is answered");
    assert_eq!(answered.status(), 503);
    tokio::time::timeout(Duration::from_secs(10), bridge.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_and_slow_deliveries_are_cut_off_and_repeats_in_flight_publish_once() {
    let events = unique("limits.events");
    let key = secret("limits-secret");
    let bridge = Bridge::start(brokers(), &events, &[&key], |l| {
        l.max_body_bytes = 1024;
        l.header_timeout = Duration::from_secs(1);
        l.body_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = bridge.addr();
    let raw = |request: &[u8]| {
        let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(request).unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        (
            String::from_utf8_lossy(&answer).into_owned(),
            started.elapsed(),
        )
    };

    // A declared 10 MB body is refused on its headers, before any of it is sent.
    let (answer, _) = raw(b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000\r\n\r\n{");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""error""#), "{answer}");
    // An undeclared (chunked) one is cut off at the limit.
    let chunk = format!("800\r\n{}\r\n", "x".repeat(0x800));
    let chunked = format!("POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{chunk}");
    let (answer, _) = raw(chunked.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Headers never finished: the connection is closed at the header timeout.
    let (answer, took) = raw(b"POST /v1/events HTTP/1.1\r\nhost: x\r\n");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    assert!(!answer.contains("202"), "{answer}");
    // A body that stops halfway: answered 408 at the body timeout.
    let (answer, took) = raw(b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\":");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");

    // Ten concurrent copies of one delivery: every copy is answered 202, one is published.
    let event = threat_detected(&unique("g"), 5);
    let ts = now_secs();
    let copies: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn(send(bridge.sender.signed(
                "/v1/events",
                &key,
                "same",
                ts,
                event.as_bytes(),
            )))
        })
        .collect();
    for copy in copies {
        assert_eq!(copy.await.unwrap().0, 202);
    }
    let records = read_topic(&events, 2, Duration::from_secs(5));
    assert_eq!(records.len(), 1, "published once");
    assert_eq!(bridge.state.counts()["duplicates"], 9);
    bridge.shutdown.cancel();
    bridge.task.await.unwrap().unwrap();
}

/// A measured, not asserted, latency report: webhook accept, and accept → the decision for the
/// device is a deny. Run with `cargo test --test e2e webhook_latency -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark, not a test"]
async fn webhook_latency_report() {
    let key = secret("latency-secret");
    let (inst, mut child, sender) = start_with_webhook("wh-latency", &[&key], "").await;
    let mut accept = Vec::new();
    let mut to_deny = Vec::new();
    // The first deliveries also pay for the producer's connection and topic metadata.
    const WARM_UP: u64 = 5;
    for i in 0..100 + WARM_UP {
        let guid = unique("g");
        let event = threat_detected(&guid, 1000 + i);
        let sent = Instant::now();
        let (status, _) = sender
            .deliver("/v1/events", &key, &guid, event.as_bytes())
            .await;
        assert_eq!(status, 202);
        let accepted = sent.elapsed();
        let denied = wait_for_reason(&inst, &guid, "compromised").await - sent;
        if i >= WARM_UP {
            accept.push(accepted);
            to_deny.push(denied);
        }
    }
    let pct = |v: &mut Vec<Duration>, p: usize| {
        v.sort();
        v[(v.len() * p / 100).min(v.len() - 1)]
    };
    println!(
        "webhook accept: p50 {:?} p99 {:?}; accept -> deny: p50 {:?} p99 {:?} (n = {})",
        pct(&mut accept, 50),
        pct(&mut accept, 99),
        pct(&mut to_deny, 50),
        pct(&mut to_deny, 99),
        to_deny.len()
    );
    assert!(stop(&mut child).success());
}

/// Sends a signed request's head declaring `body`'s length, but not the body, and reads the
/// answer: for checks that must refuse before reading.
fn declare_only(s: &Sender, path: &str, secret: &str, id: &str, body: &[u8]) -> (u16, String) {
    let now = chrono::Utc::now().timestamp();
    let addr = s.base.trim_start_matches("http://");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in Sender::signature_headers(secret, id, now, body).iter() {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    head.push_str("\r\n");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
    (status, answer)
}
