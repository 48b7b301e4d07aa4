//! Heap profiles from jemalloc's sampling heap profiler (served as `/debug/pprof/heap` and
//! `/debug/pprof/allocs`), and jemalloc's own figures on `/metrics`.
//!
//! jemalloc samples one allocation per `2^lg_prof_sample` bytes on average and remembers the
//! stack of each sampled allocation. A dump lists, per stack, the sampled objects and bytes
//! still live and (with `prof_accum:true`) those allocated since the start. perfkit reads the
//! dump, scales the sampled figures up the way Go and jeprof do, symbolizes the stacks in the
//! process, drops the allocator's own frames from the leaf end, and writes a profile with
//! Go's four heap sample types.

use std::io::Read;

use super::encode::Profile;
use super::symbols::{self, FlamegraphError, Named, Symbols};
use crate::metrics::names;
use crate::metrics::{Collection, Collector, Sections};

/// Which heap figures a profile leads with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeapKind {
    /// Live objects (`inuse_space` by default), as Go's `/debug/pprof/heap`.
    Inuse,
    /// Everything allocated since start (`alloc_space` by default), as Go's `/allocs`.
    Allocs,
}

/// The form of a heap profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeapForm {
    /// Gzipped pprof, as `go tool pprof` reads it.
    Pprof,
    /// An SVG flame graph.
    Flamegraph,
    /// Go's `debug=1` text: totals, then the top allocation sites.
    Text,
}

const ENABLE: &str = "make jemalloc the global allocator with `perfkit::jemalloc_profiling!();` (it sets prof:true,prof_active:true,prof_accum:true), or set those in _RJEM_MALLOC_CONF";

/// Why a heap profile could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeapError {
    /// jemalloc's profiling is not compiled in or not switched on.
    #[error("jemalloc heap profiling is off: {ENABLE}")]
    Off,
    /// jemalloc's profiling is on but not active (`prof.active`).
    #[error("jemalloc heap profiling is built in but not active: {ENABLE}")]
    Inactive,
    /// Cumulative figures need `prof_accum:true`.
    #[error(
        "cumulative allocations need jemalloc's prof_accum:true, which is off in this process (perfkit::jemalloc_profiling!() sets it)"
    )]
    NoAccumulation,
    /// `prof.dump` failed.
    #[error("jemalloc prof.dump: {0}")]
    Dump(String),
    /// The dump could not be read back.
    #[error("reading the jemalloc dump: {0}")]
    Read(#[from] std::io::Error),
    /// The dump is not in the format expected.
    #[error("{0}")]
    Parse(String),
    /// The flame graph could not be drawn.
    #[error(transparent)]
    Flamegraph(#[from] FlamegraphError),
    /// A sampling rate out of range.
    #[error("lg_sample must be 0 to {MAX_LG_SAMPLE} (one sample per 2^lg_sample bytes), got {0}")]
    BadSampleRate(u32),
    /// jemalloc refused a control write.
    #[error("jemalloc {name}: {reason}")]
    Control {
        /// The control written.
        name: &'static str,
        /// jemalloc's error.
        reason: String,
    },
}

/// The sparsest sampling [`set_heap_sample_rate`] accepts: one sample per GiB on average.
pub const MAX_LG_SAMPLE: u32 = 30;

/// jemalloc's heap sampling now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeapSampling {
    /// Whether allocations are being sampled (`prof.active`).
    pub active: bool,
    /// One sample per `2^lg_sample` allocated bytes on average (`prof.lg_sample`).
    pub lg_sample: u32,
}

impl HeapSampling {
    /// The average number of bytes between two samples.
    pub fn sample_bytes(&self) -> u64 {
        1u64 << self.lg_sample.min(63)
    }

    /// As JSON, for the inventory and the debug server.
    #[cfg(feature = "server")]
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "active": self.active,
            "lg_sample": self.lg_sample,
            "sample_bytes": self.sample_bytes(),
        })
    }
}

/// Whether jemalloc profiling was switched on at start (`opt.prof`): it cannot be later.
fn built_in() -> bool {
    // SAFETY: `opt.prof` is a documented read-only boolean option.
    unsafe { tikv_jemalloc_ctl::raw::read(b"opt.prof\0") }.unwrap_or(false)
}

/// jemalloc's heap sampling now.
///
/// # Errors
/// [`HeapError::Off`] when jemalloc's profiling was not switched on at start.
pub fn heap_sampling() -> Result<HeapSampling, HeapError> {
    if !built_in() {
        return Err(HeapError::Off);
    }
    // SAFETY: `prof.active` is a documented boolean, `prof.lg_sample` a documented
    // `size_t`; both readable whenever `opt.prof` is on.
    let active: bool = unsafe { tikv_jemalloc_ctl::raw::read(b"prof.active\0") }.unwrap_or(false);
    // SAFETY: as above.
    let lg: usize = unsafe { tikv_jemalloc_ctl::raw::read(b"prof.lg_sample\0") }.unwrap_or(0);
    Ok(HeapSampling {
        active,
        lg_sample: u32::try_from(lg).unwrap_or(u32::MAX),
    })
}

/// Starts (`true`) or pauses (`false`) sampling allocations; the profile keeps what it has.
/// Returns the sampling before the change. A paused heap profile answers
/// [`HeapError::Inactive`] until sampling resumes.
///
/// # Errors
/// [`HeapError::Off`] when jemalloc's profiling was not switched on at start; `Control`
/// when jemalloc refuses the write.
pub fn set_heap_sampling(active: bool) -> Result<HeapSampling, HeapError> {
    let before = heap_sampling()?;
    // SAFETY: `prof.active` is a documented writable boolean while `opt.prof` is on.
    unsafe { tikv_jemalloc_ctl::raw::write(b"prof.active\0", active) }.map_err(|e| {
        HeapError::Control {
            name: "prof.active",
            reason: e.to_string(),
        }
    })?;
    Ok(before)
}

/// Samples one allocation per `2^lg_sample` bytes on average from now on (jemalloc's
/// `prof.reset`, which also clears what was sampled so far: live and cumulative figures
/// start again from zero). Returns the sampling before the change.
///
/// # Errors
/// [`HeapError::BadSampleRate`] above [`MAX_LG_SAMPLE`]; `Off` and `Control` as
/// [`set_heap_sampling`].
pub fn set_heap_sample_rate(lg_sample: u32) -> Result<HeapSampling, HeapError> {
    if lg_sample > MAX_LG_SAMPLE {
        return Err(HeapError::BadSampleRate(lg_sample));
    }
    let before = heap_sampling()?;
    // SAFETY: `prof.reset` is a documented write-only `size_t` while `opt.prof` is on.
    unsafe { tikv_jemalloc_ctl::raw::write(b"prof.reset\0", lg_sample as usize) }.map_err(|e| {
        HeapError::Control {
            name: "prof.reset",
            reason: e.to_string(),
        }
    })?;
    Ok(before)
}

/// Dumps, parses and symbolizes jemalloc's profile into the answer asked for.
///
/// With jemalloc as the global allocator and its profiling on
/// ([`crate::jemalloc_profiling!`]). Takes a dump and symbolizes it: tens of milliseconds
/// to seconds, on the calling thread.
///
/// # Errors
/// [`HeapError`]: profiling off or inactive, cumulative figures asked for without
/// `prof_accum`, the dump failing, or the flame graph failing to draw.
pub fn heap(kind: HeapKind, form: HeapForm) -> Result<Vec<u8>, HeapError> {
    check(kind)?;
    let dump = dump()?;
    let parsed = parse(&dump)?;
    drop(dump);
    let (profile, named) = build(&parsed, kind);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    // Live bytes by allocation site, for the run report's heap growth.
    super::recent::heap(super::recent::Summary::of(&named, 3, now, now));
    let index = if kind == HeapKind::Inuse { 3 } else { 1 };
    match form {
        HeapForm::Text => Ok(summary(&parsed, &named, kind).into_bytes()),
        HeapForm::Flamegraph => {
            let title = if kind == HeapKind::Inuse {
                "inuse_space"
            } else {
                "alloc_space"
            };
            Ok(symbols::flamegraph(
                title,
                "bytes",
                &symbols::folded(&named, index),
            )?)
        }
        HeapForm::Pprof => Ok(profile.encode_gzip()),
    }
}

/// Whether jemalloc is profiling, and for `/allocs` whether it keeps cumulative counts.
pub(crate) fn check(kind: HeapKind) -> Result<(), HeapError> {
    // SAFETY: documented read-only boolean options.
    let prof: bool = unsafe { tikv_jemalloc_ctl::raw::read(b"opt.prof\0") }.unwrap_or(false);
    if !prof {
        return Err(HeapError::Off);
    }
    // SAFETY: `prof.active` is a documented boolean, readable while `opt.prof` is on.
    let active: bool = unsafe { tikv_jemalloc_ctl::raw::read(b"prof.active\0") }.unwrap_or(false);
    if !active {
        return Err(HeapError::Inactive);
    }
    if kind == HeapKind::Allocs {
        // SAFETY: a documented read-only boolean option.
        let accum: bool =
            unsafe { tikv_jemalloc_ctl::raw::read(b"opt.prof_accum\0") }.unwrap_or(false);
        if !accum {
            return Err(HeapError::NoAccumulation);
        }
    }
    Ok(())
}

fn dump() -> Result<String, HeapError> {
    let ctl = jemalloc_pprof::PROF_CTL.as_ref().ok_or(HeapError::Off)?;
    let mut file = ctl
        .blocking_lock()
        .dump()
        .map_err(|e| HeapError::Dump(e.to_string()))?;
    let mut s = String::new();
    file.read_to_string(&mut s)?;
    Ok(s)
}

/// One stack of a jemalloc dump with its sampled figures.
#[derive(Debug, Default, Clone, PartialEq)]
struct Site {
    addrs: Vec<usize>, // leaf first
    live_objects: f64,
    live_bytes: f64,
    total_objects: f64,
    total_bytes: f64,
}

#[derive(Debug, Default, PartialEq)]
struct Dump {
    rate: f64,
    sites: Vec<Site>,
}

/// Parses jemalloc's `heap_v2` dump format:
///
/// ```text
/// heap_v2/524288
///   t*: 28106: 56637512 [0: 0]
///   ...
/// @ 0x55d1c0 0x55d0a0 ...
///   t*: 13: 6688 [13: 6688]
///   t3: 12: 6656 [12: 6656]
/// MAPPED_LIBRARIES:
/// ...
/// ```
/// `t*:` lines give live objects and bytes, then (in brackets) cumulative ones.
fn parse(dump: &str) -> Result<Dump, HeapError> {
    let bad = HeapError::Parse;
    let mut lines = dump.lines();
    let first = lines
        .next()
        .ok_or_else(|| bad("the jemalloc dump is empty".into()))?;
    let rate: f64 = first
        .trim()
        .strip_prefix("heap_v2/")
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| bad(format!("unexpected jemalloc dump header {first:?}")))?;
    let mut out = Dump {
        rate,
        sites: Vec::new(),
    };
    let mut current: Option<Vec<usize>> = None;
    for line in lines {
        let line = line.trim();
        if line.starts_with("MAPPED_LIBRARIES") {
            break;
        }
        if let Some(rest) = line.strip_prefix('@') {
            let addrs = rest
                .split_ascii_whitespace()
                .map(|w| usize::from_str_radix(w.trim_start_matches("0x"), 16))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("bad address in jemalloc dump line {line:?}: {e}")))?;
            current = Some(addrs);
        } else if let Some(rest) = line.strip_prefix("t*:") {
            let Some(addrs) = current.take() else {
                continue; // the process-wide totals before the first stack
            };
            let nums: Vec<f64> = rest
                .split(|c: char| c == ':' || c == '[' || c == ']' || c.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
                .map(|w| w.parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("bad counts in jemalloc dump line {line:?}: {e}")))?;
            if nums.len() < 2 {
                return Err(bad(format!("bad counts in jemalloc dump line {line:?}")));
            }
            out.sites.push(Site {
                addrs,
                live_objects: nums[0],
                live_bytes: nums[1],
                total_objects: nums.get(2).copied().unwrap_or(0.0),
                total_bytes: nums.get(3).copied().unwrap_or(0.0),
            });
        }
    }
    Ok(out)
}

/// Scales sampled figures up to estimates of the real ones: a sample of `count` objects of
/// average size `s` stands for `1 / (1 - e^(-s/rate))` times as many (Go's scaleHeapSample).
fn unsample(count: f64, bytes: f64, rate: f64) -> (i64, i64) {
    if count <= 0.0 || bytes <= 0.0 || rate <= 1.0 {
        return (count as i64, bytes as i64);
    }
    let avg = bytes / count;
    let scale = 1.0 / (1.0 - (-avg / rate).exp());
    ((count * scale) as i64, (bytes * scale) as i64)
}

/// Whether a frame belongs to the allocator or to Rust's allocation plumbing rather than to
/// the code that asked for memory.
pub(crate) fn allocator_frame(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "prof_",
        "je_",
        "_rjem_",
        "imalloc",
        "ialloc",
        "irealloc",
        "iralloc",
        "ipalloc",
        "arena_",
        "tcache_",
        "malloc",
        "calloc",
        "realloc",
        "posix_memalign",
        "aligned_alloc",
        "mallocx",
        "rallocx",
        "do_rallocx",
        "__rustc::",
        "__rust_alloc",
        "__rust_realloc",
        "__rust_alloc_zeroed",
        "__rdl_",
        "__rg_",
        "tikv_jemallocator::",
        "alloc::",
        "core::alloc::",
        "std::alloc::",
        "perfkit::alloc::",
    ];
    let bare = name.strip_prefix('<').unwrap_or(name);
    PREFIXES.iter().any(|p| bare.starts_with(p))
        || name.contains(" as alloc::")
        || name.contains(" as core::alloc::")
}

/// The dump's stacks with their figures scaled up: alloc objects and bytes, in-use objects
/// and bytes.
fn scaled(d: &Dump) -> Vec<(Vec<usize>, Vec<i64>)> {
    d.sites
        .iter()
        .map(|s| {
            let (ao, ab) = unsample(s.total_objects, s.total_bytes, d.rate);
            let (io, ib) = unsample(s.live_objects, s.live_bytes, d.rate);
            (s.addrs.clone(), vec![ao, ab, io, ib])
        })
        .filter(|(_, v)| v.iter().any(|&x| x != 0))
        .collect()
}

fn build(d: &Dump, kind: HeapKind) -> (Profile, Named) {
    let comment = format!(
        "perfkit heap profile from jemalloc: one sample per {} bytes on average, figures scaled up to estimates",
        d.rate
    );
    profile_of(&scaled(d), d.rate, kind, None, &comment)
}

/// A heap taken twice, for a delta profile.
#[derive(Debug)]
pub(crate) struct HeapSnapshot(Dump);

/// Dumps and parses the heap now; symbolizing waits for [`delta_pprof`].
pub(crate) fn snapshot(kind: HeapKind) -> Result<HeapSnapshot, HeapError> {
    check(kind)?;
    let text = dump()?;
    Ok(HeapSnapshot(parse(&text)?))
}

/// What changed between two snapshots, as Go's delta profiles give it: every figure of
/// `after` minus `before`, per stack (a stack whose figures did not change is left out;
/// in-use figures may be negative where memory was freed). Gzipped pprof, its time and
/// duration the span's.
pub(crate) fn delta_pprof(
    before: &HeapSnapshot,
    after: &HeapSnapshot,
    kind: HeapKind,
    span: (std::time::SystemTime, std::time::Duration),
) -> Vec<u8> {
    use std::collections::HashMap;
    let mut by_stack: HashMap<Vec<usize>, Vec<i64>> = scaled(&after.0).into_iter().collect();
    for (addrs, v) in scaled(&before.0) {
        let e = by_stack.entry(addrs).or_insert_with(|| vec![0; 4]);
        for (x, y) in e.iter_mut().zip(v) {
            *x -= y;
        }
    }
    let mut stacks: Vec<(Vec<usize>, Vec<i64>)> = by_stack
        .into_iter()
        .filter(|(_, v)| v.iter().any(|&x| x != 0))
        .collect();
    stacks.sort();
    let comment = format!(
        "perfkit heap delta profile from jemalloc over {:.1}s: figures at the end minus figures at the start, one sample per {} bytes on average",
        span.1.as_secs_f64(),
        after.0.rate
    );
    let (p, _) = profile_of(&stacks, after.0.rate, kind, Some(span), &comment);
    p.encode_gzip()
}

/// Like [`heap`] in pprof form, but what changed over `period`: two dumps `period` apart
/// and their difference, as Go's `/debug/pprof/heap?seconds=N`. Blocks for `period`.
///
/// # Errors
/// As [`heap`].
pub fn heap_delta(kind: HeapKind, period: std::time::Duration) -> Result<Vec<u8>, HeapError> {
    let start = std::time::SystemTime::now();
    let before = snapshot(kind)?;
    std::thread::sleep(period);
    let after = snapshot(kind)?;
    Ok(delta_pprof(&before, &after, kind, (start, period)))
}

fn profile_of(
    stacks: &[(Vec<usize>, Vec<i64>)],
    rate: f64,
    kind: HeapKind,
    span: Option<(std::time::SystemTime, std::time::Duration)>,
    comment: &str,
) -> (Profile, Named) {
    let mut p = Profile::new(
        &[
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes"),
        ],
        rate as i64,
    );
    p.set_period(("space", "bytes"), rate as i64);
    p.set_default_sample_type(if kind == HeapKind::Inuse {
        "inuse_space"
    } else {
        "alloc_space"
    });
    if let Some((start, duration)) = span {
        p.set_time(start, duration);
    }
    p.comment(comment);
    let mut syms = Symbols::default();
    let named = symbols::add_stacks(
        &mut p,
        &mut syms,
        stacks,
        symbols::Addr::Return,
        &allocator_frame,
    );
    (p, named)
}

/// The text answer of `debug=1`: totals and the top 20 allocating functions.
fn summary(d: &Dump, named: &Named, kind: HeapKind) -> String {
    use std::collections::HashMap;
    let mut by_leaf: HashMap<&str, [i64; 4]> = HashMap::new();
    let mut total = [0i64; 4];
    for (names, v) in named {
        let leaf = names.last().map_or("?", String::as_str);
        let e = by_leaf.entry(leaf).or_default();
        for i in 0..4 {
            e[i] += v[i];
            total[i] += v[i];
        }
    }
    let key = if kind == HeapKind::Inuse { 3 } else { 1 };
    let mut rows: Vec<_> = by_leaf.into_iter().collect();
    rows.sort_by(|a, b| b.1[key].cmp(&a.1[key]).then(a.0.cmp(b.0)));
    let mut s = format!(
        "heap profile: {} bytes in {} objects live, {} bytes in {} objects allocated since start\n\
         # estimates from jemalloc's sampling (one sample per {} bytes on average)\n\
         # top {} functions by {}:\n\
         # {:>14} {:>12} {:>14} {:>12}  function\n",
        total[3],
        total[2],
        total[1],
        total[0],
        d.rate,
        rows.len().min(20),
        if kind == HeapKind::Inuse {
            "inuse_space"
        } else {
            "alloc_space"
        },
        "inuse_bytes",
        "inuse_objs",
        "alloc_bytes",
        "alloc_objs"
    );
    for (leaf, v) in rows.iter().take(20) {
        s.push_str(&format!(
            "  {:>14} {:>12} {:>14} {:>12}  {leaf}\n",
            v[3], v[2], v[1], v[0]
        ));
    }
    s
}

/// jemalloc's allocated / active / resident bytes on `/metrics`, when jemalloc serves the
/// process's allocations.
pub(crate) struct JemallocStats;

/// jemalloc's `stats.allocated` when jemalloc serves the allocations.
pub(crate) fn jemalloc_allocated_bytes() -> Option<u64> {
    JemallocStats::read().map(|[allocated, _, _]| allocated)
}

impl JemallocStats {
    fn read() -> Option<[u64; 3]> {
        tikv_jemalloc_ctl::epoch::advance().ok()?;
        let allocated = tikv_jemalloc_ctl::stats::allocated::read().ok()? as u64;
        if allocated == 0 {
            return None; // linked in, but not the allocator in use
        }
        let active = tikv_jemalloc_ctl::stats::active::read().ok()? as u64;
        let resident = tikv_jemalloc_ctl::stats::resident::read().ok()? as u64;
        Some([allocated, active, resident])
    }
}

impl Collector for JemallocStats {
    fn collect(&self, out: &mut Collection) {
        if let Some([allocated, active, resident]) = Self::read() {
            out.push(&names::JEMALLOC_ALLOCATED_BYTES, &[], allocated as f64);
            out.push(&names::JEMALLOC_ACTIVE_BYTES, &[], active as f64);
            out.push(&names::JEMALLOC_RESIDENT_BYTES, &[], resident as f64);
        }
    }

    fn snapshot(&self, out: &mut Sections) {
        if let Some([allocated, active, resident]) = Self::read() {
            out.push(
                "heap",
                serde_json::json!({
                    "allocated_bytes": allocated,
                    "active_bytes": active,
                    "resident_bytes": resident,
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "heap_v2/524288\n  t*: 3: 1572864 [9: 4718592]\n  t0: 3: 1572864 [9: 4718592]\n@ 0x10 0x20 0x30\n  t*: 2: 1048576 [6: 3145728]\n  t0: 2: 1048576 [6: 3145728]\n@ 0x11 0x21\n  t*: 1: 524288 [3: 1572864]\nMAPPED_LIBRARIES:\n55d1c0000000-55d1c0001000 r--p 00000000 08:01 1 /bin/x\n";

    #[test]
    fn parses_live_and_cumulative_counts() {
        let d = parse(DUMP).unwrap();
        assert_eq!(d.rate, 524_288.0);
        assert_eq!(d.sites.len(), 2);
        assert_eq!(d.sites[0].addrs, vec![0x10, 0x20, 0x30]);
        assert_eq!(d.sites[0].live_objects, 2.0);
        assert_eq!(d.sites[0].live_bytes, 1_048_576.0);
        assert_eq!(d.sites[0].total_objects, 6.0);
        assert_eq!(d.sites[1].total_bytes, 1_572_864.0);
        assert!(parse("nonsense\n").is_err());
        assert!(parse("heap_v2/1\n@ 0xzz\n").is_err());
    }

    #[test]
    fn unsampling_scales_small_objects_up_and_big_ones_barely() {
        // One sampled 64-byte object at a 512 KiB rate stands for ~8 193 of them.
        let (n, b) = unsample(1.0, 64.0, 524_288.0);
        assert!((8000..8400).contains(&n), "{n}");
        assert!((512_000..540_000).contains(&b), "{b}");
        // A 64 MiB object is always sampled.
        assert_eq!(unsample(1.0, 67_108_864.0, 524_288.0), (1, 67_108_864));
    }

    #[test]
    fn allocator_frames() {
        for f in [
            "prof_backtrace_impl",
            "_rjem_je_prof_backtrace",
            "_rjem_calloc",
            "malloc",
            "<tikv_jemallocator::Jemalloc as core::alloc::global::GlobalAlloc>::alloc_zeroed",
            "__rust_alloc_zeroed",
            "__rustc::__rust_alloc",
            "do_rallocx",
            "alloc::raw_vec::RawVecInner<A>::try_allocate_in",
            "<T as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "alloc::vec::from_elem",
        ] {
            assert!(allocator_frame(f), "{f}");
        }
        for f in [
            "heap_profile::hold_64mib",
            "std::collections::hash::map::HashMap<K,V,S>::insert",
            "main",
        ] {
            assert!(!allocator_frame(f), "{f}");
        }
    }
}
