//! Liveness: when a source last wrote to the events topic.
//!
//! The liveness age is the time since the newest record or heartbeat from any source (by Kafka
//! record timestamp); it is exported as `feed_age_seconds` (decision responses, `/readyz`) and
//! `trustgate_feed_age_seconds`. Sources write a heartbeat every cycle, so a quiet source stays
//! fresh and a dead one ages: decisions then carry `stale: true` and, under
//! `on_stale = "deny"`, deny with `state_stale`. The store keeps the newest time per source
//! (`Store::liveness`), from which the clock starts. No time here is ever later than now: ingest
//! clamps each record's time to its clock before storing it, and the clock clamps again (a time
//! ahead stored by an older build counts as the moment it is read).

use crate::time::{now_millis, Millis};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NEVER: i64 = i64::MIN;

/// A shared, lock-free "newest record from any source" clock. Ingest advances it; deciders
/// and the admin listener read it.
#[derive(Clone, Debug)]
pub struct LivenessClock(Arc<AtomicI64>);

impl Default for LivenessClock {
    fn default() -> Self {
        LivenessClock(Arc::new(AtomicI64::new(NEVER)))
    }
}

impl LivenessClock {
    /// Starts from what the store remembers (the newest time over every source), never later
    /// than now: a time ahead persisted by an older build must not keep `stale` off.
    pub fn starting_at(newest: Option<Millis>) -> Self {
        let clock = LivenessClock::default();
        if let Some(at) = newest {
            clock.observe(at);
        }
        clock
    }

    /// Records a record's time; the clock only moves forward, and never past now.
    pub(crate) fn observe(&self, at: Millis) {
        self.observe_at(at, now_millis());
    }

    /// [`Self::observe`] with the clock reading given.
    fn observe_at(&self, at: Millis, now: Millis) {
        self.0.fetch_max(at.min(now), Ordering::Relaxed);
    }

    /// Forgets every time: the store's state was cleared to be rebuilt from the events
    /// topic's beginning, and times from the topic as it was must not keep it fresh.
    pub(crate) fn reset(&self) {
        self.0.store(NEVER, Ordering::Relaxed);
    }

    /// The newest record time over every source; `None` when no source has ever written
    /// (the store was never fed).
    pub(crate) fn newest(&self) -> Option<Millis> {
        Some(self.0.load(Ordering::Relaxed)).filter(|t| *t != NEVER)
    }

    /// The liveness age now; `None` when no source has ever written.
    pub(crate) fn age(&self) -> Option<Duration> {
        self.age_at(now_millis())
    }

    fn age_at(&self, now: Millis) -> Option<Duration> {
        self.newest()
            .map(|t| Duration::from_millis(now.saturating_sub(t).max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_moves_forward_and_knows_never() {
        let clock = LivenessClock::default();
        assert_eq!(clock.age_at(10), None);
        clock.observe(5);
        clock.observe(3);
        assert_eq!(clock.age_at(10), Some(Duration::from_millis(5)));
        assert_eq!(
            LivenessClock::starting_at(Some(9)).age_at(10),
            Some(Duration::from_millis(1))
        );
    }

    #[test]
    fn a_time_ahead_is_taken_as_now() {
        let clock = LivenessClock::default();
        clock.observe_at(10 + 365 * 86_400_000, 10);
        assert_eq!(clock.newest(), Some(10));
        assert_eq!(clock.age_at(70), Some(Duration::from_millis(60)));
        let year_ahead = now_millis() + 365 * 86_400_000;
        assert!(LivenessClock::starting_at(Some(year_ahead)).newest() <= Some(now_millis()));
    }
}
