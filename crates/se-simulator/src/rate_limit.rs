//! SE's hourly request budget per API client, and the headers that report it.
//!
//! The window opens with the first request and lasts an hour; real responses then count down
//! `x-ratelimit-reset` (seconds) towards `x-ratelimit-resetdate` (e.g. 3573 s after two requests).
//! Past the limit every request gets 429 until the window closes.

use chrono::{DateTime, Duration, SecondsFormat, Utc};

/// What the rate-limit headers of one response say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    pub(crate) limit: u32,
    pub(crate) remaining: u32,
    /// Whole seconds until the window resets, rounded up.
    pub(crate) reset_secs: i64,
    pub(crate) reset_at: DateTime<Utc>,
}

impl Quota {
    /// The four headers, with SE's lowercase names (no hyphen between "rate" and "limit").
    pub(crate) fn headers(&self) -> [(&'static str, String); 4] {
        [
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", self.reset_secs.to_string()),
            (
                "x-ratelimit-resetdate",
                self.reset_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            ),
        ]
    }
}

#[derive(Debug, Clone)]
pub(crate) struct HourlyLimit {
    limit: u32,
    window: Duration,
    opened: Option<DateTime<Utc>>,
    used: u32,
}

impl HourlyLimit {
    pub(crate) fn new(limit: u32) -> Self {
        HourlyLimit {
            limit,
            window: Duration::hours(1),
            opened: None,
            used: 0,
        }
    }

    fn roll(&mut self, now: DateTime<Utc>) {
        if self.opened.is_none_or(|o| now >= o + self.window) {
            self.opened = Some(now);
            self.used = 0;
        }
    }

    fn quota(&self, now: DateTime<Utc>) -> Quota {
        let reset_at = self.opened.unwrap_or(now) + self.window;
        let millis = (reset_at - now).num_milliseconds().max(0);
        Quota {
            limit: self.limit,
            remaining: self.limit.saturating_sub(self.used),
            reset_secs: (millis + 999) / 1000,
            reset_at,
        }
    }

    /// Counts one request. `Ok` with the quota left after it, or `Err` when the budget is spent.
    pub(crate) fn take(&mut self, now: DateTime<Utc>) -> Result<Quota, Quota> {
        self.roll(now);
        if self.used >= self.limit {
            return Err(self.quota(now));
        }
        self.used += 1;
        Ok(self.quota(now))
    }

    /// The quota without counting a request (for responses to unauthenticated requests).
    pub(crate) fn peek(&self, now: DateTime<Utc>) -> Quota {
        let mut copy = self.clone();
        copy.roll(now);
        copy.quota(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2022-04-06T13:32:33Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn counts_down_then_refuses_until_the_window_closes() {
        let mut l = HourlyLimit::new(3);
        let start = t0();
        assert_eq!(l.take(start).unwrap().remaining, 2);
        assert_eq!(l.take(start + Duration::seconds(27)).unwrap().remaining, 1);
        let q = l.take(start + Duration::seconds(27)).unwrap();
        assert_eq!((q.remaining, q.reset_secs), (0, 3573));
        let refused = l.take(start + Duration::seconds(60)).unwrap_err();
        assert_eq!((refused.remaining, refused.reset_secs), (0, 3540));
        assert_eq!(refused.reset_at, start + Duration::hours(1));
        let after = l.take(start + Duration::hours(1)).unwrap();
        assert_eq!(after.remaining, 2, "a new window opens at the reset");
    }

    #[rstest]
    #[case(0, 3600)]
    #[case(1, 3600)]
    #[case(999, 3600)]
    #[case(1000, 3599)]
    #[case(3_599_001, 1)]
    fn reset_rounds_up(#[case] elapsed_ms: i64, #[case] reset: i64) {
        let mut l = HourlyLimit::new(10);
        l.take(t0()).unwrap();
        assert_eq!(
            l.peek(t0() + Duration::milliseconds(elapsed_ms)).reset_secs,
            reset
        );
    }

    #[test]
    fn peek_does_not_count() {
        let mut l = HourlyLimit::new(2);
        assert_eq!(l.peek(t0()).remaining, 2);
        l.take(t0()).unwrap();
        assert_eq!(l.peek(t0()).remaining, 1);
        assert_eq!(l.peek(t0()).remaining, 1);
    }

    #[test]
    fn headers_use_se_names_and_formats() {
        let mut l = HourlyLimit::new(3000);
        let q = l.take(t0()).unwrap();
        assert_eq!(
            q.headers(),
            [
                ("x-ratelimit-limit", "3000".to_string()),
                ("x-ratelimit-remaining", "2999".to_string()),
                ("x-ratelimit-reset", "3600".to_string()),
                ("x-ratelimit-resetdate", "2022-04-06T14:32:33Z".to_string()),
            ]
        );
    }
}
