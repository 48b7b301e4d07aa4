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
