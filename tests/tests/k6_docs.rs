//! Every k6 threshold filter the docs and example scripts show uses tag keys the helper
//! really records on that metric (a filter on any other key matches no sample, and k6
//! passes a threshold without samples), read from the helper itself by the real k6; and
//! the helper's `checkThresholds` refuses such a filter.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

/// Tags every run's samples may carry besides the metric's own (`instance` when polled
/// with `pollEach` or `pollPrometheus`).
const ALWAYS: &[&str] = &["scenario", "perfkit", "phase", "instance"];

fn run_script(dir: &Path, script: &str) -> (i32, String) {
    common::run_k6_script(dir, script)
}

/// `(metric, [tag keys])` of every k6 threshold filter in `text`: `perfkit_name{key:value,...}`
/// (values may hold braces, as route templates do). PromQL selectors (`key="value"`) are
/// not k6 filters and are skipped.
fn filters(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("perfkit_") {
        rest = &rest[at..];
        let name_len = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        let (name, after) = rest.split_at(name_len);
        rest = after;
        if !after.starts_with('{') {
            continue;
        }
        let mut depth = 0;
        let mut end = None;
        for (i, c) in after.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                '\n' => break,
                _ => {}
            }
        }
        let Some(end) = end else { continue };
        let inner = &after[1..end];
        if inner.contains('=') || !inner.contains(':') {
            continue;
        }
        let keys = inner
            .split(',')
            .filter_map(|p| p.split_once(':').map(|(k, _)| k.trim().to_owned()))
            .collect();
        out.push((name.to_owned(), keys));
    }
    out
}

#[test]
#[ignore = "needs k6; scripts/test.sh installs it and runs ignored tests"]
fn every_threshold_filter_in_the_docs_uses_tags_the_helper_records() {
    let root = common::workspace_root();
    let dir = root.join("target/test-results/k6_docs");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let helper = root.join("perfkit/k6/perfkit.js");
    let out = dir.join("metric_tags.json");
    let (code, text) = run_script(
        &dir,
        &format!(
            "import {{ METRIC_TAGS }} from 'file://{}';\n\
             export const options = {{ iterations: 1, vus: 1 }};\n\
             export default function () {{}}\n\
             export function handleSummary() {{ return {{ '{}': JSON.stringify(METRIC_TAGS) }}; }}\n",
            helper.display(),
            out.display()
        ),
    );
    assert_eq!(code, 0, "{text}");
    let tags: BTreeMap<String, Vec<String>> =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert!(
        tags["perfkit_batch_dead_lettered"].contains(&"batcher".to_owned()),
        "{tags:?}"
    );

    let mut sources: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain(
            std::fs::read_dir(root.join("examples/k6"))
                .unwrap()
                .map(|e| e.unwrap().path()),
        )
        .filter(|p| p.extension().is_some_and(|e| e == "md" || e == "js"))
        .collect();
    sources.push(root.join("README.md"));
    let mut checked = 0;
    let mut wrong = Vec::new();
    for path in &sources {
        let text = std::fs::read_to_string(path).unwrap();
        for (metric, keys) in filters(&text) {
            let Some(known) = tags.get(&metric) else {
                wrong.push(format!(
                    "{}: {metric} is not a metric the helper records",
                    path.display()
                ));
                continue;
            };
            for key in keys {
                checked += 1;
                if !known.contains(&key) && !ALWAYS.contains(&key.as_str()) {
                    wrong.push(format!(
                        "{}: {metric}{{{key}:...}} but {metric} carries {known:?}",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(
        checked >= 30,
        "only {checked} filters found: the scanner is broken"
    );
    assert!(
        wrong.is_empty(),
        "filters that would pass silently:\n{}",
        wrong.join("\n")
    );

    // The helper refuses such a filter at start-up.
    let (code, text) = run_script(
        &dir,
        &format!(
            "import {{ checkThresholds }} from 'file://{}';\n\
             export const options = {{ iterations: 1, vus: 1, thresholds: checkThresholds({{ 'perfkit_batch_dead_lettered{{queue:audit}}': ['count==0'] }}) }};\n\
             export default function () {{}}\n",
            helper.display()
        ),
    );
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("threshold 'perfkit_batch_dead_lettered{queue:audit}' filters on tag 'queue', which perfkit_batch_dead_lettered never carries (its tags: batcher)"),
        "{text}"
    );
}

#[test]
fn the_scanner_reads_filters_with_braces_in_values() {
    let f = filters(
        "x 'perfkit_http_p99_seconds{route:GET /v1/progress/{user}}': [..] perfkit_queue_dropped{queue:db,reason:closed} perfkit_queue_depth{queue=\"db\"} perfkit_polls",
    );
    assert_eq!(
        f,
        vec![
            (
                "perfkit_http_p99_seconds".to_owned(),
                vec!["route".to_owned()]
            ),
            (
                "perfkit_queue_dropped".to_owned(),
                vec!["queue".to_owned(), "reason".to_owned()]
            ),
        ]
    );
}
