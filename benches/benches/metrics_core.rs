//! The metrics core's own overhead, each figure next to its baseline in the same group.
//!
//! * `record`: one record on a cached handle. `perfkit_counter` and `perfkit_histogram` are
//!   perfkit's sharded storage; `facade_histogram_cached` is a cached `metrics::Histogram`
//!   handle on the plain `metrics-exporter-prometheus` recorder (installed globally, upkeep on
//!   a thread so its raw-sample buffer stays bounded); `facade_histogram_perfkit` is the same
//!   through perfkit's upkeep-nudging recorder; `atomic_add` is one relaxed `fetch_add`.
//! * `render`: rendering 1 000 counter series (one label each) to Prometheus text, perfkit's
//!   registry (including its process metrics, as a real scrape does) vs the exporter.
//!
//! Goals: `perfkit_histogram <= 0.5 x facade_histogram_cached`,
//! `perfkit_1000_series <= 0.3 x exporter_1000_series`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::PrometheusBuilder;
use perfkit::metrics::{Registry, names};

/// The same mixed latencies (50 ns .. ~3 ms) for every histogram under test.
fn values() -> Vec<u64> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            50 + (x % 3_000_000)
        })
        .collect()
}

fn record(c: &mut Criterion) {
    let vals = values();
    let fvals: Vec<f64> = vals.iter().map(|&v| v as f64 * 1e-9).collect();
    let registry = Registry::new();
    let counter = registry.counter(&names::QUEUE_ENQUEUED_TOTAL, &["bench", "", ""]);
    let histogram = registry.histogram(&names::QUEUE_WAIT_SECONDS, &["bench", "", ""]);

    perfkit_benches::install_prometheus_recorder();
    let facade = metrics::histogram!("bench_facade_seconds");
    let (nudging, _nudging_handle) = perfkit::metrics::facade::build();
    let facade_perfkit =
        metrics::with_local_recorder(&nudging, || metrics::histogram!("bench_perfkit_seconds"));
    static ATOMIC: AtomicU64 = AtomicU64::new(0);

    let mut g = c.benchmark_group("record");
    g.bench_function("perfkit_counter", |b| b.iter(|| counter.inc()));
    let mut i = 0usize;
    g.bench_function("perfkit_histogram", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            histogram.record(black_box(vals[i]));
        })
    });
    g.bench_function("facade_histogram_cached", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            facade.record(black_box(fvals[i]));
        })
    });
    g.bench_function("facade_histogram_perfkit", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            facade_perfkit.record(black_box(fvals[i]));
        })
    });
    g.bench_function("atomic_add", |b| {
        b.iter(|| ATOMIC.fetch_add(black_box(1), Ordering::Relaxed))
    });
    g.finish();
}

fn render(c: &mut Criterion) {
    let registry = Registry::new();
    for i in 0..1000u64 {
        registry
            .counter(
                &names::QUEUE_ENQUEUED_TOTAL,
                &[&format!("queue-{i}"), "", ""],
            )
            .add(i * 7 + 1);
    }
    let exporter = PrometheusBuilder::new().build_recorder();
    let exporter_handle = exporter.handle();
    metrics::with_local_recorder(&exporter, || {
        metrics::describe_counter!(
            "perfkit_queue_enqueued_total",
            "Items accepted into the queue."
        );
        for i in 0..1000u64 {
            metrics::counter!("perfkit_queue_enqueued_total", "queue" => format!("queue-{i}"))
                .increment(i * 7 + 1);
        }
    });
    // Same series on both sides.
    let ours = registry.render();
    let theirs = exporter_handle.render();
    assert_eq!(ours.matches("perfkit_queue_enqueued_total{").count(), 1000);
    assert_eq!(
        theirs.matches("perfkit_queue_enqueued_total{").count(),
        1000
    );

    let mut g = c.benchmark_group("render");
    g.bench_function("perfkit_1000_series", |b| {
        b.iter(|| black_box(registry.render()))
    });
    g.bench_function("exporter_1000_series", |b| {
        b.iter(|| black_box(exporter_handle.render()))
    });
    g.finish();
}

criterion_group!(benches, record, render);
criterion_main!(benches);
