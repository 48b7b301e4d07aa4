//! `perfkit::alloc::Counting` installed as the global allocator: the heap series on
//! `/metrics` follow what the test allocates and frees, and counts from two threads add up.
//!
//! The counters are process-wide, and a test thread of the harness that is winding down
//! frees memory of its own, so the checks run as phases of a single test: no other test
//! thread is alive while a phase compares two readings.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Barrier;

use perfkit::alloc::{AllocStats, Counting};

#[global_allocator]
static A: Counting<System> = Counting::new(System);

const HELD: u64 = 16 << 20;
/// Room for what the render itself and the harness's main thread may allocate or free
/// between two readings.
const SLACK: u64 = 1 << 20;

/// The value of an unlabelled series in `/metrics` text.
fn scrape(name: &str) -> u64 {
    let text = perfkit::metrics::render();
    let prefix = format!("{name} ");
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"));
    let value: f64 = value.parse().expect("a number");
    value as u64
}

fn stats() -> AllocStats {
    perfkit::alloc::stats().expect("the counting allocator is installed")
}

#[test]
fn heap_counting() {
    metrics_follow_16_mib_held_and_freed();
    two_threads_count_every_pair();
    the_installed_allocator_is_usable_directly();
}

fn metrics_follow_16_mib_held_and_freed() {
    let text = perfkit::metrics::render();
    assert!(
        text.contains("# HELP perfkit_heap_allocated_bytes Live heap bytes, read at scrape time")
    );
    assert!(text.contains("# TYPE perfkit_heap_allocated_bytes gauge\n"));
    assert!(text.contains("# TYPE perfkit_heap_allocations_total counter\n"));
    drop(text);

    let live_before = scrape("perfkit_heap_allocated_bytes");
    let allocations_before = scrape("perfkit_heap_allocations_total");

    let held = black_box(vec![0xA5u8; HELD as usize]);
    let live_held = scrape("perfkit_heap_allocated_bytes");
    let allocations_held = scrape("perfkit_heap_allocations_total");
    assert!(
        live_held >= live_before + HELD,
        "live bytes grew from {live_before} to {live_held}, less than 16 MiB"
    );
    assert!(allocations_held > allocations_before);

    assert_eq!(held[HELD as usize - 1], 0xA5);
    drop(held);
    let live_after = scrape("perfkit_heap_allocated_bytes");
    assert!(
        live_after < live_before + SLACK,
        "live bytes did not drop back: {live_before} before, {live_held} held, {live_after} after"
    );
    assert!(live_held - live_after >= HELD - SLACK);

    // The snapshot carries the same figures.
    let snap = perfkit::metrics::registry().snapshot();
    assert_eq!(snap["heap"]["source"], "counting", "{snap}");
    assert_eq!(
        snap["heap"]["allocated_bytes"],
        snap["heap"]["counting"]["allocated_bytes"]
    );
    let heap = &snap["heap"]["counting"];
    assert!(heap["allocations_total"].as_u64().unwrap() >= allocations_held);
    assert!(heap["allocated_bytes"].as_u64().unwrap() < live_before + SLACK);
}

fn two_threads_count_every_pair() {
    const PAIRS: u64 = 100_000;
    const SIZE: usize = 96;
    let before = stats();
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                barrier.wait();
                let layout = Layout::from_size_align(SIZE, 16).unwrap();
                for _ in 0..PAIRS {
                    // SAFETY: non-zero size. The calls go through the global allocator, so
                    // the `Counting` static counts them.
                    let p = unsafe { std::alloc::alloc(black_box(layout)) };
                    assert!(!p.is_null());
                    // SAFETY: `p` came from `alloc(layout)`; freed once.
                    unsafe { std::alloc::dealloc(black_box(p), layout) };
                }
            });
        }
    });
    let after = stats();
    let allocations = after.allocations_total - before.allocations_total;
    let deallocations = after.deallocations_total - before.deallocations_total;
    let bytes = after.allocated_bytes_total - before.allocated_bytes_total;
    assert!(
        allocations >= 2 * PAIRS,
        "{allocations} allocations counted"
    );
    assert!(
        deallocations >= 2 * PAIRS,
        "{deallocations} deallocations counted"
    );
    assert!(bytes >= 2 * PAIRS * SIZE as u64, "{bytes} bytes counted");
    // Only thread start-up and the harness allocate besides the pairs.
    assert!(
        allocations < 2 * PAIRS + 1_000,
        "{allocations} allocations counted"
    );
    let live_drift = after.allocated_bytes.abs_diff(before.allocated_bytes);
    assert!(live_drift < SLACK, "live bytes moved by {live_drift}");
}

fn the_installed_allocator_is_usable_directly() {
    let before = stats();
    let layout = Layout::from_size_align(4096, 4096).unwrap();
    // SAFETY: non-zero size.
    let p = unsafe { A.alloc_zeroed(layout) };
    assert!(!p.is_null());
    assert_eq!(p.addr() % 4096, 0);
    // SAFETY: `p` came from `A.alloc_zeroed(layout)`; freed once.
    unsafe { A.dealloc(p, layout) };
    let after = stats();
    assert!(after.allocations_total > before.allocations_total);
    assert!(after.allocated_bytes_total - before.allocated_bytes_total >= 4096);
}
