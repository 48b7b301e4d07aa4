//! `perfkit::sync`: locks and semaphores count, time and report contention; waiters never
//! leak (cancelled waits, timeouts, panics); the snapshot and inventory carry them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::entry;
use perfkit::sync::{self, AcquireError, Mutex, RwLock, Semaphore};

/// The value of the one series of `/metrics` text whose line starts with `prefix`.
fn value(text: &str, prefix: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no series {prefix} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_blocking_mutex_counts_every_acquisition_and_times_the_waits() {
    let registry = common::own_registry();
    let m = Arc::new(sync::blocking::Mutex::new_in("counter", 0u64, registry));
    registry.tick(); // windows count from the first tick on
    let per_thread = 20_000;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    let mut g = m.lock();
                    *g += 1;
                    // Long enough a hold that the other threads find it taken.
                    std::hint::black_box((0..50).sum::<u64>());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*m.lock(), 4 * per_thread);
    let text = registry.render();
    let uncontended = value(
        &text,
        "perfkit_lock_acquisitions_total{lock=\"counter\",contended=\"false\"}",
    );
    let contended = value(
        &text,
        "perfkit_lock_acquisitions_total{lock=\"counter\",contended=\"true\"}",
    );
    assert_eq!(
        uncontended + contended,
        (4 * per_thread + 1) as f64,
        "every acquisition counted once"
    );
    assert!(
        contended > 0.0,
        "four threads on one lock never waited?\n{text}"
    );
    let waits = value(&text, "perfkit_lock_wait_seconds_count{lock=\"counter\"}");
    assert_eq!(waits, contended, "one wait per contended acquisition");
    // Holds: every contended one, and uncontended ones sampled 1 in 32 with weight 32 by
    // the lock's count, so the count is within 32 of the acquisitions.
    let holds = value(&text, "perfkit_lock_hold_seconds_count{lock=\"counter\"}");
    let total = uncontended + contended;
    assert!(
        (holds - total).abs() <= 32.0,
        "holds {holds} vs acquisitions {total}"
    );
    assert_eq!(value(&text, "perfkit_lock_waiters{lock=\"counter\"}"), 0.0);
    assert!(value(&text, "perfkit_lock_waiters_max_10s{lock=\"counter\"}") >= 1.0);

    let snap = registry.snapshot_window(10);
    let lock = entry(&snap, "locks", "counter");
    assert_eq!(lock["kind"], "blocking_mutex");
    assert_eq!(lock["acquisitions"], 4 * per_thread + 1);
    assert!(
        lock["wait_seconds"]["p99"].as_f64().unwrap() > 0.0,
        "{lock}"
    );
    assert!(
        lock["window"]["wait_seconds"]["count"].as_u64().unwrap() > 0,
        "{lock}"
    );
    let inv = entry(&registry.inventory(), "locks", "counter");
    assert!(
        inv["source"].as_str().unwrap().contains("sync_locks.rs"),
        "{inv}"
    );
}

#[test]
fn a_panic_while_holding_is_counted_and_the_lock_stays_usable() {
    let registry = common::own_registry();
    let m = Arc::new(sync::blocking::Mutex::new_in(
        "fragile",
        Vec::<u32>::new(),
        registry,
    ));
    let m2 = Arc::clone(&m);
    let r = std::thread::spawn(move || {
        let mut g = m2.lock();
        g.push(1);
        panic!("boom while holding");
    })
    .join();
    assert!(r.is_err());
    assert_eq!(*m.lock(), [1], "released and not poisoned");
    let text = registry.render();
    assert_eq!(
        value(&text, "perfkit_lock_panics_total{lock=\"fragile\"}"),
        1.0
    );
    assert_eq!(value(&text, "perfkit_lock_waiters{lock=\"fragile\"}"), 0.0);

    // The async mutex: a task that panics holding the guard.
    let rt = common::runtime(2);
    let am = Arc::new(Mutex::new_in("fragile_async", 0u32, registry));
    let am2 = Arc::clone(&am);
    let joined = rt.block_on(rt.spawn(async move {
        let _g = am2.lock().await;
        panic!("boom in a task");
    }));
    assert!(joined.is_err());
    assert_eq!(*rt.block_on(am.lock()), 0);
    let text = registry.render();
    assert_eq!(
        value(&text, "perfkit_lock_panics_total{lock=\"fragile_async\"}"),
        1.0
    );
}

#[test]
fn a_cancelled_wait_leaves_no_waiter_behind() {
    let registry = common::own_registry();
    let rt = common::runtime(2);
    rt.block_on(async {
        let m = Mutex::new_in("cancelled", (), registry);
        let held = m.lock().await;
        // Three waiters that give up.
        for _ in 0..3 {
            let r = tokio::time::timeout(Duration::from_millis(20), m.lock()).await;
            assert!(r.is_err());
        }
        let fut = m.lock();
        let mut fut = Box::pin(fut);
        // Poll once so it is queued as a waiter, then look at the gauge.
        assert!(futures_poll_once(fut.as_mut()).await.is_none());
        let text = registry.render();
        assert_eq!(
            value(&text, "perfkit_lock_waiters{lock=\"cancelled\"}"),
            1.0,
            "{text}"
        );
        drop(fut);
        drop(held);
        let text = registry.render();
        assert_eq!(
            value(&text, "perfkit_lock_waiters{lock=\"cancelled\"}"),
            0.0
        );
        // Given up waits are not acquisitions.
        assert_eq!(
            value(
                &text,
                "perfkit_lock_acquisitions_total{lock=\"cancelled\",contended=\"true\"}"
            ),
            0.0
        );
        assert_eq!(
            value(&text, "perfkit_lock_waiters_max_10s{lock=\"cancelled\"}"),
            1.0
        );
    });
}

/// Polls `fut` once: `Some` if it completed.
async fn futures_poll_once<F: std::future::Future + Unpin>(mut fut: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut fut).poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

#[test]
fn an_rwlock_lets_readers_share_and_times_a_writer_behind_them() {
    let registry = common::own_registry();
    let rt = common::runtime(2);
    rt.block_on(async {
        let l = Arc::new(RwLock::new_in("config", 1u32, registry));
        let r1 = l.read().await;
        let r2 = l.read().await; // shared: not contended
        let l2 = Arc::clone(&l);
        let writer = tokio::spawn(async move {
            *l2.write().await += 1;
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop((r1, r2));
        writer.await.unwrap();
        assert_eq!(*l.read().await, 2);
        let text = registry.render();
        assert_eq!(
            value(
                &text,
                "perfkit_lock_acquisitions_total{lock=\"config\",contended=\"false\"}"
            ),
            3.0
        );
        assert_eq!(
            value(
                &text,
                "perfkit_lock_acquisitions_total{lock=\"config\",contended=\"true\"}"
            ),
            1.0
        );
        let snap = registry.snapshot();
        let e = entry(&snap, "locks", "config");
        assert_eq!(e["kind"], "rwlock");
        let waited = e["wait_seconds"]["max"].as_f64().unwrap();
        assert!(
            waited >= 0.025,
            "the writer waited ~30 ms behind the readers: {waited}"
        );
    });
}

#[test]
fn a_semaphore_reports_saturation_waits_and_timeouts() {
    let registry = common::own_registry();
    let rt = common::runtime(2);
    rt.block_on(async {
        let s = Arc::new(Semaphore::new_in("db", 2, registry));
        registry.tick(); // windows count from the first tick on
        let a = s.acquire().await.unwrap();
        let b = s.acquire_owned().await.unwrap();
        assert_eq!((s.in_use(), s.available_permits(), s.permits()), (2, 0, 2));
        // A third caller times out: counted, waited about the timeout.
        let e = s
            .acquire_timeout(Duration::from_millis(40))
            .await
            .unwrap_err();
        assert_eq!(e, AcquireError::Timeout(Duration::from_millis(40)));
        // The owned permit moves to a task that releases it later; a waiter gets it.
        let released = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(b);
        });
        let c = s.acquire().await.unwrap();
        released.await.unwrap();
        let text = registry.render();
        assert_eq!(
            value(&text, "perfkit_semaphore_permits{semaphore=\"db\"}"),
            2.0
        );
        assert_eq!(
            value(&text, "perfkit_semaphore_in_use{semaphore=\"db\"}"),
            2.0
        );
        assert_eq!(
            value(&text, "perfkit_semaphore_in_use_max_10s{semaphore=\"db\"}"),
            2.0
        );
        assert_eq!(
            value(&text, "perfkit_semaphore_waiters{semaphore=\"db\"}"),
            0.0
        );
        assert_eq!(
            value(&text, "perfkit_semaphore_timeouts_total{semaphore=\"db\"}"),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "perfkit_semaphore_acquisitions_total{semaphore=\"db\",contended=\"true\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "perfkit_semaphore_acquisitions_total{semaphore=\"db\",contended=\"false\"}"
            ),
            2.0
        );
        // The timed-out wait and the contended one.
        assert_eq!(
            value(
                &text,
                "perfkit_semaphore_acquire_seconds_count{semaphore=\"db\"}"
            ),
            2.0
        );
        let snap = registry.snapshot_window(10);
        let e = entry(&snap, "semaphores", "db");
        assert_eq!(e["saturation"], 1.0);
        assert_eq!(e["window"]["saturation_max"], 1.0);
        assert_eq!(e["window"]["timeouts"], 1);
        assert!(
            e["acquire_seconds"]["max"].as_f64().unwrap() >= 0.035,
            "{e}"
        );
        drop((a, c));
        assert_eq!(s.in_use(), 0);

        // Closing fails waiters and later acquisitions, and is no timeout.
        s.close();
        assert_eq!(s.acquire().await.unwrap_err(), AcquireError::Closed);
        let inv = entry(&registry.inventory(), "semaphores", "db");
        assert_eq!(inv["permits"], 2);
    });
}

#[test]
fn forgotten_and_added_permits_change_the_total() {
    let registry = common::own_registry();
    let rt = common::runtime(2);
    rt.block_on(async {
        let s = Semaphore::new_in("cap", 3, registry);
        s.acquire().await.unwrap().forget();
        assert_eq!((s.permits(), s.in_use()), (2, 0));
        s.add_permits(5);
        assert_eq!((s.permits(), s.available_permits()), (7, 7));
        let p = s.acquire_many(4).await.unwrap();
        assert_eq!((p.num_permits(), s.in_use()), (4, 4));
    });
}

#[test]
fn a_dropped_lock_leaves_metrics_at_the_next_scrape() {
    let registry = common::own_registry();
    let m = sync::blocking::Mutex::new_in("short_lived", 1, registry);
    drop(m.lock());
    assert!(registry.render().contains("lock=\"short_lived\""));
    drop(m);
    let text = registry.render();
    assert!(
        !text.contains("perfkit_lock_waiters{lock=\"short_lived\""),
        "{text}"
    );
}

#[test]
fn the_contention_profile_rate_is_settable_and_returns_the_previous_one() {
    assert_eq!(sync::mutex_profile_rate(), sync::DEFAULT_MUTEX_PROFILE_RATE);
    assert_eq!(
        sync::set_mutex_profile_rate(1),
        sync::DEFAULT_MUTEX_PROFILE_RATE
    );
    assert_eq!(sync::set_mutex_profile_rate(0), 1);
    assert_eq!(sync::mutex_profile_rate(), 0);
}
