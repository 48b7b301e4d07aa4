//! A submitted job: one allocation holding the job's future and the slot its result lands
//! in, shared by the pool (which runs it) and the submitter's [`JobHandle`], with the two
//! references counted in the same atomic word as the completion handshake. A job whose
//! handle was dropped before it finished is freed by its worker without any atomic
//! read-modify-write; one whose handle waits costs two (completion, release).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::recycle;
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

/// State bits: the result is in `stage` and the runner is done with it.
const COMPLETE: usize = 0b01;
/// The handle's waker is in `waker`, for the runner to wake at completion.
const WAKER_SET: usize = 0b10;
/// One reference (the runner's `JobRef` or the `JobHandle`); the rest of the word counts them.
const REF_ONE: usize = 0b100;
const REFS: usize = !(REF_ONE - 1);

/// The type-independent front of a job's allocation.
///
/// `state` holds the two flags above and a count of the references alive (at most two: the
/// pool's [`JobRef`] and the submitter's [`JobHandle`]). A small handshake on it (the one
/// tokio's oneshot channel and task cells use) decides who may touch what: until `COMPLETE`
/// is set, the job's stage belongs to the `JobRef` holder; after it, to the handle. `waker`
/// is written only by the handle, and only while `WAKER_SET` is clear; the runner reads it
/// (to wake it by reference) only if it sees `WAKER_SET` in the same atomic step that sets
/// `COMPLETE`. The last reference to go frees the allocation.
struct Header {
    state: AtomicUsize,
    vtable: &'static Vtable,
    waker: UnsafeCell<Option<Waker>>,
}

/// The operations that depend on the future's type.
struct Vtable {
    /// Polls the future. Caller: the `JobRef` holder, before completion.
    poll: unsafe fn(NonNull<Header>, &mut Context<'_>) -> Poll<Outcome>,
    /// Ends the job unrun with an error. Caller: the `JobRef` holder, before completion.
    abort: unsafe fn(NonNull<Header>, JobError),
    /// Moves the result into `*out`, a `Poll<Result<Output, JobError>>`. Caller: the handle,
    /// after seeing `COMPLETE` with acquire ordering.
    read: unsafe fn(NonNull<Header>, *mut ()),
    /// Drops whatever the cell holds and frees it. Caller: the last reference.
    dealloc: unsafe fn(NonNull<Header>),
}

enum Stage<F: Future> {
    Running(F),
    Done(Result<F::Output, JobError>),
    Taken,
}

/// One job: its future, then its result, and the handle's waker, in one allocation.
#[repr(C)]
struct Cell<F: Future> {
    /// First, so a pointer to the cell is a pointer to its header.
    header: Header,
    stage: UnsafeCell<Stage<F>>,
}

/// Allocates a job; returns the pool's and the handle's references to it.
pub(super) fn new<F>(future: F) -> (JobRef, JobHandle<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: JobOutput + Send + 'static,
{
    let cell = Cell {
        header: Header {
            state: AtomicUsize::new(2 * REF_ONE),
            vtable: vtable::<F>(),
            waker: UnsafeCell::new(None),
        },
        stage: UnsafeCell::new(Stage::Running(future)),
    };
    let ptr = match class::<F>() {
        Some(class) => {
            let block = recycle::alloc(class).cast::<Cell<F>>();
            // SAFETY: the block is fresh, and its class fits `Cell<F>`'s layout.
            unsafe { block.as_ptr().write(cell) };
            block.cast::<Header>()
        }
        None => NonNull::from(Box::leak(Box::new(cell))).cast::<Header>(),
    };
    (
        JobRef(Some(ptr)),
        JobHandle {
            ptr,
            _output: PhantomData,
        },
    )
}

fn vtable<F>() -> &'static Vtable
where
    F: Future + Send + 'static,
    F::Output: JobOutput + Send + 'static,
{
    &Vtable {
        poll: poll::<F>,
        abort: abort::<F>,
        read: read::<F>,
        dealloc: dealloc::<F>,
    }
}

/// The cell behind a header.
///
/// # Safety
/// `ptr` came from [`new`] with this `F` and the cell is still allocated.
unsafe fn cell<'a, F: Future>(ptr: NonNull<Header>) -> &'a Cell<F> {
    // SAFETY: `Cell` is `repr(C)` with the header first; the caller vouches for the type and
    // the allocation.
    unsafe { ptr.cast::<Cell<F>>().as_ref() }
}

unsafe fn poll<F>(ptr: NonNull<Header>, cx: &mut Context<'_>) -> Poll<Outcome>
where
    F: Future,
    F::Output: JobOutput,
{
    // SAFETY: the caller holds the `JobRef`, so the cell is alive and the stage is ours.
    let cell = unsafe { cell::<F>(ptr) };
    let polled = cell.stage.with_mut(|p| {
        // SAFETY: the stage is ours (above): no other reference to it exists now.
        match unsafe { &mut *p } {
            Stage::Running(f) => {
                // SAFETY: the future never moves (it lives in this boxed cell and is only
                // dropped in place), so pinning it is sound.
                let f = unsafe { Pin::new_unchecked(f) };
                std::panic::catch_unwind(AssertUnwindSafe(|| f.poll(cx)))
            }
            Stage::Done(_) | Stage::Taken => unreachable!("a completed job's JobRef is spent"),
        }
    });
    match polled {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(value)) => {
            let outcome = if value.is_err() {
                Outcome::Err
            } else {
                Outcome::Ok
            };
            // SAFETY: as above; this spends the caller's reference.
            unsafe { complete::<F>(ptr, Ok(value)) };
            Poll::Ready(outcome)
        }
        Err(payload) => {
            let msg = panic_message(&*payload);
            // SAFETY: as above.
            unsafe { complete::<F>(ptr, Err(JobError::Panicked(msg))) };
            Poll::Ready(Outcome::Panic)
        }
    }
}

unsafe fn abort<F: Future>(ptr: NonNull<Header>, why: JobError) {
    // SAFETY: forwarded from the caller, who holds the `JobRef` of an uncompleted job.
    unsafe { complete::<F>(ptr, Err(why)) }
}

/// Drops the future, hands `result` to the handle (or drops it if the handle is gone), and
/// gives up the runner's reference.
///
/// # Safety
/// The caller holds the `JobRef` of a job that has not completed, and spends it.
unsafe fn complete<F: Future>(ptr: NonNull<Header>, result: Result<F::Output, JobError>) {
    // SAFETY: the runner's reference keeps the cell alive until `release` below.
    let cell = unsafe { cell::<F>(ptr) };
    cell.stage.with_mut(|p| {
        // Drop the future in place (it is pinned there); a panicking destructor is
        // contained and the slot is still overwritten, never dropped twice.
        // SAFETY: `p` is valid and the stage is ours (COMPLETE is not set yet).
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| unsafe {
            std::ptr::drop_in_place(p);
        }));
        // SAFETY: the old value was dropped above.
        unsafe { std::ptr::write(p, Stage::Done(result)) };
    });
    let header = &cell.header;
    let mut state = header.state.load(Ordering::Acquire);
    loop {
        if state & REFS == REF_ONE {
            // The handle is gone (its release synchronised with the load) and nothing can
            // make a new one: nobody will read the result. A panicking drop of the unread
            // output is contained: this is the worker's thread.
            // SAFETY: the last reference.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| unsafe { dealloc::<F>(ptr) }));
            return;
        }
        if state & WAKER_SET != 0 {
            break;
        }
        // Nobody to wake: publish the result and give up our reference in one step.
        match header.state.compare_exchange_weak(
            state,
            (state | COMPLETE) - REF_ONE,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return,
            Err(now) => state = now,
        }
    }
    let prev = header.state.fetch_or(COMPLETE, Ordering::AcqRel);
    if prev & WAKER_SET != 0 {
        // SAFETY: the handle set WAKER_SET before our COMPLETE, so the waker is written and
        // the handle will not write it again; our reference keeps the cell alive.
        header.waker.with(|p| {
            // SAFETY: as above: the waker is written and nobody writes it now.
            if let Some(w) = unsafe { (*p).as_ref() } {
                w.wake_by_ref();
            }
        });
    }
    // A panicking drop of an unread output is contained: it is the worker's thread.
    // SAFETY: the runner's reference, given up exactly once.
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| unsafe { release(ptr) }));
}

unsafe fn read<F: Future>(ptr: NonNull<Header>, out: *mut ()) {
    // SAFETY: the caller holds the handle (the cell is alive) and saw COMPLETE, so the stage
    // is the handle's; `out` points at a `Poll<Result<F::Output, JobError>>` (the handle's
    // type parameter is `F::Output` by construction).
    let cell = unsafe { cell::<F>(ptr) };
    let result = cell
        .stage
        // SAFETY: the stage is the handle's (above): no other reference to it exists now.
        .with_mut(|p| match unsafe { std::ptr::replace(p, Stage::Taken) } {
            Stage::Done(result) => result,
            Stage::Running(_) | Stage::Taken => panic!("JobHandle polled after completion"),
        });
    // SAFETY: see above.
    unsafe { *out.cast::<Poll<Result<F::Output, JobError>>>() = Poll::Ready(result) };
}

unsafe fn dealloc<F: Future>(ptr: NonNull<Header>) {
    let cell = ptr.cast::<Cell<F>>();
    match class::<F>() {
        Some(class) => {
            /// Gives the block back even if dropping the cell's contents panics.
            struct Free(usize, NonNull<u8>);
            impl Drop for Free {
                fn drop(&mut self) {
                    // SAFETY: the block came from `recycle::alloc(self.0)` in `new`, and its
                    // contents have been dropped (or are being unwound out of) by now.
                    unsafe { recycle::free(self.0, self.1) };
                }
            }
            let _free = Free(class, cell.cast());
            // SAFETY: the last reference: nobody else can reach the cell, which `new` wrote
            // into a block of this class.
            unsafe { cell.as_ptr().drop_in_place() };
        }
        // SAFETY: as above; `new` boxed this one.
        None => drop(unsafe { Box::from_raw(cell.as_ptr()) }),
    }
}

/// The recycled size class a `Cell<F>` is allocated from, if any. Never under loom: the
/// recycler's thread-locals and std mutex are outside loom's model.
#[inline]
fn class<F: Future>() -> Option<usize> {
    if cfg!(loom) {
        None
    } else {
        recycle::class_of(std::alloc::Layout::new::<Cell<F>>())
    }
}

/// Gives up one reference; the last one frees the cell.
///
/// # Safety
/// The caller owns one of the cell's references and does not use it again.
unsafe fn release(ptr: NonNull<Header>) {
    // SAFETY: the caller's reference keeps the cell alive until the decrement.
    let header = unsafe { ptr.as_ref() };
    let vtable = header.vtable;
    if header.state.fetch_sub(REF_ONE, Ordering::AcqRel) & REFS == REF_ONE {
        // SAFETY: that was the last reference.
        unsafe { (vtable.dealloc)(ptr) };
    }
}

/// The pool's reference to a job: the right to run or cancel it, never cloned. `None` once
/// spent (the job completed through it).
pub(super) struct JobRef(Option<NonNull<Header>>);

// SAFETY: `new` only builds a `JobRef` for a `Send` future with a `Send` output, and the
// reference is unique.
unsafe impl Send for JobRef {}

impl JobRef {
    /// Polls the job; a panic is caught, the future dropped and the handle told. Once this
    /// returns `Ready`, the reference is spent and dropping it does nothing.
    #[inline]
    pub(super) fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Outcome> {
        let Some(ptr) = self.0 else {
            return Poll::Ready(Outcome::Cancelled);
        };
        // SAFETY: we hold the live runner's reference, so the header is alive.
        let vtable = unsafe { ptr.as_ref() }.vtable;
        // SAFETY: the vtable is the job's own; the reference is the runner's.
        let poll = unsafe { (vtable.poll)(ptr, cx) };
        if poll.is_ready() {
            // `poll` spent the reference on completion.
            self.0 = None;
        }
        poll
    }

    /// Drops the job's future unfinished and completes its handle with `why`.
    pub(super) fn cancel(mut self, why: JobError) {
        if let Some(ptr) = self.0.take() {
            // SAFETY: we hold the runner's reference, so the header is alive.
            let vtable = unsafe { ptr.as_ref() }.vtable;
            // SAFETY: the runner's reference of an uncompleted job, spent here.
            unsafe { (vtable.abort)(ptr, why) };
        }
    }
}

impl Drop for JobRef {
    /// A job dropped without running (its queue went away) tells its handle it was
    /// cancelled.
    fn drop(&mut self) {
        if let Some(ptr) = self.0.take() {
            // SAFETY: as in `cancel`.
            let vtable = unsafe { ptr.as_ref() }.vtable;
            // SAFETY: as in `cancel`.
            unsafe { (vtable.abort)(ptr, JobError::Cancelled) };
        }
    }
}

impl fmt::Debug for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JobRef")
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

/// Resolves to a submitted job's output, or to a [`JobError`] saying why there is none.
///
/// Dropping the handle detaches the job: it still runs (like dropping a tokio
/// `JoinHandle`).
#[must_use = "dropping a JobHandle detaches the job; its result is discarded"]
pub struct JobHandle<T> {
    ptr: NonNull<Header>,
    _output: PhantomData<T>,
}

// SAFETY: the handle's side of the cell is reached through `&mut self` (`poll`) or the atomic
// state (`is_finished`); the output moves to the handle's thread, so `T: Send` suffices.
unsafe impl<T: Send> Send for JobHandle<T> {}
// SAFETY: `&JobHandle` only reads the atomic state.
unsafe impl<T: Send> Sync for JobHandle<T> {}

impl<T> JobHandle<T> {
    /// Whether the job has finished (completed, panicked, or been cancelled or dropped).
    pub fn is_finished(&self) -> bool {
        self.header().state.load(Ordering::Acquire) & COMPLETE != 0
    }

    fn header(&self) -> &Header {
        // SAFETY: the handle's reference keeps the cell alive.
        unsafe { self.ptr.as_ref() }
    }

    fn take_result(&self) -> Poll<Result<T, JobError>> {
        let mut out: Poll<Result<T, JobError>> = Poll::Pending;
        // SAFETY: COMPLETE was seen with acquire ordering; `T` is the job's output type.
        unsafe { (self.header().vtable.read)(self.ptr, (&raw mut out).cast()) };
        out
    }
}

impl<T> Future for JobHandle<T> {
    type Output = Result<T, JobError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let header = self.header();
        let mut state = header.state.load(Ordering::Acquire);
        if state & COMPLETE != 0 {
            return self.take_result();
        }
        if state & WAKER_SET != 0 {
            // SAFETY: reading our own waker; the runner only reads it (never writes), and
            // only after COMPLETE, which we have not seen.
            let same = header
                .waker
                .with(|p| unsafe { (*p).as_ref().is_some_and(|w| w.will_wake(cx.waker())) });
            if same {
                return Poll::Pending;
            }
            // Take the waker slot back before replacing it.
            state = header.state.fetch_and(!WAKER_SET, Ordering::AcqRel);
            if state & COMPLETE != 0 {
                return self.take_result();
            }
        }
        // SAFETY: WAKER_SET is clear, so the slot is ours.
        header
            .waker
            .with_mut(|p| unsafe { *p = Some(cx.waker().clone()) });
        let prev = header.state.fetch_or(WAKER_SET, Ordering::AcqRel);
        if prev & COMPLETE != 0 {
            return self.take_result();
        }
        Poll::Pending
    }
}

impl<T> Drop for JobHandle<T> {
    fn drop(&mut self) {
        let header = self.header();
        let mut state = header.state.load(Ordering::Relaxed);
        loop {
            // Before completion, take the waker back so the runner does not wake a task that
            // no longer waits (the waker itself is dropped with the cell).
            let next = if state & COMPLETE == 0 {
                state & !WAKER_SET
            } else {
                state
            } - REF_ONE;
            match header.state.compare_exchange_weak(
                state,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        if state & REFS == REF_ONE {
            // SAFETY: that was the last reference.
            unsafe { (header.vtable.dealloc)(self.ptr) };
        }
    }
}

impl<T> fmt::Debug for JobHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::task::Waker;

    /// Counts its drops in a shared cell.
    struct Tracked(Arc<std::sync::atomic::AtomicUsize>);

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl JobOutput for Tracked {}

    fn counter() -> Arc<std::sync::atomic::AtomicUsize> {
        Arc::new(std::sync::atomic::AtomicUsize::new(0))
    }

    fn drops(c: &Arc<std::sync::atomic::AtomicUsize>) -> usize {
        c.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A waker that counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn run(job: &mut JobRef) -> Poll<Outcome> {
        job.poll_run(&mut Context::from_waker(Waker::noop()))
    }

    /// A job whose future holds one `Tracked` and returns another.
    fn tracked_job(
        future_drops: &Arc<std::sync::atomic::AtomicUsize>,
        output_drops: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> (JobRef, JobHandle<Tracked>) {
        let held = Tracked(future_drops.clone());
        let out = output_drops.clone();
        new(async move {
            let _held = held;
            Tracked(out)
        })
    }

    #[test]
    fn every_path_drops_the_future_and_the_output_once() {
        // Handle dropped before the job runs: the worker frees the cell.
        let (f, o) = (counter(), counter());
        let (mut job, handle) = tracked_job(&f, &o);
        drop(handle);
        assert_eq!(run(&mut job), Poll::Ready(Outcome::Ok));
        drop(job);
        assert_eq!((drops(&f), drops(&o)), (1, 1));

        // Job done first, handle reads the output.
        let (f, o) = (counter(), counter());
        let (mut job, mut handle) = tracked_job(&f, &o);
        assert!(run(&mut job).is_ready());
        assert_eq!(drops(&f), 1);
        let got = Pin::new(&mut handle).poll(&mut Context::from_waker(Waker::noop()));
        assert!(matches!(got, Poll::Ready(Ok(_))));
        assert_eq!(drops(&o), 0);
        drop(got);
        drop(handle);
        assert_eq!((drops(&f), drops(&o)), (1, 1));

        // Job done first, handle dropped unread: the handle frees the output.
        let (f, o) = (counter(), counter());
        let (mut job, handle) = tracked_job(&f, &o);
        assert!(run(&mut job).is_ready());
        drop(job);
        assert_eq!(drops(&o), 0);
        drop(handle);
        assert_eq!((drops(&f), drops(&o)), (1, 1));

        // Cancelled unrun: the future goes, there is no output, the handle hears why.
        let (f, o) = (counter(), counter());
        let (job, mut handle) = tracked_job(&f, &o);
        job.cancel(JobError::Dropped);
        assert_eq!(drops(&f), 1);
        let got = Pin::new(&mut handle).poll(&mut Context::from_waker(Waker::noop()));
        assert!(matches!(got, Poll::Ready(Err(JobError::Dropped))));
        drop(handle);
        assert_eq!((drops(&f), drops(&o)), (1, 0));

        // A JobRef dropped without running (its queue went away) cancels the job.
        let (f, o) = (counter(), counter());
        let (job, mut handle) = tracked_job(&f, &o);
        drop(job);
        let got = Pin::new(&mut handle).poll(&mut Context::from_waker(Waker::noop()));
        assert!(matches!(got, Poll::Ready(Err(JobError::Cancelled))));
        assert_eq!((drops(&f), drops(&o)), (1, 0));
    }

    /// Cells of every recycled size class and larger (boxed) ones hold their future and
    /// result intact and free them once.
    #[test]
    fn cells_of_every_size_carry_their_future_and_result() {
        fn sized<const N: usize>() {
            let f = counter();
            let held = Tracked(f.clone());
            let data = [N as u8; N];
            let (mut job, mut handle) = new(async move {
                let _held = held;
                data.iter().map(|&b| usize::from(b)).sum::<usize>()
            });
            assert!(run(&mut job).is_ready());
            drop(job);
            let got = Pin::new(&mut handle).poll(&mut Context::from_waker(Waker::noop()));
            assert!(
                matches!(got, Poll::Ready(Ok(sum)) if sum == N * (N % 256)),
                "{N}"
            );
            drop(handle);
            assert_eq!(drops(&f), 1, "{N}");
        }
        sized::<1>();
        sized::<100>();
        sized::<200>();
        sized::<400>();
        sized::<2000>();
        assert!(
            class::<std::future::Ready<()>>().is_some(),
            "small cells are recycled"
        );
        assert!(
            class::<std::future::Ready<[u8; 2000]>>().is_none(),
            "large ones boxed"
        );
    }

    /// An unread output whose destructor panics on the worker: the panic is contained and
    /// the cell's block still goes back to the recycler.
    #[test]
    fn a_panicking_output_drop_still_frees_the_cell() {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("output destructor");
            }
        }
        impl JobOutput for Bomb {}
        fn class_of<F: Future>(_: &F) -> Option<usize> {
            class::<F>()
        }
        let future = async { Bomb };
        let class = class_of(&future).unwrap();
        let (mut job, handle) = new(future);
        drop(handle);
        let before = recycle::held_here(class);
        assert!(run(&mut job).is_ready());
        drop(job);
        assert_eq!(recycle::held_here(class), before + 1, "the block came back");
    }

    #[test]
    fn a_waiting_handle_is_woken_once_with_the_result() {
        let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let (mut job, mut handle) = new(async { 5u8 });
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut handle).poll(&mut cx).is_pending());
        assert!(!handle.is_finished());
        assert!(run(&mut job).is_ready());
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(handle.is_finished());
        assert_eq!(Pin::new(&mut handle).poll(&mut cx), Poll::Ready(Ok(5)));
    }

    #[test]
    fn a_dropped_handle_is_not_woken() {
        let count = Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let (mut job, mut handle) = new(async { 5u8 });
        assert!(
            Pin::new(&mut handle)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        drop(handle);
        assert!(run(&mut job).is_ready());
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        // The cell's clone of the waker went with the cell.
        drop(waker);
        assert_eq!(Arc::strong_count(&count), 1);
    }

    #[test]
    fn a_panicking_job_reports_its_message_and_frees_its_cell() {
        let f = counter();
        let held = Tracked(f.clone());
        let (mut job, mut handle) = new(async move {
            let _held = held;
            if std::hint::black_box(true) {
                panic!("boom");
            }
            0u8
        });
        assert_eq!(run(&mut job), Poll::Ready(Outcome::Panic));
        assert_eq!(drops(&f), 1);
        let got = Pin::new(&mut handle).poll(&mut Context::from_waker(Waker::noop()));
        assert_eq!(got, Poll::Ready(Err(JobError::Panicked("boom".into()))));
    }

    #[test]
    fn completion_racing_handle_drop_on_threads_frees_everything_once() {
        let (f, o) = (counter(), counter());
        let n = 20_000;
        for _ in 0..n {
            let (mut job, handle) = tracked_job(&f, &o);
            let runner = std::thread::spawn(move || {
                assert!(run(&mut job).is_ready());
            });
            drop(handle);
            runner.join().unwrap();
        }
        assert_eq!((drops(&f), drops(&o)), (n, n));
    }
}
