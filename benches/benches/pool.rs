//! Task spawning overhead: `perfkit::task::spawn` (name, counters, live-task registry,
//! outcome tracking) against plain `tokio::spawn`, 10 000 empty tasks spawned and awaited
//! per iteration on a 2-worker multi-thread runtime.
//!
//! Group `spawn`: ids `perfkit_task_spawn`, `tokio_spawn`. Goal: perfkit <= 1.15x the time.
//! (Group `pool` lands with the worker pool.)

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TASKS: u64 = 10_000;

fn spawn(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("spawn");
    g.throughput(Throughput::Elements(TASKS));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("perfkit_task_spawn", |b| {
        b.iter(|| {
            rt.block_on(async {
                let handles: Vec<_> = (0..TASKS)
                    .map(|i| perfkit::task::spawn("bench", async move { i }))
                    .collect();
                for h in handles {
                    h.await.unwrap();
                }
            })
        })
    });
    g.bench_function("tokio_spawn", |b| {
        b.iter(|| {
            rt.block_on(async {
                let handles: Vec<_> = (0..TASKS).map(|i| tokio::spawn(async move { i })).collect();
                for h in handles {
                    h.await.unwrap();
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, spawn);
criterion_main!(benches);
