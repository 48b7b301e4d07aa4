//! `/metrics` as OpenMetrics when the scraper asks for it (Prometheus' own `Accept` header),
//! read by the reference parser (PyPI `prometheus_client`'s OpenMetrics parser): perfkit's
//! families of every kind, the process and runtime ones and the service's own facade
//! metrics, counters named without `_total`, units, `# EOF`; gzip too. Without the header
//! the Prometheus text stays the answer.

mod common;

use std::io::Read as _;
use std::process::Command;
use std::time::Duration;

/// What Prometheus 2.42 sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Parses `text` with `prometheus_client`'s OpenMetrics parser: one `name type unit` line
/// per family, or the parser's error.
fn reference_parse(text: &str) -> Result<Vec<String>, String> {
    let python = common::tool(
        "OM_PYTHON",
        "perfkit-om-python-not-on-path",
        &[common::workspace_root().join(".venv/bin/python")],
    );
    let dir = std::env::temp_dir().join(format!("perfkit-om-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("metrics.om");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(python)
        .args([
            "-c",
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\nfor f in parse(open(sys.argv[1]).read()):\n    print(f.name, f.type, f.unit or '-', len(f.samples))",
        ])
        .arg(&file)
        .output()
        .expect("run python");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
#[ignore = "needs the prometheus_client parser (PyPI); scripts/test.sh installs it into .venv and runs ignored tests"]
fn prometheus_gets_openmetrics_that_the_reference_parser_accepts() {
    let server = perfkit::Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .start()
        .expect("debug server starts");
    let addr = server.local_addr();
    let rt = common::runtime(2);
    // A primitive of each kind, with something recorded.
    let (tx, mut rx) = perfkit::queue::bounded::<u32>("om_events", 8);
    let lock = perfkit::sync::Mutex::new("om_lock", 0u32);
    let sem = perfkit::sync::Semaphore::new("om_calls", 2);
    rt.block_on(async {
        tx.send(1).await.unwrap();
        rx.recv().await.unwrap();
        *lock.lock().await += 1;
        drop(sem.acquire().await.unwrap());
    });
    metrics::describe_counter!("om_facade_jobs_total", "Jobs \"seen\" by the test.");
    metrics::counter!("om_facade_jobs_total").increment(3);
    metrics::gauge!("om_facade_depth").set(2.0);
    metrics::histogram!("om_facade_latency_seconds").record(0.25);
    std::thread::sleep(Duration::from_millis(50));

    let r = common::request(addr, "GET", "/metrics", &[("Accept", PROMETHEUS_ACCEPT)]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = r.text();
    assert!(
        text.ends_with("# EOF\n"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
    let families = reference_parse(&text).unwrap_or_else(|e| panic!("rejected: {e}\n{text}"));
    for want in [
        "perfkit_queue_enqueued counter - 2",
        "perfkit_queue_wait_seconds histogram seconds",
        "perfkit_queue_depth gauge -",
        "perfkit_lock_acquisitions counter -",
        "perfkit_lock_wait_seconds histogram seconds",
        "perfkit_semaphore_in_use gauge -",
        "process_cpu_seconds counter seconds",
        "process_resident_memory_bytes gauge bytes",
        "om_facade_jobs counter -",
        "om_facade_depth gauge -",
    ] {
        assert!(
            families.iter().any(|f| f.starts_with(want)),
            "no family {want:?} in {families:#?}"
        );
    }
    assert!(
        text.contains("# HELP om_facade_jobs Jobs \\\"seen\\\" by the test."),
        "{text}"
    );

    // `_created` after the series perfkit stores, a time in this process's life.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for prefix in [
        "perfkit_queue_enqueued_created{queue=\"om_events\"} ",
        "perfkit_queue_wait_seconds_created{queue=\"om_events\"} ",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
        let t: f64 = line[prefix.len()..].parse().unwrap();
        assert!((now - 60.0..=now).contains(&t), "{line}");
    }
    // Only in OpenMetrics: the text format has no `_created`.
    assert!(!common::get(addr, "/metrics").text().contains("_created"));

    // Gzipped, the same text.
    let gz = common::request(
        addr,
        "GET",
        "/metrics",
        &[("Accept", PROMETHEUS_ACCEPT), ("Accept-Encoding", "gzip")],
    );
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert!(unzipped.ends_with("# EOF\n"));
    assert!(reference_parse(&unzipped).is_ok());

    // Without the header, or preferring the text format: Prometheus text, no `# EOF`.
    for accept in [
        None,
        Some("text/plain;version=0.0.4"),
        Some("application/openmetrics-text;q=0.2,text/plain"),
    ] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        let r = common::request(addr, "GET", "/metrics", &headers);
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "{accept:?}"
        );
        let body = r.text();
        assert!(!body.contains("# EOF"));
        assert!(body.contains("# TYPE perfkit_queue_enqueued_total counter"));
    }
    drop((tx, rx, lock, sem));
    server.shutdown();
}
