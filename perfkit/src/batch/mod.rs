//! Batching with size and age triggers, retries and a dead-letter path, so a failed flush
//! never loses its items silently.
//!
//! A [`Batcher`] accepts items ([`Batcher::add`]) into a bounded intake queue (a
//! [`perfkit::queue`](crate::queue) named after the batcher, so its depth, drops and wait
//! times appear under the queue series too) and a background task hands them to your
//! [`Flush`] implementation in batches:
//!
//! * **size**: as soon as `max_batch` items are pending;
//! * **interval**: when `max_delay` has passed since the first item of the batch arrived;
//! * **shutdown**: when the batcher is closed ([`Batcher::close`]) or every handle is
//!   dropped, everything still pending is flushed. [`Batcher::shutdown`] bounds that with a
//!   deadline: past it, the flush in progress is abandoned and what is left is counted as
//!   dropped (`reason="shutdown"` for the batch in hand, `"closed"` for the intake queue).
//!
//! [`Flush::flush`] *borrows* the batch: the batcher keeps the items until a flush succeeds.
//! A failed (or panicking) flush is retried per the [`Retry`] policy; after the last attempt
//! the items go to the dead-letter callback ([`Builder::dead_letter`]) if one is set, and are
//! otherwise counted in `perfkit_queue_dropped_total{queue="<name>",reason="flush_failed"}`.
//!
//! # Signals
//! `perfkit_batch_size` (items per batch, once per batch), `perfkit_batch_flush_seconds`
//! (per attempt), `perfkit_batch_flushes_total{trigger,outcome}` (per attempt) and
//! `perfkit_batch_pending` (read at scrape: intake queue plus the batch being flushed).
//!
//! # Examples
//! ```
//! use perfkit::batch::{Batcher, Flush};
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! struct Sink(Arc<Mutex<Vec<u32>>>);
//!
//! impl Flush<u32> for Sink {
//!     type Error = std::io::Error;
//!     async fn flush(&mut self, batch: &[u32]) -> Result<(), Self::Error> {
//!         self.0.lock().unwrap().extend_from_slice(batch);
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let out = Arc::new(Mutex::new(Vec::new()));
//! let batcher = Batcher::builder("doc-sink", Sink(out.clone()))
//!     .max_batch(100)
//!     .max_delay(Duration::from_millis(50))
//!     .build()
//!     .unwrap();
//! for i in 0..250 {
//!     batcher.add(i).await.unwrap();
//! }
//! let report = batcher.close().await;
//! assert_eq!(report.flushed, 250);
//! assert_eq!(out.lock().unwrap().len(), 250);
//! # });
//! ```

mod error;

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

pub use error::BuildError;

use crate::metrics::{Counter, Histogram, Registry, WindowMax, names};
use crate::queue::{self, Policy, Receiver, SendError, SendOutcome, Sender};

/// What a batcher hands its batches to.
///
/// Items must be `Send + Sync`: the flush future borrows the batch across its awaits.
///
/// `flush` borrows the batch: on `Err` (or a panic) the batcher still holds every item and
/// retries them, then dead-letters or counts them. On `Ok` the batch is gone.
pub trait Flush<T>: Send + 'static {
    /// The error a failed flush reports; its text goes to logs and the dead-letter callback.
    type Error: std::fmt::Display + Send + 'static;

    /// Writes one batch (to a database, a socket, ...).
    fn flush(&mut self, batch: &[T]) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// How often and how patiently a failed flush is retried.
///
/// The delay before attempt `n + 1` is `backoff * 2^(n-1)`, capped at `max_backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
}

impl Retry {
    /// `attempts` tries in all (the first included), 100 ms backoff doubling up to 5 s.
    pub const fn attempts(attempts: u32) -> Retry {
        Retry {
            attempts,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }

    /// One attempt, no retry.
    pub const fn none() -> Retry {
        Retry::attempts(1)
    }

    /// The delay before the first retry.
    pub const fn backoff(mut self, backoff: Duration) -> Retry {
        self.backoff = backoff;
        self
    }

    /// The longest delay between two attempts.
    pub const fn max_backoff(mut self, max: Duration) -> Retry {
        self.max_backoff = max;
        self
    }

    fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

impl Default for Retry {
    /// Three attempts, 100 ms backoff doubling up to 5 s.
    fn default() -> Self {
        Retry::attempts(3)
    }
}

/// The tracked-task name of every batcher's flusher (see [`crate::task`]).
pub const FLUSHER_TASK: &str = "perfkit.batch.flusher";

type DeadLetter<T> = Box<dyn FnMut(Vec<T>, &str) + Send>;

/// Configures a [`Batcher`].
#[must_use = "a Builder does nothing until .build() is called"]
pub struct Builder<'r, T, F> {
    name: String,
    flush: F,
    max_batch: usize,
    max_delay: Duration,
    max_pending: usize,
    policy: Policy,
    retry: Retry,
    dead_letter: Option<DeadLetter<T>>,
    registry: Option<&'r Registry>,
}

impl<T, F> std::fmt::Debug for Builder<'_, T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("max_batch", &self.max_batch)
            .field("max_delay", &self.max_delay)
            .field("max_pending", &self.max_pending)
            .field("policy", &self.policy)
            .field("retry", &self.retry)
            .field("dead_letter", &self.dead_letter.is_some())
            .finish()
    }
}

impl<'r, T: Send + Sync + 'static, F: Flush<T>> Builder<'r, T, F> {
    /// Batches of at most `max_batch` items (default 500).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n;
        self
    }

    /// Flush at the latest this long after a batch's first item arrived (default 1 s).
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Bound of the intake queue: items accepted but not yet taken into a batch
    /// (default 10 000).
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n;
        self
    }

    /// What a full intake queue does with a new item (default [`Policy::Block`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How failed flushes are retried (default three attempts).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Receives the items of a batch whose every attempt failed, with the last error's text.
    /// Without it those items are counted as dropped with reason `flush_failed`.
    pub fn dead_letter(mut self, f: impl FnMut(Vec<T>, &str) + Send + 'static) -> Self {
        self.dead_letter = Some(Box::new(f));
        self
    }

    /// Records into `registry` instead of the global one.
    pub fn registry(mut self, registry: &'r Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Builds the batcher and spawns its flusher on the current tokio runtime.
    ///
    /// # Errors
    /// See [`BuildError`].
    #[track_caller]
    pub fn build(self) -> Result<Batcher<T>, BuildError> {
        let site = Location::caller();
        let name = self.name.clone();
        if self.max_batch == 0 {
            return Err(BuildError::ZeroMaxBatch { name });
        }
        if self.max_delay.is_zero() {
            return Err(BuildError::ZeroMaxDelay { name });
        }
        if self.retry.attempts == 0 {
            return Err(BuildError::ZeroAttempts { name });
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime { name });
        }
        if !timers_enabled() {
            // Otherwise the flusher would panic at its first batch, taking its items with it.
            return Err(BuildError::NoTimer { name });
        }
        let registry = self.registry.unwrap_or_else(|| crate::metrics::registry());
        let (tx, rx) = queue::Builder::new(self.name.clone(), self.max_pending)
            .intake_of_batcher()
            .policy(self.policy)
            .registry(registry)
            .build_at::<T>(site)?;
        let label = tx.label().to_owned();
        let l = label.as_str();
        let flushes = |trigger: &str, outcome: &str| {
            registry.counter(&names::BATCH_FLUSHES_TOTAL, &[l, trigger, outcome])
        };
        let metrics = Metrics {
            size: registry.histogram(&names::BATCH_SIZE, &[l]),
            flush_seconds: registry.histogram(&names::BATCH_FLUSH_SECONDS, &[l]),
            flushes: [
                [flushes("size", "ok"), flushes("size", "err")],
                [flushes("interval", "ok"), flushes("interval", "err")],
                [flushes("shutdown", "ok"), flushes("shutdown", "err")],
            ],
            dropped: registry.counter(&names::QUEUE_DROPPED_TOTAL, &[l, "", l, "flush_failed"]),
        };
        let (closing_tx, closing_rx) = watch::channel(false);
        let (abandon_tx, abandon_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            name: self.name,
            label,
            site,
            max_batch: self.max_batch,
            max_delay: self.max_delay,
            max_pending: self.max_pending,
            policy: self.policy,
            retry: self.retry,
            has_dead_letter: self.dead_letter.is_some(),
            in_flush: AtomicUsize::new(0),
            dead_lettered: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            pending_max: WindowMax::new(),
            metrics,
            intake: tx.probe(),
            closing: closing_tx,
            abandon: abandon_tx,
            done: done_rx,
        });
        registry.register_collector(
            Arc::downgrade(&shared) as std::sync::Weak<dyn crate::metrics::Collector>
        );
        let flusher = Flusher {
            shared: Arc::clone(&shared),
            rx,
            flush: self.flush,
            dead_letter: self.dead_letter,
            closing: closing_rx,
            abandon: abandon_rx,
            report: Report::default(),
        };
        crate::task::spawn(FLUSHER_TASK, async move {
            let report = flusher.run().await;
            let _ = done_tx.send(Some(report));
        });
        Ok(Batcher { tx, shared })
    }
}

/// What a batcher did, returned by [`Batcher::close`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Items flushed successfully.
    pub flushed: u64,
    /// Items handed to the dead-letter callback after every attempt failed.
    pub dead_lettered: u64,
    /// Items dropped after every attempt failed (no dead-letter callback), counted as
    /// `flush_failed`.
    pub dropped: u64,
    /// Batches formed (each flushed, dead-lettered or dropped once).
    pub batches: u64,
    /// Flush attempts that failed or panicked.
    pub failed_attempts: u64,
    /// Items still pending when [`Batcher::shutdown`]'s deadline passed, counted as
    /// `perfkit_queue_dropped_total`: the batch being flushed, whose flush was abandoned
    /// (`reason="shutdown"`), and the intake queue (`reason="closed"`).
    pub abandoned: u64,
}

struct Metrics {
    size: Arc<Histogram>,
    flush_seconds: Arc<Histogram>,
    /// `[trigger][outcome]`: triggers size, interval, shutdown; outcomes ok, err.
    flushes: [[Arc<Counter>; 2]; 3],
    dropped: Arc<Counter>,
}

struct Shared<T> {
    name: String,
    label: String,
    site: &'static Location<'static>,
    max_batch: usize,
    max_delay: Duration,
    max_pending: usize,
    policy: Policy,
    retry: Retry,
    has_dead_letter: bool,
    /// Items taken from the intake queue and not yet flushed, dead-lettered or dropped.
    in_flush: AtomicUsize,
    dead_lettered: AtomicU64,
    flushed: AtomicU64,
    /// Pending items, sampled each second.
    pending_max: WindowMax,
    metrics: Metrics,
    /// The intake queue's depth, for `pending` and the collector. Not a sender, so dropping
    /// every [`Batcher`] still closes the intake and triggers the final flush.
    intake: queue::Probe<T>,
    closing: watch::Sender<bool>,
    /// Set when a shutdown's deadline passes: the flusher stops where it is.
    abandon: watch::Sender<bool>,
    done: watch::Receiver<Option<Report>>,
}

#[derive(Clone, Copy)]
enum Trigger {
    Size = 0,
    Interval = 1,
    Shutdown = 2,
}

/// Accepts items and flushes them in batches; cheap to clone. See the [module docs](self).
pub struct Batcher<T> {
    tx: Sender<T>,
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Batcher {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> std::fmt::Debug for Batcher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("name", &self.shared.name)
            .field("pending", &self.pending())
            .field("max_batch", &self.shared.max_batch)
            .finish()
    }
}

impl<T: Send + Sync + 'static> Batcher<T> {
    /// Starts configuring a batcher called `name` (its `batcher` label) over `flush`.
    pub fn builder<'r, F: Flush<T>>(name: impl Into<String>, flush: F) -> Builder<'r, T, F> {
        Builder {
            name: name.into(),
            flush,
            max_batch: 500,
            max_delay: Duration::from_secs(1),
            max_pending: 10_000,
            policy: Policy::Block,
            retry: Retry::default(),
            dead_letter: None,
            registry: None,
        }
    }
}

impl<T> Batcher<T> {
    /// Adds an item, waiting for room under [`Policy::Block`]; see
    /// [`Sender::send`](crate::queue::Sender::send).
    ///
    /// # Errors
    /// [`SendError::Closed`] once the batcher is closing; [`SendError::Full`] under
    /// [`Policy::Reject`]. The item is handed back.
    pub async fn add(&self, item: T) -> Result<SendOutcome, SendError<T>> {
        self.tx.send(item).await
    }

    /// Adds an item without waiting.
    ///
    /// # Errors
    /// As [`Sender::try_send`](crate::queue::Sender::try_send).
    pub fn try_add(&self, item: T) -> Result<SendOutcome, SendError<T>> {
        self.tx.try_send(item)
    }

    /// Items accepted and not yet flushed, dead-lettered or dropped.
    pub fn pending(&self) -> usize {
        self.shared.pending()
    }

    /// Stops intake, flushes everything pending (with retries), waits for the flusher to
    /// finish and returns its report. Calling it again (or from a clone) returns the same
    /// report. Adds after this point fail with [`SendError::Closed`].
    ///
    /// If the runtime shuts down before the flusher finishes, items still pending are lost
    /// with it: close the batcher before shutting the runtime down.
    pub async fn close(&self) -> Report {
        let _ = self.shared.closing.send(true);
        self.finished().await
    }

    /// [`Batcher::close`] with a deadline: stops intake and flushes what is pending until
    /// `deadline` has passed, then abandons the flush in progress (its future is dropped at
    /// its current await) and counts everything still pending as dropped
    /// ([`Report::abandoned`]: `perfkit_queue_dropped_total{reason="shutdown"}` for the
    /// batch, `reason="closed"` for the intake queue). Returns once
    /// the flusher has stopped, so a stalled sink cannot hold a shutdown past its deadline.
    ///
    /// A flush abandoned mid-way may have written part of its batch, or all of it, before
    /// its future was dropped: a sink that must know makes its write conditional on not
    /// being abandoned (see the `ingest` example's store).
    pub async fn shutdown(&self, deadline: Duration) -> Report {
        let _ = self.shared.closing.send(true);
        if let Ok(report) = tokio::time::timeout(deadline, self.finished()).await {
            return report;
        }
        let _ = self.shared.abandon.send(true);
        self.finished().await
    }

    async fn finished(&self) -> Report {
        let mut done = self.shared.done.clone();
        match done.wait_for(Option::is_some).await {
            Ok(r) => r.unwrap_or_default(),
            Err(_) => Report::default(),
        }
    }
}

impl<T> Shared<T> {
    fn pending(&self) -> usize {
        self.intake.len() + self.in_flush.load(Ordering::Relaxed)
    }

    /// The most items pending over `window`: the pending count sampled each second, or the
    /// intake queue's peak depth (seen on every send), whichever is larger.
    fn pending_max(&self, window: &crate::metrics::Window, now: usize) -> u64 {
        self.pending_max.observe(now as u64);
        let sampled = self.pending_max.max(window);
        sampled
            .max(self.intake.depth_max(window) as u64)
            .max(now as u64)
    }
}

struct Flusher<T, F> {
    shared: Arc<Shared<T>>,
    rx: Receiver<T>,
    flush: F,
    dead_letter: Option<DeadLetter<T>>,
    closing: watch::Receiver<bool>,
    abandon: watch::Receiver<bool>,
    report: Report,
}

impl<T: Send + Sync + 'static, F: Flush<T>> Flusher<T, F> {
    async fn run(mut self) -> Report {
        let max = self.shared.max_batch;
        let mut batch: Vec<T> = Vec::with_capacity(max.min(4096));
        let mut closing = false;
        loop {
            // Wait for the first item of the next batch.
            if !closing {
                tokio::select! {
                    biased;
                    _ = self.closing.wait_for(|c| *c) => {
                        closing = true;
                        self.rx.close();
                        continue;
                    }
                    n = self.rx.recv_many(&mut batch, max) => {
                        if n == 0 { break; }
                    }
                }
            } else if self.rx.recv_many(&mut batch, max).await == 0 {
                break;
            }
            self.shared.in_flush.store(batch.len(), Ordering::Relaxed);
            // The batch is due `max_delay` after its first item was *added*, not after the
            // flusher got to it (which may be a whole flush later).
            let waited = self.rx.first_taken_age();
            let deadline =
                tokio::time::Instant::now() + self.shared.max_delay.saturating_sub(waited);
            // Fill it until it is full, old enough, or there is nothing more to come.
            let trigger = loop {
                if batch.len() >= max {
                    break Trigger::Size;
                }
                if closing {
                    // Intake is closed: take what is left without waiting for the clock.
                    let room = max - batch.len();
                    let n = std::future::poll_fn(|cx| {
                        match self.rx.poll_recv_many(cx, &mut batch, room) {
                            Poll::Pending => Poll::Ready(0),
                            ready => ready,
                        }
                    })
                    .await;
                    self.shared.in_flush.store(batch.len(), Ordering::Relaxed);
                    if n == 0 {
                        break Trigger::Shutdown;
                    }
                    continue;
                }
                let room = max - batch.len();
                tokio::select! {
                    biased;
                    _ = self.closing.wait_for(|c| *c) => {
                        closing = true;
                        self.rx.close();
                    }
                    n = self.rx.recv_many(&mut batch, room) => {
                        self.shared.in_flush.store(batch.len(), Ordering::Relaxed);
                        if n == 0 { break Trigger::Shutdown; }
                    }
                    _ = tokio::time::sleep_until(deadline) => break Trigger::Interval,
                }
            };
            let mut abandon = self.abandon.clone();
            let abandoned = tokio::select! {
                biased;
                _ = abandon.wait_for(|a| *a) => true,
                () = self.flush_batch(&mut batch, trigger) => false,
            };
            if abandoned {
                // The deadline passed: the batch in hand and the intake queue are dropped,
                // and counted.
                let held = batch.len();
                batch.clear();
                self.report.abandoned += self.rx.discard(held);
                self.shared.in_flush.store(0, Ordering::Relaxed);
                tracing::warn!(
                    batcher = %self.shared.name,
                    items = self.report.abandoned,
                    "perfkit batcher shutdown deadline passed: pending items dropped"
                );
                break;
            }
        }
        self.report
    }

    async fn flush_batch(&mut self, batch: &mut Vec<T>, trigger: Trigger) {
        let n = batch.len() as u64;
        let m = &self.shared.metrics;
        m.size.record(n);
        self.report.batches += 1;
        let mut last_error = String::new();
        for attempt in 1..=self.shared.retry.attempts {
            let started = crate::clock::raw();
            let outcome = CatchUnwind {
                future: self.flush.flush(batch),
            }
            .await;
            m.flush_seconds
                .record(crate::clock::nanos_between(started, crate::clock::raw()));
            match outcome {
                Ok(Ok(())) => {
                    m.flushes[trigger as usize][0].inc();
                    self.report.flushed += n;
                    self.shared.flushed.fetch_add(n, Ordering::Relaxed);
                    batch.clear();
                    self.shared.in_flush.store(0, Ordering::Relaxed);
                    return;
                }
                Ok(Err(e)) => last_error = e.to_string(),
                Err(panic) => last_error = format!("flush panicked: {}", panic_message(&*panic)),
            }
            m.flushes[trigger as usize][1].inc();
            self.report.failed_attempts += 1;
            tracing::warn!(
                batcher = %self.shared.name,
                attempt,
                attempts = self.shared.retry.attempts,
                items = n,
                error = %last_error,
                "perfkit batch flush failed"
            );
            if attempt < self.shared.retry.attempts {
                tokio::time::sleep(self.shared.retry.delay_after(attempt)).await;
            }
        }
        let items = std::mem::take(batch);
        match &mut self.dead_letter {
            Some(dl) => {
                self.report.dead_lettered += n;
                self.shared.dead_lettered.fetch_add(n, Ordering::Relaxed);
                dl(items, &last_error);
            }
            None => {
                self.report.dropped += n;
                m.dropped.add(n);
                tracing::error!(
                    batcher = %self.shared.name,
                    items = n,
                    error = %last_error,
                    "perfkit batch dropped after every flush attempt failed"
                );
                drop(items);
            }
        }
        self.shared.in_flush.store(0, Ordering::Relaxed);
    }
}

/// Whether the current runtime has a time driver: creating or polling a `sleep` panics
/// when it has none.
pub(crate) fn timers_enabled() -> bool {
    // Only a runtime without timers panics here, and then `build` fails anyway; the panic
    // hook is left alone (swapping it process-wide could hide other threads' panics).
    std::panic::catch_unwind(|| {
        let mut sleep = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let _ = sleep.as_mut().poll(&mut cx);
    })
    .is_ok()
}

pin_project_lite::pin_project! {
    /// Polls a future inside `catch_unwind`, so a panicking flush is a failed attempt rather
    /// than a dead flusher.
    struct CatchUnwind<Fut> {
        #[pin]
        future: Fut,
    }
}

impl<Fut: Future> Future for CatchUnwind<Fut> {
    type Output = Result<Fut::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.project().future;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

fn panic_message(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

impl<T: Send> crate::metrics::Collector for Shared<T> {
    fn collect(&self, out: &mut crate::metrics::Collection) {
        let l = self.label.as_str();
        let pending = self.pending();
        out.push(&names::BATCH_PENDING, &[l], pending as f64);
        if let Some(w) = out.window() {
            let max = self.pending_max(w, pending);
            out.push(&names::BATCH_PENDING_MAX_10S, &[l], max as f64);
        }
        for (outcome, n) in [
            ("flushed", &self.flushed),
            ("dead_lettered", &self.dead_lettered),
        ] {
            out.push(
                &names::BATCH_ITEMS_TOTAL,
                &[l, outcome],
                n.load(Ordering::Relaxed) as f64,
            );
        }
    }

    fn tick(&self, tick: &crate::metrics::Tick) {
        self.pending_max.tick(tick, self.pending() as u64);
    }

    fn snapshot(&self, out: &mut crate::metrics::Sections) {
        let m = &self.metrics;
        let by = |t: usize| json!({ "ok": m.flushes[t][0].get(), "err": m.flushes[t][1].get() });
        let pending = self.pending();
        let window = out.window().map(|w| {
            json!({
                "pending_max": self.pending_max(w, pending),
                "batch_size": m.size.window(w).map(|h| h.to_json()),
                "flush_seconds": m.flush_seconds.window(w).map(|h| h.to_json()),
            })
        });
        let entry = json!({
                "name": self.name,
                "label": self.label,
                "pending": pending,
                "max_pending": self.max_pending,
                "flushed": self.flushed.load(Ordering::Relaxed),
                "dead_lettered": self.dead_lettered.load(Ordering::Relaxed),
                "dropped": m.dropped.get(),
                "flushes": { "size": by(0), "interval": by(1), "shutdown": by(2) },
                "batch_size": m.size.snapshot().to_json(),
                "flush_seconds": m.flush_seconds.snapshot().to_json(),
        });
        out.push("batchers", crate::metrics::window::attach(entry, window));
    }

    fn inventory(&self, out: &mut crate::metrics::Sections) {
        out.push(
            "batchers",
            json!({
                "name": self.name,
                "label": self.label,
                "max_batch": self.max_batch,
                "max_delay_seconds": self.max_delay.as_secs_f64(),
                "max_pending": self.max_pending,
                "policy": self.policy.as_str(),
                "retry": {
                    "attempts": self.retry.attempts,
                    "backoff_seconds": self.retry.backoff.as_secs_f64(),
                    "max_backoff_seconds": self.retry.max_backoff.as_secs_f64(),
                },
                "dead_letter": self.has_dead_letter,
                "item_type": std::any::type_name::<T>(),
                // The batch being flushed; the intake queue is its own `queues` entry.
                "crash_exposure_items": self.max_batch,
                "source": format!("{}:{}", self.site.file(), self.site.line()),
            }),
        );
    }
}
