//! `perfkit::batch` under tokio's paused clock: triggers, retries, dead letters, shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use perfkit::batch::{Batcher, BuildError, Flush, Retry};
use perfkit::metrics::Registry;
use perfkit::queue::SendError;

/// Records every batch it is given; fails the first `fail_first` attempts (or all, with
/// `usize::MAX`); panics instead of failing when `panic` is set.
#[derive(Clone, Default)]
struct Sink {
    batches: Arc<Mutex<Vec<Vec<u32>>>>,
    attempts: Arc<AtomicUsize>,
    fail_first: usize,
    panic: bool,
}

impl Flush<u32> for Sink {
    type Error = String;
    async fn flush(&mut self, batch: &[u32]) -> Result<(), String> {
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        if attempt < self.fail_first {
            if self.panic {
                panic!("sink exploded on attempt {attempt}");
            }
            return Err(format!("sink unavailable (attempt {attempt})"));
        }
        self.batches.lock().unwrap().push(batch.to_vec());
        Ok(())
    }
}

impl Sink {
    fn flushed(&self) -> Vec<Vec<u32>> {
        self.batches.lock().unwrap().clone()
    }
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn size_trigger_then_shutdown_drain() {
    let r = Registry::new();
    let sink = Sink::default();
    let b = Batcher::builder("size", sink.clone())
        .max_batch(10)
        .max_delay(Duration::from_secs(3600))
        .registry(&r)
        .build()
        .unwrap();
    for i in 0..25 {
        b.add(i).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    let sizes: Vec<usize> = sink.flushed().iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10], "two size-triggered batches, 5 pending");
    assert_eq!(b.pending(), 5);
    let report = b.close().await;
    assert_eq!((report.flushed, report.batches, report.dropped), (25, 3, 0));
    assert_eq!(sink.flushed().concat(), (0..25).collect::<Vec<_>>());
    let text = r.render();
    assert_eq!(
        value(
            &text,
            "perfkit_batch_flushes_total{batcher=\"size\",trigger=\"size\",outcome=\"ok\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "perfkit_batch_flushes_total{batcher=\"size\",trigger=\"shutdown\",outcome=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&text, "perfkit_batch_size_count{batcher=\"size\"}"),
        3.0
    );
    assert_eq!(
        value(&text, "perfkit_batch_size_sum{batcher=\"size\"}"),
        25.0
    );
    assert_eq!(
        value(
            &text,
            "perfkit_batch_items_total{batcher=\"size\",outcome=\"flushed\"}"
        ),
        25.0
    );
    // The intake queue's series carry the batcher's name, for joins.
    assert_eq!(
        value(
            &text,
            "perfkit_queue_enqueued_total{queue=\"size\",batcher=\"size\"}"
        ),
        25.0
    );
    assert_eq!(
        b.add(99).await,
        Err(SendError::Closed(99)),
        "closed batchers refuse items"
    );
}

#[tokio::test(start_paused = true)]
async fn interval_trigger_flushes_a_partial_batch() {
    let r = Registry::new();
    let sink = Sink::default();
    let b = Batcher::builder("interval", sink.clone())
        .max_batch(100)
        .max_delay(Duration::from_secs(1))
        .registry(&r)
        .build()
        .unwrap();
    for i in 0..5 {
        b.add(i).await.unwrap();
    }
    // The batch is due max_delay after its first item was added, as the intake queue's clock
    // (real time) tells its age, less nothing here but the real time the flusher took to
    // pick it up: well under the 100 ms margin, even under valgrind.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(sink.flushed().is_empty(), "not before max_delay");
    tokio::time::sleep(Duration::from_millis(101)).await;
    assert_eq!(sink.flushed(), [vec![0, 1, 2, 3, 4]]);
    let text = r.render();
    assert_eq!(
        value(
            &text,
            "perfkit_batch_flushes_total{batcher=\"interval\",trigger=\"interval\",outcome=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&text, "perfkit_batch_pending{batcher=\"interval\"}"),
        0.0
    );
    b.close().await;
}

/// The interval counts from when the batch's first item was added, even when the flusher
/// only gets to it later (here: after a slow flush of the previous batch).
#[tokio::test]
async fn the_interval_counts_from_when_the_first_item_was_added() {
    /// Records when each flush started and ended, and takes 1.5 s.
    #[derive(Clone, Default)]
    struct Slow(Arc<Mutex<Vec<(std::time::Instant, std::time::Instant, usize)>>>);
    impl Flush<u32> for Slow {
        type Error = String;
        async fn flush(&mut self, batch: &[u32]) -> Result<(), String> {
            let started = std::time::Instant::now();
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            self.0
                .lock()
                .unwrap()
                .push((started, std::time::Instant::now(), batch.len()));
            Ok(())
        }
    }
    let sink = Slow::default();
    let b = Batcher::builder("due", sink.clone())
        .max_batch(10)
        .max_delay(Duration::from_secs(1))
        .registry(&Registry::new())
        .build()
        .unwrap();
    b.add(1).await.unwrap(); // flushed by the interval at ~1 s; the flush takes 1.5 s
    tokio::time::sleep(Duration::from_millis(1_250)).await;
    b.add(2).await.unwrap(); // waits in the intake while the flusher is busy
    // Both flushed by the interval: item 2 was due while the first flush ran.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sink.0.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = b.close().await;
    assert_eq!(report.flushed, 2);
    let flushes = sink.0.lock().unwrap().clone();
    assert_eq!(flushes.len(), 2, "{flushes:?}");
    // Item 2 was already due when the flusher got free: it is flushed at once, not a whole
    // max_delay (1 s) after the flusher took it. However slow the machine, the gap between
    // the first flush's end and the second's start is then a scheduling delay, far under the
    // 500 ms this allows.
    let gap = flushes[1].0.duration_since(flushes[0].1);
    assert!(
        gap < Duration::from_millis(500),
        "the second flush started {gap:?} after the first ended"
    );
}

#[tokio::test(start_paused = true)]
async fn failing_twice_then_succeeding_flushes_each_item_once() {
    let r = Registry::new();
    let sink = Sink {
        fail_first: 2,
        ..Sink::default()
    };
    let b = Batcher::builder("flaky", sink.clone())
        .max_batch(4)
        .retry(Retry::attempts(3).backoff(Duration::from_millis(100)))
        .registry(&r)
        .build()
        .unwrap();
    for i in 0..4 {
        b.add(i).await.unwrap();
    }
    let report = b.close().await;
    assert_eq!(
        sink.flushed(),
        [vec![0, 1, 2, 3]],
        "flushed once, no duplicates"
    );
    assert_eq!(sink.attempts.load(Ordering::SeqCst), 3);
    assert_eq!(
        (report.flushed, report.failed_attempts, report.dropped),
        (4, 2, 0)
    );
    let text = r.render();
    assert_eq!(
        value(
            &text,
            "perfkit_batch_flushes_total{batcher=\"flaky\",trigger=\"size\",outcome=\"err\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "perfkit_batch_flushes_total{batcher=\"flaky\",trigger=\"size\",outcome=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "perfkit_batch_flush_seconds_count{batcher=\"flaky\"}"
        ),
        3.0
    );
    assert_eq!(
        value(&text, "perfkit_batch_size_count{batcher=\"flaky\"}"),
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn always_failing_without_dead_letter_counts_the_drops() {
    let r = Registry::new();
    let sink = Sink {
        fail_first: usize::MAX,
        ..Sink::default()
    };
    let b = Batcher::builder("broken", sink.clone())
        .max_batch(3)
        .retry(Retry::attempts(2))
        .registry(&r)
        .build()
        .unwrap();
    for i in 0..7 {
        b.add(i).await.unwrap();
    }
    let report = b.close().await;
    assert_eq!(
        (report.flushed, report.dropped, report.dead_lettered),
        (0, 7, 0)
    );
    assert_eq!(report.failed_attempts, 6, "3 batches x 2 attempts");
    let text = r.render();
    assert_eq!(
        value(
            &text,
            "perfkit_queue_dropped_total{queue=\"broken\",batcher=\"broken\",reason=\"flush_failed\"}"
        ),
        7.0
    );
}

#[tokio::test(start_paused = true)]
async fn always_failing_with_dead_letter_hands_the_items_over() {
    let r = Registry::new();
    let sink = Sink {
        fail_first: usize::MAX,
        ..Sink::default()
    };
    let dead = Arc::new(Mutex::new(Vec::new()));
    let d = Arc::clone(&dead);
    let b = Batcher::builder("dlq", sink)
        .max_batch(5)
        .retry(Retry::attempts(3).backoff(Duration::from_millis(10)))
        .dead_letter(move |items: Vec<u32>, err: &str| {
            assert!(err.contains("sink unavailable"), "{err}");
            d.lock().unwrap().extend(items);
        })
        .registry(&r)
        .build()
        .unwrap();
    for i in 0..5 {
        b.add(i).await.unwrap();
    }
    let report = b.close().await;
    assert_eq!((report.dead_lettered, report.dropped), (5, 0));
    assert_eq!(*dead.lock().unwrap(), [0, 1, 2, 3, 4]);
    assert_eq!(r.snapshot()["batchers"][0]["dead_lettered"], 5);
    let text = r.render();
    for (outcome, n) in [("dead_lettered", 5.0), ("flushed", 0.0)] {
        let series = format!(
            "perfkit_batch_items_total{{batcher=\"{}\",outcome=\"{outcome}\"}}",
            r.snapshot()["batchers"][0]["name"].as_str().unwrap()
        );
        assert_eq!(value(&text, &series), n, "{series}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_flush_is_a_failed_attempt_not_a_dead_batcher() {
    let sink = Sink {
        fail_first: 1,
        panic: true,
        ..Sink::default()
    };
    let b = Batcher::builder("panicky", sink.clone())
        .max_batch(2)
        .registry(&Registry::new())
        .build()
        .unwrap();
    b.add(1).await.unwrap();
    b.add(2).await.unwrap();
    let report = b.close().await;
    assert_eq!((report.flushed, report.failed_attempts), (2, 1));
    assert_eq!(sink.flushed(), [vec![1, 2]]);
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_still_flushes_what_was_pending() {
    let sink = Sink::default();
    let b = Batcher::builder("dropped", sink.clone())
        .max_batch(100)
        .max_delay(Duration::from_secs(3600))
        .registry(&Registry::new())
        .build()
        .unwrap();
    let b2 = b.clone();
    b.add(1).await.unwrap();
    b2.add(2).await.unwrap();
    drop((b, b2));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(sink.flushed(), [vec![1, 2]]);
}

/// 1 000 events/s for 5 s into a batcher flushing every second with room for 100 000:
/// every event is flushed exactly once and the batch-size histogram counts every flush.
#[tokio::test(start_paused = true)]
async fn a_second_of_events_per_flush_for_five_seconds() {
    let r = Registry::new();
    let sink = Sink::default();
    let b = Batcher::builder("seed", sink.clone())
        .max_batch(100_000)
        .max_delay(Duration::from_secs(1))
        .max_pending(100_000)
        .registry(&r)
        .build()
        .unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for i in 0..5_000 {
        tick.tick().await;
        b.add(i).await.unwrap();
    }
    let report = b.close().await;
    let batches = sink.flushed();
    let mut all = batches.concat();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..5_000).collect::<Vec<_>>(),
        "every event exactly once"
    );
    assert_eq!(report.flushed, 5_000);
    assert!(
        (5..=7).contains(&batches.len()),
        "about one flush per second: {}",
        batches.len()
    );
    let text = r.render();
    assert_eq!(
        value(&text, "perfkit_batch_size_count{batcher=\"seed\"}"),
        batches.len() as f64
    );
    let snap = r.snapshot();
    assert_eq!(snap["batchers"].as_array().unwrap().len(), 1);
    assert_eq!(snap["batchers"][0]["flushed"], 5_000);
}

#[test]
fn bad_configurations_are_errors() {
    let e = Batcher::builder("nort", Sink::default())
        .build()
        .unwrap_err();
    assert!(matches!(e, BuildError::NoRuntime { .. }), "{e}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let e = Batcher::builder("zero", Sink::default())
            .max_batch(0)
            .build()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "batcher \"zero\": max_batch must be at least 1"
        );
        let e = Batcher::builder("zero", Sink::default())
            .max_pending(0)
            .build()
            .unwrap_err();
        assert!(matches!(e, BuildError::Queue(_)), "{e}");
        let e = Batcher::builder("zero", Sink::default())
            .retry(Retry::attempts(0))
            .build()
            .unwrap_err();
        assert!(matches!(e, BuildError::ZeroAttempts { .. }), "{e}");
        let e = Batcher::builder("zero", Sink::default())
            .max_delay(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(matches!(e, BuildError::ZeroMaxDelay { .. }), "{e}");
    });
}

#[tokio::test]
async fn inventory_names_the_build_site() {
    let r = Registry::new();
    let builder = Batcher::builder("inv", Sink::default()).registry(&r);
    let line = line!() + 1;
    let b = builder.build().unwrap();
    let inv = r.inventory();
    let entry = &inv["batchers"][0];
    assert_eq!(entry["max_batch"], 500);
    assert_eq!(entry["retry"]["attempts"], 3);
    assert_eq!(entry["source"], format!("{}:{line}", file!()));
    assert_eq!(
        inv["queues"][0]["name"], "inv",
        "the intake queue is listed too"
    );
    b.close().await;
}

/// A sink whose every flush waits forever, like a database that stopped answering.
struct Stuck;

impl Flush<u32> for Stuck {
    type Error = String;
    async fn flush(&mut self, _: &[u32]) -> Result<(), String> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_abandons_a_stuck_flush_at_its_deadline_and_counts_everything() {
    let r = Registry::new();
    let b = Batcher::builder("stuck", Stuck)
        .max_batch(10)
        .max_delay(Duration::from_millis(10))
        .registry(&r)
        .build()
        .unwrap();
    for i in 0..25 {
        b.add(i).await.unwrap();
    }
    // The flusher takes a batch of 10 and never comes back.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(b.pending(), 25);
    let started = tokio::time::Instant::now();
    let report = b.shutdown(Duration::from_secs(2)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "returned after {took:?}"
    );
    assert_eq!(report.abandoned, 25);
    assert_eq!(report.flushed, 0);
    assert_eq!(b.pending(), 0);
    assert_eq!(b.add(99).await, Err(SendError::Closed(99)));
    // The same report again, at once.
    assert_eq!(b.close().await, report);
    let text = r.render();
    assert_eq!(
        value(
            &text,
            "perfkit_queue_dropped_total{queue=\"stuck\",batcher=\"stuck\",reason=\"shutdown\"}"
        ),
        10.0,
        "the batch in the abandoned flush"
    );
    assert_eq!(
        value(
            &text,
            "perfkit_queue_dropped_total{queue=\"stuck\",batcher=\"stuck\",reason=\"closed\"}"
        ),
        15.0,
        "what was still in the intake queue"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_with_a_working_sink_flushes_everything_before_its_deadline() {
    let r = Registry::new();
    let sink = Sink::default();
    let b = Batcher::builder("prompt", sink.clone())
        .max_batch(10)
        .max_delay(Duration::from_secs(3600))
        .registry(&r)
        .build()
        .unwrap();
    for i in 0..25 {
        b.add(i).await.unwrap();
    }
    let report = b.shutdown(Duration::from_secs(5)).await;
    assert_eq!((report.flushed, report.abandoned), (25, 0));
    assert_eq!(sink.flushed().concat(), (0..25).collect::<Vec<_>>());
}
