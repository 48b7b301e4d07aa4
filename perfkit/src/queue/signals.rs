//! What every perfkit queue records and reports, whatever holds its items: the `queue`
//! label, counters, wait histogram, depth warnings, high-water mark, and its `/metrics`,
//! snapshot and inventory entries. Used by [`super::Receiver`]'s queue and by the worker
//! pool's queue, so both read the same in every output.

use std::panic::Location;

#[cfg(not(loom))]
use serde_json::json;

use crate::clock;
use crate::metrics::{
    Counter, Histogram, LocalCounter, LocalHistogram, OVERFLOW_LABEL, Registry, WindowMax, names,
};

use super::Policy;

/// Minimum time between two warnings for the same threshold.
const WARN_EVERY_MS: u64 = 10_000;

struct Threshold {
    fraction: f64,
    depth: usize,
    last_warn_ms: std::sync::atomic::AtomicU64,
}

pub(crate) struct Metrics {
    pub(crate) enqueued: std::sync::Arc<Counter>,
    pub(crate) dequeued: std::sync::Arc<Counter>,
    pub(crate) dropped_full: std::sync::Arc<Counter>,
    pub(crate) dropped_oldest: std::sync::Arc<Counter>,
    pub(crate) dropped_closed: std::sync::Arc<Counter>,
    /// Items the consumer had taken out and gave up on at a shutdown deadline.
    pub(crate) dropped_shutdown: std::sync::Arc<Counter>,
    pub(crate) rejected: std::sync::Arc<Counter>,
    pub(crate) wait: std::sync::Arc<Histogram>,
}

/// The dequeue side's counter and wait histogram, owned by one consumer: see
/// [`Signals::local`].
pub(crate) struct LocalDequeue<'a> {
    dequeued: LocalCounter<'a>,
    wait: LocalHistogram<'a>,
}

impl LocalDequeue<'_> {
    /// The item enqueued at raw clock reading `at` was dequeued at `now`.
    #[inline]
    pub(crate) fn dequeued(&self, at: u64, now: u64) {
        self.dequeued.inc();
        self.wait.record(clock::nanos_between(at, now));
    }
}

/// What a queue belongs to: its owner's name is carried as a label on every queue series,
/// so PromQL joins a pool's saturation with its queue without `label_replace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A queue of its own: no `pool` or `batcher` label.
    None,
    /// A worker pool's queue: `pool="<name>"`.
    Pool,
    /// A batcher's intake queue: `batcher="<name>"`.
    Batcher,
}

pub(crate) struct Signals {
    pub(crate) name: String,
    /// The `queue` label: the name, or `__overflow__` past the cardinality cap.
    pub(crate) label: String,
    /// The values of every queue series' labels: `queue`, `pool`, `batcher`.
    #[cfg_attr(loom, allow(dead_code))]
    labels: [String; 3],
    #[cfg_attr(loom, allow(dead_code))]
    site: &'static Location<'static>,
    pub(crate) capacity: usize,
    pub(crate) policy: Policy,
    thresholds: Vec<Threshold>,
    /// The depth's maximum per second, for windows and the high-water mark.
    depth_max: WindowMax,
    pub(crate) m: Metrics,
}

impl Signals {
    /// Registers the queue's series. `warn_at` must hold fractions in (0, 1].
    pub(crate) fn new(
        name: String,
        capacity: usize,
        policy: Policy,
        warn_at: &[f64],
        site: &'static Location<'static>,
        registry: &Registry,
        owner: Owner,
    ) -> Self {
        let owned = |label: &str, who: Owner| {
            let l = label.to_owned();
            match who {
                Owner::None => [l, String::new(), String::new()],
                Owner::Pool => [l.clone(), l, String::new()],
                Owner::Batcher => [l.clone(), String::new(), l],
            }
        };
        let asked = owned(&name, owner);
        let asked: Vec<&str> = asked.iter().map(String::as_str).collect();
        let (enqueued, admitted) = registry.counter_admitted(&names::QUEUE_ENQUEUED_TOTAL, &asked);
        let label = if admitted {
            name.clone()
        } else {
            OVERFLOW_LABEL.to_owned()
        };
        let labels = owned(&label, owner);
        let [q, p, b] = [&labels[0], &labels[1], &labels[2]].map(String::as_str);
        let dropped =
            |reason: &str| registry.counter(&names::QUEUE_DROPPED_TOTAL, &[q, p, b, reason]);
        let m = Metrics {
            enqueued,
            dequeued: registry.counter(&names::QUEUE_DEQUEUED_TOTAL, &[q, p, b]),
            dropped_full: dropped("full"),
            dropped_oldest: dropped("oldest"),
            dropped_closed: dropped("closed"),
            dropped_shutdown: dropped("shutdown"),
            rejected: registry.counter(&names::QUEUE_REJECTED_TOTAL, &[q, p, b]),
            wait: registry.histogram(&names::QUEUE_WAIT_SECONDS, &[q, p, b]),
        };
        let thresholds = warn_at
            .iter()
            .map(|&fraction| Threshold {
                fraction,
                depth: ((capacity as f64 * fraction).ceil() as usize).clamp(1, capacity),
                last_warn_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
            })
            .collect();
        Signals {
            name,
            label,
            labels,
            site,
            capacity,
            policy,
            thresholds,
            depth_max: WindowMax::new(),
            m,
        }
    }

    /// The depth reached `len` (an item was enqueued): raises the current second's peak and
    /// warns at thresholds.
    pub(crate) fn reached(&self, len: usize) {
        self.depth_max.observe(len as u64);
        for t in &self.thresholds {
            if len == t.depth {
                self.warn(t, len);
            }
        }
    }

    /// The highest depth in the current second so far.
    #[inline]
    pub(crate) fn high_water(&self) -> usize {
        self.depth_max.peak() as usize
    }

    /// The largest depth over `window` (the current depth not included).
    pub(crate) fn depth_max(&self, window: &crate::metrics::Window) -> usize {
        self.depth_max.max(window) as usize
    }

    /// Single-writer recorders for the dequeue side, for one consumer task that takes items
    /// in a hot loop (see [`Counter::local`]).
    pub(crate) fn local(&self) -> LocalDequeue<'_> {
        LocalDequeue {
            dequeued: self.m.dequeued.local(),
            wait: self.m.wait.local(),
        }
    }

    #[cold]
    fn warn(&self, t: &Threshold, len: usize) {
        use std::sync::atomic::Ordering as O;
        let now = clock::millis();
        let last = t.last_warn_ms.load(O::Relaxed);
        if last != u64::MAX && now.saturating_sub(last) < WARN_EVERY_MS {
            return;
        }
        if t.last_warn_ms
            .compare_exchange(last, now, O::Relaxed, O::Relaxed)
            .is_ok()
        {
            tracing::warn!(
                queue = %self.name,
                depth = len,
                capacity = self.capacity,
                threshold = t.fraction,
                "perfkit queue is {:.0}% full",
                t.fraction * 100.0
            );
        }
    }
}

#[cfg(not(loom))]
impl Signals {
    /// The scrape-time gauges.
    pub(crate) fn collect(&self, out: &mut crate::metrics::Collection, depth: usize, oldest: f64) {
        let l = self.labels.each_ref().map(String::as_str);
        out.push(&names::QUEUE_DEPTH, &l, depth as f64);
        if let Some(w) = out.window() {
            let max = self.depth_max.max(w).max(depth as u64);
            out.push(&names::QUEUE_DEPTH_MAX_10S, &l, max as f64);
        }
        out.push(&names::QUEUE_CAPACITY, &l, self.capacity as f64);
        out.push(&names::QUEUE_OLDEST_AGE_SECONDS, &l, oldest);
    }

    /// Moves the depth's per-second maximum on (see [`crate::metrics::window`]).
    pub(crate) fn tick(&self, tick: &crate::metrics::Tick, depth: usize) {
        self.depth_max.tick(tick, depth as u64);
    }

    /// The `queues` snapshot entry.
    pub(crate) fn snapshot(&self, out: &mut crate::metrics::Sections, depth: usize, oldest: f64) {
        let high_water = self.depth_max.lifetime().max(depth as u64);
        let window = out.window().map(|w| {
            let max = self.depth_max.max(w).max(depth as u64);
            json!({
                "depth_max": max,
                "saturation_max": max as f64 / self.capacity as f64,
                "wait_seconds": self.m.wait.window(w).map(|h| h.to_json()),
            })
        });
        let entry = json!({
                "name": self.name,
                "label": self.label,
                "depth": depth,
                "capacity": self.capacity,
                "saturation": depth as f64 / self.capacity as f64,
                "high_water": high_water,
                "high_water_saturation": high_water as f64 / self.capacity as f64,
                "enqueued": self.m.enqueued.get(),
                "dequeued": self.m.dequeued.get(),
                "dropped": {
                    "full": self.m.dropped_full.get(),
                    "oldest": self.m.dropped_oldest.get(),
                    "closed": self.m.dropped_closed.get(),
                    "shutdown": self.m.dropped_shutdown.get(),
                },
                "rejected": self.m.rejected.get(),
                "wait_seconds": self.m.wait.snapshot().to_json(),
                "oldest_age_seconds": oldest,
        });
        out.push("queues", crate::metrics::window::attach(entry, window));
    }

    /// The `queues` inventory entry.
    pub(crate) fn inventory(&self, out: &mut crate::metrics::Sections, item_type: &str) {
        out.push(
            "queues",
            json!({
                "name": self.name,
                "label": self.label,
                "capacity": self.capacity,
                "policy": self.policy.as_str(),
                "warn_at": self.thresholds.iter().map(|t| t.fraction).collect::<Vec<_>>(),
                "item_type": item_type,
                "crash_exposure_items": self.capacity,
                "source": self.source(),
            }),
        );
    }

    /// `file:line` of the call that built the queue.
    pub(crate) fn source(&self) -> String {
        format!("{}:{}", self.site.file(), self.site.line())
    }
}

/// Checks warning thresholds: each must be a fraction in (0, 1].
pub(crate) fn bad_threshold(warn_at: &[f64]) -> Option<f64> {
    warn_at.iter().copied().find(|f| !(*f > 0.0 && *f <= 1.0))
}
