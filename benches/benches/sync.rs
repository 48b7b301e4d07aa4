//! What perfkit's locks and semaphores cost over the types they wrap.
//!
//! Groups, each with its baseline:
//! * `lock_uncontended`: lock, add one, unlock on one thread — `parking_lot` (baseline)
//!   against `perfkit_blocking` (`perfkit::sync::blocking::Mutex`). Goal ≤ 1.3×.
//! * `async_lock_uncontended`: the same with `tokio` (baseline) against `perfkit`
//!   (`perfkit::sync::Mutex`), awaited on a current-thread runtime. Goal ≤ 1.3×.
//! * `semaphore`: acquire one permit and release it — `tokio` (baseline) against `perfkit`
//!   (`perfkit::sync::Semaphore`). Goal ≤ 1.2×.
//! * `lock_contended`: two threads taking turns on one `perfkit::sync::blocking::Mutex`,
//!   time per acquisition, with the contention profile off (`profile_off`, baseline) and at
//!   its default rate (`profile_default`). Goal ≤ 1.1×.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn lock_uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock_uncontended");
    let plain = parking_lot::Mutex::new(0u64);
    g.bench_function("parking_lot", |b| {
        b.iter(|| {
            *black_box(&plain).lock() += 1;
        })
    });
    let wrapped = perfkit::sync::blocking::Mutex::new("bench_blocking", 0u64);
    g.bench_function("perfkit_blocking", |b| {
        b.iter(|| {
            *black_box(&wrapped).lock() += 1;
        })
    });
    g.finish();
}

fn async_lock_uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("async_lock_uncontended");
    let rt = current_thread();
    let plain = tokio::sync::Mutex::new(0u64);
    g.bench_function("tokio", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    *black_box(&plain).lock().await += 1;
                }
                start.elapsed()
            })
        })
    });
    let wrapped = perfkit::sync::Mutex::new("bench_async", 0u64);
    g.bench_function("perfkit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    *black_box(&wrapped).lock().await += 1;
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

fn semaphore(c: &mut Criterion) {
    let mut g = c.benchmark_group("semaphore");
    let rt = current_thread();
    let plain = tokio::sync::Semaphore::new(8);
    g.bench_function("tokio", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    drop(black_box(black_box(&plain).acquire().await.unwrap()));
                }
                start.elapsed()
            })
        })
    });
    let wrapped = perfkit::sync::Semaphore::new("bench_semaphore", 8);
    g.bench_function("perfkit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    drop(black_box(black_box(&wrapped).acquire().await.unwrap()));
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

/// Steps of work inside the lock, and as many outside it.
const WORK: usize = 400;

/// Two threads each take the lock `iters / 2` times, doing a little work inside; the time
/// for all of it.
fn contend(lock: &Arc<perfkit::sync::blocking::Mutex<u64>>, iters: u64) -> Duration {
    let per_thread = iters.div_ceil(2);
    let start = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let lock = Arc::clone(lock);
            std::thread::spawn(move || {
                let mut outside = 0u64;
                for _ in 0..per_thread {
                    {
                        let mut g = lock.lock();
                        for _ in 0..WORK {
                            *g = black_box(g.wrapping_mul(31).wrapping_add(7));
                        }
                    }
                    // As much work outside, so the other thread is usually inside.
                    for _ in 0..WORK {
                        outside = black_box(outside.wrapping_mul(31).wrapping_add(7));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    start.elapsed()
}

fn lock_contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock_contended");
    let lock = Arc::new(perfkit::sync::blocking::Mutex::new("bench_contended", 0u64));
    g.bench_function("profile_off", |b| {
        let before = perfkit::sync::set_mutex_profile_rate(0);
        b.iter_custom(|iters| contend(&lock, iters));
        perfkit::sync::set_mutex_profile_rate(before);
    });
    g.bench_function("profile_default", |b| {
        let before =
            perfkit::sync::set_mutex_profile_rate(perfkit::sync::DEFAULT_MUTEX_PROFILE_RATE);
        b.iter_custom(|iters| contend(&lock, iters));
        perfkit::sync::set_mutex_profile_rate(before);
    });
    g.finish();
    // How contended the runs were: the goal only means something if most were.
    let text = perfkit::metrics::render();
    for line in text
        .lines()
        .filter(|l| l.starts_with("perfkit_lock_acquisitions_total{lock=\"bench_contended\""))
    {
        eprintln!("{line}");
    }
}

criterion_group!(
    benches,
    lock_uncontended,
    async_lock_uncontended,
    semaphore,
    lock_contended
);
criterion_main!(benches);
