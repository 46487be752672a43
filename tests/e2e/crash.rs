//! (b) SIGKILL mid-ingest, repeatedly: the final state equals the fold of everything published.

use crate::common::*;
use std::collections::BTreeMap;
use std::time::Duration;
use trustgate::admin::DeviceView;
use trustgate::fold::{classify, Classified, DeviceState, FoldConfig, RecordInput};
use trustgate::topic::{HEADER_KIND, HEADER_OBSERVED_AT};

const DEVICES: usize = 40;
const RECORDS: usize = 1600;
const KILLS: usize = 10;

/// A deterministic mix of computers (with and without the flag), compromise-class and other
/// events, and redeliveries, with explicit Kafka timestamps.
fn workload(seed: u64, base: i64) -> Vec<Out> {
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut out: Vec<Out> = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let device = next(DEVICES as u64);
        let guid = format!("crash-{device:02}");
        let ts = base + (i as i64) * 1_000;
        let record = match next(10) {
            0..=2 => {
                let flag = match next(3) {
                    0 => "".to_owned(),
                    1 => r#","is_compromised":true"#.into(),
                    _ => r#","is_compromised":false"#.into(),
                };
                let observed = trustgate::time::format_millis(ts - next(120_000) as i64);
                Out::new(format!(
                    r#"{{"connector_guid":"{guid}","hostname":"{guid}-h{}.corp.example.com","operating_system":"Windows 10","network_addresses":[{{"mac":"02:00:00:00:{:02x}:{:02x}","ip":"10.0.0.1"}}]{flag}}}"#,
                    next(3), next(40), next(3)
                ))
                .header(HEADER_KIND, "computer")
                .header(HEADER_OBSERVED_AT, observed)
            }
            3..=5 => {
                let id = 6_500_000_000_000_000_000u64 + next(300);
                // Half the devices only ever see Threat Quarantined (not compromise-class), so
                // their verdict rests on SE's flag alone; the workload then has both verdicts.
                let ty = if device % 2 == 0 {
                    553648143
                } else {
                    [1090519054u64, 553648143, 1107296274][next(3) as usize]
                };
                let date = trustgate::time::format_millis(base + (id % 300) as i64 * 5_000);
                Out::new(format!(
                    r#"{{"id":{id},"event_type_id":{ty},"date":"{date}","connector_guid":"{guid}"}}"#
                ))
            }
            _ if !out.is_empty() => {
                // A redelivery of an earlier record, later.
                let earlier = out[next(out.len() as u64) as usize].clone();
                Out {
                    timestamp: None,
                    ..earlier
                }
            }
            _ => Out::new(format!(
                r#"{{"connector_guid":"{guid}","is_compromised":false}}"#
            )),
        };
        out.push(record.key(&guid).at(ts));
    }
    out
}

fn model(records: &[Out]) -> BTreeMap<String, DeviceState> {
    let cfg = FoldConfig::default();
    let mut states: BTreeMap<String, DeviceState> = BTreeMap::new();
    for r in records {
        let h = |name: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_slice())
        };
        let input = RecordInput {
            value: Some(&r.value),
            kind: h(HEADER_KIND),
            source: None,
            observed_at: h(HEADER_OBSERVED_AT),
            timestamp: r.timestamp.unwrap(),
        };
        if let Ok(Classified::Device(fact)) = classify(&input, &cfg, i64::MAX) {
            states
                .entry(fact.connector_guid.clone())
                .or_insert_with(|| DeviceState::new(&fact.connector_guid))
                .apply(&fact);
        }
    }
    states
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_ingest_loses_nothing() {
    let inst = Instance::new("crash");
    create_topic(&inst.events, 3).await;
    let producer = producer();
    let records = workload(
        0x9e37_79b9_7f4a_7c15,
        trustgate::time::now_millis() - 10 * 3_600_000,
    );
    let per_round = RECORDS / KILLS;
    for round in 0..KILLS {
        let mut child = inst.spawn();
        wait_for_log_count(&inst, "Ingest assigned partitions.", round + 1).await;
        // Publish while ingest applies, and SIGKILL at a different point of the stream each
        // round; the rest of the round is published after the kill.
        let kill_after = (round * 37) % per_round;
        for (i, r) in records[round * per_round..(round + 1) * per_round]
            .iter()
            .enumerate()
        {
            if i == kill_after {
                child.kill().unwrap();
                child.wait().unwrap();
            }
            publish(&producer, &inst.events, r).await;
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;

    let expected = model(&records);
    assert!(expected.len() > DEVICES / 2);
    let grace = FoldConfig::default().grace_millis();
    let mut compromised = 0;
    for (guid, state) in &expected {
        let got = inst
            .device(guid)
            .await
            .unwrap_or_else(|| panic!("{guid} missing after kills:\n{}", inst.log()));
        let want = serde_json::to_value(DeviceView::new(state, grace)).unwrap();
        assert_eq!(got["devices"][0], want, "{guid}");
        compromised += usize::from(want["compromised"] == true);
    }
    assert!(
        compromised > 0 && compromised < expected.len(),
        "the workload exercises both verdicts"
    );
    assert!(stop(&mut child).success());
}

/// Waits until `needle` appears `count` times in the instance's log.
async fn wait_for_log_count(inst: &Instance, needle: &str, count: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while inst.log().matches(needle).count() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} not logged {count} times:\n{}",
            inst.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
