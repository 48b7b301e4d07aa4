//! `#[hot_path]` at run time: outcomes, in-flight accounting, exact counts under threads,
//! and the accuracy of the percentiles the snapshot reports.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use perfkit::hot_path;
use perfkit::metrics::names::Unit;
use perfkit::metrics::{Histogram, registry};

/// The `hot_paths` entry of the function labelled `function` (its snapshot `name`).
fn entry(function: &str) -> serde_json::Value {
    common::entry(&registry().snapshot(), "hot_paths", function)
}

#[hot_path]
fn hp_outcome(kind: u8) -> Result<u8, String> {
    match kind {
        0 => Ok(0),
        1 => Err("bad".to_owned()),
        _ => panic!("boom"),
    }
}

static HOLD: AtomicBool = AtomicBool::new(false);

#[hot_path]
async fn hp_async(wait: bool) -> u32 {
    if wait {
        std::future::pending::<()>().await;
    }
    while HOLD.load(Ordering::SeqCst) {
        tokio::task::yield_now().await;
    }
    1
}

#[test]
fn each_outcome_counts_once_and_in_flight_returns_to_zero() {
    assert_eq!(hp_outcome(0), Ok(0));
    assert!(hp_outcome(1).is_err());
    assert!(std::panic::catch_unwind(|| hp_outcome(2)).is_err());
    let e = entry("hp_outcome");
    assert_eq!(
        (
            &e["ok"],
            &e["errors"],
            &e["panics"],
            &e["cancelled"],
            &e["calls"]
        ),
        (&1.into(), &1.into(), &1.into(), &0.into(), &3.into()),
        "{e}"
    );
    assert_eq!(e["in_flight"], 0, "a panic leaves nothing in flight");
    assert_eq!(e["module"], "hot_path_calls");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(hp_async(false).await, 1);
        // A call that is dropped mid-flight is `cancelled`; in flight while it waits.
        let stuck = tokio::spawn(hp_async(true));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(entry("hp_async")["in_flight"], 1);
        stuck.abort();
        let _ = stuck.await;
    });
    let e = entry("hp_async");
    assert_eq!((&e["ok"], &e["cancelled"]), (&1.into(), &1.into()), "{e}");
    assert_eq!(
        e["in_flight"], 0,
        "a cancelled call leaves nothing in flight"
    );
    let text = registry().render();
    for line in [
        "perfkit_hot_path_calls_total{function=\"hp_outcome\",module=\"hot_path_calls\",outcome=\"err\"} 1",
        "perfkit_hot_path_calls_total{function=\"hp_async\",module=\"hot_path_calls\",outcome=\"cancelled\"} 1",
        "perfkit_hot_path_in_flight{function=\"hp_async\",module=\"hot_path_calls\"} 0",
        "perfkit_hot_path_seconds_count{function=\"hp_outcome\",module=\"hot_path_calls\"} 3",
    ] {
        assert!(text.contains(line), "missing {line}");
    }
}

#[hot_path(name = "hp_threads")]
fn counted(x: u64) -> u64 {
    std::hint::black_box(x) + 1
}

#[test]
fn two_threads_a_million_calls_each_are_counted_exactly() {
    let threads: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(|| {
                let mut acc = 0;
                for i in 0..1_000_000 {
                    acc += counted(i);
                }
                acc
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let e = entry("hp_threads");
    assert_eq!(e["calls"], 2_000_000);
    assert_eq!(e["ok"], 2_000_000);
    assert_eq!(e["in_flight"], 0);
    assert_eq!(e["seconds"]["count"], 2_000_000);
}

/// The histogram behind every hot path reports p50/p95/p99 within 10% of the exact values
/// for uniform, bimodal and long-tailed durations.
#[test]
fn percentiles_are_within_ten_percent_of_exact() {
    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }
    let mut seed = 7;
    let uniform: Vec<u64> = (0..100_000)
        .map(|_| 1_000 + (lcg(&mut seed) * 99_000.0) as u64)
        .collect();
    let bimodal: Vec<u64> = (0..100_000)
        .map(|i| {
            let base = if i % 10 < 9 { 50_000.0 } else { 5_000_000.0 };
            (base * (0.9 + 0.2 * lcg(&mut seed))) as u64
        })
        .collect();
    let long_tail: Vec<u64> = (0..100_000)
        .map(|_| (10_000.0 / (1.0 - lcg(&mut seed)).powf(0.8)) as u64)
        .collect();
    for (name, values) in [
        ("uniform", uniform),
        ("bimodal", bimodal),
        ("long_tail", long_tail),
    ] {
        let h = Histogram::new(Unit::Seconds);
        for &v in &values {
            h.record(v);
        }
        let snap = h.snapshot();
        let mut sorted = values.clone();
        sorted.sort_unstable();
        for q in [0.5, 0.95, 0.99] {
            let exact = sorted
                [((sorted.len() as f64 * q).ceil() as usize - 1).min(sorted.len() - 1)]
                as f64
                * 1e-9;
            let got = snap.quantile(q).unwrap();
            let err = (got - exact).abs() / exact;
            assert!(
                err <= 0.10,
                "{name} p{}: got {got}, exact {exact} ({:.1}% off)",
                q * 100.0,
                err * 100.0
            );
        }
    }
}

#[hot_path]
fn hp_traced() -> u8 {
    tracing::info!("inside");
    3
}

#[hot_path]
async fn hp_traced_async() -> u8 {
    tokio::task::yield_now().await;
    tracing::info!("inside async");
    4
}

/// With the `tracing` feature (on here through `full`), each call runs inside a `hot_path`
/// span carrying the function's name, and events in the body are its children.
#[test]
fn calls_open_a_tracing_span_with_the_tracing_feature() {
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::{Context, SubscriberExt};

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);
    impl<S> tracing_subscriber::Layer<S> for Seen
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
            let parent = ctx
                .event_span(event)
                .map(|s| format!("{}:{:?}", s.name(), s.fields().field("function").is_some()));
            self.0.lock().unwrap().push(parent.unwrap_or_default());
        }
    }
    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry().with(seen.clone());
    tracing::subscriber::with_default(subscriber, || {
        assert_eq!(hp_traced(), 3);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(hp_traced_async()), 4);
    });
    assert_eq!(
        *seen.0.lock().unwrap(),
        ["hot_path:true", "hot_path:true"],
        "both events happen inside the call's span"
    );
}

struct Alpha;
struct Beta;

impl Alpha {
    #[hot_path]
    fn run(&self) -> u8 {
        1
    }
}

impl Beta {
    #[hot_path]
    fn run(&self) -> u8 {
        2
    }

    #[hot_path]
    async fn run_async(&self) -> u8 {
        3
    }
}

/// Methods of different types with one name, in one module, get their own series: the
/// default `function` label is the path below the module.
#[test]
fn methods_are_labelled_with_their_type() {
    assert_eq!(Alpha.run() + Beta.run() + Beta.run(), 5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(Beta.run_async()), 3);
    assert_eq!(entry("Alpha::run")["calls"], 1);
    assert_eq!(entry("Beta::run")["calls"], 2);
    assert_eq!(entry("Beta::run_async")["calls"], 1);
}
