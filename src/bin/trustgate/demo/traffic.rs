//! The demo's auth system: asks for decisions over Kafka at a steady rate, the way an identity
//! provider would, and reads the replies (Spring-style reply topic and correlation id).

use super::cluster::REPLY_TOPIC;
use super::view::View;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use trustgate::config::Settings;
use trustgate::decision::reply::{HEADER_CORRELATION_ID, HEADER_REPLY_TOPIC};
use trustgate::kafka::{client_config, Role};

/// A simulated device as the auth system knows it.
#[derive(Debug, Clone)]
struct Device {
    guid: String,
    hostname: String,
    mac: Option<String>,
    os: &'static str,
}

type InFlight = Arc<Mutex<HashMap<u64, (Instant, String)>>>;

pub struct Traffic {
    sender: tokio::task::JoinHandle<()>,
    receiver: tokio::task::JoinHandle<()>,
}

impl Traffic {
    pub async fn start(
        settings: &Settings,
        sim: SocketAddr,
        client_id: &str,
        api_key: &str,
        rate: u32,
        view: View,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Traffic> {
        let devices = fetch_devices(sim, client_id, api_key).await?;
        anyhow::ensure!(!devices.is_empty(), "the simulator has no computers");
        let producer: FutureProducer = client_config(&settings.kafka, Role::Producer).create()?;
        let mut consumer_cfg = client_config(&settings.kafka, Role::Ingest);
        consumer_cfg.set("group.id", "demo-auth-system");
        let consumer: BaseConsumer = consumer_cfg.create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(REPLY_TOPIC, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let in_flight: InFlight = Arc::default();
        let receiver = {
            let (in_flight, view, shutdown) = (in_flight.clone(), view.clone(), shutdown.clone());
            tokio::task::spawn_blocking(move || receive(consumer, in_flight, view, shutdown))
        };
        let requests = settings.topics.requests.clone();
        let sender = tokio::spawn(send(
            producer,
            requests,
            devices,
            rate.max(1),
            in_flight,
            shutdown,
        ));
        Ok(Traffic { sender, receiver })
    }

    pub async fn stop(self) {
        let _ = self.sender.await;
        let _ = self.receiver.await;
    }
}

async fn fetch_devices(
    sim: SocketAddr,
    client_id: &str,
    api_key: &str,
) -> anyhow::Result<Vec<Device>> {
    let page: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{sim}/v1/computers?limit=500"))
        .basic_auth(client_id, Some(api_key))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
        .context("reading the simulator's computers")?;
    let data = page["data"].as_array().cloned().unwrap_or_default();
    Ok(data
        .iter()
        .map(|c| {
            let os = c["operating_system"].as_str().unwrap_or_default();
            Device {
                guid: c["connector_guid"].as_str().unwrap_or_default().to_owned(),
                hostname: c["hostname"].as_str().unwrap_or_default().to_owned(),
                mac: c["network_addresses"][0]["mac"].as_str().map(str::to_owned),
                os: match trustgate::se::Platform::from_se_operating_system(os) {
                    Some(trustgate::se::Platform::Windows) => "windows",
                    Some(trustgate::se::Platform::Macos) => "macos",
                    Some(trustgate::se::Platform::Ios) => "ios",
                    Some(trustgate::se::Platform::Linux) => "linux",
                    _ => "other",
                },
            }
        })
        .collect())
}

/// One request: the device named by GUID, hostname or MAC in turn; one in twenty untrusted.
fn request(n: u64, device: &Device) -> String {
    let mut dev = serde_json::json!({"trusted": n % 20 != 7, "os": device.os});
    match (n % 3, &device.mac) {
        (1, _) => dev["hostname"] = device.hostname.clone().into(),
        (2, Some(mac)) => dev["mac_addresses"] = serde_json::json!([mac]),
        _ => dev["connector_guid"] = device.guid.clone().into(),
    }
    serde_json::json!({"request_id": format!("demo-{n}"), "application": "vpn", "user": format!("user{}", n % 97), "device": dev})
        .to_string()
}

async fn send(
    producer: FutureProducer,
    topic: String,
    devices: Vec<Device>,
    rate: u32,
    in_flight: InFlight,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n: u64 = 0;
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let device = &devices[(n as usize / 3) % devices.len()];
        let body = request(n, device);
        let correlation = n.to_be_bytes();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_REPLY_TOPIC,
                value: Some(REPLY_TOPIC),
            })
            .insert(Header {
                key: HEADER_CORRELATION_ID,
                value: Some(&correlation[..]),
            });
        let record = FutureRecord::to(&topic)
            .key(&device.guid)
            .payload(&body)
            .headers(headers);
        trustgate::locks::lock(&in_flight).insert(n, (Instant::now(), device.hostname.clone()));
        if producer.send_result(record).is_err() {
            trustgate::locks::lock(&in_flight).remove(&n);
        }
        n += 1;
    }
}

fn receive(consumer: BaseConsumer, in_flight: InFlight, view: View, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let correlation = msg
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|h| h.key == HEADER_CORRELATION_ID)
                    .and_then(|h| h.value)
            })
            .and_then(|v| <[u8; 8]>::try_from(v).ok())
            .map(u64::from_be_bytes);
        let Some((sent, host)) =
            correlation.and_then(|c| trustgate::locks::lock(&in_flight).remove(&c))
        else {
            continue;
        };
        let Ok(reply) =
            serde_json::from_slice::<serde_json::Value>(msg.payload().unwrap_or_default())
        else {
            continue;
        };
        view.record(
            &host,
            reply["decision"].as_str().unwrap_or("?"),
            reply["reason"].as_str().unwrap_or("?"),
            sent.elapsed(),
        );
    }
}
