//! Async locks over tokio's: [`Mutex`] and [`RwLock`].

use std::future::Future;
use std::panic::Location;
use std::sync::Arc;

use super::signals::{Hold, LockKind, LockSignals, guard_impls, sample_hold};
use crate::clock;
use crate::metrics::Registry;

/// Waits for `acquire`, as a counted waiter, and records the wait.
async fn wait_for<G>(
    sig: &LockSignals,
    site: &'static Location<'static>,
    acquire: impl Future<Output = G>,
) -> (G, Hold) {
    let start = clock::raw();
    let (guard, sampled) = {
        let _waiting = sig.waiting();
        let sampled = super::contention::begin();
        (acquire.await, sampled)
    };
    let now = clock::raw();
    sig.contended(start, now, site, sampled);
    (guard, Hold::contended(now))
}

/// A named `tokio::sync::Mutex` that records `perfkit_lock_*{lock="<name>"}`.
///
/// For critical sections that `.await` while holding the lock. An uncontended `lock()` is
/// a `try_lock` plus a count (and, one time in 32, two clock reads for the hold time); an
/// acquisition that has to wait is timed, counted as a waiter while it waits — also when
/// its future is dropped before it gets the lock — and can be sampled into the contention
/// profile (`/debug/pprof/mutex`) under the caller's stack.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let progress = perfkit::sync::Mutex::new("progress", Vec::<u32>::new());
/// progress.lock().await.push(7);
/// assert_eq!(*progress.lock().await, [7]);
/// # });
/// ```
pub struct Mutex<T: ?Sized> {
    sig: Arc<LockSignals>,
    inner: tokio::sync::Mutex<T>,
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
            sig: LockSignals::register(name.into(), LockKind::Mutex, Location::caller(), registry),
            inner: tokio::sync::Mutex::new(value),
        }
    }

    /// The value, consuming the mutex.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Waits for the lock. Cancel safe: dropping the future before it completes leaves the
    /// lock and the waiters gauge as they were.
    #[track_caller]
    pub fn lock(&self) -> impl Future<Output = MutexGuard<'_, T>> + '_ {
        let site = Location::caller();
        async move {
            if let Ok(guard) = self.inner.try_lock() {
                let timed = self.sig.exclusive_acquired();
                return MutexGuard {
                    sig: &self.sig,
                    hold: Hold::uncontended(timed),
                    guard,
                };
            }
            let (guard, hold) = wait_for(&self.sig, site, self.inner.lock()).await;
            MutexGuard {
                sig: &self.sig,
                hold,
                guard,
            }
        }
    }

    /// The lock if it is free now, without waiting.
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, tokio::sync::TryLockError> {
        let guard = self.inner.try_lock()?;
        let timed = self.sig.exclusive_acquired();
        Ok(MutexGuard {
            sig: &self.sig,
            hold: Hold::uncontended(timed),
            guard,
        })
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

impl<T: ?Sized> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutex")
            .field("name", &self.sig.name)
            .finish_non_exhaustive()
    }
}

/// Holds a [`Mutex`] locked; records the hold when dropped.
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct MutexGuard<'a, T: ?Sized> {
    sig: &'a LockSignals,
    hold: Hold,
    guard: tokio::sync::MutexGuard<'a, T>,
}

guard_impls!(MutexGuard, mut);

/// A named `tokio::sync::RwLock` that records `perfkit_lock_*{lock="<name>"}`: reads and
/// writes both count as acquisitions, and a read that has to wait (behind a writer) is a
/// contended acquisition like a write that has to wait.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let config = perfkit::sync::RwLock::new("config", String::from("v1"));
/// *config.write().await = "v2".into();
/// assert_eq!(*config.read().await, "v2");
/// # });
/// ```
pub struct RwLock<T: ?Sized> {
    sig: Arc<LockSignals>,
    inner: tokio::sync::RwLock<T>,
}

impl<T> RwLock<T> {
    /// A lock named `name` (the `lock` label) around `value`, recording into the global
    /// registry.
    #[track_caller]
    pub fn new(name: impl Into<String>, value: T) -> Self {
        Self::new_in(name, value, crate::metrics::registry())
    }

    /// Like [`RwLock::new`], recording into `registry`.
    #[track_caller]
    pub fn new_in(name: impl Into<String>, value: T, registry: &Registry) -> Self {
        RwLock {
            sig: LockSignals::register(name.into(), LockKind::RwLock, Location::caller(), registry),
            inner: tokio::sync::RwLock::new(value),
        }
    }

    /// The value, consuming the lock.
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Waits for shared access. Cancel safe.
    #[track_caller]
    pub fn read(&self) -> impl Future<Output = RwLockReadGuard<'_, T>> + '_ {
        let site = Location::caller();
        async move {
            if let Ok(guard) = self.inner.try_read() {
                self.sig.shared_acquired();
                return RwLockReadGuard {
                    sig: &self.sig,
                    hold: Hold::uncontended(sample_hold()),
                    guard,
                };
            }
            let (guard, hold) = wait_for(&self.sig, site, self.inner.read()).await;
            RwLockReadGuard {
                sig: &self.sig,
                hold,
                guard,
            }
        }
    }

    /// Waits for exclusive access. Cancel safe.
    #[track_caller]
    pub fn write(&self) -> impl Future<Output = RwLockWriteGuard<'_, T>> + '_ {
        let site = Location::caller();
        async move {
            if let Ok(guard) = self.inner.try_write() {
                let timed = self.sig.exclusive_acquired();
                return RwLockWriteGuard {
                    sig: &self.sig,
                    hold: Hold::uncontended(timed),
                    guard,
                };
            }
            let (guard, hold) = wait_for(&self.sig, site, self.inner.write()).await;
            RwLockWriteGuard {
                sig: &self.sig,
                hold,
                guard,
            }
        }
    }

    /// Shared access if no writer holds or waits for the lock now.
    pub fn try_read(&self) -> Result<RwLockReadGuard<'_, T>, tokio::sync::TryLockError> {
        let guard = self.inner.try_read()?;
        self.sig.shared_acquired();
        Ok(RwLockReadGuard {
            sig: &self.sig,
            hold: Hold::uncontended(sample_hold()),
            guard,
        })
    }

    /// Exclusive access if the lock is free now.
    pub fn try_write(&self) -> Result<RwLockWriteGuard<'_, T>, tokio::sync::TryLockError> {
        let guard = self.inner.try_write()?;
        let timed = self.sig.exclusive_acquired();
        Ok(RwLockWriteGuard {
            sig: &self.sig,
            hold: Hold::uncontended(timed),
            guard,
        })
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

impl<T: ?Sized> std::fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RwLock")
            .field("name", &self.sig.name)
            .finish_non_exhaustive()
    }
}

/// Shared access to an [`RwLock`]; records the hold when dropped.
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    sig: &'a LockSignals,
    hold: Hold,
    guard: tokio::sync::RwLockReadGuard<'a, T>,
}

guard_impls!(RwLockReadGuard);

/// Exclusive access to an [`RwLock`]; records the hold when dropped.
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    sig: &'a LockSignals,
    hold: Hold,
    guard: tokio::sync::RwLockWriteGuard<'a, T>,
}

guard_impls!(RwLockWriteGuard, mut);
