//! Stable tokio runtime metrics for registered runtimes (no `tokio_unstable` needed), and a
//! probe of each runtime's scheduling delay.
//!
//! **The probe.** A tracked task on the runtime (`perfkit.runtime.probe`) sleeps 100 ms at a
//! time and records how late it woke after its deadline in
//! `perfkit_runtime_schedule_delay_seconds{runtime}`. A task that is ready but waits for a
//! worker thread (every worker busy running something that does not yield) is late by that
//! wait, so this is the runtime's event-loop lag, the signal Node's `monitorEventLoopDelay`
//! and Go's `/sched/latencies` give. Service-side latency cannot show it: a request's
//! measured code only starts once a worker takes it. tokio's timer has a 1 ms resolution,
//! so an idle runtime reads about 1 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::runtime::Handle;

use super::collector::{Collection, Collector, Sections};
use super::histogram::Histogram;
use super::names;
use super::registry::Registry;
use super::window::{Tick, Window, WindowMax, WindowTotal};

/// How often the probe wakes.
pub(crate) const PROBE_PERIOD: Duration = Duration::from_millis(100);
/// The probe's tracked-task name.
pub(crate) const PROBE_TASK: &str = "perfkit.runtime.probe";

pub(crate) struct RuntimeCollector {
    name: String,
    handle: Handle,
    delay: Arc<Histogram>,
    /// When the probe's current timer is due, in nanoseconds since `since`.
    due: Arc<AtomicU64>,
    since: Instant,
    /// The probe, stopped when the collector goes (the runtime registered again, or the
    /// registry dropped). `None` when the runtime has no timer to sleep on.
    probe: Option<tokio::task::AbortHandle>,
    /// Workers' busy nanoseconds at each tick, for busy ratios.
    busy_total: WindowTotal,
    /// Alive tasks, sampled each second.
    alive_max: WindowMax,
}

impl RuntimeCollector {
    pub(crate) fn new(name: &str, handle: Handle, delay: Arc<Histogram>) -> Self {
        let since = Instant::now();
        let due = Arc::new(AtomicU64::new(0));
        let probe = {
            let _enter = handle.enter();
            crate::batch::timers_enabled().then(|| {
                let task = probe(Arc::clone(&delay), Arc::clone(&due), since);
                crate::task::spawn(PROBE_TASK, task).abort_handle()
            })
        };
        if probe.is_none() {
            tracing::warn!(
                runtime = name,
                "perfkit: runtime has no time driver (enable_time); its scheduling delay is not measured"
            );
        }
        RuntimeCollector {
            name: name.to_owned(),
            handle,
            delay,
            due,
            since,
            probe,
            busy_total: WindowTotal::new(),
            alive_max: WindowMax::new(),
        }
    }

    /// How long ago the probe's timer fired without the probe having run (0 when it is on
    /// time, or not running).
    fn late_now(&self) -> Duration {
        let due = self.due.load(Ordering::Relaxed);
        if self.probe.is_none() || due == 0 {
            return Duration::ZERO;
        }
        let now = u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(now.saturating_sub(due))
    }
}

impl Drop for RuntimeCollector {
    fn drop(&mut self) {
        if let Some(p) = &self.probe {
            p.abort();
        }
    }
}

/// Wakes every [`PROBE_PERIOD`] and records how late it woke; publishes each deadline (in
/// nanoseconds since `since`) so a scrape can tell how late it is while it has not run.
async fn probe(delay: Arc<Histogram>, published: Arc<AtomicU64>, since: Instant) {
    let mut due = tokio::time::Instant::now() + PROBE_PERIOD;
    loop {
        let at = due.into_std().saturating_duration_since(since);
        published.store(
            u64::try_from(at.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        tokio::time::sleep_until(due).await;
        let now = tokio::time::Instant::now();
        delay.record_duration(now.saturating_duration_since(due));
        due = now + PROBE_PERIOD;
    }
}

/// Every worker's busy time so far, in nanoseconds.
fn busy_nanos(m: &tokio::runtime::RuntimeMetrics) -> u64 {
    (0..m.num_workers())
        .map(|w| u64::try_from(m.worker_total_busy_duration(w).as_nanos()).unwrap_or(u64::MAX))
        .fold(0u64, u64::saturating_add)
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
        if self.probe.is_some() {
            out.push(
                &names::RUNTIME_PROBE_LATE_SECONDS,
                &[rt],
                self.late_now().as_secs_f64(),
            );
        }
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

    fn tick(&self, tick: &Tick) {
        let m = self.handle.metrics();
        self.busy_total.tick(tick, busy_nanos(&m));
        self.alive_max.tick(tick, m.num_alive_tasks() as u64);
    }

    fn snapshot(&self, out: &mut Sections) {
        let m = self.handle.metrics();
        let workers = m.num_workers();
        let busy_nanos = busy_nanos(&m);
        let parks: u64 = (0..workers).map(|w| m.worker_park_count(w)).sum();
        let alive = m.num_alive_tasks() as u64;
        self.alive_max.observe(alive);
        let late = self.late_now().as_secs_f64();
        let ratio = |w: &Window| self.busy_total.ratio(w, busy_nanos, workers as f64);
        let window = out.window().map(|w| {
            let delay = self.delay.window(w);
            // A starved probe records nothing until it runs: how late it is now counts.
            let p99 = delay.as_ref().and_then(|d| d.quantile(0.99)).unwrap_or(0.0);
            json!({
                "busy_ratio": ratio(w),
                "alive_tasks_max": self.alive_max.max(w).max(alive),
                "schedule_delay_seconds": delay.map(|d| d.to_json()),
                "schedule_delay_p99_seconds": p99.max(late),
            })
        });
        let entry = json!({
            "name": self.name,
            "workers": workers,
            "alive_tasks": alive,
            "global_queue_depth": m.global_queue_depth(),
            "busy_seconds_total": busy_nanos as f64 / 1e9,
            "busy_ratio": out.over(10).and_then(|w| ratio(&w)),
            "park_total": parks,
            "schedule_delay_seconds": self.delay.snapshot().to_json(),
            "probe_late_seconds": late,
            "probe": self.probe.is_some(),
        });
        out.push("runtimes", super::window::attach(entry, window));
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
impl Registry {
    /// Registers a tokio runtime: its stable runtime metrics appear under
    /// `tokio_runtime_*{runtime="<name>"}`, and a probe task spawned on it (a tracked task
    /// named `perfkit.runtime.probe`, waking every 100 ms) records its scheduling delay in
    /// `perfkit_runtime_schedule_delay_seconds{runtime="<name>"}`. Registering the same name
    /// again replaces it (and stops the old probe).
    pub fn register_runtime(&self, name: &str, handle: tokio::runtime::Handle) {
        let delay = self.histogram(&names::RUNTIME_SCHEDULE_DELAY_SECONDS, &[name]);
        self.register_owned(
            format!("runtime/{name}"),
            std::sync::Arc::new(RuntimeCollector::new(name, handle, delay)),
        );
    }
}
