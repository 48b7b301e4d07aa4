//! The metrics core through its public API: cardinality cap, weakly held collectors,
//! percentile accuracy, exact counts under concurrency.

use std::sync::Arc;

use perfkit::metrics::{
    Collection, Collector, Histogram, OVERFLOW_LABEL, Registry, Sections, names,
};
use serde_json::json;

#[test]
fn label_sets_past_the_cap_go_to_overflow_and_are_counted() {
    let r = Registry::new();
    r.set_cardinality_cap(3);
    for q in ["a", "b", "c"] {
        r.counter(&names::QUEUE_ENQUEUED_TOTAL, &[q, "", ""]).inc();
    }
    // Existing label sets keep working at the cap.
    r.counter(&names::QUEUE_ENQUEUED_TOTAL, &["a", "", ""])
        .inc();
    for q in ["d", "e"] {
        r.counter(&names::QUEUE_ENQUEUED_TOTAL, &[q, "", ""])
            .add(10);
    }
    let text = r.render();
    assert!(
        text.contains("perfkit_queue_enqueued_total{queue=\"a\"} 2"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "perfkit_queue_enqueued_total{{queue=\"{OVERFLOW_LABEL}\"}} 20"
        )),
        "{text}"
    );
    assert!(!text.contains("queue=\"d\""), "{text}");
    assert!(
        text.contains("perfkit_metric_overflow_total{metric=\"perfkit_queue_enqueued_total\"} 2"),
        "{text}"
    );
    // Histograms are capped the same way, per family.
    for q in ["a", "b", "c", "d"] {
        r.histogram(&names::QUEUE_WAIT_SECONDS, &[q, "", ""])
            .record(1_000);
    }
    let text = r.render();
    assert!(
        text.contains(&format!(
            "perfkit_queue_wait_seconds_count{{queue=\"{OVERFLOW_LABEL}\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains("perfkit_metric_overflow_total{metric=\"perfkit_queue_wait_seconds\"} 1")
    );
}

#[test]
fn the_same_labels_return_the_same_series() {
    let r = Registry::new();
    let a = r.counter(&names::TASKS_SPAWNED_TOTAL, &["flusher"]);
    let b = r.counter(&names::TASKS_SPAWNED_TOTAL, &["flusher"]);
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
#[should_panic(expected = "expected 4 label values")]
fn wrong_label_count_panics_with_a_clear_message() {
    Registry::new().counter(&names::QUEUE_DROPPED_TOTAL, &["only-queue"]);
}

struct FakeQueue {
    name: &'static str,
    depth: f64,
}

impl Collector for FakeQueue {
    fn collect(&self, out: &mut Collection) {
        out.push(&names::QUEUE_DEPTH, &[self.name, "", ""], self.depth);
        out.push(&names::QUEUE_CAPACITY, &[self.name, "", ""], 100.0);
    }
    fn snapshot(&self, out: &mut Sections) {
        out.push("queues", json!({ "name": self.name, "depth": self.depth }));
    }
    fn inventory(&self, out: &mut Sections) {
        out.push("queues", json!({ "name": self.name, "capacity": 100 }));
    }
}

#[test]
fn collectors_are_pulled_at_scrape_time_and_vanish_when_dropped() {
    let r = Registry::new();
    let q = Arc::new(FakeQueue {
        name: "events",
        depth: 42.0,
    });
    let weak: std::sync::Weak<dyn Collector> = Arc::downgrade(&(q.clone() as Arc<dyn Collector>));
    r.register_collector(weak);
    let text = r.render();
    assert!(text.contains("# TYPE perfkit_queue_depth gauge"), "{text}");
    assert!(
        text.contains("perfkit_queue_depth{queue=\"events\"} 42"),
        "{text}"
    );
    assert_eq!(r.snapshot()["queues"][0]["depth"], 42.0);
    assert_eq!(r.inventory()["queues"][0]["capacity"], 100);
    drop(q);
    let text = r.render();
    assert!(!text.contains("perfkit_queue_depth"), "{text}");
    assert_eq!(r.snapshot()["queues"], json!([]));
}

#[test]
fn families_render_contiguously_with_one_header() {
    let r = Registry::new();
    r.counter(&names::QUEUE_ENQUEUED_TOTAL, &["b", "", ""])
        .inc();
    r.counter(&names::QUEUE_ENQUEUED_TOTAL, &["a", "", ""])
        .inc();
    r.histogram(&names::BATCH_SIZE, &["db"]).record(500);
    let text = r.render();
    assert_eq!(
        text.matches("# TYPE perfkit_queue_enqueued_total counter")
            .count(),
        1
    );
    let a = text.find("queue=\"a\"").unwrap();
    let b = text.find("queue=\"b\"").unwrap();
    assert!(a < b, "series sorted by labels");
    assert!(
        text.contains("perfkit_batch_size_bucket{batcher=\"db\",le=\"500\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("perfkit_batch_size_bucket{batcher=\"db\",le=\"200\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("perfkit_batch_size_bucket{batcher=\"db\",le=\"+Inf\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("perfkit_batch_size_sum{batcher=\"db\"} 500"),
        "{text}"
    );
    assert!(
        text.contains("perfkit_batch_size_count{batcher=\"db\"} 1"),
        "{text}"
    );
}

/// Exact quantile by the same rank rule the snapshot uses: the ceil(q*n)-th smallest.
fn exact(sorted: &[u64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

/// xorshift64*: deterministic, dependency-free randomness.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn check_accuracy(name: &str, mut samples: Vec<u64>) {
    let h = Histogram::new(names::Unit::Seconds);
    for &v in &samples {
        h.record(v);
    }
    samples.sort_unstable();
    let snap = h.snapshot();
    assert_eq!(snap.count(), samples.len() as u64);
    for q in [0.5, 0.95, 0.99] {
        let want = exact(&samples, q) * 1e-9;
        let got = snap.quantile(q).unwrap();
        let err = (got - want).abs() / want;
        assert!(
            err <= 0.10,
            "{name} p{}: got {got}, exact {want}, error {err:.3}",
            q * 100.0
        );
    }
}

#[test]
fn percentiles_within_ten_percent_on_known_distributions() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let n = 200_000;
    // Uniform 100 µs .. 10 ms.
    let uniform = (0..n)
        .map(|_| 100_000 + (rng.unit() * 9_900_000.0) as u64)
        .collect();
    check_accuracy("uniform", uniform);
    // Bimodal: 90% around 200 µs, 10% around 50 ms.
    let bimodal = (0..n)
        .map(|_| {
            let jitter = 0.8 + 0.4 * rng.unit();
            if rng.unit() < 0.9 {
                (200_000.0 * jitter) as u64
            } else {
                (50_000_000.0 * jitter) as u64
            }
        })
        .collect();
    check_accuracy("bimodal", bimodal);
    // Long tail: Pareto with alpha 1.5 from 50 µs.
    let pareto = (0..n)
        .map(|_| (50_000.0 / (1.0 - rng.unit()).powf(1.0 / 1.5)) as u64)
        .collect();
    check_accuracy("pareto", pareto);
}

#[test]
fn two_threads_record_exact_counts() {
    let r = Registry::new();
    let c = r.counter(&names::HOT_PATH_CALLS_TOTAL, &["f", "m", "ok"]);
    let h = r.histogram(&names::HOT_PATH_SECONDS, &["f", "m"]);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for i in 0..1_000_000u64 {
                    c.inc();
                    h.record(i % 5_000);
                }
            });
        }
    });
    assert_eq!(c.get(), 2_000_000);
    let snap = h.snapshot();
    assert_eq!(snap.count(), 2_000_000);
    let expected_sum: u64 = 2 * (0..1_000_000u64).map(|i| i % 5_000).sum::<u64>();
    assert!((snap.sum() - expected_sum as f64 * 1e-9).abs() < 1e-6);
}

#[test]
fn a_tiny_cap_with_many_overflowing_families_does_not_recurse() {
    let r = Registry::new();
    r.set_cardinality_cap(1);
    for def in [
        &names::QUEUE_ENQUEUED_TOTAL,
        &names::QUEUE_REJECTED_TOTAL,
        &names::TASKS_SPAWNED_TOTAL,
    ] {
        for q in ["a", "b", "c"] {
            // Queue families also carry `pool` and `batcher`, left empty here.
            let labels: Vec<&str> = std::iter::once(q)
                .chain(std::iter::repeat_n("", def.labels.len() - 1))
                .collect();
            r.counter(def, &labels).inc();
        }
    }
    let text = r.render();
    for def in [
        "perfkit_queue_enqueued_total",
        "perfkit_queue_rejected_total",
        "perfkit_tasks_spawned_total",
    ] {
        assert!(
            text.contains(&format!(
                "perfkit_metric_overflow_total{{metric=\"{def}\"}} 2"
            )),
            "{text}"
        );
    }
}

#[test]
fn gauges_of_primitives_past_the_cap_merge_into_one_series() {
    struct Q(f64, f64);
    impl Collector for Q {
        fn collect(&self, out: &mut Collection) {
            out.push(&names::QUEUE_DEPTH, &[OVERFLOW_LABEL, "", ""], self.0);
            out.push(
                &names::QUEUE_OLDEST_AGE_SECONDS,
                &[OVERFLOW_LABEL, "", ""],
                self.1,
            );
        }
    }
    let r = Registry::new();
    let a: Arc<dyn Collector> = Arc::new(Q(3.0, 0.5));
    let b: Arc<dyn Collector> = Arc::new(Q(4.0, 2.0));
    r.register_collector(Arc::downgrade(&a));
    r.register_collector(Arc::downgrade(&b));
    let text = r.render();
    assert_eq!(text.matches("perfkit_queue_depth{").count(), 1, "{text}");
    assert!(
        text.contains("perfkit_queue_depth{queue=\"__overflow__\"} 7"),
        "sums: {text}"
    );
    assert!(
        text.contains("perfkit_queue_oldest_age_seconds{queue=\"__overflow__\"} 2"),
        "max: {text}"
    );
}

#[test]
fn counter_sum_adds_the_series_that_match() {
    let r = Registry::new();
    r.counter(&names::QUEUE_DROPPED_TOTAL, &["q", "", "", "full"])
        .add(3);
    r.counter(&names::QUEUE_DROPPED_TOTAL, &["q", "", "", "closed"])
        .add(4);
    r.counter(&names::QUEUE_DROPPED_TOTAL, &["p", "p", "", "full"])
        .add(5);
    let sum = |m: &[(&str, &str)]| r.counter_sum(&names::QUEUE_DROPPED_TOTAL, m);
    assert_eq!(sum(&[("queue", "q")]), 7);
    assert_eq!(sum(&[("queue", "p")]), 5);
    assert_eq!(sum(&[("reason", "full")]), 8);
    assert_eq!(sum(&[("pool", "p"), ("reason", "full")]), 5);
    assert_eq!(sum(&[]), 12);
    assert_eq!(sum(&[("queue", "none")]), 0);
    assert_eq!(sum(&[("no_such_label", "q")]), 0);
    assert_eq!(r.counter_sum(&names::TASKS_SPAWNED_TOTAL, &[]), 0);
}
