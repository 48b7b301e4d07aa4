//! The capacity search (examples/k6/capacity.js) against the real example under real k6:
//! it stops at the first broken bound and names it, repeats within one level, and
//! scripts/gate.sh turns its verdict into the exit status.

mod common;

use std::path::Path;
use std::process::Command;

use common::gate::run_k6;
use common::ingest::start_service;

/// Runs a search against a fresh service started with `env` and returns capacity.json.
/// `extra` settings replace the short-level defaults of the same name.
fn search(dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> serde_json::Value {
    let svc = start_service(&dir.join("ingest.log"), env);
    let key = |kv: &str| kv.split('=').next().unwrap_or("").to_owned();
    let mut args: Vec<&str> = ["LEVEL=3s", "START_RATE=500", "STEP=1.5"]
        .into_iter()
        .filter(|d| !extra.iter().any(|e| key(e) == key(d)))
        .collect();
    args.extend_from_slice(extra);
    // run_k6 reads `<script>.json`: capacity.js writes its answer there.
    let (code, answer) = run_k6(&svc, "capacity", &dir.join("run"), &args);
    eprintln!("capacity.json: {answer:#}");
    // k6 stops the run at the limit (exit 99) or runs it to MAX_RATE (exit 0).
    match answer["verdict"].as_str() {
        Some("max_reached") => assert_eq!(code, 0),
        _ => assert_eq!(code, 99, "the run stopped at the broken level"),
    }
    let stopped = svc.stop();
    assert_eq!(stopped.accepted, stopped.applied + stopped.dropped);
    answer
}

fn levels(answer: &serde_json::Value) -> Vec<(u64, bool)> {
    answer["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["rate"].as_u64().unwrap(), l["held"].as_bool().unwrap()))
        .collect()
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn one_worker_stops_near_what_it_can_do_and_names_the_progress_pool_twice_alike() {
    let env = [("INGEST_WORKERS", "1"), ("INGEST_WORK_DELAY_US", "500")];
    let mut sustained = Vec::new();
    let mut dirs = Vec::new();
    for run in 0..2 {
        let dir = common::results_dir(&format!("k6_capacity_one_worker_{run}"));
        let a = search(&dir, &env, &["MAX_RATE=8000"]);
        assert_eq!(a["verdict"], "found", "{a:#}");
        let first = &a["first_broken"];
        assert_eq!(
            (first["section"].as_str(), first["name"].as_str()),
            (Some("pools"), Some("progress")),
            "{first:#}"
        );
        assert!(
            first["source"]
                .as_str()
                .unwrap()
                .contains("examples/src/pipeline.rs:"),
            "{first:#}"
        );
        // One worker spinning 500 µs per event does at most 2 000 events a second.
        let s = a["sustained_rate"].as_u64().unwrap();
        assert!((500..2000).contains(&s), "sustained {s} events/s");
        assert!(a["broken_rate"].as_u64().unwrap() <= 2531, "{a:#}");
        // The answer is in the run report too, the levels marked as phases.
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("run/report.json")).unwrap()).unwrap();
        assert_eq!(report["capacity"]["sustained_rate"], a["sustained_rate"]);
        assert!(
            report["run"]["phases"].as_array().unwrap().len() >= 2,
            "{:#}",
            report["run"]
        );
        // k6's own verdict is FAIL (the stop is an abortOnFail threshold); the report
        // carries the search's.
        assert_eq!(report["k6"]["verdict"], "PASS", "{:#}", report["k6"]);
        assert_eq!(report["k6"]["threshold_verdict"], "FAIL");
        let page = std::fs::read_to_string(dir.join("run/report.html")).unwrap();
        assert!(
            page.contains("<h2>Capacity</h2>"),
            "the page has the answer"
        );
        assert!(
            page.contains("capacity search: found."),
            "the verdict's note"
        );
        let h = a["headroom_at_sustained"].as_array().unwrap();
        assert!(
            h.iter()
                .any(|x| x["name"] == "progress" && x["section"] == "pools"),
            "{h:?}"
        );
        sustained.push(s);
        dirs.push(dir);
    }
    // The same search twice: within one level (STEP 1.5) of each other.
    let (lo, hi) = (
        sustained[0].min(sustained[1]),
        sustained[0].max(sustained[1]),
    );
    assert!(hi as f64 <= lo as f64 * 1.5 + 1.0, "{sustained:?}");
    // And the comparison script says so.
    let out = Command::new("python3")
        .arg(common::workspace_root().join("scripts/capacity-diff.py"))
        .args(dirs.iter().map(|d| d.join("run/capacity.json")))
        .output()
        .expect("run scripts/capacity-diff.py");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "sustained: {} -> {} events/s",
            sustained[0], sustained[1]
        )),
        "{text}"
    );
    assert!(text.contains("capacity moved: no"), "{text}");
    assert!(
        text.contains("first broken: `progress` pool saturated"),
        "{text}"
    );
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn a_first_level_that_breaks_is_a_limit_found_with_nothing_sustained() {
    let dir = common::results_dir("k6_capacity_first_level");
    let env = [("INGEST_WORKERS", "1"), ("INGEST_WORK_DELAY_US", "500")];
    // One worker cannot do 5 000 events a second: the first level breaks.
    let a = search(&dir, &env, &["START_RATE=5000", "MAX_RATE=8000"]);
    assert_eq!(a["verdict"], "found", "MIN_RATE is 0: {a:#}");
    assert!(a["sustained_rate"].is_null(), "{a:#}");
    assert_eq!(a["broken_rate"], 5000);
    assert!(!a["first_broken"].is_null(), "{a:#}");
    assert!(a["headroom_at_sustained"].as_array().unwrap().is_empty());
}

#[test]
#[ignore = "needs k6; scripts/test.sh installs it and runs ignored tests"]
fn bad_settings_stop_before_any_load_with_a_reason() {
    let root = common::workspace_root();
    let inspect = |setting: &str| {
        let out = Command::new(common::k6())
            .current_dir(&root)
            .args(["inspect", "-e", setting, "examples/k6/capacity.js"])
            .output()
            .expect("run k6 inspect");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (setting, reason) in [
        ("STEP=1", "-e STEP=1: expected a number above 1"),
        ("STEP=abc", "-e STEP=abc: expected a number above 1"),
        (
            "LEVEL=abc",
            "-e LEVEL=abc: expected a duration of 1s or more",
        ),
        (
            "LEVEL=500ms",
            "-e LEVEL=500ms: expected a duration of 1s or more",
        ),
        ("START_RATE=0", "-e START_RATE=0: expected a number >= 1"),
        ("MAX_RATE=100", "-e MAX_RATE=100: below START_RATE (200)"),
        (
            "MIN_RATE=30000",
            "-e MIN_RATE=30000: above MAX_RATE (20000)",
        ),
        ("BATCH=1000", "-e BATCH=1000: above START_RATE (200)"),
    ] {
        let (ok, err) = inspect(setting);
        assert!(!ok, "{setting} was accepted");
        assert!(err.contains(reason), "{setting}: {err}");
    }
    // k6's compound durations are accepted.
    let (ok, err) = inspect("LEVEL=1m30s");
    assert!(ok, "{err}");
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn a_slow_flush_names_the_db_batcher_or_the_events_queue() {
    let dir = common::results_dir("k6_capacity_slow_flush");
    let a = search(
        &dir,
        &[
            ("INGEST_FLUSH_DELAY_MS", "200"),
            ("INGEST_MAX_BATCH", "200"),
        ],
        &["MAX_RATE=8000"],
    );
    assert_eq!(a["verdict"], "found", "{a:#}");
    let first = &a["first_broken"];
    let named = (
        first["section"].as_str().unwrap_or(""),
        first["name"].as_str().unwrap_or(""),
    );
    assert!(
        matches!(
            named,
            ("batchers", "db") | ("queues", "db") | ("queues", "events")
        ),
        "{first:#}"
    );
    // 200 events per 200 ms flush: 1 000 events a second at most. A 3 s level can hide a
    // backlog that has not yet filled the queue in front of the flush, so the search may
    // report one level above that (1 125), never two (1 688).
    assert!(a["sustained_rate"].as_u64().unwrap() < 1688, "{a:#}");
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn defaults_reach_max_rate_or_stop_at_a_bound_and_say_which() {
    let dir = common::results_dir("k6_capacity_defaults");
    let a = search(&dir, &[], &["MAX_RATE=6000"]);
    eprintln!("defaults: {} -> levels {:?}", a["verdict"], levels(&a));
    match a["verdict"].as_str() {
        Some("max_reached") => {
            assert!(a["first_broken"].is_null());
            assert_eq!(a["sustained_rate"], levels(&a).last().unwrap().0);
        }
        Some("found") => assert!(!a["first_broken"].is_null(), "{a:#}"),
        other => panic!("{other:?}: {a:#}"),
    }
}

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn gate_sh_exits_0_on_a_limit_found_and_99_below_min_rate() {
    let root = common::workspace_root();
    // MIN_RATE=8000: one worker sustains far less (MIN_RATE may not exceed MAX_RATE).
    for (min, code) in [("0", 0), ("8000", 99)] {
        let dir = common::results_dir(&format!("k6_capacity_gate_sh_{min}"));
        let out = Command::new("bash")
            .current_dir(&root)
            .args([
                "scripts/gate.sh",
                "-e",
                "LEVEL=3s",
                "-e",
                "START_RATE=500",
                "-e",
                "MAX_RATE=8000",
            ])
            .args(["-e", &format!("MIN_RATE={min}")])
            .env("GATE_SCRIPT", "capacity")
            .env("K6", common::k6())
            .env("K6_WEB_DASHBOARD", "false")
            .env("RESULTS_DIR", &dir)
            .env("INGEST_ADDR", format!("127.0.0.1:{}", common::free_port()))
            .env("PERFKIT_ADDR", format!("127.0.0.1:{}", common::free_port()))
            .env("INGEST_DB", dir.join("events.db"))
            .env("INGEST_WORKERS", "1")
            .env("INGEST_WORK_DELAY_US", "500")
            .output()
            .expect("run scripts/gate.sh");
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("{err}");
        assert_eq!(out.status.code(), Some(code), "MIN_RATE={min}");
        let verdict = if code == 0 { "found" } else { "below_min" };
        assert!(err.contains(&format!("gate: capacity: {verdict}")), "{err}");
    }
}
