//! A named semaphore over tokio's: a concurrency cap that reports how full it is.

use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::clock;
use crate::metrics::names;
use crate::metrics::window::attach;
use crate::metrics::{
    Collection, Collector, Counter, Histogram, OVERFLOW_LABEL, Registry, Sections, Tick, WindowMax,
    WindowTotal,
};

/// Why an acquisition got no permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// The semaphore was closed ([`Semaphore::close`]).
    #[error("the semaphore is closed")]
    Closed,
    /// No permit came within the timeout; counted in `perfkit_semaphore_timeouts_total`.
    #[error("no permit within {0:?}")]
    Timeout(Duration),
}

/// Why [`Semaphore::try_acquire`] got no permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryAcquireError {
    /// The semaphore was closed.
    #[error("the semaphore is closed")]
    Closed,
    /// Every permit is held.
    #[error("no permit is free")]
    NoPermits,
}

impl From<tokio::sync::TryAcquireError> for TryAcquireError {
    fn from(e: tokio::sync::TryAcquireError) -> Self {
        match e {
            tokio::sync::TryAcquireError::Closed => TryAcquireError::Closed,
            tokio::sync::TryAcquireError::NoPermits => TryAcquireError::NoPermits,
        }
    }
}

struct Signals {
    name: String,
    label: String,
    site: &'static Location<'static>,
    /// Permits in all: the initial ones, plus those added, minus those forgotten.
    permits: AtomicUsize,
    uncontended: Counter,
    contended: Counter,
    timeouts: Arc<Counter>,
    wait: Arc<Histogram>,
    waiters: AtomicUsize,
    waiters_max: WindowMax,
    in_use_max: WindowMax,
    acquisitions_total: WindowTotal,
    timeouts_total: WindowTotal,
    /// The semaphore, for its free permits at scrape time.
    inner: Arc<tokio::sync::Semaphore>,
}

impl Signals {
    fn in_use(&self) -> u64 {
        self.permits
            .load(Ordering::Relaxed)
            .saturating_sub(self.inner.available_permits()) as u64
    }

    fn acquisitions(&self) -> u64 {
        self.uncontended.get() + self.contended.get()
    }
}

/// A named `tokio::sync::Semaphore` that records `perfkit_semaphore_*{semaphore="<name>"}`:
/// permits in all, in use and waited for (gauges read at scrape time), the time
/// acquisitions waited, and the ones that timed out.
///
/// Use it to cap concurrency — calls to a dependency, jobs holding a connection — and let
/// a load test see the cap being reached. An uncontended acquisition is tokio's
/// `try_acquire` plus a count; one that has to wait is timed, counted as a waiter (also
/// when its future is dropped first) and can be sampled into `/debug/pprof/mutex`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::time::Duration;
/// let calls = perfkit::sync::Semaphore::new("upstream_calls", 2);
/// let a = calls.acquire().await.unwrap();
/// let b = calls.acquire_owned().await.unwrap(); // can move to another task
/// assert_eq!(calls.in_use(), 2);
/// // A third caller gives up after the timeout; counted in perfkit_semaphore_timeouts_total.
/// assert!(calls.acquire_timeout(Duration::from_millis(5)).await.is_err());
/// drop((a, b));
/// assert_eq!(calls.in_use(), 0);
/// # });
/// ```
pub struct Semaphore {
    sig: Arc<Signals>,
}

impl Semaphore {
    /// A semaphore named `name` (the `semaphore` label) with `permits` permits, recording
    /// into the global registry. The caller's file:line is its source in the inventory.
    #[track_caller]
    pub fn new(name: impl Into<String>, permits: usize) -> Self {
        Self::new_in(name, permits, crate::metrics::registry())
    }

    /// Like [`Semaphore::new`], recording into `registry`.
    #[track_caller]
    pub fn new_in(name: impl Into<String>, permits: usize, registry: &Registry) -> Self {
        let name = name.into();
        let (timeouts, admitted) =
            registry.counter_admitted(&names::SEMAPHORE_TIMEOUTS_TOTAL, &[&name]);
        let label = if admitted {
            name.clone()
        } else {
            OVERFLOW_LABEL.to_owned()
        };
        let sig = Arc::new(Signals {
            wait: registry.histogram(&names::SEMAPHORE_ACQUIRE_SECONDS, &[&label]),
            name,
            label,
            site: Location::caller(),
            permits: AtomicUsize::new(permits),
            uncontended: Counter::new(),
            contended: Counter::new(),
            timeouts,
            waiters: AtomicUsize::new(0),
            waiters_max: WindowMax::new(),
            in_use_max: WindowMax::new(),
            acquisitions_total: WindowTotal::new(),
            timeouts_total: WindowTotal::new(),
            inner: Arc::new(tokio::sync::Semaphore::new(permits)),
        });
        registry.register_collector(Arc::downgrade(&sig) as std::sync::Weak<dyn Collector>);
        Semaphore { sig }
    }

    /// Waits for one permit. Cancel safe.
    #[track_caller]
    pub fn acquire(&self) -> impl Future<Output = Result<SemaphorePermit<'_>, AcquireError>> + '_ {
        self.acquire_many(1)
    }

    /// Waits for `n` permits at once. Cancel safe.
    #[track_caller]
    pub fn acquire_many(
        &self,
        n: u32,
    ) -> impl Future<Output = Result<SemaphorePermit<'_>, AcquireError>> + '_ {
        let site = Location::caller();
        async move {
            let permit = self.get(n, None, site, |s| s.acquire_many(n)).await?;
            Ok(SemaphorePermit {
                sig: &self.sig,
                permit,
            })
        }
    }

    /// Waits at most `timeout` for one permit; a timeout counts in
    /// `perfkit_semaphore_timeouts_total`. Needs a tokio runtime with timers.
    #[track_caller]
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<SemaphorePermit<'_>, AcquireError>> + '_ {
        let site = Location::caller();
        async move {
            let permit = self
                .get(1, Some(timeout), site, |s| s.acquire_many(1))
                .await?;
            Ok(SemaphorePermit {
                sig: &self.sig,
                permit,
            })
        }
    }

    /// Waits for one permit that holds the semaphore alive and can move to another task.
    /// Cancel safe.
    #[track_caller]
    pub fn acquire_owned(
        &self,
    ) -> impl Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + '_ {
        let site = Location::caller();
        async move { self.owned(1, None, site).await }
    }

    /// [`Semaphore::acquire_owned`] that gives up after `timeout`.
    #[track_caller]
    pub fn acquire_owned_timeout(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + '_ {
        let site = Location::caller();
        async move { self.owned(1, Some(timeout), site).await }
    }

    async fn owned(
        &self,
        n: u32,
        timeout: Option<Duration>,
        site: &'static Location<'static>,
    ) -> Result<OwnedSemaphorePermit, AcquireError> {
        let inner = Arc::clone(&self.sig.inner);
        if let Ok(permit) = Arc::clone(&inner).try_acquire_many_owned(n) {
            self.uncontended();
            return Ok(OwnedSemaphorePermit {
                sig: Arc::clone(&self.sig),
                permit,
            });
        }
        let permit = self
            .wait(timeout, site, inner.acquire_many_owned(n))
            .await?;
        Ok(OwnedSemaphorePermit {
            sig: Arc::clone(&self.sig),
            permit,
        })
    }

    async fn get<'a, F>(
        &'a self,
        n: u32,
        timeout: Option<Duration>,
        site: &'static Location<'static>,
        acquire: impl FnOnce(&'a tokio::sync::Semaphore) -> F,
    ) -> Result<tokio::sync::SemaphorePermit<'a>, AcquireError>
    where
        F: Future<Output = Result<tokio::sync::SemaphorePermit<'a>, tokio::sync::AcquireError>>,
    {
        if let Ok(p) = self.sig.inner.try_acquire_many(n) {
            self.uncontended();
            return Ok(p);
        }
        self.wait(timeout, site, acquire(&self.sig.inner)).await
    }

    #[inline]
    fn uncontended(&self) {
        self.sig.uncontended.inc();
        self.sig.in_use_max.observe(self.sig.in_use());
    }

    async fn wait<P>(
        &self,
        timeout: Option<Duration>,
        site: &'static Location<'static>,
        acquire: impl Future<Output = Result<P, tokio::sync::AcquireError>>,
    ) -> Result<P, AcquireError> {
        let sig = &*self.sig;
        let start = clock::raw();
        let sampled = super::contention::begin();
        let got = {
            let now = sig.waiters.fetch_add(1, Ordering::Relaxed) + 1;
            sig.waiters_max.observe(now as u64);
            let _waiting = Waiting(&sig.waiters);
            match timeout {
                None => acquire.await.map_err(|_| AcquireError::Closed),
                Some(d) => match tokio::time::timeout(d, acquire).await {
                    Ok(r) => r.map_err(|_| AcquireError::Closed),
                    Err(_) => Err(AcquireError::Timeout(d)),
                },
            }
        };
        let now = clock::raw();
        let nanos = clock::nanos_between(start, now);
        match &got {
            Ok(_) => {
                sig.contended.inc();
                sig.wait.record(nanos);
                sig.in_use_max.observe(sig.in_use());
                if let Some(s) = sampled {
                    super::contention::finish(s, &sig.label, "semaphore", site, nanos);
                }
            }
            Err(AcquireError::Timeout(_)) => {
                sig.timeouts.inc();
                sig.wait.record(nanos);
                if let Some(s) = sampled {
                    super::contention::finish(s, &sig.label, "semaphore", site, nanos);
                }
            }
            Err(AcquireError::Closed) => {}
        }
        got
    }

    /// One permit if one is free now, without waiting.
    pub fn try_acquire(&self) -> Result<SemaphorePermit<'_>, TryAcquireError> {
        let permit = self.sig.inner.try_acquire()?;
        self.uncontended();
        Ok(SemaphorePermit {
            sig: &self.sig,
            permit,
        })
    }

    /// One owned permit if one is free now, without waiting.
    pub fn try_acquire_owned(&self) -> Result<OwnedSemaphorePermit, TryAcquireError> {
        let permit = Arc::clone(&self.sig.inner).try_acquire_owned()?;
        self.uncontended();
        Ok(OwnedSemaphorePermit {
            sig: Arc::clone(&self.sig),
            permit,
        })
    }

    /// Adds `n` permits (the total in `perfkit_semaphore_permits` grows by `n`).
    pub fn add_permits(&self, n: usize) {
        self.sig.permits.fetch_add(n, Ordering::Relaxed);
        self.sig.inner.add_permits(n);
    }

    /// Closes the semaphore: waiting and later acquisitions fail with
    /// [`AcquireError::Closed`]; permits held stay valid.
    pub fn close(&self) {
        self.sig.inner.close();
    }

    /// Permits free now.
    pub fn available_permits(&self) -> usize {
        self.sig.inner.available_permits()
    }

    /// Permits in all, held or free.
    pub fn permits(&self) -> usize {
        self.sig.permits.load(Ordering::Relaxed)
    }

    /// Permits held now.
    pub fn in_use(&self) -> usize {
        self.sig.in_use() as usize
    }

    /// The `semaphore` label (the name, or `__overflow__` past the cardinality cap).
    pub fn label(&self) -> &str {
        &self.sig.label
    }
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("name", &self.sig.name)
            .field("permits", &self.permits())
            .field("available", &self.available_permits())
            .finish()
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Permits of a [`Semaphore`], returned when dropped.
#[must_use = "the permit is returned at once if it is not kept"]
pub struct SemaphorePermit<'a> {
    sig: &'a Signals,
    permit: tokio::sync::SemaphorePermit<'a>,
}

/// `forget`, `num_permits` and `Debug` for a permit type with fields `sig` and `permit`.
macro_rules! permit_impls {
    ($permit:ident $(<$l:lifetime>)?) => {
        impl $permit $(<$l>)? {
            /// Keeps the permits out of the semaphore for good: its total shrinks by as many.
            pub fn forget(self) {
                self.sig
                    .permits
                    .fetch_sub(self.permit.num_permits(), Ordering::Relaxed);
                self.permit.forget();
            }

            /// How many permits this holds.
            pub fn num_permits(&self) -> usize {
                self.permit.num_permits()
            }
        }

        impl std::fmt::Debug for $permit $(<$l>)? {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($permit))
                    .field("semaphore", &self.sig.name)
                    .field("permits", &self.permit.num_permits())
                    .finish()
            }
        }
    };
}

permit_impls!(SemaphorePermit<'_>);

/// A permit of a [`Semaphore`] that keeps the semaphore alive: it can move to another task
/// (a spawned job releasing the cap when it ends).
#[must_use = "the permit is returned at once if it is not kept"]
pub struct OwnedSemaphorePermit {
    sig: Arc<Signals>,
    permit: tokio::sync::OwnedSemaphorePermit,
}

permit_impls!(OwnedSemaphorePermit);

impl Collector for Signals {
    fn collect(&self, out: &mut Collection) {
        let l = self.label.as_str();
        let in_use = self.in_use();
        self.in_use_max.observe(in_use);
        let waiters = self.waiters.load(Ordering::Relaxed) as u64;
        self.waiters_max.observe(waiters);
        out.push(
            &names::SEMAPHORE_PERMITS,
            &[l],
            self.permits.load(Ordering::Relaxed) as f64,
        );
        out.push(&names::SEMAPHORE_IN_USE, &[l], in_use as f64);
        if let Some(w) = out.window() {
            let max = self.in_use_max.max(w).max(in_use);
            out.push(&names::SEMAPHORE_IN_USE_MAX_10S, &[l], max as f64);
        }
        out.push(&names::SEMAPHORE_WAITERS, &[l], waiters as f64);
        out.push(
            &names::SEMAPHORE_ACQUISITIONS_TOTAL,
            &[l, "false"],
            self.uncontended.get() as f64,
        );
        out.push(
            &names::SEMAPHORE_ACQUISITIONS_TOTAL,
            &[l, "true"],
            self.contended.get() as f64,
        );
    }

    fn snapshot(&self, out: &mut Sections) {
        let in_use = self.in_use();
        self.in_use_max.observe(in_use);
        let waiters = self.waiters.load(Ordering::Relaxed) as u64;
        self.waiters_max.observe(waiters);
        let permits = self.permits.load(Ordering::Relaxed);
        let ratio = |n: u64| {
            if permits > 0 {
                n as f64 / permits as f64
            } else {
                0.0
            }
        };
        let timeouts = self.timeouts.get();
        let window = out.window().map(|w| {
            let in_use_max = self.in_use_max.max(w).max(in_use);
            json!({
                "in_use_max": in_use_max,
                "saturation_max": ratio(in_use_max),
                "waiters_max": self.waiters_max.max(w).max(waiters),
                "acquisitions": self.acquisitions_total.delta(w, self.acquisitions()).map(|(d, _)| d),
                "timeouts": self.timeouts_total.delta(w, timeouts).map(|(d, _)| d),
                "acquire_seconds": self.wait.window(w).map(|h| h.to_json()),
            })
        });
        let entry = json!({
            "name": self.name,
            "label": self.label,
            "permits": permits,
            "in_use": in_use,
            "in_use_max": self.in_use_max.lifetime().max(in_use),
            "saturation": ratio(in_use),
            "available": self.inner.available_permits(),
            "waiters": waiters,
            "closed": self.inner.is_closed(),
            "acquisitions": self.acquisitions(),
            "contended": self.contended.get(),
            "timeouts": timeouts,
            "acquire_seconds": self.wait.snapshot().to_json(),
        });
        out.push("semaphores", attach(entry, window));
    }

    fn inventory(&self, out: &mut Sections) {
        out.push(
            "semaphores",
            json!({
                "name": self.name,
                "label": self.label,
                "permits": self.permits.load(Ordering::Relaxed),
                "source": format!("{}:{}", self.site.file(), self.site.line()),
            }),
        );
    }

    fn tick(&self, tick: &Tick) {
        self.in_use_max.tick(tick, self.in_use());
        self.waiters_max
            .tick(tick, self.waiters.load(Ordering::Relaxed) as u64);
        self.acquisitions_total.tick(tick, self.acquisitions());
        self.timeouts_total.tick(tick, self.timeouts.get());
    }
}
