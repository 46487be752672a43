//! The one rule for std locks, written down once: a poisoned lock is recovered, not
//! propagated.
//!
//! A `Mutex` is poisoned when a thread panicked while holding it. trustgate's other locks guard
//! small maps and values whose every change is one insert, remove or assignment, or advisory
//! figures (counters, a terminal view); no critical section can stop
//! half-way through a change that another thread could then see. A panic while holding one of
//! them therefore cannot leave its data half-written, and propagating the poison would only turn
//! one panic into a panic in every thread that touches the lock afterwards. So every lock site
//! goes through [`lock`] (a condition-variable wait through [`wait_timeout`]), which recover
//! the guard with [`PoisonError::into_inner`]. A lock whose critical section could leave its
//! data inconsistent must not use these helpers, and says why where it is declared: the one
//! such lock is the `RwLock` over the store's decision index (`store::Store`).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, WaitTimeoutResult};
use std::time::Duration;

/// Locks `mutex`, recovering the guard if a panic poisoned it (see the module doc).
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `Condvar::wait_timeout`, recovering the guard if a panic poisoned its lock.
pub fn wait_timeout<'a, T>(
    changed: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
    changed
        .wait_timeout(guard, timeout)
        .unwrap_or_else(PoisonError::into_inner)
}
