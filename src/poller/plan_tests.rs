use super::*;
use proptest::prelude::*;
use rstest::rstest;

fn settings(events_interval: u64, inventory_interval: u64, rph: u32) -> PollerSettings {
    let mut s = crate::config::load_str("", "test", std::iter::empty())
        .unwrap()
        .settings
        .poller;
    s.events_interval = Duration::from_secs(events_interval);
    s.inventory_interval = Duration::from_secs(inventory_interval);
    s.requests_per_hour = rph;
    s
}

#[test]
fn defaults_for_a_mid_size_tenant() {
    // 30 s polls re-reading 10 min of overlap; hourly sweeps of 500 computers per page.
    let s = settings(30, 3600, 2400);
    let tenant = Tenant {
        computers: 10_000,
        events_per_hour: 1_000,
    };
    let p = Plan::new(&s, tenant);
    // 1000/h over a 630 s window = 175 events: one page per poll, 120 polls an hour.
    assert_eq!(p.event_pages_per_poll, 1);
    assert_eq!(p.events_requests_per_hour, 120.0);
    assert_eq!(p.pages_per_sweep, 20);
    assert_eq!(p.inventory_requests_per_hour, 20.0);
    assert_eq!(p.total_requests_per_hour, 140.0);
    // 21 pages, burst 10: 11 queued 1.5 s apart.
    assert_eq!(
        p.compromise_freshness,
        Duration::from_millis(30_000 + 16_500)
    );
    assert_eq!(
        p.resolution_freshness,
        Duration::from_millis(3_600_000 + 16_500)
    );
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    let text = p.render(tenant);
    assert!(text.contains("events (1 pages/poll)"), "{text}");
    assert!(text.contains("compromise (event poll) 47s"), "{text}");
    assert!(text.contains("140.0"), "{text}");
}

#[rstest]
#[case::polls_too_often(1, 3600, 2400, "fall behind")]
#[case::quota_above_se_limit(60, 3600, 2950, "exceeds SE's 3000/hour")]
fn plans_that_cannot_fit_say_why(
    #[case] events_s: u64,
    #[case] inventory_s: u64,
    #[case] rph: u32,
    #[case] why: &str,
) {
    let p = Plan::new(
        &settings(events_s, inventory_s, rph),
        Tenant {
            computers: 100,
            events_per_hour: 10,
        },
    );
    assert!(!p.warnings().is_empty());
    assert!(
        p.warnings().iter().any(|w| w.contains(why)),
        "{:?}",
        p.warnings()
    );
}

#[test]
fn a_busy_tenant_needs_several_pages_per_poll() {
    // 60 000 events/h over a 630 s window = 10 500 events = 21 pages of 500.
    let p = Plan::new(
        &settings(30, 3600, 2400),
        Tenant {
            computers: 1,
            events_per_hour: 60_000,
        },
    );
    assert_eq!(p.event_pages_per_poll, 21);
    assert_eq!(p.events_requests_per_hour, 21.0 * 120.0);
    assert!(!p.warnings().is_empty());
    let text = p.render(Tenant {
        computers: 1,
        events_per_hour: 60_000,
    });
    assert!(text.contains("freshness: unbounded"), "{text}");
}

proptest! {
    #[test]
    fn more_load_never_costs_less(
        computers in 0u64..1_000_000,
        events in 0u64..1_000_000,
        extra in 1u64..100_000,
    ) {
        let s = settings(30, 3600, 2400);
        let base = Plan::new(&s, Tenant { computers, events_per_hour: events });
        let more = Plan::new(&s, Tenant { computers: computers + extra, events_per_hour: events + extra });
        prop_assert!(more.total_requests_per_hour >= base.total_requests_per_hour);
        prop_assert!(more.compromise_freshness >= base.compromise_freshness);
        prop_assert!(base.compromise_freshness >= s.events_interval);
        prop_assert_eq!(
            base.total_requests_per_hour,
            base.events_requests_per_hour + base.inventory_requests_per_hour
        );
    }
}

#[test]
fn the_event_stream_replaces_or_backs_the_event_poll() {
    let tenant = Tenant {
        computers: 1_000,
        events_per_hour: 1_000,
    };
    let mut s = settings(30, 3600, 2400);
    s.events = false;
    let off = Plan::new(&s, tenant).with_stream(true);
    assert_eq!(off.events_requests_per_hour, 0.0);
    assert_eq!(off.total_requests_per_hour, off.inventory_requests_per_hour);
    let text = off.render(tenant);
    assert!(text.contains("events (off)"), "{text}");
    assert!(
        text.contains("compromise seconds (Event Stream, no request budget)"),
        "{text}"
    );
    assert!(off.warnings().is_empty(), "{:?}", off.warnings());

    let alone = Plan::new(&s, tenant);
    assert!(
        alone.warnings()[0].contains("no Event Stream"),
        "{:?}",
        alone.warnings()
    );
    let both = Plan::new(&settings(300, 3600, 2400), tenant).with_stream(true);
    assert!(both.render(tenant).contains("as a safety net"));
}
