//! A blocking mutex over `parking_lot`'s, for critical sections that never `.await`.

use std::panic::Location;
use std::sync::Arc;

use super::signals::{Hold, LockKind, LockSignals, guard_impls};
use crate::clock;
use crate::metrics::Registry;

/// A named `parking_lot::Mutex` that records `perfkit_lock_*{lock="<name>"}`.
///
/// Use it where a `std::sync::Mutex` or `parking_lot::Mutex` would do: short critical
/// sections that do not `.await`. An uncontended `lock()` is a `try_lock` plus a count
/// (and, one time in 32, two clock reads for the hold time); only an acquisition that has
/// to wait reads the clock for its wait, counts as a waiter and can be sampled into the
/// contention profile (`/debug/pprof/mutex`). Like parking_lot's, it does not poison: a
/// panic while holding it releases it and counts in `perfkit_lock_panics_total`.
///
/// ```
/// let hits = perfkit::sync::blocking::Mutex::new("hits", 0u64);
/// *hits.lock() += 1;
/// assert_eq!(*hits.lock(), 1);
/// ```
pub struct Mutex<T: ?Sized> {
    sig: Arc<LockSignals>,
    inner: parking_lot::Mutex<T>,
}

impl<T> Mutex<T> {
    /// A mutex named `name` (the `lock` label) around `value`, recording into the global
    /// registry. The caller's file:line is its source in the inventory.
    #[track_caller]
    pub fn new(name: impl Into<String>, value: T) -> Self {
        Self::new_in(name, value, crate::metrics::registry())
    }

    /// Like [`Mutex::new`], recording into `registry`.
    #[track_caller]
    pub fn new_in(name: impl Into<String>, value: T, registry: &Registry) -> Self {
        Mutex {
            sig: LockSignals::register(
                name.into(),
                LockKind::BlockingMutex,
                Location::caller(),
                registry,
            ),
            inner: parking_lot::Mutex::new(value),
        }
    }

    /// The value, consuming the mutex.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Blocks the thread until the lock is acquired.
    #[track_caller]
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if let Some(g) = self.inner.try_lock() {
            let timed = self.sig.exclusive_acquired();
            return self.uncontended(g, timed);
        }
        self.lock_slow(Location::caller())
    }

    #[inline]
    fn uncontended<'a>(
        &'a self,
        guard: parking_lot::MutexGuard<'a, T>,
        timed: bool,
    ) -> MutexGuard<'a, T> {
        MutexGuard {
            sig: &self.sig,
            hold: Hold::uncontended(timed),
            guard,
        }
    }

    #[cold]
    #[inline(never)]
    fn lock_slow(&self, site: &'static Location<'static>) -> MutexGuard<'_, T> {
        let start = clock::raw();
        let guard = {
            let _waiting = self.sig.waiting();
            let sampled = super::contention::begin();
            let guard = self.inner.lock();
            (guard, sampled)
        };
        let (guard, sampled) = guard;
        let now = clock::raw();
        self.sig.contended(start, now, site, sampled);
        MutexGuard {
            sig: &self.sig,
            hold: Hold::contended(now),
            guard,
        }
    }

    /// The lock if it is free now, without waiting.
    #[inline]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let g = self.inner.try_lock()?;
        let timed = self.sig.exclusive_acquired();
        Some(self.uncontended(g, timed))
    }

    /// The value, through `&mut self`: no locking needed, nothing recorded.
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    /// The `lock` label (the name, or `__overflow__` past the cardinality cap).
    pub fn label(&self) -> &str {
        &self.sig.label
    }
}

impl<T: ?Sized + std::fmt::Debug> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Mutex");
        d.field("name", &self.sig.name);
        match self.inner.try_lock() {
            Some(g) => d.field("data", &&*g),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish()
    }
}

/// Holds a [`Mutex`] locked; records the hold when dropped.
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct MutexGuard<'a, T: ?Sized> {
    sig: &'a LockSignals,
    hold: Hold,
    guard: parking_lot::MutexGuard<'a, T>,
}

guard_impls!(MutexGuard, mut);
