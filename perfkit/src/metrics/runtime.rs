//! Stable tokio runtime metrics for registered runtimes (no `tokio_unstable` needed).

use serde_json::json;
use tokio::runtime::Handle;

use super::names;
use super::registry::{Collection, Collector, Sections};

pub(crate) struct RuntimeCollector {
    name: String,
    handle: Handle,
}

impl RuntimeCollector {
    pub(crate) fn new(name: &str, handle: Handle) -> Self {
        RuntimeCollector {
            name: name.to_owned(),
            handle,
        }
    }
}

impl Collector for RuntimeCollector {
    fn collect(&self, out: &mut Collection) {
        let m = self.handle.metrics();
        let rt = self.name.as_str();
        out.push(&names::TOKIO_RUNTIME_WORKERS, &[rt], m.num_workers() as f64);
        out.push(
            &names::TOKIO_RUNTIME_ALIVE_TASKS,
            &[rt],
            m.num_alive_tasks() as f64,
        );
        out.push(
            &names::TOKIO_RUNTIME_GLOBAL_QUEUE_DEPTH,
            &[rt],
            m.global_queue_depth() as f64,
        );
        for w in 0..m.num_workers() {
            let worker = w.to_string();
            out.push(
                &names::TOKIO_RUNTIME_WORKER_BUSY_SECONDS_TOTAL,
                &[rt, &worker],
                m.worker_total_busy_duration(w).as_secs_f64(),
            );
            out.push(
                &names::TOKIO_RUNTIME_WORKER_PARK_TOTAL,
                &[rt, &worker],
                m.worker_park_count(w) as f64,
            );
        }
    }

    fn snapshot(&self, out: &mut Sections) {
        let m = self.handle.metrics();
        let workers = m.num_workers();
        let busy: f64 = (0..workers)
            .map(|w| m.worker_total_busy_duration(w).as_secs_f64())
            .sum();
        let parks: u64 = (0..workers).map(|w| m.worker_park_count(w)).sum();
        out.push(
            "runtimes",
            json!({
                "name": self.name,
                "workers": workers,
                "alive_tasks": m.num_alive_tasks(),
                "global_queue_depth": m.global_queue_depth(),
                "busy_seconds_total": busy,
                "park_total": parks,
            }),
        );
    }

    fn inventory(&self, out: &mut Sections) {
        let flavor = match self.handle.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
            tokio::runtime::RuntimeFlavor::MultiThread => "multi_thread",
            _ => "other",
        };
        out.push(
            "runtimes",
            json!({
                "name": self.name,
                "flavor": flavor,
                "workers": self.handle.metrics().num_workers(),
            }),
        );
    }
}
