//! What every instrumented lock records, and how it reports it.

use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde_json::json;

use crate::clock;
use crate::metrics::names;
use crate::metrics::window::attach;
use crate::metrics::{
    Collection, Collector, Counter, Histogram, OVERFLOW_LABEL, Registry, Sections, Tick, WindowMax,
    WindowTotal,
};

/// Which wrapper a lock is, as the snapshot and inventory name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// [`super::Mutex`] over tokio's.
    Mutex,
    /// [`super::RwLock`] over tokio's.
    RwLock,
    /// [`super::blocking::Mutex`] over parking_lot's.
    BlockingMutex,
}

impl LockKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LockKind::Mutex => "mutex",
            LockKind::RwLock => "rwlock",
            LockKind::BlockingMutex => "blocking_mutex",
        }
    }
}

/// Uncontended acquisitions between two measured hold times: one in this many is timed
/// and recorded with this weight, so the hold histogram's counts and quantiles stay
/// unbiased estimates while an uncontended lock+unlock pays for no clock read most of the
/// time. Contended acquisitions read the clock anyway and are always timed.
pub(crate) const HOLD_SAMPLE_EVERY: u32 = 32;

std::thread_local! {
    /// Countdown to this thread's next timed uncontended shared acquisition (exclusive ones
    /// are picked by the lock's own count).
    static HOLD_COUNTDOWN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this uncontended shared acquisition is one of the timed ones.
#[inline]
pub(crate) fn sample_hold() -> bool {
    HOLD_COUNTDOWN.with(|c| {
        let n = c.get();
        if n == 0 {
            c.set(HOLD_SAMPLE_EVERY - 1);
            true
        } else {
            c.set(n - 1);
            false
        }
    })
}

/// When a hold began (a raw clock reading, 0 when this hold is not timed) and how many
/// acquisitions it stands for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hold {
    since: u64,
    weight: u32,
}

impl Hold {
    /// An uncontended hold, timed when `timed` and then standing for
    /// [`HOLD_SAMPLE_EVERY`] holds.
    #[inline]
    pub(crate) fn uncontended(timed: bool) -> Self {
        let since = if timed { clock::raw().max(1) } else { 0 };
        Hold {
            since,
            weight: HOLD_SAMPLE_EVERY,
        }
    }

    /// A contended hold, which began at `now` (the end of its wait): always timed.
    pub(crate) fn contended(now: u64) -> Self {
        Hold {
            since: now.max(1),
            weight: 1,
        }
    }
}

/// `Drop` (records the hold), `Deref`, `Debug` and, with `mut`, `DerefMut` for a lock guard
/// with fields `sig: &LockSignals`, `hold: Hold` and `guard` (the wrapped lock's guard).
macro_rules! guard_impls {
    ($guard:ident, mut) => {
        guard_impls!($guard);

        impl<T: ?Sized> std::ops::DerefMut for $guard<'_, T> {
            fn deref_mut(&mut self) -> &mut T {
                &mut self.guard
            }
        }
    };
    ($guard:ident) => {
        impl<T: ?Sized> Drop for $guard<'_, T> {
            #[inline]
            fn drop(&mut self) {
                self.sig.released(self.hold);
            }
        }

        impl<T: ?Sized> std::ops::Deref for $guard<'_, T> {
            type Target = T;
            fn deref(&self) -> &T {
                &self.guard
            }
        }

        impl<T: ?Sized + std::fmt::Debug> std::fmt::Debug for $guard<'_, T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&*self.guard, f)
            }
        }
    };
}
pub(crate) use guard_impls;

/// The figures of one named lock, shared by the lock and the registry (which holds them
/// weakly, so a dropped lock leaves `/metrics` at the next scrape).
pub(crate) struct LockSignals {
    pub(crate) name: String,
    /// The `lock` label: the name, or `__overflow__` past the cardinality cap.
    pub(crate) label: String,
    kind: LockKind,
    site: &'static Location<'static>,
    /// Uncontended exclusive acquisitions: written only by the holder of the exclusive lock
    /// (a load and a store, no read-modify-write), read at scrape time.
    exclusive: AtomicU64,
    /// Uncontended shared (read) acquisitions: readers hold the lock together, so these
    /// need the sharded counter.
    shared: Counter,
    contended: Counter,
    panics: Arc<Counter>,
    pub(crate) wait: Arc<Histogram>,
    pub(crate) hold: Arc<Histogram>,
    waiters: AtomicUsize,
    waiters_max: WindowMax,
    acquisitions_total: WindowTotal,
    contended_total: WindowTotal,
}

impl LockSignals {
    pub(crate) fn register(
        name: String,
        kind: LockKind,
        site: &'static Location<'static>,
        registry: &Registry,
    ) -> Arc<Self> {
        let (panics, admitted) = registry.counter_admitted(&names::LOCK_PANICS_TOTAL, &[&name]);
        let label = if admitted {
            name.clone()
        } else {
            OVERFLOW_LABEL.to_owned()
        };
        let l = label.as_str();
        let sig = Arc::new(LockSignals {
            shared: Counter::new(),
            contended: Counter::new(),
            panics,
            wait: registry.histogram(&names::LOCK_WAIT_SECONDS, &[l]),
            hold: registry.histogram(&names::LOCK_HOLD_SECONDS, &[l]),
            name,
            label,
            kind,
            site,
            exclusive: AtomicU64::new(0),
            waiters: AtomicUsize::new(0),
            waiters_max: WindowMax::new(),
            acquisitions_total: WindowTotal::new(),
            contended_total: WindowTotal::new(),
        });
        registry.register_collector(Arc::downgrade(&sig) as std::sync::Weak<dyn Collector>);
        sig
    }

    /// Counts an uncontended exclusive acquisition, and says whether to time its hold (one
    /// in [`HOLD_SAMPLE_EVERY`], by the count itself). Only the holder of the exclusive lock
    /// may call it: holders follow each other, so a load and a store cannot lose a count.
    #[inline]
    pub(crate) fn exclusive_acquired(&self) -> bool {
        let n = self.exclusive.load(Ordering::Relaxed);
        self.exclusive.store(n + 1, Ordering::Relaxed);
        n % u64::from(HOLD_SAMPLE_EVERY) == 0
    }

    /// Counts an uncontended shared acquisition.
    #[inline]
    pub(crate) fn shared_acquired(&self) {
        self.shared.inc();
    }

    /// Marks a caller as waiting until the returned guard drops (after the acquisition, or
    /// when a waiting future is dropped): the waiters gauge cannot leak.
    pub(crate) fn waiting(&self) -> Waiting<'_> {
        let now = self.waiters.fetch_add(1, Ordering::Relaxed) + 1;
        self.waiters_max.observe(now as u64);
        Waiting(&self.waiters)
    }

    /// Records an acquisition that had to wait from `start` to `now` (raw clock readings),
    /// and adds it to the contention profile when `sampled` (see
    /// [`super::contention::begin`]).
    pub(crate) fn contended(
        &self,
        start: u64,
        now: u64,
        site: &'static Location<'static>,
        sampled: Option<super::contention::Sampled>,
    ) {
        let nanos = clock::nanos_between(start, now);
        self.contended.inc();
        self.wait.record(nanos);
        if let Some(s) = sampled {
            super::contention::finish(s, &self.label, self.kind.as_str(), site, nanos);
        }
    }

    /// Records a hold (when it was timed) and counts a panic that unwound while the guard
    /// was held.
    #[inline]
    pub(crate) fn released(&self, hold: Hold) {
        if hold.since != 0 {
            self.hold.record_n(
                clock::nanos_between(hold.since, clock::raw()),
                u64::from(hold.weight),
            );
        }
        if std::thread::panicking() {
            self.panics.inc();
        }
    }

    fn uncontended_total(&self) -> u64 {
        self.exclusive.load(Ordering::Relaxed) + self.shared.get()
    }

    fn waiters(&self) -> u64 {
        self.waiters.load(Ordering::Relaxed) as u64
    }

    pub(crate) fn source(&self) -> String {
        format!("{}:{}", self.site.file(), self.site.line())
    }
}

/// A caller counted in the waiters gauge; see [`LockSignals::waiting`].
pub(crate) struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Collector for LockSignals {
    fn collect(&self, out: &mut Collection) {
        let l = self.label.as_str();
        let uncontended = self.uncontended_total();
        let contended = self.contended.get();
        out.push(
            &names::LOCK_ACQUISITIONS_TOTAL,
            &[l, "false"],
            uncontended as f64,
        );
        out.push(
            &names::LOCK_ACQUISITIONS_TOTAL,
            &[l, "true"],
            contended as f64,
        );
        let waiters = self.waiters();
        self.waiters_max.observe(waiters);
        out.push(&names::LOCK_WAITERS, &[l], waiters as f64);
        if let Some(w) = out.window() {
            let max = self.waiters_max.max(w).max(waiters);
            out.push(&names::LOCK_WAITERS_MAX_10S, &[l], max as f64);
        }
    }

    fn snapshot(&self, out: &mut Sections) {
        let waiters = self.waiters();
        self.waiters_max.observe(waiters);
        let contended = self.contended.get();
        let total = self.uncontended_total() + contended;
        let window = out.window().map(|w| {
            let acquisitions = self.acquisitions_total.delta(w, total).map(|(d, _)| d);
            let contended = self.contended_total.delta(w, contended).map(|(d, _)| d);
            json!({
                "acquisitions": acquisitions,
                "contended": contended,
                "contended_ratio": match (acquisitions, contended) {
                    (Some(a), Some(c)) if a > 0 => Some(c as f64 / a as f64),
                    _ => None,
                },
                "waiters_max": self.waiters_max.max(w).max(waiters),
                "wait_seconds": self.wait.window(w).map(|h| h.to_json()),
                "hold_seconds": self.hold.window(w).map(|h| h.to_json()),
            })
        });
        let entry = json!({
            "name": self.name,
            "label": self.label,
            "kind": self.kind.as_str(),
            "acquisitions": total,
            "contended": contended,
            "contended_ratio": if total > 0 { contended as f64 / total as f64 } else { 0.0 },
            "waiters": waiters,
            "waiters_max": self.waiters_max.lifetime().max(waiters),
            "panics": self.panics.get(),
            "wait_seconds": self.wait.snapshot().to_json(),
            "hold_seconds": self.hold.snapshot().to_json(),
        });
        out.push("locks", attach(entry, window));
    }

    fn inventory(&self, out: &mut Sections) {
        out.push(
            "locks",
            json!({
                "name": self.name,
                "label": self.label,
                "kind": self.kind.as_str(),
                "hold_sample_every": HOLD_SAMPLE_EVERY,
                "source": self.source(),
            }),
        );
    }

    fn tick(&self, tick: &Tick) {
        let contended = self.contended.get();
        self.acquisitions_total
            .tick(tick, self.uncontended_total() + contended);
        self.contended_total.tick(tick, contended);
        self.waiters_max.tick(tick, self.waiters());
    }
}
