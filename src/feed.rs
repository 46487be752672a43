//! Feed liveness: when a source last wrote to the events topic.
//!
//! The feed's age is the time since the newest record or heartbeat from any source (by Kafka
//! record timestamp). Sources write a heartbeat every cycle, so a quiet feed stays fresh and a
//! dead one ages: decisions then carry `stale: true` and, under `on_stale = "deny"`, deny.

use crate::time::{now_millis, Millis};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const NEVER: i64 = i64::MIN;

/// A shared, lock-free "newest feed record" clock. Ingest advances it; deciders read it.
#[derive(Clone, Debug)]
pub struct FeedClock(Arc<AtomicI64>);

impl Default for FeedClock {
    fn default() -> Self {
        FeedClock(Arc::new(AtomicI64::new(NEVER)))
    }
}

impl FeedClock {
    /// Starts from what the store remembers (the newest time over every source).
    pub fn starting_at(newest: Option<Millis>) -> Self {
        let clock = FeedClock::default();
        if let Some(at) = newest {
            clock.observe(at);
        }
        clock
    }

    /// Records a feed record's time; the clock only moves forward.
    pub fn observe(&self, at: Millis) {
        self.0.fetch_max(at, Ordering::Relaxed);
    }

    pub fn newest(&self) -> Option<Millis> {
        Some(self.0.load(Ordering::Relaxed)).filter(|t| *t != NEVER)
    }

    /// The feed's age now; `None` when no source has ever written.
    pub fn age(&self) -> Option<Duration> {
        self.age_at(now_millis())
    }

    pub fn age_at(&self, now: Millis) -> Option<Duration> {
        self.newest()
            .map(|t| Duration::from_millis(now.saturating_sub(t).max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_moves_forward_and_knows_never() {
        let clock = FeedClock::default();
        assert_eq!(clock.age_at(10), None);
        clock.observe(5);
        clock.observe(3);
        assert_eq!(clock.age_at(10), Some(Duration::from_millis(5)));
        assert_eq!(
            FeedClock::starting_at(Some(9)).age_at(10),
            Some(Duration::from_millis(1))
        );
    }
}
