//! The SE API client: one GET at a time through the shared [`Budget`], with retries.
//!
//! HTTP Basic with the 3rd-party API client ID and API key (the key stays a [`SecretString`]:
//! reqwest marks the Authorization header sensitive, and nothing here formats it), gzip, rustls,
//! connect and request timeouts. A response is returned only when it is a 2xx whose body splits
//! into records, so callers never see a half page.

use super::rate_limit::{
    backoff, sleep, Budget, Cancelled, RateHeaders, BACKOFF_BASE, BACKOFF_CAP,
};
use crate::config::PollerSettings;
use crate::se::split_records;
use crate::telemetry::metrics;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// After this many failed attempts at one page the cycle gives up (and the next cycle retries
/// from its checkpoint); with the capped backoff that is several minutes of outage.
const MAX_ATTEMPTS: u32 = 12;

/// Why a GET did not produce a page.
#[derive(Debug, thiserror::Error)]
pub(super) enum FetchError {
    /// 401/403: the credentials are wrong or lack scope. Retrying would only burn budget.
    #[error("SE API refused the credentials of client id {client_id:?}: HTTP {status} ({details}); check [poller] client_id and api_key (and the key's scope), then restart")]
    Unauthorized {
        status: StatusCode,
        client_id: String,
        details: String,
    },
    /// A 4xx other than 401/403/429: the request itself is wrong.
    #[error("SE API answered HTTP {status} to {path}: {details}")]
    Rejected {
        status: StatusCode,
        path: String,
        details: String,
    },
    /// 5xx, timeouts, dropped connections or unreadable bodies, still failing after retries.
    #[error("SE API unavailable for {path} after {attempts} attempts: {last}")]
    Unavailable {
        path: String,
        attempts: u32,
        last: String,
    },
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
}

/// A page as received.
pub(super) struct Page {
    pub(super) body: String,
    /// When the request that produced it was sent.
    pub(super) sent_at: DateTime<Utc>,
}

/// A cheap-to-clone SE client sharing one budget.
#[derive(Clone)]
pub(super) struct Client {
    http: reqwest::Client,
    base_url: String,
    client_id: String,
    api_key: SecretString,
    budget: Arc<Budget>,
}

/// What one attempt came to.
enum Attempt {
    Done(Page),
    /// Try again after this wait (already decided: 429 hold or backoff).
    Retry(String),
    Fatal(FetchError),
}

impl Client {
    pub(super) fn new(settings: &PollerSettings) -> anyhow::Result<Client> {
        let client_id = settings
            .client_id
            .clone()
            .ok_or_else(|| anyhow::anyhow!("poller.client_id is not set"))?;
        let api_key = settings.api_key.clone().ok_or_else(|| {
            anyhow::anyhow!("poller.api_key (or TRUSTGATE_POLLER__API_KEY) is not set")
        })?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .gzip(true)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .user_agent(concat!("trustgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            base_url: settings.base_url.clone(),
            client_id,
            api_key,
            budget: Arc::new(Budget::new(
                settings.requests_per_hour,
                settings.burst,
                settings.reserve,
            )),
        })
    }

    /// The absolute URL of an API path such as `/v1/events?limit=500`.
    pub(super) fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base_url, path_and_query)
    }

    /// GETs `url` (absolute, e.g. a `next` link) until it yields a page, a fatal error, or
    /// [`MAX_ATTEMPTS`] transient failures.
    pub(super) async fn get(
        &self,
        url: &str,
        cancel: &CancellationToken,
    ) -> Result<Page, FetchError> {
        let path = loggable_path(url);
        let mut last = String::new();
        for attempt in 0..MAX_ATTEMPTS {
            self.budget.acquire(cancel).await?;
            match self.attempt(url, &path, cancel).await? {
                Attempt::Done(page) => return Ok(page),
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retry(why) => {
                    let wait = backoff(attempt, BACKOFF_BASE, BACKOFF_CAP, &mut rand::thread_rng());
                    tracing::warn!(
                        path,
                        attempt,
                        error = why,
                        retry_in_ms = wait.as_millis() as u64,
                        "SE request failed; retrying."
                    );
                    last = why;
                    sleep(wait, cancel).await?;
                }
            }
        }
        Err(FetchError::Unavailable {
            path,
            attempts: MAX_ATTEMPTS,
            last,
        })
    }

    async fn attempt(
        &self,
        url: &str,
        path: &str,
        cancel: &CancellationToken,
    ) -> Result<Attempt, Cancelled> {
        let sent_at = Utc::now();
        let request = self
            .http
            .get(url)
            .basic_auth(&self.client_id, Some(self.api_key.expose_secret()))
            .header(reqwest::header::ACCEPT, "application/json")
            .send();
        metrics::poller_request();
        let response = tokio::select! {
            _ = cancel.cancelled() => return Err(Cancelled),
            r = request => r,
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                metrics::poller_request_failed("transport");
                // reqwest's Display holds the URL, which carries no credential (Basic auth is a
                // header); without_url keeps the log line short anyway.
                return Ok(Attempt::Retry(causes(&e.without_url())));
            }
        };
        let status = response.status();
        let rate = RateHeaders::parse(response.headers(), Utc::now());
        if status == StatusCode::TOO_MANY_REQUESTS {
            // Not note_budget: a 429 says remaining 0, and its Retry-After (when present) is
            // a shorter, explicit wait that must win over the window's reset.
            let wait = rate.hold_after_429(Utc::now());
            metrics::poller_rate_limited();
            metrics::poller_budget_remaining(rate.remaining.unwrap_or(0));
            tracing::warn!(
                path,
                wait_s = wait.as_secs(),
                "SE answered 429; holding every request (Retry-After, else until its window resets)."
            );
            self.budget.hold_for(wait);
            return Ok(Attempt::Retry("HTTP 429".into()));
        }
        self.note_budget(&rate);
        let body = tokio::select! {
            _ = cancel.cancelled() => return Err(Cancelled),
            b = response.text() => b,
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => {
                metrics::poller_request_failed("transport");
                return Ok(Attempt::Retry(causes(&e.without_url())));
            }
        };
        Ok(self.classify(status, path, sent_at, body))
    }

    fn classify(
        &self,
        status: StatusCode,
        path: &str,
        sent_at: DateTime<Utc>,
        body: String,
    ) -> Attempt {
        if status.is_success() {
            return match split_records(&body) {
                Ok(_) => Attempt::Done(Page { body, sent_at }),
                Err(e) => {
                    metrics::poller_request_failed("body");
                    Attempt::Retry(format!("unreadable page: {e}"))
                }
            };
        }
        if status.is_server_error() {
            metrics::poller_request_failed("5xx");
            return Attempt::Retry(format!("HTTP {status}"));
        }
        let details = error_details(&body);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            metrics::poller_request_failed("auth");
            return Attempt::Fatal(FetchError::Unauthorized {
                status,
                client_id: self.client_id.clone(),
                details,
            });
        }
        metrics::poller_request_failed("4xx");
        Attempt::Fatal(FetchError::Rejected {
            status,
            path: path.to_owned(),
            details,
        })
    }

    /// Records SE's view of the budget and holds requests when it is nearly spent.
    fn note_budget(&self, rate: &RateHeaders) {
        if let Some(remaining) = rate.remaining {
            metrics::poller_budget_remaining(remaining);
        }
        if let Some(wait) = rate.hold_after_success(self.budget.reserve(), Utc::now()) {
            metrics::poller_budget_held();
            tracing::info!(
                remaining = rate.remaining,
                reserve = self.budget.reserve(),
                wait_s = wait.as_secs(),
                "SE budget down to the reserve; holding requests until its window resets."
            );
            self.budget.hold_for(wait);
        }
    }
}

/// An error and its sources ("error sending request: operation timed out").
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// The path and query of a URL, for logs: never the scheme's userinfo.
fn loggable_path(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        },
        Err(_) => "<unparsable url>".into(),
    }
}

/// SE's error `details`, or the start of an unexpected body.
fn error_details(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        #[serde(default)]
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        details: Vec<String>,
    }
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(b) if !b.errors.is_empty() => b
            .errors
            .iter()
            .map(|e| {
                let mut s = e.description.clone().unwrap_or_default();
                if !e.details.is_empty() {
                    s = format!("{s}: {}", e.details.join("; "));
                }
                s
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => body.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn se_error_bodies_are_summarised() {
        let body = r#"{"version":"v1.0.0","data":{},"errors":[{"error_code":401,"description":"Unauthorized","details":["Unknown API key or Client ID"]}]}"#;
        assert_eq!(
            error_details(body),
            "Unauthorized: Unknown API key or Client ID"
        );
        assert_eq!(error_details("<html>oops</html>"), "<html>oops</html>");
    }

    #[test]
    fn logged_paths_never_carry_userinfo() {
        assert_eq!(
            loggable_path("https://id:sekrit@api.amp.cisco.com/v1/events?limit=5&offset=10"),
            "/v1/events?limit=5&offset=10"
        );
    }
}
