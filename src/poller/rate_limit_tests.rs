use super::*;
use governor::clock::FakeRelativeClock;
use proptest::prelude::*;
use rand::SeedableRng;
use reqwest::header::{HeaderName, HeaderValue};
use rstest::rstest;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[rstest]
#[case::real_lowercase("x-ratelimit")]
#[case::documented_hyphenated("X-Rate-Limit")]
fn both_header_spellings_are_read(#[case] prefix: &str) {
    let h = headers(&[
        (&format!("{prefix}-Limit"), "3000"),
        (&format!("{prefix}-Remaining"), "2982"),
        (&format!("{prefix}-Reset"), "3595"),
        (&format!("{prefix}-ResetDate"), "2022-04-06T14:32:06Z"),
    ]);
    let r = RateHeaders::parse(&h, at("2022-04-06T13:32:00Z"));
    assert_eq!(r.limit, Some(3000));
    assert_eq!(r.remaining, Some(2982));
    assert_eq!(r.reset, Some(Duration::from_secs(3595)));
    assert_eq!(r.reset_date, Some(at("2022-04-06T14:32:06Z")));
}

#[test]
fn missing_or_garbled_headers_read_as_absent() {
    let h = headers(&[("x-ratelimit-remaining", "lots"), ("retry-after", "soon")]);
    assert_eq!(RateHeaders::parse(&h, Utc::now()), RateHeaders::default());
}

#[test]
fn reset_date_is_used_when_reset_seconds_are_missing() {
    let now = at("2022-04-06T14:00:00Z");
    let h = headers(&[
        ("x-ratelimit-remaining", "5"),
        ("x-ratelimit-resetdate", "2022-04-06T14:10:00Z"),
    ]);
    let r = RateHeaders::parse(&h, now);
    assert_eq!(
        r.hold_after_success(10, now),
        Some(Duration::from_secs(600))
    );
}

#[rstest]
#[case::above_reserve(101, None)]
#[case::at_reserve(100, Some(Duration::from_secs(42)))]
#[case::exhausted(0, Some(Duration::from_secs(42)))]
fn requests_are_held_only_once_remaining_reaches_the_reserve(
    #[case] remaining: u32,
    #[case] hold: Option<Duration>,
) {
    let r = RateHeaders {
        remaining: Some(remaining),
        reset: Some(Duration::from_secs(42)),
        ..Default::default()
    };
    assert_eq!(r.hold_after_success(100, Utc::now()), hold);
}

#[test]
fn no_remaining_header_means_no_hold() {
    let r = RateHeaders {
        reset: Some(Duration::from_secs(42)),
        ..Default::default()
    };
    assert_eq!(r.hold_after_success(100, Utc::now()), None);
}

#[rstest]
#[case::retry_after_seconds(&[("retry-after", "7"), ("x-ratelimit-reset", "900")], 7)]
#[case::retry_after_http_date(
    &[("retry-after", "Wed, 06 Apr 2022 14:00:30 GMT"), ("x-ratelimit-reset", "900")],
    30
)]
#[case::reset_seconds(&[("x-ratelimit-reset", "900")], 900)]
#[case::reset_date(&[("x-rate-limit-resetdate", "2022-04-06T14:02:00Z")], 120)]
#[case::nothing(&[], 60)]
#[case::absurd_reset_is_clamped(&[("x-ratelimit-reset", "999999")], 3600)]
fn a_429_waits_for_retry_after_else_the_reset(#[case] pairs: &[(&str, &str)], #[case] secs: u64) {
    let now = at("2022-04-06T14:00:00Z");
    let r = RateHeaders::parse(&headers(pairs), now);
    assert_eq!(r.hold_after_429(now), Duration::from_secs(secs));
}

proptest! {
    #[test]
    fn backoff_stays_within_full_jitter_bounds(attempt in 0u32..100, seed: u64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let d = backoff(attempt, BACKOFF_BASE, BACKOFF_CAP, &mut rng);
        let ceiling = BACKOFF_BASE
            .saturating_mul(2u32.saturating_pow(attempt.min(31)))
            .min(BACKOFF_CAP);
        prop_assert!(d <= ceiling, "{d:?} > {ceiling:?}");
    }
}

#[test]
fn backoff_grows_then_caps() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let max_of = |attempt, rng: &mut rand::rngs::StdRng| {
        (0..2000)
            .map(|_| backoff(attempt, BACKOFF_BASE, BACKOFF_CAP, rng))
            .max()
            .unwrap()
    };
    let early = max_of(1, &mut rng);
    let late = max_of(20, &mut rng);
    assert!(early <= Duration::from_millis(400));
    // Full jitter still reaches near the cap, and never past it.
    assert!(late > BACKOFF_CAP / 2 && late <= BACKOFF_CAP);
    // The spread is real: retries of many pollers do not line up.
    let samples: std::collections::HashSet<_> = (0..100)
        .map(|_| backoff(10, BACKOFF_BASE, BACKOFF_CAP, &mut rng))
        .collect();
    assert!(samples.len() > 90);
}

/// With a fake clock, over ten simulated hours the quota never lets more than
/// `burst + requests_per_hour` through in any one-hour window, and does reach its rate.
#[test]
fn the_quota_bounds_every_hour_window() {
    let (rph, burst) = (2400u32, 10u32);
    let clock = FakeRelativeClock::default();
    let limiter = RateLimiter::direct_with_clock(quota(rph, burst), clock.clone());
    let step = Duration::from_millis(250);
    let mut granted: Vec<Duration> = Vec::new();
    let mut now = Duration::ZERO;
    while now < Duration::from_secs(10 * 3600) {
        // A greedy client: asks as fast as it can.
        while limiter.check().is_ok() {
            granted.push(now);
        }
        clock.advance(step);
        now += step;
    }
    let hour = Duration::from_secs(3600);
    let mut start = 0;
    for end in 0..granted.len() {
        while granted[end] - granted[start] >= hour {
            start += 1;
        }
        assert!(end - start < (rph + burst) as usize);
    }
    let per_hour = granted.len() as f64 / 10.0;
    assert!(per_hour >= f64::from(rph) * 0.99, "{per_hour}");
}

#[tokio::test(start_paused = true)]
async fn a_hold_delays_acquire_until_it_ends() {
    let budget = Budget::new(3600, 10, 100);
    let cancel = CancellationToken::new();
    budget.hold_for(Duration::from_secs(30));
    let t0 = Instant::now();
    budget.acquire(&cancel).await.unwrap();
    assert!(Instant::now() - t0 >= Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_shorter_hold_never_shortens_a_longer_one() {
    let budget = Budget::new(3600, 10, 100);
    budget.hold_for(Duration::from_secs(300));
    budget.hold_for(Duration::from_secs(1));
    let t0 = Instant::now();
    budget.acquire(&CancellationToken::new()).await.unwrap();
    assert!(Instant::now() - t0 >= Duration::from_secs(300));
}

#[tokio::test(start_paused = true)]
async fn cancelling_ends_a_hold() {
    let budget = Budget::new(3600, 10, 100);
    let cancel = CancellationToken::new();
    budget.hold_for(Duration::from_secs(3000));
    cancel.cancel();
    assert_eq!(budget.acquire(&cancel).await, Err(Cancelled));
}
