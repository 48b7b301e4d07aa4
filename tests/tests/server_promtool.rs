//! `promtool check metrics` (the real Prometheus linter) on a live server's `/metrics`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use perfkit::metrics::{Collection, Collector, names, registry};

struct Gauges;

impl Collector for Gauges {
    fn collect(&self, out: &mut Collection) {
        out.push(&names::QUEUE_DEPTH, &["events", "", ""], 12.0);
        out.push(&names::QUEUE_CAPACITY, &["events", "", ""], 1024.0);
        // A pool's queue carries the pool's name: an empty label is left out, a set one is
        // written, and both lint clean.
        out.push(&names::QUEUE_DEPTH, &["workers", "workers", ""], 3.0);
        out.push(&names::POOL_BUSY, &["workers"], 1.0);
    }
}

#[test]
#[ignore = "needs promtool (Debian package `prometheus`); scripts/test.sh installs it and runs ignored tests"]
fn promtool_accepts_metrics_output() {
    let promtool = common::tool("PROMTOOL", "promtool", &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let server = perfkit::Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .runtime("main", rt.handle().clone())
        .start()
        .unwrap();

    // One series of every kind perfkit writes: stored counters and histograms, collected
    // gauges, process, runtime, overflow, and the facade's counters, gauges and histograms.
    let r = registry();
    r.counter(&names::QUEUE_ENQUEUED_TOTAL, &["events", "", ""])
        .add(5);
    r.counter(&names::QUEUE_DROPPED_TOTAL, &["events", "", "", "full"])
        .inc();
    r.histogram(&names::QUEUE_WAIT_SECONDS, &["events", "", ""])
        .record(1_500_000);
    r.histogram(&names::BATCH_SIZE, &["db"]).record(420);
    let gauges: Arc<dyn Collector> = Arc::new(Gauges);
    r.register_collector(Arc::downgrade(&gauges));
    r.set_cardinality_cap(2);
    for i in 0..3 {
        r.counter(&names::TASKS_SPAWNED_TOTAL, &[&format!("t{i}")])
            .inc();
    }
    metrics::describe_counter!("app_requests_total", "Requests served.");
    metrics::counter!("app_requests_total", "route" => "/x").increment(3);
    metrics::describe_gauge!("app_connections", "Open connections.");
    metrics::gauge!("app_connections").set(4.0);
    metrics::describe_histogram!("app_latency_seconds", metrics::Unit::Seconds, "Latency.");
    metrics::histogram!("app_latency_seconds").record(0.01);

    let body = common::get(server.local_addr(), "/metrics").body;
    let text = String::from_utf8(body.clone()).unwrap();
    for needle in [
        "perfkit_queue_wait_seconds_bucket",
        "perfkit_queue_depth{queue=\"events\"} 12",
        "perfkit_queue_depth{queue=\"workers\",pool=\"workers\"} 3",
        "perfkit_metric_overflow_total",
        "tokio_runtime_workers{runtime=\"main\"} 2",
        "process_cpu_seconds_total",
        "app_requests_total{route=\"/x\"} 3",
        "app_latency_seconds",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }

    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({:?}):\n{}{}\n--- metrics ---\n{text}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The alerting and recording rules shipped in `docs/prometheus/` pass `promtool check
/// rules` and their unit tests; each alert fires on a sick series and stays silent on a
/// healthy one, and raising any alert's threshold makes its test fail.
#[test]
#[ignore = "needs promtool (Debian package `prometheus`); scripts/test.sh installs it and runs ignored tests"]
fn the_shipped_alert_rules_are_checked_and_each_threshold_is_tested() {
    let promtool = common::tool("PROMTOOL", "promtool", &[]);
    let dir = common::workspace_root().join("docs/prometheus");
    let run = |args: &[&str], cwd: &std::path::Path| {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(cwd)
            .output()
            .expect("run promtool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = run(&["check", "rules", "perfkit-rules.yml"], &dir);
    assert!(ok, "{text}");
    let (ok, text) = run(&["test", "rules", "perfkit-rules.test.yml"], &dir);
    assert!(ok, "{text}");

    let rules = std::fs::read_to_string(dir.join("perfkit-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("perfkit-rules.test.yml")).unwrap();
    let lines: Vec<&str> = rules.lines().collect();
    let scratch = common::results_dir("promtool_rules");
    std::fs::write(scratch.join("perfkit-rules.test.yml"), &tests).unwrap();
    let alerts = common::alert_rules(&rules);
    for (name, e, _, threshold) in &alerts {
        assert!(
            tests.matches(&format!("alertname: {name}")).count() >= 2,
            "{name}: tested firing and silent"
        );
        let t: f64 = threshold
            .parse()
            .unwrap_or_else(|_| panic!("{name}: threshold {threshold:?}"));
        // Raised far past every sick series, the alert no longer fires; moved below every
        // value, it fires on the healthy series too (so that test reads real series).
        for moved in [if t == 0.0 { 1000.0 } else { t * 1000.0 }, -1.0] {
            let mut mutated: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            let line = lines[*e];
            let cut = line.rfind(threshold.as_str()).unwrap();
            mutated[*e] = format!("{}{moved}", &line[..cut]);
            std::fs::write(scratch.join("perfkit-rules.yml"), mutated.join("\n")).unwrap();
            let (ok, text) = run(&["test", "rules", "perfkit-rules.test.yml"], &scratch);
            assert!(
                !ok && text.contains(name.as_str()),
                "{name} with its threshold moved to {moved} still passes its tests: {text}"
            );
        }
    }
    let alerts = alerts.len();
    assert!(alerts >= 13, "{alerts} alerts");
}
