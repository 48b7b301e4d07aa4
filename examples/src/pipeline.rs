//! The write path: `POST /events` puts each event on the `events` queue; a forwarder task
//! moves them into the `db` batcher, which upserts each batch into SQLite in one
//! transaction (every `INGEST_FLUSH_INTERVAL_MS` or `INGEST_MAX_BATCH` events).
//!
//! Everything the API accepted ends up applied to the database or counted as dropped by
//! perfkit (`perfkit_queue_dropped_total` for the `events` queue and the `db` batcher): the
//! shutdown report checks exactly that.

use std::time::Duration;

use perfkit::batch::{Batcher, Flush, Report as BatchReport};
use perfkit::queue::{self, Receiver, Sender};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::event::Event;
use crate::store::{Store, StoreError};

/// Name of the queue `POST /events` writes to.
pub const EVENTS_QUEUE: &str = "events";
/// Name of the batcher that writes to SQLite.
pub const DB_BATCHER: &str = "db";

/// Writes batches to the store, after the configured artificial delay.
#[derive(Debug)]
struct DbFlush {
    store: Store,
    delay: Duration,
}

impl Flush<Event> for DbFlush {
    type Error = StoreError;

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
    forwarder: JoinHandle<BatchReport>,
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
    let forwarder = perfkit::task::spawn("forwarder", forward(rx, batcher));
    Ok((tx, Pipeline { forwarder }))
}

/// Moves events from the queue into the batcher (waiting when the batcher is full, which is
/// what makes a slow database back up into the `events` queue), then closes the batcher once
/// the queue is closed and drained.
async fn forward(mut rx: Receiver<Event>, batcher: Batcher<Event>) -> BatchReport {
    let mut buf = Vec::with_capacity(512);
    while rx.recv_many(&mut buf, 512).await > 0 {
        for event in buf.drain(..) {
            if let Err(e) = batcher.add(event).await {
                // Only happens if the batcher closed early; perfkit counted nothing for
                // this event, so say so loudly.
                tracing::error!(error = %e, "batcher refused an event");
            }
        }
    }
    batcher.close().await
}

impl Pipeline {
    /// Waits until everything sent before the last sender was dropped is flushed.
    pub async fn drain(self) -> BatchReport {
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
}

/// Events perfkit counted as dropped on the write path so far: drops of the `events` queue
/// and of the batcher's intake queue, and events of batches dropped after failed flushes.
/// Read from the registry's counters, which outlive the queue and batcher.
pub fn dropped_events() -> u64 {
    use perfkit::metrics::{names, registry};
    let r = registry();
    let mut dropped = 0;
    for name in [EVENTS_QUEUE, DB_BATCHER] {
        for reason in ["full", "oldest", "closed", "flush_failed"] {
            dropped += r
                .counter_value(&names::QUEUE_DROPPED_TOTAL, &[name, reason])
                .unwrap_or(0);
        }
    }
    dropped
}
