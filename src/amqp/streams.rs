//! SE's Event Stream management API (`/v1/event_streams`): create a stream (its
//! `amqp_credentials`, whose password SE shows only then), list and delete streams. Called by
//! `trustgate stream create|list|delete` with the poller's API credentials (`[poller]
//! base_url`/`region`, `client_id`, `api_key`: creating needs Read & Write credentials).

use super::endpoint::Credentials;
use crate::config::PollerSettings;
use secrecy::ExposeSecret;
use serde::Deserialize;
use std::time::Duration;

/// SE allows at most this many streams per organisation.
pub const STREAMS_PER_ORGANISATION: usize = 5;

/// Why a management call failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    /// `[poller] client_id` / `api_key` are not set.
    #[error("poller.client_id and poller.api_key (Read & Write API credentials) are required")]
    NoCredentials,
    /// The request did not get an answer.
    #[error("SE did not answer: {0}")]
    Transport(String),
    /// SE refused; `details` are SE's error messages.
    #[error("SE answered {status}: {details}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// SE's error details, joined.
        details: String,
    },
    /// The organisation already has the most streams SE allows.
    #[error(
        "the organisation already has {0} event streams, SE's limit is {STREAMS_PER_ORGANISATION}: \
         delete one first (`trustgate stream list`, then `trustgate stream delete ID`)"
    )]
    Limit(usize),
    /// The answer is not what SE documents.
    #[error("unexpected answer from SE: {0}")]
    Unexpected(String),
}

/// A stream as `GET /v1/event_streams` lists it (no password).
#[derive(Debug, Clone, Deserialize)]
pub struct StreamInfo {
    /// SE's id (what `delete` takes).
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its event-type filter; empty: every type.
    #[serde(default)]
    pub event_type: Vec<u64>,
    /// Its group filter; empty: every group.
    #[serde(default)]
    pub group_guid: Vec<String>,
}

/// A stream just created, with the credentials SE shows only now.
pub struct CreatedStream {
    /// SE's id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// `data.amqp_credentials`.
    pub credentials: Credentials,
}

/// The client: SE's API root and Basic auth.
pub struct StreamsApi {
    client: reqwest::Client,
    base_url: String,
    client_id: String,
    api_key: secrecy::SecretString,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Deserialize)]
struct Created {
    id: u64,
    name: String,
    amqp_credentials: Credentials,
}

impl StreamsApi {
    /// A client for the tenant the poller is configured for.
    pub fn new(poller: &PollerSettings) -> Result<StreamsApi, StreamsError> {
        let (Some(client_id), Some(api_key)) = (&poller.client_id, &poller.api_key) else {
            return Err(StreamsError::NoCredentials);
        };
        let client = reqwest::Client::builder()
            .connect_timeout(poller.connect_timeout)
            .timeout(poller.request_timeout.max(Duration::from_secs(1)))
            .build()
            .map_err(|e| StreamsError::Transport(e.to_string()))?;
        Ok(StreamsApi {
            client,
            base_url: poller.base_url.clone(),
            client_id: client_id.clone(),
            api_key: api_key.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base_url))
            .basic_auth(&self.client_id, Some(self.api_key.expose_secret()))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, StreamsError> {
        let response = request
            .send()
            .await
            .map_err(|e| StreamsError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| StreamsError::Transport(e.without_url().to_string()))?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        Err(StreamsError::Refused {
            status: status.as_u16(),
            details: error_details(&body),
        })
    }

    /// `POST /v1/event_streams`. A refusal while the organisation holds
    /// [`STREAMS_PER_ORGANISATION`] streams is reported as [`StreamsError::Limit`].
    pub async fn create(
        &self,
        name: &str,
        event_types: &[u64],
        groups: &[String],
    ) -> Result<CreatedStream, StreamsError> {
        let mut body = serde_json::json!({ "name": name });
        if !event_types.is_empty() {
            body["event_type"] = serde_json::json!(event_types);
        }
        if !groups.is_empty() {
            body["group_guid"] = serde_json::json!(groups);
        }
        let sent = self
            .send(
                self.request(reqwest::Method::POST, "/v1/event_streams")
                    .json(&body),
            )
            .await;
        let bytes = match sent {
            Ok(bytes) => bytes,
            Err(StreamsError::Refused { status, details }) if (400..500).contains(&status) => {
                let existing = self.list().await.map(|l| l.len()).unwrap_or(0);
                if existing >= STREAMS_PER_ORGANISATION {
                    return Err(StreamsError::Limit(existing));
                }
                return Err(StreamsError::Refused { status, details });
            }
            Err(e) => return Err(e),
        };
        let created: Envelope<Created> = serde_json::from_slice(&bytes)
            .map_err(|e| StreamsError::Unexpected(crate::config::scrub(&e.to_string())))?;
        Ok(CreatedStream {
            id: created.data.id,
            name: created.data.name,
            credentials: created.data.amqp_credentials,
        })
    }

    /// `GET /v1/event_streams`.
    pub async fn list(&self) -> Result<Vec<StreamInfo>, StreamsError> {
        let bytes = self
            .send(self.request(reqwest::Method::GET, "/v1/event_streams"))
            .await?;
        let listed: Envelope<Vec<StreamInfo>> =
            serde_json::from_slice(&bytes).map_err(|e| StreamsError::Unexpected(e.to_string()))?;
        Ok(listed.data)
    }

    /// `DELETE /v1/event_streams/{id}`.
    pub async fn delete(&self, id: u64) -> Result<(), StreamsError> {
        self.send(self.request(reqwest::Method::DELETE, &format!("/v1/event_streams/{id}")))
            .await
            .map(|_| ())
    }
}

/// SE's error body (`{"errors": [{"details": ["…"]}]}`) as one line, or the status alone.
fn error_details(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Item {
        #[serde(default)]
        details: Vec<String>,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) => e
            .errors
            .into_iter()
            .flat_map(|i| i.details)
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => "(no SE error body)".into(),
    }
}
