//! SE's Event Streams (`/v1/event_streams`), simulated: create (201 with `amqp_credentials`,
//! the password shown only then), list (no passwords), delete, SE's limit of 5 streams per
//! organisation; and, when the simulator is given a RabbitMQ (`--amqp-url`), the push itself:
//! every event the tenant gets after a stream was created is published to that stream's queue
//! (persistent, with publisher confirms), filtered by the stream's event types and groups.
//!
//! The stream's credentials are the broker URL's user and password (one test broker serves
//! every stream); each stream has its own durable queue, `event_stream_<id>`.

use crate::envelope::{base_url, ok, se_error, self_only};
use crate::Simulator;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// SE's limit of active streams per organisation.
pub(crate) const MAX_STREAMS: usize = 5;
/// How often the pusher looks for new events.
const PUSH_EVERY: Duration = Duration::from_millis(50);

/// One stream.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stream {
    id: u64,
    name: String,
    event_type: Vec<u64>,
    group_guid: Vec<String>,
    #[serde(skip)]
    queue: String,
    /// The event-log sequence number from which this stream still has to push.
    #[serde(skip)]
    cursor: u64,
}

/// Every stream of the tenant.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    streams: Vec<Stream>,
    next_id: u64,
}

/// `POST /v1/event_streams`'s body.
#[derive(Deserialize)]
pub(crate) struct NewStream {
    name: String,
    #[serde(default)]
    event_type: Vec<u64>,
    #[serde(default)]
    group_guid: Vec<String>,
}

/// The parts of `--amqp-url` a stream's credentials carry. No `Debug`: it holds the password.
#[derive(Clone)]
pub(crate) struct Broker {
    url: String,
    user: String,
    password: String,
    host: String,
    port: u16,
    tls: bool,
}

impl Broker {
    /// `amqp[s]://user:password@host:port[/vhost]` (no percent-decoding: test credentials).
    pub(crate) fn parse(url: &str) -> anyhow::Result<Broker> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| anyhow::anyhow!("--amqp-url is not an amqp:// URL"))?;
        let tls = match scheme {
            "amqp" => false,
            "amqps" => true,
            _ => anyhow::bail!("--amqp-url must be amqp:// or amqps://"),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (userinfo, hostport) = authority
            .rsplit_once('@')
            .ok_or_else(|| anyhow::anyhow!("--amqp-url needs user:password@"))?;
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse()?),
            None => (hostport, if tls { 5671 } else { 5672 }),
        };
        Ok(Broker {
            url: url.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            host: host.to_owned(),
            port,
            tls,
        })
    }

    async fn connect(&self) -> Result<Connection, lapin::Error> {
        Connection::connect(&self.url, ConnectionProperties::default()).await
    }
}

/// `GET /v1/event_streams`: every stream, without credentials.
pub(crate) async fn list(State(sim): State<Simulator>, headers: HeaderMap, uri: Uri) -> Response {
    let all = sim.streams(|s| s.streams.clone());
    ok(self_only(&base_url(&headers), &uri), all)
}

/// `POST /v1/event_streams`: 201 with the credentials; 400 past SE's limit.
pub(crate) async fn create(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    uri: Uri,
    body: axum::body::Bytes,
) -> Response {
    let new: NewStream = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => return se_error(StatusCode::BAD_REQUEST, vec![e.to_string()]),
    };
    if new.name.trim().is_empty() {
        return se_error(StatusCode::BAD_REQUEST, vec!["name is required".into()]);
    }
    let id = match sim.streams(|s| {
        if s.streams.len() >= MAX_STREAMS {
            return None;
        }
        s.next_id += 1;
        Some(s.next_id)
    }) {
        Some(id) => id,
        None => {
            return se_error(
                StatusCode::BAD_REQUEST,
                vec![format!(
                    "Event stream limit reached: an organization can have at most {MAX_STREAMS} event streams"
                )],
            )
        }
    };
    let queue = format!("event_stream_{id}");
    let broker = sim.stream_broker();
    if let Some(broker) = &broker {
        if let Err(e) = declare(broker, &queue).await {
            return se_error(
                StatusCode::SERVICE_UNAVAILABLE,
                vec![format!("the event stream broker is unavailable: {e}")],
            );
        }
    }
    let cursor = sim.with_world(|w| w.events().next_seq());
    let stream = Stream {
        id,
        name: new.name,
        event_type: new.event_type,
        group_guid: new.group_guid,
        queue: queue.clone(),
        cursor,
    };
    sim.streams(|s| s.streams.push(stream.clone()));
    let credentials = match &broker {
        Some(b) => json!({"user_name": b.user, "password": b.password, "queue_name": queue,
            "host": b.host, "port": b.port.to_string(), "proto": if b.tls { "amqps" } else { "amqp" }}),
        // Nothing pushes without a broker; the credentials still have SE's shape.
        None => json!({"user_name": format!("stream-{id}"), "password": format!("simulated-{id}"),
            "queue_name": queue, "host": "localhost", "port": "5671", "proto": "amqps"}),
    };
    let data = json!({"id": id, "name": stream.name, "event_type": stream.event_type,
        "group_guid": stream.group_guid, "amqp_credentials": credentials});
    let mut response = ok(self_only(&base_url(&headers), &uri), data);
    *response.status_mut() = StatusCode::CREATED;
    response
}

/// `DELETE /v1/event_streams/{id}`.
pub(crate) async fn delete(
    State(sim): State<Simulator>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let removed = sim.streams(|s| {
        let at = s.streams.iter().position(|st| st.id == id)?;
        Some(s.streams.remove(at))
    });
    let Some(removed) = removed else {
        return se_error(
            StatusCode::NOT_FOUND,
            vec![format!("event stream {id} was not found")],
        );
    };
    if let Some(broker) = sim.stream_broker() {
        if let Ok(conn) = broker.connect().await {
            if let Ok(channel) = conn.create_channel().await {
                let _ = channel
                    .queue_delete(removed.queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
            let _ = conn.close(200, "done".into()).await;
        }
    }
    ok(self_only(&base_url(&headers), &uri), json!({})).into_response()
}

async fn declare(broker: &Broker, queue: &str) -> Result<(), lapin::Error> {
    let conn = broker.connect().await?;
    let channel = conn.create_channel().await?;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

/// Publishes every new event to the queues of the streams it matches, until `shutdown`. A
/// broker error is logged and retried at the next tick from the same cursors (at least once).
pub(crate) async fn push(sim: Simulator, broker: Broker, shutdown: CancellationToken) {
    let mut conn: Option<Connection> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(PUSH_EVERY) => {}
        }
        if sim.streams(|s| s.streams.is_empty()) {
            continue;
        }
        if conn.as_ref().is_none_or(|c| !c.status().connected()) {
            conn = match broker.connect().await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "Event stream broker unreachable; retrying.");
                    continue;
                }
            };
        }
        if let Err(e) = push_once(&sim, conn.as_ref().expect("connected")).await {
            tracing::warn!(error = %e, "Event stream push failed; retrying.");
            conn = None;
        }
    }
}

async fn push_once(sim: &Simulator, conn: &Connection) -> Result<(), lapin::Error> {
    let streams = sim.streams(|s| s.streams.clone());
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    for stream in streams {
        let (events, next) = sim.with_world(|w| {
            let log = w.events();
            let events: Vec<Vec<u8>> = log
                .added_since(stream.cursor)
                .into_iter()
                .filter(|e| {
                    (stream.event_type.is_empty() || stream.event_type.contains(&e.event_type_id))
                        && (stream.group_guid.is_empty()
                            || e.group_guids.iter().any(|g| stream.group_guid.contains(g)))
                })
                .map(|e| e.raw.get().as_bytes().to_vec())
                .collect();
            (events, log.next_seq())
        });
        let mut confirms = Vec::with_capacity(events.len());
        for body in &events {
            confirms.push(
                channel
                    .basic_publish(
                        "".into(),
                        stream.queue.as_str().into(),
                        BasicPublishOptions::default(),
                        body,
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_content_type("application/json".into()),
                    )
                    .await?,
            );
        }
        for confirm in confirms {
            confirm.await?;
        }
        sim.streams(|s| {
            if let Some(st) = s.streams.iter_mut().find(|st| st.id == stream.id) {
                st.cursor = next;
            }
        });
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_give_the_credentials() {
        let b = Broker::parse("amqp://tg:pw-1@127.0.0.1:5673/%2f").unwrap();
        assert_eq!((b.user.as_str(), b.password.as_str()), ("tg", "pw-1"));
        assert_eq!((b.host.as_str(), b.port, b.tls), ("127.0.0.1", 5673, false));
        let b = Broker::parse("amqps://u:p@rabbit").unwrap();
        assert_eq!((b.port, b.tls), (5671, true));
        assert!(Broker::parse("http://u:p@x").is_err());
    }
}
