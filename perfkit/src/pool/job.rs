//! A submitted job: one allocation holding the job's future and the slot its result lands
//! in, shared by the pool (which runs it) and the submitter's [`JobHandle`].

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// How a job ended, for `perfkit_pool_tasks_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Ok,
    Err,
    Panic,
    Cancelled,
}

/// Why a job produced no value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobError {
    /// The job panicked; the payload's message if it was a string. The worker that ran it
    /// carried on with the next job.
    Panicked(String),
    /// The pool shut down (or was dropped) before the job finished: it was still queued
    /// past the shutdown deadline, or it was running and was stopped.
    Cancelled,
    /// The job was dropped unrun by the pool's overflow policy ([`Policy::DropOldest`]
    /// evicted it, or [`Policy::DropNewest`] refused it).
    ///
    /// [`Policy::DropOldest`]: crate::queue::Policy::DropOldest
    /// [`Policy::DropNewest`]: crate::queue::Policy::DropNewest
    Dropped,
}

impl JobError {
    /// Whether the job panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JobError::Panicked(_))
    }

    /// Whether the job was cancelled by a shutdown.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JobError::Cancelled)
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Panicked(msg) => write!(f, "pool job panicked: {msg}"),
            JobError::Cancelled => f.write_str("pool job cancelled: the pool shut down first"),
            JobError::Dropped => f.write_str("pool job dropped by the pool's overflow policy"),
        }
    }
}

impl std::error::Error for JobError {}

/// How a job's output counts in `perfkit_pool_tasks_total{outcome}`: `err` when
/// [`JobOutput::is_err`] says so, `ok` otherwise.
///
/// Implemented for `()` and for `Result<T, E>` (an `Err` counts as `err`). For another
/// output type, implement it (the default method counts every value as `ok`) or return
/// `Result<T, std::convert::Infallible>`.
pub trait JobOutput {
    /// Whether this value is a failure.
    fn is_err(&self) -> bool {
        false
    }
}

impl JobOutput for () {}

impl<T, E> JobOutput for Result<T, E> {
    fn is_err(&self) -> bool {
        Result::is_err(self)
    }
}

/// The pool's view of a job.
pub(super) trait Run: Send + Sync {
    /// Polls the job; a panic is caught, the future dropped and the handle told.
    fn poll_run(&self, cx: &mut Context<'_>) -> Poll<Outcome>;

    /// Drops the job's future unfinished and completes its handle with `why`.
    fn cancel(&self, why: JobError);
}

pub(super) type JobRef = Arc<dyn Run>;

/// The submitter's view of a job.
trait Await<T>: Send + Sync {
    fn poll_result(&self, cx: &mut Context<'_>) -> Poll<Result<T, JobError>>;
    fn is_finished(&self) -> bool;
}

struct Cell<F: Future> {
    /// Locked only by whoever holds the job's queue entry (one worker, or a canceller), so
    /// never contended.
    future: Mutex<Option<F>>,
    result: Mutex<Slot<F::Output>>,
}

struct Slot<T> {
    value: Option<Result<T, JobError>>,
    finished: bool,
    waker: Option<Waker>,
}

/// Allocates a job; returns the pool's and the handle's references to it.
pub(super) fn new<F>(future: F) -> (JobRef, JobHandle<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: JobOutput + Send + 'static,
{
    let cell = Arc::new(Cell {
        future: Mutex::new(Some(future)),
        result: Mutex::new(Slot {
            value: None,
            finished: false,
            waker: None,
        }),
    });
    let handle = JobHandle {
        cell: cell.clone() as Arc<dyn Await<F::Output>>,
    };
    (cell, handle)
}

impl<F> Cell<F>
where
    F: Future + Send,
    F::Output: Send,
{
    fn complete(&self, value: Result<F::Output, JobError>) {
        let waker = {
            let mut slot = self.result.lock();
            slot.value = Some(value);
            slot.finished = true;
            slot.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<F> Run for Cell<F>
where
    F: Future + Send,
    F::Output: JobOutput + Send,
{
    fn poll_run(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut future = self.future.lock();
        let Some(f) = future.as_mut() else {
            return Poll::Ready(Outcome::Cancelled);
        };
        // SAFETY: the future lives inside this `Arc` allocation, which never moves, and it
        // is never moved out of the `Option`: it is only dropped in place (`*future = None`).
        let pinned = unsafe { Pin::new_unchecked(f) };
        match std::panic::catch_unwind(AssertUnwindSafe(|| pinned.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => {
                let outcome = if value.is_err() {
                    Outcome::Err
                } else {
                    Outcome::Ok
                };
                drop_quietly(&mut future);
                drop(future);
                self.complete(Ok(value));
                Poll::Ready(outcome)
            }
            Err(payload) => {
                drop_quietly(&mut future);
                drop(future);
                self.complete(Err(JobError::Panicked(panic_message(&*payload))));
                Poll::Ready(Outcome::Panic)
            }
        }
    }

    fn cancel(&self, why: JobError) {
        let mut future = self.future.lock();
        drop_quietly(&mut future);
        drop(future);
        self.complete(Err(why));
    }
}

/// Drops the future in place; a panic in its destructor is contained like one in `poll`.
fn drop_quietly<F>(future: &mut Option<F>) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| *future = None));
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

impl<F> Await<F::Output> for Cell<F>
where
    F: Future + Send,
    F::Output: Send,
{
    fn poll_result(&self, cx: &mut Context<'_>) -> Poll<Result<F::Output, JobError>> {
        let mut slot = self.result.lock();
        if let Some(v) = slot.value.take() {
            return Poll::Ready(v);
        }
        assert!(!slot.finished, "JobHandle polled after completion");
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn is_finished(&self) -> bool {
        self.result.lock().finished
    }
}

/// Resolves to a submitted job's output, or to a [`JobError`] saying why there is none.
///
/// Dropping the handle detaches the job: it still runs (like dropping a tokio
/// `JoinHandle`).
#[must_use = "dropping a JobHandle detaches the job; its result is discarded"]
pub struct JobHandle<T> {
    cell: Arc<dyn Await<T>>,
}

impl<T> JobHandle<T> {
    /// Whether the job has finished (completed, panicked, or been cancelled or dropped).
    pub fn is_finished(&self) -> bool {
        self.cell.is_finished()
    }
}

impl<T> Future for JobHandle<T> {
    type Output = Result<T, JobError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.cell.poll_result(cx)
    }
}

impl<T> fmt::Debug for JobHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
