//! Webhook deliveries cannot clear newer detections (#10 item 7), on a real broker over real
//! HTTP: a computer is observed at the earliest of the signed timestamp, the envelope's
//! `observed_at` and the receipt time; a bearer-token delivery may carry events but never
//! computers; slow unauthenticated bodies do not take the slots a signed delivery needs.

use crate::common::webhook::*;
use crate::common::*;
use chrono::{DateTime, Utc};
use rdkafka::Message;
use std::io::Write;
use std::time::Duration;
use trustgate::topic::{HEADER_KIND, HEADER_OBSERVED_AT};

fn observed(record: &rdkafka::message::OwnedMessage) -> DateTime<Utc> {
    let text = header_str(record, HEADER_OBSERVED_AT).expect("a computer has observed-at");
    DateTime::parse_from_rfc3339(&text)
        .unwrap()
        .with_timezone(&Utc)
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_computer_is_observed_at_the_earliest_time_anyone_vouches_for() {
    let events = unique("observed.events");
    let key = secret("observed-secret");
    let bridge = Bridge::start(brokers(), &events, &[&key], |_| {}).await;
    let s = &bridge.sender;
    let now = now_secs();
    let rfc = |secs: i64| at(secs).to_rfc3339();
    // 1. The bridge read SE an hour ago: the envelope's observed_at wins over the signed time.
    let guids = [unique("g"), unique("g"), unique("g")];
    let early = format!(
        r#"{{"observed_at":"{}","data":[{}]}}"#,
        rfc(now - 3600),
        clean_computer(&guids[0])
    );
    // 2. An observed_at later than the signed time (a bridge clock ahead): the signed time wins.
    let late = format!(
        r#"{{"observed_at":"{}","data":[{}]}}"#,
        rfc(now + 3600),
        clean_computer(&guids[1])
    );
    // 3. A signed timestamp in the future, within the tolerance: capped at receipt.
    let ahead = clean_computer(&guids[2]);
    let cases = [
        ("c-early", now, early.as_bytes()),
        ("c-late", now, late.as_bytes()),
        ("c-ahead", now + 120, ahead.as_bytes()),
    ];
    for (id, ts, body) in cases {
        let (status, answer) = send(s.signed("/v1/computers", &key, id, ts, body)).await;
        assert_eq!(status, 202, "{id}: {answer}");
    }
    let after = Utc::now();
    let records = read_topic(&events, 3, Duration::from_secs(20));
    assert_eq!(records.len(), 3);
    assert!(records
        .iter()
        .all(|r| header_str(r, HEADER_KIND).as_deref() == Some("computer")));
    // Partitions do not keep the order of sending: find each computer by its key.
    let of = |guid: &str| {
        let record = records
            .iter()
            .find(|r| r.key() == Some(guid.as_bytes()))
            .unwrap_or_else(|| panic!("no record for {guid}"));
        observed(record)
    };
    assert_eq!(of(&guids[0]), at(now - 3600), "the envelope's time");
    assert_eq!(of(&guids[1]), at(now), "the signed time");
    let capped = of(&guids[2]);
    assert!(
        capped < at(now + 120) && capped <= after,
        "a future signed time is capped at receipt: {capped}"
    );

    // An observed_at that is not RFC 3339 refuses the delivery, and nothing is published.
    let bad = format!(
        r#"{{"observed_at":"yesterday","data":[{}]}}"#,
        clean_computer(&unique("g"))
    );
    let (status, answer) =
        send(s.signed("/v1/computers", &key, "c-bad", now, bad.as_bytes())).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("observed_at"),
        "{answer}"
    );
    bridge.shutdown.cancel();
    bridge.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bearer_token_carries_events_but_never_computers() {
    let events = unique("bearer.events");
    let key = secret("bearer-secret");
    let token = "bearer-token-7e2b";
    let more = format!("bearer_token = \"{token}\"");
    let bridge = Bridge::start_with(brokers(), &events, &[&key], &more, |_| {}).await;
    let s = &bridge.sender;
    let guid = unique("g");

    let computer = clean_computer(&guid);
    let (status, answer) = send(s.post("/v1/computers", computer.clone()).bearer_auth(token)).await;
    assert_eq!(status, 422, "{answer}");
    let reason = answer["error"].as_str().unwrap();
    assert!(reason.contains("signed"), "the answer says why: {reason}");
    assert_eq!(bridge.state.counts()["rejected"]["unsigned_computers"], 1);

    let event = threat_detected(&guid, 77);
    let (status, answer) = send(s.post("/v1/events", event.clone()).bearer_auth(token)).await;
    assert_eq!(status, 202, "{answer}");
    // The same computer, signed, is accepted.
    let (status, _) = s
        .deliver("/v1/computers", &key, "signed-c", computer.as_bytes())
        .await;
    assert_eq!(status, 202);
    let records = read_topic(&events, 3, Duration::from_secs(10));
    let kinds: Vec<_> = records
        .iter()
        .map(|r| header_str(r, HEADER_KIND).unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["event", "computer"],
        "the bearer computer was never published"
    );
    bridge.shutdown.cancel();
    bridge.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_unauthenticated_bodies_do_not_starve_a_signed_delivery() {
    let events = unique("slow.events");
    let key = secret("slow-secret");
    let bridge = Bridge::start(brokers(), &events, &[&key], |l| {
        // Long enough that every slow body is still being read when the signed one arrives.
        l.body_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = bridge.addr();
    // 256 senders with no credentials, each declaring a body and sending a byte of it.
    let slow: Vec<std::net::TcpStream> = (0..256)
        .map(|_| {
            let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
            tcp.write_all(b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{")
                .unwrap();
            tcp
        })
        .collect();
    // Let the listener take up every one of them before the signed delivery (setup, not a
    // measurement: a listener that gives them the delivery slots then answers 503).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let event = threat_detected(&unique("g"), 9);
    let (status, answer) = bridge
        .sender
        .deliver("/v1/events", &key, "signed-among-slow", event.as_bytes())
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(read_topic(&events, 1, Duration::from_secs(10)).len(), 1);
    drop(slow);
    bridge.shutdown.cancel();
    bridge.task.await.unwrap().unwrap();
}
