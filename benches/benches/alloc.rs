//! `perfkit::alloc::Counting`'s cost per allocation, next to the allocator it wraps.
//!
//! Group `alloc`: one `alloc` and one `dealloc` of a 64-byte, 8-aligned layout, called
//! directly through `GlobalAlloc` with the pointer and layout behind `black_box`:
//! * `system` — on `std::alloc::System`;
//! * `counting` — the same on `Counting::new(System)`.
//!
//! Group `alloc_contended`: per-pair time per thread of the same pair, from 2 threads at
//! once (`system_2t`, `counting_2t`); each thread's figure is its own run's time, the
//! slowest thread's is reported.
//!
//! The bench binary keeps the default global allocator: both instances are called
//! directly, so the harness's own allocations do not pass through the counters.
//!
//! Goals: `counting <= 1.1 x system`, `counting_2t <= 1.1 x system_2t`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use perfkit::alloc::Counting;

static COUNTING: Counting<System> = Counting::new(System);

const LAYOUT: Layout = match Layout::from_size_align(64, 8) {
    Ok(l) => l,
    Err(_) => panic!("a valid layout"),
};

/// One allocation and its free through `a`.
#[inline(always)]
fn pair<A: GlobalAlloc>(a: &A) {
    let layout = black_box(LAYOUT);
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { a.alloc(layout) };
    assert!(!p.is_null());
    // SAFETY: `p` came from `a.alloc(layout)` and is freed once, with that layout.
    unsafe { a.dealloc(black_box(p), layout) };
}

fn single(c: &mut Criterion) {
    let mut g = c.benchmark_group("alloc");
    g.bench_function("system", |b| b.iter(|| pair(&System)));
    g.bench_function("counting", |b| b.iter(|| pair(&COUNTING)));
    g.finish();
}

/// Runs `iters` pairs on each of `threads` threads started together; returns the slowest
/// thread's time, so the figure is the per-pair time per thread.
fn per_thread<A: GlobalAlloc + Sync>(a: &'static A, threads: usize, iters: u64) -> Duration {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    pair(a);
                }
                start.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap_or_default()
}

fn contended(c: &mut Criterion) {
    static SYSTEM: System = System;
    let mut g = c.benchmark_group("alloc_contended");
    g.bench_function("system_2t", |b| {
        b.iter_custom(|iters| per_thread(&SYSTEM, 2, iters))
    });
    g.bench_function("counting_2t", |b| {
        b.iter_custom(|iters| per_thread(&COUNTING, 2, iters))
    });
    g.finish();
}

criterion_group!(benches, single, contended);
criterion_main!(benches);
