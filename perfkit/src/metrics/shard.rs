//! Per-thread cells: the storage under every perfkit counter and histogram.
//!
//! Each metric owns a small array of cache-padded cells, one per *shard*. A thread is
//! assigned a shard the first time it records (round-robin), and from then on it only ever
//! touches that shard's cells, so two threads on two cores do not fight over a cache line.
//! Readers sum every shard at scrape time. The recording path is one thread-local read and a
//! relaxed atomic add: no lock, no allocation, no map lookup.

use std::cell::Cell;
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

/// A monotonically increasing counter spread over per-thread shards.
pub struct Counter {
    cells: Box<[CachePadded<AtomicU64>]>,
}

impl Counter {
    /// A counter at zero.
    pub fn new() -> Self {
        Counter {
            cells: (0..shard_count())
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
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
            .fold(0u64, |acc, c| acc.wrapping_add(c.load(Ordering::Relaxed)))
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
