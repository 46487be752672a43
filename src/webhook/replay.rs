//! Remembering delivered `webhook-id`s, so a repeat is answered 202 without publishing again.
//!
//! An id is remembered only once its delivery got a 202 ([`Pending::accept`]); a delivery that
//! failed (503) is forgotten, so its retry publishes. A repeat arriving while the first delivery
//! of its id is still in flight waits for that one's outcome: then it is a duplicate (the first
//! was accepted) or it claims the id itself (the first failed).
//!
//! Memory is bounded: entries expire after the window, and past `capacity` remembered ids the
//! oldest is forgotten early. Forgetting early is safe: the worst case is a record written twice,
//! which the fold absorbs. In-flight entries are bounded by the listener's concurrency limit.

use crate::locks;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A cheap-to-clone handle to one shared cache.
#[derive(Clone)]
pub(super) struct ReplayCache {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    window: Duration,
    capacity: usize,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Remembered ids in expiry order. An element is stale when its id's entry has since
    /// changed; stale elements are skipped when popped.
    expiry: VecDeque<(Instant, String)>,
}

enum Entry {
    /// A delivery of this id is being published. Its sender lives in the [`Pending`]; waiters
    /// wake when it is dropped.
    InFlight(watch::Receiver<()>),
    /// Accepted; a repeat before this instant is a duplicate.
    Done(Instant),
}

/// The outcome of [`ReplayCache::claim`].
pub(super) enum Claim {
    /// This delivery publishes; tell the cache how it ended with the [`Pending`].
    First(Pending),
    /// An earlier delivery of this id was accepted within the window.
    Duplicate,
}

/// The claim of one in-flight delivery. Dropped without [`Pending::accept`], the id is
/// forgotten.
pub(super) struct Pending {
    cache: ReplayCache,
    id: String,
    accepted: bool,
    // Dropped after `Drop::drop` updated the entry, which wakes the waiters.
    _done: watch::Sender<()>,
}

impl ReplayCache {
    pub(super) fn new(window: Duration, capacity: usize) -> ReplayCache {
        ReplayCache {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                window,
                capacity: capacity.max(1),
            }),
        }
    }

    /// Claims `id` for publishing, waiting while another delivery of it is in flight.
    pub(super) async fn claim(&self, id: &str) -> Claim {
        loop {
            let mut in_flight = {
                let mut state = self.lock();
                let now = Instant::now();
                state.expire(now);
                match state.entries.get(id) {
                    Some(Entry::Done(until)) if *until > now => return Claim::Duplicate,
                    Some(Entry::InFlight(rx)) => rx.clone(),
                    _ => {
                        let (tx, rx) = watch::channel(());
                        state.entries.insert(id.to_owned(), Entry::InFlight(rx));
                        return Claim::First(Pending {
                            cache: self.clone(),
                            id: id.to_owned(),
                            accepted: false,
                            _done: tx,
                        });
                    }
                }
            };
            // Nothing is ever sent: this returns (with an error) once the sender is dropped.
            let _ = in_flight.changed().await;
        }
    }

    /// How many ids are remembered or in flight.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        locks::lock(&self.inner.state)
    }

    fn finish(&self, id: &str, accepted: bool) {
        let mut state = self.lock();
        if !accepted {
            state.entries.remove(id);
            return;
        }
        let until = Instant::now() + self.inner.window;
        state.entries.insert(id.to_owned(), Entry::Done(until));
        state.expiry.push_back((until, id.to_owned()));
        while state.expiry.len() > self.inner.capacity {
            state.forget_oldest();
        }
    }
}

impl State {
    fn expire(&mut self, now: Instant) {
        while self.expiry.front().is_some_and(|(until, _)| *until <= now) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((until, id)) = self.expiry.pop_front() {
            if matches!(self.entries.get(&id), Some(Entry::Done(t)) if *t == until) {
                self.entries.remove(&id);
            }
        }
    }
}

impl Pending {
    /// The delivery got its 202: remember the id for the window.
    pub(super) fn accept(mut self) {
        self.accepted = true;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.cache.finish(&self.id, self.accepted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> ReplayCache {
        ReplayCache::new(Duration::from_secs(60), 100)
    }

    fn first(claim: Claim) -> Pending {
        match claim {
            Claim::First(p) => p,
            Claim::Duplicate => panic!("expected a first delivery"),
        }
    }

    #[tokio::test]
    async fn an_accepted_id_is_a_duplicate_within_the_window() {
        let c = cache();
        first(c.claim("a").await).accept();
        assert!(matches!(c.claim("a").await, Claim::Duplicate));
        first(c.claim("b").await).accept();
    }

    #[tokio::test]
    async fn a_failed_delivery_is_forgotten_so_its_retry_publishes() {
        let c = cache();
        drop(first(c.claim("a").await));
        assert!(c.is_empty());
        first(c.claim("a").await).accept();
    }

    #[tokio::test]
    async fn entries_expire_after_the_window() {
        let c = ReplayCache::new(Duration::from_millis(50), 100);
        first(c.claim("a").await).accept();
        tokio::time::sleep(Duration::from_millis(80)).await;
        first(c.claim("a").await).accept();
        tokio::time::sleep(Duration::from_millis(80)).await;
        first(c.claim("z").await).accept();
        assert_eq!(c.len(), 1, "the expired id was dropped");
    }

    #[tokio::test]
    async fn memory_is_bounded_by_forgetting_the_oldest() {
        let c = ReplayCache::new(Duration::from_secs(60), 3);
        for id in ["a", "b", "c", "d"] {
            first(c.claim(id).await).accept();
        }
        assert_eq!(c.len(), 3);
        // "a" was forgotten early: its repeat publishes again (harmless), the others do not.
        first(c.claim("a").await).accept();
        assert!(matches!(c.claim("d").await, Claim::Duplicate));
    }

    #[tokio::test]
    async fn a_repeat_in_flight_waits_and_becomes_a_duplicate() {
        let c = cache();
        let pending = first(c.claim("a").await);
        let repeat = tokio::spawn({
            let c = c.clone();
            async move { matches!(c.claim("a").await, Claim::Duplicate) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!repeat.is_finished(), "the repeat waits for the first");
        pending.accept();
        assert!(repeat.await.unwrap());
    }

    #[tokio::test]
    async fn a_repeat_in_flight_takes_over_when_the_first_fails() {
        let c = cache();
        let pending = first(c.claim("a").await);
        let repeat = tokio::spawn({
            let c = c.clone();
            async move {
                let p = first(c.claim("a").await);
                p.accept();
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(pending);
        repeat.await.unwrap();
        assert!(matches!(c.claim("a").await, Claim::Duplicate));
    }

    #[tokio::test]
    async fn of_many_concurrent_repeats_exactly_one_publishes() {
        let c = cache();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                match c.claim("same").await {
                    Claim::First(p) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        p.accept();
                        1
                    }
                    Claim::Duplicate => 0,
                }
            }));
        }
        let mut published = 0;
        for t in tasks {
            published += t.await.unwrap();
        }
        assert_eq!(published, 1);
    }
}
