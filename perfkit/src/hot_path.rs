//! The runtime behind `#[hot_path]`: one [`Site`](crate::__private::Site) per annotated
//! function, and the guard each call holds.
//!
//! Per call, the guard reads the clock twice and makes three relaxed adds on the calling
//! thread's cells (calls entered, a histogram bucket, the histogram's sum); an `err`,
//! `panic` or `cancelled` outcome adds one more. Nothing is shared between threads on that
//! path, so it scales with threads. At scrape time: `calls_total{outcome="ok"}` is the
//! histogram's count minus the other outcomes, and `in_flight` is calls entered minus the
//! histogram's count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::json;

#[cfg_attr(perfkit_hot_path_off, allow(unused_imports))]
use crate::clock;
use crate::loom::lock_unpoisoned as lock;
use crate::metrics::{Counter, Histogram, HistogramSnapshot, WindowMax, names};

/// A `#[hot_path]` function's handles, registered on first call. Lives in a `static` the
/// macro emits in the function's body.
#[doc(hidden)]
pub struct Site {
    /// The `name = "..."` argument, or empty.
    name: &'static str,
    module: &'static str,
    /// The path of an item nested in the function, for the default label.
    path: fn() -> &'static str,
    handles: OnceLock<&'static Handles>,
}

struct Handles {
    function: String,
    module: &'static str,
    labels: [String; 2],
    seconds: Arc<Histogram>,
    entered: Counter,
    err: Counter,
    panic: Counter,
    cancelled: Counter,
    /// Largest `ok` figure exported so far, keeping the derived counter monotonic.
    ok_shown: AtomicU64,
    /// Calls in flight, sampled each second.
    in_flight_max: WindowMax,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("name", &self.name)
            .field("module", &self.module)
            .finish()
    }
}

#[cfg(not(perfkit_hot_path_off))]
impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("function", &self.handles.function)
            .finish_non_exhaustive()
    }
}

/// Built with `--cfg perfkit_hot_path_off`, every guard is this empty value and every call to it
/// inlines to nothing: `#[hot_path]` functions compile to their plain bodies.
#[cfg(perfkit_hot_path_off)]
#[doc(hidden)]
#[derive(Debug)]
pub struct Guard;

#[cfg(perfkit_hot_path_off)]
impl Guard {
    #[doc(hidden)]
    #[inline(always)]
    pub fn enter(_site: &'static Site) -> Guard {
        Guard
    }

    #[doc(hidden)]
    #[inline(always)]
    pub fn finish(&mut self, _err: bool) {}
}

impl Site {
    #[doc(hidden)]
    pub const fn new(name: &'static str, module: &'static str, path: fn() -> &'static str) -> Self {
        Site {
            name,
            module,
            path,
            handles: OnceLock::new(),
        }
    }

    /// The `function` label: the `name` argument, else the function's path below its
    /// module — `parse` for a free function, `Parser::parse` for a method (so methods of
    /// different types in one module stay apart), `<Parser as Read>::read` in a trait impl.
    fn function_label(&self) -> String {
        if !self.name.is_empty() {
            return self.name.to_owned();
        }
        let full = (self.path)();
        let full = full.strip_suffix("::__perfkit_path").unwrap_or(full);
        // An `async fn`'s body is a closure; its path segment says nothing to a reader.
        let full = full.replace("::{{closure}}", "");
        full.replace(&format!("{}::", self.module), "")
    }

    #[cfg_attr(perfkit_hot_path_off, allow(dead_code))]
    #[inline]
    fn handles(&'static self) -> &'static Handles {
        match self.handles.get() {
            Some(h) => h,
            None => self.register(),
        }
    }

    #[cfg_attr(perfkit_hot_path_off, allow(dead_code))]
    #[cold]
    fn register(&'static self) -> &'static Handles {
        self.handles.get_or_init(|| {
            let registry = crate::metrics::registry();
            // Labels come from the code (one set per annotated function), so they are few
            // by construction.
            let function = self.function_label();
            let labels = [function.clone(), self.module.to_owned()];
            let handles: &'static Handles = Box::leak(Box::new(Handles {
                function,
                module: self.module,
                seconds: registry.histogram(&names::HOT_PATH_SECONDS, &[&labels[0], &labels[1]]),
                labels,
                entered: Counter::new(),
                err: Counter::new(),
                panic: Counter::new(),
                cancelled: Counter::new(),
                ok_shown: AtomicU64::new(0),
                in_flight_max: WindowMax::new(),
            }));
            lock(sites()).push(handles);
            handles
        })
    }
}

/// Every registered site.
fn sites() -> &'static Mutex<Vec<&'static Handles>> {
    static SITES: OnceLock<Mutex<Vec<&'static Handles>>> = OnceLock::new();
    SITES.get_or_init(|| {
        crate::metrics::registry().register_owned("hot_paths".into(), Arc::new(HotPaths));
        Mutex::default()
    })
}

/// Measures one call; records in `Drop`, so a panic or a dropped future is counted too.
#[cfg(not(perfkit_hot_path_off))]
#[doc(hidden)]
#[must_use]
pub struct Guard {
    handles: &'static Handles,
    start: u64,
    done: bool,
}

#[cfg(not(perfkit_hot_path_off))]
impl Guard {
    #[doc(hidden)]
    #[inline]
    pub fn enter(site: &'static Site) -> Guard {
        let handles = site.handles();
        handles.entered.inc();
        Guard {
            handles,
            start: clock::raw(),
            done: false,
        }
    }

    /// The call returned; `err` when it returned a `Result::Err`.
    #[doc(hidden)]
    #[inline]
    pub fn finish(&mut self, err: bool) {
        self.done = true;
        if err {
            self.handles.err.inc();
        }
        self.record();
    }

    #[inline]
    fn record(&self) {
        let nanos = clock::nanos_between(self.start, clock::raw());
        self.handles.seconds.record(nanos);
    }
}

#[cfg(not(perfkit_hot_path_off))]
impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            if std::thread::panicking() {
                self.handles.panic.inc();
            } else {
                self.handles.cancelled.inc();
            }
            self.record();
        }
    }
}

/// Enters the call's `tracing` span (feature `tracing`): held for the duration of a sync
/// call. Without the feature, nothing.
#[cfg(all(feature = "tracing", not(perfkit_hot_path_off)))]
#[doc(hidden)]
#[inline]
pub fn enter_span(site: &'static Site) -> tracing::span::EnteredSpan {
    span(site).entered()
}

/// Enters the call's `tracing` span (feature `tracing`). Without the feature, nothing.
#[cfg(any(not(feature = "tracing"), perfkit_hot_path_off))]
#[doc(hidden)]
#[inline(always)]
pub fn enter_span(_site: &'static Site) {}

/// Runs an async call's body inside its `tracing` span (feature `tracing`), entered on every
/// poll and exited between polls. Without the feature, the body unchanged.
#[cfg(all(feature = "tracing", not(perfkit_hot_path_off)))]
#[doc(hidden)]
#[inline]
pub fn instrument<F: std::future::Future>(
    site: &'static Site,
    body: F,
) -> tracing::instrument::Instrumented<F> {
    tracing::Instrument::instrument(body, span(site))
}

/// Runs an async call's body inside its `tracing` span (feature `tracing`). Without the
/// feature, the body unchanged.
#[cfg(any(not(feature = "tracing"), perfkit_hot_path_off))]
#[doc(hidden)]
#[inline(always)]
pub fn instrument<F: std::future::Future>(_site: &'static Site, body: F) -> F {
    body
}

/// One span per call, at INFO level, named `hot_path`, with the `function` and `module`
/// labels as fields. A disabled span (no subscriber interested) costs a filter check.
#[cfg(all(feature = "tracing", not(perfkit_hot_path_off)))]
fn span(site: &'static Site) -> tracing::Span {
    let h = site.handles();
    tracing::info_span!(
        "hot_path",
        function = h.function.as_str(),
        module = h.module
    )
}

/// Whether a `Result` is an `Err` (the macro calls this when the written return type's
/// last path segment is `Result`).
#[doc(hidden)]
#[inline]
pub fn is_err<T, E>(r: &Result<T, E>) -> bool {
    r.is_err()
}

/// Calls `f` once. The macro wraps a sync body in a closure passed here, so `return` and `?`
/// come back to the guard, and the closure may hand out borrows of what it captured.
#[doc(hidden)]
#[inline(always)]
pub fn call_once<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// A site's figures as one scrape reads them.
struct Reading {
    ok: u64,
    err: u64,
    panic: u64,
    cancelled: u64,
    in_flight: u64,
    seconds: HistogramSnapshot,
}

impl Handles {
    /// The figures, read consistently enough for a scrape.
    fn read(&self) -> Reading {
        // The histogram first: every call it counts had its other outcome (if any) counted
        // before its record, so the reads below include it, and `ok` can only be understated
        // (by calls finishing meanwhile), never overstated.
        let seconds = self.seconds.snapshot();
        let count = seconds.count();
        let err = self.err.get();
        let panic = self.panic.get();
        let cancelled = self.cancelled.get();
        let entered = self.entered.get();
        let ok = count.saturating_sub(err + panic + cancelled);
        let ok = self.ok_shown.fetch_max(ok, Ordering::Relaxed).max(ok);
        Reading {
            ok,
            err,
            panic,
            cancelled,
            in_flight: entered.saturating_sub(count),
            seconds,
        }
    }
}

/// A copy of the registered sites, so a scrape reads them without holding the lock.
fn registered() -> Vec<&'static Handles> {
    lock(sites()).clone()
}

struct HotPaths;

impl crate::metrics::Collector for HotPaths {
    fn collect(&self, out: &mut crate::metrics::Collection) {
        for h in registered() {
            let r = h.read();
            h.in_flight_max.observe(r.in_flight);
            let [f, m] = &h.labels;
            for (outcome, v) in [
                ("ok", r.ok),
                ("err", r.err),
                ("panic", r.panic),
                ("cancelled", r.cancelled),
            ] {
                out.push(&names::HOT_PATH_CALLS_TOTAL, &[f, m, outcome], v as f64);
            }
            out.push(&names::HOT_PATH_IN_FLIGHT, &[f, m], r.in_flight as f64);
            if let Some(w) = out.window() {
                let max = h.in_flight_max.max(w).max(r.in_flight);
                out.push(&names::HOT_PATH_IN_FLIGHT_MAX_10S, &[f, m], max as f64);
            }
        }
    }

    fn tick(&self, tick: &crate::metrics::Tick) {
        for h in registered() {
            h.in_flight_max.tick(tick, h.read().in_flight);
        }
    }

    fn snapshot(&self, out: &mut crate::metrics::Sections) {
        for h in registered() {
            let r = h.read();
            h.in_flight_max.observe(r.in_flight);
            let window = out.window().map(|w| {
                let seconds = h.seconds.window(w);
                json!({
                    "calls": seconds.as_ref().map(|s| s.count()),
                    "in_flight_max": h.in_flight_max.max(w).max(r.in_flight),
                    "seconds": seconds.map(|s| s.to_json()),
                })
            });
            let entry = json!({
                    "name": h.labels[0],
                    "function": h.function,
                    "module": h.module,
                    "calls": r.ok + r.err + r.panic + r.cancelled,
                    "ok": r.ok,
                    "errors": r.err,
                    "panics": r.panic,
                    "cancelled": r.cancelled,
                    "in_flight": r.in_flight,
                    "seconds": r.seconds.to_json(),
            });
            out.push("hot_paths", crate::metrics::window::attach(entry, window));
        }
    }
}

#[cfg(all(test, feature = "macros"))]
mod tests {
    #[crate::hot_path(crate = "crate", name = "hot_path_off_probe")]
    fn probe(x: u32) -> u32 {
        x + 1
    }

    /// With `--cfg perfkit_hot_path_off` nothing is registered or recorded; without it the
    /// call shows up. (`RUSTFLAGS="--cfg perfkit_hot_path_off" cargo test -p perfkit --lib
    /// hot_path` runs the first case.)
    #[test]
    fn hot_path_off_compiles_the_measurement_away() {
        assert_eq!(probe(1), 2);
        let snap = crate::metrics::registry().snapshot();
        let found = snap["hot_paths"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["function"] == "hot_path_off_probe"));
        assert_eq!(found, cfg!(not(perfkit_hot_path_off)), "{snap}");
    }
}
