//! Task spawning overhead: `perfkit::task::spawn` (name, counters, live-task registry,
//! outcome tracking) against plain `tokio::spawn`, 10 000 empty tasks spawned and awaited
//! per iteration on a 2-worker multi-thread runtime.
//!
//! Group `spawn`: ids `perfkit_task_spawn`, `tokio_spawn`. Goal: perfkit <= 1.15x the time.
//!
//! Group `pool`: 1 M tiny jobs (an async block around `black_box`) pushed through a
//! 2-worker multi-thread runtime and waited for:
//! * `perfkit_2w` — a `perfkit::pool` with 2 workers and a 1024-job queue (`submit`, handle
//!   dropped), then `shutdown` to wait for the drain;
//! * `async_channel_2w` — two worker tasks pulling boxed futures from one bounded(1024)
//!   async-channel;
//! * `tokio_spawn_semaphore64` — one `tokio::spawn` per job, at most 64 in flight.
//!
//! Goals: perfkit_2w >= 1.0x async_channel_2w and >= 2x tokio_spawn_semaphore64 throughput.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
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

const JOBS: u64 = 1_000_000;
const CAPACITY: usize = 1024;

type BoxJob = Pin<Box<dyn Future<Output = ()> + Send>>;

fn pool(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("pool");
    g.throughput(Throughput::Elements(JOBS));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("perfkit_2w", |b| {
        b.iter(|| {
            rt.block_on(async {
                let pool = perfkit::pool::Builder::new("bench-pool")
                    .workers(2)
                    .queue_capacity(CAPACITY)
                    .build()
                    .unwrap();
                for i in 0..JOBS {
                    let handle = pool
                        .submit(async move {
                            black_box(i);
                        })
                        .await
                        .unwrap();
                    drop(handle);
                }
                let report = pool.shutdown(Duration::from_secs(60)).await;
                assert!(report.drained, "{report:?}");
            })
        })
    });
    g.bench_function("async_channel_2w", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (tx, rx) = async_channel::bounded::<BoxJob>(CAPACITY);
                let workers: Vec<_> = (0..2)
                    .map(|_| {
                        let rx = rx.clone();
                        tokio::spawn(async move {
                            while let Ok(job) = rx.recv().await {
                                job.await;
                            }
                        })
                    })
                    .collect();
                drop(rx);
                for i in 0..JOBS {
                    tx.send(Box::pin(async move {
                        black_box(i);
                    }))
                    .await
                    .unwrap();
                }
                drop(tx);
                for w in workers {
                    w.await.unwrap();
                }
            })
        })
    });
    g.bench_function("tokio_spawn_semaphore64", |b| {
        b.iter(|| {
            rt.block_on(async {
                let permits = Arc::new(tokio::sync::Semaphore::new(64));
                for i in 0..JOBS {
                    let permit = permits.clone().acquire_owned().await.unwrap();
                    tokio::spawn(async move {
                        black_box(i);
                        drop(permit);
                    });
                }
                let _all = permits.acquire_many(64).await.unwrap();
            })
        })
    });
    g.finish();
}

criterion_group!(benches, spawn, pool);
criterion_main!(benches);
