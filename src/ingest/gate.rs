//! Pausing ingest at a chunk boundary, for the online replay's switch-over: while paused,
//! every chunk ingest read is stored (state, index and offsets together) and none is in
//! flight, so the stored offsets say exactly what the live state holds.
//!
//! Ingest calls [`IngestGate::checkpoint`] between chunks; [`IngestGate::pause`] asks for a
//! pause and waits until ingest is parked there. The returned [`Paused`] resumes ingest when
//! dropped, so a replay that fails or panics never leaves ingest stopped.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often a parked ingest looks at its shutdown token.
const PARKED_POLL: Duration = Duration::from_millis(100);

/// Shared between ingest and whoever pauses it; cheap to clone.
#[derive(Clone, Default)]
pub struct IngestGate {
    shared: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Default)]
struct GateState {
    /// A pause is asked for (one at a time).
    requested: bool,
    /// Ingest is parked at a chunk boundary.
    parked: bool,
}

/// Why ingest was not paused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PauseError {
    /// Another pause holds the gate.
    #[error("ingest is already paused")]
    AlreadyPaused,
    /// Ingest did not reach a chunk boundary in time (it may be stuck on the broker).
    #[error("ingest did not reach a chunk boundary within {0:?}")]
    Timeout(Duration),
}

/// Ingest stays parked while this lives.
#[must_use = "ingest resumes when this is dropped"]
pub struct Paused {
    gate: IngestGate,
}

impl Drop for Paused {
    fn drop(&mut self) {
        let (lock, wake) = &*self.gate.shared;
        self.gate.state(lock).requested = false;
        wake.notify_all();
    }
}

impl IngestGate {
    fn state<'a>(&self, lock: &'a Mutex<GateState>) -> MutexGuard<'a, GateState> {
        // Only two flags, each set in one step: a panic elsewhere cannot leave them half-set.
        lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a pause is asked for: ingest then finishes what it has in flight and calls
    /// [`IngestGate::checkpoint`]. A pause asked for just after this answered `false` is seen
    /// at the next chunk boundary.
    pub(crate) fn pause_requested(&self) -> bool {
        let (lock, _) = &*self.shared;
        self.state(lock).requested
    }

    /// Called by ingest between chunks: parks while a pause is asked for (or until
    /// `shutdown`), and returns at once otherwise.
    pub(crate) fn checkpoint(&self, shutdown: &CancellationToken) {
        let (lock, wake) = &*self.shared;
        let mut state = self.state(lock);
        if !state.requested {
            return;
        }
        state.parked = true;
        wake.notify_all();
        tracing::info!("Ingest paused at a chunk boundary.");
        while state.requested && !shutdown.is_cancelled() {
            state = wake
                .wait_timeout(state, PARKED_POLL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.parked = false;
        wake.notify_all();
        tracing::info!("Ingest resumed.");
    }

    /// Asks ingest to pause and waits (blocking) until it is parked, at most `timeout`.
    pub fn pause(&self, timeout: Duration) -> Result<Paused, PauseError> {
        let (lock, wake) = &*self.shared;
        let mut state = self.state(lock);
        if state.requested {
            return Err(PauseError::AlreadyPaused);
        }
        state.requested = true;
        let deadline = Instant::now() + timeout;
        while !state.parked {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.requested = false;
                wake.notify_all();
                return Err(PauseError::Timeout(timeout));
            }
            state = wake
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(Paused { gate: self.clone() })
    }

    /// Whether ingest is parked right now.
    pub fn is_paused(&self) -> bool {
        let (lock, _) = &*self.shared;
        self.state(lock).parked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A stand-in ingest loop: counts chunks, calling the checkpoint between them.
    fn spawn_ingest(
        gate: IngestGate,
        stop: CancellationToken,
    ) -> (Arc<AtomicU64>, std::thread::JoinHandle<()>) {
        let chunks = Arc::new(AtomicU64::new(0));
        let counted = chunks.clone();
        let thread = std::thread::spawn(move || {
            while !stop.is_cancelled() {
                gate.checkpoint(&stop);
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        (chunks, thread)
    }

    #[test]
    fn a_paused_ingest_applies_nothing_until_resumed() {
        let (gate, stop) = (IngestGate::default(), CancellationToken::new());
        let (chunks, thread) = spawn_ingest(gate.clone(), stop.clone());
        let paused = gate.pause(Duration::from_secs(30)).unwrap();
        assert!(gate.is_paused());
        let at_pause = chunks.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(chunks.load(Ordering::SeqCst), at_pause);
        assert_eq!(
            gate.pause(Duration::from_millis(1)).err(),
            Some(PauseError::AlreadyPaused)
        );
        drop(paused);
        while chunks.load(Ordering::SeqCst) == at_pause {
            std::thread::yield_now();
        }
        assert!(!gate.is_paused());
        stop.cancel();
        thread.join().unwrap();
    }

    #[test]
    fn an_ingest_that_never_reaches_a_boundary_times_out_and_is_not_left_paused() {
        let gate = IngestGate::default();
        assert_eq!(
            gate.pause(Duration::from_millis(20)).err(),
            Some(PauseError::Timeout(Duration::from_millis(20)))
        );
        // The request was withdrawn: a later checkpoint does not park.
        gate.checkpoint(&CancellationToken::new());
        assert!(gate.pause(Duration::from_millis(1)).is_err());
    }

    #[test]
    fn shutdown_releases_a_parked_ingest() {
        let (gate, stop) = (IngestGate::default(), CancellationToken::new());
        let (_, thread) = spawn_ingest(gate.clone(), stop.clone());
        let _paused = gate.pause(Duration::from_secs(30)).unwrap();
        stop.cancel();
        thread.join().unwrap();
    }
}
