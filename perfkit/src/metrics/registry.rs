//! The registry: perfkit's own metric families, the collectors that primitives register,
//! and the Prometheus text renderer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::collector::{Collection, Collector, Sample, check_labels};
use super::histogram::Histogram;
use super::names::{self, Kind, MetricDef};
use super::shard::Counter;
use super::text;
use super::window::{Tick, Window};

/// Label value that stands in for every label set past a family's cardinality cap.
pub const OVERFLOW_LABEL: &str = "__overflow__";

/// Default cap on distinct label sets per metric family.
pub const DEFAULT_CARDINALITY_CAP: usize = 1_000;

/// One metric family: its series keyed by label values, with a cardinality cap.
struct Family<T> {
    def: &'static MetricDef,
    series: Mutex<BTreeMap<Box<[String]>, Arc<T>>>,
    /// When each series was created (Unix seconds), for OpenMetrics' `_created`.
    created: Mutex<BTreeMap<Box<[String]>, f64>>,
}

/// Now, in seconds since the Unix epoch.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

use crate::loom::lock_unpoisoned as lock;

/// Holds perfkit's metric families and collectors, and renders them.
///
/// Most code uses the process-wide [`registry()`](super::registry()); tests and embedders may build their own.
pub struct Registry {
    counters: Mutex<HashMap<&'static str, Arc<Family<Counter>>>>,
    histograms: Mutex<HashMap<&'static str, Arc<Family<Histogram>>>>,
    overflow: Family<Counter>,
    cap: std::sync::atomic::AtomicUsize,
    collectors: Mutex<Vec<Weak<dyn Collector>>>,
    owned: Mutex<Vec<(String, Arc<dyn Collector>)>>,
    started: Instant,
    started_at: SystemTime,
    /// The second of the last window tick, held while a tick runs.
    last_tick: Mutex<Option<u64>>,
}

impl Registry {
    /// A registry with no collector at all, not even the process's: [`Registry::new`]
    /// adds the built-in ones.
    pub(crate) fn bare() -> Self {
        Registry {
            counters: Mutex::default(),
            histograms: Mutex::default(),
            overflow: Family {
                def: &names::METRIC_OVERFLOW_TOTAL,
                series: Mutex::default(),
                created: Mutex::default(),
            },
            cap: std::sync::atomic::AtomicUsize::new(DEFAULT_CARDINALITY_CAP),
            collectors: Mutex::default(),
            owned: Mutex::default(),
            started: Instant::now(),
            started_at: SystemTime::now(),
            last_tick: Mutex::new(None),
        }
    }

    /// Sets the cap on distinct label sets per family (at least 1). Series that already
    /// exist keep their labels; new label sets past the cap go to [`OVERFLOW_LABEL`].
    pub fn set_cardinality_cap(&self, cap: usize) {
        self.cap
            .store(cap.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The cap on distinct label sets per family.
    pub fn cardinality_cap(&self) -> usize {
        self.cap.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The counter for `def` with these label values, created on first use.
    ///
    /// Call this once when a primitive is built and keep the handle: recording on the
    /// returned [`Counter`] is lock-free, this lookup is not.
    ///
    /// # Panics
    /// If `def` is not a counter or the number of label values does not match `def.labels`.
    pub fn counter(&self, def: &'static MetricDef, labels: &[&str]) -> Arc<Counter> {
        assert!(def.kind == Kind::Counter, "{} is not a counter", def.name);
        let family = Self::family(&self.counters, def);
        self.series(&family, labels, Counter::new)
    }

    /// The histogram for `def` with these label values, created on first use.
    ///
    /// # Panics
    /// If `def` is not a histogram or the number of label values does not match `def.labels`.
    pub fn histogram(&self, def: &'static MetricDef, labels: &[&str]) -> Arc<Histogram> {
        assert!(
            def.kind == Kind::Histogram,
            "{} is not a histogram",
            def.name
        );
        let family = Self::family(&self.histograms, def);
        self.series(&family, labels, || Histogram::new(def.unit))
    }

    fn family<T>(
        map: &Mutex<HashMap<&'static str, Arc<Family<T>>>>,
        def: &'static MetricDef,
    ) -> Arc<Family<T>> {
        Arc::clone(lock(map).entry(def.name).or_insert_with(|| {
            Arc::new(Family {
                def,
                series: Mutex::default(),
                created: Mutex::default(),
            })
        }))
    }

    /// Like [`Registry::counter`], also telling whether the label set was admitted (`true`)
    /// or went over the cap and got the [`OVERFLOW_LABEL`] series (`false`). Primitives use
    /// this to label their scrape-time gauges the same way as their counters.
    ///
    /// # Panics
    /// As [`Registry::counter`].
    pub fn counter_admitted(
        &self,
        def: &'static MetricDef,
        labels: &[&str],
    ) -> (Arc<Counter>, bool) {
        assert!(def.kind == Kind::Counter, "{} is not a counter", def.name);
        let family = Self::family(&self.counters, def);
        self.series_admitted(&family, labels, Counter::new)
    }

    /// The current value of an existing counter series, without creating it: `None` when
    /// nothing was ever recorded under these labels.
    pub fn counter_value(&self, def: &'static MetricDef, labels: &[&str]) -> Option<u64> {
        let family = Arc::clone(lock(&self.counters).get(def.name)?);
        let key: Box<[String]> = labels.iter().map(|s| (*s).to_owned()).collect();
        let series = lock(&family.series);
        series.get(&key).map(|c| c.get())
    }

    /// The sum of every series of the counter `def` whose labels have the given values,
    /// without creating any: `counter_sum(&QUEUE_DROPPED_TOTAL, &[("queue", "events")])`
    /// adds the `events` queue's drops of every reason. Labels not named match any value;
    /// a label name `def` does not have matches nothing. 0 when nothing matches.
    pub fn counter_sum(&self, def: &'static MetricDef, matching: &[(&str, &str)]) -> u64 {
        let Some(family) = lock(&self.counters).get(def.name).map(Arc::clone) else {
            return 0;
        };
        let mut wanted = Vec::with_capacity(matching.len());
        for (name, value) in matching {
            match def.labels.iter().position(|l| l == name) {
                Some(i) => wanted.push((i, *value)),
                None => return 0,
            }
        }
        lock(&family.series)
            .iter()
            .filter(|(labels, _)| wanted.iter().all(|(i, v)| labels[*i] == *v))
            .map(|(_, c)| c.get())
            .sum()
    }

    fn series<T>(&self, family: &Family<T>, labels: &[&str], make: impl FnOnce() -> T) -> Arc<T> {
        self.series_admitted(family, labels, make).0
    }

    fn series_admitted<T>(
        &self,
        family: &Family<T>,
        labels: &[&str],
        make: impl FnOnce() -> T,
    ) -> (Arc<T>, bool) {
        check_labels(family.def, labels.len());
        let key: Box<[String]> = labels.iter().map(|s| (*s).to_owned()).collect();
        let mut series = lock(&family.series);
        if let Some(s) = series.get(&key) {
            return (Arc::clone(s), true);
        }
        // Labels left empty (a queue's `pool` when it belongs to none) stay empty.
        let overflow_key: Box<[String]> = labels
            .iter()
            .map(|l| if l.is_empty() { "" } else { OVERFLOW_LABEL }.to_owned())
            .collect();
        let regular = series
            .keys()
            .filter(|k| !k.iter().any(|l| l == OVERFLOW_LABEL))
            .count();
        if regular < self.cardinality_cap() {
            let s = Arc::new(make());
            series.insert(key.clone(), Arc::clone(&s));
            lock(&family.created).insert(key, unix_now());
            return (s, true);
        }
        drop(series);
        self.count_overflow(family.def.name);
        tracing::warn!(
            metric = family.def.name,
            cap = self.cardinality_cap(),
            "metric family over its cardinality cap; recording under __overflow__"
        );
        let mut series = lock(&family.series);
        if let Some(s) = series.get(&overflow_key) {
            return (Arc::clone(s), false);
        }
        let s = Arc::new(make());
        series.insert(overflow_key.clone(), Arc::clone(&s));
        lock(&family.created).insert(overflow_key, unix_now());
        (s, false)
    }

    /// Counts one refused label set of `metric`. The overflow family itself is not capped:
    /// it has at most one series per metric definition, a fixed number.
    fn count_overflow(&self, metric: &str) {
        let mut series = lock(&self.overflow.series);
        let key: Box<[String]> = Box::new([metric.to_owned()]);
        Arc::clone(
            series
                .entry(key)
                .or_insert_with(|| Arc::new(Counter::new())),
        )
        .inc();
    }

    /// Registers a collector, held weakly: once every strong reference is dropped it stops
    /// being scraped.
    pub fn register_collector(&self, collector: Weak<dyn Collector>) {
        let mut list = lock(&self.collectors);
        list.retain(|w| w.strong_count() > 0);
        list.push(collector);
    }

    /// Registers a collector the registry keeps alive, replacing any earlier one under `key`.
    pub(crate) fn register_owned(&self, key: String, collector: Arc<dyn Collector>) {
        let mut owned = lock(&self.owned);
        owned.retain(|(k, _)| *k != key);
        owned.push((key, collector));
    }

    /// Every live collector, strong references taken for the duration of one scrape: the
    /// primitives' first, then the owned ones (the process's, the allocator's, runtimes).
    /// The order matters to [`Registry::tick`]: a tick stamps every collector's second with
    /// one time, so the primitives read their totals first, before the process collector
    /// reads `/proc` (slow under valgrind), and a busy total is not paired with an earlier
    /// time than it was read at.
    pub(crate) fn collectors(&self) -> Vec<Arc<dyn Collector>> {
        let mut out: Vec<Arc<dyn Collector>> = Vec::new();
        let mut weak = lock(&self.collectors);
        weak.retain(|w| match w.upgrade() {
            Some(c) => {
                out.push(c);
                true
            }
            None => false,
        });
        drop(weak);
        out.extend(lock(&self.owned).iter().map(|(_, c)| Arc::clone(c)));
        out
    }

    /// Moves every window on to the current second (see [`super::window`]): a no-op until a
    /// new second has begun. The debug server calls it every second and before each snapshot
    /// or scrape; a service without a debug server can call it from a timer of its own.
    pub fn tick(&self) {
        let mut last = lock(&self.last_tick);
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let second = nanos / 1_000_000_000;
        if last.is_some_and(|l| second <= l) {
            return;
        }
        let tick = Tick {
            second,
            nanos,
            ticking: last.is_some(),
        };
        *last = Some(second);
        let histograms: Vec<_> = lock(&self.histograms).values().cloned().collect();
        for f in histograms {
            let series: Vec<_> = lock(&f.series).values().cloned().collect();
            for h in series {
                h.tick(&tick);
            }
        }
        for c in self.collectors() {
            c.tick(&tick);
        }
    }

    /// `seconds` (1..=[`MAX_WINDOW_SECONDS`](super::window::MAX_WINDOW_SECONDS)) back from
    /// now, after a tick.
    pub(crate) fn window(&self, seconds: u32) -> Window {
        self.tick();
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let second = lock(&self.last_tick).unwrap_or(nanos / 1_000_000_000);
        Window {
            seconds,
            second,
            nanos,
        }
    }

    /// Time since the registry was created.
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    pub(crate) fn started_at_unix(&self) -> f64 {
        self.started_at
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    /// Renders every perfkit family, collector and the process metrics in the Prometheus
    /// text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_into(&mut out);
        out
    }

    /// Like [`Registry::render`], appending to `out`.
    pub fn render_into(&self, out: &mut String) {
        self.render_with(out, false);
    }

    /// The Prometheus text with a `_created` sample (the series' creation time, Unix
    /// seconds) after each counter and histogram series perfkit stores: the input
    /// [`super::openmetrics::from_prometheus_text`] turns into OpenMetrics. Not valid 0.0.4
    /// text: the `_created` samples have no family of their own there.
    pub(crate) fn render_with_created(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_with(&mut out, true);
        out
    }

    fn render_with(&self, out: &mut String, created: bool) {
        // Gauges and counters read at scrape time, grouped per family so each family's
        // lines are contiguous as the format requires.
        let mut collection =
            Collection::for_window(Some(self.window(super::window::METRICS_WINDOW_SECONDS)));
        for c in self.collectors() {
            c.collect(&mut collection);
        }
        let mut collected: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
        for s in collection.into_samples() {
            collected.entry(s.def.name).or_default().push(s);
        }
        for samples in collected.values_mut() {
            merge_duplicates(samples);
        }

        let counters: Vec<_> = lock(&self.counters).values().cloned().collect();
        let histograms: Vec<_> = lock(&self.histograms).values().cloned().collect();
        let mut stored: BTreeMap<&'static str, Stored> = BTreeMap::new();
        for f in counters {
            stored.insert(f.def.name, Stored::Counter(f));
        }
        for f in histograms {
            stored.insert(f.def.name, Stored::Histogram(f));
        }

        // Walk both maps in name order, merging a stored and a collected family of the
        // same name under one header.
        let mut names: Vec<&'static str> = stored.keys().chain(collected.keys()).copied().collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let stored = stored.get(name);
            let samples = collected.get(name);
            let def = match (stored, samples) {
                (Some(s), _) => s.def(),
                (None, Some(v)) => v[0].def,
                (None, None) => continue,
            };
            let start = out.len();
            text::header(out, def);
            let header_len = out.len();
            if let Some(s) = stored {
                s.render(out, created);
            }
            for s in samples.into_iter().flatten() {
                text::sample(out, def.name, "", def.labels, &s.labels, None, s.value);
            }
            if out.len() == header_len {
                out.truncate(start); // a family with no series: no header either
            }
        }
        render_family(out, &self.overflow);
    }
}

/// Folds samples with the same label set into one, so the output never repeats a series.
/// Duplicates arise when several primitives went over the cardinality cap and all report
/// under [`OVERFLOW_LABEL`]: durations (ages) keep the largest value, everything else is
/// summed.
fn merge_duplicates(samples: &mut Vec<Sample>) {
    samples.sort_by(|a, b| a.labels.cmp(&b.labels));
    samples.dedup_by(|later, kept| {
        if later.labels != kept.labels {
            return false;
        }
        kept.value = match kept.def.unit {
            super::names::Unit::Seconds => kept.value.max(later.value),
            _ => kept.value + later.value,
        };
        true
    });
}

enum Stored {
    Counter(Arc<Family<Counter>>),
    Histogram(Arc<Family<Histogram>>),
}

impl Stored {
    fn def(&self) -> &'static MetricDef {
        match self {
            Stored::Counter(f) => f.def,
            Stored::Histogram(f) => f.def,
        }
    }

    fn render(&self, out: &mut String, created: bool) {
        match self {
            Stored::Counter(f) => {
                let times = created.then(|| lock(&f.created).clone());
                let family = f.def.name.strip_suffix("_total").unwrap_or(f.def.name);
                for (labels, c) in lock(&f.series).iter() {
                    text::sample_u64(out, f.def.name, f.def.labels, labels, c.get());
                    if let Some(t) = times.as_ref().and_then(|t| t.get(labels)) {
                        text::sample(out, family, "_created", f.def.labels, labels, None, *t);
                    }
                }
            }
            Stored::Histogram(f) => {
                let times = created.then(|| lock(&f.created).clone());
                for (labels, h) in lock(&f.series).iter() {
                    text::histogram(out, f.def, labels, &h.snapshot());
                    if let Some(t) = times.as_ref().and_then(|t| t.get(labels)) {
                        text::sample(out, f.def.name, "_created", f.def.labels, labels, None, *t);
                    }
                }
            }
        }
    }
}

fn render_family(out: &mut String, family: &Family<Counter>) {
    let series = lock(&family.series);
    if series.is_empty() {
        return;
    }
    text::header(out, family.def);
    for (labels, c) in series.iter() {
        text::sample_u64(out, family.def.name, family.def.labels, labels, c.get());
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("counter_families", &lock(&self.counters).len())
            .field("histogram_families", &lock(&self.histograms).len())
            .field("collectors", &lock(&self.collectors).len())
            .field("cardinality_cap", &self.cardinality_cap())
            .finish()
    }
}
