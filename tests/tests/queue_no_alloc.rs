//! Steady-state receiving allocates nothing: 100 000 items through `Receiver::recv_many` and
//! through a batcher, counted by `perfkit::alloc::Counting` installed as the global
//! allocator.
//!
//! The allocator's counters are process-wide, so this binary holds a single test, and the
//! phases run one after the other in it.

use std::alloc::System;
use std::time::Duration;

use perfkit::alloc::Counting;
use perfkit::batch::{Batcher, Flush};
use perfkit::metrics::Registry;

#[global_allocator]
static A: Counting<System> = Counting::new(System);

const ITEMS: u64 = 100_000;

/// Allocations and reallocations so far.
fn allocations() -> u64 {
    let s = perfkit::alloc::stats().expect("the counting allocator is installed");
    s.allocations_total + s.reallocations_total
}

/// Adds up what it is given; allocates nothing.
struct Sum(u64);

impl Flush<u64> for Sum {
    type Error = std::convert::Infallible;
    async fn flush(&mut self, batch: &[u64]) -> Result<(), Self::Error> {
        self.0 += batch.iter().sum::<u64>();
        Ok(())
    }
}

/// Sends `n` items and takes them with `recv_many` in batches of up to 64, on one thread.
async fn through_recv_many(
    tx: &perfkit::queue::Sender<u64>,
    rx: &mut perfkit::queue::Receiver<u64>,
    buf: &mut Vec<u64>,
    n: u64,
) -> u64 {
    let mut sum = 0;
    let mut sent = 0;
    while sent < n {
        // Fill up to 64, then drain what is there.
        while sent < n && tx.try_send(sent).is_ok() {
            sent += 1;
        }
        buf.clear();
        rx.recv_many(buf, 64).await;
        sum += buf.iter().sum::<u64>();
    }
    while !rx.is_empty() {
        buf.clear();
        rx.recv_many(buf, 64).await;
        sum += buf.iter().sum::<u64>();
    }
    sum
}

#[test]
fn receiving_allocates_nothing_per_item() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = Registry::new();
    rt.block_on(async {
        // recv_many: warm up (per-thread cells, the receiver's scratch space), then count.
        let (tx, mut rx) = perfkit::queue::Builder::new("no-alloc", 256)
            .registry(&r)
            .build::<u64>()
            .unwrap();
        let mut buf = Vec::with_capacity(64);
        through_recv_many(&tx, &mut rx, &mut buf, 10_000).await;
        let before = allocations();
        let sum = through_recv_many(&tx, &mut rx, &mut buf, ITEMS).await;
        let during = allocations() - before;
        assert_eq!(sum, ITEMS * (ITEMS - 1) / 2);
        assert_eq!(
            during, 0,
            "{during} allocations for {ITEMS} items through recv_many"
        );

        // A batcher: items added, taken in batches of 100 and flushed.
        let batcher = Batcher::builder("no-alloc-batcher", Sum(0))
            .max_batch(100)
            .max_delay(Duration::from_secs(3600))
            .max_pending(1024)
            .registry(&r)
            .build()
            .unwrap();
        for i in 0..10_000 {
            batcher.add(i).await.unwrap();
        }
        while batcher.pending() > 0 {
            tokio::task::yield_now().await;
        }
        let before = allocations();
        for i in 0..ITEMS {
            batcher.add(i).await.unwrap();
        }
        while batcher.pending() > 0 {
            tokio::task::yield_now().await;
        }
        let during = allocations() - before;
        let report = batcher.close().await;
        assert_eq!(report.flushed, 10_000 + ITEMS);
        assert_eq!(
            during, 0,
            "{during} allocations for {ITEMS} items through a batcher"
        );
    });
}
