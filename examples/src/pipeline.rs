//! The write path: `POST /events` puts each event on the `events` queue; a forwarder task
//! hands each one to the `progress` worker pool (`INGEST_WORKERS` workers), whose job
//! processes the per-user progress update (`INGEST_WORK_DELAY_US` of CPU work, then the
//! user's in-memory progress under the `user_progress` lock, held `INGEST_LOCK_HOLD_US`
//! longer) and adds it to the `db` batcher, which upserts each batch into the database in
//! one transaction (every `INGEST_FLUSH_INTERVAL_MS` or `INGEST_MAX_BATCH` events).
//!
//! Backpressure runs all the way back: a slow database fills the batcher, which blocks the
//! pool's jobs, which fills the pool's queue, which blocks the forwarder, which fills the
//! `events` queue, whose policy decides.
//!
//! Everything the API accepted ends up applied to the database or counted as dropped by
//! perfkit (`perfkit_queue_dropped_total` for the `events` queue, the pool's queue and the
//! `db` batcher, plus pool jobs that failed or were stopped at shutdown): the shutdown
//! report checks exactly that.
//!
//! Shutdown has one deadline for the whole path ([`Pipeline::shutdown`]): intake stops at
//! once (the `events` queue closes, so requests waiting for room are answered), and the
//! path drains until the deadline. Then the forwarder discards what it still holds and what
//! is queued, the pool cancels its jobs, and the batcher abandons its flush; each counts
//! what it dropped (`reason="closed"` for what was still queued, `"shutdown"` for what was
//! in hand), so a stuck database cannot hold the process, nor
//! make it lose count.

use std::sync::Arc;
use std::time::Duration;

use perfkit::batch::{Batcher, Flush, Report as BatchReport};
use perfkit::pool::{Pool, ShutdownReport};
use perfkit::queue::{self, Receiver, SendError, SendOutcome, Sender};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Config;
use crate::event::Event;
use crate::store::{Store, StoreError};

/// Name of the queue `POST /events` writes to.
pub const EVENTS_QUEUE: &str = "events";
/// Name of the batcher that writes to SQLite.
pub const DB_BATCHER: &str = "db";
/// Name of the worker pool that processes events (and of its queue).
pub const PROGRESS_POOL: &str = "progress";

/// Writes batches to the store, after the configured artificial delay.
#[derive(Debug)]
struct DbFlush {
    store: Store,
    delay: Duration,
    /// The delay applies from this instant on.
    slow_from: Instant,
}

impl Flush<Event> for DbFlush {
    type Error = StoreError;

    #[perfkit::hot_path(name = "db_flush")]
    async fn flush(&mut self, batch: &[Event]) -> Result<(), StoreError> {
        if !self.delay.is_zero() && Instant::now() >= self.slow_from {
            tokio::time::sleep(self.delay).await;
        }
        self.store.apply(batch.to_vec()).await
    }
}

/// The running write path.
#[derive(Debug)]
pub struct Pipeline {
    forwarder: JoinHandle<Drained>,
    /// `Some(deadline)` once shutting down.
    stop: watch::Sender<Option<Instant>>,
    store: Store,
}

/// What the write path did by the time it drained.
#[derive(Debug, Clone, Default)]
pub struct Drained {
    /// The batcher's report.
    pub batches: BatchReport,
    /// The pool's shutdown report (`None` if the forwarder itself failed).
    pub pool: Option<ShutdownReport>,
    /// Events the forwarder discarded at the deadline: taken from the `events` queue but
    /// not handed to the pool, and still queued (counted by perfkit as dropped).
    pub discarded: u64,
    /// Events of flushes abandoned at the deadline that had committed after all.
    pub applied_after_abandon: u64,
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

/// Resolves at `deadline`, or never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
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
            store: store.clone(),
            delay: config.flush_delay,
            slow_from: Instant::now() + config.slow_after,
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
    let (stop, stopping) = watch::channel(None);
    let progress = Arc::new(UserProgress::new(config.lock_hold));
    let forwarder = perfkit::task::spawn(
        "forwarder",
        forward(
            rx,
            pool,
            Arc::new(batcher),
            config.work_delay,
            progress,
            stopping,
        ),
    );
    Ok((
        tx,
        Pipeline {
            forwarder,
            stop,
            store,
        },
    ))
}

/// Name of the lock every event's processing takes to update its user's progress.
pub const PROGRESS_LOCK: &str = "user_progress";

/// Slots of [`UserProgress`]: users are spread over this many counters, so the state stays
/// the same size however many users there are.
const PROGRESS_SLOTS: usize = 4096;

/// Events processed per user (by a hash of the user id into a fixed number of slots), kept
/// in memory behind the `user_progress` lock: the per-user state every event's processing
/// updates.
#[derive(Debug)]
pub struct UserProgress {
    slots: perfkit::sync::Mutex<Box<[u64]>>,
    /// Busy work done while holding the lock (`INGEST_LOCK_HOLD_US`).
    hold: Duration,
}

impl UserProgress {
    fn new(hold: Duration) -> Self {
        UserProgress {
            slots: perfkit::sync::Mutex::new(
                PROGRESS_LOCK,
                vec![0; PROGRESS_SLOTS].into_boxed_slice(),
            ),
            hold,
        }
    }

    /// Counts one event of `user_id`.
    async fn update(&self, user_id: &str) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        user_id.hash(&mut h);
        let slot = (h.finish() % PROGRESS_SLOTS as u64) as usize;
        let mut slots = self.slots.lock().await;
        slots[slot] += 1;
        spin(self.hold);
    }
}

/// Busy CPU work for `d`.
fn spin(d: Duration) {
    if !d.is_zero() {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
    }
}

/// One event's processing, run on the pool: the (simulated) CPU work of a progress update,
/// the update of the user's progress under the `user_progress` lock, then the hand-off to
/// the batcher (waiting while it is full).
#[perfkit::hot_path]
async fn progress_update(
    event: Event,
    batcher: Arc<Batcher<Event>>,
    work: Duration,
    progress: Arc<UserProgress>,
) -> Result<SendOutcome, SendError<Event>> {
    spin(work);
    progress.update(&event.user_id).await;
    batcher.add(event).await
}

/// A shutdown started: close intake, so requests waiting for room are answered now.
fn on_stop(
    rx: &mut Receiver<Event>,
    deadline: &mut Option<Instant>,
    stop: &watch::Receiver<Option<Instant>>,
) {
    // A sender gone without a deadline means stop now.
    *deadline = Some(stop.borrow().unwrap_or_else(Instant::now));
    rx.close();
}

/// Moves events from the queue onto the pool (waiting while the pool's queue is full) until
/// the queue is closed and drained or the shutdown deadline passes, then shuts the pool down
/// and closes the batcher within what is left of the deadline.
async fn forward(
    mut rx: Receiver<Event>,
    pool: Pool,
    batcher: Arc<Batcher<Event>>,
    work: Duration,
    progress: Arc<UserProgress>,
    mut stop: watch::Receiver<Option<Instant>>,
) -> Drained {
    let mut deadline: Option<Instant> = None;
    let mut discarded = 0;
    loop {
        // One event at a time: between the queue and the pool the forwarder holds at most
        // this one, so the inventory's crash exposure is (nearly) the whole story.
        let event = tokio::select! {
            biased;
            _ = stop.changed(), if deadline.is_none() => {
                on_stop(&mut rx, &mut deadline, &stop);
                continue;
            }
            () = until(deadline) => {
                discarded += rx.discard(0);
                break;
            }
            event = rx.recv() => match event {
                Some(event) => event,
                None => break, // closed and drained
            },
        };
        let mut submit = std::pin::pin!(pool.submit(progress_update(
            event,
            batcher.clone(),
            work,
            Arc::clone(&progress),
        )));
        let submitted = loop {
            tokio::select! {
                biased;
                r = &mut submit => break Some(r),
                _ = stop.changed(), if deadline.is_none() => on_stop(&mut rx, &mut deadline, &stop),
                () = until(deadline) => break None,
            }
        };
        match submitted {
            // The pool counts each job's outcome; nobody waits for the result.
            Some(Ok(handle)) => drop(handle),
            // Only happens if the pool shut down early; perfkit counted nothing for this
            // event, so say so loudly.
            Some(Err(e)) => tracing::error!(error = %e, "pool refused an event"),
            // The deadline passed while the pool was full: this event (dropped with the
            // submit) and the queue are discarded.
            None => {
                discarded += rx.discard(1);
                break;
            }
        }
    }
    // Past the deadline the pool cancels its jobs and the batcher abandons its flush, each
    // counting what it dropped. Without a shutdown (every sender dropped), they drain.
    let left = |deadline: Option<Instant>| {
        deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        })
    };
    let pool_report = pool.shutdown(left(deadline)).await;
    let batches = match deadline {
        Some(_) => batcher.shutdown(left(deadline)).await,
        None => batcher.close().await,
    };
    Drained {
        batches,
        pool: Some(pool_report),
        discarded,
        applied_after_abandon: 0,
    }
}

impl Pipeline {
    /// Stops intake at once (requests waiting for room in the `events` queue are answered
    /// 503) and drains the write path until `deadline`; what is still on its way then is
    /// dropped and counted. Returns what was drained.
    pub async fn shutdown(self, deadline: Instant) -> Drained {
        let _ = self.stop.send(Some(deadline));
        self.finish().await
    }

    /// Waits until everything sent before the last sender was dropped is flushed.
    pub async fn drain(self) -> Drained {
        self.finish().await
    }

    async fn finish(self) -> Drained {
        let mut drained = self.forwarder.await.unwrap_or_default();
        drained.applied_after_abandon = self.store.applied_after_abandon();
        drained
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
        // Every reason, and whichever pool or batcher the queue belongs to.
        dropped += r.counter_sum(&names::QUEUE_DROPPED_TOTAL, &[("queue", name)]);
    }
    dropped
}
