//! Metric storage, names, collectors and the Prometheus renderer.
//!
//! # The model
//! * **Counters and histograms** that perfkit records on hot paths live in perfkit's own
//!   storage ([`Counter`], [`Histogram`]): per-thread, cache-padded cells with fixed memory,
//!   summed when scraped. Recording takes no lock, allocates nothing and looks nothing up;
//!   handles are created once (when a primitive is built) through the [`Registry`].
//! * **Gauges** (depth, capacity, busy workers, live tasks, ...) are *pulled*: primitives
//!   register a [`Collector`] that reads their own state at scrape time. The registry holds
//!   collectors weakly, so a dropped primitive disappears at the next scrape.
//! * **Cardinality** is capped per family ([`DEFAULT_CARDINALITY_CAP`] label sets, see
//!   [`Registry::set_cardinality_cap`]). Label sets past the cap are recorded under
//!   [`OVERFLOW_LABEL`] and counted in `perfkit_metric_overflow_total{metric}`.
//! * **Process** figures (`process_*`) are read from `/proc` at scrape time, and tokio
//!   runtimes registered with [`register_runtime`] export their stable `tokio_runtime_*`
//!   metrics.
//! * The service's **own `metrics` facade** calls are rendered on the same `/metrics` through
//!   `metrics-exporter-prometheus` (feature `facade`); see the `facade` module for how perfkit
//!   keeps its memory bounded and how to compose it with a recorder you already have.
//!
//! Every name perfkit exports, with its description and unit, is in [`names`].
//!
//! # Examples
//! ```
//! use perfkit::metrics::{self, names};
//!
//! let registry = metrics::Registry::new();
//! // A queue's series carry `queue`, `pool` and `batcher`; empty values are left out.
//! let enqueued = registry.counter(&names::QUEUE_ENQUEUED_TOTAL, &["events", "", ""]);
//! enqueued.inc();
//! let wait = registry.histogram(&names::QUEUE_WAIT_SECONDS, &["events", "", ""]);
//! wait.record_duration(std::time::Duration::from_micros(250));
//!
//! let text = registry.render();
//! assert!(text.contains("perfkit_queue_enqueued_total{queue=\"events\"} 1"));
//! assert!(text.contains("perfkit_queue_wait_seconds_count{queue=\"events\"} 1"));
//! ```

mod builtin;
mod collector;
mod histogram;
pub mod names;
pub mod openmetrics;
mod process;
mod registry;
mod runtime;
pub(crate) mod shard;
mod snapshot;
mod text;
pub mod window;

cfg_facade! {
    pub mod facade;
}

pub use builtin::registry;
pub use collector::{Collection, Collector, Sections};
pub(crate) use histogram::ArcLocalHistogram;
pub use histogram::{Histogram, HistogramSnapshot, LocalHistogram};
pub use process::{ProcessStats, read as process_stats};
pub use registry::{DEFAULT_CARDINALITY_CAP, OVERFLOW_LABEL, Registry};
pub(crate) use shard::{ArcLocalCounter, SyncedCell};
pub use shard::{Counter, LocalCounter};

pub use snapshot::{SCHEMA_VERSION, SECTIONS};
pub use window::{MAX_WINDOW_SECONDS, Tick, Window, WindowMax, WindowTotal};

/// Registers a tokio runtime with the global registry: its stable runtime metrics appear
/// under `tokio_runtime_*{runtime="<name>"}` and in the snapshot's `runtimes` section.
pub fn register_runtime(name: &str, handle: tokio::runtime::Handle) {
    registry().register_runtime(name, handle);
}

/// Everything `/metrics` serves: the global registry, then the facade recorder's metrics
/// (when the `facade` feature is on and a recorder is installed or in use).
pub fn render() -> String {
    with_facade(registry().render())
}

/// [`render`] as OpenMetrics 1.0 text (see [`openmetrics`]), with `_created` samples for
/// the counters and histograms perfkit stores.
pub fn render_openmetrics() -> String {
    openmetrics::from_prometheus_text(&with_facade(registry().render_with_created()))
}

fn with_facade(out: String) -> String {
    #[cfg(feature = "facade")]
    let out = match facade::handle() {
        Some(h) => out + &h.render(),
        None => out,
    };
    out
}

pub(crate) fn facade_mode() -> &'static str {
    #[cfg(feature = "facade")]
    if facade::handle().is_some() {
        return "prometheus";
    }
    "off"
}
