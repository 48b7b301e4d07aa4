//! The `metrics` facade side: a service's own `metrics::counter!`, `gauge!` and
//! `histogram!` calls rendered on the same `/metrics` through `metrics-exporter-prometheus`.
//!
//! The exporter keeps every histogram sample raw until its upkeep drains them into
//! summaries, so without upkeep its memory grows with the event rate. perfkit runs upkeep on
//! a background thread once a second *and* whenever any shard of the histograms has
//! recorded [`UPKEEP_EVERY`] samples since the last nudge, so the backlog stays bounded
//! by roughly `shards x UPKEEP_EVERY x 16 bytes` however fast the service records.
//!
//! # Composing with a recorder you already have
//! * You already install a `PrometheusRecorder`: pass its handle to [`use_handle`] and
//!   start the server with `Builder::facade(false)`; perfkit renders the handle on
//!   `/metrics` and runs its upkeep once a second. perfkit cannot see that recorder's record
//!   rate, so a service recording histograms very fast should also run upkeep itself.
//! * You install some other recorder: build perfkit's with [`build`] and put both under
//!   `metrics_util::layers::Fanout`, then call [`use_handle`] with the handle [`build`]
//!   returned.
//! * You want no facade integration: turn off the `facade` feature or use
//!   `Builder::facade(false)`.

use std::sync::{Arc, OnceLock, Weak};
use std::thread::Thread;
use std::time::Duration;

use crossbeam_utils::CachePadded;
use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use super::shard::{current_shard, shard_count};
use crate::loom::{AtomicU64, Ordering};

/// Histogram samples per shard between two upkeep nudges.
pub const UPKEEP_EVERY: u64 = 16 * 1024;

/// How often upkeep runs when nothing nudges it.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Errors installing the facade recorder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FacadeError {
    /// Another `metrics` recorder is already installed globally.
    #[error("a global metrics recorder is already installed; pass its PrometheusHandle to perfkit::metrics::facade::use_handle or build perfkit's with facade::build and combine them")]
    RecorderAlreadySet,
}

struct Trigger {
    cells: Box<[CachePadded<AtomicU64>]>,
    thread: OnceLock<Thread>,
}

impl Trigger {
    #[inline]
    fn tick(&self) {
        let n = self.cells[current_shard()].fetch_add(1, Ordering::Relaxed);
        if n % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
            self.nudge();
        }
    }

    #[cold]
    fn nudge(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// A `PrometheusRecorder` whose histograms nudge perfkit's upkeep thread.
pub struct UpkeepRecorder {
    inner: PrometheusRecorder,
    trigger: Arc<Trigger>,
}

impl std::fmt::Debug for UpkeepRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpkeepRecorder").finish_non_exhaustive()
    }
}

struct NudgingHistogram {
    inner: Histogram,
    trigger: Arc<Trigger>,
}

impl HistogramFn for NudgingHistogram {
    fn record(&self, value: f64) {
        self.inner.record(value);
        self.trigger.tick();
    }
}

impl Recorder for UpkeepRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(NudgingHistogram {
            inner: self.inner.register_histogram(key, metadata),
            trigger: Arc::clone(&self.trigger),
        }))
    }
}

/// Spawns a thread that runs `handle`'s upkeep every [`UPKEEP_INTERVAL`] and whenever it is
/// unparked. With a `trigger`, the thread ends once the trigger (the recorder and all its
/// histograms) is gone; without one it lives as long as the process.
fn spawn_upkeep(handle: PrometheusHandle, trigger: Option<Weak<Trigger>>) -> Option<Thread> {
    let spawned = std::thread::Builder::new()
        .name("perfkit-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::park_timeout(UPKEEP_INTERVAL);
                if trigger.as_ref().is_some_and(|t| t.strong_count() == 0) {
                    break;
                }
                handle.run_upkeep();
            }
        });
    match spawned {
        Ok(t) => Some(t.thread().clone()),
        Err(e) => {
            tracing::error!(error = %e, "perfkit: could not start the metrics upkeep thread");
            None
        }
    }
}

/// Builds perfkit's facade recorder without installing it, with its upkeep thread running.
/// Use this to combine it with another recorder; then pass the handle to [`use_handle`].
pub fn build() -> (UpkeepRecorder, PrometheusHandle) {
    let inner = PrometheusBuilder::new().build_recorder();
    let handle = inner.handle();
    let trigger = Arc::new(Trigger {
        cells: (0..shard_count())
            .map(|_| CachePadded::new(AtomicU64::new(0)))
            .collect(),
        thread: OnceLock::new(),
    });
    if let Some(t) = spawn_upkeep(handle.clone(), Some(Arc::downgrade(&trigger))) {
        let _ = trigger.thread.set(t);
    }
    (UpkeepRecorder { inner, trigger }, handle)
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs perfkit's facade recorder as the global `metrics` recorder, once per process,
/// and returns the handle `/metrics` renders. Later calls return the same handle.
///
/// # Errors
/// [`FacadeError::RecorderAlreadySet`] when some other recorder was installed first.
pub fn install() -> Result<PrometheusHandle, FacadeError> {
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let (recorder, handle) = build();
    metrics::set_global_recorder(recorder).map_err(|_| FacadeError::RecorderAlreadySet)?;
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

/// Renders `handle` (a recorder the service installed itself) on `/metrics`, and runs its
/// upkeep once a second. Returns `false`, changing nothing, when a handle is already in use.
pub fn use_handle(handle: PrometheusHandle) -> bool {
    if HANDLE.get().is_some() {
        return false;
    }
    let upkeep = handle.clone();
    if HANDLE.set(handle).is_err() {
        return false;
    }
    spawn_upkeep(upkeep, None);
    true
}

/// The facade handle `/metrics` renders, if one is installed or in use.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get()
}
