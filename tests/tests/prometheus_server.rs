//! A real Prometheus server (Debian's `prometheus`, its own config and storage in a temp
//! dir, 1 s scrapes) scraping the example service under load, with the rules shipped in
//! `docs/prometheus/` loaded: every rule evaluates without error, every recording rule and
//! every alert's expression reads real series, and so does every panel of the Grafana
//! dashboard in `docs/grafana/`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::ingest::{post_events, start_service};
use common::prometheus::Prometheus;

#[test]
#[ignore = "needs Debian's prometheus and a built ingest binary; scripts/test.sh installs and builds them and runs ignored tests"]
fn a_real_prometheus_evaluates_the_shipped_rules_on_the_example() {
    let dir = common::results_dir("prometheus_server");
    let svc = start_service(&dir.join("ingest.log"), &[]);
    let rules_path = common::workspace_root().join("docs/prometheus/perfkit-rules.yml");
    let prom = Prometheus::start(&dir, "perfkit", &[svc.debug], &[&rules_path]);

    // Load: events and reads, so every primitive's series move.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let app = svc.app;
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let user = format!("u{}", i % 50);
                post_events(app, 20, &user);
                let _ = common::get(app, &format!("/v1/progress/{user}"));
                i += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let rules = std::fs::read_to_string(&rules_path).unwrap();
    let recorded: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: ").map(str::to_owned))
        .collect();
    let alerts = common::alert_rules(&rules);
    // Every recording rule and every alert's expression (its threshold left off) has data.
    // An error ratio has none while no request failed: its denominator is checked instead.
    let wanted: Vec<(String, String)> = recorded
        .iter()
        .map(|r| {
            let q = if r.contains("errors") {
                "sum by (instance, job, method, route) (rate(http_server_request_duration_seconds_count[5m]))".to_owned()
            } else {
                r.clone()
            };
            (r.clone(), q)
        })
        .chain(alerts.iter().map(|(name, _, head, _)| {
            let q = match head.split_once(" / ") {
                Some((_, total)) if head.contains("5..") => total.to_owned(),
                _ => head.clone(),
            };
            (name.clone(), q)
        }))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut missing: Vec<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
    while !missing.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        missing = wanted
            .iter()
            .filter(|(_, q)| prom.query(q).is_empty())
            .map(|(n, _)| n.as_str())
            .collect();
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(
        missing.is_empty(),
        "no data for {missing:?}; scraped: {:?}",
        prom.query("count by (__name__) ({job=\"perfkit\"})").len()
    );
    let up = prom.query("up{job=\"perfkit\"}");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    // Prometheus asks for OpenMetrics first: the scrapes it got parsed without error.
    let targets = prom.get("/api/v1/targets");
    let target = &targets["data"]["activeTargets"][0];
    assert_eq!(target["health"], "up", "{target}");
    assert_eq!(target["lastError"], "", "{target}");

    // Every rule evaluated, without error.
    let groups = prom.get("/api/v1/rules");
    let mut n = 0;
    for g in groups["data"]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            n += 1;
            assert_eq!(r["health"], "ok", "{r}");
        }
    }
    assert_eq!(n, recorded.len() + alerts.len(), "{groups}");
    // The Grafana dashboard: importable JSON with an `instance` variable, each panel's
    // queries parse and return data for this instance (a 5xx share has none while no request
    // failed: its denominator is checked instead).
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            common::workspace_root().join("docs/grafana/perfkit-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let vars: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "instance"]);
    let mut ids = std::collections::HashSet::new();
    let mut queried = 0;
    let mut empty = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id: {p}"
        );
        assert!(p["gridPos"]["w"].as_u64().unwrap() > 0, "{p}");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            assert!(expr.contains("instance=~\"$instance\""), "{expr}");
            let q = expr
                .replace("$instance", &svc.debug.to_string())
                .replace("$__rate_interval", "1m");
            let q = match q.split_once(" / ") {
                Some((_, total)) if q.contains("5..") => total.to_owned(),
                _ => q,
            };
            queried += 1;
            if prom.query(&q).is_empty() {
                empty.push(format!("{}: {q}", p["title"]));
            }
        }
    }
    assert!(queried >= 20, "{queried} queries");
    assert!(empty.is_empty(), "panels without data: {empty:#?}");

    // A healthy example under light load: nothing fires.
    let firing = prom.query("ALERTS{alertstate=\"firing\"}");
    assert!(firing.is_empty(), "{firing:?}");
    drop(prom);
    let stopped = svc.stop();
    assert_eq!(stopped.dropped, 0, "{stopped:?}");
}
