//! Instrumented locks and semaphores: contention a load test can see.
//!
//! Drop-in wrappers that carry a name and record, under it:
//!
//! | type | over | series |
//! |---|---|---|
//! | [`Mutex`] | `tokio::sync::Mutex` | `perfkit_lock_*{lock}` |
//! | [`RwLock`] | `tokio::sync::RwLock` | `perfkit_lock_*{lock}` |
//! | [`blocking::Mutex`] | `parking_lot::Mutex` | `perfkit_lock_*{lock}` |
//! | [`Semaphore`] | `tokio::sync::Semaphore` | `perfkit_semaphore_*{semaphore}` |
//!
//! Locks record `perfkit_lock_acquisitions_total{contended}`, `perfkit_lock_wait_seconds`
//! (only for acquisitions that had to wait), `perfkit_lock_hold_seconds` (every contended
//! hold, and one uncontended hold in 32 counted 32 times, so an uncontended lock+unlock
//! mostly reads no clock), `perfkit_lock_waiters` (read at scrape time) and
//! `perfkit_lock_panics_total` (guards dropped by a panic). Guards record in `Drop`; a
//! waiting future that is dropped leaves the waiters gauge as it found it.
//!
//! Semaphores record permits in all, in use and waited for, `perfkit_semaphore_acquire_seconds`
//! (acquisitions that waited), acquisitions by contention and
//! `perfkit_semaphore_timeouts_total` ([`Semaphore::acquire_timeout`]).
//!
//! Every contended acquisition can be sampled into the contention profile served at
//! `/debug/pprof/mutex` (Go's format: contentions and delay per stack; see
//! [`set_mutex_profile_rate`]). The snapshot has `locks` and `semaphores` sections with
//! windowed figures (`wait_seconds.p99`, `saturation_max`, `timeouts`, ...), which the k6
//! helper turns into `perfkit_lock_wait_p99_seconds`, `perfkit_semaphore_saturation` and
//! friends.
//!
//! # Cost
//! Measured by `benches/benches/sync.rs` against the wrapped types; `docs/sync.md` has the
//! figures.
//!
//! # Examples
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use perfkit::sync::{Mutex, Semaphore};
//!
//! let users = Mutex::new("users", std::collections::HashMap::<u64, u32>::new());
//! let db_calls = Semaphore::new("db_calls", 8);
//!
//! let _permit = db_calls.acquire().await.unwrap();
//! *users.lock().await.entry(7).or_default() += 1;
//! # });
//! ```

pub mod blocking;
mod contention;
mod lock;
mod semaphore;
mod signals;

#[cfg(feature = "server")]
pub(crate) use contention::{
    ContentionProfile, Entry as ContentionEntry, snapshot as contention_snapshot,
};
pub use contention::{
    DEFAULT_MUTEX_PROFILE_RATE, MAX_DEPTH, MAX_ENTRIES, mutex_profile_rate, set_mutex_profile_rate,
};
pub use lock::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
pub use semaphore::{
    AcquireError, OwnedSemaphorePermit, Semaphore, SemaphorePermit, TryAcquireError,
};
