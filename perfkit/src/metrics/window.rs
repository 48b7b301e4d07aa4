//! Windows over the recent past that are the same for every reader.
//!
//! Once a second the registry *ticks* ([`super::Registry::tick`]): every histogram it holds
//! and every collector moves what happened during the seconds that ended into rings of
//! per-second slots, 300 of them. A reader asking for the last `N` seconds (1..=300) gets
//! the `N` whole seconds before the current one plus the current second so far, so a
//! window is between `N` and `N + 1` seconds long and polls `N` seconds apart leave no gap.
//! Reading changes nothing: two readers asking at the same moment get the same answer,
//! however many others poll and whenever they do.
//!
//! * [`WindowMax`] keeps a gauge's maximum per second. A gauge that perfkit sees change on
//!   its recording path (queue depth, requests in flight) raises a *peak* cell there, one
//!   relaxed load and a compare when the value is not a new peak; the tick moves the peak
//!   into the ring. A gauge read only at scrape time is sampled by the tick and by every
//!   read (a reading is an observation like any other: it never lowers what others see).
//! * [`WindowTotal`] keeps a cumulative total (busy time) at each tick, so a window's
//!   increase and its rate come from a difference.
//! * Histograms keep the per-second difference of their buckets, sparse (see
//!   `Histogram::window`).
//!
//! Memory per series, allocated at its first tick: 2.4 KiB per [`WindowMax`], 4.8 KiB per
//! [`WindowTotal`]; per histogram 9.7 KiB (the cumulative buckets at the last tick, 300
//! slot pointers and sums) plus 8 bytes per (second, bucket) that received samples
//! (typically tens of buckets a second; at worst all 336 every second, 790 KiB).
//!
//! The clock needs a ticker: the debug server ticks from its own thread just after every
//! second boundary, so windows keep moving when the service's runtime is saturated. A
//! service without a debug server can call [`super::Registry::tick`] from a timer of its
//! own; reads tick too, but then a window's seconds are only as fine as the reads.

use std::sync::Mutex;

use crate::loom::{AtomicU64, Ordering, lock_unpoisoned as lock};

/// The longest window a reader can ask for, in seconds, and the number of per-second slots.
pub const MAX_WINDOW_SECONDS: u32 = 300;
pub(crate) const SLOTS: usize = MAX_WINDOW_SECONDS as usize;

/// The window the `/metrics` `*_max_10s` gauges report, in seconds.
pub const METRICS_WINDOW_SECONDS: u32 = 10;

/// One tick of the registry's window clock.
#[derive(Debug, Clone, Copy)]
pub struct Tick {
    /// Whole seconds since the registry was created: the second that has just begun.
    pub(crate) second: u64,
    /// Nanoseconds since the registry was created, when the tick ran.
    pub(crate) nanos: u64,
    /// Whether the registry had ticked before: a series seen for the first time on a later
    /// tick was created since the previous one, so what it holds belongs to the last second.
    pub(crate) ticking: bool,
}

/// A window a reader asked for, resolved against the registry's clock.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Whole seconds asked for.
    pub(crate) seconds: u32,
    /// The registry's current second (the one in progress).
    pub(crate) second: u64,
    /// Nanoseconds since the registry was created, when the window was read.
    pub(crate) nanos: u64,
}

impl Window {
    /// The length asked for, in seconds.
    pub fn seconds(&self) -> u32 {
        self.seconds
    }

    /// The first whole second the window covers.
    pub(crate) fn first_second(&self) -> u64 {
        self.second.saturating_sub(u64::from(self.seconds))
    }
}

/// A gauge's maximum per second: see the module docs.
pub struct WindowMax {
    /// The largest value since the last tick.
    peak: AtomicU64,
    ring: Mutex<Option<Box<MaxRing>>>,
}

struct MaxRing {
    slots: [u64; SLOTS],
    /// Slots hold seconds `first..last`.
    first: u64,
    last: u64,
    /// The largest value ever moved into the ring.
    lifetime: u64,
}

impl WindowMax {
    /// An empty window.
    pub fn new() -> Self {
        WindowMax {
            peak: AtomicU64::new(0),
            ring: Mutex::new(None),
        }
    }

    /// The gauge reached `v`: raises the current second's peak. A relaxed load and a
    /// compare when `v` is not a new peak.
    #[inline]
    pub fn observe(&self, v: u64) {
        if v > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(v, Ordering::Relaxed);
        }
    }

    /// The largest value in the current second so far.
    #[inline]
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Moves the seconds that ended into the ring. `current` is the gauge's value now: the
    /// ended second's maximum includes it, and the next second starts from it.
    pub fn tick(&self, tick: &Tick, current: u64) {
        let mut ring = lock(&self.ring);
        let peak = self.peak.swap(current, Ordering::Relaxed).max(current);
        let ring = ring.get_or_insert_with(|| {
            Box::new(MaxRing {
                slots: [0; SLOTS],
                first: tick.second.saturating_sub(1),
                last: tick.second.saturating_sub(1),
                lifetime: 0,
            })
        });
        if tick.second <= ring.last {
            // Not a new second: keep the peak for it.
            self.peak.fetch_max(peak, Ordering::Relaxed);
            return;
        }
        // A late tick puts the peak in every second it covers: it happened in one of them.
        let from = ring.last.max(tick.second.saturating_sub(SLOTS as u64));
        for s in from..tick.second {
            ring.slots[(s % SLOTS as u64) as usize] = peak;
        }
        ring.last = tick.second;
        ring.lifetime = ring.lifetime.max(peak);
    }

    /// The maximum over `window`: its whole seconds in the ring and the current second so
    /// far.
    pub fn max(&self, window: &Window) -> u64 {
        let peak = self.peak.load(Ordering::Relaxed);
        let ring = lock(&self.ring);
        let Some(ring) = ring.as_ref() else {
            return peak;
        };
        let from = window.first_second().max(ring.first);
        (from..ring.last)
            .map(|s| ring.slots[(s % SLOTS as u64) as usize])
            .fold(peak, u64::max)
    }

    /// The maximum since the gauge was created (or first ticked, for sampled gauges).
    pub fn lifetime(&self) -> u64 {
        let peak = self.peak.load(Ordering::Relaxed);
        lock(&self.ring)
            .as_ref()
            .map_or(peak, |r| r.lifetime.max(peak))
    }
}

impl Default for WindowMax {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for WindowMax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowMax")
            .field("peak", &self.peak.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A cumulative total recorded at every tick: see the module docs.
pub struct WindowTotal {
    ring: Mutex<Option<Box<TotalRing>>>,
}

struct TotalRing {
    /// `(total, nanos)` at the tick that began each second, for seconds `first..=last`.
    slots: [(u64, u64); SLOTS + 1],
    first: u64,
    last: u64,
}

impl WindowTotal {
    /// An empty window.
    pub fn new() -> Self {
        WindowTotal {
            ring: Mutex::new(None),
        }
    }

    /// Records the total at this tick.
    pub fn tick(&self, tick: &Tick, total: u64) {
        let mut ring = lock(&self.ring);
        let ring = ring.get_or_insert_with(|| {
            Box::new(TotalRing {
                slots: [(total, tick.nanos); SLOTS + 1],
                first: tick.second,
                last: tick.second,
            })
        });
        if tick.second <= ring.last {
            return;
        }
        // Seconds a late tick skipped start where the previous tick left off: a difference
        // from one of them spans a little more time, and says so in its duration.
        let prev = ring.slots[(ring.last % (SLOTS as u64 + 1)) as usize];
        let from = (ring.last + 1).max(tick.second.saturating_sub(SLOTS as u64));
        for s in from..tick.second {
            ring.slots[(s % (SLOTS as u64 + 1)) as usize] = prev;
        }
        ring.slots[(tick.second % (SLOTS as u64 + 1)) as usize] = (total, tick.nanos);
        ring.last = tick.second;
    }

    /// The increase from the start of `window` to `now_total`, and the nanoseconds it took:
    /// `None` before the first tick.
    pub fn delta(&self, window: &Window, now_total: u64) -> Option<(u64, u64)> {
        let ring = lock(&self.ring);
        let ring = ring.as_ref()?;
        let s = window.first_second().clamp(ring.first, ring.last);
        let (total, at) = ring.slots[(s % (SLOTS as u64 + 1)) as usize];
        Some((
            now_total.saturating_sub(total),
            window.nanos.saturating_sub(at),
        ))
    }

    /// `delta` as a rate per second of window, divided by `per` (e.g. workers): the busy
    /// ratio of a busy-time total in nanoseconds. `None` before the first tick or over no
    /// time.
    pub fn ratio(&self, window: &Window, now_total: u64, per: f64) -> Option<f64> {
        let (d, nanos) = self.delta(window, now_total)?;
        (nanos > 0 && per > 0.0).then(|| (d as f64 / (nanos as f64 * per)).min(1.0))
    }
}

impl Default for WindowTotal {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for WindowTotal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowTotal").finish_non_exhaustive()
    }
}

/// `entry` with `window` added under `"window"`, when there is one.
pub(crate) fn attach(
    mut entry: serde_json::Value,
    window: Option<serde_json::Value>,
) -> serde_json::Value {
    if let (Some(w), Some(obj)) = (window, entry.as_object_mut()) {
        obj.insert("window".into(), w);
    }
    entry
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn tick(second: u64) -> Tick {
        Tick {
            second,
            nanos: second * 1_000_000_000,
            ticking: true,
        }
    }

    fn window(seconds: u32, second: u64) -> Window {
        Window {
            seconds,
            second,
            nanos: second * 1_000_000_000 + 500_000_000,
        }
    }

    #[test]
    fn a_peak_stays_in_windows_that_cover_its_second_and_leaves_later() {
        let g = WindowMax::new();
        g.tick(&tick(10), 0);
        g.observe(7);
        g.observe(3);
        g.tick(&tick(11), 1); // second 10 peaked at 7
        g.tick(&tick(12), 1);
        assert_eq!(g.max(&window(1, 12)), 1, "second 11 and the current one");
        assert_eq!(
            g.max(&window(2, 12)),
            7,
            "seconds 10, 11 and the current one"
        );
        assert_eq!(g.max(&window(300, 12)), 7);
        assert_eq!(g.lifetime(), 7);
        // 300 s later the peak has left every window.
        for s in 13..=312 {
            g.tick(&tick(s), 1);
        }
        assert_eq!(g.max(&window(300, 312)), 1);
        assert_eq!(g.lifetime(), 7);
    }

    #[test]
    fn readers_in_any_order_see_the_same_figures() {
        let g = WindowMax::new();
        g.tick(&tick(1), 0);
        g.observe(9);
        g.tick(&tick(2), 0);
        // Any number of reads, interleaved with observations below the peak, change nothing.
        let first: Vec<u64> = (1..=5).map(|n| g.max(&window(n, 2))).collect();
        for _ in 0..10 {
            g.observe(2);
            let again: Vec<u64> = (1..=5).rev().map(|n| g.max(&window(n, 2))).collect();
            assert_eq!(again.into_iter().rev().collect::<Vec<_>>(), first);
        }
        assert_eq!(first, vec![9; 5]);
    }

    #[test]
    fn a_late_tick_spreads_the_peak_over_the_seconds_it_skipped() {
        let g = WindowMax::new();
        g.tick(&tick(1), 0);
        g.observe(5);
        g.tick(&tick(4), 0);
        assert_eq!(g.max(&window(1, 4)), 5, "second 3 may hold it");
        for s in 5..=6 {
            g.tick(&tick(s), 0);
        }
        assert_eq!(g.max(&window(3, 6)), 5, "seconds 3, 4, 5");
        assert_eq!(g.max(&window(2, 6)), 0, "seconds 4, 5");
    }

    #[test]
    fn a_tick_for_the_same_second_keeps_the_peak() {
        let g = WindowMax::new();
        g.tick(&tick(1), 0);
        g.observe(4);
        g.tick(&tick(1), 0);
        assert_eq!(g.max(&window(1, 1)), 4);
    }

    /// Any sequence of observations, ticks and reads: a reader's answer is what a twin that
    /// was never read reports at the same point, so reads change nothing anyone sees.
    #[test]
    fn reads_in_any_interleaving_change_nothing() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..100 {
            let (read, twin) = (WindowMax::new(), WindowMax::new());
            let (hread, htwin) = (
                crate::metrics::Histogram::new(crate::metrics::names::Unit::Count),
                crate::metrics::Histogram::new(crate::metrics::names::Unit::Count),
            );
            let mut second = next(5);
            for _ in 0..400 {
                match next(4) {
                    0 => {
                        let v = next(1000);
                        read.observe(v);
                        twin.observe(v);
                        hread.record(v);
                        htwin.record(v);
                    }
                    1 => {
                        second += next(3);
                        let current = next(50);
                        for g in [&read, &twin] {
                            g.tick(&tick(second), current);
                        }
                        for h in [&hread, &htwin] {
                            h.tick(&tick(second));
                        }
                    }
                    2 => {
                        // Readers of the first one only, any window, any number.
                        for _ in 0..1 + next(3) {
                            let w = window(1 + next(300) as u32, second);
                            let _ = (read.max(&w), read.lifetime(), hread.window(&w));
                        }
                    }
                    _ => {
                        let w = window(1 + next(300) as u32, second);
                        assert_eq!(read.max(&w), twin.max(&w));
                        assert_eq!(read.lifetime(), twin.lifetime());
                        let (a, b) = (hread.window(&w), htwin.window(&w));
                        assert_eq!(a.as_ref().map(|h| h.count()), b.as_ref().map(|h| h.count()));
                        assert_eq!(
                            a.and_then(|h| h.quantile(0.99)),
                            b.and_then(|h| h.quantile(0.99))
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn totals_give_the_increase_and_its_duration() {
        let t = WindowTotal::new();
        assert_eq!(t.delta(&window(1, 0), 5), None);
        for s in 0..=10 {
            t.tick(&tick(s), s * 100);
        }
        // From the tick at second 8 to 10.5 s.
        let (d, nanos) = t.delta(&window(2, 10), 1_050).unwrap();
        assert_eq!((d, nanos), (250, 2_500_000_000));
        // A window longer than the history starts at the first tick.
        let (d, _) = t.delta(&window(300, 10), 1_050).unwrap();
        assert_eq!(d, 1_050);
        let r = t.ratio(&window(2, 10), 1_050, 1e-7).unwrap();
        assert!((r - 1.0).abs() < 1e-9, "{r}");
    }
}
