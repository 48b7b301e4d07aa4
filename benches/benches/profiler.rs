//! What sampling CPU profiles costs the code being profiled.
//!
//! Group `profiler`: a CPU-bound stand-in for a service (two threads, each running a fixed
//! amount of integer work in a few nested calls, like a request handler would; one
//! iteration is 100 such calls per thread) with
//! * `off` — no profile running (the baseline);
//! * `sampling_99hz` — the same work while `perfkit::profile::CpuProfiler` samples at 99 Hz,
//!   the debug server's default; the profiler starts before and is finished (symbolized)
//!   after each measured batch, outside the timed region.
//!
//! Group `profiler_thread_churn`: the same work on two fresh threads per iteration (about
//! 2 000 thread creations a second), same two ids: what a workload that keeps creating
//! threads pays.
//!
//! Goal: `profiler/sampling_99hz <= 1.03 x profiler/off` (at most 3% throughput lost).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

#[inline(never)]
fn mix(mut x: u64, rounds: u32) -> u64 {
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

#[inline(never)]
fn handle(x: u64) -> u64 {
    let a = mix(x, 2_000);
    let b = mix(a ^ 0x5555, 3_000);
    black_box(a ^ b)
}

/// Two long-lived threads, like a service's runtime workers, each running `iters` units of
/// work (100 "requests") per call; returns the wall time of the slower one.
fn timed(iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            s.spawn(move || {
                let mut x = t + 1;
                for _ in 0..iters * 100 {
                    x = handle(x);
                }
                black_box(x)
            });
        }
    });
    start.elapsed()
}

/// The same work with two fresh threads per iteration: a workload that creates about 2 000
/// threads a second.
fn timed_churn(iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        std::thread::scope(|s| {
            for t in 0..2u64 {
                s.spawn(move || {
                    let mut x = t + 1;
                    for _ in 0..100 {
                        x = handle(x);
                    }
                    black_box(x)
                });
            }
        });
    }
    start.elapsed()
}

fn sampled(f: fn(u64) -> Duration) -> impl FnMut(u64) -> Duration {
    move |iters| {
        let p = perfkit::profile::CpuProfiler::start(99, 60).expect("start the CPU profiler");
        let elapsed = f(iters);
        black_box(p.finish().samples());
        elapsed
    }
}

fn profiler(c: &mut Criterion) {
    let mut g = c.benchmark_group("profiler");
    g.sample_size(30);
    g.bench_function("off", |b| b.iter_custom(timed));
    g.bench_function("sampling_99hz", |b| b.iter_custom(sampled(timed)));
    g.finish();

    let mut g = c.benchmark_group("profiler_thread_churn");
    g.sample_size(30);
    g.bench_function("off", |b| b.iter_custom(timed_churn));
    g.bench_function("sampling_99hz", |b| b.iter_custom(sampled(timed_churn)));
    g.finish();
}

criterion_group!(benches, profiler);
criterion_main!(benches);
