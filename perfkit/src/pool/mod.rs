//! Worker pools: a fixed set of async workers draining one bounded queue of jobs, with
//! saturation, busy time, job latency and outcomes measured, panics isolated, and a
//! shutdown that drains to a deadline and accounts for every job.
//!
//! [`Builder`] builds a [`Pool`] on the current tokio runtime. [`Pool::submit`] queues a
//! job (any `Future + Send + 'static`) and returns a [`JobHandle`] that resolves to the
//! job's output; [`Pool::try_submit`] never waits and hands the job back as
//! `Err(SubmitError::Rejected(job))` when the queue is full.
//!
//! # The queue
//! The pool's queue is bounded by `queue_capacity` and follows the overflow [`Policy`]:
//!
//! | [`Policy`] | `submit().await` when full | `try_submit` when full |
//! |---|---|---|
//! | `Block` (default) | waits for room | `Err(Rejected(job))` |
//! | `Reject` | `Err(Rejected(job))` | same |
//! | `DropOldest` | evicts the oldest job of the lowest non-empty lane (its handle gets [`JobError::Dropped`]) and queues | same |
//! | `DropNewest` | drops the new job; its handle gets [`JobError::Dropped`] | same |
//!
//! It records and reports exactly like a [`perfkit queue`](crate::queue) named after the
//! pool: `perfkit_queue_depth{queue="<pool>"}`, capacity, oldest age, enqueued, dequeued,
//! dropped, rejected, the wait histogram (submit to start), depth warnings at 50% and 80%
//! ([`Builder::warn_at`]), and an entry in the snapshot's and inventory's `queues`.
//! Internally it is lock-free: one ring per lane with a shared bound (see below).
//!
//! # Priority lanes
//! [`Builder::lanes`] gives the pool several lanes sharing the one `queue_capacity` bound.
//! [`Pool::submit`] queues on lane 0; [`Pool::submit_to`] picks a lane. Higher lanes drain
//! first. Starvation protection: on every `fair_every`-th job a worker takes (default 8,
//! [`Builder::fair_every`]), it looks at a lower lane first, rotating over lanes
//! `0..lanes-1`; so while lane `k < lanes-1` has jobs it gets at least one of every
//! `fair_every × (lanes − 1)` jobs each worker takes, whatever arrives above it.
//!
//! # Signals
//! Under `pool="<name>"`:
//!
//! | series | meaning |
//! |---|---|
//! | `perfkit_pool_workers` | workers (gauge) |
//! | `perfkit_pool_busy` | workers running a job at scrape time (gauge, 0..=workers) |
//! | `perfkit_pool_busy_seconds_total` | busy time summed over workers, including the elapsed part of running jobs; `rate(perfkit_pool_busy_seconds_total[1m]) / perfkit_pool_workers` is average saturation |
//! | `perfkit_pool_task_seconds` | job run time, from a worker taking it to its completion (histogram) |
//! | `perfkit_pool_tasks_total{outcome}` | `ok`, `err` (the output's [`JobOutput::is_err`]), `panic`, `rejected` (refused by a full queue), `cancelled` (never finished: cancelled by a shutdown, or dropped by the overflow policy) |
//!
//! A worker is *busy* from taking a job until the job's future completes, including time
//! the job spends awaiting I/O: busy means occupied, not on-CPU.
//!
//! The snapshot's `pools` entry has `saturation` = `busy / workers` at that instant, and
//! `saturation_avg` = the busy seconds of the last 10 s of the registry's clock divided by
//! (those seconds × workers), the same for every reader, with the span in
//! `saturation_avg_window_seconds` (shorter while the clock, started by the registry's first
//! snapshot or tick, is younger). See `docs/endpoints.md` for the whole entry.
//!
//! # Panics, shutdown, drop
//! A job that panics is caught: the panic is counted as `outcome="panic"`, the handle
//! resolves to [`JobError::Panicked`] with the message, and the worker takes the next job.
//!
//! [`Pool::shutdown`] stops intake, lets the workers drain the queue until the deadline,
//! then stops them: jobs still running are dropped at their next yield point and jobs
//! still queued are cancelled; their handles resolve to [`JobError::Cancelled`]. It
//! returns once every worker task has ended, with a [`ShutdownReport`]. `Pool` is a cheap
//! `Clone` handle, and any clone may shut the pool down. Dropping the last clone without
//! shutting the pool down cancels at once (running and queued jobs alike) and stops the
//! workers without waiting for them.
//!
//! # Examples
//! ```
//! # tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//!
//! let pool = perfkit::pool::Builder::new("doc-resize")
//!     .workers(2)
//!     .queue_capacity(100)
//!     .build()
//!     .unwrap();
//! let handle = pool.submit(async { 6 * 7 }).await.unwrap();
//! assert_eq!(handle.await.unwrap(), 42);
//!
//! let panicked = pool
//!     .submit(async { "forty-two".parse::<u32>().expect("a number") })
//!     .await
//!     .unwrap();
//! assert!(panicked.await.unwrap_err().is_panic()); // and the worker carries on
//!
//! let report = pool.shutdown(Duration::from_secs(1)).await;
//! assert_eq!((report.ok, report.panicked), (1, 1));
//! # });
//! ```

mod core;
mod error;
mod job;
mod recycle;
mod ring;

#[cfg(all(test, loom))]
mod loom_tests;

use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::Location;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

#[cfg(not(loom))]
use serde_json::json;
use tokio::task::JoinHandle;

pub use error::{BuildError, SubmitError};
pub use job::{JobError, JobHandle, JobOutput};

use self::core::{Core, Local, Refused, Reserved};
use crate::clock;
use crate::loom::lock_unpoisoned as lock;
use crate::metrics::{
    Counter, Histogram, LocalCounter, LocalHistogram, Registry, WindowMax, WindowTotal, names,
};
use crate::queue::Policy;
use crate::queue::signals::{self, Signals};
use job::{JobRef, Outcome};

/// The most priority lanes a pool can have.
pub const MAX_LANES: usize = 8;

/// Queue capacity when [`Builder::queue_capacity`] is not called.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// [`Builder::fair_every`] when not called.
pub const DEFAULT_FAIR_EVERY: u32 = 8;

/// Name of the tracked tasks the workers run as (see [`crate::task`]).
pub const WORKER_TASK: &str = "perfkit.pool.worker";

/// Configures a pool.
#[derive(Debug)]
#[must_use = "a Builder does nothing until .build() is called"]
pub struct Builder<'r> {
    name: String,
    workers: Option<usize>,
    queue_capacity: usize,
    policy: Policy,
    lanes: usize,
    fair_every: u32,
    warn_at: Vec<f64>,
    task_name: &'static str,
    registry: Option<&'r Registry>,
}

impl<'r> Builder<'r> {
    /// A pool called `name` (its `pool` and `queue` label), with one worker per available
    /// CPU, a queue of [`DEFAULT_QUEUE_CAPACITY`] jobs, [`Policy::Block`] and one lane.
    pub fn new(name: impl Into<String>) -> Self {
        Builder {
            name: name.into(),
            workers: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            policy: Policy::Block,
            lanes: 1,
            fair_every: DEFAULT_FAIR_EVERY,
            warn_at: crate::queue::DEFAULT_WARN_AT.to_vec(),
            task_name: WORKER_TASK,
            registry: None,
        }
    }

    /// How many jobs run at once.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// How many jobs may wait, over all lanes together.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// What a full queue does with a new job (see the [module docs](self)).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Priority lanes, 1 to [`MAX_LANES`]; higher lanes drain first.
    pub fn lanes(mut self, lanes: usize) -> Self {
        self.lanes = lanes;
        self
    }

    /// Starvation protection: every `n`-th job a worker takes comes from a lower lane
    /// first. 1 means strict rotation, larger values favour higher lanes more.
    pub fn fair_every(mut self, n: u32) -> Self {
        self.fair_every = n;
        self
    }

    /// Queue depth thresholds, as fractions of capacity in (0, 1], that log a warning when
    /// crossed upwards (like [`crate::queue::Builder::warn_at`]).
    pub fn warn_at(mut self, fractions: &[f64]) -> Self {
        self.warn_at = fractions.to_vec();
        self
    }

    /// The tracked-task name the workers run under (default [`WORKER_TASK`]), so each
    /// pool's workers can be told apart in `/debug/pprof/goroutine` and the `tasks`
    /// snapshot.
    pub fn task_name(mut self, name: &'static str) -> Self {
        self.task_name = name;
        self
    }

    /// Records into `registry` instead of the global one.
    pub fn registry(mut self, registry: &'r Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Builds the pool and starts its workers on the current tokio runtime, as tracked
    /// tasks (named [`WORKER_TASK`] unless [`Builder::task_name`] says otherwise).
    ///
    /// # Errors
    /// A [`BuildError`] for a bad setting, or when not called inside a tokio runtime with
    /// timers enabled.
    #[track_caller]
    pub fn build(self) -> Result<Pool, BuildError> {
        let site = Location::caller();
        let name = self.name;
        if name.is_empty() {
            return Err(BuildError::EmptyName);
        }
        let workers = self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        if workers == 0 {
            return Err(BuildError::ZeroWorkers { name });
        }
        if self.queue_capacity == 0 {
            return Err(BuildError::ZeroCapacity { name });
        }
        if self.lanes == 0 || self.lanes > MAX_LANES {
            return Err(BuildError::BadLanes {
                name,
                lanes: self.lanes,
                max: MAX_LANES,
            });
        }
        if self.fair_every == 0 {
            return Err(BuildError::ZeroFairEvery { name });
        }
        if let Some(threshold) = signals::bad_threshold(&self.warn_at) {
            return Err(BuildError::InvalidThreshold { name, threshold });
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(BuildError::NoRuntime { name });
        };
        if !crate::batch::timers_enabled() {
            return Err(BuildError::NoTimer { name });
        }
        let registry = self.registry.unwrap_or_else(|| crate::metrics::registry());
        let sig = Signals::new(
            name,
            self.queue_capacity,
            self.policy,
            &self.warn_at,
            site,
            registry,
            signals::Owner::Pool,
        );
        let enqueued = sig.m.enqueued.synced();
        let inner = Arc::new(Inner {
            enqueued,
            core: Core::new(
                workers,
                self.queue_capacity,
                self.lanes,
                self.policy,
                self.fair_every,
            ),
            task_seconds: registry.histogram(&names::POOL_TASK_SECONDS, &[&sig.label]),
            sig,
            outcomes: Outcomes::default(),
            cancelled_running: AtomicU64::new(0),
            busy_exported: AtomicU64::new(0),
            busy_total: WindowTotal::new(),
            busy_max: WindowMax::new(),
        });
        #[cfg(not(loom))]
        registry.register_collector(
            Arc::downgrade(&inner) as std::sync::Weak<dyn crate::metrics::Collector>
        );
        // A plain loop, not a closure: `#[track_caller]` passes through, so the workers'
        // spawn site in `/debug/pprof/goroutine` is the caller of `build()`.
        let mut handles = Vec::with_capacity(workers);
        {
            let _enter = runtime.enter();
            for id in 0..workers {
                handles.push(crate::task::spawn(self.task_name, work(inner.clone(), id)));
            }
        }
        Ok(Pool {
            workers: Arc::new(Workers {
                tasks: Mutex::new(handles),
                runtime,
                inner: Arc::clone(&inner),
            }),
            inner,
        })
    }
}

/// A pool of async workers. See the [module docs](self).
///
/// A cheap handle: clones share the same workers and queue, and any clone can submit or
/// shut the pool down ([`Pool::shutdown`] takes `&self`). When the last clone is dropped
/// without a shutdown, the pool cancels at once (see the module docs).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
    workers: Arc<Workers>,
}

/// The worker tasks, shared by every clone of a [`Pool`]; the last clone's drop stops them.
struct Workers {
    tasks: Mutex<Vec<JoinHandle<()>>>,
    runtime: tokio::runtime::Handle,
    inner: Arc<Inner>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.inner.core.close();
        for h in lock(&self.tasks).drain(..) {
            h.abort();
        }
    }
}

#[derive(Default)]
struct Outcomes {
    ok: Counter,
    err: Counter,
    panic: Counter,
    rejected: Counter,
    cancelled: Counter,
}

struct Inner {
    core: Core<JobRef>,
    /// `perfkit_queue_enqueued_total`'s cell for this pool, mirroring the core's claims.
    enqueued: crate::metrics::SyncedCell,
    sig: Signals,
    outcomes: Outcomes,
    task_seconds: Arc<Histogram>,
    cancelled_running: AtomicU64,
    /// Largest busy-seconds figure exported so far (nanoseconds), keeping the counter
    /// monotonic across the racy sum of finished and running time.
    busy_exported: AtomicU64,
    /// Busy nanoseconds at each second's tick, for busy ratios over windows.
    #[cfg_attr(loom, allow(dead_code))]
    busy_total: WindowTotal,
    /// Busy workers, sampled each second.
    #[cfg_attr(loom, allow(dead_code))]
    busy_max: WindowMax,
}

/// What [`Pool::shutdown`] did, and the pool's lifetime job counts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Every accepted job finished before the deadline.
    pub drained: bool,
    /// Jobs still queued at the deadline, cancelled without running.
    pub cancelled_queued: u64,
    /// Jobs running at the deadline, stopped at their next yield point.
    pub cancelled_running: u64,
    /// Jobs that completed with an `ok` output, over the pool's life.
    pub ok: u64,
    /// Jobs that completed with an `err` output ([`JobOutput::is_err`]).
    pub err: u64,
    /// Jobs that panicked.
    pub panicked: u64,
    /// Jobs refused by a full queue.
    pub rejected: u64,
    /// Jobs that never finished: cancelled by this shutdown or dropped by the overflow
    /// policy.
    pub cancelled: u64,
    /// How long the shutdown took.
    pub elapsed: Duration,
}

impl Pool {
    /// Queues `job` on lane 0, waiting for room under [`Policy::Block`].
    ///
    /// # Errors
    /// [`SubmitError::Rejected`] when full under [`Policy::Reject`],
    /// [`SubmitError::Closed`] after [`Pool::shutdown`]; the job is handed back.
    ///
    /// # Cancel safety
    /// Cancel safe: a submit dropped while waiting for room queued nothing (the job is
    /// dropped with it) and passes its place on.
    pub async fn submit<F>(&self, job: F) -> Result<JobHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: JobOutput + Send + 'static,
    {
        self.submit_to(0, job).await
    }

    /// [`Pool::submit`] on lane `lane` (0 is the lowest priority).
    ///
    /// # Errors
    /// As [`Pool::submit`], plus [`SubmitError::NoSuchLane`].
    pub async fn submit_to<F>(
        &self,
        lane: usize,
        job: F,
    ) -> Result<JobHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: JobOutput + Send + 'static,
    {
        let job = self.check_lane(lane, job)?;
        let core = &self.inner.core;
        let reserved = match core.reserve(None) {
            // Full under Block: wait in line for room.
            Err(Refused::Full) if self.inner.sig.policy == Policy::Block => {
                let mut line = Line { core, slot: None };
                poll_fn(
                    |cx| match core.reserve(Some((&mut line.slot, cx.waker()))) {
                        Err(Refused::Wait) => Poll::Pending,
                        other => Poll::Ready(other),
                    },
                )
                .await
            }
            other => other,
        };
        self.admit(lane, job, reserved)
    }

    /// Queues `job` on lane 0 without waiting.
    ///
    /// # Errors
    /// [`SubmitError::Rejected`] when full under [`Policy::Block`] or [`Policy::Reject`],
    /// [`SubmitError::Closed`] after [`Pool::shutdown`]; the job is handed back.
    pub fn try_submit<F>(&self, job: F) -> Result<JobHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: JobOutput + Send + 'static,
    {
        self.try_submit_to(0, job)
    }

    /// [`Pool::try_submit`] on lane `lane`.
    ///
    /// # Errors
    /// As [`Pool::try_submit`], plus [`SubmitError::NoSuchLane`].
    pub fn try_submit_to<F>(
        &self,
        lane: usize,
        job: F,
    ) -> Result<JobHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: JobOutput + Send + 'static,
    {
        let job = self.check_lane(lane, job)?;
        let reserved = self.inner.core.reserve(None);
        self.admit(lane, job, reserved)
    }

    fn check_lane<F>(&self, lane: usize, job: F) -> Result<F, SubmitError<F>> {
        let lanes = self.inner.core.lanes();
        if lane < lanes {
            Ok(job)
        } else {
            Err(SubmitError::NoSuchLane { job, lane, lanes })
        }
    }

    fn admit<F>(
        &self,
        lane: usize,
        job: F,
        reserved: Result<Reserved<JobRef>, Refused>,
    ) -> Result<JobHandle<F::Output>, SubmitError<F>>
    where
        F: Future + Send + 'static,
        F::Output: JobOutput + Send + 'static,
    {
        let inner = &*self.inner;
        match reserved {
            Ok(Reserved {
                depth,
                claimed,
                evicted,
            }) => {
                let at = clock::raw();
                let (job, handle) = job::new(job);
                // The high-water mark and the warnings need the real depth only when the
                // upper bound could set a new mark; below it, counting is all there is to do.
                // The enqueued counter is the core's count of claims, mirrored at scrape time
                // (`Inner::sync`): nothing to count here.
                if depth > inner.sig.high_water() {
                    inner
                        .sig
                        .reached(inner.core.exact_depth(claimed).min(depth));
                }
                inner.core.push(lane, job, at);
                for old in evicted {
                    inner.sig.m.dropped_oldest.inc();
                    inner.outcomes.cancelled.inc();
                    old.cancel(JobError::Dropped);
                }
                Ok(handle)
            }
            Err(Refused::Full | Refused::Wait) => {
                inner.sig.m.rejected.inc();
                inner.outcomes.rejected.inc();
                Err(SubmitError::Rejected(job))
            }
            Err(Refused::DropNewest) => {
                inner.sig.m.dropped_full.inc();
                inner.outcomes.cancelled.inc();
                let (job, handle) = job::new(job);
                job.cancel(JobError::Dropped);
                Ok(handle)
            }
            Err(Refused::Closed) => Err(SubmitError::Closed(job)),
        }
    }

    /// Stops intake, lets the workers finish queued jobs until `deadline` has passed, then
    /// cancels the rest, and returns once every worker task has ended. Calling it again (from
    /// any clone) returns at once with the lifetime counts, without waiting for the first
    /// call to finish.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let started = Instant::now();
        let inner = &*self.inner;
        inner.core.close();
        let handles = std::mem::take(&mut *lock(&self.workers.tasks));
        let sleep = {
            let _enter = self.workers.runtime.enter();
            tokio::time::sleep(deadline)
        };
        let mut sleep = pin!(sleep);
        let mut handles = handles.into_iter().peekable();
        let mut drained = true;
        while let Some(h) = handles.peek_mut() {
            tokio::select! {
                biased;
                _ = h => { handles.next(); }
                () = &mut sleep => { drained = false; break; }
            }
        }
        let rest: Vec<_> = handles.collect();
        for h in &rest {
            h.abort();
        }
        for h in rest {
            let _ = h.await;
        }
        let cancelled_queued = inner.cancel_queued();
        let o = &inner.outcomes;
        ShutdownReport {
            drained: drained && cancelled_queued == 0,
            cancelled_queued,
            cancelled_running: inner.cancelled_running.swap(0, Ordering::Relaxed),
            ok: o.ok.get(),
            err: o.err.get(),
            panicked: o.panic.get(),
            rejected: o.rejected.get(),
            cancelled: o.cancelled.get(),
            elapsed: started.elapsed(),
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.sig.name
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.inner.core.workers()
    }

    /// Workers running a job now.
    pub fn busy(&self) -> usize {
        self.inner.core.busy()
    }

    /// Jobs queued now (over all lanes, including submits about to land).
    pub fn queued(&self) -> usize {
        self.inner.core.depth()
    }

    /// The queue's bound.
    pub fn queue_capacity(&self) -> usize {
        self.inner.sig.capacity
    }

    /// Whether intake is closed (shutdown started or the pool is dropping).
    pub fn is_closed(&self) -> bool {
        self.inner.core.is_closed()
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name())
            .field("workers", &self.workers())
            .field("busy", &self.busy())
            .field("queued", &self.queued())
            .field("queue_capacity", &self.queue_capacity())
            .finish()
    }
}

/// A submitter's place in line while it waits for room; leaving passes a wake-up on.
struct Line<'a> {
    core: &'a Core<JobRef>,
    slot: Option<u64>,
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        self.core.forget_sender(&mut self.slot);
    }
}

/// Jobs a worker runs back to back before it yields to the runtime, when none of them
/// returned `Pending` (which would have yielded anyway).
const YIELD_EVERY: u32 = 64;

/// A worker's own recorders for what it counts on every job: single-writer cells, so the
/// per-job bookkeeping is plain loads and stores (see [`Counter::local`]).
struct Tally<'a> {
    dequeue: signals::LocalDequeue<'a>,
    task_seconds: LocalHistogram<'a>,
    ok: LocalCounter<'a>,
    err: LocalCounter<'a>,
    panic: LocalCounter<'a>,
}

/// A worker: takes jobs until the pool is closed and drained (or the task is aborted).
async fn work(inner: Arc<Inner>, id: usize) {
    let tally = Tally {
        dequeue: inner.sig.local(),
        task_seconds: inner.task_seconds.local(),
        ok: inner.outcomes.ok.local(),
        err: inner.outcomes.err.local(),
        panic: inner.outcomes.panic.local(),
    };
    let mut me = Local::new(id);
    // End time of the previous job when the next one is taken right after it: one clock
    // read then serves as both.
    let mut last_end = None;
    let mut streak = 0u32;
    loop {
        let (job, at) = match inner.core.try_take(&mut me) {
            Some(got) => got,
            None => {
                last_end = None;
                match poll_fn(|cx| inner.core.poll_take(&mut me, cx)).await {
                    Some(got) => got,
                    None => return,
                }
            }
        };
        let now = last_end.take().unwrap_or_else(clock::raw);
        let started = inner.core.begin(id, now);
        tally.dequeue.dequeued(at, started);
        let (end, outcome, yielded) = inner.run(id, job, started).await;
        let nanos = inner.core.end(id, started, end);
        tally.task_seconds.record(nanos);
        match outcome {
            Outcome::Ok => tally.ok.inc(),
            Outcome::Err => tally.err.inc(),
            Outcome::Panic => tally.panic.inc(),
            Outcome::Cancelled => inner.outcomes.cancelled.inc(),
        }
        last_end = Some(end);
        streak = if yielded { 0 } else { streak + 1 };
        if streak >= YIELD_EVERY {
            // Jobs that complete without ever returning Pending would otherwise keep this
            // worker from letting the rest of the runtime run.
            streak = 0;
            last_end = None;
            tokio::task::yield_now().await;
        }
    }
}

/// A job on a worker; if the worker is stopped mid-job, the job is cancelled and counted.
struct Running<'a> {
    inner: &'a Inner,
    id: usize,
    started: u64,
    job: Option<JobRef>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            job.cancel(JobError::Cancelled);
            self.inner.cancelled_running.fetch_add(1, Ordering::Relaxed);
            self.inner.cancelled(self.id, self.started);
        }
    }
}

impl Inner {
    /// Runs one job that worker `id` began at raw clock `started`; returns the end time, the
    /// outcome, and whether the job ever returned `Pending`. The caller records the rest.
    async fn run(&self, id: usize, job: JobRef, started: u64) -> (u64, Outcome, bool) {
        let mut running = Running {
            inner: self,
            id,
            started,
            job: Some(job),
        };
        let mut pending = false;
        let outcome = poll_fn(|cx| {
            let poll = match &mut running.job {
                Some(job) => job.poll_run(cx),
                None => Poll::Ready(Outcome::Cancelled),
            };
            pending |= poll.is_pending();
            poll
        })
        .await;
        running.job = None;
        (clock::raw(), outcome, pending)
    }

    /// Records a job that worker `id` began at `started` and was stopped in (the worker's
    /// own recorders went with the stopped task, so this counts on the shared cells).
    fn cancelled(&self, id: usize, started: u64) {
        let nanos = self.core.end(id, started, clock::raw());
        self.task_seconds.record(nanos);
        self.outcomes.cancelled.inc();
    }

    /// Cancels every queued job, waiting out submits that reserved room before intake
    /// closed. Returns how many were cancelled.
    fn cancel_queued(&self) -> u64 {
        let mut n = 0;
        loop {
            for (job, _) in self.core.drain() {
                self.sig.m.dropped_closed.inc();
                self.outcomes.cancelled.inc();
                job.cancel(JobError::Cancelled);
                n += 1;
            }
            if self.core.depth() == 0 {
                return n;
            }
            // A submit between its reservation and its push: a few instructions away.
            std::thread::yield_now();
        }
    }

    /// Brings the counters kept as totals elsewhere up to date; run before they are read.
    fn sync(&self) {
        self.enqueued.raise_to(self.core.claims() as u64);
    }

    #[cfg_attr(loom, allow(dead_code))]
    fn busy_seconds(&self) -> f64 {
        self.busy_nanos() as f64 / 1e9
    }

    /// Workers' busy time so far, never lower than an earlier reading.
    #[cfg_attr(loom, allow(dead_code))]
    fn busy_nanos(&self) -> u64 {
        let nanos = self.core.busy_nanos();
        self.busy_exported
            .fetch_max(nanos, Ordering::Relaxed)
            .max(nanos)
    }

    #[cfg_attr(loom, allow(dead_code))]
    fn oldest_age_seconds(&self) -> f64 {
        self.core.oldest_enqueued_at().map_or(0.0, |at| {
            clock::nanos_between(at, clock::raw()) as f64 / 1e9
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel_queued();
        self.sync();
    }
}

#[cfg(not(loom))]
impl crate::metrics::Collector for Inner {
    fn collect(&self, out: &mut crate::metrics::Collection) {
        self.sync();
        self.sig
            .collect(out, self.core.depth(), self.oldest_age_seconds());
        let l = self.sig.label.as_str();
        out.push(&names::POOL_WORKERS, &[l], self.core.workers() as f64);
        let busy = self.core.busy() as u64;
        self.busy_max.observe(busy);
        out.push(&names::POOL_BUSY, &[l], busy as f64);
        if let Some(w) = out.window() {
            let max = self.busy_max.max(w).max(busy);
            out.push(&names::POOL_BUSY_MAX_10S, &[l], max as f64);
        }
        out.push(&names::POOL_BUSY_SECONDS_TOTAL, &[l], self.busy_seconds());
        let o = &self.outcomes;
        for (outcome, c) in [
            ("ok", &o.ok),
            ("err", &o.err),
            ("panic", &o.panic),
            ("rejected", &o.rejected),
            ("cancelled", &o.cancelled),
        ] {
            out.push(&names::POOL_TASKS_TOTAL, &[l, outcome], c.get() as f64);
        }
    }

    fn snapshot(&self, out: &mut crate::metrics::Sections) {
        self.sync();
        let depth = self.core.depth();
        self.sig.snapshot(out, depth, self.oldest_age_seconds());
        let busy_nanos = self.busy_nanos();
        let busy = self.core.busy();
        self.busy_max.observe(busy as u64);
        let workers = self.core.workers();
        // The busy ratio over the last 10 s: the same for every reader.
        let recent = out.over(10);
        let avg = recent
            .and_then(|w| self.busy_total.ratio(&w, busy_nanos, workers as f64))
            .unwrap_or(0.0);
        let avg_nanos = recent
            .and_then(|w| self.busy_total.delta(&w, busy_nanos))
            .map_or(0, |(_, nanos)| nanos);
        let window = out.window().map(|w| {
            let busy_max = self.busy_max.max(w).max(busy as u64);
            json!({
                "busy_max": busy_max,
                "saturation_max": busy_max as f64 / workers as f64,
                "busy_ratio": self.busy_total.ratio(w, busy_nanos, workers as f64),
                "task_seconds": self.task_seconds.window(w).map(|h| h.to_json()),
            })
        });
        let o = &self.outcomes;
        let entry = json!({
            "name": self.sig.name,
            "label": self.sig.label,
            "workers": workers,
            "busy": busy,
            "saturation": busy as f64 / workers as f64,
            "saturation_avg": avg,
            "saturation_avg_window_seconds": avg_nanos as f64 / 1e9,
            "busy_seconds": self.busy_seconds(),
            "queue": self.sig.label,
            "depth": depth,
            "capacity": self.sig.capacity,
            "lane_depths": self.core.lane_depths(),
            "tasks": {
                "ok": o.ok.get(),
                "err": o.err.get(),
                "panic": o.panic.get(),
                "rejected": o.rejected.get(),
                "cancelled": o.cancelled.get(),
            },
            "task_seconds": self.task_seconds.snapshot().to_json(),
        });
        out.push("pools", crate::metrics::window::attach(entry, window));
    }

    fn tick(&self, tick: &crate::metrics::Tick) {
        self.sig.tick(tick, self.core.depth());
        self.busy_total.tick(tick, self.busy_nanos());
        self.busy_max.tick(tick, self.core.busy() as u64);
    }

    fn inventory(&self, out: &mut crate::metrics::Sections) {
        self.sig.inventory(out, "perfkit::pool job");
        out.push(
            "pools",
            json!({
                "name": self.sig.name,
                "label": self.sig.label,
                "workers": self.core.workers(),
                "queue_capacity": self.sig.capacity,
                "policy": self.sig.policy.as_str(),
                "lanes": self.core.lanes(),
                "fair_every": self.core.fair_every(),
                // The jobs running; the queue is its own `queues` entry.
                "crash_exposure_items": self.core.workers(),
                "source": self.sig.source(),
            }),
        );
    }
}
