//! Batching throughput: perfkit's batcher against the hand-written equivalent, moving 1 M
//! `u64` in batches of 512 to a no-op flush, on a current-thread runtime.
//!
//! * `perfkit`: `Batcher` with `max_batch(512)`, intake bound 10 000, a long `max_delay` (so
//!   only the size trigger fires), metrics on; `close().await` flushes the tail.
//! * `hand_written`: a `tokio::sync::mpsc` channel of 10 000 and a consumer task filling a
//!   `Vec` and flushing it at 512.
//!
//! Goal: perfkit >= 0.9 x hand_written (throughput), i.e. time ratio <= 1.11.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use perfkit::batch::{Batcher, Flush};

const ITEMS: u64 = 1_000_000;
const MAX_BATCH: usize = 512;
const PENDING: usize = 10_000;

struct NoOp;

impl Flush<u64> for NoOp {
    type Error = std::convert::Infallible;
    async fn flush(&mut self, batch: &[u64]) -> Result<(), Self::Error> {
        black_box(batch);
        Ok(())
    }
}

async fn perfkit_run() {
    let b = Batcher::builder("bench", NoOp)
        .max_batch(MAX_BATCH)
        .max_pending(PENDING)
        .max_delay(Duration::from_secs(3600))
        .build()
        .unwrap();
    for i in 0..ITEMS {
        b.add(i).await.unwrap();
    }
    let report = b.close().await;
    assert_eq!(report.flushed, ITEMS);
}

async fn hand_written_run() {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(PENDING);
    let consumer = tokio::spawn(async move {
        let mut buf = Vec::with_capacity(MAX_BATCH);
        let mut flushed = 0u64;
        while let Some(v) = rx.recv().await {
            buf.push(v);
            if buf.len() == MAX_BATCH {
                black_box(&buf);
                flushed += buf.len() as u64;
                buf.clear();
            }
        }
        black_box(&buf);
        flushed + buf.len() as u64
    });
    for i in 0..ITEMS {
        tx.send(i).await.unwrap();
    }
    drop(tx);
    assert_eq!(consumer.await.unwrap(), ITEMS);
}

fn batch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(ITEMS));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("perfkit", |b| b.iter(|| rt.block_on(perfkit_run())));
    g.bench_function("hand_written", |b| {
        b.iter(|| rt.block_on(hand_written_run()))
    });
    g.finish();
}

criterion_group!(benches, batch);
criterion_main!(benches);
