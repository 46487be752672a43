//! Webhook helpers: a Standard Webhooks sender, SE records, and the webhook listener run
//! in-process (for tests that need their own broker or shorter timeouts than the binary's).

use super::{create_topic, unique, Instance, Spawned};
use base64::Engine;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use trustgate::webhook::{self, Limits, WebhookState};

/// A `whsec_` secret whose base64 text is easy to grep for in logs.
pub fn secret(sentinel: &str) -> String {
    let key = format!("{sentinel:-<32}");
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
    )
}

pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `[webhook]` configuration for [`super::Instance::extra_config`], listening on port 0 (the
/// address comes from the log: [`super::Instance::webhook_addr`]).
pub fn webhook_toml(secrets: &[&str], more: &str) -> String {
    let secrets: Vec<String> = secrets.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "[webhook]\nenabled = true\nlisten = \"127.0.0.1:0\"\nsecrets = [{}]\n{more}\n",
        secrets.join(", ")
    )
}

/// Posts deliveries to one webhook listener.
pub struct Sender {
    pub base: String,
    pub client: reqwest::Client,
}

impl Sender {
    pub fn new(addr: SocketAddr) -> Sender {
        Sender {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An unsigned JSON POST, to add (or leave out) headers.
    pub fn post(&self, path: &str, body: impl Into<Vec<u8>>) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.into())
    }

    /// The Standard Webhooks headers of a delivery.
    pub fn signature_headers(
        secret: &str,
        id: &str,
        ts: i64,
        body: &[u8],
    ) -> reqwest::header::HeaderMap {
        let sig = webhook::sign(secret, id, ts, body).unwrap();
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    /// A POST signed with `secret` as delivery `id` at `ts`.
    pub fn signed(
        &self,
        path: &str,
        secret: &str,
        id: &str,
        ts: i64,
        body: &[u8],
    ) -> reqwest::RequestBuilder {
        self.post(path, body.to_vec())
            .headers(Sender::signature_headers(secret, id, ts, body))
    }

    /// Sends a signed delivery stamped now; returns the status and the JSON body.
    pub async fn deliver(
        &self,
        path: &str,
        secret: &str,
        id: &str,
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        send(self.signed(path, secret, id, now_secs(), body)).await
    }

    pub async fn healthz(&self) -> serde_json::Value {
        reqwest::get(self.url("/healthz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the listener answers.
    pub async fn wait_listening(&self) {
        for _ in 0..300 {
            if reqwest::get(self.url("/healthz")).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the webhook listener at {} did not answer", self.base);
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let response = request.send().await.expect("the request is answered");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status} body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// A Threat Detected event for `guid`, written with spacing and a `1.50` that any
/// re-serialisation would change.
pub fn threat_detected(guid: &str, id: u64) -> String {
    let date = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S+00:00");
    format!(
        r#"{{"id": {id}, "event_type_id": 1090519054, "event_type": "Threat Detected", "date": "{date}", "score": 1.50, "connector_guid": "{guid}", "computer": {{"connector_guid": "{guid}", "hostname": "{guid}.example", "network_addresses": []}}}}"#
    )
}

/// A clean Windows computer.
pub fn clean_computer(guid: &str) -> String {
    format!(
        r#"{{"connector_guid": "{guid}", "hostname": "{guid}.example", "operating_system": "Windows 11 Pro", "is_compromised": false, "active": true}}"#
    )
}

/// The webhook listener in-process, writing to `events` on `brokers`.
pub struct Bridge {
    pub sender: Sender,
    pub state: WebhookState,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Bridge {
    /// Creates the topics on `brokers` and serves on a free loopback port. `limits` may shorten
    /// the timeouts.
    pub async fn start(
        brokers: &str,
        events: &str,
        secrets: &[&str],
        limits: impl FnOnce(&mut Limits),
    ) -> Bridge {
        Bridge::start_with(brokers, events, secrets, "", limits).await
    }

    /// [`Bridge::start`] with more `[webhook]` lines (e.g. a `bearer_token`).
    pub async fn start_with(
        brokers: &str,
        events: &str,
        secrets: &[&str],
        more: &str,
        limits: impl FnOnce(&mut Limits),
    ) -> Bridge {
        let id = super::unique("bridge");
        let secrets: Vec<String> = secrets.iter().map(|s| format!("{s:?}")).collect();
        let text = format!(
            "[kafka]\nbrokers = \"{brokers}\"\n\
             [topics]\nevents = \"{events}\"\nrequests = \"{id}.requests\"\nresponses = \"{id}.responses\"\ndlq = \"{id}.dlq\"\n\
             [webhook]\nenabled = true\nsecrets = [{}]\n{more}\n",
            secrets.join(", ")
        );
        let settings = trustgate::config::load_str(&text, "test", std::iter::empty())
            .unwrap()
            .settings;
        trustgate::kafka::ensure_topics(&settings.kafka, &settings.topics)
            .await
            .unwrap();
        let producer = trustgate::kafka::SharedProducer::create(trustgate::kafka::client_config(
            &settings.kafka,
            trustgate::kafka::Role::Producer,
        ))
        .unwrap();
        let publisher = trustgate::publish::EventsPublisher::new(producer, events, webhook::SOURCE);
        let mut l = Limits::from_settings(&settings.webhook);
        limits(&mut l);
        let state = WebhookState::new(&settings.webhook, l, publisher).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sender = Sender::new(listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(webhook::serve(listener, state.clone(), shutdown.clone()));
        Bridge {
            sender,
            state,
            shutdown,
            task,
        }
    }

    pub fn addr(&self) -> String {
        self.sender.base.trim_start_matches("http://").to_owned()
    }
}

/// Asks the admin listener's `POST /v1/decide` about a device known by `guid`.
pub async fn decide(inst: &Instance, guid: &str) -> serde_json::Value {
    let req = serde_json::json!({"request_id": unique("r"), "application": "vpn",
        "device": {"trusted": true, "connector_guid": guid}});
    let r = reqwest::Client::new()
        .post(inst.admin("/v1/decide"))
        .json(&req)
        .send()
        .await
        .unwrap();
    // 503 is the `not_ready` deny (e.g. before the first record reached a fresh store).
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        status.is_success() || (status == 503 && body["reason"] == "not_ready"),
        "decide: {status} {body}"
    );
    body
}

/// Polls `/v1/decide` until the decision for `guid` has `reason`; returns when it did.
pub async fn wait_for_reason(inst: &Instance, guid: &str, reason: &str) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = decide(inst, guid).await;
        if d["reason"] == reason {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "decision for {guid} never became {reason}: {d}\n{}",
            inst.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts `trustgate run` with the webhook enabled on port 0; returns once both listeners
/// answer and ingest caught up.
pub async fn start_with_webhook(
    name: &str,
    secrets: &[&str],
    more: &str,
) -> (Instance, Spawned, Sender) {
    let mut inst = Instance::new(name);
    inst.extra_config = webhook_toml(secrets, more);
    create_topic(&inst.events, 2).await;
    let mut child = inst.spawn();
    inst.wait_ready(&mut child).await;
    let sender = Sender::new(inst.webhook_addr(&mut child));
    sender.wait_listening().await;
    (inst, child, sender)
}
