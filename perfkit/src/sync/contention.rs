//! The contention profile behind `/debug/pprof/mutex`: sampled waits of the instrumented
//! locks and semaphores, by lock and by where the waiting caller was.
//!
//! On average one contended acquisition in [`mutex_profile_rate`] is recorded, with its
//! count and delay multiplied by the rate (so the profile estimates the true totals, as
//! Go's `SetMutexProfileFraction` profiles do). A recorded event costs a hash-map update
//! under a mutex, and — when perfkit is built with a profiler (`cpu-profiling` or
//! `heap-profiling`), which brings the symbolizer — a walk of the caller's stack, at most
//! [`MAX_DEPTH`] frames. Without a profiler the stack is the call site of `lock()` /
//! `acquire()` alone, taken from `#[track_caller]` at no cost.
//!
//! Memory is bounded: at most [`MAX_ENTRIES`] distinct (lock, stack) entries. Events past
//! that are counted in [`ContentionProfile::dropped`] and reported with the profile.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::panic::Location;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::loom::lock_unpoisoned as lock;

/// The sampling rate the contention profile starts with: one contended acquisition in 10.
pub const DEFAULT_MUTEX_PROFILE_RATE: u32 = 10;

/// Distinct (lock, stack) entries the profile keeps.
pub const MAX_ENTRIES: usize = 4_096;

/// Frames kept per stack.
pub const MAX_DEPTH: usize = 32;

static RATE: AtomicU32 = AtomicU32::new(DEFAULT_MUTEX_PROFILE_RATE);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Sets the contention profile's sampling rate and returns the previous one, like Go's
/// `runtime.SetMutexProfileFraction`: on average one contended acquisition in `rate` is
/// recorded; 0 turns recording off (what was recorded stays), 1 records every one. The
/// debug server's `Builder::mutex_profile_rate` sets it at start-up.
pub fn set_mutex_profile_rate(rate: u32) -> u32 {
    RATE.swap(rate, Ordering::Relaxed)
}

/// The contention profile's current sampling rate (see [`set_mutex_profile_rate`]).
pub fn mutex_profile_rate() -> u32 {
    RATE.load(Ordering::Relaxed)
}

std::thread_local! {
    static RNG: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A uniform draw in `0..n` (n > 0) from a per-thread xorshift generator.
fn draw(n: u32) -> u32 {
    RNG.with(|c| {
        let mut x = c.get();
        if x == 0 {
            // Seeded from the thread's cell address and the clock: any nonzero seed works.
            x = (c as *const _ as u64) ^ crate::clock::raw() | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.set(x);
        ((x >> 32) % u64::from(n)) as u32
    })
}

/// What one entry of the profile holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The lock's or semaphore's label.
    pub(crate) lock: String,
    /// `mutex`, `rwlock`, `blocking_mutex` or `semaphore`.
    pub(crate) kind: &'static str,
    /// Where the waiting caller called `lock()` / `acquire()`.
    pub(crate) site: &'static Location<'static>,
    /// Return addresses, innermost first (empty without a profiler built in).
    pub(crate) stack: Box<[usize]>,
    /// Contended acquisitions, scaled by the rate.
    pub(crate) count: u64,
    /// Nanoseconds waited, scaled by the rate.
    pub(crate) delay_nanos: u64,
}

#[derive(Default)]
struct Store {
    /// Entries by the hash of their key; collisions share a bucket.
    map: HashMap<u64, Vec<Entry>>,
    len: usize,
}

fn store() -> &'static Mutex<Store> {
    static STORE: std::sync::OnceLock<Mutex<Store>> = std::sync::OnceLock::new();
    STORE.get_or_init(Mutex::default)
}

fn key_hash(lock: &str, kind: &str, site: &Location<'_>, stack: &[usize]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    lock.hash(&mut h);
    kind.hash(&mut h);
    (site as *const Location<'_> as usize).hash(&mut h);
    stack.hash(&mut h);
    h.finish()
}

/// A contended acquisition the sampler picked, with the waiting caller's stack: taken
/// before the wait, so the stack walk overlaps the time the caller waits anyway instead of
/// lengthening the critical section that follows.
pub(crate) struct Sampled {
    stack: Box<[usize]>,
    rate: u32,
}

/// Draws whether this contended acquisition is sampled; if it is, walks the stack.
#[inline]
pub(crate) fn begin() -> Option<Sampled> {
    let rate = RATE.load(Ordering::Relaxed);
    if rate == 0 || (rate > 1 && draw(rate) != 0) {
        return None;
    }
    let mut frames = [0usize; MAX_DEPTH];
    let depth = capture(&mut frames);
    Some(Sampled {
        stack: frames[..depth].into(),
        rate,
    })
}

/// Adds a sampled acquisition that waited `nanos` to the profile, scaled by the rate it
/// was sampled at.
pub(crate) fn finish(
    sampled: Sampled,
    lock_label: &str,
    kind: &'static str,
    site: &'static Location<'static>,
    nanos: u64,
) {
    let Sampled { stack, rate } = sampled;
    let hash = key_hash(lock_label, kind, site, &stack);
    let scale = u64::from(rate);
    let mut s = lock(store());
    let Store { map, len } = &mut *s;
    let bucket = map.entry(hash).or_default();
    if let Some(e) = bucket.iter_mut().find(|e| {
        e.lock == lock_label && e.kind == kind && std::ptr::eq(e.site, site) && e.stack == stack
    }) {
        e.count = e.count.saturating_add(scale);
        e.delay_nanos = e.delay_nanos.saturating_add(nanos.saturating_mul(scale));
        return;
    }
    if *len >= MAX_ENTRIES {
        DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    *len += 1;
    bucket.push(Entry {
        lock: lock_label.to_owned(),
        kind,
        site,
        stack,
        count: scale,
        delay_nanos: nanos.saturating_mul(scale),
    });
}

/// Walks the caller's stack into `frames`, innermost first; returns the depth.
#[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
#[inline(never)]
fn capture(frames: &mut [usize; MAX_DEPTH]) -> usize {
    let mut depth = 0;
    backtrace::trace(|frame| {
        let ip = frame.ip() as usize;
        if ip == 0 {
            return false; // the end of the stack
        }
        frames[depth] = ip;
        depth += 1;
        depth < MAX_DEPTH
    });
    depth
}

#[cfg(not(any(feature = "cpu-profiling", feature = "heap-profiling")))]
fn capture(_: &mut [usize; MAX_DEPTH]) -> usize {
    0
}

#[cfg_attr(not(feature = "server"), allow(dead_code))]
/// The profile as it stands: every entry, the rate, and the events left out because the
/// profile was full.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContentionProfile {
    pub(crate) entries: Vec<Entry>,
    pub(crate) rate: u32,
    pub(crate) dropped: u64,
}

#[cfg_attr(not(feature = "server"), allow(dead_code))]
/// A copy of the profile, entries in a stable order (largest delay first).
pub(crate) fn snapshot() -> ContentionProfile {
    let mut entries: Vec<Entry> = lock(store())
        .map
        .values()
        .flat_map(|b| b.iter().cloned())
        .collect();
    entries.sort_by(|a, b| {
        b.delay_nanos
            .cmp(&a.delay_nanos)
            .then_with(|| a.lock.cmp(&b.lock))
            .then_with(|| a.stack.cmp(&b.stack))
    });
    ContentionProfile {
        entries,
        rate: mutex_profile_rate(),
        dropped: DROPPED.load(Ordering::Relaxed),
    }
}

#[cfg_attr(not(feature = "server"), allow(dead_code))]
impl ContentionProfile {
    /// What happened between `earlier` and `self`: entries that grew, by how much.
    pub(crate) fn since(mut self, earlier: &ContentionProfile) -> ContentionProfile {
        self.entries.retain_mut(|e| {
            if let Some(old) = earlier.entries.iter().find(|o| {
                o.lock == e.lock
                    && o.kind == e.kind
                    && std::ptr::eq(o.site, e.site)
                    && o.stack == e.stack
            }) {
                e.count = e.count.saturating_sub(old.count);
                e.delay_nanos = e.delay_nanos.saturating_sub(old.delay_nanos);
            }
            e.count > 0
        });
        self.dropped = self.dropped.saturating_sub(earlier.dropped);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_stay_in_range_and_hit_zero_about_once_in_n() {
        let n = 10;
        let zeros = (0..100_000).filter(|_| draw(n) == 0).count();
        assert!(
            (8_000..12_000).contains(&zeros),
            "{zeros} zeros in 100 000 draws of 0..10"
        );
        assert!((0..1000).all(|_| draw(3) < 3));
    }
}
