//! The write path: `POST /events` puts each event on the `events` queue; a forwarder task
//! hands each one to the `progress` worker pool (`INGEST_WORKERS` workers), whose job
//! processes the per-user progress update (plus `INGEST_WORK_DELAY_US` of CPU work) and
//! adds it to the `db` batcher, which upserts each batch into SQLite in one transaction
//! (every `INGEST_FLUSH_INTERVAL_MS` or `INGEST_MAX_BATCH` events).
//!
//! Backpressure runs all the way back: a slow database fills the batcher, which blocks the
//! pool's jobs, which fills the pool's queue, which blocks the forwarder, which fills the
//! `events` queue, whose policy decides.
//!
//! Everything the API accepted ends up applied to the database or counted as dropped by
//! perfkit (`perfkit_queue_dropped_total` for the `events` queue, the pool's queue and the
//! `db` batcher, plus pool jobs that failed or were stopped at shutdown): the shutdown
//! report checks exactly that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use perfkit::batch::{Batcher, Flush, Report as BatchReport};
use perfkit::pool::{Pool, ShutdownReport};
use perfkit::queue::{self, Receiver, SendError, SendOutcome, Sender};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::event::Event;
use crate::store::{Store, StoreError};

/// Name of the queue `POST /events` writes to.
pub const EVENTS_QUEUE: &str = "events";
/// Name of the batcher that writes to SQLite.
pub const DB_BATCHER: &str = "db";
/// Name of the worker pool that processes events (and of its queue).
pub const PROGRESS_POOL: &str = "progress";
/// How long the pool may take at shutdown to finish the events it holds.
const POOL_DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Writes batches to the store, after the configured artificial delay.
#[derive(Debug)]
struct DbFlush {
    store: Store,
    delay: Duration,
}

impl Flush<Event> for DbFlush {
    type Error = StoreError;

    #[perfkit::hot_path(name = "db_flush")]
    async fn flush(&mut self, batch: &[Event]) -> Result<(), StoreError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.store.apply(batch.to_vec()).await
    }
}

/// The running write path.
#[derive(Debug)]
pub struct Pipeline {
    forwarder: JoinHandle<Drained>,
}

/// What the write path did by the time it drained.
#[derive(Debug, Clone, Default)]
pub struct Drained {
    /// The batcher's report.
    pub batches: BatchReport,
    /// The pool's shutdown report (`None` if the forwarder itself failed).
    pub pool: Option<ShutdownReport>,
}

impl Drained {
    /// Events the pool took but did not hand to the batcher: jobs that failed (`err`,
    /// `panic`) or were stopped mid-run at the shutdown deadline. (Jobs cancelled while
    /// still queued count as drops of the pool's queue.)
    pub fn lost_in_pool(&self) -> u64 {
        self.pool
            .as_ref()
            .map_or(0, |r| r.err + r.panicked + r.cancelled_running)
    }
}

/// Builds the queue and the batcher and starts the forwarder. Returns the sender the API
/// uses; when every clone of it is dropped, the pipeline drains.
pub fn start(store: Store, config: &Config) -> Result<(Sender<Event>, Pipeline), PipelineError> {
    let (tx, rx) = queue::Builder::new(EVENTS_QUEUE, config.queue_capacity)
        .policy(config.queue_policy)
        .build()?;
    let batcher = Batcher::builder(
        DB_BATCHER,
        DbFlush {
            store,
            delay: config.flush_delay,
        },
    )
    .max_batch(config.max_batch)
    .max_delay(config.flush_interval)
    .max_pending(config.max_batch.max(1024))
    .build()?;
    let pool = perfkit::pool::Builder::new(PROGRESS_POOL)
        .workers(config.workers)
        .queue_capacity(config.workers * 256)
        .build()?;
    let forwarder = perfkit::task::spawn(
        "forwarder",
        forward(rx, pool, Arc::new(batcher), config.work_delay),
    );
    Ok((tx, Pipeline { forwarder }))
}

/// One event's processing, run on the pool: the (simulated) CPU work of a progress update,
/// then the hand-off to the batcher (waiting while it is full).
#[perfkit::hot_path]
async fn progress_update(
    event: Event,
    batcher: Arc<Batcher<Event>>,
    work: Duration,
) -> Result<SendOutcome, SendError<Event>> {
    if !work.is_zero() {
        let until = Instant::now() + work;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    batcher.add(event).await
}

/// Moves events from the queue onto the pool (waiting while the pool's queue is full), then,
/// once the queue is closed and drained, shuts the pool down and closes the batcher.
async fn forward(
    mut rx: Receiver<Event>,
    pool: Pool,
    batcher: Arc<Batcher<Event>>,
    work: Duration,
) -> Drained {
    let mut buf = Vec::with_capacity(512);
    while rx.recv_many(&mut buf, 512).await > 0 {
        for event in buf.drain(..) {
            let job = progress_update(event, batcher.clone(), work);
            match pool.submit(job).await {
                // The pool counts each job's outcome; nobody waits for the result.
                Ok(handle) => drop(handle),
                // Only happens if the pool shut down early; perfkit counted nothing for
                // this event, so say so loudly.
                Err(e) => tracing::error!(error = %e, "pool refused an event"),
            }
        }
    }
    // The pool finishes (or, past the deadline, cancels and counts) its jobs before the
    // batcher stops taking their events.
    let pool_report = pool.shutdown(POOL_DRAIN_DEADLINE).await;
    Drained {
        batches: batcher.close().await,
        pool: Some(pool_report),
    }
}

impl Pipeline {
    /// Waits until everything sent before the last sender was dropped is flushed.
    pub async fn drain(self) -> Drained {
        self.forwarder.await.unwrap_or_default()
    }
}

/// The pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The queue configuration is invalid.
    #[error(transparent)]
    Queue(#[from] queue::BuildError),
    /// The batcher configuration is invalid.
    #[error(transparent)]
    Batch(#[from] perfkit::batch::BuildError),
    /// The pool configuration is invalid.
    #[error(transparent)]
    Pool(#[from] perfkit::pool::BuildError),
}

/// Events perfkit counted as dropped on the write path so far: drops of the `events` queue,
/// of the pool's queue and of the batcher's intake queue, and events of batches dropped after
/// failed flushes.
/// Read from the registry's counters, which outlive the queue and batcher.
pub fn dropped_events() -> u64 {
    use perfkit::metrics::{names, registry};
    let r = registry();
    let mut dropped = 0;
    for name in [EVENTS_QUEUE, PROGRESS_POOL, DB_BATCHER] {
        for reason in ["full", "oldest", "closed", "flush_failed"] {
            dropped += r
                .counter_value(&names::QUEUE_DROPPED_TOTAL, &[name, reason])
                .unwrap_or(0);
        }
    }
    dropped
}
