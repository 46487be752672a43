//! (#14 item 1) Kills during a webhook delivery and during a poll: `trustgate run` with the
//! webhook listener and the poller enabled is SIGKILLed at random points while a sender
//! delivers SE events to the webhook (retrying every delivery until it is acknowledged, as a
//! Standard Webhooks sender does) and the simulated SE tenant logs new events for the poller;
//! it is restarted each cycle.
//!
//! Pass: every delivery is eventually acknowledged, and every acknowledged one is on the events
//! topic and applied (its device reads compromised through the admin API); every device event
//! the tenant holds reaches the topic (duplicates allowed). A kill between the webhook's publish
//! and its answer only makes the sender deliver again, never loses a record.
//!
//! Environment: `TRUSTGATE_SOURCE_KILLS` (default 8), `TRUSTGATE_SOURCE_SEED` (default random;
//! printed at the start); figures through `common::figures`.

use crate::common::poller::*;
use crate::common::webhook::{secret, threat_detected, webhook_toml, Sender};
use crate::common::*;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

/// A delivery: its id (the webhook-id), the device it names and its body.
#[derive(Clone)]
struct Delivery {
    id: String,
    guid: String,
    body: String,
}

/// Delivery `n`: a Threat Detected event for a device of its own.
fn delivery(n: u64) -> Delivery {
    let guid = format!("src-dev-{n:05}");
    Delivery {
        id: format!("src-delivery-{n}"),
        body: threat_detected(&guid, EVENT_IDS + n),
        guid,
    }
}

const EVENT_IDS: u64 = 8_000_000_000_000_000_000;

/// What one cycle's sender did.
#[derive(Default)]
struct Sent {
    acked: Vec<Delivery>,
    /// Left unacknowledged when the sender stopped: delivered again next cycle.
    unacked: Vec<Delivery>,
    /// Attempts whose connection was refused (the instance down or starting).
    refused: usize,
    /// Attempts cut after the connection was made: a kill during a delivery.
    cut: usize,
    /// Attempts answered with an error status (e.g. 503 while it cannot publish).
    refused_status: usize,
}

/// Delivers `retry` and then (when `fresh`) new deliveries from `*next` on, one after the other
/// every 10 ms, each until it is acknowledged (2xx) as a Standard Webhooks sender would, until
/// `stop` (or, without `fresh`, until `retry` is done).
async fn deliver(
    sender: Sender,
    secret: String,
    retry: Vec<Delivery>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
    fresh: bool,
    stop: tokio_util::sync::CancellationToken,
) -> Sent {
    use std::sync::atomic::Ordering;
    let mut sent = Sent::default();
    let mut queue: std::collections::VecDeque<Delivery> = retry.into();
    loop {
        let d = match queue.pop_front() {
            Some(d) => d,
            None if fresh => delivery(next.fetch_add(1, Ordering::SeqCst)),
            None => return sent,
        };
        loop {
            if stop.is_cancelled() {
                sent.unacked.push(d);
                sent.unacked.extend(queue);
                return sent;
            }
            let ts = chrono::Utc::now().timestamp();
            let attempt = sender
                .signed("/v1/events", &secret, &d.id, ts, d.body.as_bytes())
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match attempt {
                Ok(r) if r.status().is_success() => break,
                Ok(_) => sent.refused_status += 1,
                Err(e) if e.is_connect() => sent.refused += 1,
                Err(_) => sent.cut += 1,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sent.acked.push(d);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kills_during_webhook_deliveries_and_polls_lose_no_acknowledged_record() {
    let started = Instant::now();
    let cycles: usize = std::env::var("TRUSTGATE_SOURCE_KILLS")
        .ok()
        .map(|v| v.parse().expect("TRUSTGATE_SOURCE_KILLS: a whole number"))
        .unwrap_or(8);
    let seed: u64 = std::env::var("TRUSTGATE_SOURCE_SEED")
        .ok()
        .map(|v| v.parse().expect("TRUSTGATE_SOURCE_SEED: a u64"))
        .unwrap_or_else(rand::random);
    eprintln!("source kills: {cycles} cycles, TRUSTGATE_SOURCE_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut inst = Instance::new("src-kills");
    let sim = Tenant::new(10)
        .sim(&["--seed", "9", "--history", "30m", "--noise-every", "2s"])
        .sim(&["--compromise-every", "4s", "--resolve-after", "30s"])
        .sim(&["--hourly-limit", "100000"])
        .poller("enabled = true\nevents_interval = \"1s\"\nevents_overlap = \"2s\"\npage_size = 3")
        .poller("requests_per_hour = 14400\nburst = 1\ninventory_interval = \"1h\"")
        .start(&mut inst);
    let key = secret("source-kills");
    inst.extra_config += &webhook_toml(&[&key], "");
    create_topic(&inst.events, 3).await;

    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut acked: Vec<Delivery> = Vec::new();
    let mut retry: Vec<Delivery> = Vec::new();
    let (mut refused, mut cut, mut refused_status) = (0, 0, 0);
    let mut running = None;
    for cycle in 0..=cycles {
        let last = cycle == cycles;
        let mut child = inst.spawn();
        let sender = Sender::new(inst.webhook_addr(&mut child));
        let stop = tokio_util::sync::CancellationToken::new();
        let delivering = tokio::spawn(deliver(
            sender,
            key.clone(),
            std::mem::take(&mut retry),
            next.clone(),
            !last,
            stop.clone(),
        ));
        if last {
            // Only what kills left unacknowledged; then the checks.
            inst.wait_ready(&mut child).await;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !delivering.is_finished() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else {
            // From start-up (listener up, producer connecting) to well into the poll and the
            // deliveries: kills land before, during and after a delivery's publish and a page's.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(200..4_000))).await;
            child.kill().unwrap();
            child.wait().unwrap();
        }
        stop.cancel();
        let sent = delivering.await.unwrap();
        acked.extend(sent.acked);
        retry = sent.unacked;
        refused += sent.refused;
        cut += sent.cut;
        refused_status += sent.refused_status;
        if last {
            running = Some(child);
        }
    }
    let mut child = running.expect("the last run");
    assert_eq!(
        retry.len(),
        0,
        "deliveries never acknowledged (seed {seed}):\n{}",
        inst.log()
    );
    let expected = device_events(&sim.events().await);
    let webhook_keys: Vec<String> = acked
        .iter()
        .map(|d| {
            let n: u64 = d.id.rsplit('-').next().unwrap().parse().unwrap();
            format!("{}:1090519054", EVENT_IDS + n)
        })
        .collect();
    let msgs = wait_for_topic(&inst.events, Duration::from_secs(120), |m| {
        let got = events_on_topic(m);
        missing(&expected, m).is_empty() && webhook_keys.iter().all(|k| got.contains_key(k))
    });
    let got = events_on_topic(&msgs);
    let lost_polled = missing(&expected, &msgs);
    let lost_webhook: Vec<&String> = webhook_keys
        .iter()
        .filter(|k| !got.contains_key(*k))
        .collect();
    assert!(
        lost_polled.is_empty() && lost_webhook.is_empty(),
        "lost (seed {seed}): {} polled events of {}, {} acknowledged deliveries of {}: {lost_polled:?} {lost_webhook:?}",
        lost_polled.len(),
        expected.len(),
        lost_webhook.len(),
        acked.len()
    );
    // Applied, not only published.
    let deadline = Instant::now() + Duration::from_secs(60);
    for d in &acked {
        loop {
            let v = inst.device(&d.guid).await;
            if v.as_ref()
                .and_then(|v| v["devices"][0]["compromised"].as_bool())
                == Some(true)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never applied: {v:?}\n{}",
                d.guid,
                inst.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(stop_child(&mut child), "{}", inst.log());
    let duplicates: usize = got.values().map(|c| c.len() - 1).sum();
    eprintln!(
        "source kills: {cycles} kills, {} deliveries acknowledged ({cut} attempts cut by a kill, {refused} refused connections, {refused_status} error answers), {} polled events, {duplicates} duplicate copies, 0 lost",
        acked.len(),
        expected.len()
    );
    figures::record(
        "crash-loop",
        "source_kills",
        serde_json::json!({
            "cycles": cycles,
            "deliveries_acknowledged": acked.len(),
            "deliveries_cut_by_a_kill": cut,
            "delivery_attempts_refused": refused + refused_status,
            "polled_events_checked": expected.len(),
            "lost": lost_polled.len() + lost_webhook.len(),
            "duplicate_copies": duplicates,
            "seconds": started.elapsed().as_secs(),
            "seed": seed.to_string(),
        }),
    );
}

fn stop_child(child: &mut Spawned) -> bool {
    stop(child).success()
}
