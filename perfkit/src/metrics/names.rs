//! Every metric perfkit exports: its name, kind, unit, labels and description, defined once.
//!
//! The names are a contract: k6 scripts and dashboards depend on them, so a rename is a
//! breaking change. `docs/metrics.md` explains each series in prose.

/// What kind of Prometheus series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A monotonically increasing count.
    Counter,
    /// A value read at scrape time that can go up and down.
    Gauge,
    /// A distribution of observations in fixed buckets.
    Histogram,
}

impl Kind {
    /// The `# TYPE` word in the Prometheus text format.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The base unit of a metric's values.
///
/// Durations are recorded internally in nanoseconds and exported in seconds; every other unit
/// is recorded and exported as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unit {
    /// Seconds (recorded as nanoseconds).
    Seconds,
    /// Bytes.
    Bytes,
    /// A plain count of things (items, tasks, label sets).
    Count,
}

impl Unit {
    /// The exported value of a recorded one (nanoseconds to seconds). A division, not a
    /// multiplication by `1e-9`: `1e-9` is not exact in binary, and the product prints with
    /// noise (`0.000046880000000000005` for 46 880 ns) where the quotient prints as it is.
    pub(crate) fn export(self, recorded: f64) -> f64 {
        match self {
            Unit::Seconds => recorded / 1e9,
            Unit::Bytes | Unit::Count => recorded,
        }
    }

    /// The unit's name as used in JSON and docs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Bytes => "bytes",
            Unit::Count => "count",
        }
    }
}

/// The static description of one metric family.
#[derive(Debug)]
pub struct MetricDef {
    /// Full Prometheus name, including the `_total` suffix for counters.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Base unit of the values.
    pub unit: Unit,
    /// Label names, in the order label values are given.
    pub labels: &'static [&'static str],
    /// `# HELP` text.
    pub help: &'static str,
    /// Upper bounds of the exported Prometheus buckets (histograms only), in the exported unit.
    pub buckets: &'static [f64],
}

/// Default exported buckets for latencies, in seconds: 1 µs to 10 s.
///
/// Internally every histogram keeps log-linear buckets with 12.5% resolution; these are only
/// the boundaries written to `/metrics`.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_001, 0.000_005, 0.000_01, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Default exported buckets for sizes in items: 1 to 100 000.
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0,
    100_000.0,
];

/// Default exported buckets for byte sizes: 64 B to 64 MiB, by factors of 4.
pub const BYTE_BUCKETS: &[f64] = &[
    64.0,
    256.0,
    1_024.0,
    4_096.0,
    16_384.0,
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

macro_rules! defs {
    ($(
        $(#[$doc:meta])*
        $ident:ident = $name:literal, $kind:ident, $unit:ident, [$($label:literal),*], $help:literal $(, $buckets:expr)?;
    )*) => {
        $(
            $(#[$doc])*
            pub static $ident: MetricDef = MetricDef {
                name: $name,
                kind: Kind::$kind,
                unit: Unit::$unit,
                labels: &[$($label),*],
                help: $help,
                buckets: defs!(@buckets $($buckets)?),
            };
        )*

        /// Every metric perfkit defines, in documentation order.
        pub static ALL: &[&MetricDef] = &[$(&$ident),*];
    };
    (@buckets) => { &[] };
    (@buckets $b:expr) => { $b };
}

defs! {
    /// Items in a queue now.
    QUEUE_DEPTH = "perfkit_queue_depth", Gauge, Count, ["queue", "pool", "batcher"],
        "Items currently held by the queue, read at scrape time.";
    /// A queue's deepest point over the last 10 s.
    QUEUE_DEPTH_MAX_10S = "perfkit_queue_depth_max_10s", Gauge, Count, ["queue", "pool", "batcher"],
        "Largest depth the queue reached over the last 10 s (the current second included), so a burst between two scrapes shows.";
    /// A queue's bound.
    QUEUE_CAPACITY = "perfkit_queue_capacity", Gauge, Count, ["queue", "pool", "batcher"],
        "Maximum number of items the queue holds.";
    /// Items accepted.
    QUEUE_ENQUEUED_TOTAL = "perfkit_queue_enqueued_total", Counter, Count, ["queue", "pool", "batcher"],
        "Items accepted into the queue.";
    /// Items handed to a receiver.
    QUEUE_DEQUEUED_TOTAL = "perfkit_queue_dequeued_total", Counter, Count, ["queue", "pool", "batcher"],
        "Items handed to a receiver.";
    /// Items dropped, by reason.
    QUEUE_DROPPED_TOTAL = "perfkit_queue_dropped_total", Counter, Count, ["queue", "pool", "batcher", "reason"],
        "Items dropped by the queue, by reason (full, oldest, closed, shutdown, flush_failed).";
    /// Items refused and handed back.
    QUEUE_REJECTED_TOTAL = "perfkit_queue_rejected_total", Counter, Count, ["queue", "pool", "batcher"],
        "Items refused because the queue was full and handed back to the sender.";
    /// Enqueue-to-dequeue time.
    QUEUE_WAIT_SECONDS = "perfkit_queue_wait_seconds", Histogram, Seconds, ["queue", "pool", "batcher"],
        "Time items spent in the queue, from enqueue to dequeue.", LATENCY_BUCKETS;
    /// Age of the oldest item.
    QUEUE_OLDEST_AGE_SECONDS = "perfkit_queue_oldest_age_seconds", Gauge, Seconds, ["queue", "pool", "batcher"],
        "Age of the oldest item still in the queue, read at scrape time.";

    /// Items per flush.
    BATCH_SIZE = "perfkit_batch_size", Histogram, Count, ["batcher"],
        "Items per flushed batch.", SIZE_BUCKETS;
    /// Flush duration.
    BATCH_FLUSH_SECONDS = "perfkit_batch_flush_seconds", Histogram, Seconds, ["batcher"],
        "Time spent in the flush function per attempt.", LATENCY_BUCKETS;
    /// Flushes by trigger and outcome.
    BATCH_FLUSHES_TOTAL = "perfkit_batch_flushes_total", Counter, Count, ["batcher", "trigger", "outcome"],
        "Flush attempts by trigger (size, interval, shutdown) and outcome (ok, err).";
    /// Items waiting for a flush.
    BATCH_PENDING = "perfkit_batch_pending", Gauge, Count, ["batcher"],
        "Items buffered and waiting for the next flush, read at scrape time.";
    /// Pending items, maximum over the last 10 s.
    BATCH_PENDING_MAX_10S = "perfkit_batch_pending_max_10s", Gauge, Count, ["batcher"],
        "Largest pending count over the last 10 s: the intake queue's peak depth, or the pending count sampled each second, whichever is larger.";
    /// Items by what became of them.
    BATCH_ITEMS_TOTAL = "perfkit_batch_items_total", Counter, Count, ["batcher", "outcome"],
        "Items that left the batcher, by outcome (flushed: in a batch the flush function accepted; dead_lettered: handed to the dead-letter handler after failed flushes).";

    /// Workers in a pool.
    POOL_WORKERS = "perfkit_pool_workers", Gauge, Count, ["pool"],
        "Workers in the pool.";
    /// Workers running a job now.
    POOL_BUSY = "perfkit_pool_busy", Gauge, Count, ["pool"],
        "Workers currently running a job, read at scrape time.";
    /// Busy workers, maximum over the last 10 s.
    POOL_BUSY_MAX_10S = "perfkit_pool_busy_max_10s", Gauge, Count, ["pool"],
        "Largest number of busy workers over the last 10 s, sampled each second and at scrape time.";
    /// Worker busy time.
    POOL_BUSY_SECONDS_TOTAL = "perfkit_pool_busy_seconds_total", Counter, Seconds, ["pool"],
        "Total time workers spent running jobs; rate() divided by workers is utilisation.";
    /// Job duration.
    POOL_TASK_SECONDS = "perfkit_pool_task_seconds", Histogram, Seconds, ["pool"],
        "Time a worker spent running one job.", LATENCY_BUCKETS;
    /// Jobs by outcome.
    POOL_TASKS_TOTAL = "perfkit_pool_tasks_total", Counter, Count, ["pool", "outcome"],
        "Jobs by outcome (ok, err, panic, rejected, cancelled).";

    /// Tracked tasks alive.
    TASKS_ALIVE = "perfkit_tasks_alive", Gauge, Count, ["task"],
        "Tracked tasks spawned and not yet finished, read at scrape time.";
    /// Tracked tasks alive, maximum over the last 10 s.
    TASKS_ALIVE_MAX_10S = "perfkit_tasks_alive_max_10s", Gauge, Count, ["task"],
        "Largest number of tracked tasks alive over the last 10 s, sampled each second and at scrape time.";
    /// Tracked tasks spawned.
    TASKS_SPAWNED_TOTAL = "perfkit_tasks_spawned_total", Counter, Count, ["task"],
        "Tracked tasks spawned.";
    /// Tracked tasks finished.
    TASKS_FINISHED_TOTAL = "perfkit_tasks_finished_total", Counter, Count, ["task", "outcome"],
        "Tracked tasks finished, by outcome (ok, panic, cancelled).";

    /// Hot path call duration.
    HOT_PATH_SECONDS = "perfkit_hot_path_seconds", Histogram, Seconds, ["function", "module"],
        "Duration of calls to a #[hot_path] function.", LATENCY_BUCKETS;
    /// Hot path calls by outcome.
    HOT_PATH_CALLS_TOTAL = "perfkit_hot_path_calls_total", Counter, Count, ["function", "module", "outcome"],
        "Calls to a #[hot_path] function by outcome (ok, err, panic, cancelled).";
    /// Hot path calls in flight.
    HOT_PATH_IN_FLIGHT = "perfkit_hot_path_in_flight", Gauge, Count, ["function", "module"],
        "Calls to a #[hot_path] function currently running, read at scrape time.";
    /// Hot path calls in flight, maximum over the last 10 s.
    HOT_PATH_IN_FLIGHT_MAX_10S = "perfkit_hot_path_in_flight_max_10s", Gauge, Count, ["function", "module"],
        "Largest number of calls to a #[hot_path] function running at once over the last 10 s, sampled each second and at scrape time.";

    /// Time spent waiting for a lock.
    LOCK_WAIT_SECONDS = "perfkit_lock_wait_seconds", Histogram, Seconds, ["lock"],
        "Time an acquisition of an instrumented lock waited, recorded only for acquisitions that had to wait.", LATENCY_BUCKETS;
    /// Time a lock was held.
    LOCK_HOLD_SECONDS = "perfkit_lock_hold_seconds", Histogram, Seconds, ["lock"],
        "Time an instrumented lock was held, from acquisition to the guard's drop: every contended acquisition, and one uncontended acquisition in 32 counted 32 times.", LATENCY_BUCKETS;
    /// Lock acquisitions.
    LOCK_ACQUISITIONS_TOTAL = "perfkit_lock_acquisitions_total", Counter, Count, ["lock", "contended"],
        "Acquisitions of an instrumented lock, by whether they had to wait (contended=true) or not.";
    /// Callers waiting for a lock now.
    LOCK_WAITERS = "perfkit_lock_waiters", Gauge, Count, ["lock"],
        "Callers waiting to acquire an instrumented lock, read at scrape time.";
    /// Callers waiting for a lock, maximum over the last 10 s.
    LOCK_WAITERS_MAX_10S = "perfkit_lock_waiters_max_10s", Gauge, Count, ["lock"],
        "Largest number of callers waiting for an instrumented lock at once over the last 10 s.";
    /// Guards dropped by a panic.
    LOCK_PANICS_TOTAL = "perfkit_lock_panics_total", Counter, Count, ["lock"],
        "Guards of an instrumented lock dropped while their thread was panicking: the lock was released, the data it guards may be half-updated.";

    /// Permits a semaphore has.
    SEMAPHORE_PERMITS = "perfkit_semaphore_permits", Gauge, Count, ["semaphore"],
        "Permits an instrumented semaphore has in all, in use or not, read at scrape time.";
    /// Permits held now.
    SEMAPHORE_IN_USE = "perfkit_semaphore_in_use", Gauge, Count, ["semaphore"],
        "Permits of an instrumented semaphore held now, read at scrape time.";
    /// Permits held, maximum over the last 10 s.
    SEMAPHORE_IN_USE_MAX_10S = "perfkit_semaphore_in_use_max_10s", Gauge, Count, ["semaphore"],
        "Largest number of permits of an instrumented semaphore held at once over the last 10 s.";
    /// Callers waiting for a permit now.
    SEMAPHORE_WAITERS = "perfkit_semaphore_waiters", Gauge, Count, ["semaphore"],
        "Callers waiting for a permit of an instrumented semaphore, read at scrape time.";
    /// Time spent waiting for a permit.
    SEMAPHORE_ACQUIRE_SECONDS = "perfkit_semaphore_acquire_seconds", Histogram, Seconds, ["semaphore"],
        "Time an acquisition of an instrumented semaphore waited for its permits, recorded only for acquisitions that had to wait (timed-out ones included).", LATENCY_BUCKETS;
    /// Permit acquisitions.
    SEMAPHORE_ACQUISITIONS_TOTAL = "perfkit_semaphore_acquisitions_total", Counter, Count, ["semaphore", "contended"],
        "Successful acquisitions of an instrumented semaphore, by whether they had to wait (contended=true) or not.";
    /// Acquisitions that gave up.
    SEMAPHORE_TIMEOUTS_TOTAL = "perfkit_semaphore_timeouts_total", Counter, Count, ["semaphore"],
        "Acquisitions of an instrumented semaphore that gave up after their timeout without a permit.";

    /// Connections (or other pooled resources) the pool holds.
    RESOURCE_SIZE = "perfkit_resource_size", Gauge, Count, ["resource"],
        "Connections (or other resources) the pool holds now, in use or idle, as the pool reports at scrape time.";
    /// Resources checked out now.
    RESOURCE_IN_USE = "perfkit_resource_in_use", Gauge, Count, ["resource"],
        "Resources of the pool checked out now (size minus idle, as the pool reports at scrape time).";
    /// Resources checked out, maximum over the last 10 s.
    RESOURCE_IN_USE_MAX_10S = "perfkit_resource_in_use_max_10s", Gauge, Count, ["resource"],
        "Largest number of the pool's resources checked out at once over the last 10 s: leases through perfkit's wrapper as they happen, the pool's own figure each second and at scrape time.";
    /// Idle resources.
    RESOURCE_IDLE = "perfkit_resource_idle", Gauge, Count, ["resource"],
        "Resources of the pool idle now, read at scrape time.";
    /// The pool's bound.
    RESOURCE_MAX = "perfkit_resource_max", Gauge, Count, ["resource"],
        "Most resources the pool will hold.";
    /// Callers waiting for a resource.
    RESOURCE_WAITERS = "perfkit_resource_waiters", Gauge, Count, ["resource"],
        "Callers waiting for one of the pool's resources, as the pool reports at scrape time; absent for pools that do not count them (bb8, sqlx).";
    /// Time to get a resource from the pool.
    RESOURCE_ACQUIRE_SECONDS = "perfkit_resource_acquire_seconds", Histogram, Seconds, ["resource"],
        "Time an acquisition through perfkit's wrapper took to get a resource from the pool (or to fail), waits and new connections included.", LATENCY_BUCKETS;
    /// Resources handed out.
    RESOURCE_ACQUISITIONS_TOTAL = "perfkit_resource_acquisitions_total", Counter, Count, ["resource"],
        "Successful acquisitions through perfkit's wrapper.";
    /// Acquisitions that timed out.
    RESOURCE_TIMEOUTS_TOTAL = "perfkit_resource_timeouts_total", Counter, Count, ["resource"],
        "Acquisitions through perfkit's wrapper that failed because the pool's wait timed out.";
    /// Acquisitions that failed otherwise.
    RESOURCE_ERRORS_TOTAL = "perfkit_resource_errors_total", Counter, Count, ["resource"],
        "Acquisitions through perfkit's wrapper that failed for another reason than a timeout (the connection could not be made, the pool was closed).";

    /// Label sets that went over a family's cardinality cap.
    METRIC_OVERFLOW_TOTAL = "perfkit_metric_overflow_total", Counter, Count, ["metric"],
        "Requests for a new label set refused by the family's cardinality cap and recorded under __overflow__ instead.";

    /// HTTP request duration.
    HTTP_SERVER_REQUEST_DURATION_SECONDS = "http_server_request_duration_seconds", Histogram, Seconds, ["method", "route", "status"],
        "Time from a request entering perfkit's HTTP layer to its response head, by method, route template and status.", LATENCY_BUCKETS;
    /// HTTP request body size.
    HTTP_SERVER_REQUEST_SIZE_BYTES = "http_server_request_size_bytes", Histogram, Bytes, ["method", "route"],
        "Request body sizes from Content-Length (or an exact body size hint), by method and route template.", BYTE_BUCKETS;
    /// HTTP response body size.
    HTTP_SERVER_RESPONSE_SIZE_BYTES = "http_server_response_size_bytes", Histogram, Bytes, ["method", "route"],
        "Response body bytes sent, by method and route template.", BYTE_BUCKETS;
    /// HTTP requests in flight.
    HTTP_SERVER_REQUESTS_IN_FLIGHT = "http_server_requests_in_flight", Gauge, Count, ["method", "route"],
        "Requests inside perfkit's HTTP layer whose response body has not ended, read at scrape time.";
    /// HTTP requests in flight, maximum over the last 10 s.
    HTTP_SERVER_REQUESTS_IN_FLIGHT_MAX_10S = "http_server_requests_in_flight_max_10s", Gauge, Count, ["method", "route"],
        "Largest number of requests inside perfkit's HTTP layer at once over the last 10 s.";

    /// jemalloc: bytes allocated by the application.
    JEMALLOC_ALLOCATED_BYTES = "perfkit_jemalloc_allocated_bytes", Gauge, Bytes, [],
        "Bytes allocated by the application through jemalloc (stats.allocated), read at scrape time.";
    /// jemalloc: bytes in active pages.
    JEMALLOC_ACTIVE_BYTES = "perfkit_jemalloc_active_bytes", Gauge, Bytes, [],
        "Bytes in active jemalloc pages, a multiple of the page size (stats.active), read at scrape time.";
    /// jemalloc: resident bytes.
    JEMALLOC_RESIDENT_BYTES = "perfkit_jemalloc_resident_bytes", Gauge, Bytes, [],
        "Bytes in physically resident data pages mapped by jemalloc (stats.resident), read at scrape time.";

    /// Process CPU time.
    PROCESS_CPU_SECONDS_TOTAL = "process_cpu_seconds_total", Counter, Seconds, [],
        "Total user and system CPU time spent in seconds.";
    /// Resident set size.
    PROCESS_RESIDENT_MEMORY_BYTES = "process_resident_memory_bytes", Gauge, Bytes, [],
        "Resident memory size in bytes.";
    /// Resident set size, maximum over the last 10 s.
    PROCESS_RESIDENT_MEMORY_MAX_10S_BYTES = "perfkit_process_resident_memory_max_10s_bytes", Gauge, Bytes, [],
        "Largest resident memory size over the last 10 s, sampled each second and at scrape time.";
    /// Virtual memory size.
    PROCESS_VIRTUAL_MEMORY_BYTES = "process_virtual_memory_bytes", Gauge, Bytes, [],
        "Virtual memory size in bytes.";
    /// Open file descriptors.
    PROCESS_OPEN_FDS = "process_open_fds", Gauge, Count, [],
        "Number of open file descriptors.";
    /// File descriptor limit.
    PROCESS_MAX_FDS = "process_max_fds", Gauge, Count, [],
        "Maximum number of open file descriptors.";
    /// OS threads.
    PROCESS_THREADS = "process_threads", Gauge, Count, [],
        "Number of OS threads in the process.";
    /// Start time.
    PROCESS_START_TIME_SECONDS = "process_start_time_seconds", Gauge, Seconds, [],
        "Start time of the process since unix epoch in seconds.";

    /// Live heap bytes, whichever allocator reports them.
    HEAP_ALLOCATED_BYTES = "perfkit_heap_allocated_bytes", Gauge, Bytes, [],
        "Live heap bytes, read at scrape time: what the perfkit::alloc::Counting global allocator handed out and was not yet freed when it is the global allocator, else jemalloc's stats.allocated when jemalloc serves the allocations (feature heap-profiling).";
    /// Allocations served through `perfkit::alloc::Counting`.
    HEAP_ALLOCATIONS_TOTAL = "perfkit_heap_allocations_total", Counter, Count, [],
        "Allocations (alloc and alloc_zeroed calls) served by the perfkit::alloc::Counting global allocator; reallocations are not included.";

    /// Runtime worker threads.
    TOKIO_RUNTIME_WORKERS = "tokio_runtime_workers", Gauge, Count, ["runtime"],
        "Worker threads of the tokio runtime.";
    /// Runtime alive tasks.
    TOKIO_RUNTIME_ALIVE_TASKS = "tokio_runtime_alive_tasks", Gauge, Count, ["runtime"],
        "Tasks alive in the tokio runtime.";
    /// Runtime global queue.
    TOKIO_RUNTIME_GLOBAL_QUEUE_DEPTH = "tokio_runtime_global_queue_depth", Gauge, Count, ["runtime"],
        "Tasks waiting in the tokio runtime's global (injection) queue.";
    /// Worker busy time.
    TOKIO_RUNTIME_WORKER_BUSY_SECONDS_TOTAL = "tokio_runtime_worker_busy_seconds_total", Counter, Seconds, ["runtime", "worker"],
        "Time the worker thread spent busy running tasks.";
    /// How late the runtime's probe task ran.
    RUNTIME_SCHEDULE_DELAY_SECONDS = "perfkit_runtime_schedule_delay_seconds", Histogram, Seconds, ["runtime"],
        "How late a probe task woke on the runtime after its timer fired, every 100 ms: how long a ready task waits for a worker thread (the timer adds up to 1 ms).", LATENCY_BUCKETS;
    /// How late the runtime's probe is now.
    RUNTIME_PROBE_LATE_SECONDS = "perfkit_runtime_probe_late_seconds", Gauge, Seconds, ["runtime"],
        "How long ago the runtime's probe timer fired without the probe having run yet (0 when it is on time), read at scrape time: a runtime so busy that the probe cannot run records no delay until it does.";
    /// Worker parks.
    TOKIO_RUNTIME_WORKER_PARK_TOTAL = "tokio_runtime_worker_park_total", Counter, Count, ["runtime", "worker"],
        "Times the worker thread parked (went idle).";
}
