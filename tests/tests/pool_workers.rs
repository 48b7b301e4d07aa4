//! `perfkit::pool`: results, panics, overflow policies, lanes, shutdown, and what the pool
//! reports on `/metrics` and in the snapshot.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::entry;
use perfkit::metrics::Registry;
use perfkit::pool::{BuildError, Builder, JobError, SubmitError};
use perfkit::queue::Policy;
use tokio::sync::{Barrier, Notify};

fn rt(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

fn alive(task: &str) -> usize {
    perfkit::task::dump()
        .iter()
        .filter(|t| t.name == task)
        .count()
}

#[test]
fn thousand_jobs_ten_panics_990_ok_and_every_worker_still_serves() {
    let registry = Registry::new();
    rt(2).block_on(async {
        let pool = Builder::new("p-panics")
            .workers(2)
            .queue_capacity(64)
            .registry(&registry)
            .build()
            .unwrap();
        let mut handles = Vec::new();
        for i in 0..1000u32 {
            handles.push(
                pool.submit(async move {
                    if i % 100 == 7 {
                        panic!("job {i} failed");
                    }
                    i
                })
                .await
                .unwrap(),
            );
        }
        let (mut ok, mut panics) = (0, 0);
        for (i, h) in handles.into_iter().enumerate() {
            match h.await {
                Ok(v) => {
                    assert_eq!(v as usize, i);
                    ok += 1;
                }
                Err(JobError::Panicked(msg)) => {
                    assert_eq!(msg, format!("job {i} failed"));
                    panics += 1;
                }
                Err(e) => panic!("job {i}: {e}"),
            }
        }
        assert_eq!((ok, panics), (990, 10));
        // Both workers still serve: two jobs that can only finish together.
        let barrier = Arc::new(Barrier::new(2));
        let a = pool
            .submit({
                let b = barrier.clone();
                async move { b.wait().await.is_leader() }
            })
            .await
            .unwrap();
        let b = pool
            .submit(async move { barrier.wait().await.is_leader() })
            .await
            .unwrap();
        let both = tokio::time::timeout(Duration::from_secs(10), async {
            (a.await.unwrap(), b.await.unwrap())
        })
        .await
        .expect("both workers are alive to meet at the barrier");
        assert!(both.0 ^ both.1);
        let report = pool.shutdown(Duration::from_secs(5)).await;
        assert!(report.drained);
        assert_eq!((report.ok, report.panicked, report.cancelled), (992, 10, 0));
        let text = registry.render();
        assert!(
            text.contains("perfkit_pool_tasks_total{pool=\"p-panics\",outcome=\"panic\"} 10"),
            "{text}"
        );
        assert!(text.contains("perfkit_pool_tasks_total{pool=\"p-panics\",outcome=\"ok\"} 992"));
    });
}

#[test]
fn shutdown_deadline_cancels_running_and_queued_and_workers_end() {
    const TASK: &str = "t-pool-shutdown-worker";
    let registry = Registry::new();
    rt(2).block_on(async {
        let baseline = alive(TASK);
        let pool = Builder::new("p-shutdown")
            .workers(2)
            .task_name(TASK)
            .queue_capacity(16)
            .registry(&registry)
            .build()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(alive(TASK), baseline + 2);
        let started = Arc::new(AtomicUsize::new(0));
        let mut stuck = Vec::new();
        for _ in 0..2 {
            let started = started.clone();
            stuck.push(
                pool.submit(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                })
                .await
                .unwrap(),
            );
        }
        while started.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let queued: Vec<_> = (0..5)
            .map(|i| pool.try_submit(async move { i }).unwrap())
            .collect();
        assert_eq!(pool.busy(), 2);
        assert_eq!(pool.queued(), 5);
        let t0 = std::time::Instant::now();
        let report = pool.shutdown(Duration::from_millis(100)).await;
        assert!(t0.elapsed() >= Duration::from_millis(100));
        assert!(!report.drained);
        assert_eq!(report.cancelled_running, 2, "{report:?}");
        assert_eq!(report.cancelled_queued, 5, "{report:?}");
        assert_eq!(report.cancelled, 7);
        for h in stuck.into_iter() {
            assert_eq!(h.await.unwrap_err(), JobError::Cancelled);
        }
        for h in queued {
            assert!(h.await.unwrap_err().is_cancelled());
        }
        assert_eq!(alive(TASK), baseline, "no worker outlives shutdown");
        assert!(matches!(
            pool.try_submit(async {}),
            Err(SubmitError::Closed(_))
        ));
        assert!(pool.submit(async {}).await.unwrap_err().is_closed());
        // A second shutdown has nothing left to do.
        let again = pool.shutdown(Duration::ZERO).await;
        assert_eq!((again.cancelled_queued, again.cancelled_running), (0, 0));
        let snap = registry.snapshot();
        let q = entry(&snap, "queues", "p-shutdown");
        assert_eq!(q["dropped"]["closed"], 5);
        assert_eq!(q["enqueued"], 7);
        assert_eq!(q["dequeued"], 2);
        assert_eq!(q["depth"], 0);
        assert_eq!(entry(&snap, "pools", "p-shutdown")["tasks"]["cancelled"], 7);
    });
}

#[test]
fn shutdown_drains_queued_work_before_the_deadline() {
    rt(2).block_on(async {
        let pool = Builder::new("p-drain")
            .workers(2)
            .queue_capacity(100)
            .build()
            .unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let done = done.clone();
            drop(
                pool.submit(async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    done.fetch_add(1, Ordering::SeqCst);
                })
                .await
                .unwrap(),
            );
        }
        let report = pool.shutdown(Duration::from_secs(30)).await;
        assert!(report.drained, "{report:?}");
        assert_eq!(done.load(Ordering::SeqCst), 100);
        assert_eq!((report.ok, report.cancelled_queued), (100, 0));
    });
}

#[test]
fn dropping_the_pool_cancels_what_it_holds() {
    rt(1).block_on(async {
        let pool = Builder::new("p-drop").workers(1).build().unwrap();
        let gate = Arc::new(Notify::new());
        let running = pool
            .submit({
                let gate = gate.clone();
                async move { gate.notified().await }
            })
            .await
            .unwrap();
        let queued = pool.try_submit(async { 1 }).unwrap();
        tokio::task::yield_now().await;
        drop(pool);
        assert!(running.await.unwrap_err().is_cancelled());
        assert!(queued.await.unwrap_err().is_cancelled());
    });
}

#[test]
fn clones_share_the_pool_and_only_the_last_drop_cancels() {
    rt(1).block_on(async {
        let pool = Builder::new("p-clone").workers(2).build().unwrap();
        let other = pool.clone();
        // A clone submits to the same workers.
        assert_eq!(
            other.submit(async { 6 * 7 }).await.unwrap().await.unwrap(),
            42
        );
        assert_eq!((pool.workers(), other.workers()), (2, 2));
        // Dropping one clone stops nothing.
        drop(other);
        assert_eq!(pool.submit(async { 1 }).await.unwrap().await.unwrap(), 1);
        // Any clone may shut the pool down, for all of them.
        let third = pool.clone();
        let report = third.shutdown(Duration::from_secs(1)).await;
        assert!(report.drained);
        assert!(pool.is_closed());
        assert!(matches!(
            pool.try_submit(async { 2 }),
            Err(SubmitError::Closed(_))
        ));
        // The last drop of a running pool cancels what it holds.
        let pool = Builder::new("p-clone-drop").workers(1).build().unwrap();
        let gate = Arc::new(Notify::new());
        let running = pool
            .submit({
                let gate = gate.clone();
                async move { gate.notified().await }
            })
            .await
            .unwrap();
        tokio::task::yield_now().await;
        let clone = pool.clone();
        drop(pool);
        tokio::task::yield_now().await;
        assert!(!running.is_finished(), "a clone still holds the pool");
        drop(clone);
        assert!(running.await.unwrap_err().is_cancelled());
    });
}

#[test]
fn workers_are_spawned_at_the_call_to_build() {
    rt(1).block_on(async {
        let builder = Builder::new("p-site").workers(2).task_name("p-site-worker");
        let pool = builder.build().unwrap();
        let line = line!() - 1; // the line of the `build()` call

        let want = format!("{}:{line}", file!());
        let sites: Vec<String> = perfkit::task::dump()
            .into_iter()
            .filter(|t| t.name == "p-site-worker")
            .map(|t| t.site.to_string())
            .collect();
        assert_eq!(sites.len(), 2, "{sites:?}");
        assert!(
            sites.iter().all(|s| s.ends_with(&want)),
            "{sites:?} should be {want}"
        );
        pool.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn full_queue_policies() {
    let registry = Registry::new();
    rt(1).block_on(async {
        let gate = Arc::new(Notify::new());
        let blocker = |gate: &Arc<Notify>| {
            let gate = gate.clone();
            async move { gate.notified().await }
        };
        let mut pools = Vec::new();
        for policy in [
            Policy::Block,
            Policy::Reject,
            Policy::DropOldest,
            Policy::DropNewest,
        ] {
            let name = format!("p-policy-{policy}");
            let pool = Builder::new(name.clone())
                .workers(1)
                .queue_capacity(2)
                .policy(policy)
                .registry(&registry)
                .build()
                .unwrap();
            let running = pool.submit(blocker(&gate)).await.unwrap();
            while pool.busy() == 0 {
                tokio::task::yield_now().await;
            }
            let first = pool.try_submit(async { 1 }).unwrap();
            let second = pool.try_submit(async { 2 }).unwrap();
            match policy {
                Policy::Block => {
                    let back = pool.try_submit(async { 3 }).unwrap_err();
                    assert!(back.is_rejected());
                    assert_eq!(back.into_job().await, 3, "the job is handed back");
                    // submit waits for room, then gets in.
                    let waiting = pool.submit(async { 4 });
                    let mut waiting = std::pin::pin!(waiting);
                    assert!(
                        tokio::time::timeout(Duration::from_millis(30), &mut waiting)
                            .await
                            .is_err(),
                        "submit waits while full"
                    );
                    gate.notify_one();
                    let fourth = waiting.await.unwrap();
                    assert_eq!(fourth.await.unwrap(), 4);
                }
                Policy::Reject => {
                    assert!(pool.submit(async { 3 }).await.unwrap_err().is_rejected());
                    gate.notify_one();
                }
                Policy::DropOldest => {
                    let third = pool.submit(async { 3 }).await.unwrap();
                    gate.notify_one();
                    assert_eq!(third.await.unwrap(), 3);
                    assert_eq!(first.await.unwrap_err(), JobError::Dropped);
                    assert_eq!(second.await.unwrap(), 2);
                    running.await.unwrap();
                    pools.push(pool);
                    continue;
                }
                Policy::DropNewest => {
                    let third = pool.submit(async { 3 }).await.unwrap();
                    assert_eq!(third.await.unwrap_err(), JobError::Dropped);
                    gate.notify_one();
                }
                _ => unreachable!(),
            }
            assert_eq!(first.await.unwrap(), 1);
            assert_eq!(second.await.unwrap(), 2);
            running.await.unwrap();
            pools.push(pool);
        }
        check_policy_counts(&registry);
    });
}

fn check_policy_counts(registry: &Registry) {
    let snap = registry.snapshot();
    let q = |p: &str| entry(&snap, "queues", &format!("p-policy-{p}"));
    let t = |p: &str| entry(&snap, "pools", &format!("p-policy-{p}"))["tasks"].clone();
    assert_eq!(q("block")["rejected"], 1);
    assert_eq!(t("block")["rejected"], 1);
    assert_eq!(q("reject")["rejected"], 1);
    assert_eq!(q("drop_oldest")["dropped"]["oldest"], 1);
    assert_eq!(t("drop_oldest")["cancelled"], 1);
    assert_eq!(q("drop_newest")["dropped"]["full"], 1);
    assert_eq!(t("drop_newest")["cancelled"], 1);
    let inv = registry.inventory();
    let p = entry(&inv, "pools", "p-policy-drop_newest");
    assert_eq!(p["policy"], "drop_newest");
    assert_eq!(p["queue_capacity"], 2);
    assert!(p["source"].as_str().unwrap().contains("pool_workers.rs"));
    assert_eq!(entry(&inv, "queues", "p-policy-drop_newest")["capacity"], 2);
}

#[test]
fn higher_lanes_first_with_lower_lanes_served_every_fair_every_takes() {
    rt(1).block_on(async {
        let pool = Builder::new("p-lanes")
            .workers(1)
            .lanes(2)
            .fair_every(4)
            .queue_capacity(64)
            .build()
            .unwrap();
        let gate = Arc::new(Notify::new());
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let first = pool
            .submit({
                let gate = gate.clone();
                async move { gate.notified().await }
            })
            .await
            .unwrap();
        while pool.busy() == 0 {
            tokio::task::yield_now().await;
        }
        let mut handles = Vec::new();
        for i in 0..8 {
            let order = order.clone();
            handles.push(
                pool.try_submit_to(0, async move { order.lock().unwrap().push(("low", i)) })
                    .unwrap(),
            );
        }
        for i in 0..8 {
            let order = order.clone();
            handles.push(
                pool.try_submit_to(1, async move { order.lock().unwrap().push(("high", i)) })
                    .unwrap(),
            );
        }
        let bad = pool.try_submit_to(2, async {}).unwrap_err();
        assert!(matches!(
            bad,
            SubmitError::NoSuchLane {
                lane: 2,
                lanes: 2,
                ..
            }
        ));
        assert_eq!(bad.to_string(), "no lane 2: the pool has lanes 0..2");
        gate.notify_one();
        first.await.unwrap();
        for h in handles {
            h.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        // The blocker was take 1; takes 4, 8 and 12 look at the low lane first, and once the
        // high lane is empty the low lane has the worker to itself.
        let lanes: String = order
            .iter()
            .map(|(l, _)| if *l == "high" { 'H' } else { 'L' })
            .collect();
        assert_eq!(lanes, "HHLHHHLHHHLLLLLL", "{order:?}");
        // FIFO within each lane.
        for lane in ["low", "high"] {
            let seq: Vec<_> = order
                .iter()
                .filter(|(l, _)| *l == lane)
                .map(|x| x.1)
                .collect();
            assert_eq!(seq, (0..8).collect::<Vec<_>>());
        }
        pool.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn busy_saturation_and_series_while_saturated() {
    let registry = Registry::new();
    rt(2).block_on(async {
        let pool = Builder::new("p-busy")
            .workers(2)
            .queue_capacity(8)
            .registry(&registry)
            .build()
            .unwrap();
        // Keep both workers busy, then start the average's window (a snapshot request does)
        // once they are: however long the workers took to start, the window holds only busy
        // time.
        let gate = Arc::new(Notify::new());
        let mut held = Vec::new();
        for _ in 0..3 {
            let gate = gate.clone();
            held.push(
                pool.submit(async move { gate.notified().await })
                    .await
                    .unwrap(),
            );
        }
        while pool.busy() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let start = registry.snapshot();
        let busy_before = entry(&start, "pools", "p-busy")["busy_seconds"]
            .as_f64()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let snap = registry.snapshot();
        let p = entry(&snap, "pools", "p-busy");
        assert_eq!(p["busy"], 2);
        assert_eq!(p["saturation"], 1.0);
        let avg = p["saturation_avg"].as_f64().unwrap();
        assert!(avg > 0.8 && avg <= 1.0, "{p}");
        assert_eq!(p["depth"], 1);
        assert_eq!(p["lane_depths"], serde_json::json!([1]));
        let text = registry.render();
        for line in [
            "perfkit_pool_workers{pool=\"p-busy\"} 2",
            "perfkit_pool_busy{pool=\"p-busy\"} 2",
            "perfkit_queue_depth{queue=\"p-busy\",pool=\"p-busy\"} 1",
            "perfkit_queue_capacity{queue=\"p-busy\",pool=\"p-busy\"} 8",
        ] {
            assert!(text.contains(line), "missing {line} in {text}");
        }
        let busy_seconds = |text: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix("perfkit_pool_busy_seconds_total{pool=\"p-busy\"} "))
                .unwrap()
                .parse()
                .unwrap()
        };
        let b1 = busy_seconds(&text);
        assert!(b1 >= 0.35, "two workers busy 200 ms: {b1}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let b2 = busy_seconds(&registry.render());
        assert!(b2 > b1, "running jobs count as they run: {b1} -> {b2}");
        // Idle: instantaneous saturation drops, the average over the idle window too.
        for _ in 0..3 {
            gate.notify_one();
            tokio::task::yield_now().await;
        }
        for h in held {
            h.await.unwrap();
        }
        while pool.busy() > 0 {
            tokio::task::yield_now().await;
        }
        // A one-second window that starts after the jobs ended reads idle, whoever asked
        // before.
        // (A debug server ticks the global registry every second; this one is private.)
        for _ in 0..22 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            registry.tick();
        }
        let snap = registry.snapshot_window(1);
        let p = entry(&snap, "pools", "p-busy");
        assert_eq!(p["saturation"], 0.0);
        assert!(p["window"]["busy_ratio"].as_f64().unwrap() < 0.05, "{p}");
        assert_eq!(p["window"]["busy_max"], 0, "{p}");
        // Over the last 10 s (here: since the registry's clock started, at the first
        // snapshot) the busy time shows: at least what the workers were busy after that
        // snapshot, at most all they ever were (the same figure when they started at once).
        let avg = p["saturation_avg"].as_f64().unwrap();
        let span = p["saturation_avg_window_seconds"].as_f64().unwrap() * 2.0;
        let lifetime = p["busy_seconds"].as_f64().unwrap();
        let (least, most) = ((lifetime - busy_before) / span, lifetime / span);
        assert!(
            avg > 0.05 && avg >= least - 0.01 && avg <= most + 0.01,
            "{avg} not in {least}..={most}: {p}"
        );
        assert_eq!(p["tasks"]["ok"], 3);
        assert_eq!(p["task_seconds"]["count"], 3);
        pool.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn build_errors_are_clear() {
    let err = Builder::new("p-nort").build().unwrap_err();
    assert_eq!(
        err,
        BuildError::NoRuntime {
            name: "p-nort".into()
        }
    );
    let current = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    current.block_on(async {
        assert!(matches!(
            Builder::new("p-notimer").build().unwrap_err(),
            BuildError::NoTimer { .. }
        ));
    });
    rt(1).block_on(async {
        assert_eq!(Builder::new("").build().unwrap_err(), BuildError::EmptyName);
        assert!(matches!(
            Builder::new("p").workers(0).build().unwrap_err(),
            BuildError::ZeroWorkers { .. }
        ));
        assert!(matches!(
            Builder::new("p").queue_capacity(0).build().unwrap_err(),
            BuildError::ZeroCapacity { .. }
        ));
        let lanes = Builder::new("p").lanes(9).build().unwrap_err();
        assert_eq!(
            lanes.to_string(),
            "pool \"p\": lanes must be between 1 and 8, got 9"
        );
        assert!(matches!(
            Builder::new("p").fair_every(0).build().unwrap_err(),
            BuildError::ZeroFairEvery { .. }
        ));
        assert!(matches!(
            Builder::new("p").warn_at(&[1.5]).build().unwrap_err(),
            BuildError::InvalidThreshold { .. }
        ));
    });
}

/// Many short bursts through a 2-worker pool with a small queue, so submitters block,
/// workers park and wake, and shutdown races the last jobs: every job runs exactly once.
#[test]
fn stress_every_job_runs_once() {
    let rt = rt(2);
    for round in 0..200 {
        rt.block_on(async {
            let pool = Arc::new(
                Builder::new("p-stress")
                    .workers(2)
                    .queue_capacity(4)
                    .build()
                    .unwrap(),
            );
            let ran = Arc::new(AtomicUsize::new(0));
            let submitters: Vec<_> = (0..2)
                .map(|_| {
                    let pool = pool.clone();
                    let ran = ran.clone();
                    tokio::spawn(async move {
                        for _ in 0..500 {
                            let ran = ran.clone();
                            drop(
                                pool.submit(async move {
                                    ran.fetch_add(1, Ordering::Relaxed);
                                })
                                .await
                                .unwrap(),
                            );
                        }
                    })
                })
                .collect();
            for s in submitters {
                s.await.unwrap();
            }
            let report = pool.shutdown(Duration::from_secs(30)).await;
            assert!(report.drained, "round {round}: {report:?}");
            assert_eq!(ran.load(Ordering::Relaxed), 1000, "round {round}");
            assert_eq!(report.ok, 1000);
        });
    }
}

/// The queue's high-water mark is the real peak depth: jobs awaited one at a time never
/// queue more than one deep, however many go through.
#[test]
fn high_water_mark_is_the_real_peak() {
    let registry = Registry::new();
    rt(2).block_on(async {
        let pool = Builder::new("p-highwater")
            .workers(2)
            .queue_capacity(64)
            .registry(&registry)
            .build()
            .unwrap();
        let _ = registry.snapshot();
        for i in 0..2_000u32 {
            assert_eq!(pool.submit(async move { i }).await.unwrap().await, Ok(i));
        }
        let snap = registry.snapshot();
        let q = entry(&snap, "queues", "p-highwater");
        assert!(q["high_water"].as_u64().unwrap() <= 1, "{q}");
        assert_eq!(q["enqueued"], 2000);
        assert_eq!(q["dequeued"], 2000);
        assert_eq!(q["wait_seconds"]["count"], 2000);
        pool.shutdown(Duration::from_secs(1)).await;
    });
}

/// The per-job counts are exact on `/metrics` and in the snapshot, whichever way they are
/// kept (workers' own cells, the queue's count of claims), and stay counted after the pool
/// is gone: a second pool of the same name carries the series on.
#[test]
fn job_counts_are_exact_and_outlive_the_pool() {
    let registry = Registry::new();
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
    };
    rt(2).block_on(async {
        for (round, jobs) in [(1u64, 300u64), (2, 200)] {
            let pool = Builder::new("p-counts")
                .workers(2)
                .queue_capacity(8)
                .registry(&registry)
                .build()
                .unwrap();
            let handles: Vec<_> = {
                let mut v = Vec::new();
                for i in 0..jobs {
                    v.push(pool.submit(async move { i }).await.unwrap());
                }
                v
            };
            for h in handles {
                h.await.unwrap();
            }
            let report = pool.shutdown(Duration::from_secs(5)).await;
            assert!(report.drained);
            let text = registry.render();
            let total = if round == 1 { 300.0 } else { 500.0 };
            for series in [
                "perfkit_queue_enqueued_total{queue=\"p-counts\",pool=\"p-counts\"}",
                "perfkit_queue_dequeued_total{queue=\"p-counts\",pool=\"p-counts\"}",
                "perfkit_queue_wait_seconds_count{queue=\"p-counts\",pool=\"p-counts\"}",
                "perfkit_pool_task_seconds_count{pool=\"p-counts\"}",
            ] {
                assert_eq!(value(&text, series), total, "{series} after round {round}");
            }
            let snap = registry.snapshot();
            let q = entry(&snap, "queues", "p-counts");
            assert_eq!(q["enqueued"], q["dequeued"]);
            assert_eq!(q["enqueued"].as_f64(), Some(total));
            drop(pool);
            // The pool and its collector are gone; the stored series keep their totals.
            let text = registry.render();
            assert_eq!(
                value(
                    &text,
                    "perfkit_queue_enqueued_total{queue=\"p-counts\",pool=\"p-counts\"}"
                ),
                total
            );
        }
    });
}
