//! Windowed figures over real loopback HTTP: `?window=N` on the snapshot, the `*_max_10s`
//! gauges on `/metrics`, and readers that never change what another sees.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::get;
use perfkit::{Builder, DebugServer};

fn start() -> DebugServer {
    Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .start()
        .expect("start debug server")
}

fn queue_window(addr: SocketAddr, window: u32, queue: &str) -> serde_json::Value {
    let r = get(addr, &format!("/debug/perfkit/snapshot?window={window}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let snap = r.json();
    assert_eq!(snap["window"]["seconds"], window);
    common::entry(&snap, "queues", queue)
}

#[test]
fn bad_windows_are_400_with_the_reason() {
    let s = start();
    for (raw, bad) in [
        ("0", "0"),
        ("301", "301"),
        ("-1", "-1"),
        ("1.5", "1.5"),
        ("abc", "abc"),
        ("", ""),
        ("%2B5", "+5"),
        ("+5", " 5"),
        ("99999999999", "99999999999"),
    ] {
        let r = get(
            s.local_addr(),
            &format!("/debug/perfkit/snapshot?window={raw}"),
        );
        assert_eq!(r.status, 400, "window={raw}: {}", r.text());
        assert_eq!(
            r.text(),
            format!("window must be a whole number of seconds from 1 to 300, got {bad:?}\n")
        );
    }
    let r = get(s.local_addr(), "/debug/perfkit/snapshot?window=5&window=6");
    assert_eq!(r.status, 400);
    for good in ["1", "300"] {
        let r = get(
            s.local_addr(),
            &format!("/debug/perfkit/snapshot?window={good}"),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let snap = r.json();
        assert!(
            snap["window"]["resident_memory_bytes_max"]
                .as_u64()
                .unwrap()
                > 1 << 20
        );
    }
    // Without the parameter there is no window object.
    assert!(get(s.local_addr(), "/debug/perfkit/snapshot").json()["window"].is_null());
}

/// A burst that fills a queue and drains between two polls: two clients polling
/// `?window=5` at their own pace both report its peak in every poll for the next seconds,
/// and `/metrics` shows it in `perfkit_queue_depth_max_10s` though the depth is back to 0.
#[test]
fn two_pollers_both_see_a_burst_between_their_polls() {
    let s = start();
    let addr = s.local_addr();
    let (tx, mut rx) = perfkit::queue::Builder::new("w-burst", 100)
        .build::<u32>()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let burst_done = Arc::new(Barrier::new(3));
    let pollers: Vec<_> = [150u64, 370]
        .into_iter()
        .map(|every| {
            let stop = stop.clone();
            let burst_done = burst_done.clone();
            std::thread::spawn(move || {
                // Poll before the burst too: a reader's request must not move anyone's window.
                for _ in 0..3 {
                    let q = queue_window(addr, 5, "w-burst");
                    assert_eq!(q["window"]["depth_max"], 0, "{q}");
                    std::thread::sleep(Duration::from_millis(every));
                }
                burst_done.wait();
                let mut seen = Vec::new();
                let until = Instant::now() + Duration::from_secs(4);
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    let q = queue_window(addr, 5, "w-burst");
                    seen.push((
                        q["depth"].as_u64().unwrap(),
                        q["window"]["depth_max"].as_u64().unwrap(),
                    ));
                    std::thread::sleep(Duration::from_millis(every));
                }
                seen
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    // The burst: 80 in, 80 out, within a few milliseconds.
    for i in 0..80 {
        tx.try_send(i).unwrap();
    }
    for _ in 0..80 {
        rx.try_recv().unwrap();
    }
    burst_done.wait();
    let metrics = get(addr, "/metrics").text();
    assert!(
        metrics.contains("perfkit_queue_depth{queue=\"w-burst\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("perfkit_queue_depth_max_10s{queue=\"w-burst\"} 80"),
        "{metrics}"
    );
    for p in pollers {
        let seen = p.join().unwrap();
        assert!(seen.len() >= 8, "{seen:?}");
        assert!(
            seen.iter().all(|&(depth, max)| depth == 0 && max == 80),
            "every poll within 4 s of the burst reports its peak: {seen:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    // Six seconds on, a 5 s window no longer holds the burst; the lifetime mark does.
    std::thread::sleep(Duration::from_millis(6_200));
    let q = queue_window(addr, 5, "w-burst");
    assert_eq!(q["window"]["depth_max"], 0, "{q}");
    assert_eq!(q["high_water"], 80, "{q}");
    assert_eq!(
        queue_window(addr, 300, "w-burst")["window"]["depth_max"],
        80
    );
}

#[perfkit::hot_path(name = "w_regress")]
fn work(d: Duration) {
    if !d.is_zero() {
        std::thread::sleep(d);
    }
}

/// A hot path that turns slow: the window's p99 shows it at once, while the lifetime p99,
/// dominated by the earlier fast calls, does not.
#[test]
fn a_late_regression_shows_in_the_window_and_not_in_the_lifetime_p99() {
    let s = start();
    let addr = s.local_addr();
    for _ in 0..10_000 {
        work(Duration::ZERO);
    }
    // The debug server's clock ticks: the fast calls become the past.
    std::thread::sleep(Duration::from_millis(3_100));
    for _ in 0..50 {
        work(Duration::from_millis(20)); // 0.5% of all calls
    }
    let snap = get(addr, "/debug/perfkit/snapshot?window=2").json();
    let e = common::entry(&snap, "hot_paths", "w_regress");
    assert_eq!(e["calls"], 10_050, "{e}");
    let lifetime = e["seconds"]["p99"].as_f64().unwrap();
    assert!(lifetime < 0.001, "lifetime p99 {lifetime}: {e}");
    assert_eq!(e["window"]["calls"], 50, "{e}");
    // Each slow call sleeps 20 ms; a loaded machine may stretch a few of them, so only the
    // floor is exact. The window's median is slow too: every call in it is.
    let p99 = e["window"]["seconds"]["p99"].as_f64().unwrap();
    assert!((0.019..1.0).contains(&p99), "window p99 {p99}: {e}");
    let p50 = e["window"]["seconds"]["p50"].as_f64().unwrap();
    assert!(p50 >= 0.019, "window p50 {p50}: {e}");
    // Idle windows have no quantiles, not zeros.
    std::thread::sleep(Duration::from_millis(3_100));
    let snap = get(addr, "/debug/perfkit/snapshot?window=1").json();
    let e = common::entry(&snap, "hot_paths", "w_regress");
    assert_eq!(e["window"]["calls"], 0, "{e}");
    assert!(e["window"]["seconds"]["p99"].is_null(), "{e}");
}
