//! The profiles taken lately, summarized for the run report: every CPU profile and heap
//! profile the server builds leaves its top functions here, with the span it covers, so a
//! report over a window can name the hottest functions of the CPU profile taken in it and the
//! allocation sites whose live heap grew between two heap profiles.
//!
//! Fixed memory: the last [`KEEP`] summaries of each kind, [`TOP`] functions per list.

// Without a profiling feature nothing is ever kept, and the report's section is empty;
// without the server there is no report to read it.
#![cfg_attr(
    not(all(
        feature = "server",
        any(feature = "cpu-profiling", feature = "heap-profiling")
    )),
    allow(dead_code)
)]

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};

/// Summaries kept per kind.
pub(crate) const KEEP: usize = 8;
/// Functions kept per list of a summary.
pub(crate) const TOP: usize = 50;

/// What a profile measured, summarized.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    /// Unix seconds the profile started covering (a heap profile covers an instant).
    pub(crate) start: f64,
    /// Unix seconds it ended.
    pub(crate) end: f64,
    /// The value over every stack: samples, or live bytes.
    pub(crate) total: i64,
    /// The functions with the most of it as the innermost frame, most first.
    pub(crate) flat: Vec<(String, i64)>,
    /// The functions with the most of it anywhere in the stack, most first.
    pub(crate) cum: Vec<(String, i64)>,
}

impl Summary {
    /// Summarizes named stacks (root first) by the value at `index`.
    pub(crate) fn of(
        stacks: &[(Vec<String>, Vec<i64>)],
        index: usize,
        start: f64,
        end: f64,
    ) -> Summary {
        let mut flat: HashMap<&str, i64> = HashMap::new();
        let mut cum: HashMap<&str, i64> = HashMap::new();
        let mut total = 0;
        for (names, values) in stacks {
            let v = values.get(index).copied().unwrap_or(0);
            if v <= 0 {
                continue;
            }
            total += v;
            if let Some(leaf) = names.last() {
                *flat.entry(leaf).or_default() += v;
            }
            // A recursive function counts once per stack.
            let mut seen: Vec<&str> = Vec::with_capacity(names.len());
            for n in names {
                if !seen.contains(&n.as_str()) {
                    seen.push(n);
                    *cum.entry(n).or_default() += v;
                }
            }
        }
        Summary {
            start,
            end,
            total,
            flat: top(flat),
            cum: top(cum),
        }
    }
}

fn top(m: HashMap<&str, i64>) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = m.into_iter().map(|(k, n)| (k.to_owned(), n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(TOP);
    v
}

struct Kept {
    cpu: Vec<Summary>,
    heap: Vec<Summary>,
}

static KEPT: Mutex<Kept> = Mutex::new(Kept {
    cpu: Vec::new(),
    heap: Vec::new(),
});

fn push(list: &mut Vec<Summary>, s: Summary) {
    if list.len() == KEEP {
        list.remove(0);
    }
    list.push(s);
}

/// Keeps a CPU profile's summary.
#[cfg_attr(not(feature = "cpu-profiling"), allow(dead_code))]
pub(crate) fn cpu(s: Summary) {
    push(&mut crate::loom::lock_unpoisoned(&KEPT).cpu, s);
}

/// Keeps a heap profile's summary (live bytes).
#[cfg_attr(not(feature = "heap-profiling"), allow(dead_code))]
pub(crate) fn heap(s: Summary) {
    push(&mut crate::loom::lock_unpoisoned(&KEPT).heap, s);
}

fn rows(list: &[(String, i64)], total: i64, n: usize, key: &str) -> Vec<Value> {
    list.iter()
        .take(n)
        .map(|(f, v)| {
            json!({
                "function": f,
                key: v,
                "share": if total > 0 { *v as f64 / total as f64 } else { 0.0 },
            })
        })
        .collect()
}

/// `cum` without the functions on every stack, unless nothing else is left.
fn informative(cum: &[(String, i64)], total: i64) -> Vec<(String, i64)> {
    let some: Vec<(String, i64)> = cum.iter().filter(|(_, v)| *v < total).cloned().collect();
    if some.is_empty() { cum.to_vec() } else { some }
}

/// The report's `profiles` section for the seconds `from..=to`: the latest CPU profile that
/// ran inside them (its top 10 by flat and by cumulative samples), and the live heap's growth
/// by allocation site between the first and the last heap profile taken in them (or the top
/// sites of the one heap profile there is). `t0` is the report's first second, for offsets.
pub(crate) fn section(from: u64, to: u64, t0: u64) -> Value {
    let kept = crate::loom::lock_unpoisoned(&KEPT);
    let inside = |s: &&Summary| s.start >= from as f64 && s.end < (to + 1) as f64;
    let at = |t: f64| (t - t0 as f64).max(0.0).round() as i64;
    let cpu = kept.cpu.iter().rfind(inside).map(|s| {
        json!({
            "started_at_seconds": at(s.start),
            "seconds": s.end - s.start,
            "samples": s.total,
            "top_flat": rows(&s.flat, s.total, 10, "samples"),
            // Frames on every stack (thread start, the runtime's loop) say nothing.
            "top_cum": rows(&informative(&s.cum, s.total), s.total, 10, "samples"),
        })
    });
    let heaps: Vec<&Summary> = kept.heap.iter().filter(inside).collect();
    let heap = match (heaps.first(), heaps.last()) {
        (Some(a), Some(b)) if heaps.len() >= 2 => {
            let before: HashMap<&str, i64> = a.flat.iter().map(|(f, v)| (f.as_str(), *v)).collect();
            let after: HashMap<&str, i64> = b.flat.iter().map(|(f, v)| (f.as_str(), *v)).collect();
            let mut sites: Vec<(&str, i64, i64)> = after
                .iter()
                .map(|(f, v)| (*f, before.get(f).copied().unwrap_or(0), *v))
                .chain(
                    before
                        .iter()
                        .filter(|(f, _)| !after.contains_key(*f))
                        .map(|(f, v)| (*f, *v, 0)),
                )
                .collect();
            sites.sort_by(|x, y| (y.2 - y.1).cmp(&(x.2 - x.1)).then_with(|| x.0.cmp(y.0)));
            Some(json!({
                "profiles": heaps.len(),
                "from_at_seconds": at(a.start),
                "to_at_seconds": at(b.start),
                "live_bytes_before": a.total,
                "live_bytes_after": b.total,
                "growth_bytes": b.total - a.total,
                "top_growth": sites.iter().take(10).map(|(f, x, y)| json!({
                    "function": f, "bytes_before": x, "bytes_after": y, "growth_bytes": y - x,
                })).collect::<Vec<_>>(),
            }))
        }
        (Some(a), _) => Some(json!({
            "profiles": 1,
            "from_at_seconds": at(a.start),
            "to_at_seconds": at(a.start),
            "live_bytes_before": null,
            "live_bytes_after": a.total,
            "growth_bytes": null,
            "top_live": rows(&a.flat, a.total, 10, "bytes"),
        })),
        _ => None,
    };
    json!({ "cpu": cpu, "heap": heap })
}

/// Serializes the tests that read or clear the kept summaries.
#[cfg(test)]
pub(crate) static TEST_LOCK: Mutex<()> = Mutex::new(());

#[cfg(test)]
pub(crate) fn clear() {
    let mut k = crate::loom::lock_unpoisoned(&KEPT);
    k.cpu.clear();
    k.heap.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(names: &[&str], v: i64) -> (Vec<String>, Vec<i64>) {
        (names.iter().map(|s| (*s).to_owned()).collect(), vec![v])
    }

    #[test]
    fn flat_and_cumulative_tops() {
        let s = Summary::of(
            &[
                stack(&["main", "serve", "parse"], 30),
                stack(&["main", "serve", "encode"], 10),
                stack(&["main", "rec", "rec", "parse"], 5),
                stack(&["main", "idle"], 0),
            ],
            0,
            10.0,
            15.0,
        );
        assert_eq!(s.total, 45);
        assert_eq!(
            s.flat,
            vec![("parse".to_owned(), 35), ("encode".to_owned(), 10)]
        );
        assert_eq!(s.cum[0], ("main".to_owned(), 45));
        assert!(
            s.cum.contains(&("rec".to_owned(), 5)),
            "a recursive frame counts once: {:?}",
            s.cum
        );
    }

    #[test]
    fn the_section_takes_profiles_inside_the_span_and_the_heap_growth_between_two() {
        let _g = crate::loom::lock_unpoisoned(&TEST_LOCK);
        clear();
        cpu(Summary::of(&[stack(&["a", "old"], 9)], 0, 100.0, 105.0));
        cpu(Summary::of(
            &[stack(&["a", "hot"], 7), stack(&["a", "cold"], 1)],
            0,
            200.0,
            205.0,
        ));
        heap(Summary::of(
            &[stack(&["m", "keep"], 1000), stack(&["m", "gone"], 50)],
            0,
            201.0,
            201.0,
        ));
        heap(Summary::of(
            &[stack(&["m", "keep"], 5000), stack(&["m", "new"], 700)],
            0,
            230.0,
            230.0,
        ));
        let s = section(190, 240, 190);
        assert_eq!(s["cpu"]["started_at_seconds"], 10, "{s:#}");
        // `a` is on every stack: not in the cumulative list.
        assert_eq!(s["cpu"]["top_cum"][0]["function"], "hot", "{s:#}");
        assert_eq!(s["cpu"]["top_flat"][0]["function"], "hot");
        assert_eq!(s["cpu"]["top_flat"][0]["samples"], 7);
        assert_eq!(s["heap"]["growth_bytes"], 4650);
        let g = &s["heap"]["top_growth"];
        assert_eq!(g[0]["function"], "keep");
        assert_eq!(g[0]["growth_bytes"], 4000);
        assert_eq!(g[1]["function"], "new");
        assert_eq!(g[2]["function"], "gone");
        assert_eq!(g[2]["growth_bytes"], -50);
        // Outside every profile's span: nothing.
        let none = section(300, 400, 300);
        assert!(none["cpu"].is_null() && none["heap"].is_null(), "{none}");
        // Only one heap profile: its top sites, no growth.
        let one = section(100, 220, 100);
        assert_eq!(one["cpu"]["top_flat"][0]["function"], "hot");
        assert!(one["heap"]["growth_bytes"].is_null());
        assert_eq!(one["heap"]["top_live"][0]["function"], "keep");
        clear();
    }

    #[test]
    fn memory_is_bounded() {
        let _g = crate::loom::lock_unpoisoned(&TEST_LOCK);
        clear();
        for i in 0..100 {
            let stacks: Vec<_> = (0..200)
                .map(|j| (vec![format!("f{j}")], vec![i64::from(j) + 1]))
                .collect();
            cpu(Summary::of(&stacks, 0, f64::from(i), f64::from(i) + 1.0));
        }
        let k = crate::loom::lock_unpoisoned(&KEPT);
        assert_eq!(k.cpu.len(), KEEP);
        assert!(
            k.cpu
                .iter()
                .all(|s| s.flat.len() == TOP && s.cum.len() == TOP)
        );
        assert_eq!(k.cpu[0].start, 92.0);
        drop(k);
        clear();
    }
}
