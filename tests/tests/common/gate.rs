//! Running the example's k6 scripts against an `ingest` service and reading their verdicts:
//! exit codes, crossed thresholds, and the run report the script saved.

use std::path::Path;
use std::process::Command;

use super::ingest::Service;

/// Runs gate.js (8 s) and returns k6's exit code and the parsed summary JSON.
pub fn run_gate(svc: &Service, results: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["DURATION=8s"];
    args.extend_from_slice(extra);
    run_k6(svc, "gate", results, &args)
}

/// Runs `examples/k6/<script>.js` with `-e` settings and returns k6's exit code and the
/// summary JSON the script's `handleSummary` wrote (`<script>.json`).
pub fn run_k6(
    svc: &Service,
    script: &str,
    results: &Path,
    extra: &[&str],
) -> (i32, serde_json::Value) {
    let base = format!("BASE_URL={}", svc.base_url);
    let perfkit = format!("PERFKIT_URL={}", svc.perfkit_url);
    let mut all = vec![base.as_str(), perfkit.as_str()];
    all.extend_from_slice(extra);
    run_script(script, results, &all)
}

/// Runs `examples/k6/<script>.js` with only the given `-e` settings (and `RESULTS_DIR`), and
/// returns k6's exit code and the summary JSON (`<script>.json`).
pub fn run_script(script: &str, results: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let root = super::workspace_root();
    let k6 = super::k6();
    std::fs::create_dir_all(results).unwrap(); // k6 does not create it for handleSummary
    let mut cmd = Command::new(k6);
    cmd.current_dir(&root)
        // No REST API server: k6 runs in parallel tests would race for its port (6565),
        // and the loser logs "Error from API server".
        .args(["run", "--quiet", "--no-usage-report", "--address", ""])
        .args(["-e", &format!("RESULTS_DIR={}", results.display())])
        // k6's web dashboard, exported when the run ends (port -1: no server), as
        // scripts/gate.sh does.
        .env("K6_WEB_DASHBOARD", "true")
        .env("K6_WEB_DASHBOARD_PORT", "-1")
        .env("K6_WEB_DASHBOARD_PERIOD", "1s")
        .env("K6_WEB_DASHBOARD_EXPORT", results.join("k6-dashboard.html"));
    for e in extra {
        cmd.args(["-e", e]);
    }
    let out = cmd
        .arg(format!("examples/k6/{script}.js"))
        .output()
        .expect("run k6");
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "k6 exit {code}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = std::fs::read(results.join(format!("{script}.json")))
        .unwrap_or_else(|e| panic!("no {script}.json in {}: {e}", results.display()));
    (code, serde_json::from_slice(&summary).unwrap())
}

/// Threshold verdicts from k6's summary: (metric, expression, ok).
pub fn verdicts(summary: &serde_json::Value) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for (metric, m) in summary["metrics"].as_object().unwrap() {
        if let Some(th) = m["thresholds"].as_object() {
            for (expr, v) in th {
                out.push((metric.clone(), expr.clone(), v["ok"].as_bool().unwrap()));
            }
        }
    }
    out
}

/// The metrics whose thresholds crossed in a run that k6 failed on them (exit 99).
pub fn failed(code: i32, summary: &serde_json::Value) -> Vec<String> {
    assert_eq!(code, 99, "k6 exits 99 when a threshold is crossed");
    crossed(summary)
}

/// Asserts that each of `metrics` is among the crossed ones.
pub fn assert_crossed(crossed: &[String], metrics: &[&str]) {
    for m in metrics {
        assert!(
            crossed.iter().any(|c| c == m),
            "{m} did not cross: {crossed:?}"
        );
    }
}

/// The metrics whose thresholds crossed.
pub fn crossed(summary: &serde_json::Value) -> Vec<String> {
    verdicts(summary)
        .into_iter()
        .filter(|(_, _, ok)| !ok)
        .map(|(m, _, _)| m)
        .collect()
}

/// The run report the script's `handleSummary` saved (`report.json`), with every section.
pub fn report(results: &Path) -> serde_json::Value {
    let path = results.join("report.json");
    let r: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    for section in [
        "run",
        "configuration",
        "crash_exposure",
        "findings",
        "headroom",
        "signals",
        "profiles",
        "k6",
    ] {
        assert!(!r[section].is_null(), "no {section} in the report: {r:#}");
    }
    // The page: the server's HTML with k6's section where the marker was, every finding.
    let page = std::fs::read_to_string(results.join("report.html"))
        .unwrap_or_else(|e| panic!("report.html: {e}"));
    assert!(
        !page.contains("<!--perfkit:k6-->") && page.contains("<h2>k6 verdict:"),
        "k6's section is not in the page"
    );
    assert!(
        page.contains("<code>http_req_duration</code>"),
        "client latency"
    );
    assert!(page.matches("<svg").count() >= 3, "the page has no plots");
    for f in r["findings"].as_array().unwrap() {
        let id = f["id"].as_str().unwrap();
        assert!(
            page.contains(&format!("<tr><td>{id}</td>")),
            "{id} not in the page"
        );
    }
    assert!(
        r["run"]["seconds_recorded"].as_u64().unwrap() >= 5,
        "{:#}",
        r["run"]
    );
    eprintln!(
        "report findings: {:#}\nbottleneck: {}",
        r["findings"], r["bottleneck"]
    );
    r
}

/// The report's finding that is its bottleneck.
pub fn bottleneck(r: &serde_json::Value) -> &serde_json::Value {
    let id = r["bottleneck"]
        .as_str()
        .unwrap_or_else(|| panic!("no bottleneck: {:#}", r["findings"]));
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .unwrap()
}
