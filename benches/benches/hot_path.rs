//! `#[hot_path]`'s cost per call, next to its baselines in the same group.
//!
//! Group `hot_path`: one call of a small function (a multiply and an xor behind
//! `black_box`, never inlined):
//! * `bare` — the function unannotated;
//! * `perfkit` — the same function under `#[hot_path]`;
//! * `two_clock_reads` — the clock perfkit uses (quanta's raw TSC reading), read twice;
//! * `metrics_cached_handle` — the bare function timed with two `std::time::Instant` reads
//!   into a cached `metrics::Histogram` handle, the Prometheus recorder installed globally
//!   (upkeep on a thread, so its sample buffer stays bounded).
//!
//! Group `hot_path_contended`: per-call time per thread of the annotated function, called
//! from 1 thread (`perfkit_1t`) and from 2 threads at once (`perfkit_2t`), same harness.
//!
//! Goals: `perfkit - bare <= 1.5 x two_clock_reads`, `perfkit <= 0.4 x
//! metrics_cached_handle`, `perfkit_2t <= 1.2 x perfkit_1t`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

#[inline(never)]
fn bare(x: u64) -> u64 {
    black_box(x).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 7
}

#[inline(never)]
#[perfkit::hot_path]
fn annotated(x: u64) -> u64 {
    black_box(x).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 7
}

fn hot_path(c: &mut Criterion) {
    perfkit_benches::install_prometheus_recorder();
    let histogram = metrics::histogram!("bench_hot_path_seconds");
    let clock = quanta::Clock::new();

    let mut g = c.benchmark_group("hot_path");
    let mut x = 0u64;
    g.bench_function("bare", |b| {
        b.iter(|| {
            x += 1;
            bare(x)
        })
    });
    g.bench_function("perfkit", |b| {
        b.iter(|| {
            x += 1;
            annotated(x)
        })
    });
    g.bench_function("two_clock_reads", |b| {
        b.iter(|| {
            let start = clock.raw();
            black_box(clock.raw().wrapping_sub(start))
        })
    });
    g.bench_function("metrics_cached_handle", |b| {
        b.iter(|| {
            x += 1;
            let start = Instant::now();
            let r = bare(x);
            histogram.record(start.elapsed());
            r
        })
    });
    g.finish();
}

/// Runs `iters` calls on each of `threads` threads started together; returns the slowest
/// thread's time, so the figure is the per-call time per thread.
fn per_thread(threads: usize, iters: u64) -> Duration {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                let mut acc = 0u64;
                for i in 0..iters {
                    acc = acc.wrapping_add(annotated(i ^ t as u64));
                }
                black_box(acc);
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
    let mut g = c.benchmark_group("hot_path_contended");
    g.bench_function("perfkit_1t", |b| {
        b.iter_custom(|iters| per_thread(1, iters))
    });
    g.bench_function("perfkit_2t", |b| {
        b.iter_custom(|iters| per_thread(2, iters))
    });
    g.finish();
}

criterion_group!(benches, hot_path, contended);
criterion_main!(benches);
