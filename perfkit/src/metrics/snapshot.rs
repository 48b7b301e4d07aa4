//! The JSON snapshot (current figures, what k6 polls) and inventory (configuration).
//!
//! Both are versioned by [`SCHEMA_VERSION`] and documented in `docs/endpoints.md`. Every
//! section in [`SECTIONS`] is always present, as an empty list when nothing fills it.

use serde_json::{Map, Value, json};

use super::collector::Sections;
use super::registry::Registry;
use super::window::MAX_WINDOW_SECONDS;

/// Version of the snapshot and inventory JSON schema. Bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Sections every snapshot and inventory carries, in order.
pub const SECTIONS: &[&str] = &[
    "runtimes",
    "queues",
    "batchers",
    "pools",
    "locks",
    "semaphores",
    "resources",
    "tasks",
    "hot_paths",
    "http_routes",
];

fn header(registry: &Registry) -> Map<String, Value> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut obj = Map::new();
    obj.insert("schema_version".into(), json!(SCHEMA_VERSION));
    obj.insert("perfkit_version".into(), json!(env!("CARGO_PKG_VERSION")));
    obj.insert("timestamp_seconds".into(), json!(now));
    obj.insert(
        "uptime_seconds".into(),
        json!(registry.uptime().as_secs_f64()),
    );
    obj
}

fn finish(mut obj: Map<String, Value>, mut sections: Sections) -> Value {
    for name in SECTIONS {
        obj.insert((*name).into(), Value::Array(sections.take(name)));
    }
    Value::Object(obj)
}

/// The inventory's `crash_exposure`: the most items the primitives can hold in memory at
/// once, what a crash (or a kill) loses at worst. Each entry's `crash_exposure_items` counts
/// what that entry alone holds (a batcher's batch in flight, a pool's running jobs; their
/// queues are entries of `queues`), so the total is their plain sum.
fn crash_exposure(obj: &Map<String, Value>) -> Value {
    let mut total = 0u64;
    let mut by: Vec<Value> = Vec::new();
    for section in ["queues", "batchers", "pools"] {
        for e in obj
            .get(section)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let items = e["crash_exposure_items"].as_u64().unwrap_or(0);
            total = total.saturating_add(items);
            by.push(json!({ "section": section, "name": e["name"], "items": items }));
        }
    }
    by.sort_by(|a, b| b["items"].as_u64().cmp(&a["items"].as_u64()));
    json!({ "items": total, "by_entry": by })
}

/// The `heap` object: the counting allocator's figures and jemalloc's (from its collector,
/// with the `heap-profiling` feature), with `allocated_bytes` taken as in
/// [`crate::alloc::live_heap_bytes`]: from the counting allocator when it is the global allocator, else
/// from jemalloc; `null` with neither.
fn heap(counting: Value, jemalloc: Vec<Value>) -> Value {
    let jemalloc = jemalloc.into_iter().next().unwrap_or(Value::Null);
    let (source, allocated) = if !counting.is_null() {
        ("counting", counting["allocated_bytes"].clone())
    } else if !jemalloc.is_null() {
        ("jemalloc", jemalloc["allocated_bytes"].clone())
    } else {
        return Value::Null;
    };
    json!({
        "allocated_bytes": allocated,
        "source": source,
        "counting": counting,
        "jemalloc": jemalloc,
    })
}

impl Registry {
    /// Every registered primitive's current figures, plus the process's, as JSON.
    pub fn snapshot(&self) -> Value {
        self.snapshot_with(None)
    }

    /// [`Registry::snapshot`] with every entry's figures over the last `seconds` (1..=300)
    /// added as a `window` object: gauge maxima, histogram quantiles, busy ratios (see
    /// [`super::window`] and `docs/endpoints.md`). Reading a window changes nothing another
    /// reader sees.
    ///
    /// # Panics
    /// If `seconds` is 0 or over [`MAX_WINDOW_SECONDS`].
    pub fn snapshot_window(&self, seconds: u32) -> Value {
        assert!(
            (1..=MAX_WINDOW_SECONDS).contains(&seconds),
            "window must be 1..={MAX_WINDOW_SECONDS} seconds, got {seconds}"
        );
        self.snapshot_with(Some(seconds))
    }

    fn snapshot_with(&self, seconds: Option<u32>) -> Value {
        // Windows and the figures reported without one (a pool's `saturation_avg`, a task's
        // `alive_max_recent`) are read from the per-second rings: bring them up to date.
        let clock = self.window(seconds.unwrap_or(1));
        let window = seconds.map(|_| clock);
        let mut sections = Sections::with_window(clock, window);
        for c in self.collectors() {
            c.snapshot(&mut sections);
        }
        let mut obj = header(self);
        for (key, value) in sections.take_tops() {
            obj.insert(key.into(), value);
        }
        let counting = sections.take("heap_counting").into_iter().next();
        obj.insert(
            "heap".into(),
            heap(counting.unwrap_or(Value::Null), sections.take("heap")),
        );
        finish(obj, sections)
    }

    /// Every registered primitive's configuration as JSON.
    pub fn inventory(&self) -> Value {
        let mut sections = Sections::default();
        for c in self.collectors() {
            c.inventory(&mut sections);
        }
        let mut obj = header(self);
        obj.insert(
            "registry_start_seconds".into(),
            json!(self.started_at_unix()),
        );
        obj.insert(
            "metrics".into(),
            json!({
                "cardinality_cap": self.cardinality_cap(),
                "overflow_label": super::OVERFLOW_LABEL,
                "facade": super::facade_mode(),
            }),
        );
        let mut inv = finish(obj, sections);
        if let Value::Object(obj) = &mut inv {
            let exposure = crash_exposure(obj);
            obj.insert("crash_exposure".into(), exposure);
        }
        inv
    }
}
