//! Heap accounting for services that keep their own allocator.
//!
//! [`Counting`] wraps any [`GlobalAlloc`] (the system allocator, jemalloc, mimalloc, ...) and
//! counts what passes through it: bytes handed out and given back, and the number of
//! allocations, deallocations and reallocations. The figures are read with [`stats`] and
//! exported on `/metrics` as `perfkit_heap_allocated_bytes` (live bytes, a gauge) and
//! `perfkit_heap_allocations_total` (a counter), and in the JSON snapshot's `heap` object.
//! Nothing is exported until a `Counting` allocator has served an allocation, so a service
//! that does not install one sees no heap series at all.
//!
//! # Examples
//! ```
//! #[global_allocator]
//! static ALLOC: perfkit::alloc::Counting<std::alloc::System> =
//!     perfkit::alloc::Counting::new(std::alloc::System);
//!
//! fn main() {
//!     let buf = vec![0u8; 1 << 20];
//!     let stats = perfkit::alloc::stats().expect("the counting allocator is installed");
//!     assert!(stats.allocated_bytes >= buf.len() as u64);
//!     assert!(stats.allocations_total >= 1);
//!
//!     // The same figures, as `/metrics` serves them.
//!     let text = perfkit::metrics::render();
//!     assert!(text.contains("perfkit_heap_allocated_bytes "));
//!     assert!(text.contains("perfkit_heap_allocations_total "));
//!     drop(buf);
//! }
//! ```
//!
//! # What is counted
//! * `alloc` and `alloc_zeroed` that succeed: `layout.size()` bytes allocated, one
//!   allocation.
//! * `dealloc`: `layout.size()` bytes freed, one deallocation.
//! * `realloc` that succeeds: the size difference only — growth is added to the bytes
//!   allocated, shrinkage to the bytes freed — and one reallocation. A reallocation is
//!   **not** counted as an allocation or a deallocation, even when the block moves: it
//!   resizes a block that already exists. So `allocations_total - deallocations_total` is
//!   the number of live blocks, and a `Vec` that grows by doubling counts one allocation
//!   and a reallocation per growth step.
//! * A failed call (a null pointer returned by the wrapped allocator) counts nothing.
//!
//! Sizes are the sizes requested in the [`Layout`], not what the wrapped allocator rounds
//! them up to, and memory the process obtains without going through the global allocator
//! (C libraries calling `malloc` themselves, `mmap`, thread stacks) is not seen. The
//! figures therefore sit below `process_resident_memory_bytes`; what they are good for is
//! telling whether the Rust heap keeps growing under load, and how fast the service
//! allocates.
//!
//! # Cost
//! Each call does the wrapped allocator's work plus two relaxed atomic adds on counters
//! that belong to the calling thread's shard (cache-padded, so threads on different cores do
//! not share a line). There is no lock, no shared hot counter, and no allocation: the
//! counting path never re-enters the allocator. `benches/benches/alloc.rs` measures it
//! against the bare wrapped allocator.
//!
//! # Non-guarantees
//! * The counters are process-wide: every `Counting` value in the process records into the
//!   same set. Install one, as the global allocator; a second instance (say, in a
//!   benchmark) adds to the same figures.
//! * [`stats`] sums the shards one after another while other threads keep allocating, so a
//!   reading taken under traffic can be off by the calls made during the read. Frees are
//!   read before allocations and the live figure is clamped at 0, so it never reads
//!   negative.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use serde::Serialize;

use crate::metrics::{Collection, Collector, Sections, names};

/// A [`GlobalAlloc`] that forwards every call to `A` and counts it.
///
/// See the [module documentation](self) for what is counted and what it costs.
///
/// # Examples
/// ```
/// use std::alloc::{GlobalAlloc, Layout, System};
///
/// use perfkit::alloc::Counting;
///
/// let alloc = Counting::new(System);
/// let layout = Layout::from_size_align(64, 8).unwrap();
/// // SAFETY: the layout has a non-zero size, and the block is freed with the same layout.
/// unsafe {
///     let p = alloc.alloc(layout);
///     assert!(!p.is_null());
///     alloc.dealloc(p, layout);
/// }
/// assert!(perfkit::alloc::stats().unwrap().allocations_total >= 1);
/// ```
#[derive(Debug, Default)]
pub struct Counting<A> {
    inner: A,
}

impl<A> Counting<A> {
    /// Wraps `inner`. A `const fn`, so it can initialise a `#[global_allocator]` static.
    pub const fn new(inner: A) -> Self {
        Counting { inner }
    }

    /// The wrapped allocator.
    pub const fn inner(&self) -> &A {
        &self.inner
    }
}

// SAFETY: every method forwards to `inner` with the caller's arguments unchanged and returns
// its result unchanged, so `Counting<A>` upholds exactly the contract `A` does. The counting
// around the calls touches only static atomics and a const-initialised thread-local without
// a destructor: it never allocates, never unwinds and never re-enters the allocator.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded under the caller's guarantees for `alloc`.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            record_alloc(layout.size());
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded under the caller's guarantees for `alloc_zeroed`.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            record_alloc(layout.size());
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded under the caller's guarantees for `dealloc`: `ptr` was allocated
        // by this allocator, hence by `inner`, with `layout`.
        unsafe { self.inner.dealloc(ptr, layout) };
        record_dealloc(layout.size());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded under the caller's guarantees for `realloc`.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            record_realloc(layout.size(), new_size);
        }
        p
    }
}

/// A reading of the counters of every [`Counting`] allocator in the process.
///
/// Byte figures are the sizes requested in each call's [`Layout`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AllocStats {
    /// Bytes allocated and not yet freed: `allocated_bytes_total - freed_bytes_total`,
    /// clamped at 0. Exported as `perfkit_heap_allocated_bytes`.
    pub allocated_bytes: u64,
    /// Successful `alloc` and `alloc_zeroed` calls. Exported as
    /// `perfkit_heap_allocations_total`.
    pub allocations_total: u64,
    /// `dealloc` calls.
    pub deallocations_total: u64,
    /// Successful `realloc` calls (counted neither as allocations nor as deallocations).
    pub reallocations_total: u64,
    /// Blocks allocated and not yet freed: `allocations_total - deallocations_total`,
    /// clamped at 0.
    pub live_allocations: u64,
    /// Bytes handed out since start: every allocation's size plus every reallocation's
    /// growth.
    pub allocated_bytes_total: u64,
    /// Bytes given back since start: every deallocation's size plus every reallocation's
    /// shrinkage.
    pub freed_bytes_total: u64,
}

/// The current counts, or `None` when no [`Counting`] allocator has served an allocation in
/// this process (none is installed).
///
/// The counters are summed over every shard at the time of the call; see the
/// [module documentation](self#non-guarantees) for how a reading taken under traffic can be
/// off.
pub fn stats() -> Option<AllocStats> {
    // Frees first: a block whose free is seen here was allocated earlier, so its allocation
    // is (almost always) seen by the second pass, and live figures err high, not negative.
    let mut freed = 0u64;
    let mut deallocations = 0u64;
    for s in &SHARDS {
        freed = freed.wrapping_add(s.freed_bytes.load(Ordering::Relaxed));
        deallocations = deallocations.wrapping_add(s.deallocations.load(Ordering::Relaxed));
    }
    let mut allocated = 0u64;
    let mut allocations = 0u64;
    let mut reallocations = 0u64;
    for s in &SHARDS {
        allocated = allocated.wrapping_add(s.allocated_bytes.load(Ordering::Relaxed));
        allocations = allocations.wrapping_add(s.allocations.load(Ordering::Relaxed));
        reallocations = reallocations.wrapping_add(s.reallocations.load(Ordering::Relaxed));
    }
    if allocations == 0 {
        return None;
    }
    Some(AllocStats {
        allocated_bytes: allocated.saturating_sub(freed),
        allocations_total: allocations,
        deallocations_total: deallocations,
        reallocations_total: reallocations,
        live_allocations: allocations.saturating_sub(deallocations),
        allocated_bytes_total: allocated,
        freed_bytes_total: freed,
    })
}

/// Adds the heap series to a scrape, when a counting allocator is in use.
/// The counting allocator's figures as a collector, registered with every registry
/// ([`crate::metrics::Registry::new`]): the `perfkit_heap_*` series and the snapshot's
/// `heap.counting` object when [`Counting`] is the global allocator.
#[derive(Debug)]
pub(crate) struct AllocCollector;

impl Collector for AllocCollector {
    fn collect(&self, out: &mut Collection) {
        collect(out);
    }

    fn snapshot(&self, out: &mut Sections) {
        let counting = snapshot();
        if !counting.is_null() {
            out.push("heap_counting", counting);
        }
    }
}

/// The live heap in bytes: the counting allocator's figure when it is the global allocator,
/// else jemalloc's `stats.allocated` when jemalloc serves the allocations (feature
/// `heap-profiling`); `None` with neither. The one figure behind
/// `perfkit_heap_allocated_bytes` and the snapshot's `heap.allocated_bytes`.
///
/// The counting allocator comes first because its use is certain (it saw the allocations),
/// while a jemalloc linked into the binary but not installed still reports its own few
/// internal kilobytes.
pub(crate) fn live_heap_bytes() -> Option<u64> {
    if let Some(s) = crate::alloc::stats() {
        return Some(s.allocated_bytes);
    }
    #[cfg(feature = "heap-profiling")]
    if let Some(a) = crate::profile::heap::jemalloc_allocated_bytes() {
        return Some(a);
    }
    None
}

pub(crate) fn collect(out: &mut Collection) {
    // One series for the live heap, whichever allocator reports it.
    if let Some(live) = live_heap_bytes() {
        out.push(&names::HEAP_ALLOCATED_BYTES, &[], live as f64);
    }
    if let Some(s) = stats() {
        out.push(
            &names::HEAP_ALLOCATIONS_TOTAL,
            &[],
            s.allocations_total as f64,
        );
    }
}

/// The snapshot's `heap.counting` object: the [`AllocStats`] fields, or `null` without a
/// counting allocator.
pub(crate) fn snapshot() -> serde_json::Value {
    stats()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(serde_json::Value::Null)
}

// ---- storage --------------------------------------------------------------------------------

/// log2 of the number of shards. Fixed at compile time: the metrics core sizes its shards
/// from `available_parallelism()`, which reads files and allocates, and nothing on this path
/// may allocate. 32 shards of one padded line each is 4 KiB of statics.
const SHARD_BITS: u32 = 5;
const SHARD_COUNT: usize = 1 << SHARD_BITS;

/// One shard's counters. All five sit on the same line: one thread updates them together.
/// Each is monotonic; live figures are differences taken at read time.
struct Shard {
    allocated_bytes: AtomicU64,
    freed_bytes: AtomicU64,
    allocations: AtomicU64,
    deallocations: AtomicU64,
    reallocations: AtomicU64,
}

impl Shard {
    const fn new() -> Self {
        Shard {
            allocated_bytes: AtomicU64::new(0),
            freed_bytes: AtomicU64::new(0),
            allocations: AtomicU64::new(0),
            deallocations: AtomicU64::new(0),
            reallocations: AtomicU64::new(0),
        }
    }
}

// Plain statics, not a lazily built structure: they exist before the first allocation of the
// process, and reading them needs no initialisation check.
static SHARDS: [CachePadded<Shard>; SHARD_COUNT] =
    [const { CachePadded::new(Shard::new()) }; SHARD_COUNT];

#[inline]
fn record_alloc(size: usize) {
    let s = &SHARDS[shard_index()];
    s.allocated_bytes.fetch_add(size as u64, Ordering::Relaxed);
    s.allocations.fetch_add(1, Ordering::Relaxed);
}

#[inline]
fn record_dealloc(size: usize) {
    let s = &SHARDS[shard_index()];
    s.freed_bytes.fetch_add(size as u64, Ordering::Relaxed);
    s.deallocations.fetch_add(1, Ordering::Relaxed);
}

#[inline]
fn record_realloc(old: usize, new: usize) {
    let s = &SHARDS[shard_index()];
    if new >= old {
        s.allocated_bytes
            .fetch_add((new - old) as u64, Ordering::Relaxed);
    } else {
        s.freed_bytes
            .fetch_add((old - new) as u64, Ordering::Relaxed);
    }
    s.reallocations.fetch_add(1, Ordering::Relaxed);
}

// ---- shard selection ------------------------------------------------------------------------
//
// A thread takes the next shard round-robin the first time it records and keeps it in a
// thread-local. The thread-local is const-initialised and holds a `Cell<usize>`, which has no
// destructor: on targets with native thread-locals std stores it as a plain `#[thread_local]`
// static, so reading it is one TLS load with no lazy-initialisation state, no destructor
// registration and no allocation. The assignment itself is a `fetch_add` on a static. None of
// this can call back into the allocator.
//
// On targets where std emulates thread-locals with OS keys (Android, OpenBSD, OpenHarmony,
// windows-gnu, x32, ...) the first access boxes the value — an allocation, which from inside
// the allocator would recurse. Those targets hash the address of a stack slot instead: thread
// stacks are far apart, so distinct threads mostly land on distinct shards, and one thread
// keeps to one or two shards while its call depth stays within a 64 KiB window. Any shard is
// correct; the choice only affects how often two threads share a cache line.

/// Splits items between targets on which std's `thread_local!` is backed by native TLS and
/// the others, with the target list written once.
macro_rules! if_native_tls {
    ({ $($native:item)* } else { $($emulated:item)* }) => {
        $(
            #[cfg(all(
                any(
                    target_os = "linux",
                    target_os = "freebsd",
                    target_os = "netbsd",
                    target_vendor = "apple",
                    all(windows, target_env = "msvc"),
                ),
                not(target_env = "ohos"),
                not(target_abi = "x32"),
                not(target_vendor = "win7"),
            ))]
            $native
        )*
        $(
            #[cfg(not(all(
                any(
                    target_os = "linux",
                    target_os = "freebsd",
                    target_os = "netbsd",
                    target_vendor = "apple",
                    all(windows, target_env = "msvc"),
                ),
                not(target_env = "ohos"),
                not(target_abi = "x32"),
                not(target_vendor = "win7"),
            )))]
            $emulated
        )*
    };
}

if_native_tls! {
    {
        static NEXT_SHARD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

        std::thread_local! {
            // usize::MAX: not assigned yet.
            static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
        }

        /// The calling thread's shard, in `0..SHARD_COUNT`.
        #[inline]
        fn shard_index() -> usize {
            SHARD
                .try_with(|cell| {
                    let idx = cell.get();
                    if idx != usize::MAX {
                        return idx;
                    }
                    let idx = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) & (SHARD_COUNT - 1);
                    cell.set(idx);
                    idx
                })
                // Unreachable for a const, destructor-free thread-local; kept so that no path
                // here can panic inside the allocator.
                .unwrap_or_else(|_| stack_shard())
                & (SHARD_COUNT - 1)
        }
    } else {
        /// The calling thread's shard, in `0..SHARD_COUNT`.
        #[inline]
        fn shard_index() -> usize {
            stack_shard()
        }
    }
}

/// A shard picked from the address of a slot on the calling thread's stack.
#[inline]
fn stack_shard() -> usize {
    let slot = 0u8;
    let addr = std::hint::black_box(&raw const slot).addr();
    // Fibonacci hashing of the 64 KiB window the slot lies in; the top bits are the best mixed.
    let h = (addr >> 16).wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize);
    h >> (usize::BITS - SHARD_BITS)
}

#[cfg(test)]
mod tests {
    use std::alloc::System;
    use std::sync::Mutex;

    use super::*;

    /// The counters are process-wide: tests that check exact deltas run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn lock() -> std::sync::MutexGuard<'static, ()> {
        SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now() -> AllocStats {
        stats().unwrap_or_default()
    }

    #[test]
    fn alloc_and_dealloc_are_counted() {
        let _g = lock();
        let a = Counting::new(System);
        let layout = Layout::from_size_align(1000, 8).unwrap();
        let before = now();
        // SAFETY: non-zero size; freed below with the same layout.
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        let mid = stats().expect("an allocation was counted");
        assert_eq!(mid.allocations_total - before.allocations_total, 1);
        assert_eq!(
            mid.allocated_bytes_total - before.allocated_bytes_total,
            1000
        );
        assert_eq!(mid.allocated_bytes, before.allocated_bytes + 1000);
        assert_eq!(mid.live_allocations, before.live_allocations + 1);
        // SAFETY: `p` came from `a.alloc(layout)`.
        unsafe { a.dealloc(p, layout) };
        let after = now();
        assert_eq!(after.deallocations_total - before.deallocations_total, 1);
        assert_eq!(after.freed_bytes_total - before.freed_bytes_total, 1000);
        assert_eq!(after.allocated_bytes, before.allocated_bytes);
        assert_eq!(after.live_allocations, before.live_allocations);
    }

    #[test]
    fn alloc_zeroed_is_counted_and_zeroed() {
        let _g = lock();
        let a = Counting::new(System);
        let layout = Layout::from_size_align(4096, 64).unwrap();
        let before = now();
        // SAFETY: non-zero size; freed below with the same layout.
        let p = unsafe { a.alloc_zeroed(layout) };
        assert!(!p.is_null());
        // SAFETY: `p` points to `layout.size()` initialised (zeroed) bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p, layout.size()) };
        assert!(bytes.iter().all(|&b| b == 0));
        let mid = now();
        assert_eq!(mid.allocations_total - before.allocations_total, 1);
        assert_eq!(mid.allocated_bytes, before.allocated_bytes + 4096);
        // SAFETY: `p` came from `a.alloc_zeroed(layout)`.
        unsafe { a.dealloc(p, layout) };
        assert_eq!(now().allocated_bytes, before.allocated_bytes);
    }

    #[test]
    fn realloc_counts_the_size_difference_and_no_allocation() {
        let _g = lock();
        let a = Counting::new(System);
        let layout = Layout::from_size_align(100, 8).unwrap();
        let before = now();
        // SAFETY: non-zero size.
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: `p` points at 100 writable bytes.
        unsafe { p.write_bytes(7, 100) };

        // SAFETY: `p` came from `a` with `layout`; the new size is non-zero.
        let p = unsafe { a.realloc(p, layout, 3000) };
        assert!(!p.is_null());
        // SAFETY: the block is 3000 bytes, so 99 is inside it.
        let last = unsafe { p.add(99) };
        // SAFETY: the first 100 bytes were copied over and are initialised.
        assert_eq!(unsafe { *last }, 7, "realloc keeps the contents");
        let grown = now();
        assert_eq!(grown.allocated_bytes, before.allocated_bytes + 3000);
        assert_eq!(grown.allocations_total - before.allocations_total, 1);
        assert_eq!(grown.reallocations_total - before.reallocations_total, 1);
        assert_eq!(grown.deallocations_total, before.deallocations_total);

        let big = Layout::from_size_align(3000, 8).unwrap();
        // SAFETY: `p` is the block of layout `big`; the new size is non-zero.
        let p = unsafe { a.realloc(p, big, 40) };
        assert!(!p.is_null());
        let shrunk = now();
        assert_eq!(shrunk.allocated_bytes, before.allocated_bytes + 40);
        assert_eq!(shrunk.reallocations_total - before.reallocations_total, 2);
        assert_eq!(shrunk.freed_bytes_total - before.freed_bytes_total, 2960);

        // SAFETY: `p` is the block, now 40 bytes; freed once.
        unsafe { a.dealloc(p, Layout::from_size_align(40, 8).unwrap()) };
        let after = now();
        assert_eq!(after.allocated_bytes, before.allocated_bytes);
        assert_eq!(after.live_allocations, before.live_allocations);
        assert_eq!(after.allocations_total - before.allocations_total, 1);
        assert_eq!(after.deallocations_total - before.deallocations_total, 1);
    }

    /// An allocator that always fails.
    struct Exhausted;

    // SAFETY: never hands out memory, so there is nothing to free.
    unsafe impl GlobalAlloc for Exhausted {
        unsafe fn alloc(&self, _: Layout) -> *mut u8 {
            std::ptr::null_mut()
        }
        unsafe fn dealloc(&self, _: *mut u8, _: Layout) {
            unreachable!("nothing was allocated");
        }
    }

    #[test]
    fn failed_calls_count_nothing() {
        let _g = lock();
        let a = Counting::new(Exhausted);
        let layout = Layout::from_size_align(64, 8).unwrap();
        let before = now();
        // SAFETY: non-zero size; the call fails, so nothing needs freeing.
        assert!(unsafe { a.alloc(layout) }.is_null());
        // SAFETY: as above.
        assert!(unsafe { a.alloc_zeroed(layout) }.is_null());
        // The default `realloc` allocates the new block first, which fails.
        let mut dummy = 0u64;
        let p = (&raw mut dummy).cast::<u8>();
        // SAFETY: `p` is valid for the layout given, and the call fails before touching it.
        assert!(unsafe { a.realloc(p, Layout::new::<u64>(), 128) }.is_null());
        assert_eq!(now(), before);
    }

    #[test]
    fn counts_from_several_threads_are_exact() {
        let _g = lock();
        const THREADS: u64 = 4;
        const PAIRS: u64 = 20_000;
        static A: Counting<System> = Counting::new(System);
        let before = now();
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                std::thread::spawn(|| {
                    let layout = Layout::from_size_align(48, 16).unwrap();
                    for _ in 0..PAIRS {
                        // SAFETY: non-zero size.
                        let p = unsafe { A.alloc(std::hint::black_box(layout)) };
                        assert!(!p.is_null());
                        // SAFETY: `p` came from `A.alloc(layout)`; freed once.
                        unsafe { A.dealloc(std::hint::black_box(p), layout) };
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let after = now();
        assert_eq!(
            after.allocations_total - before.allocations_total,
            THREADS * PAIRS
        );
        assert_eq!(
            after.deallocations_total - before.deallocations_total,
            THREADS * PAIRS
        );
        assert_eq!(
            after.allocated_bytes_total - before.allocated_bytes_total,
            THREADS * PAIRS * 48
        );
        assert_eq!(after.allocated_bytes, before.allocated_bytes);
    }

    #[test]
    fn a_thread_keeps_its_shard() {
        let first = shard_index();
        assert!(first < SHARD_COUNT);
        for _ in 0..100 {
            assert_eq!(shard_index(), first);
        }
        assert!(stack_shard() < SHARD_COUNT);
    }

    #[test]
    fn heap_series_are_rendered_once_counting() {
        let _g = lock();
        let a = Counting::new(System);
        let layout = Layout::from_size_align(256, 8).unwrap();
        // SAFETY: non-zero size; freed below with the same layout.
        let p = unsafe { a.alloc(layout) };
        let text = crate::metrics::Registry::new().render();
        // SAFETY: `p` came from `a.alloc(layout)`.
        unsafe { a.dealloc(p, layout) };
        assert!(text.contains("# TYPE perfkit_heap_allocated_bytes gauge\n"));
        assert!(text.contains("# TYPE perfkit_heap_allocations_total counter\n"));
        let live: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("perfkit_heap_allocated_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(live >= 256.0);
        let snap = crate::metrics::Registry::new().snapshot();
        assert!(
            snap["heap"]["counting"]["allocations_total"]
                .as_u64()
                .unwrap()
                >= 1
        );
        assert!(snap["heap"]["counting"]["allocated_bytes"].is_u64());
    }
}
