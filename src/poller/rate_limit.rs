//! Staying inside SE's hourly request budget.
//!
//! Two layers, both consulted before every request: a client-side governor quota
//! (`requests_per_hour`, `burst`) that ops size below SE's limit so other integrations keep
//! their share, and SE's own `x-ratelimit-*` headers, which win when they say the budget is
//! nearly spent (the quota cannot see requests made by other API clients of the same tenant).
//! Also here: how long a 429 makes us wait, and the backoff for 5xx and timeouts.

use crate::locks;
use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use reqwest::header::HeaderMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Backoff for 5xx, timeouts and dropped connections: full jitter over `BASE·2^attempt`,
/// capped so a long outage is retried about once a minute rather than ever more rarely.
pub(super) const BACKOFF_BASE: Duration = Duration::from_millis(200);
pub(super) const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// When SE says nothing useful about when a 429 ends, wait this long.
const DEFAULT_429_WAIT: Duration = Duration::from_secs(60);

/// A server-requested wait is clamped to this: SE's window is one hour.
const MAX_SERVER_WAIT: Duration = Duration::from_secs(3600);

/// The governor quota: `burst` requests at once, refilled at `requests_per_hour`.
fn quota(requests_per_hour: u32, burst: u32) -> Quota {
    let rph = NonZeroU32::new(requests_per_hour.max(1)).expect("positive");
    let burst = NonZeroU32::new(burst.max(1)).expect("positive");
    Quota::per_hour(rph).allow_burst(burst)
}

/// SE's rate-limit headers. Real responses use `x-ratelimit-*`; the docs say `X-Rate-Limit-*`
/// (header names are case-insensitive, so only the hyphen differs). Both are read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RateHeaders {
    limit: Option<u32>,
    pub(super) remaining: Option<u32>,
    /// Seconds until the window resets.
    reset: Option<Duration>,
    /// When the window resets.
    reset_date: Option<DateTime<Utc>>,
    /// `Retry-After`, as a delay from when the response was read.
    retry_after: Option<Duration>,
}

fn header<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| headers.get(*n))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn number(headers: &HeaderMap, names: &[&str]) -> Option<u64> {
    header(headers, names).and_then(|v| v.parse().ok())
}

impl RateHeaders {
    /// Reads the headers of a response received at `now`.
    pub(super) fn parse(headers: &HeaderMap, now: DateTime<Utc>) -> RateHeaders {
        let to_u32 = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        RateHeaders {
            limit: number(headers, &["x-ratelimit-limit", "x-rate-limit-limit"]).map(to_u32),
            remaining: number(
                headers,
                &["x-ratelimit-remaining", "x-rate-limit-remaining"],
            )
            .map(to_u32),
            reset: number(headers, &["x-ratelimit-reset", "x-rate-limit-reset"])
                .map(Duration::from_secs),
            reset_date: header(
                headers,
                &["x-ratelimit-resetdate", "x-rate-limit-resetdate"],
            )
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc)),
            retry_after: header(headers, &["retry-after"]).and_then(|v| retry_after(v, now)),
        }
    }

    /// Time until the window resets: `reset` seconds, else `resetdate − now`.
    fn until_reset(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.reset.or_else(|| {
            self.reset_date
                .map(|t| (t - now).to_std().unwrap_or(Duration::ZERO))
        })
    }

    /// How long to hold every request after a successful response: until the reset when the
    /// remaining budget has fallen to `reserve`, else not at all.
    pub(super) fn hold_after_success(&self, reserve: u32, now: DateTime<Utc>) -> Option<Duration> {
        let remaining = self.remaining?;
        if remaining > reserve {
            return None;
        }
        Some(
            self.until_reset(now)
                .unwrap_or(DEFAULT_429_WAIT)
                .min(MAX_SERVER_WAIT),
        )
    }

    /// How long a 429 makes us wait: `Retry-After` when present, else until the reset.
    pub(super) fn hold_after_429(&self, now: DateTime<Utc>) -> Duration {
        self.retry_after
            .or_else(|| self.until_reset(now))
            .unwrap_or(DEFAULT_429_WAIT)
            .min(MAX_SERVER_WAIT)
    }
}

/// `Retry-After`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
fn retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// Full-jitter exponential backoff: uniform in `[0, min(cap, base·2^attempt)]`.
pub(super) fn backoff(attempt: u32, base: Duration, cap: Duration, rng: &mut impl Rng) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rng.gen_range(0..=millis))
}

/// Why a wait ended without permission to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shutting down")]
pub(super) struct Cancelled;

/// The budget every request goes through: the quota, plus a hold set from SE's headers.
pub(super) struct Budget {
    quota: DefaultDirectRateLimiter,
    hold_until: Mutex<Option<Instant>>,
    reserve: u32,
}

impl Budget {
    pub(super) fn new(requests_per_hour: u32, burst: u32, reserve: u32) -> Budget {
        Budget {
            quota: RateLimiter::direct(quota(requests_per_hour, burst)),
            hold_until: Mutex::new(None),
            reserve,
        }
    }

    pub(super) fn reserve(&self) -> u32 {
        self.reserve
    }

    /// Holds every request for `wait` from now (never shortens an existing hold).
    pub(super) fn hold_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut hold = locks::lock(&self.hold_until);
        if hold.is_none_or(|h| h < until) {
            *hold = Some(until);
        }
    }

    fn current_hold(&self) -> Option<Instant> {
        let hold = *locks::lock(&self.hold_until);
        hold.filter(|h| *h > Instant::now())
    }

    /// Waits until a request may be sent: no hold in force and a quota cell available.
    pub(super) async fn acquire(&self, cancel: &CancellationToken) -> Result<(), Cancelled> {
        loop {
            if let Some(until) = self.current_hold() {
                tokio::select! {
                    _ = cancel.cancelled() => return Err(Cancelled),
                    _ = tokio::time::sleep_until(until) => {}
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(Cancelled),
                _ = self.quota.until_ready() => {}
            }
            // A response read while we waited for the quota may have set a hold.
            if self.current_hold().is_none() {
                return Ok(());
            }
        }
    }
}

/// Sleeps for `wait` unless cancelled first.
pub(super) async fn sleep(wait: Duration, cancel: &CancellationToken) -> Result<(), Cancelled> {
    tokio::select! {
        _ = cancel.cancelled() => Err(Cancelled),
        _ = tokio::time::sleep(wait) => Ok(()),
    }
}

#[cfg(test)]
#[path = "rate_limit_tests.rs"]
mod tests;
