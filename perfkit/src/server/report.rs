//! The run report: what perfkit measured over a span of the timeline, written as the audit a
//! person would write by reading the code: the configuration table, the signals that moved,
//! ranked findings with their evidence and the knob to turn, and the headroom of every bound.
//!
//! Findings come from the timeline's one-second figures and the inventory, by rules that
//! rank what the service *lost* above what it *saturated* above what it *slowed*:
//!
//! | severity | when |
//! |---|---|
//! | `CRITICAL` | items lost: a queue dropped, a batcher dropped a batch after failed flushes |
//! | `HIGH` | a bound saturated (a queue at 80% or more, a pool busy 90% of a second or more, a runtime whose probe waited 250 ms or more, a connection pool or semaphore with everything in use), a task name that kept growing, items dead-lettered, a panic, a timed-out wait for a connection or permit |
//! | `MEDIUM` | measurable degradation: a p99 of 250 ms or more on a hot path, a route or a flush; a lock whose waits reach 50 ms at p99; errors; resident memory growing by half |
//! | `LOW` | headroom under 2×: a bound whose peak use was over half of it |
//!
//! The bound that saturated *first* is the bottleneck. A drop or saturation that started
//! after it names it as its cause instead of standing as a second root cause.

use serde_json::{Value, json};

/// Report schema version.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// A queue this full is saturated.
pub(crate) const QUEUE_SATURATED: f64 = 0.8;
/// A pool or runtime busy this share of a second is saturated.
pub(crate) const BUSY_SATURATED: f64 = 0.9;
/// A probe this late means a starved runtime.
pub(crate) const DELAY_STARVED: f64 = 0.25;
/// A connection pool or semaphore with every resource or permit in use is saturated: the
/// next caller waits.
pub(crate) const FULL: f64 = 1.0;
/// A lock whose waits reach this at p99 is a contention point.
pub(crate) const LOCK_WAIT_SLOW: f64 = 0.05;
/// A p99 this slow is measurable degradation.
const SLOW_P99: f64 = 0.25;
/// A task name growing by this much leaks.
const TASK_GROWTH: f64 = 50.0;

/// One timeline series, its values aligned with the report's seconds.
struct Series<'a> {
    section: &'a str,
    name: &'a str,
    signal: &'a str,
    unit: &'a str,
    values: Vec<Option<f64>>,
}

impl Series<'_> {
    fn max(&self) -> Option<(usize, f64)> {
        self.values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i, v)))
            .fold(None, |best, (i, v)| match best {
                Some((_, b)) if b >= v => best,
                _ => Some((i, v)),
            })
    }

    fn sum(&self) -> f64 {
        self.values.iter().flatten().sum()
    }

    /// The first second at or over `bound`, and for how many seconds from there it stayed.
    fn first_run_at_or_over(&self, bound: f64) -> Option<(usize, usize)> {
        let start = self.values.iter().position(|v| v.is_some_and(|v| v >= bound))?;
        let len = self.values[start..]
            .iter()
            .take_while(|v| v.is_some_and(|v| v >= bound))
            .count();
        Some((start, len))
    }

    /// Seconds at or over `bound` in all.
    fn seconds_at_or_over(&self, bound: f64) -> usize {
        self.values
            .iter()
            .filter(|v| v.is_some_and(|v| v >= bound))
            .count()
    }

    fn first_and_last(&self) -> Option<(f64, f64)> {
        let first = self.values.iter().flatten().next()?;
        let last = self.values.iter().flatten().last()?;
        Some((*first, *last))
    }
}

/// The seconds (Unix) a timeline answer holds, in order.
pub(crate) fn timeline_seconds(timeline: &Value) -> Vec<u64> {
    timeline["seconds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect()
}

fn series<'a>(timeline: &'a Value) -> Vec<Series<'a>> {
    timeline["series"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| Series {
            section: s["section"].as_str().unwrap_or(""),
            name: s["name"].as_str().unwrap_or(""),
            signal: s["signal"].as_str().unwrap_or(""),
            unit: s["unit"].as_str().unwrap_or(""),
            values: s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Value::as_f64)
                .collect(),
        })
        .collect()
}

/// The inventory entry of `section` named `name`.
fn entry<'a>(inventory: &'a Value, section: &str, name: &str) -> Option<&'a Value> {
    inventory[section]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

fn category(section: &str) -> &'static str {
    match section {
        "queues" => "Ingestion",
        "batchers" => "Database",
        "pools" | "runtimes" | "locks" | "semaphores" => "Concurrency",
        "resources" => "Database",
        "tasks" => "Resource",
        "process" => "Memory",
        "hot_paths" | "http_routes" => "API",
        _ => "Config",
    }
}

fn rank(severity: &str) -> u8 {
    match severity {
        "CRITICAL" => 0,
        "HIGH" => 1,
        "MEDIUM" => 2,
        _ => 3,
    }
}

fn pct(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

fn secs(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.2} s")
    } else {
        format!("{:.1} ms", v * 1000.0)
    }
}

/// A finding before ranking.
struct Finding {
    category: &'static str,
    severity: &'static str,
    section: String,
    name: String,
    title: String,
    evidence: String,
    source: Option<String>,
    change: String,
    /// The second it started (index into the report's seconds), for the bottleneck.
    started: Option<usize>,
    /// Whether it is a saturated bound (a bottleneck candidate).
    saturation: bool,
    /// Among bounds that saturated in the same second, the lower is the likelier root: the
    /// bound furthest downstream (a batcher's intake, then a runtime, a pool, a queue).
    depth: u8,
}

/// Builds the report from a timeline answer over the run, the inventory and a snapshot
/// taken now.
pub(crate) fn build(timeline: &Value, inventory: &Value, snapshot: &Value) -> Value {
    let seconds = timeline_seconds(timeline);
    let t0 = seconds.first().copied().unwrap_or(0);
    let at = |i: usize| seconds.get(i).map_or(0, |s| s - t0);
    let all = series(timeline);
    let find = |section: &str, name: &str, signal: &str| {
        all.iter()
            .find(|s| s.section == section && s.name == name && s.signal == signal)
    };
    let mut findings: Vec<Finding> = Vec::new();

    for s in &all {
        let inv = entry(inventory, s.section, s.name);
        let source = inv
            .and_then(|e| e["source"].as_str())
            .map(str::to_owned);
        match (s.section, s.signal) {
            ("queues", "dropped_per_second") | ("batchers", "dropped_per_second") => {
                let n = s.sum();
                if n <= 0.0 {
                    continue;
                }
                let first = s.values.iter().position(|v| v.is_some_and(|v| v > 0.0));
                let last = s.values.iter().rposition(|v| v.is_some_and(|v| v > 0.0));
                let reasons = if s.section == "queues" {
                    snapshot["queues"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|q| q["name"] == s.name)
                        .and_then(|q| q["dropped"].as_object())
                        .map(|d| {
                            d.iter()
                                .filter(|(_, v)| v.as_u64().unwrap_or(0) > 0)
                                .map(|(k, v)| format!("{k} {v}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default()
                } else {
                    "flush_failed".to_owned()
                };
                let what = if s.section == "queues" { "queue" } else { "batcher" };
                let policy = inv.and_then(|e| e["policy"].as_str()).unwrap_or("?");
                findings.push(Finding {
                    category: category(s.section),
                    severity: "CRITICAL",
                    section: s.section.into(),
                    name: s.name.into(),
                    title: format!("`{}` {what} dropped {n:.0} items", s.name),
                    evidence: format!(
                        "`{}` {what} dropped {n:.0} items from t={} s to t={} s{}",
                        s.name,
                        first.map_or(0, at),
                        last.map_or(0, at),
                        if reasons.is_empty() {
                            String::new()
                        } else {
                            format!(" (by reason, over the process's life: {reasons})")
                        }
                    ),
                    source,
                    change: if s.section == "queues" {
                        format!(
                            "the `{policy}` policy drops when full: make the consumer keep up, raise `capacity` (now {}), or use `block` to push back on senders",
                            inv.and_then(|e| e["capacity"].as_u64()).unwrap_or(0)
                        )
                    } else {
                        "give the batcher a dead-letter handler, or raise `retry` attempts; fix what makes the flush fail".to_owned()
                    },
                    started: first,
                    saturation: false,
                    depth: 9,
                });
            }
            ("queues", "saturation_max") => {
                let Some((start, len)) = s.first_run_at_or_over(QUEUE_SATURATED) else {
                    continue;
                };
                let (peak_i, peak) = s.max().unwrap_or((start, 0.0));
                let total = s.seconds_at_or_over(QUEUE_SATURATED);
                let batcher = entry(inventory, "batchers", s.name);
                let cause = batcher.map(|b| {
                    let p99 = find("batchers", s.name, "flush_p99_seconds")
                        .and_then(Series::max)
                        .map_or(String::new(), |(_, v)| format!(", flush p99 up to {}", secs(v)));
                    format!(
                        "; it is the intake of the `{}` batcher: its flushes do not keep up (max_batch {}, max_delay {} s{p99})",
                        s.name,
                        b["max_batch"],
                        b["max_delay_seconds"]
                    )
                });
                let pool = entry(inventory, "pools", s.name);
                findings.push(Finding {
                    category: category(if batcher.is_some() { "batchers" } else if pool.is_some() { "pools" } else { "queues" }),
                    severity: "HIGH",
                    section: s.section.into(),
                    name: s.name.into(),
                    title: format!("`{}` queue saturated", s.name),
                    evidence: format!(
                        "`{}` queue at {} or more from t={} s for {len} s ({total} s in all), peak {} at t={} s{}",
                        s.name,
                        pct(QUEUE_SATURATED),
                        at(start),
                        pct(peak),
                        at(peak_i),
                        cause.clone().unwrap_or_default()
                    ),
                    source,
                    change: match (batcher, pool) {
                        (Some(b), _) => format!(
                            "flushes are the limit: speed up the flush, or raise `max_batch` (now {}) so each flush carries more",
                            b["max_batch"]
                        ),
                        (None, Some(p)) => format!(
                            "the pool's workers are the limit: raise `workers` (now {}) or shorten its jobs",
                            p["workers"]
                        ),
                        _ => format!(
                            "the consumer does not keep up: speed it up, or raise `capacity` (now {}) for bursts",
                            inv.and_then(|e| e["capacity"].as_u64()).unwrap_or(0)
                        ),
                    },
                    started: Some(start),
                    saturation: true,
                    depth: if batcher.is_some() { 0 } else if pool.is_some() { 2 } else { 3 },
                });
            }
            ("pools", "busy_ratio") => {
                let Some((start, len)) = s.first_run_at_or_over(BUSY_SATURATED) else {
                    continue;
                };
                let total = s.seconds_at_or_over(BUSY_SATURATED);
                let p99 = find("pools", s.name, "task_p99_seconds")
                    .and_then(Series::max)
                    .map_or(String::new(), |(_, v)| format!("; job p99 up to {}", secs(v)));
                findings.push(Finding {
                    category: category(s.section),
                    severity: "HIGH",
                    section: s.section.into(),
                    name: s.name.into(),
                    title: format!("`{}` pool saturated", s.name),
                    evidence: format!(
                        "`{}` pool's workers busy {} of the time or more from t={} s for {len} s ({total} s in all){p99}",
                        s.name,
                        pct(BUSY_SATURATED),
                        at(start)
                    ),
                    source,
                    change: format!(
                        "raise `workers` (now {}) or shorten the jobs",
                        inv.map_or(Value::Null, |e| e["workers"].clone())
                    ),
                    started: Some(start),
                    saturation: true,
                    depth: 2,
                });
            }
            ("resources", "saturation_max") | ("semaphores", "saturation_max") => {
                let Some((start, len)) = s.first_run_at_or_over(FULL) else {
                    continue;
                };
                let total = s.seconds_at_or_over(FULL);
                let (what, bound, wait_signal) = if s.section == "resources" {
                    ("connection pool", "max", "acquire_p99_seconds")
                } else {
                    ("semaphore", "permits", "acquire_p99_seconds")
                };
                let size = inv.and_then(|e| e[bound].as_u64());
                let wait = find(s.section, s.name, wait_signal)
                    .and_then(Series::max)
                    .map_or(String::new(), |(_, v)| format!("; acquire p99 up to {}", secs(v)));
                let waiters = find(s.section, s.name, "waiters_max")
                    .and_then(Series::max)
                    .filter(|(_, v)| *v > 0.0)
                    .map_or(String::new(), |(_, v)| format!(", up to {v:.0} callers waiting"));
                let full = size.map_or_else(|| "full".to_owned(), |n| format!("at {n}/{n}"));
                findings.push(Finding {
                    category: category(s.section),
                    severity: "HIGH",
                    section: s.section.into(),
                    name: s.name.into(),
                    title: format!("`{}` {what} saturated", s.name),
                    evidence: format!(
                        "the `{}` {what} was {full} from t={} s for {len} s ({total} s in all){wait}{waiters}",
                        s.name,
                        at(start)
                    ),
                    source,
                    change: if s.section == "resources" {
                        format!(
                            "raise the pool's max (now {}) if the database has room, or make what holds a connection shorter (slow queries, work done while holding one)",
                            size.map_or("?".to_owned(), |n| n.to_string())
                        )
                    } else {
                        format!(
                            "the cap of {} permits is reached: raise it if what it protects has room, or hold permits for less time",
                            size.map_or("?".to_owned(), |n| n.to_string())
                        )
                    },
                    started: Some(start),
                    saturation: true,
                    depth: 1,
                });
            }
            ("resources", "timeouts_per_second") | ("semaphores", "timeouts_per_second") => {
                let n = s.sum();
                if n <= 0.0 {
                    continue;
                }
                let what = if s.section == "resources" { "connection pool" } else { "semaphore" };
                let first = s.values.iter().position(|v| v.is_some_and(|v| v > 0.0));
                findings.push(Finding {
                    category: category(s.section),
                    severity: "HIGH",
                    section: s.section.into(),
                    name: s.name.into(),
                    title: format!("{n:.0} waits for the `{}` {what} timed out", s.name),
                    evidence: format!(
                        "{n:.0} acquisitions of the `{}` {what} gave up after their timeout, from t={} s: each is a failed request",
                        s.name,
                        first.map_or(0, at)
                    ),
                    source,
                    change: "the bound is too small for the load or held too long (see its saturation)".to_owned(),
                    started: first,
                    saturation: false,
                    depth: 9,
                });
            }
            ("locks", "wait_p99_seconds") => {
                let Some((start, _)) = s.first_run_at_or_over(LOCK_WAIT_SLOW) else {
                    continue;
                };
                let (peak_i, peak) = s.max().unwrap_or((start, 0.0));
                let total = s.seconds_at_or_over(LOCK_WAIT_SLOW);
                let waiters = find("locks", s.name, "waiters_max")
                    .and_then(Series::max)
                    .map_or(String::new(), |(_, v)| format!(", up to {v:.0} waiting at once"));
                findings.push(Finding {
                    category: category(s.section),
                    severity: "MEDIUM",
                    section: s.section.into(),
                    name: s.name.into(),
                    title: format!("`{}` lock contended", s.name),
                    evidence: format!(
                        "waits for the `{}` lock had a p99 of {} or more in {total} one-second windows from t={} s, up to {} at t={} s{waiters}",
                        s.name,
                        secs(LOCK_WAIT_SLOW),
                        at(start),
                        secs(peak),
                        at(peak_i)
                    ),
                    source,
                    change: "hold the lock for less (no I/O or .await while holding it), split it (per key), or take it less often; /debug/pprof/mutex names the callers that wait".to_owned(),
                    started: Some(start),
                    saturation: false,
                    depth: 9,
                });
            }
            ("runtimes", "schedule_delay_p99_seconds") => {
                let Some((start, len)) = s.first_run_at_or_over(DELAY_STARVED) else {
                    continue;
                };
                let (peak_i, peak) = s.max().unwrap_or((start, 0.0));
                let busy = find("runtimes", s.name, "busy_ratio")
                    .and_then(Series::max)
                    .map_or(String::new(), |(_, v)| format!("; workers busy up to {} of a second", pct(v)));
                findings.push(Finding {
                    category: category(s.section),
                    severity: "HIGH",
                    section: s.section.into(),
                    name: s.name.into(),
                    title: format!("`{}` runtime starved", s.name),
                    evidence: format!(
                        "ready tasks on the `{}` runtime waited {} or more for a worker thread from t={} s for {len} s, up to {} at t={} s{busy}; service-side latency cannot show this wait",
                        s.name,
                        secs(DELAY_STARVED),
                        at(start),
                        secs(peak),
                        at(peak_i)
                    ),
                    source: None,
                    depth: 1,
                    change: format!(
                        "move CPU-bound work off the runtime (spawn_blocking, or a runtime of its own) or give it more worker threads (now {})",
                        entry(inventory, "runtimes", s.name).map_or(Value::Null, |e| e["workers"].clone())
                    ),
                    started: Some(start),
                    saturation: true,
                });
            }
            ("tasks", "alive_max") => {
                let Some((first, last)) = s.first_and_last() else {
                    continue;
                };
                let growth = last - first;
                if growth < TASK_GROWTH {
                    continue;
                }
                let sites = entry(inventory, "tasks", s.name)
                    .and_then(|e| e["live_spawn_sites"].as_array())
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                findings.push(Finding {
                    category: category(s.section),
                    severity: "HIGH",
                    section: s.section.into(),
                    name: s.name.into(),
                    title: format!("tasks named `{}` keep growing", s.name),
                    evidence: format!(
                        "live tasks named `{}` grew from {first:.0} to {last:.0} over the run (+{growth:.0}); spawned at {sites}",
                        s.name
                    ),
                    source: (!sites.is_empty()).then(|| sites.clone()),
                    change: "the tasks spawned there do not finish: give them an end (a shutdown signal, a timeout) or keep their handles and abort them".to_owned(),
                    started: None,
                    saturation: false,
                    depth: 9,
                });
            }
            ("batchers", "dead_lettered_per_second") | ("pools", "panics_per_second") => {
                let n = s.sum();
                if n <= 0.0 {
                    continue;
                }
                let (what, change) = if s.section == "batchers" {
                    (
                        format!("`{}` batcher dead-lettered {n:.0} items", s.name),
                        "the flush failed every attempt for them: see why it fails".to_owned(),
                    )
                } else {
                    (
                        format!("{n:.0} jobs panicked in the `{}` pool", s.name),
                        "fix the panicking jobs".to_owned(),
                    )
                };
                findings.push(Finding {
                    category: category(s.section),
                    severity: "HIGH",
                    section: s.section.into(),
                    name: s.name.into(),
                    title: what.clone(),
                    evidence: what,
                    source,
                    change,
                    started: s.values.iter().position(|v| v.is_some_and(|v| v > 0.0)),
                    saturation: false,
                    depth: 9,
                });
            }
            ("hot_paths", "p99_seconds") | ("http_routes", "p99_seconds") | ("batchers", "flush_p99_seconds") => {
                let Some((start, _)) = s.first_run_at_or_over(SLOW_P99) else {
                    continue;
                };
                let (peak_i, peak) = s.max().unwrap_or((start, 0.0));
                let total = s.seconds_at_or_over(SLOW_P99);
                let what = match s.section {
                    "hot_paths" => format!("`{}` (hot path)", s.name),
                    "http_routes" => format!("route `{}`", s.name),
                    _ => format!("`{}` batcher's flush", s.name),
                };
                findings.push(Finding {
                    category: category(s.section),
                    severity: "MEDIUM",
                    section: s.section.into(),
                    name: s.name.into(),
                    title: format!("{what} slow"),
                    evidence: format!(
                        "{what} p99 at {} or more in {total} one-second windows from t={} s, up to {} at t={} s",
                        secs(SLOW_P99),
                        at(start),
                        secs(peak),
                        at(peak_i)
                    ),
                    source,
                    change: "profile the run (the CPU profile's hottest functions below) and what it waits on".to_owned(),
                    started: Some(start),
                    saturation: false,
                    depth: 9,
                });
            }
            ("hot_paths", "errors_per_second") | ("http_routes", "errors_per_second") => {
                let n = s.sum();
                if n <= 0.0 {
                    continue;
                }
                let what = if s.section == "hot_paths" {
                    format!("`{}` returned {n:.0} errors", s.name)
                } else {
                    format!("route `{}` answered {n:.0} server errors", s.name)
                };
                findings.push(Finding {
                    category: category(s.section),
                    severity: "MEDIUM",
                    section: s.section.into(),
                    name: s.name.into(),
                    title: what.clone(),
                    evidence: what,
                    source,
                    change: "see the service's log for the errors' causes".to_owned(),
                    started: s.values.iter().position(|v| v.is_some_and(|v| v > 0.0)),
                    saturation: false,
                    depth: 9,
                });
            }
            ("process", "resident_memory_bytes") => {
                let Some((first, last)) = s.first_and_last() else {
                    continue;
                };
                if last > first * 1.5 && last - first > 64.0 * 1024.0 * 1024.0 {
                    findings.push(Finding {
                        category: "Memory",
                        severity: "MEDIUM",
                        section: "process".into(),
                        name: "process".into(),
                        title: "resident memory grew by half or more".to_owned(),
                        evidence: format!(
                            "resident memory went from {:.1} MiB to {:.1} MiB over the run",
                            first / 1048576.0,
                            last / 1048576.0
                        ),
                        source: None,
                        change: "compare two heap profiles (/debug/pprof/heap) taken apart in time".to_owned(),
                        started: None,
                        saturation: false,
                        depth: 9,
                    });
                }
            }
            _ => {}
        }
    }

    // Headroom: each bound's peak use over the run.
    let mut headroom: Vec<Value> = Vec::new();
    for s in &all {
        let bound = match (s.section, s.signal) {
            ("queues", "saturation_max") => "capacity",
            ("pools", "busy_ratio") => "workers",
            ("runtimes", "busy_ratio") => "worker threads",
            ("resources", "saturation_max") => "connections",
            ("semaphores", "saturation_max") => "permits",
            _ => continue,
        };
        let Some((i, peak)) = s.max() else { continue };
        headroom.push(json!({
            "section": s.section,
            "name": s.name,
            "bound": bound,
            "peak_use": peak,
            "peak_at_seconds": at(i),
            "headroom": if peak > 0.0 { Some(1.0 / peak) } else { None },
        }));
        let saturated = match s.section {
            "queues" => peak >= QUEUE_SATURATED,
            "resources" | "semaphores" => peak >= FULL,
            _ => peak >= BUSY_SATURATED,
        };
        if peak > 0.5 && !saturated {
            findings.push(Finding {
                category: category(s.section),
                severity: "LOW",
                section: s.section.into(),
                name: s.name.into(),
                title: format!("`{}` has less than 2× headroom", s.name),
                evidence: format!(
                    "`{}` peaked at {} of its {bound} at t={} s: twice this load would saturate it",
                    s.name,
                    pct(peak),
                    at(i)
                ),
                source: entry(inventory, s.section, s.name)
                    .and_then(|e| e["source"].as_str())
                    .map(str::to_owned),
                change: format!("raise its {bound} before the load doubles"),
                started: Some(i),
                saturation: false,
                depth: 9,
            });
        }
    }
    headroom.sort_by(|a, b| {
        b["peak_use"]
            .as_f64()
            .partial_cmp(&a["peak_use"].as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)
    });

    // The bottleneck: the bound that saturated first.
    let bottleneck = findings
        .iter()
        .enumerate()
        .filter(|(_, f)| f.saturation)
        .min_by_key(|(_, f)| (f.started.unwrap_or(usize::MAX), f.depth))
        .map(|(i, _)| i);
    let mut order: Vec<usize> = (0..findings.len()).collect();
    order.sort_by_key(|&i| {
        let f = &findings[i];
        (
            rank(f.severity),
            Some(i) != bottleneck,
            f.started.unwrap_or(usize::MAX),
            f.name.clone(),
        )
    });
    let id_of = |i: usize| format!("F{}", order.iter().position(|&j| j == i).unwrap_or(0) + 1);
    let bottleneck_id = bottleneck.map(id_of);
    let out: Vec<Value> = order
        .iter()
        .map(|&i| {
            let f = &findings[i];
            // What started after the bottleneck follows from it.
            let follows = bottleneck.filter(|&b| {
                b != i
                    && (f.saturation || f.severity == "CRITICAL")
                    && f.started.unwrap_or(usize::MAX) >= findings[b].started.unwrap_or(0)
            });
            let cause = follows.map(|b| {
                format!(
                    "follows from {} ({}), which saturated first",
                    id_of(b),
                    findings[b].title
                )
            });
            json!({
                "id": id_of(i),
                "category": f.category,
                "severity": f.severity,
                "section": f.section,
                "name": f.name,
                "title": f.title,
                "evidence": f.evidence,
                "source": f.source,
                "change": f.change,
                "started_at_seconds": f.started.map(at),
                "bottleneck": Some(i) == bottleneck,
                "consequence_of": follows.map(id_of),
                "cause": cause,
            })
        })
        .collect();

    // The signals that moved, summarized.
    let moved: Vec<Value> = all
        .iter()
        .filter_map(|s| {
            let vals: Vec<f64> = s.values.iter().flatten().copied().collect();
            let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (!vals.is_empty() && (max > min || max > 0.0)).then(|| {
                json!({
                    "section": s.section,
                    "name": s.name,
                    "signal": s.signal,
                    "unit": s.unit,
                    "min": min,
                    "max": max,
                    "first": vals.first(),
                    "last": vals.last(),
                    "peak_at_seconds": s.max().map(|(i, _)| at(i)),
                })
            })
        })
        .collect();

    json!({
        "schema_version": SCHEMA_VERSION,
        "run": run(timeline, &seconds),
        "configuration": configuration(inventory),
        "crash_exposure": inventory["crash_exposure"],
        "findings": out,
        "bottleneck": bottleneck_id,
        "headroom": headroom,
        "signals": moved,
    })
}

/// The run: its span, the build and the host.
fn run(timeline: &Value, seconds: &[u64]) -> Value {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let mut features = Vec::new();
    for (on, name) in [
        (cfg!(feature = "server"), "server"),
        (cfg!(feature = "facade"), "facade"),
        (cfg!(feature = "macros"), "macros"),
        (cfg!(feature = "tracing"), "tracing"),
        (cfg!(feature = "cpu-profiling"), "cpu-profiling"),
        (cfg!(feature = "heap-profiling"), "heap-profiling"),
        (cfg!(feature = "http"), "http"),
        (cfg!(feature = "axum"), "axum"),
    ] {
        if on {
            features.push(name);
        }
    }
    let memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    json!({
        "from": timeline["from"],
        "to": timeline["to"],
        "first_second": seconds.first(),
        "last_second": seconds.last(),
        "seconds_recorded": seconds.len(),
        "perfkit_version": env!("CARGO_PKG_VERSION"),
        "binary": binary,
        "features": features,
        "host": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "memory_bytes": memory,
        },
    })
}

/// The configuration table: one row per primitive, its bounds and where it is built.
fn configuration(inventory: &Value) -> Vec<Value> {
    let mut rows = Vec::new();
    let list = |section: &str| inventory[section].as_array().cloned().unwrap_or_default();
    for q in list("queues") {
        rows.push(json!({
            "kind": "queue", "name": q["name"], "source": q["source"],
            "settings": { "capacity": q["capacity"], "policy": q["policy"], "warn_at": q["warn_at"] },
            "crash_exposure_items": q["crash_exposure_items"],
        }));
    }
    for b in list("batchers") {
        rows.push(json!({
            "kind": "batcher", "name": b["name"], "source": b["source"],
            "settings": {
                "max_batch": b["max_batch"], "max_delay_seconds": b["max_delay_seconds"],
                "max_pending": b["max_pending"], "policy": b["policy"], "retry": b["retry"],
                "dead_letter": b["dead_letter"],
            },
            "crash_exposure_items": b["crash_exposure_items"],
        }));
    }
    for p in list("pools") {
        rows.push(json!({
            "kind": "pool", "name": p["name"], "source": p["source"],
            "settings": {
                "workers": p["workers"], "queue_capacity": p["queue_capacity"],
                "policy": p["policy"], "lanes": p["lanes"],
            },
            "crash_exposure_items": p["crash_exposure_items"],
        }));
    }
    for r in list("resources") {
        rows.push(json!({
            "kind": "connection_pool", "name": r["name"], "source": r["source"],
            "settings": {
                "max": r["max"], "pool": r["kind"], "counts_waiters": r["counts_waiters"],
                "wait_timeout_seconds": r["wait_timeout_seconds"],
            },
            "crash_exposure_items": null,
        }));
    }
    for s in list("semaphores") {
        rows.push(json!({
            "kind": "semaphore", "name": s["name"], "source": s["source"],
            "settings": { "permits": s["permits"] },
            "crash_exposure_items": null,
        }));
    }
    for l in list("locks") {
        rows.push(json!({
            "kind": "lock", "name": l["name"], "source": l["source"],
            "settings": { "kind": l["kind"] },
            "crash_exposure_items": null,
        }));
    }
    for r in list("runtimes") {
        rows.push(json!({
            "kind": "runtime", "name": r["name"], "source": null,
            "settings": { "flavor": r["flavor"], "workers": r["workers"] },
            "crash_exposure_items": null,
        }));
    }
    if inventory["server"].is_object() {
        rows.push(json!({
            "kind": "debug_server", "name": inventory["server"]["addr"], "source": null,
            "settings": inventory["server"], "crash_exposure_items": null,
        }));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(series: Value, n: u64) -> Value {
        json!({
            "from": 1000, "to": 1000 + n - 1,
            "seconds": (1000..1000 + n).collect::<Vec<_>>(),
            "series": series,
        })
    }

    fn ramp(n: usize, f: impl Fn(usize) -> Option<f64>) -> Value {
        json!((0..n).map(f).collect::<Vec<_>>())
    }

    #[test]
    fn a_slow_database_ranks_the_drop_first_and_names_the_batcher_as_its_cause() {
        let n = 20;
        let series = json!([
            { "section": "queues", "name": "db", "signal": "saturation_max", "unit": "ratio",
              "values": ramp(n, |i| Some((i as f64 / 5.0).min(1.0))) },
            { "section": "queues", "name": "events", "signal": "saturation_max", "unit": "ratio",
              "values": ramp(n, |i| Some(if i >= 8 { 1.0 } else { 0.1 })) },
            { "section": "queues", "name": "events", "signal": "dropped_per_second", "unit": "count",
              "values": ramp(n, |i| Some(if i >= 9 { 100.0 } else { 0.0 })) },
            { "section": "batchers", "name": "db", "signal": "flush_p99_seconds", "unit": "seconds",
              "values": ramp(n, |_| Some(0.1)) },
        ]);
        let inventory = json!({
            "queues": [
                { "name": "events", "capacity": 100, "policy": "drop_newest", "source": "src/pipeline.rs:10" },
                { "name": "db", "capacity": 1024, "policy": "block", "source": "src/pipeline.rs:20" },
            ],
            "batchers": [{ "name": "db", "max_batch": 50, "max_delay_seconds": 1.0, "source": "src/pipeline.rs:20" }],
        });
        let snapshot = json!({ "queues": [{ "name": "events", "dropped": { "full": 1100, "oldest": 0 } }] });
        let r = build(&timeline(series, n as u64), &inventory, &snapshot);
        let f = r["findings"].as_array().unwrap();
        assert_eq!(f[0]["severity"], "CRITICAL", "{r:#}");
        assert_eq!(f[0]["name"], "events");
        assert!(f[0]["evidence"].as_str().unwrap().contains("1100 items"), "{}", f[0]);
        assert!(f[0]["evidence"].as_str().unwrap().contains("full 1100"), "{}", f[0]);
        // The bottleneck is the db intake, which saturated at t=4 s, before events did.
        let b = r["bottleneck"].as_str().unwrap();
        let bottleneck = f.iter().find(|x| x["id"] == b).unwrap();
        assert_eq!(bottleneck["name"], "db");
        assert!(bottleneck["evidence"].as_str().unwrap().contains("`db` batcher"), "{bottleneck}");
        assert_eq!(f[0]["consequence_of"], b);
        let events_sat = f
            .iter()
            .find(|x| x["name"] == "events" && x["severity"] == "HIGH")
            .unwrap();
        assert_eq!(events_sat["consequence_of"], b);
        assert_eq!(r["headroom"][0]["peak_use"], 1.0);
    }

    #[test]
    fn a_full_connection_pool_is_the_bottleneck_and_a_contended_lock_is_named() {
        let n = 60;
        let series = json!([
            { "section": "resources", "name": "db", "signal": "saturation_max", "unit": "ratio",
              "values": ramp(n, |i| Some(if (10..50).contains(&i) { 1.0 } else { 0.3 })) },
            { "section": "resources", "name": "db", "signal": "acquire_p99_seconds", "unit": "seconds",
              "values": ramp(n, |i| Some(if (10..50).contains(&i) { 0.18 } else { 0.001 })) },
            { "section": "resources", "name": "db", "signal": "waiters_max", "unit": "count",
              "values": ramp(n, |i| Some(if (10..50).contains(&i) { 12.0 } else { 0.0 })) },
            { "section": "resources", "name": "db", "signal": "timeouts_per_second", "unit": "count",
              "values": ramp(n, |i| Some(if i == 30 { 3.0 } else { 0.0 })) },
            { "section": "locks", "name": "progress", "signal": "wait_p99_seconds", "unit": "seconds",
              "values": ramp(n, |i| (i >= 20).then_some(0.08)) },
            { "section": "semaphores", "name": "calls", "signal": "saturation_max", "unit": "ratio",
              "values": ramp(n, |_| Some(0.75)) },
        ]);
        let inventory = json!({
            "resources": [{ "name": "db", "kind": "deadpool", "max": 50, "counts_waiters": true, "source": "src/store.rs:40" }],
            "semaphores": [{ "name": "calls", "permits": 4, "source": "src/http.rs:9" }],
            "locks": [{ "name": "progress", "kind": "mutex", "source": "src/store.rs:60" }],
        });
        let r = build(&timeline(series, n as u64), &inventory, &json!({}));
        let f = r["findings"].as_array().unwrap();
        let by_title = |t: &str| {
            f.iter()
                .find(|x| x["title"].as_str().unwrap().contains(t))
                .unwrap_or_else(|| panic!("no finding {t}: {r:#}"))
        };
        let pool = by_title("`db` connection pool saturated");
        assert_eq!(pool["severity"], "HIGH");
        assert_eq!(pool["bottleneck"], true);
        assert_eq!(pool["category"], "Database");
        let ev = pool["evidence"].as_str().unwrap();
        assert!(ev.contains("at 50/50 from t=10 s for 40 s"), "{ev}");
        assert!(ev.contains("acquire p99 up to 180.0 ms"), "{ev}");
        assert!(ev.contains("up to 12 callers waiting"), "{ev}");
        assert!(pool["change"].as_str().unwrap().contains("now 50"), "{pool}");
        assert_eq!(pool["source"], "src/store.rs:40");
        let timeouts = by_title("3 waits for the `db` connection pool timed out");
        assert_eq!(timeouts["severity"], "HIGH");
        let lock = by_title("`progress` lock contended");
        assert_eq!(lock["severity"], "MEDIUM");
        assert!(lock["evidence"].as_str().unwrap().contains("from t=20 s, up to 80.0 ms"), "{lock}");
        // The semaphore peaked at 3/4: headroom under 2x, not saturated.
        let sem = by_title("`calls` has less than 2× headroom");
        assert_eq!(sem["severity"], "LOW");
        let rows = r["configuration"].as_array().unwrap();
        for kind in ["connection_pool", "semaphore", "lock"] {
            assert!(rows.iter().any(|row| row["kind"] == kind), "{kind}: {rows:?}");
        }
    }

    #[test]
    fn a_healthy_run_has_nothing_above_low() {
        let n = 10;
        let series = json!([
            { "section": "queues", "name": "q", "signal": "saturation_max", "unit": "ratio",
              "values": ramp(n, |i| Some(if i == 3 { 0.6 } else { 0.01 })) },
            { "section": "pools", "name": "p", "signal": "busy_ratio", "unit": "ratio",
              "values": ramp(n, |_| Some(0.2)) },
            { "section": "tasks", "name": "t", "signal": "alive_max", "unit": "count",
              "values": ramp(n, |i| Some(10.0 + i as f64)) },
            { "section": "hot_paths", "name": "h", "signal": "p99_seconds", "unit": "seconds",
              "values": ramp(n, |i| (i % 2 == 0).then_some(0.002)) },
        ]);
        let r = build(&timeline(series, n as u64), &json!({}), &json!({}));
        let f = r["findings"].as_array().unwrap();
        assert!(f.iter().all(|x| x["severity"] == "LOW"), "{r:#}");
        assert_eq!(f.len(), 1, "the queue's 60% peak is under 2x headroom: {r:#}");
        assert!(r["bottleneck"].is_null());
        assert_eq!(r["signals"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn a_growing_task_name_and_a_starved_runtime() {
        let n = 30;
        let series = json!([
            { "section": "tasks", "name": "leaky", "signal": "alive_max", "unit": "count",
              "values": ramp(n, |i| Some(3.0 + 10.0 * i as f64)) },
            { "section": "runtimes", "name": "main", "signal": "schedule_delay_p99_seconds", "unit": "seconds",
              "values": ramp(n, |i| Some(if i >= 5 { 2.0 } else { 0.002 })) },
        ]);
        let inventory = json!({
            "tasks": [{ "name": "leaky", "live_spawn_sites": ["src/http.rs:40"] }],
            "runtimes": [{ "name": "main", "workers": 2 }],
        });
        let r = build(&timeline(series, n as u64), &inventory, &json!({}));
        let f = r["findings"].as_array().unwrap();
        let leak = f.iter().find(|x| x["name"] == "leaky").unwrap();
        assert_eq!(leak["severity"], "HIGH");
        assert!(leak["evidence"].as_str().unwrap().contains("+290"), "{leak}");
        assert_eq!(leak["source"], "src/http.rs:40");
        let rt = f.iter().find(|x| x["name"] == "main").unwrap();
        assert_eq!(rt["category"], "Concurrency");
        assert_eq!(rt["started_at_seconds"], 5);
        assert_eq!(r["bottleneck"], rt["id"]);
    }
}
