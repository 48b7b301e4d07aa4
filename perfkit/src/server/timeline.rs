//! The timeline: every primitive's, runtime's and the process's figures for each of the last
//! hour's seconds, at a fixed memory, served by `/debug/perfkit/timeline`.
//!
//! Once a second, just after the registry's window clock ticks, the debug server's thread
//! reads the one-second window of the snapshot (`?window=1`) and keeps the figures listed
//! in [`SIGNALS`] in one ring per (section, name, signal): 3600 slots of `f32`, a slot per
//! second, `NaN` where there is no figure (the primitive did not exist, or the histogram's
//! window was empty). Totals (drops, rejections, errors, CPU time) are kept as their increase
//! over the second, so the values stay small and exact in an `f32`.
//!
//! Memory: 14.1 KiB per series (3600 × 4 bytes) plus its key, at most [`MAX_SERIES`] series
//! (7.0 MiB), and 28 KiB for the slots' seconds: fixed, whatever the traffic. A series past
//! the cap is not kept, and counted (`refused_series` in the answer). A series whose
//! primitive is gone leaves once its last figure is an hour old.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use crate::loom::lock_unpoisoned as lock;

/// Seconds kept.
pub(crate) const SPAN: usize = 3600;
/// Series kept at most.
pub(crate) const MAX_SERIES: usize = 512;

/// How a signal's value is read from its snapshot entry.
#[derive(Clone, Copy)]
enum Read {
    /// The number at this dotted path.
    Value(&'static str),
    /// The increase over the second of the number at this path (a total).
    Rate(&'static str),
    /// The increase over the second of the sum of the numbers in the object at this path.
    RateOfSum(&'static str),
}

/// One signal: snapshot section (`process` is the snapshot itself), how to read it, its
/// name in the timeline, and its unit.
struct Signal {
    section: &'static str,
    read: Read,
    name: &'static str,
    unit: &'static str,
}

macro_rules! signals {
    ($($section:literal $read:ident($path:literal) => $name:literal $unit:literal;)*) => {
        &[$(Signal { section: $section, read: Read::$read($path), name: $name, unit: $unit }),*]
    };
}

/// Every signal the timeline keeps. Window figures are over the second that ended; rates
/// are per second.
const SIGNALS: &[Signal] = signals! {
    "process" Value("window.resident_memory_bytes_max") => "resident_memory_bytes" "bytes";
    "process" Value("window.heap_allocated_bytes_max") => "heap_bytes" "bytes";
    "process" Rate("process.cpu_seconds_total") => "cpu_seconds_per_second" "ratio";
    "process" Value("process.threads") => "threads" "count";
    "process" Value("process.open_fds") => "open_fds" "count";
    "runtimes" Value("window.schedule_delay_p99_seconds") => "schedule_delay_p99_seconds" "seconds";
    "runtimes" Value("window.busy_ratio") => "busy_ratio" "ratio";
    "runtimes" Value("window.alive_tasks_max") => "alive_tasks_max" "count";
    "queues" Value("window.depth_max") => "depth_max" "count";
    "queues" Value("window.saturation_max") => "saturation_max" "ratio";
    "queues" Value("window.wait_seconds.p99") => "wait_p99_seconds" "seconds";
    "queues" Rate("enqueued") => "enqueued_per_second" "count";
    "queues" RateOfSum("dropped") => "dropped_per_second" "count";
    "queues" Rate("rejected") => "rejected_per_second" "count";
    "batchers" Value("window.pending_max") => "pending_max" "count";
    "batchers" Value("window.batch_size.p50") => "batch_size_p50" "count";
    "batchers" Value("window.flush_seconds.p99") => "flush_p99_seconds" "seconds";
    "batchers" Rate("flushed") => "flushed_per_second" "count";
    "batchers" Rate("dead_lettered") => "dead_lettered_per_second" "count";
    "batchers" Rate("dropped") => "dropped_per_second" "count";
    "pools" Value("window.busy_ratio") => "busy_ratio" "ratio";
    "pools" Value("window.busy_max") => "busy_max" "count";
    "pools" Value("depth") => "depth" "count";
    "pools" Value("window.task_seconds.p99") => "task_p99_seconds" "seconds";
    "pools" Rate("tasks.panic") => "panics_per_second" "count";
    "locks" Value("window.wait_seconds.p99") => "wait_p99_seconds" "seconds";
    "locks" Value("window.waiters_max") => "waiters_max" "count";
    "locks" Value("window.contended_ratio") => "contended_ratio" "ratio";
    "semaphores" Value("window.saturation_max") => "saturation_max" "ratio";
    "semaphores" Value("window.waiters_max") => "waiters_max" "count";
    "semaphores" Value("window.acquire_seconds.p99") => "acquire_p99_seconds" "seconds";
    "semaphores" Rate("timeouts") => "timeouts_per_second" "count";
    "resources" Value("window.saturation_max") => "saturation_max" "ratio";
    "resources" Value("window.in_use_max") => "in_use_max" "count";
    "resources" Value("window.waiters_max") => "waiters_max" "count";
    "resources" Value("window.acquire_seconds.p99") => "acquire_p99_seconds" "seconds";
    "resources" Rate("timeouts") => "timeouts_per_second" "count";
    "resources" Rate("errors") => "errors_per_second" "count";
    "tasks" Value("window.alive_max") => "alive_max" "count";
    "hot_paths" Value("window.seconds.p99") => "p99_seconds" "seconds";
    "hot_paths" Value("window.calls") => "calls" "count";
    "hot_paths" Rate("errors") => "errors_per_second" "count";
    "http_routes" Value("window.seconds.p99") => "p99_seconds" "seconds";
    "http_routes" Value("window.requests") => "requests" "count";
    "http_routes" Rate("errors") => "errors_per_second" "count";
};

/// Every (section, signal) the timeline keeps, for code that fills a timeline from
/// elsewhere (the fleet report reads them from Prometheus).
#[cfg(all(test, feature = "fleet"))]
pub(crate) fn signal_names() -> Vec<(&'static str, &'static str)> {
    SIGNALS.iter().map(|s| (s.section, s.name)).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    section: &'static str,
    name: String,
    signal: &'static str,
}

struct Series {
    unit: &'static str,
    values: Box<[f32]>,
    /// The total last read, for rates.
    last_total: Option<f64>,
    /// The last second holding a figure.
    last_seen: u64,
}

struct Inner {
    /// The epoch second each slot holds; `u64::MAX` for none.
    seconds: Box<[u64]>,
    /// The last second recorded.
    last: Option<u64>,
    series: BTreeMap<Key, Series>,
    refused: u64,
}

/// See the module docs.
pub(crate) struct Timeline {
    inner: Mutex<Inner>,
}

/// The process's timeline, fed by every running debug server's ticker.
pub(crate) fn timeline() -> &'static Timeline {
    static T: std::sync::OnceLock<Timeline> = std::sync::OnceLock::new();
    T.get_or_init(Timeline::new)
}

fn field<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

impl Timeline {
    pub(crate) fn new() -> Self {
        Timeline {
            inner: Mutex::new(Inner {
                seconds: vec![u64::MAX; SPAN].into_boxed_slice(),
                last: None,
                series: BTreeMap::new(),
                refused: 0,
            }),
        }
    }

    /// Records the figures of `snap`, a snapshot with a one-second window, as the second
    /// its `timestamp_seconds` falls in. A second already recorded is left as it is.
    pub(crate) fn record(&self, snap: &Value) {
        let Some(at) = snap["timestamp_seconds"].as_f64() else {
            return;
        };
        let second = at.max(0.0) as u64;
        let mut inner = lock(&self.inner);
        if inner.last.is_some_and(|l| second <= l) {
            return;
        }
        // Seconds since the last one recorded (at most the span) start empty.
        let from = inner
            .last
            .map_or(second, |l| (l + 1).max(second.saturating_sub(SPAN as u64 - 1)));
        for s in from..=second {
            let i = (s % SPAN as u64) as usize;
            inner.seconds[i] = s;
            for series in inner.series.values_mut() {
                series.values[i] = f32::NAN;
            }
        }
        inner.last = Some(second);
        let slot = (second % SPAN as u64) as usize;
        for sig in SIGNALS {
            for (name, entry) in entries(snap, sig.section) {
                let total = match sig.read {
                    Read::Value(p) | Read::Rate(p) => field(entry, p).and_then(Value::as_f64),
                    Read::RateOfSum(p) => field(entry, p)
                        .and_then(Value::as_object)
                        .map(|o| o.values().filter_map(Value::as_f64).sum()),
                };
                let Some(total) = total.filter(|v| v.is_finite()) else {
                    continue;
                };
                let key = Key {
                    section: sig.section,
                    name,
                    signal: sig.name,
                };
                let inner = &mut *inner;
                if !inner.series.contains_key(&key) {
                    if inner.series.len() >= MAX_SERIES {
                        inner.refused += 1;
                        continue;
                    }
                    inner.series.insert(
                        key.clone(),
                        Series {
                            unit: sig.unit,
                            values: vec![f32::NAN; SPAN].into_boxed_slice(),
                            last_total: None,
                            last_seen: second,
                        },
                    );
                }
                let Some(series) = inner.series.get_mut(&key) else {
                    continue;
                };
                let value = match sig.read {
                    Read::Value(_) => Some(total),
                    // The first reading of a total has nothing to rise from.
                    Read::Rate(_) | Read::RateOfSum(_) => {
                        let prev = series.last_total.replace(total);
                        // A total that went down belongs to a rebuilt primitive.
                        prev.map(|p| if total >= p { total - p } else { total })
                    }
                };
                if let Some(v) = value {
                    series.values[slot] = v as f32;
                }
                series.last_seen = second;
            }
        }
        // Series whose last figure left the span go, making room for new ones.
        if second % 60 == 0 {
            inner
                .series
                .retain(|_, s| second.saturating_sub(s.last_seen) < SPAN as u64);
        }
    }

    /// The seconds in `from..=to` (epoch seconds) that the span holds, and every series with
    /// at least one figure among them.
    pub(crate) fn json(&self, from: u64, to: u64) -> Value {
        let inner = lock(&self.inner);
        let Some(last) = inner.last else {
            return answer(from, to, Vec::new(), Vec::new(), inner.refused);
        };
        let oldest = last.saturating_sub(SPAN as u64 - 1);
        let (lo, hi) = (from.max(oldest), to.min(last));
        let seconds: Vec<u64> = (lo..=hi)
            .filter(|s| inner.seconds[(s % SPAN as u64) as usize] == *s)
            .collect();
        let mut series = Vec::new();
        for (key, s) in &inner.series {
            let values: Vec<Value> = seconds
                .iter()
                .map(|sec| number(s.values[(sec % SPAN as u64) as usize]))
                .collect();
            if values.iter().all(Value::is_null) {
                continue;
            }
            series.push(json!({
                "section": key.section,
                "name": key.name,
                "signal": key.signal,
                "unit": s.unit,
                "values": values,
            }));
        }
        answer(from, to, seconds, series, inner.refused)
    }
}

fn answer(from: u64, to: u64, seconds: Vec<u64>, series: Vec<Value>, refused: u64) -> Value {
    let mut obj = Map::new();
    obj.insert("schema_version".into(), json!(1));
    obj.insert("resolution_seconds".into(), json!(1));
    obj.insert("span_seconds".into(), json!(SPAN));
    obj.insert("from".into(), json!(from));
    obj.insert("to".into(), json!(to));
    obj.insert("seconds".into(), json!(seconds));
    obj.insert("series".into(), Value::Array(series));
    obj.insert("refused_series".into(), json!(refused));
    Value::Object(obj)
}

/// An `f32` as the shortest decimal that reads back as it (`0.1`, not
/// `0.10000000149011612`); `null` for `NaN`.
fn number(v: f32) -> Value {
    if v.is_nan() {
        return Value::Null;
    }
    v.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// The entries of a snapshot section with their names; the snapshot itself for `process`.
fn entries<'a>(snap: &'a Value, section: &str) -> Vec<(String, &'a Value)> {
    if section == "process" {
        return vec![("process".to_owned(), snap)];
    }
    snap[section]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(at: f64, depth: u64, dropped: u64) -> Value {
        json!({
            "timestamp_seconds": at,
            "window": { "resident_memory_bytes_max": 1000 },
            "process": { "cpu_seconds_total": at / 2.0 },
            "queues": [{
                "name": "q",
                "enqueued": 0,
                "rejected": 0,
                "dropped": { "full": dropped, "closed": 1 },
                "window": { "depth_max": depth, "saturation_max": 0.1, "wait_seconds": { "p99": null } }
            }]
        })
    }

    fn series<'a>(v: &'a Value, name: &str, signal: &str) -> &'a Value {
        v["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name && s["signal"] == signal)
            .unwrap_or_else(|| panic!("no {name}/{signal} in {v}"))
    }

    #[test]
    fn seconds_values_rates_and_gaps() {
        let t = Timeline::new();
        t.record(&snap(1000.2, 5, 10));
        t.record(&snap(1000.9, 99, 99)); // the same second: kept as first recorded
        t.record(&snap(1001.1, 7, 12));
        t.record(&snap(1004.0, 3, 20)); // 1002 and 1003 missed
        let v = t.json(0, u64::MAX);
        assert_eq!(v["seconds"], json!([1000, 1001, 1002, 1003, 1004]));
        assert_eq!(
            series(&v, "q", "depth_max")["values"],
            json!([5.0, 7.0, null, null, 3.0])
        );
        assert_eq!(
            series(&v, "q", "dropped_per_second")["values"],
            json!([null, 2.0, null, null, 8.0])
        );
        let cpu = &series(&v, "process", "cpu_seconds_per_second")["values"];
        assert_eq!(cpu[1], json!(0.45));
        assert_eq!(series(&v, "process", "resident_memory_bytes")["unit"], "bytes");
        // An empty window's quantile is not a series with figures.
        assert!(
            v["series"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["signal"] != "wait_p99_seconds")
        );
        let part = t.json(1001, 1002);
        assert_eq!(part["seconds"], json!([1001, 1002]));
        assert_eq!(series(&part, "q", "depth_max")["values"], json!([7.0, null]));
    }

    #[test]
    fn memory_is_bounded_after_an_hour_and_more() {
        let t = Timeline::new();
        for s in 0..(SPAN as u64 * 2) {
            let mut v = snap(s as f64, s, s);
            // New names keep arriving: the cap holds, the old ones leave.
            v["queues"].as_array_mut().unwrap().push(json!({
                "name": format!("burst-{}", s / 600),
                "window": { "depth_max": 1 }
            }));
            t.record(&v);
        }
        let inner = lock(&t.inner);
        assert!(inner.series.len() <= MAX_SERIES);
        assert_eq!(inner.seconds.len(), SPAN);
        assert!(inner.series.values().all(|s| s.values.len() == SPAN));
        drop(inner);
        let v = t.json(0, u64::MAX);
        assert_eq!(v["seconds"].as_array().unwrap().len(), SPAN);
        assert_eq!(v["seconds"][0], SPAN as u64);
        // Names last seen more than an hour ago are gone.
        assert!(
            v["series"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["name"] != "burst-0")
        );
    }

    #[test]
    fn the_series_cap_refuses_and_counts() {
        let t = Timeline::new();
        let queues: Vec<Value> = (0..MAX_SERIES + 10)
            .map(|i| json!({ "name": format!("q{i}"), "window": { "depth_max": 1 } }))
            .collect();
        t.record(&json!({ "timestamp_seconds": 5.0, "queues": queues }));
        let v = t.json(0, 10);
        assert_eq!(v["series"].as_array().unwrap().len(), MAX_SERIES);
        assert_eq!(v["refused_series"], 10);
    }
}
