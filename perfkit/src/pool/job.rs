//! A submitted job: one allocation holding the job's future and the slot its result lands
//! in, shared by the pool (which runs it) and the submitter's [`JobHandle`].

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::loom::{AtomicUsize, Ordering, UnsafeCell};

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
/// `Result<T, E>` counts an `Err` as `err`. The unit type, primitives, strings, and
/// `Option`, `Vec`, `Box`, `Arc` of anything always count as `ok`. For an output type of your
/// own, add `impl perfkit::pool::JobOutput for MyType {}` (the default method counts every
/// value as `ok`); for another crate's type, return it inside `Ok(..)`.
pub trait JobOutput {
    /// Whether this value is a failure.
    fn is_err(&self) -> bool {
        false
    }
}

macro_rules! always_ok {
    ($($t:ty),*) => { $(impl JobOutput for $t {})* };
}

always_ok!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    String,
    &'static str,
    std::time::Duration
);

impl<T> JobOutput for Option<T> {}
impl<T> JobOutput for Vec<T> {}
impl<T: ?Sized> JobOutput for Box<T> {}
impl<T: ?Sized> JobOutput for Arc<T> {}

impl<T, E> JobOutput for Result<T, E> {
    fn is_err(&self) -> bool {
        Result::is_err(self)
    }
}

/// The pool's view of a job. Methods take `&mut self`: the one `JobRef` of a job is the
/// right to run or cancel it, and is never cloned.
pub(super) struct JobRef(Arc<dyn Run>);

impl JobRef {
    /// Polls the job; a panic is caught, the future dropped and the handle told.
    #[inline]
    pub(super) fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        // SAFETY: `&mut self` on the only `JobRef` of this cell (see `new`).
        unsafe { self.0.poll_run(cx) }
    }

    /// Drops the job's future unfinished and completes its handle with `why`.
    pub(super) fn cancel(self, why: JobError) {
        // SAFETY: as above; consuming `self` ends the right to run it.
        unsafe { self.0.cancel(why) }
    }
}

impl fmt::Debug for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobRef")
    }
}

/// Type-erased access to a job's cell.
trait Run: Send + Sync {
    /// # Safety
    /// Only the holder of the job's `JobRef` may call this, and not concurrently.
    unsafe fn poll_run(&self, cx: &mut Context<'_>) -> Poll<Outcome>;

    /// # Safety
    /// As `poll_run`.
    unsafe fn cancel(&self, why: JobError);
}

/// The submitter's view of a job.
trait Await<T>: Send + Sync {
    fn poll_result(&self, cx: &mut Context<'_>) -> Poll<Result<T, JobError>>;
    fn is_finished(&self) -> bool;
}

/// The result is in `stage`; the runner is done with the cell.
const COMPLETE: usize = 0b01;
/// The handle's waker is in `waker`, for the runner to take and wake at completion.
const WAKER_SET: usize = 0b10;

enum Stage<F: Future> {
    Running(F),
    Done(Result<F::Output, JobError>),
    Taken,
}

/// One job: its future, then its result, and the handle's waker, in one allocation.
///
/// A small handshake on `state` (the one tokio's oneshot channel uses) decides who may touch
/// what: until `COMPLETE` is set, `stage` belongs to the `JobRef` holder; after it, to the
/// handle. `waker` is written only by the handle, and only while `WAKER_SET` is clear; the
/// runner reads it (to wake it by reference) only if it sees `WAKER_SET` in the same atomic
/// step that sets `COMPLETE`.
struct Cell<F: Future> {
    state: AtomicUsize,
    stage: UnsafeCell<Stage<F>>,
    waker: UnsafeCell<Option<Waker>>,
}

// SAFETY: the fields are only reached under the ownership rules above, which hand each one
// to a single thread at a time with acquire/release edges on `state`.
unsafe impl<F: Future + Send> Sync for Cell<F> where F::Output: Send {}
// SAFETY: as above; the future and its output move between threads, so both must be Send.
unsafe impl<F: Future + Send> Send for Cell<F> where F::Output: Send {}

/// Allocates a job; returns the pool's and the handle's references to it.
pub(super) fn new<F>(future: F) -> (JobRef, JobHandle<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: JobOutput + Send + 'static,
{
    let cell = Arc::new(Cell {
        state: AtomicUsize::new(0),
        stage: UnsafeCell::new(Stage::Running(future)),
        waker: UnsafeCell::new(None),
    });
    let handle = JobHandle {
        cell: cell.clone() as Arc<dyn Await<F::Output>>,
    };
    (JobRef(cell), handle)
}

impl<F: Future> Cell<F> {
    /// Replaces the running future with `result` and tells the handle.
    ///
    /// # Safety
    /// Caller owns `stage` (holds the `JobRef`, `COMPLETE` not yet set).
    unsafe fn complete(&self, result: Result<F::Output, JobError>) {
        self.stage.with_mut(|p| {
            // Drop the future in place (it is pinned there); a panicking destructor is
            // contained and the slot is still overwritten, never dropped twice.
            // SAFETY: `p` is valid and owned by the caller.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| unsafe {
                std::ptr::drop_in_place(p);
            }));
            // SAFETY: the old value was dropped above.
            unsafe { std::ptr::write(p, Stage::Done(result)) };
        });
        let prev = self.state.fetch_or(COMPLETE, Ordering::AcqRel);
        if prev & WAKER_SET != 0 {
            // SAFETY: the handle set WAKER_SET before our COMPLETE, so the waker is written
            // and the handle will not write it again; it may only read it concurrently.
            self.waker.with(|p| {
                if let Some(w) = unsafe { (*p).as_ref() } {
                    w.wake_by_ref();
                }
            });
        }
    }

    /// Takes the result once `COMPLETE` was seen with acquire ordering.
    fn take_result(&self) -> Result<F::Output, JobError> {
        // SAFETY: after COMPLETE the stage belongs to the handle, which calls this at most
        // once per completion (a second poll finds `Taken` and panics).
        self.stage
            .with_mut(|p| match unsafe { std::ptr::replace(p, Stage::Taken) } {
                Stage::Done(result) => result,
                Stage::Running(_) | Stage::Taken => panic!("JobHandle polled after completion"),
            })
    }
}

impl<F> Run for Cell<F>
where
    F: Future + Send,
    F::Output: JobOutput + Send,
{
    unsafe fn poll_run(&self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let polled = self.stage.with_mut(|p| {
            // SAFETY: the caller owns the stage; the future never moves (it lives in this
            // `Arc` allocation and is only dropped in place), so pinning it is sound.
            match unsafe { &mut *p } {
                Stage::Running(f) => {
                    let f = unsafe { Pin::new_unchecked(f) };
                    Some(std::panic::catch_unwind(AssertUnwindSafe(|| f.poll(cx))))
                }
                Stage::Done(_) | Stage::Taken => None,
            }
        });
        match polled {
            None => Poll::Ready(Outcome::Cancelled),
            Some(Ok(Poll::Pending)) => Poll::Pending,
            Some(Ok(Poll::Ready(value))) => {
                let outcome = if value.is_err() {
                    Outcome::Err
                } else {
                    Outcome::Ok
                };
                // SAFETY: caller owns the stage.
                unsafe { self.complete(Ok(value)) };
                Poll::Ready(outcome)
            }
            Some(Err(payload)) => {
                let msg = panic_message(&*payload);
                // SAFETY: caller owns the stage.
                unsafe { self.complete(Err(JobError::Panicked(msg))) };
                Poll::Ready(Outcome::Panic)
            }
        }
    }

    unsafe fn cancel(&self, why: JobError) {
        if self.state.load(Ordering::Acquire) & COMPLETE == 0 {
            // SAFETY: caller owns the stage and the job has not completed.
            unsafe { self.complete(Err(why)) };
        }
    }
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
        let mut state = self.state.load(Ordering::Acquire);
        if state & COMPLETE != 0 {
            return Poll::Ready(self.take_result());
        }
        if state & WAKER_SET != 0 {
            // SAFETY: reading our own waker; the runner only takes it after COMPLETE,
            // which we have not seen, and it only reads it (never writes) before that.
            let same = self
                .waker
                .with(|p| unsafe { (*p).as_ref().is_some_and(|w| w.will_wake(cx.waker())) });
            if same {
                return Poll::Pending;
            }
            // Take the waker slot back before replacing it.
            state = self.state.fetch_and(!WAKER_SET, Ordering::AcqRel);
            if state & COMPLETE != 0 {
                return Poll::Ready(self.take_result());
            }
        }
        // SAFETY: WAKER_SET is clear, so the slot is ours.
        self.waker
            .with_mut(|p| unsafe { *p = Some(cx.waker().clone()) });
        let prev = self.state.fetch_or(WAKER_SET, Ordering::AcqRel);
        if prev & COMPLETE != 0 {
            return Poll::Ready(self.take_result());
        }
        Poll::Pending
    }

    fn is_finished(&self) -> bool {
        self.state.load(Ordering::Acquire) & COMPLETE != 0
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
