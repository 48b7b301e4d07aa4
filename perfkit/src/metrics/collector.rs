//! The collector contract: what a primitive implements to be read at scrape time
//! ([`Collector`]) and what it writes into ([`Collection`] for `/metrics`, [`Sections`] for
//! the snapshot and inventory). A leaf: it names only the metric definitions and the window
//! clock, so the registry and every collector (primitives, the process, the allocator, the
//! runtimes) depend on it and not on each other.

use std::collections::BTreeMap;

use super::names::{Kind, MetricDef};
use super::window::{Tick, Window};

/// A source of values read at scrape time: the pull side of the metrics model.
///
/// Primitives implement this over their own state (depth, capacity, busy workers, ...) and
/// register it with [`Registry::register_collector`](super::Registry::register_collector); the registry holds it weakly, so a
/// dropped primitive disappears from `/metrics` and the snapshot at the next scrape.
pub trait Collector: Send + Sync {
    /// Writes current gauge and counter values.
    fn collect(&self, out: &mut Collection);

    /// Adds this primitive's current figures to the JSON snapshot. The default adds nothing.
    fn snapshot(&self, out: &mut Sections) {
        let _ = out;
    }

    /// Adds this primitive's configuration to the JSON inventory. The default adds nothing.
    fn inventory(&self, out: &mut Sections) {
        let _ = out;
    }

    /// Called once a second by the registry's window clock (see [`super::window`]): moves
    /// this primitive's windowed gauges and totals on. The default does nothing.
    fn tick(&self, tick: &Tick) {
        let _ = tick;
    }
}

/// Values gathered from collectors during one scrape.
#[derive(Debug, Default)]
pub struct Collection {
    samples: Vec<Sample>,
    window: Option<Window>,
}

/// One gauge or counter value with its labels.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) def: &'static MetricDef,
    pub(crate) labels: Vec<String>,
    pub(crate) value: f64,
}

impl Collection {
    /// A collection for a scrape whose `*_max_10s` gauges cover `window`.
    pub(crate) fn for_window(window: Option<Window>) -> Self {
        Collection {
            samples: Vec::new(),
            window,
        }
    }

    /// The samples gathered.
    pub(crate) fn into_samples(self) -> Vec<Sample> {
        self.samples
    }

    /// The window of the `*_max_10s` gauges
    /// ([`METRICS_WINDOW_SECONDS`](super::window::METRICS_WINDOW_SECONDS)), when the
    /// registry renders; `None` in a collection built elsewhere.
    pub fn window(&self) -> Option<&Window> {
        self.window.as_ref()
    }

    /// Adds one sample of a gauge or counter family. `labels` are the values for
    /// `def.labels`, in order.
    ///
    /// # Panics
    /// If `def` is a histogram or the number of label values does not match `def.labels`.
    pub fn push(&mut self, def: &'static MetricDef, labels: &[&str], value: f64) {
        assert!(
            def.kind != Kind::Histogram,
            "{}: histograms are not collected",
            def.name
        );
        check_labels(def, labels.len());
        self.samples.push(Sample {
            def,
            labels: labels.iter().map(|s| (*s).to_owned()).collect(),
            value,
        });
    }
}

/// Named lists of JSON entries that collectors fill for the snapshot and inventory.
#[derive(Debug, Default)]
pub struct Sections {
    map: BTreeMap<&'static str, Vec<serde_json::Value>>,
    /// Objects at the snapshot's top level (`process`, `window`), not in a list.
    top: BTreeMap<&'static str, serde_json::Value>,
    window: Option<Window>,
    /// The registry's clock when the snapshot was taken.
    clock: Option<Window>,
}

impl Sections {
    /// Sections for a snapshot read at `clock`, reporting figures over `window` too.
    pub(crate) fn with_window(clock: Window, window: Option<Window>) -> Self {
        Sections {
            map: BTreeMap::new(),
            top: BTreeMap::new(),
            window,
            clock: Some(clock),
        }
    }

    /// The last `seconds` at the snapshot's clock, for figures every snapshot reports over
    /// a fixed window (a pool's `saturation_avg`). `None` outside a registry's snapshot.
    pub(crate) fn over(&self, seconds: u32) -> Option<Window> {
        self.clock.map(|mut w| {
            w.seconds = seconds;
            w
        })
    }

    /// The window the reader asked for (`?window=N` on the snapshot): entries add their
    /// figures over it as a `window` object. `None` for a plain snapshot and the inventory.
    pub fn window(&self) -> Option<&Window> {
        self.window.as_ref()
    }

    /// Adds an entry to a section (`"queues"`, `"batchers"`, `"pools"`, `"tasks"`,
    /// `"hot_paths"`, `"runtimes"`, ...).
    pub fn push(&mut self, section: &'static str, entry: serde_json::Value) {
        self.map.entry(section).or_default().push(entry);
    }

    pub(crate) fn take(&mut self, section: &str) -> Vec<serde_json::Value> {
        self.map.remove(section).unwrap_or_default()
    }

    /// Sets an object at the snapshot's top level (the process's own figures).
    pub(crate) fn set_top(&mut self, key: &'static str, value: serde_json::Value) {
        self.top.insert(key, value);
    }

    /// The top-level objects set, in key order.
    pub(crate) fn take_tops(&mut self) -> BTreeMap<&'static str, serde_json::Value> {
        std::mem::take(&mut self.top)
    }
}

pub(crate) fn check_labels(def: &MetricDef, n: usize) {
    assert!(
        n == def.labels.len(),
        "{}: expected {} label values ({:?}), got {n}",
        def.name,
        def.labels.len(),
        def.labels
    );
}
