//! Criterion benchmarks for perfkit live in `benches/`; this library holds what several of
//! them share.

use std::time::Duration;

/// Installs `metrics-exporter-prometheus` as the global `metrics` recorder (the baseline the
/// facade benches compare against), with upkeep on a background thread every 50 ms so its
/// raw-sample buffer stays bounded however long a bench runs.
///
/// # Panics
/// If a global recorder is already installed.
pub fn install_prometheus_recorder() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("install the Prometheus recorder");
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(50));
            handle.run_upkeep();
        }
    });
}
