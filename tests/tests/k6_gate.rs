//! `examples/k6/gate.js` with real k6 against the real `ingest` binary: exit 0 on a healthy
//! service, exit 99 naming the crossed thresholds when the service is sick, and after every
//! run the events the API accepted are exactly those applied to SQLite plus those perfkit
//! counted as dropped.

mod common;

use common::gate::{assert_crossed, bottleneck, failed, report, run_gate, run_k6, verdicts};
use common::ingest::start_service;
use common::results_dir;

use std::path::Path;
use std::process::Command;

/// The gate's `handleSummary` saved the CPU profile taken mid-run and the live heap, and
/// the real `go tool pprof` reads them.
fn profiles_saved(results: &Path) {
    for svg in ["cpu.svg", "heap.svg"] {
        let body =
            std::fs::read_to_string(results.join(svg)).unwrap_or_else(|e| panic!("{svg}: {e}"));
        assert!(body.contains("<svg"), "{svg} is not an SVG");
    }
    let go = common::tool("GO", "go", &[]);
    for (file, kind) in [
        ("cpu.pb.gz", "Type: cpu"),
        ("heap.pb.gz", "Type: inuse_space"),
    ] {
        let path = results.join(file);
        let out = Command::new(&go)
            .args(["tool", "pprof", "-top"])
            .arg(&path)
            .env("HOME", results)
            .output()
            .expect("run go tool pprof");
        let top = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && top.contains(kind),
            "{file}: {top}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Every function named, and kept apart in pprof's default view: no hex-only frame,
        // no trait impl cut down to `::method`.
        for name in top
            .lines()
            .skip_while(|l| !l.contains("flat%"))
            .skip(1)
            .map(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" "))
        {
            assert!(
                !name.starts_with("0x") && !name.starts_with("::"),
                "{file}: {name:?} in\n{top}"
            );
        }
    }
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn gate_passes_on_a_healthy_service_and_fails_on_an_impossible_rss_threshold() {
    let dir = results_dir("k6_gate");
    let svc = start_service(&dir.join("ingest.log"), &[]);

    let (code, summary) = run_gate(&svc, &dir.join("healthy"), &[]);
    let v = verdicts(&summary);
    assert!(v.len() >= 5, "expected the gate's thresholds, got {v:?}");
    assert!(v.iter().all(|(_, _, ok)| *ok), "healthy run crossed: {v:?}");
    assert_eq!(code, 0);
    let polls = summary["metrics"]["perfkit_polls"]["values"]["count"]
        .as_f64()
        .unwrap();
    assert!(polls >= 3.0, "the poll scenario barely ran: {polls}");
    // The runtime's schedule delay was measured in every poll interval (and held its bound,
    // with the other verdicts above).
    let delay = &summary["metrics"]["perfkit_runtime_schedule_delay_p99_seconds"]["values"];
    eprintln!("healthy schedule delay p99 per poll interval: {delay}");
    assert!(delay["count"].as_f64().unwrap() >= 3.0, "{delay}");
    profiles_saved(&dir.join("healthy"));
    let r = report(&dir.join("healthy"));
    // The CPU profile taken mid-run names its hottest functions; a heap profile before it
    // and the one taken at the end give the live heap's growth by allocation site.
    let cpu = &r["profiles"]["cpu"];
    assert!(cpu["samples"].as_i64().unwrap() > 0, "{cpu:#}");
    assert!(!cpu["top_flat"].as_array().unwrap().is_empty(), "{cpu:#}");
    let heap = &r["profiles"]["heap"];
    assert!(heap["profiles"].as_u64().unwrap() >= 2, "{heap:#}");
    assert!(heap["growth_bytes"].is_i64(), "{heap:#}");
    // Headless Chromium renders the real report: not blank, plots drawn, a quiet console.
    // The screenshot stays as results/healthy/report.png.
    let shot = common::browser::render(
        &dir.join("healthy/report.html"),
        &dir.join("healthy/report.png"),
        1100,
        3000,
    );
    assert!(shot.console.is_empty(), "console: {:?}", shot.console);
    assert!(shot.inked() > 0.03, "blank: {:.2}%", shot.inked() * 100.0);
    assert!(
        shot.pixels_near([31, 95, 191], 24) > 300,
        "no plot lines on screen"
    );
    assert!(shot.dom.contains("k6 verdict"));
    // k6's own dashboard export sits next to it.
    let dashboard = std::fs::read_to_string(dir.join("healthy/k6-dashboard.html"))
        .unwrap_or_else(|e| panic!("k6-dashboard.html: {e}"));
    assert!(
        dashboard.len() > 10_000 && dashboard.contains("<html"),
        "{} bytes",
        dashboard.len()
    );
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["severity"] == "LOW"),
        "a healthy run has no finding above LOW: {:#}",
        r["findings"]
    );
    assert_eq!(r["k6"]["verdict"], "PASS");
    let kinds: Vec<(&str, &str)> = r["configuration"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap(),
                c["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for want in [
        ("queue", "events"),
        ("batcher", "db"),
        ("pool", "progress"),
        ("runtime", "main"),
    ] {
        assert!(kinds.contains(&want), "{want:?} not in {kinds:?}");
    }

    let (code, summary) = run_gate(&svc, &dir.join("impossible"), &["RSS_MAX_BYTES=1"]);
    assert_eq!(
        failed(code, &summary),
        ["perfkit_process_resident_memory_bytes"],
        "only the RSS threshold should cross"
    );

    let stopped = svc.stop();
    assert!(
        stopped.accepted >= 10_000,
        "two 8 s runs at 1 000 events/s: {stopped:?}"
    );
    assert_eq!(
        stopped.dropped, 0,
        "a healthy run drops nothing: {stopped:?}"
    );
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn a_slow_database_behind_a_small_dropping_queue_fails_on_queue_signals_and_loses_nothing() {
    let dir = results_dir("k6_gate_slow_db");
    // 100 slots, drop_newest, batches of 50 written 100 ms apart: at most ~500 events/s get
    // through against the gate's 1 000/s.
    let svc = start_service(
        &dir.join("ingest.log"),
        &[
            ("INGEST_QUEUE_CAPACITY", "100"),
            ("INGEST_QUEUE_POLICY", "drop_newest"),
            ("INGEST_MAX_BATCH", "50"),
            ("INGEST_FLUSH_DELAY_MS", "100"),
        ],
    );
    // Every flush waits 100 ms by design, so `db_flush`'s p99 sits near the gate's 250 ms
    // bound, and a write stall on a busy machine could cross it. This test is about the
    // queue's signals, so that bound is moved far above the injected delay.
    let (code, summary) = run_gate(&svc, &dir.join("run"), &["FLUSH_P99_MAX_MS=5000"]);
    let crossed = failed(code, &summary);
    assert_crossed(
        &crossed,
        &["perfkit_queue_saturation", "perfkit_queue_dropped"],
    );
    // The pool's workers wait on the full batcher, and a waiting worker is an occupied one:
    // the pool's saturation may cross too.
    assert!(
        crossed
            .iter()
            .all(|m| m.starts_with("perfkit_queue_") || m == "perfkit_pool_saturation"),
        "only queue and pool signals may cross, not http errors or latency: {crossed:?}"
    );
    // The report: the drop ranks first, and its cause is the `db` batcher's intake, the
    // bound that saturated first because its flushes do not keep up.
    let r = report(&dir.join("run"));
    let top = &r["findings"][0];
    assert_eq!(top["severity"], "CRITICAL", "{top}");
    assert_eq!(top["name"], "events", "{top}");
    assert!(
        top["evidence"].as_str().unwrap().contains("dropped"),
        "{top}"
    );
    let b = bottleneck(&r);
    assert_eq!(b["name"], "db", "{b}");
    assert!(
        b["evidence"].as_str().unwrap().contains("`db` batcher"),
        "{b}"
    );
    assert_eq!(top["consequence_of"], b["id"], "{top}");
    let stopped = svc.stop();
    assert!(stopped.dropped > 0, "{stopped:?}");
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn leaking_one_task_per_request_fails_on_task_growth_only() {
    let dir = results_dir("k6_gate_leak");
    let svc = start_service(&dir.join("ingest.log"), &[("INGEST_LEAK_TASKS", "1")]);
    let (code, summary) = run_gate(&svc, &dir.join("run"), &[]);
    let crossed = failed(code, &summary);
    assert_eq!(
        crossed,
        ["perfkit_tasks_alive_growth"],
        "only the growth gate crosses"
    );
    let growth = summary["metrics"]["perfkit_tasks_alive_growth"]["values"]["max"]
        .as_f64()
        .unwrap();
    assert!(
        growth > 100.0,
        "one leaked task per request: growth {growth}"
    );
    let r = report(&dir.join("run"));
    let leak = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "leaked-per-request")
        .unwrap_or_else(|| panic!("no finding on the leaking tasks: {:#}", r["findings"]));
    assert_eq!(leak["severity"], "HIGH");
    let evidence = leak["evidence"].as_str().unwrap();
    assert!(evidence.contains("grew from"), "{evidence}");
    assert!(
        evidence.contains("examples/src/http.rs:"),
        "the spawn site: {evidence}"
    );
    svc.stop();
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn one_slow_worker_fails_on_pool_saturation_and_loses_nothing() {
    let dir = results_dir("k6_gate_slow_worker");
    // One worker doing 950 µs of CPU work per event against the gate's 1 000 events/s: the
    // pool is busy about 95% of the time.
    let svc = start_service(
        &dir.join("ingest.log"),
        &[("INGEST_WORKERS", "1"), ("INGEST_WORK_DELAY_US", "950")],
    );
    let (code, summary) = run_gate(&svc, &dir.join("run"), &[]);
    let crossed = failed(code, &summary);
    assert_crossed(&crossed, &["perfkit_pool_saturation"]);
    assert!(
        crossed
            .iter()
            .all(|m| m.starts_with("perfkit_pool_") || m == "perfkit_queue_saturation"),
        "only the pool's signals may cross, not http errors, latency or drops: {crossed:?}"
    );
    let p95 = summary["metrics"]["perfkit_pool_saturation"]["values"]["p(95)"]
        .as_f64()
        .unwrap();
    assert!((0.9..=1.0).contains(&p95), "pool saturation p(95) {p95}");
    let r = report(&dir.join("run"));
    let b = bottleneck(&r);
    assert_eq!(
        b["name"], "progress",
        "the pool (or its queue) saturated first: {b}"
    );
    let stopped = svc.stop();
    assert_eq!(stopped.dropped, 0, "{stopped:?}");
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn a_starved_runtime_fails_on_its_schedule_delay() {
    let dir = results_dir("k6_gate_starved");
    // Eight pool workers each spin 20 ms of CPU per event on the service's own two runtime
    // threads: every other task (handlers included) waits for a thread.
    let svc = start_service(
        &dir.join("ingest.log"),
        &[
            ("INGEST_WORKERS", "8"),
            ("INGEST_WORK_DELAY_US", "20000"),
            ("INGEST_SHUTDOWN_TIMEOUT_MS", "3000"),
        ],
    );
    let (code, summary) = run_gate(&svc, &dir.join("run"), &[]);
    let crossed = failed(code, &summary);
    assert_crossed(&crossed, &["perfkit_runtime_schedule_delay_p99_seconds"]);
    let late = summary["metrics"]["perfkit_runtime_schedule_delay_p99_seconds"]["values"]["max"]
        .as_f64()
        .unwrap();
    assert!(late > 0.25, "the probe was late by {late} s at most");
    let busy = summary["metrics"]["perfkit_runtime_busy_ratio"]["values"]["max"]
        .as_f64()
        .unwrap();
    // Near 1 when the machine is the service's; a test running alongside on the same two
    // cores slows k6 too, and fewer events keep the workers less busy (0.64 seen). A healthy
    // run reads a few percent.
    assert!(busy > 0.5, "the workers were busy: {busy}");
    let r = report(&dir.join("run"));
    let starved = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["section"] == "runtimes" && f["name"] == "main")
        .unwrap_or_else(|| panic!("no runtime finding: {:#}", r["findings"]));
    assert_eq!(starved["severity"], "HIGH", "{starved}");
    assert_eq!(starved["category"], "Concurrency");
    svc.stop();
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn a_flush_slower_than_its_bound_fails_on_the_flush_hot_path_p99_only() {
    let dir = results_dir("k6_gate_slow_flush");
    // Every flush sleeps 20 ms; the gate allows a p99 of 10 ms.
    let svc = start_service(&dir.join("ingest.log"), &[("INGEST_FLUSH_DELAY_MS", "20")]);
    let (code, summary) = run_gate(&svc, &dir.join("run"), &["FLUSH_P99_MAX_MS=10"]);
    assert_eq!(
        failed(code, &summary),
        ["perfkit_hot_path_p99_seconds{function:db_flush}"]
    );
    let p99 =
        summary["metrics"]["perfkit_hot_path_p99_seconds{function:db_flush}"]["values"]["max"]
            .as_f64()
            .unwrap();
    assert!(
        p99 >= 0.02,
        "db_flush p99 {p99} s with a 20 ms delay per flush"
    );
    svc.stop();
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn a_late_regression_fails_on_the_window_p99_while_the_lifetime_p99_holds() {
    let dir = results_dir("k6_gate_late_regression");
    // One event per flush, fast for 25 s (about 50 flushes a second), then every flush
    // sleeps 1 s: a few slow flushes at the end of a 30 s run, well under 1% of all.
    let svc = start_service(
        &dir.join("ingest.log"),
        &[
            ("INGEST_MAX_BATCH", "1"),
            ("INGEST_FLUSH_DELAY_MS", "1000"),
            ("INGEST_SLOW_AFTER_S", "25"),
            ("INGEST_SHUTDOWN_TIMEOUT_MS", "3000"),
        ],
    );
    let (code, summary) = run_k6(
        &svc,
        "gate",
        &dir.join("run"),
        &[
            "DURATION=30s",
            "EVENTS_RATE=5",
            "PROGRESS_RATE=5",
            "PROFILE_SECONDS=0",
        ],
    );
    assert_eq!(
        failed(code, &summary),
        ["perfkit_hot_path_p99_seconds{function:db_flush}"]
    );
    let window =
        summary["metrics"]["perfkit_hot_path_p99_seconds{function:db_flush}"]["values"]["max"]
            .as_f64()
            .unwrap();
    // A 1 s flush, reported at its bucket's midpoint (within 6.25%).
    assert!(window >= 0.9, "the worst window's p99: {window} s");
    // The lifetime p99 at the end of the run: the slow flushes are too few to move it.
    let snap = common::get(svc.debug, "/debug/perfkit/snapshot").json();
    let flush = common::entry(&snap, "hot_paths", "db_flush");
    let lifetime = flush["seconds"]["p99"].as_f64().unwrap();
    let calls = flush["calls"].as_u64().unwrap();
    eprintln!("db_flush: {calls} calls, lifetime p99 {lifetime} s, worst window p99 {window} s");
    assert!(
        lifetime < 0.25,
        "lifetime p99 {lifetime} s over {calls} calls: the gate on it would have passed"
    );
    svc.stop();
}

const PHASES: [&str; 5] = ["baseline", "scale_up", "combined", "stress", "recovery"];

/// Samples a (sub-)metric got in a run; thresholds on an empty Trend pass silently.
fn samples(summary: &serde_json::Value, metric: &str) -> f64 {
    let v = &summary["metrics"][metric]["values"];
    v["count"]
        .as_f64()
        .unwrap_or_else(|| panic!("no count for {metric}: {v}"))
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn phases_hold_phase_by_phase_on_a_healthy_service() {
    let dir = results_dir("k6_phases");
    let svc = start_service(&dir.join("ingest.log"), &[]);
    let (code, summary) = run_k6(&svc, "phases", &dir.join("run"), &["PHASE=8s"]);
    let v = verdicts(&summary);
    for phase in PHASES {
        for metric in [
            format!("http_req_duration{{phase:{phase}}}"),
            format!("http_req_failed{{phase:{phase}}}"),
            format!("perfkit_queue_saturation{{phase:{phase}}}"),
            format!("perfkit_queue_dropped{{phase:{phase}}}"),
            format!("perfkit_http_5xx{{phase:{phase}}}"),
        ] {
            let found = v.iter().find(|(m, _, _)| *m == metric);
            assert!(matches!(found, Some((_, _, true))), "{metric}: {found:?}");
        }
        // Each phase really got requests and polls of its own.
        assert!(samples(&summary, &format!("http_req_duration{{phase:{phase}}}")) > 0.0);
        assert!(
            samples(
                &summary,
                &format!("perfkit_queue_saturation{{phase:{phase}}}")
            ) > 0.0,
            "{phase}"
        );
    }
    assert_eq!(code, 0, "{v:?}");
    // The report marks where each phase began, from the scenarios' start times.
    let r = report(&dir.join("run"));
    let names: Vec<&str> = r["run"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, PHASES, "{:#}", r["run"]);
    let starts: Vec<i64> = r["run"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["start_at_seconds"].as_i64().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| (7..=9).contains(&(w[1] - w[0]))),
        "8 s apart: {starts:?}"
    );
    let page = std::fs::read_to_string(dir.join("run/report.html")).unwrap();
    assert!(page.contains("Dashed lines mark the k6 phases: <b>baseline</b>"));
    let stopped = svc.stop();
    assert_eq!(stopped.dropped, 0, "{stopped:?}");
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn a_database_too_slow_for_the_stress_phase_fails_only_in_the_stress_phase() {
    let dir = results_dir("k6_phases_slow_db");
    // Batches of at most 100 events, each flush 50 ms: about 2 000 events/s get through.
    // Baseline sends 500/s and combined 1 500/s; stress sends 3 000/s.
    let svc = start_service(
        &dir.join("ingest.log"),
        &[
            ("INGEST_QUEUE_CAPACITY", "512"),
            ("INGEST_QUEUE_POLICY", "drop_newest"),
            ("INGEST_MAX_BATCH", "100"),
            ("INGEST_FLUSH_DELAY_MS", "50"),
        ],
    );
    let (code, summary) = run_k6(&svc, "phases", &dir.join("run"), &["PHASE=8s"]);
    let crossed = failed(code, &summary);
    assert_crossed(&crossed, &["perfkit_queue_dropped{phase:stress}"]);
    assert!(
        crossed
            .iter()
            .all(|m| m.contains("phase:stress") || m.contains("phase:recovery")),
        "baseline, scale-up and combined hold: {crossed:?}"
    );
    assert!(
        crossed
            .iter()
            .all(|m| !m.starts_with("http_req_failed") && !m.starts_with("perfkit_http_5xx")),
        "no HTTP errors, only queue signals: {crossed:?}"
    );
    let stopped = svc.stop();
    assert!(stopped.dropped > 0, "{stopped:?}");
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn soak_holds_on_a_healthy_service_and_a_leak_fails_it_on_growth_only() {
    let dir = results_dir("k6_soak");
    let soak = ["DURATION=20s", "WARMUP=5s", "POLL_EVERY=2s"];

    let svc = start_service(&dir.join("healthy.log"), &[]);
    let (code, summary) = run_k6(&svc, "soak", &dir.join("healthy"), &soak);
    let v = verdicts(&summary);
    assert!(v.iter().all(|(_, _, ok)| *ok), "{v:?}");
    assert_eq!(code, 0);
    for growth in [
        "perfkit_process_rss_growth_bytes",
        "perfkit_heap_growth_bytes",
        "perfkit_tasks_alive_growth",
    ] {
        assert!(samples(&summary, growth) >= 5.0, "{growth} was sampled");
    }
    let stopped = svc.stop();
    assert_eq!(stopped.dropped, 0, "{stopped:?}");

    let svc = start_service(&dir.join("leak.log"), &[("INGEST_LEAK_TASKS", "1")]);
    let (code, summary) = run_k6(&svc, "soak", &dir.join("leak"), &soak);
    assert_eq!(failed(code, &summary), ["perfkit_tasks_alive_growth"]);
    svc.stop();
}

/// README command 1, `bash scripts/gate.sh`, end to end: it builds (a no-op after the suite's
/// build), starts the service, gates a short run, stops the service, and says where the
/// report, the profiles and k6's dashboard went, with the report's three-line digest.
#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn the_gate_script_prints_the_digest_and_keeps_the_report_and_the_dashboard() {
    let dir = results_dir("gate_sh");
    let root = common::workspace_root();
    let k6 = common::k6();
    let out = Command::new("bash")
        .current_dir(&root)
        .args([
            "scripts/gate.sh",
            "-e",
            "DURATION=6s",
            "-e",
            "PROFILE_SECONDS=2",
        ])
        .env("K6", &k6)
        .env("RESULTS_DIR", &dir)
        .env("INGEST_ADDR", format!("127.0.0.1:{}", common::free_port()))
        .env("PERFKIT_ADDR", format!("127.0.0.1:{}", common::free_port()))
        .env("INGEST_DB", dir.join("events.db"))
        .output()
        .expect("run scripts/gate.sh");
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(0), "gate.sh failed");
    for line in [
        "gate: PASS: every threshold held",
        &format!("gate: report: {}/report.html", dir.display()),
        &format!("gate: k6 dashboard: {}/k6-dashboard.html", dir.display()),
        "gate: verdict: PASS",
        "gate: top finding: ",
        "gate: bottleneck: none (no bound saturated)",
    ] {
        assert!(err.contains(line), "{line:?} not printed");
    }
    for file in [
        "report.html",
        "report.json",
        "k6-dashboard.html",
        "gate.json",
        "cpu.pb.gz",
    ] {
        assert!(dir.join(file).is_file(), "{file} not kept");
    }
}
