//! Fixed-size log-linear histograms on per-thread shards.
//!
//! Values are non-negative integers in the metric's recording unit (nanoseconds for
//! durations). Values below 16 get a bucket each; above that every power of two is split into
//! 8 equal buckets, so a bucket is at most 12.5% wide relative to its lower bound and a
//! quantile reported at the bucket's midpoint is within 6.25% of the true sample. The range
//! ends at 2^44 (about 4.9 hours in nanoseconds); larger values land in the last bucket.
//! Memory is fixed at construction: 336 buckets per shard, whatever the event rate.

use std::time::Duration;

use super::names::Unit;
use super::window::{SLOTS, Tick, Window};
use std::cell::Cell;
use std::marker::PhantomData;

use super::shard::{Node, Owned, current_shard, shard_count};
use crate::loom::{AtomicU64, Ordering};

const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this are exact.
const LINEAR: u64 = SUB * 2;
/// Exclusive upper bound of the exponent range; values at or above `1 << MAX_EXP` clamp.
const MAX_EXP: u32 = 44;
/// Number of internal buckets.
pub(crate) const BUCKETS: usize = (LINEAR + (MAX_EXP as u64 - SUB_BITS as u64 - 1) * SUB) as usize;

/// Internal bucket of a value.
#[inline]
pub(crate) fn bucket_index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let v = v.min((1u64 << MAX_EXP) - 1);
    let e = 63 - v.leading_zeros(); // SUB_BITS + 1 ..= MAX_EXP - 1
    let mantissa = (v >> (e - SUB_BITS)) & (SUB - 1);
    (LINEAR + u64::from(e - SUB_BITS - 1) * SUB + mantissa) as usize
}

/// Inclusive bounds `[low, high]` of an internal bucket, in the recording unit.
pub(crate) fn bucket_bounds(idx: usize) -> (u64, u64) {
    let idx = idx as u64;
    if idx < LINEAR {
        return (idx, idx);
    }
    let k = idx - LINEAR;
    let e = k / SUB + u64::from(SUB_BITS) + 1;
    let m = k % SUB;
    let width = 1u64 << (e - u64::from(SUB_BITS));
    let low = (SUB + m) * width;
    (low, low + width - 1)
}

/// The value reported for samples in a bucket: its midpoint.
fn bucket_value(idx: usize) -> f64 {
    let (lo, hi) = bucket_bounds(idx);
    (lo as f64 + hi as f64) / 2.0
}

#[repr(align(128))]
struct Shard {
    buckets: [AtomicU64; BUCKETS],
    sum: AtomicU64,
}

impl Shard {
    fn new() -> Self {
        Shard {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }
}

/// A histogram with fixed memory and lock-free recording.
///
/// Recording touches two cells of the calling thread's shard with relaxed atomic adds.
/// Reading ([`Histogram::snapshot`]) sums the shards; it may miss samples recorded
/// concurrently, and `sum` may briefly disagree with the bucket counts by those samples.
pub struct Histogram {
    shards: Box<[Shard]>,
    owned: Owned<Shard>,
    unit: Unit,
    /// Per-second differences for windows, from the first tick on (see [`super::window`]).
    window: std::sync::Mutex<Option<Box<HistWindow>>>,
}

impl Histogram {
    /// An empty histogram whose values are in `unit` (nanoseconds for [`Unit::Seconds`]).
    pub fn new(unit: Unit) -> Self {
        Histogram {
            shards: (0..shard_count()).map(|_| Shard::new()).collect(),
            owned: Owned::new(),
            unit,
            window: std::sync::Mutex::new(None),
        }
    }

    /// A recorder with a shard of its own, for one task or thread that records in a hot
    /// loop: only it writes that shard, so a record is plain loads and stores instead of two
    /// atomic read-modify-writes. Snapshots include its samples as they include any other;
    /// when it is dropped its shard keeps its samples and goes to the next recorder asked
    /// for. It can move between threads but not be shared by them. Each shard is about
    /// 2.7 KiB, and a histogram never holds more of them than recorders alive at once.
    pub fn local(&self) -> LocalHistogram<'_> {
        LocalHistogram {
            node: self.owned.claim(Shard::new),
            _not_sync: PhantomData,
        }
    }

    /// Records one value in the recording unit (nanoseconds for durations).
    #[inline]
    pub fn record(&self, value: u64) {
        let shard = &self.shards[current_shard()];
        shard.buckets[bucket_index(value)].fetch_add(1, Ordering::Relaxed);
        shard.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records a duration (saturating at `u64::MAX` nanoseconds).
    #[inline]
    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Records `value` as if it had been seen `n` times: one sample standing for `n` that
    /// were not measured (a sampled recorder weighting what it measured). `n == 0` records
    /// nothing.
    #[inline]
    pub fn record_n(&self, value: u64, n: u64) {
        if n == 0 {
            return;
        }
        let shard = &self.shards[current_shard()];
        shard.buckets[bucket_index(value)].fetch_add(n, Ordering::Relaxed);
        shard
            .sum
            .fetch_add(value.saturating_mul(n), Ordering::Relaxed);
    }

    /// The unit values are recorded in.
    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// Sums every shard into a point-in-time copy.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = vec![0u64; BUCKETS].into_boxed_slice();
        let mut sum = 0u64;
        for shard in self
            .shards
            .iter()
            .chain(self.owned.nodes().map(|n| &n.value))
        {
            for (acc, cell) in buckets.iter_mut().zip(shard.buckets.iter()) {
                *acc += cell.load(Ordering::Relaxed);
            }
            sum = sum.wrapping_add(shard.sum.load(Ordering::Relaxed));
        }
        HistogramSnapshot {
            count: buckets.iter().sum(),
            buckets,
            sum,
            unit: self.unit,
        }
    }
}

/// What was recorded in one second: `(bucket, count)` pairs of the buckets that changed.
type SecondDelta = Box<[(u16, u32)]>;

/// A histogram's per-second differences: what was recorded in each of the last 300 seconds,
/// as sparse `(bucket, count)` pairs, and the cumulative buckets at the last tick.
struct HistWindow {
    prev: Box<[u64]>,
    prev_sum: u64,
    slots: Box<[SecondDelta]>,
    sums: Box<[u64]>,
    /// Slots hold seconds `first..last`; what came after the tick at `last` is `now - prev`.
    first: u64,
    last: u64,
}

impl Histogram {
    /// Moves what was recorded since the previous tick into the slot of the second that
    /// ended (see [`super::window`]). A tick later than one second puts it in the last
    /// second it covers, so it is never missing from a short window.
    pub(crate) fn tick(&self, tick: &Tick) {
        let mut guard = crate::loom::lock_unpoisoned(&self.window);
        let now = self.snapshot();
        let w = guard.get_or_insert_with(|| {
            let empty: SecondDelta = Box::new([]);
            let mut w = Box::new(HistWindow {
                prev: vec![0u64; BUCKETS].into_boxed_slice(),
                prev_sum: 0,
                slots: vec![empty; SLOTS].into_boxed_slice(),
                sums: vec![0u64; SLOTS].into_boxed_slice(),
                first: tick.second.saturating_sub(1),
                last: tick.second.saturating_sub(1),
            });
            if !tick.ticking {
                // The first tick: what the histogram holds is its past, not the last second.
                w.prev.copy_from_slice(&now.buckets);
                w.prev_sum = now.sum;
                w.first = tick.second;
                w.last = tick.second;
            }
            w
        });
        if tick.second <= w.last {
            return;
        }
        let delta: SecondDelta = now
            .buckets
            .iter()
            .zip(w.prev.iter())
            .enumerate()
            .filter(|(_, (n, p))| n > p)
            .map(|(i, (n, p))| (i as u16, u32::try_from(n - p).unwrap_or(u32::MAX)))
            .collect();
        let sum = now.sum.wrapping_sub(w.prev_sum);
        let from = w.last.max(tick.second.saturating_sub(SLOTS as u64));
        for s in from..tick.second {
            let i = (s % SLOTS as u64) as usize;
            w.slots[i] = Box::new([]);
            w.sums[i] = 0;
        }
        let i = ((tick.second - 1) % SLOTS as u64) as usize;
        w.slots[i] = delta;
        w.sums[i] = sum;
        w.prev.copy_from_slice(&now.buckets);
        w.prev_sum = now.sum;
        w.last = tick.second;
    }

    /// What was recorded during `window`: its whole seconds and the current one so far.
    /// `None` when the histogram was never ticked (no registry holds it, or no debug server
    /// has run).
    pub fn window(&self, window: &Window) -> Option<HistogramSnapshot> {
        let guard = crate::loom::lock_unpoisoned(&self.window);
        let w = guard.as_ref()?;
        let now = self.snapshot();
        let mut buckets: Box<[u64]> = now
            .buckets
            .iter()
            .zip(w.prev.iter())
            .map(|(n, p)| n.saturating_sub(*p))
            .collect();
        let mut sum = now.sum.wrapping_sub(w.prev_sum);
        let from = window.first_second().max(w.first);
        for s in from..w.last {
            let i = (s % SLOTS as u64) as usize;
            for &(b, n) in w.slots[i].iter() {
                buckets[usize::from(b)] += u64::from(n);
            }
            sum = sum.wrapping_add(w.sums[i]);
        }
        Some(HistogramSnapshot {
            count: buckets.iter().sum(),
            buckets,
            sum,
            unit: self.unit,
        })
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot();
        f.debug_struct("Histogram")
            .field("unit", &self.unit)
            .field("count", &s.count)
            .finish()
    }
}

/// Records `value` into a shard only the caller writes: plain loads and stores.
#[inline]
fn record_single_writer(shard: &Shard, value: u64) {
    let bucket = &shard.buckets[bucket_index(value)];
    bucket.store(bucket.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    let sum = &shard.sum;
    sum.store(
        sum.load(Ordering::Relaxed).wrapping_add(value),
        Ordering::Relaxed,
    );
}

/// A single-writer recorder for a [`Histogram`]: see [`Histogram::local`].
pub struct LocalHistogram<'a> {
    node: &'a Node<Shard>,
    /// Send but not Sync: one writer at a time is what makes the plain stores sound.
    _not_sync: PhantomData<Cell<()>>,
}

impl LocalHistogram<'_> {
    /// Records one value in the recording unit (nanoseconds for durations).
    #[inline]
    pub fn record(&self, value: u64) {
        record_single_writer(&self.node.value, value);
    }

    /// Records a duration (saturating at `u64::MAX` nanoseconds).
    #[inline]
    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
}

impl Drop for LocalHistogram<'_> {
    fn drop(&mut self) {
        self.node.release();
    }
}

/// A [`LocalHistogram`] that holds its histogram alive instead of borrowing it, for a
/// holder that cannot keep a borrow (a queue's receiver). One writer, which can move between
/// threads.
pub(crate) struct ArcLocalHistogram {
    /// Keeps `node` alive.
    _histogram: std::sync::Arc<Histogram>,
    node: std::ptr::NonNull<Node<Shard>>,
}

// SAFETY: the shard is only written through this recorder, one thread at a time (the type
// is not `Sync`), and `_histogram` keeps it alive.
unsafe impl Send for ArcLocalHistogram {}

impl Histogram {
    /// A single-writer recorder that holds this histogram alive: see [`ArcLocalHistogram`].
    pub(crate) fn local_arc(self: &std::sync::Arc<Self>) -> ArcLocalHistogram {
        let node = self.owned.claim(Shard::new);
        ArcLocalHistogram {
            _histogram: self.clone(),
            node: std::ptr::NonNull::from(node),
        }
    }
}

impl ArcLocalHistogram {
    /// Records one value in the recording unit: plain loads and stores on its own shard.
    #[inline]
    pub(crate) fn record(&self, value: u64) {
        // SAFETY: `_histogram` keeps the node alive.
        record_single_writer(&unsafe { self.node.as_ref() }.value, value);
    }
}

impl Drop for ArcLocalHistogram {
    fn drop(&mut self) {
        // SAFETY: `_histogram` keeps the node alive until after this.
        unsafe { self.node.as_ref() }.release();
    }
}

impl std::fmt::Debug for LocalHistogram<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHistogram").finish_non_exhaustive()
    }
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Clone)]
pub struct HistogramSnapshot {
    buckets: Box<[u64]>,
    count: u64,
    sum: u64,
    unit: Unit,
}

impl HistogramSnapshot {
    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of recorded values, in the exported unit (seconds for durations).
    pub fn sum(&self) -> f64 {
        self.unit.export(self.sum as f64)
    }

    /// The `q`-quantile (`0.0..=1.0`) in the exported unit, or `None` when empty.
    ///
    /// The result is the midpoint of the bucket holding the sample of rank `ceil(q * count)`:
    /// exact below 16 recording units, within 6.25% of that sample above.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (idx, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(self.unit.export(bucket_value(idx)));
            }
        }
        None
    }

    /// Upper bound of the highest non-empty bucket, in the exported unit (within 12.5% above
    /// the true maximum), or `None` when empty.
    pub fn max(&self) -> Option<f64> {
        let idx = self.buckets.iter().rposition(|&n| n > 0)?;
        Some(self.unit.export(bucket_bounds(idx).1 as f64))
    }

    /// Mean of recorded values in the exported unit, or `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum() / self.count as f64)
    }

    /// Cumulative counts for Prometheus `le` bounds (exported unit), plus the `+Inf` count
    /// as the last element. A bucket is assigned by its midpoint, so a sample within one
    /// internal bucket width (12.5%) of a bound may be counted on the other side of it.
    pub fn cumulative(&self, bounds: &[f64]) -> Vec<u64> {
        let mut out = vec![0u64; bounds.len() + 1];
        let mut j = 0;
        for (idx, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let v = self.unit.export(bucket_value(idx));
            while j < bounds.len() && v > bounds[j] {
                j += 1;
            }
            out[j] += n;
        }
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
    }
}

impl HistogramSnapshot {
    /// The JSON shape every snapshot uses for a distribution: `count`, `sum`, `mean`,
    /// `p50`, `p95`, `p99` and `max` in the exported unit (`null` when empty).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count,
            "sum": self.sum(),
            "mean": self.mean(),
            "p50": self.quantile(0.5),
            "p95": self.quantile(0.95),
            "p99": self.quantile(0.99),
            "max": self.max(),
            "buckets": self.sparse_buckets(),
        })
    }

    /// The non-empty buckets as `[value, count]` pairs (the bucket's midpoint in the
    /// exported unit, and how many samples it holds), smallest first. Counts only grow, so
    /// the difference between two snapshots is the histogram of what was recorded between
    /// them: a window, whoever asks.
    pub fn sparse_buckets(&self) -> Vec<(f64, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(idx, &n)| (self.unit.export(bucket_value(idx)), n))
            .collect()
    }
}

impl std::fmt::Debug for HistogramSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistogramSnapshot")
            .field("count", &self.count)
            .field("sum", &self.sum())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn seconds_print_without_float_noise() {
        let h = Histogram::new(Unit::Seconds);
        h.record(46_880);
        // 46 880 ns times 1e-9 prints as 0.000046880000000000005.
        assert_eq!(h.snapshot().sum().to_string(), "0.00004688");
        h.record(3);
        assert_eq!(h.snapshot().sum().to_string(), "0.000046883");
    }

    #[test]
    fn buckets_cover_the_range_without_gaps() {
        assert_eq!(BUCKETS, 336);
        let mut expected_low = 0;
        for idx in 0..BUCKETS {
            let (lo, hi) = bucket_bounds(idx);
            assert_eq!(lo, expected_low, "bucket {idx}");
            assert!(hi >= lo);
            assert_eq!(bucket_index(lo), idx);
            assert_eq!(bucket_index(hi), idx);
            if lo >= LINEAR {
                assert!((hi - lo + 1) as f64 / lo as f64 <= 0.125 + 1e-12);
            }
            expected_low = hi + 1;
        }
        assert_eq!(expected_low, 1u64 << MAX_EXP);
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_uniform_range_are_within_tolerance() {
        let h = Histogram::new(Unit::Count);
        for v in 1..=100_000u64 {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100_000);
        for (q, exact) in [(0.5, 50_000.0), (0.95, 95_000.0), (0.99, 99_000.0)] {
            let got = s.quantile(q).unwrap();
            assert!(
                (got - exact).abs() / exact <= 0.0625,
                "q{q}: {got} vs {exact}"
            );
        }
        assert_eq!(s.sum(), (100_000u64 * 100_001 / 2) as f64);
    }

    #[test]
    fn small_values_are_exact_and_seconds_are_scaled() {
        let h = Histogram::new(Unit::Count);
        h.record(3);
        assert_eq!(h.snapshot().quantile(0.5), Some(3.0));
        let t = Histogram::new(Unit::Seconds);
        t.record_duration(Duration::from_millis(10));
        let got = t.snapshot().quantile(0.99).unwrap();
        assert!((got - 0.01).abs() / 0.01 < 0.0625, "{got}");
        assert!(
            Histogram::new(Unit::Count)
                .snapshot()
                .quantile(0.5)
                .is_none()
        );
    }

    #[test]
    fn cumulative_counts_are_monotone_and_end_at_count() {
        let h = Histogram::new(Unit::Count);
        for v in [1, 2, 2, 7, 50, 700, 5_000_000] {
            h.record(v);
        }
        let c = h.snapshot().cumulative(&[1.0, 2.0, 10.0, 1000.0]);
        assert_eq!(c, vec![1, 3, 4, 6, 7]);
    }

    #[test]
    fn local_recorders_show_in_snapshots_and_outlive_their_owner() {
        let h = Histogram::new(Unit::Seconds);
        h.record(1_000);
        {
            let local = h.local();
            local.record(2_000);
            local.record_duration(Duration::from_micros(3));
            let s = h.snapshot();
            assert_eq!((s.count, s.sum), (3, 6_000));
        }
        let s = h.snapshot();
        assert_eq!((s.count, s.sum), (3, 6_000));
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    let local = h.local();
                    for v in 0..1_000 {
                        local.record(v);
                    }
                });
            }
        });
        let s = h.snapshot();
        assert_eq!(s.count, 3 + 3_000);
        assert_eq!(s.sum, 6_000 + 3 * (0..1_000).sum::<u64>());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn loom_histogram_concurrent_records_are_all_counted() {
        // Each snapshot reads every bucket, and loom counts every load as a branch.
        let mut model = loom::model::Builder::new();
        model.max_branches = 50_000;
        model.check(|| {
            let h = Arc::new(Histogram::new(Unit::Count));
            let handles: Vec<_> = [3u64, 40]
                .into_iter()
                .map(|v| {
                    let h = Arc::clone(&h);
                    loom::thread::spawn(move || h.record(v))
                })
                .collect();
            for t in handles {
                t.join().unwrap();
            }
            let s = h.snapshot();
            assert_eq!(s.count(), 2);
            assert_eq!(s.sum(), 43.0);
            assert_eq!(s.quantile(0.5), Some(3.0));
        });
    }
}

#[cfg(all(test, not(loom)))]
mod window_tests {
    use super::*;

    fn tick(second: u64, ticking: bool) -> Tick {
        Tick {
            second,
            nanos: second * 1_000_000_000,
            ticking,
        }
    }

    fn window(seconds: u32, second: u64) -> Window {
        Window {
            seconds,
            second,
            nanos: second * 1_000_000_000,
        }
    }

    #[test]
    fn a_window_holds_what_was_recorded_in_its_seconds_only() {
        let h = Histogram::new(Unit::Seconds);
        assert!(h.window(&window(1, 0)).is_none(), "never ticked");
        for _ in 0..1000 {
            h.record(1_000); // the past: before windows started
        }
        h.tick(&tick(10, false));
        assert_eq!(h.window(&window(1, 10)).unwrap().count(), 0);
        h.record(5_000_000); // second 10
        h.tick(&tick(11, true));
        for _ in 0..3 {
            h.record(2_000); // second 11
        }
        h.tick(&tick(12, true));
        h.record(9_000); // second 12, in progress
        let w1 = h.window(&window(1, 12)).unwrap();
        assert_eq!(w1.count(), 4, "second 11 and the current one");
        let w2 = h.window(&window(2, 12)).unwrap();
        assert_eq!(w2.count(), 5);
        let max = w2.max().unwrap();
        assert!((0.005..0.006).contains(&max), "{max}");
        assert!((w2.sum() - (0.005 + 0.000_006 + 0.000_009)).abs() < 1e-12);
        // The lifetime p50 is the past's; the window's is its own.
        assert!(h.snapshot().quantile(0.5).unwrap() < 1.5e-6);
        assert!(w1.quantile(0.5).unwrap() > 1.5e-6);
        // Reading changes nothing.
        assert_eq!(h.window(&window(1, 12)).unwrap().count(), 4);
        // 300 s on, everything has left the window.
        h.tick(&tick(400, true));
        assert_eq!(
            h.window(&window(300, 400)).unwrap().count(),
            1,
            "the late tick keeps the last second's"
        );
        h.tick(&tick(401, true));
        assert_eq!(h.window(&window(1, 401)).unwrap().count(), 0);
        assert_eq!(h.window(&window(300, 401)).unwrap().count(), 1);
    }

    #[test]
    fn a_series_created_between_ticks_counts_in_the_last_second() {
        let h = Histogram::new(Unit::Count);
        h.record(3);
        h.tick(&tick(5, true));
        assert_eq!(h.window(&window(1, 5)).unwrap().count(), 1);
    }
}
