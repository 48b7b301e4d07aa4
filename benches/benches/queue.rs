//! Queue throughput: perfkit's bounded queue against `tokio::sync::mpsc` and flume, moving
//! 1 M `u64` through capacity 1024, with perfkit's metrics on (counters, wait histogram).
//!
//! Shapes: `spsc` (one producer task) and `mpsc2` (two producer tasks, 500 k each), on a
//! `current_thread` runtime and on a 2-worker `multi_thread` runtime. Ids are
//! `<impl>/<shape>/<runtime>`. Goal: perfkit >= 1.0 x tokio_mpsc in all four shapes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const ITEMS: u64 = 1_000_000;
const CAPACITY: usize = 1024;

fn runtime(multi: bool) -> tokio::runtime::Runtime {
    if multi {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }
}

async fn perfkit_run(producers: u64) {
    let (tx, mut rx) = perfkit::queue::bounded::<u64>("bench", CAPACITY);
    for p in 0..producers {
        let tx = tx.clone();
        tokio::spawn(async move {
            for i in 0..ITEMS / producers {
                tx.send(p + i).await.unwrap();
            }
        });
    }
    drop(tx);
    let mut sum = 0u64;
    while let Some(v) = rx.recv().await {
        sum = sum.wrapping_add(v);
    }
    black_box(sum);
}

async fn tokio_run(producers: u64) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(CAPACITY);
    for p in 0..producers {
        let tx = tx.clone();
        tokio::spawn(async move {
            for i in 0..ITEMS / producers {
                tx.send(p + i).await.unwrap();
            }
        });
    }
    drop(tx);
    let mut sum = 0u64;
    while let Some(v) = rx.recv().await {
        sum = sum.wrapping_add(v);
    }
    black_box(sum);
}

async fn flume_run(producers: u64) {
    let (tx, rx) = flume::bounded::<u64>(CAPACITY);
    for p in 0..producers {
        let tx = tx.clone();
        tokio::spawn(async move {
            for i in 0..ITEMS / producers {
                tx.send_async(p + i).await.unwrap();
            }
        });
    }
    drop(tx);
    let mut sum = 0u64;
    while let Ok(v) = rx.recv_async().await {
        sum = sum.wrapping_add(v);
    }
    black_box(sum);
}

fn queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Elements(ITEMS));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));
    for (rt_name, multi) in [("current_thread", false), ("multi_thread", true)] {
        for (shape, producers) in [("spsc", 1u64), ("mpsc2", 2)] {
            let rt = runtime(multi);
            g.bench_function(format!("perfkit/{shape}/{rt_name}"), |b| {
                b.iter(|| rt.block_on(perfkit_run(producers)))
            });
            g.bench_function(format!("tokio_mpsc/{shape}/{rt_name}"), |b| {
                b.iter(|| rt.block_on(tokio_run(producers)))
            });
            g.bench_function(format!("flume/{shape}/{rt_name}"), |b| {
                b.iter(|| rt.block_on(flume_run(producers)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
