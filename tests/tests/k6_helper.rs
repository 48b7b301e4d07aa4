//! The k6 helper's own arithmetic, run by the real k6: per-interval quantiles from the
//! snapshot's cumulative buckets.

mod common;

#[test]
#[ignore = "needs k6; scripts/test.sh installs it and runs ignored tests"]
fn interval_quantiles_come_from_bucket_differences() {
    let root = common::workspace_root();
    let dir = common::results_dir("k6_helper");
    let (code, text) = common::run_k6_script(
        &dir,
        &format!(
            r#"import {{ bucketDelta, bucketQuantile }} from 'file://{}';
export const options = {{ iterations: 1, vus: 1 }};
function eq(got, want, what) {{
  if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`${{what}}: got ${{JSON.stringify(got)}}, want ${{JSON.stringify(want)}}`);
}}
export default function () {{
  // 1 000 fast samples over the life of the process, then 30 slow ones in the last interval.
  const before = [[0.001, 990], [0.002, 10]];
  const now = [[0.001, 1000], [0.002, 10], [2.0, 30]];
  eq(bucketQuantile(now, 0.99), 2.0, 'lifetime p99 (1 040 samples, 30 slow)');
  eq(bucketDelta(now, before), [[0.001, 10], [2.0, 30]], 'the interval');
  eq(bucketQuantile(bucketDelta(now, before), 0.99), 2.0, 'interval p99');
  eq(bucketQuantile(bucketDelta(now, before), 0.25), 0.001, 'interval p25');
  // A late regression the lifetime p99 hides: 5 slow samples after 10 000 fast ones.
  const later = [[0.001, 10000], [2.0, 5]];
  eq(bucketQuantile(later, 0.99), 0.001, 'lifetime p99 hides it');
  eq(bucketQuantile(bucketDelta(later, [[0.001, 9990]]), 0.99), 2.0, 'the interval shows it');
  // No samples in the interval: no quantile (no Trend sample, rather than a false 0).
  eq(bucketQuantile(bucketDelta(before, before), 0.99), null, 'empty interval');
  eq(bucketDelta(now, undefined), now, 'first poll: everything so far');
}}
"#,
            root.join("perfkit/k6/perfkit.js").display()
        ),
    );
    assert!(code == 0 && !text.contains("Error"), "{text}");
}

/// `pollEach` keeps each instance's counter deltas apart: polling an instance that dropped
/// items and one that did not, in turn, counts the drops once, each under its instance.
#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs and builds them and runs ignored tests"]
fn poll_each_counts_every_instance_once() {
    use std::io::Write;
    let root = common::workspace_root();
    let dir = common::results_dir("k6_helper_poll_each");
    let sick = common::ingest::start_service(
        &dir.join("sick.log"),
        &[
            ("INGEST_QUEUE_CAPACITY", "100"),
            ("INGEST_QUEUE_POLICY", "drop_newest"),
            ("INGEST_MAX_BATCH", "50"),
            ("INGEST_FLUSH_DELAY_MS", "100"),
        ],
    );
    let healthy = common::ingest::start_service(&dir.join("healthy.log"), &[]);
    // A burst the small queue cannot hold: some of it is dropped.
    let event = r#"{"user_id":"u1","stat":"kills","value":1}"#;
    let body = format!("[{}]", vec![event; 500].join(","));
    for _ in 0..6 {
        let mut s = std::net::TcpStream::connect(sick.app).unwrap();
        write!(
            s,
            "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let _ = std::io::Read::read_to_end(&mut s, &mut Vec::new());
    }
    let dropped = |svc: &common::ingest::Service| -> f64 {
        let snap = common::get(svc.debug, "/debug/perfkit/snapshot").json();
        let q = common::entry(&snap, "queues", "events");
        q["dropped"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum()
    };
    let total = dropped(&sick);
    assert!(total > 0.0, "the burst dropped nothing");
    assert_eq!(dropped(&healthy), 0.0);
    let out = dir.join("counts.json");
    let (code, text) = common::run_k6_script(
        &dir,
        &format!(
            r#"import {{ pollEach }} from 'file://{helper}';
export const options = {{
  iterations: 4,
  vus: 1,
  // Submetrics appear in the summary only with a threshold of their own.
  thresholds: {{
    'perfkit_queue_dropped{{instance:{sick}}}': ['count>=0'],
    'perfkit_queue_dropped{{instance:{healthy}}}': ['count>=0'],
  }},
}};
export default function () {{
  pollEach({{ urls: ['{a}', '{b}'] }});
}}
export function handleSummary(data) {{
  const m = (name) => (data.metrics[name] ? data.metrics[name].values : null);
  return {{ '{out}': JSON.stringify({{
    dropped: m('perfkit_queue_dropped'),
    sick: m('perfkit_queue_dropped{{instance:{sick}}}'),
    healthy: m('perfkit_queue_dropped{{instance:{healthy}}}'),
    polls: m('perfkit_polls'),
    errors: m('perfkit_poll_errors'),
  }}) }};
}}
"#,
            helper = root.join("perfkit/k6/perfkit.js").display(),
            a = sick.perfkit_url,
            b = healthy.perfkit_url,
            out = out.display(),
            sick = sick.debug,
            healthy = healthy.debug,
        ),
    );
    assert_eq!(code, 0, "{text}");
    let counts: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    eprintln!("{counts:#}");
    assert_eq!(counts["polls"]["count"], 8.0, "{counts}");
    assert_eq!(counts["errors"]["count"], 0.0, "{counts}");
    assert_eq!(
        counts["dropped"]["count"].as_f64().unwrap(),
        total,
        "the drops counted once over 4 rounds of 2 instances: {counts}"
    );
    assert_eq!(counts["sick"]["count"].as_f64().unwrap(), total, "{counts}");
    assert_eq!(counts["healthy"]["count"], 0.0, "{counts}");
    sick.stop();
    healthy.stop();
}
