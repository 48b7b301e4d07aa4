//! Per-thread cells: the storage under every perfkit counter and histogram.
//!
//! Each metric owns a small array of cache-padded cells, one per *shard*. A thread is
//! assigned a shard the first time it records (round-robin), and from then on it only ever
//! touches that shard's cells, so two threads on two cores do not fight over a cache line.
//! Readers sum every shard at scrape time. The recording path is one thread-local read and a
//! relaxed atomic add: no lock, no allocation, no map lookup.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::OnceLock;

use crossbeam_utils::CachePadded;

use crate::loom::{AtomicU64, Ordering};

/// Number of shards every metric has. A power of two, twice the available parallelism,
/// between 4 and 64: enough that runtime workers rarely share a shard, small enough that a
/// histogram stays a few kilobytes per shard.
pub(crate) fn shard_count() -> usize {
    // Loom runs its threads on one OS thread, so they would share a shard anyway; one shard
    // keeps the model small and makes every loom thread contend on the same cells.
    if cfg!(loom) {
        return 1;
    }
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        (cores * 2).next_power_of_two().clamp(4, 64)
    })
}

// Shard assignment is not part of what loom checks (any assignment is correct; sharing a
// shard only costs speed), so it uses std's atomics and thread-locals even under loom.
static NEXT_SHARD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

std::thread_local! {
    // usize::MAX means "not yet assigned"; const-initialised so the hot path is a plain load.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling thread's shard, in `0..shard_count()`.
#[inline]
pub(crate) fn current_shard() -> usize {
    SHARD.with(|s| {
        let idx = s.get();
        if idx != usize::MAX {
            return idx;
        }
        assign_shard(s)
    })
}

#[cold]
fn assign_shard(cell: &Cell<usize>) -> usize {
    let idx = NEXT_SHARD.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & (shard_count() - 1);
    cell.set(idx);
    idx
}

/// Cells beyond the per-thread shards, each owned by at most one single-writer recorder at a
/// time ([`LocalCounter`], [`LocalHistogram`](super::LocalHistogram)).
///
/// An append-only list: a recorder claims a free cell or pushes a new one, and releases it
/// when dropped. A released cell keeps its value (readers go on summing it) and is handed to
/// the next recorder, which carries on adding to it. So the list never holds more cells than
/// there were recorders alive at once, and nothing is folded or lost when a recorder goes.
///
/// The list's own links use std's atomics even under loom (like shard assignment): claiming
/// a cell is not what the models check, only the values recorded in it.
pub(crate) struct Owned<T> {
    head: std::sync::atomic::AtomicPtr<Node<T>>,
}

pub(crate) struct Node<T> {
    pub(crate) value: T,
    taken: std::sync::atomic::AtomicBool,
    /// Written once before the node is published, read-only after.
    next: *mut Node<T>,
}

// SAFETY: `next` is written before the node is published with a release CAS and never
// again; everything else is `T` (shared by reference) and an atomic.
unsafe impl<T: Send + Sync> Send for Node<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Node<T> {}

impl<T> Owned<T> {
    pub(crate) const fn new() -> Self {
        Owned {
            head: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// Claims a released cell, or appends a new one made by `make`. The caller owns the
    /// cell until it calls [`Node::release`].
    pub(crate) fn claim(&self, make: impl FnOnce() -> T) -> &Node<T> {
        use std::sync::atomic::Ordering as O;
        for node in self.nodes() {
            if !node.taken.load(O::Relaxed)
                && node
                    .taken
                    .compare_exchange(false, true, O::Acquire, O::Relaxed)
                    .is_ok()
            {
                return node;
            }
        }
        let node = Box::into_raw(Box::new(Node {
            value: make(),
            taken: std::sync::atomic::AtomicBool::new(true),
            next: std::ptr::null_mut(),
        }));
        let mut head = self.head.load(O::Relaxed);
        loop {
            // SAFETY: `node` is not published yet; this thread is its only user.
            unsafe { (*node).next = head };
            match self
                .head
                .compare_exchange_weak(head, node, O::Release, O::Relaxed)
            {
                // SAFETY: nodes live until the list is dropped, which needs `&mut self`.
                Ok(_) => return unsafe { &*node },
                Err(now) => head = now,
            }
        }
    }

    /// Every cell, claimed or released.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = &Node<T>> {
        let mut next = self.head.load(std::sync::atomic::Ordering::Acquire);
        std::iter::from_fn(move || {
            // SAFETY: published nodes are never freed before the list is dropped.
            let node = unsafe { next.as_ref()? };
            next = node.next;
            Some(node)
        })
    }
}

impl<T> Node<T> {
    /// Hands the cell back for the next recorder; its value stays counted.
    pub(crate) fn release(&self) {
        self.taken
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        let mut next = *self.head.get_mut();
        while !next.is_null() {
            // SAFETY: `&mut self`: no recorder borrows a cell any more, and every node was
            // made by `Box::into_raw` in `claim`.
            let node = unsafe { Box::from_raw(next) };
            next = node.next;
        }
    }
}

/// A monotonically increasing counter spread over per-thread shards.
pub struct Counter {
    cells: Box<[CachePadded<AtomicU64>]>,
    owned: Owned<CachePadded<AtomicU64>>,
}

impl Counter {
    /// A counter at zero.
    pub fn new() -> Self {
        Counter {
            cells: (0..shard_count())
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            owned: Owned::new(),
        }
    }

    /// A recorder with a cell of its own, for one task or thread that adds in a hot loop.
    ///
    /// Only the recorder writes its cell, so an add is a plain load and store rather than an
    /// atomic read-modify-write (the locked instruction [`Counter::add`] costs). Readers see
    /// its adds as they see any other; when the recorder is dropped its cell keeps its value
    /// and goes to the next recorder asked for. The recorder can move between threads but
    /// not be shared by them.
    pub fn local(&self) -> LocalCounter<'_> {
        LocalCounter {
            node: self.owned.claim(|| CachePadded::new(AtomicU64::new(0))),
            _not_sync: PhantomData,
        }
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.cells[current_shard()].fetch_add(n, Ordering::Relaxed);
    }

    /// The current total, summed over every shard.
    ///
    /// Concurrent adds may or may not be included; the value never goes backwards between two
    /// calls from the same thread.
    pub fn get(&self) -> u64 {
        self.cells
            .iter()
            .chain(self.owned.nodes().map(|n| &n.value))
            .fold(0u64, |acc, c| acc.wrapping_add(c.load(Ordering::Relaxed)))
    }
}

/// A cell of a [`Counter`] that mirrors a total kept elsewhere (a queue's count of claims,
/// say), raised to that total whenever it is read: the hot path then pays nothing for the
/// counter. Whoever holds it must call [`SyncedCell::raise_to`] before the counter is read
/// (a collector, which runs before the registry reads counters) and once more at the end.
pub(crate) struct SyncedCell {
    /// Keeps `node` alive.
    _counter: std::sync::Arc<Counter>,
    node: std::ptr::NonNull<Node<CachePadded<AtomicU64>>>,
    /// What the cell held when claimed (a previous owner's count, which stays counted).
    base: u64,
}

// SAFETY: the node is shared through atomics only, and the `Arc` keeps it alive.
unsafe impl Send for SyncedCell {}
// SAFETY: as above; `raise_to` is a `fetch_max`, safe from any number of threads.
unsafe impl Sync for SyncedCell {}

impl Counter {
    /// A cell of this counter for a total kept elsewhere: see [`SyncedCell`].
    pub(crate) fn synced(self: &std::sync::Arc<Self>) -> SyncedCell {
        let node = self.owned.claim(|| CachePadded::new(AtomicU64::new(0)));
        SyncedCell {
            _counter: self.clone(),
            // The claim's acquire ordering made the previous owner's last write visible.
            base: node.value.load(Ordering::Relaxed),
            node: std::ptr::NonNull::from(node),
        }
    }
}

impl SyncedCell {
    /// Raises the cell so the counter includes `total`.
    pub(crate) fn raise_to(&self, total: u64) {
        // SAFETY: `self._counter` keeps the node alive.
        let node = unsafe { self.node.as_ref() };
        node.value
            .fetch_max(self.base.wrapping_add(total), Ordering::Relaxed);
    }
}

impl Drop for SyncedCell {
    fn drop(&mut self) {
        // SAFETY: as in `raise_to`.
        unsafe { self.node.as_ref() }.release();
    }
}

/// A single-writer recorder for a [`Counter`]: see [`Counter::local`].
pub struct LocalCounter<'a> {
    node: &'a Node<CachePadded<AtomicU64>>,
    /// Send but not Sync: one writer at a time is what makes the plain store sound.
    _not_sync: PhantomData<Cell<()>>,
}

impl LocalCounter<'_> {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        let c = &*self.node.value;
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

impl Drop for LocalCounter<'_> {
    fn drop(&mut self) {
        self.node.release();
    }
}

/// A [`LocalCounter`] that holds its counter alive instead of borrowing it, for a holder
/// that cannot keep a borrow (a queue's receiver). One writer, which can move between
/// threads.
pub(crate) struct ArcLocalCounter {
    /// Keeps `node` alive.
    _counter: std::sync::Arc<Counter>,
    node: std::ptr::NonNull<Node<CachePadded<AtomicU64>>>,
}

// SAFETY: the node is only written through this recorder, which `&mut`-free `add` keeps to
// one thread at a time (the type is not `Sync`), and `_counter` keeps it alive.
unsafe impl Send for ArcLocalCounter {}

impl Counter {
    /// A single-writer recorder that holds this counter alive: see [`ArcLocalCounter`].
    pub(crate) fn local_arc(self: &std::sync::Arc<Self>) -> ArcLocalCounter {
        let node = self.owned.claim(|| CachePadded::new(AtomicU64::new(0)));
        ArcLocalCounter {
            _counter: self.clone(),
            node: std::ptr::NonNull::from(node),
        }
    }
}

impl ArcLocalCounter {
    /// Adds `n`: a plain load and store on the recorder's own cell.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        // SAFETY: `_counter` keeps the node alive.
        let c = &*unsafe { self.node.as_ref() }.value;
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

impl Drop for ArcLocalCounter {
    fn drop(&mut self) {
        // SAFETY: `_counter` keeps the node alive until after this.
        unsafe { self.node.as_ref() }.release();
    }
}

impl std::fmt::Debug for LocalCounter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCounter")
            .field("cell", &self.node.value.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter")
            .field("value", &self.get())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn shard_count_is_a_power_of_two() {
        let n = shard_count();
        assert!(n.is_power_of_two() && (4..=64).contains(&n));
        assert!(current_shard() < n);
        assert_eq!(current_shard(), current_shard());
    }

    #[test]
    fn counter_sums_across_threads_exactly() {
        let c = Arc::new(Counter::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        c.inc();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 800_000);
    }
}

#[cfg(all(test, not(loom)))]
mod local_tests {
    use super::*;

    #[test]
    fn local_counters_add_to_the_total_and_hand_their_cells_on() {
        let c = Counter::new();
        c.add(5);
        {
            let a = c.local();
            let b = c.local();
            a.add(10);
            b.inc();
            assert_eq!(c.get(), 16);
        }
        // Both cells are free again and keep their values; a new recorder reuses one.
        assert_eq!(c.get(), 16);
        let again = c.local();
        again.add(100);
        assert_eq!(c.get(), 116);
        assert_eq!(c.owned.nodes().count(), 2);
    }

    #[test]
    fn local_counters_on_threads_sum_exactly() {
        let c = std::sync::Arc::new(Counter::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        let local = c.local();
                        for _ in 0..10_000 {
                            local.inc();
                        }
                        c.inc();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 4 * 10 * 10_001);
        assert!(c.owned.nodes().count() <= 4);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    #[test]
    fn loom_counter_concurrent_adds_are_all_counted() {
        loom::model(|| {
            let c = Arc::new(Counter::new());
            let handles: Vec<_> = (0..2)
                .map(|i| {
                    let c = Arc::clone(&c);
                    loom::thread::spawn(move || c.add(i + 1))
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(c.get(), 3);
        });
    }
}
