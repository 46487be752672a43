//! Budget arithmetic for `trustgate poll --plan`: what the configured intervals cost per hour
//! for a tenant of a given size, and how fresh that keeps compromises and resolutions.
//!
//! Pure: no I/O, so the numbers are tested directly.

use crate::config::PollerSettings;
use std::fmt::Write;
use std::time::Duration;

/// SE's observed hourly limit per API client (`x-ratelimit-limit: 3000`).
const SE_HOURLY_LIMIT: u32 = 3000;

/// A tenant's size.
#[derive(Debug, Clone, Copy)]
pub struct Tenant {
    /// Computers in the tenant: every inventory sweep reads all of them.
    pub computers: u64,
    /// Events the tenant produces per hour: every event poll reads those of its interval plus
    /// the overlap window.
    pub events_per_hour: u64,
}

/// The plan for one configuration and tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Pages one event poll reads (it re-reads the overlap window every time).
    event_pages_per_poll: u64,
    events_requests_per_hour: f64,
    pages_per_sweep: u64,
    inventory_requests_per_hour: f64,
    total_requests_per_hour: f64,
    quota: u32,
    reserve: u32,
    /// From a compromise happening in SE to its event being on the topic, at worst.
    compromise_freshness: Duration,
    /// From a resolution in SE's console to the clean observation being on the topic, at worst.
    resolution_freshness: Duration,
    /// Whether the event poll runs (`[poller] events`).
    event_poll: bool,
    /// Whether the Event Stream (`[amqp] enabled`) brings events too.
    stream: bool,
}

fn pages(items: f64, page_size: u32) -> u64 {
    ((items / f64::from(page_size.max(1))).ceil() as u64).max(1)
}

fn per_hour(interval: Duration) -> f64 {
    3600.0 / interval.as_secs_f64().max(0.001)
}

impl Plan {
    /// What the intervals and quota in `s` cost for `tenant`, and the freshness they buy.
    pub fn new(s: &PollerSettings, tenant: Tenant) -> Plan {
        let window = (s.events_interval + s.events_overlap).as_secs_f64();
        let per_poll = tenant.events_per_hour as f64 * window / 3600.0;
        let event_pages = if s.events {
            pages(per_poll, s.page_size)
        } else {
            0
        };
        let sweep_pages = pages(tenant.computers as f64, s.page_size);
        let events_rph = if s.events {
            per_hour(s.events_interval) * event_pages as f64
        } else {
            0.0
        };
        let inventory_rph = per_hour(s.inventory_interval) * sweep_pages as f64;
        // At worst a poll or a sweep starts when the other one has just drained the burst, so
        // the pages past the burst go out one quota period apart.
        let spacing = 3600.0 / f64::from(s.requests_per_hour.max(1));
        let queued = (event_pages + sweep_pages).saturating_sub(u64::from(s.burst)) as f64;
        let wait = Duration::from_secs_f64(queued * spacing);
        Plan {
            event_pages_per_poll: event_pages,
            events_requests_per_hour: events_rph,
            pages_per_sweep: sweep_pages,
            inventory_requests_per_hour: inventory_rph,
            total_requests_per_hour: events_rph + inventory_rph,
            quota: s.requests_per_hour,
            reserve: s.reserve,
            compromise_freshness: s.events_interval + wait,
            resolution_freshness: s.inventory_interval + wait,
            event_poll: s.events,
            stream: false,
        }
    }

    /// Accounts for the Event Stream (`[amqp] enabled`): detections arrive within seconds and
    /// spend no request budget; the event poll, if on, is then a safety net.
    pub fn with_stream(mut self, stream: bool) -> Plan {
        self.stream = stream;
        self
    }

    /// Why the plan cannot be sustained; empty when it fits.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if !self.event_poll && !self.stream {
            w.push(
                "poller.events = false and no Event Stream ([amqp] enabled): no detection reaches trustgate except through other producers"
                    .to_owned(),
            );
        }
        if self.total_requests_per_hour > f64::from(self.quota) {
            w.push(format!(
                "the poller needs {:.0} requests/hour but the quota is {}: polls will fall behind; lengthen events_interval or inventory_interval, or raise requests_per_hour",
                self.total_requests_per_hour, self.quota
            ));
        }
        let usable = SE_HOURLY_LIMIT.saturating_sub(self.reserve);
        if self.quota > usable {
            w.push(format!(
                "requests_per_hour = {} exceeds SE's {SE_HOURLY_LIMIT}/hour minus the reserve of {}: SE's headers will hold requests (or answer 429) before the quota does",
                self.quota, self.reserve
            ));
        }
        w
    }

    /// The human-readable report.
    pub fn render(&self, tenant: Tenant) -> String {
        let pct = |n: f64, of: u32| 100.0 * n / f64::from(of.max(1));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Tenant: {} computers, {} events/hour\n",
            tenant.computers, tenant.events_per_hour
        );
        let _ = writeln!(
            out,
            "{:<24} {:>10} {:>9} {:>12}",
            "part", "req/hour", "of quota", "of SE limit"
        );
        for (name, n) in [
            (
                if self.event_poll {
                    format!("events ({} pages/poll)", self.event_pages_per_poll)
                } else {
                    "events (off)".to_owned()
                },
                self.events_requests_per_hour,
            ),
            (
                format!("inventory ({} pages/sweep)", self.pages_per_sweep),
                self.inventory_requests_per_hour,
            ),
            ("total".to_owned(), self.total_requests_per_hour),
        ] {
            let _ = writeln!(
                out,
                "{name:<24} {n:>10.1} {:>8.1}% {:>11.1}%",
                pct(n, self.quota),
                pct(n, SE_HOURLY_LIMIT)
            );
        }
        let _ = writeln!(
            out,
            "\nquota {} requests/hour; SE limit {SE_HOURLY_LIMIT}/hour; reserve {} (requests held below it)",
            self.quota, self.reserve
        );
        if self.total_requests_per_hour > f64::from(self.quota) {
            // Requests queue faster than the quota drains them: no bound holds.
            let _ = writeln!(
                out,
                "worst-case freshness: unbounded (the poller needs more than its quota)"
            );
        } else {
            let poll = humantime::format_duration(round(self.compromise_freshness)).to_string();
            let compromise = match (self.stream, self.event_poll) {
                (true, true) => {
                    format!("seconds (Event Stream; event poll {poll} as a safety net)")
                }
                (true, false) => "seconds (Event Stream, no request budget)".to_owned(),
                (false, true) => format!("(event poll) {poll}"),
                (false, false) => "never (no event source)".to_owned(),
            };
            let _ = writeln!(
                out,
                "worst-case freshness: compromise {compromise}; resolution (inventory sweep) {}",
                humantime::format_duration(round(self.resolution_freshness)),
            );
        }
        let _ = writeln!(
            out,
            "(plus one extra sweep resolution_grace after each start, and each page's response time)"
        );
        out
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().ceil() as u64)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
