//! Memory stays bounded without scrapes: 10 M histogram records through perfkit's own
//! storage and through the `metrics` facade grow RSS by less than 16 MiB.
//!
//! The facade case is the one that needs perfkit's help: metrics-exporter-prometheus keeps
//! raw samples until upkeep, and perfkit's upkeep thread is what drains them.

use perfkit::metrics::{self, names};

const RECORDS: u64 = 10_000_000;
const LIMIT: u64 = 16 << 20;

fn rss() -> u64 {
    metrics::process_stats()
        .resident_memory_bytes
        .expect("RSS readable on this platform")
}

#[test]
fn ten_million_records_without_scrapes_stay_bounded() {
    metrics::facade::install().expect("install the facade recorder");
    let own = metrics::registry().histogram(&names::HOT_PATH_SECONDS, &["memory_test", "tests"]);
    let facade = ::metrics::histogram!("memory_test_latency_seconds");
    // Warm both paths so one-off allocations (series, first blocks) are not counted.
    for i in 0..10_000u64 {
        own.record(i);
        facade.record(i as f64 * 1e-9);
    }
    let before = rss();

    for i in 0..RECORDS {
        own.record(i & 0xFFFF);
    }
    let after_own = rss();

    for i in 0..RECORDS {
        facade.record((i & 0xFFFF) as f64 * 1e-9);
    }
    let after_facade = rss();

    let own_growth = after_own.saturating_sub(before);
    let facade_growth = after_facade.saturating_sub(after_own);
    eprintln!(
        "RSS growth: perfkit storage {} KiB, facade {} KiB",
        own_growth >> 10,
        facade_growth >> 10
    );
    assert!(
        own_growth < LIMIT,
        "perfkit storage grew RSS by {own_growth} bytes"
    );
    assert!(
        facade_growth < LIMIT,
        "facade grew RSS by {facade_growth} bytes"
    );
    assert_eq!(own.snapshot().count(), RECORDS + 10_000);
    // Upkeep drained the samples into the summary rather than dropping them. The exporter
    // loses a small share of samples recorded while a drain runs (a race inside
    // metrics-util's AtomicBucket, measured at ~0.2%; see docs/metrics.md), so the facade
    // count is checked against a 1% tolerance; perfkit's own storage is exact (above).
    let text = metrics::render();
    let line = text
        .lines()
        .find(|l| l.starts_with("memory_test_latency_seconds_count"))
        .unwrap_or_else(|| panic!("facade histogram missing: {text}"));
    let rendered: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let recorded = RECORDS + 10_000;
    eprintln!("facade histogram: recorded {recorded}, rendered count {rendered}");
    assert!(
        rendered <= recorded && rendered >= recorded - recorded / 100,
        "{rendered} of {recorded}"
    );
}
