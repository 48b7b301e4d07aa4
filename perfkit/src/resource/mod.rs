//! Connection pools a load test can see: how full they are, how long callers wait for a
//! connection, and how often the wait times out.
//!
//! A [`Resource`] names a pool and reads the pool's own figures at scrape time through a
//! [`Source`] — size, idle, bound and, when the pool counts them, waiters — under
//! `perfkit_resource_*{resource="<name>"}`. Acquisitions made through
//! [`Resource::acquire`] are timed (`perfkit_resource_acquire_seconds`), counted by outcome
//! (`perfkit_resource_acquisitions_total`, `_timeouts_total`, `_errors_total`) and handed
//! out as a [`Lease`], which the peak-use figures follow as it happens.
//!
//! Adapters, each behind a feature:
//!
//! | feature | pool | sees | does not see |
//! |---|---|---|---|
//! | `deadpool` | `deadpool::managed::Pool` (deadpool-postgres, deadpool-sqlite, ...) | size, idle, max, waiters; timeouts from `PoolError::Timeout` | — |
//! | `bb8` | `bb8::Pool` | size, idle; timeouts from `RunError::TimedOut` | waiters (bb8 does not count them); max (bb8 does not expose it: pass it) |
//! | `sqlx` | `sqlx::Pool` | size, idle, max; timeouts from `Error::PoolTimedOut` | waiters (sqlx does not count them) |
//!
//! Any other pool: give [`Resource::new`] a closure returning its [`Status`], and pass
//! its acquisition future to [`Resource::acquire_with`] with a test for timeouts.
//!
//! The snapshot's `resources` section has `saturation` (in use / max) and, over a window,
//! `saturation_max`, `timeouts` and `acquire_seconds`, which the k6 helper turns into
//! `perfkit_resource_saturation`, `perfkit_resource_timeouts` and
//! `perfkit_resource_acquire_p99_seconds`.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use perfkit::resource::{Resource, Status};
//! use std::sync::Arc;
//!
//! // A stand-in pool of 4 "connections": a semaphore.
//! let pool = Arc::new(tokio::sync::Semaphore::new(4));
//! let p = Arc::clone(&pool);
//! let db = Resource::new("db", move || Status::new(4, p.available_permits(), 4));
//!
//! let conn = db
//!     .acquire_with(Arc::clone(&pool).acquire_owned(), |_| false)
//!     .await
//!     .unwrap();
//! assert_eq!(db.status().in_use(), 1);
//! drop(conn);
//! # });
//! ```

#[cfg(feature = "bb8")]
mod bb8;
#[cfg(feature = "deadpool")]
mod deadpool;
#[cfg(feature = "sqlx")]
mod sqlx;

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use crate::clock;
use crate::metrics::names;
use crate::metrics::window::attach;
use crate::metrics::{
    Collection, Collector, Counter, Histogram, OVERFLOW_LABEL, Registry, Sections, Tick, WindowMax,
    WindowTotal,
};

/// A pool's figures, as the pool itself reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Resources the pool holds now, in use or idle.
    pub size: usize,
    /// Resources idle now.
    pub idle: usize,
    /// Most resources the pool will hold.
    pub max: usize,
    /// Callers waiting for a resource, when the pool counts them.
    pub waiters: Option<usize>,
}

impl Status {
    /// `size` resources of which `idle` are idle, bounded by `max`; waiters unknown.
    pub fn new(size: usize, idle: usize, max: usize) -> Self {
        Status {
            size,
            idle,
            max,
            waiters: None,
        }
    }

    /// The same, with the pool's count of waiting callers.
    pub fn with_waiters(mut self, waiters: usize) -> Self {
        self.waiters = Some(waiters);
        self
    }

    /// Resources checked out: size minus idle.
    pub fn in_use(&self) -> usize {
        self.size.saturating_sub(self.idle)
    }
}

/// Reads a pool's [`Status`] at scrape time. Closures `Fn() -> Status` are sources.
pub trait Source: Send + Sync + 'static {
    /// The pool's figures now. Called at every scrape and snapshot and once a second:
    /// keep it cheap.
    fn status(&self) -> Status;

    /// The pool's kind, for the inventory (`deadpool`, `bb8`, `sqlx`, `custom`).
    fn kind(&self) -> &'static str {
        "custom"
    }

    /// How long the pool lets a caller wait for a resource, for the inventory; `None`
    /// when it does not say (or never gives up).
    fn wait_timeout(&self) -> Option<std::time::Duration> {
        None
    }
}

impl<F: Fn() -> Status + Send + Sync + 'static> Source for F {
    fn status(&self) -> Status {
        self()
    }
}

/// Tells a timed-out acquisition from another failure, for the error types of the adapted
/// pools.
pub trait AcquireFailure {
    /// Whether the acquisition failed because the pool's wait timed out.
    fn is_timeout(&self) -> bool;
}

struct Signals {
    name: String,
    label: String,
    site: &'static Location<'static>,
    source: Box<dyn Source>,
    /// Leases handed out through [`Resource::acquire`] and not yet dropped.
    leased: AtomicUsize,
    /// Callers inside [`Resource::acquire`] now.
    acquiring: AtomicUsize,
    in_use_max: WindowMax,
    waiters_max: WindowMax,
    acquire: Arc<Histogram>,
    acquisitions: Arc<Counter>,
    timeouts: Arc<Counter>,
    errors: Arc<Counter>,
    acquisitions_total: WindowTotal,
    timeouts_total: WindowTotal,
    errors_total: WindowTotal,
}

impl Signals {
    fn status(&self) -> Status {
        self.source.status()
    }

    fn observe(&self, st: &Status) -> u64 {
        let in_use = st.in_use() as u64;
        self.in_use_max.observe(in_use);
        if let Some(w) = st.waiters {
            self.waiters_max.observe(w as u64);
        }
        in_use
    }
}

/// A named connection pool (or any pool of resources); see the [module docs](self).
#[derive(Clone)]
pub struct Resource {
    sig: Arc<Signals>,
}

impl Resource {
    /// A resource named `name` (the `resource` label) whose figures `source` reads,
    /// recording into the global registry. The caller's file:line is its source in the
    /// inventory.
    #[track_caller]
    pub fn new(name: impl Into<String>, source: impl Source) -> Self {
        Self::new_in(name, source, crate::metrics::registry())
    }

    /// Like [`Resource::new`], recording into `registry`.
    #[track_caller]
    pub fn new_in(name: impl Into<String>, source: impl Source, registry: &Registry) -> Self {
        let name = name.into();
        let (acquisitions, admitted) =
            registry.counter_admitted(&names::RESOURCE_ACQUISITIONS_TOTAL, &[&name]);
        let label = if admitted {
            name.clone()
        } else {
            OVERFLOW_LABEL.to_owned()
        };
        let l = label.as_str();
        let sig = Arc::new(Signals {
            acquire: registry.histogram(&names::RESOURCE_ACQUIRE_SECONDS, &[l]),
            timeouts: registry.counter(&names::RESOURCE_TIMEOUTS_TOTAL, &[l]),
            errors: registry.counter(&names::RESOURCE_ERRORS_TOTAL, &[l]),
            acquisitions,
            name,
            label,
            site: Location::caller(),
            source: Box::new(source),
            leased: AtomicUsize::new(0),
            acquiring: AtomicUsize::new(0),
            in_use_max: WindowMax::new(),
            waiters_max: WindowMax::new(),
            acquisitions_total: WindowTotal::new(),
            timeouts_total: WindowTotal::new(),
            errors_total: WindowTotal::new(),
        });
        registry.register_collector(Arc::downgrade(&sig) as std::sync::Weak<dyn Collector>);
        Resource { sig }
    }

    /// Times `acquisition` (a pool's `get()` / `acquire()` future), counts its outcome and
    /// hands the resource out as a [`Lease`]. Cancel safe: a dropped future counts as
    /// nothing.
    pub async fn acquire<T, E, F>(&self, acquisition: F) -> Result<Lease<T>, E>
    where
        F: Future<Output = Result<T, E>>,
        E: AcquireFailure,
    {
        self.acquire_with(acquisition, E::is_timeout).await
    }

    /// [`Resource::acquire`] for a pool whose error type perfkit does not know:
    /// `is_timeout` tells a timed-out wait from another failure.
    pub async fn acquire_with<T, E, F>(
        &self,
        acquisition: F,
        is_timeout: impl FnOnce(&E) -> bool,
    ) -> Result<Lease<T>, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let sig = &*self.sig;
        let start = clock::raw();
        let result = {
            sig.acquiring.fetch_add(1, Ordering::Relaxed);
            let _acquiring = Acquiring(&sig.acquiring);
            acquisition.await
        };
        sig.acquire
            .record(clock::nanos_between(start, clock::raw()));
        match result {
            Ok(value) => {
                sig.acquisitions.inc();
                let leased = sig.leased.fetch_add(1, Ordering::Relaxed) + 1;
                sig.in_use_max.observe(leased as u64);
                Ok(Lease {
                    value,
                    sig: Arc::clone(&self.sig),
                })
            }
            Err(e) => {
                if is_timeout(&e) {
                    sig.timeouts.inc();
                } else {
                    sig.errors.inc();
                }
                Err(e)
            }
        }
    }

    /// The pool's figures now.
    pub fn status(&self) -> Status {
        self.sig.status()
    }

    /// The `resource` label (the name, or `__overflow__` past the cardinality cap).
    pub fn label(&self) -> &str {
        &self.sig.label
    }
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("name", &self.sig.name)
            .field("kind", &self.sig.source.kind())
            .field("status", &self.sig.status())
            .finish()
    }
}

struct Acquiring<'a>(&'a AtomicUsize);

impl Drop for Acquiring<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A resource handed out by [`Resource::acquire`]: derefs to what the pool returned, and
/// returns it to the pool (by dropping it) when dropped.
pub struct Lease<T> {
    value: T,
    sig: Arc<Signals>,
}

impl<T> Drop for Lease<T> {
    fn drop(&mut self) {
        self.sig.leased.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> Deref for Lease<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Lease<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Lease<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("resource", &self.sig.name)
            .field("value", &self.value)
            .finish()
    }
}

impl Collector for Signals {
    fn collect(&self, out: &mut Collection) {
        let st = self.status();
        let in_use = self.observe(&st);
        let l = self.label.as_str();
        out.push(&names::RESOURCE_SIZE, &[l], st.size as f64);
        out.push(&names::RESOURCE_IN_USE, &[l], in_use as f64);
        if let Some(w) = out.window() {
            let max = self.in_use_max.max(w).max(in_use);
            out.push(&names::RESOURCE_IN_USE_MAX_10S, &[l], max as f64);
        }
        out.push(&names::RESOURCE_IDLE, &[l], st.idle as f64);
        out.push(&names::RESOURCE_MAX, &[l], st.max as f64);
        if let Some(waiters) = st.waiters {
            out.push(&names::RESOURCE_WAITERS, &[l], waiters as f64);
        }
    }

    fn snapshot(&self, out: &mut Sections) {
        let st = self.status();
        let in_use = self.observe(&st);
        let ratio = |n: u64| (st.max > 0).then(|| n as f64 / st.max as f64);
        let (acq, timeouts, errors) = (
            self.acquisitions.get(),
            self.timeouts.get(),
            self.errors.get(),
        );
        let window = out.window().map(|w| {
            let in_use_max = self.in_use_max.max(w).max(in_use);
            json!({
                "in_use_max": in_use_max,
                "saturation_max": ratio(in_use_max),
                "waiters_max": st.waiters.map(|n| self.waiters_max.max(w).max(n as u64)),
                "acquisitions": self.acquisitions_total.delta(w, acq).map(|(d, _)| d),
                "timeouts": self.timeouts_total.delta(w, timeouts).map(|(d, _)| d),
                "errors": self.errors_total.delta(w, errors).map(|(d, _)| d),
                "acquire_seconds": self.acquire.window(w).map(|h| h.to_json()),
            })
        });
        let entry = json!({
            "name": self.name,
            "label": self.label,
            "kind": self.source.kind(),
            "size": st.size,
            "idle": st.idle,
            "in_use": in_use,
            "max": st.max,
            "saturation": ratio(in_use),
            "in_use_max": self.in_use_max.lifetime().max(in_use),
            "waiters": st.waiters,
            "leased": self.leased.load(Ordering::Relaxed),
            "acquiring": self.acquiring.load(Ordering::Relaxed),
            "acquisitions": acq,
            "timeouts": timeouts,
            "errors": errors,
            "acquire_seconds": self.acquire.snapshot().to_json(),
        });
        out.push("resources", attach(entry, window));
    }

    fn inventory(&self, out: &mut Sections) {
        let st = self.status();
        out.push(
            "resources",
            json!({
                "name": self.name,
                "label": self.label,
                "kind": self.source.kind(),
                "max": st.max,
                "wait_timeout_seconds": self.source.wait_timeout().map(|d| d.as_secs_f64()),
                "counts_waiters": st.waiters.is_some(),
                "source": format!("{}:{}", self.site.file(), self.site.line()),
            }),
        );
    }

    fn tick(&self, tick: &Tick) {
        let st = self.status();
        self.in_use_max.tick(tick, st.in_use() as u64);
        self.waiters_max.tick(tick, st.waiters.unwrap_or(0) as u64);
        self.acquisitions_total.tick(tick, self.acquisitions.get());
        self.timeouts_total.tick(tick, self.timeouts.get());
        self.errors_total.tick(tick, self.errors.get());
    }
}
