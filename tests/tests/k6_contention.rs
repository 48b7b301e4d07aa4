//! Connection pools and locks under the real gate: the `ingest` example's database pool
//! (SQLite, and a real PostgreSQL started for the test) and its `user_progress` lock, driven
//! by real k6 through `examples/k6/gate.js`. A pool too small for a slow query fails the
//! run on `perfkit_resource_saturation`; with enough connections it passes; a lock held too
//! long fails it on `perfkit_lock_wait_p99_seconds`, and `go tool pprof` on
//! `/debug/pprof/mutex` names the caller that waits.

mod common;

use std::time::Duration;

use common::gate::{assert_crossed, bottleneck, failed, report, run_gate, verdicts};
use common::ingest::start_service;
use common::postgres::Postgres;
use common::results_dir;

/// The verdict of `metric`'s threshold(s): `Some(true)` when all held.
fn held(summary: &serde_json::Value, metric: &str) -> Option<bool> {
    let v: Vec<bool> = verdicts(summary)
        .into_iter()
        .filter(|(m, _, _)| m == metric)
        .map(|(_, _, ok)| ok)
        .collect();
    (!v.is_empty()).then(|| v.iter().all(|ok| *ok))
}

fn finding<'a>(r: &'a serde_json::Value, title: &str) -> &'a serde_json::Value {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["title"].as_str().unwrap_or("").contains(title))
        .unwrap_or_else(|| panic!("no finding {title:?}: {:#}", r["findings"]))
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn two_connections_and_a_slow_query_fail_on_resource_saturation_and_lose_nothing() {
    let dir = results_dir("k6_contention_sqlite_pool");
    // 50 progress reads a second, each holding its connection 60 ms: 3 connections' worth.
    let svc = start_service(
        &dir.join("ingest.log"),
        &[("INGEST_DB_POOL", "2"), ("INGEST_QUERY_DELAY_MS", "60")],
    );
    let (code, summary) = run_gate(&svc, &dir.join("run"), &[]);
    let crossed = failed(code, &summary);
    assert_crossed(&crossed, &["perfkit_resource_saturation"]);
    let p95 = summary["metrics"]["perfkit_resource_saturation"]["values"]["p(95)"]
        .as_f64()
        .unwrap();
    assert_eq!(p95, 1.0, "both connections in use in most windows");
    assert!(
        summary["metrics"]["perfkit_resource_acquire_p99_seconds"]["values"]["max"]
            .as_f64()
            .unwrap()
            > 0.05,
        "callers waited for a connection"
    );
    let r = report(&dir.join("run"));
    let pool = finding(&r, "`db` connection pool saturated");
    assert_eq!(pool["severity"], "HIGH");
    let evidence = pool["evidence"].as_str().unwrap();
    assert!(evidence.contains("at 2/2 from t="), "{evidence}");
    assert!(evidence.contains("acquire p99 up to"), "{evidence}");
    assert!(
        pool["source"]
            .as_str()
            .unwrap()
            .contains("examples/src/store.rs:"),
        "{pool}"
    );
    assert_eq!(bottleneck(&r)["name"], "db", "the pool saturated first");
    let stopped = svc.stop();
    assert_eq!(stopped.dropped, 0, "{stopped:?}");
}

#[test]
#[ignore = "needs k6, go and a built ingest binary; scripts/test.sh installs them and runs ignored tests"]
fn a_lock_held_too_long_fails_on_lock_waits_and_the_mutex_profile_names_the_waiting_caller() {
    let dir = results_dir("k6_contention_lock");
    // 64 workers, each event holding the user_progress lock for 2 ms of CPU work: a caller
    // can wait for 63 others, ~126 ms.
    let svc = start_service(
        &dir.join("ingest.log"),
        &[
            ("INGEST_WORKERS", "64"),
            ("INGEST_LOCK_HOLD_US", "2000"),
            ("INGEST_SHUTDOWN_TIMEOUT_MS", "3000"),
        ],
    );
    // The contention profile over 3 s in the middle of the run, read by the real pprof.
    let url = format!("{}/debug/pprof/mutex?seconds=3", svc.perfkit_url);
    let profile_dir = dir.join("pprof");
    let pprof = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        common::go_pprof(&["-top", "-sample_index=delay", &url], &profile_dir)
    });
    let (code, summary) = run_gate(&svc, &dir.join("run"), &[]);
    let (ok, top, err) = pprof.join().unwrap();
    eprintln!("go tool pprof -top mutex:\n{top}\n{err}");
    assert!(ok, "{top}\n{err}");
    assert!(top.contains("Type: delay"), "{top}");
    assert!(
        top.contains("lock \"user_progress\" (mutex)"),
        "the lock is named:\n{top}"
    );
    assert!(
        top.contains("UserProgress::update"),
        "the waiting caller is named:\n{top}"
    );

    let crossed = failed(code, &summary);
    assert_crossed(&crossed, &["perfkit_lock_wait_p99_seconds"]);
    let worst = summary["metrics"]["perfkit_lock_wait_p99_seconds"]["values"]["max"]
        .as_f64()
        .unwrap();
    assert!(worst >= 0.1, "lock wait p99 up to {worst} s");
    let r = report(&dir.join("run"));
    let lock = finding(&r, "`user_progress` lock contended");
    assert!(
        lock["source"]
            .as_str()
            .unwrap()
            .contains("examples/src/pipeline.rs:"),
        "{lock}"
    );
    assert!(
        lock["change"]
            .as_str()
            .unwrap()
            .contains("/debug/pprof/mutex"),
        "{lock}"
    );
    svc.stop();
}

#[test]
#[ignore = "needs k6, PostgreSQL and a built ingest binary; scripts/test.sh installs them and runs ignored tests"]
fn postgres_mode_passes_with_enough_connections_and_fails_with_two_and_a_slow_query() {
    let pg = Postgres::start("contention");
    let dir = results_dir("k6_contention_postgres");

    // Enough connections (the default 50): the gate holds, and PostgreSQL has every event.
    let svc = start_service(
        &dir.join("ingest.log"),
        &[("INGEST_DATABASE_URL", pg.url.as_str())],
    );
    let (code, summary) = run_gate(&svc, &dir.join("healthy"), &[]);
    assert_eq!(code, 0, "the gate holds on PostgreSQL with 50 connections");
    assert_eq!(held(&summary, "perfkit_resource_saturation"), Some(true));
    assert_eq!(held(&summary, "perfkit_resource_timeouts"), Some(true));
    let peak = summary["metrics"]["perfkit_resource_in_use"]["values"]["max"]
        .as_f64()
        .unwrap();
    assert!(
        (1.0..50.0).contains(&peak),
        "connections were used, never all: peak {peak}"
    );
    let stopped = svc.stop();
    assert_eq!(stopped.dropped, 0, "{stopped:?}");
    let in_db: u64 = pg
        .psql("SELECT value FROM meta WHERE key = 'events_applied'")
        .parse()
        .unwrap();
    assert_eq!(
        in_db, stopped.applied,
        "every applied event is in PostgreSQL"
    );
    let summed: u64 = pg.psql("SELECT count(*) FROM progress").parse().unwrap();
    assert!(summed > 0, "per-user totals written");
    let r = report(&dir.join("healthy"));
    let row = r["configuration"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["kind"] == "connection_pool")
        .unwrap_or_else(|| panic!("no connection pool row: {:#}", r["configuration"]));
    assert_eq!(row["name"], "db");
    assert_eq!(row["settings"]["pool"], "deadpool");
    assert_eq!(row["settings"]["max"], 50);

    // Two connections, each read holding one for 60 ms in PostgreSQL (pg_sleep): saturated.
    let svc = start_service(
        &dir.join("ingest-small.log"),
        &[
            ("INGEST_DATABASE_URL", pg.url.as_str()),
            ("INGEST_DB_POOL", "2"),
            ("INGEST_QUERY_DELAY_MS", "60"),
        ],
    );
    let (code, summary) = run_gate(&svc, &dir.join("small"), &[]);
    let crossed = failed(code, &summary);
    assert_crossed(&crossed, &["perfkit_resource_saturation"]);
    let r = report(&dir.join("small"));
    let pool = finding(&r, "`db` connection pool saturated");
    assert!(
        pool["evidence"].as_str().unwrap().contains("at 2/2"),
        "{pool}"
    );
    let waiters = summary["metrics"]["perfkit_resource_waiters"]["values"]["max"]
        .as_f64()
        .unwrap();
    assert!(waiters >= 1.0, "deadpool counts its waiters: {waiters}");
    let stopped = svc.stop();
    assert_eq!(stopped.dropped, 0, "{stopped:?}");
}
