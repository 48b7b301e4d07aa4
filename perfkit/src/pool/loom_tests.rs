//! Model checks of the pool's core and job cells under the interleavings loom explores:
//! `RUSTFLAGS="--cfg loom" cargo test -p perfkit --lib --release --no-default-features loom`.
//! A lost wake-up shows up as a deadlock, which loom reports.

use std::future::{Future, poll_fn};
use std::task::Poll;

use loom::sync::Arc;
use loom::thread;

use super::core::{Core, Local, Refused};
use crate::queue::Policy;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(2);
    model.check(f);
}

/// Runs `job` to completion on a thread of its own (it must not wait on anything).
fn run_on_a_thread(mut job: super::job::JobRef) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(job.poll_run(&mut cx).is_ready());
    })
}

/// Workers take concurrently with a submitter and with each other; busy stays within
/// 0..=workers, every item is taken exactly once, and closing lets both workers exit.
#[test]
fn loom_busy_accounting_under_concurrent_submit_and_complete() {
    model(|| {
        let core = Arc::new(Core::<u32>::new(2, 2, 1, Policy::Block, 8));
        let workers: Vec<_> = (0..2)
            .map(|id| {
                let core = core.clone();
                thread::spawn(move || {
                    let mut me = Local::new(id);
                    let mut got = Vec::new();
                    while let Some((item, _)) =
                        loom::future::block_on(poll_fn(|cx| core.poll_take(&mut me, cx)))
                    {
                        let started = core.begin(id, 1);
                        assert!(core.busy() <= 2);
                        core.end(id, started, 2);
                        got.push(item);
                    }
                    got
                })
            })
            .collect();
        for item in [1, 2] {
            let r = core.reserve(None).expect("room for two");
            assert!(r.depth <= 2);
            core.push(0, item, 0);
            assert!(core.busy() <= 2);
        }
        core.close();
        assert_eq!(core.reserve(None).unwrap_err(), Refused::Closed);
        let mut all: Vec<u32> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, [1, 2]);
        assert_eq!(core.busy(), 0);
        assert_eq!(core.depth(), 0);
    });
}

/// A submitter blocked on a full pool is woken when a worker takes an item.
#[test]
fn loom_blocked_submitter_is_woken_by_a_take() {
    model(|| {
        let core = Arc::new(Core::<u32>::new(1, 1, 1, Policy::Block, 8));
        let _ = core.reserve(None).unwrap();
        core.push(0, 1, 0);
        let submitter = {
            let core = core.clone();
            thread::spawn(move || {
                let mut slot = None;
                let r = loom::future::block_on(poll_fn(|cx| {
                    match core.reserve(Some((&mut slot, cx.waker()))) {
                        Err(Refused::Wait) => Poll::Pending,
                        other => Poll::Ready(other),
                    }
                }));
                core.forget_sender(&mut slot);
                let r = r.expect("room after the take");
                assert_eq!(r.depth, 1);
                core.push(0, 2, 0);
            })
        };
        let mut me = Local::new(0);
        let mut got = Vec::new();
        while got.len() < 2 {
            if let Some((item, _)) =
                loom::future::block_on(poll_fn(|cx| core.poll_take(&mut me, cx)))
            {
                got.push(item);
            }
        }
        submitter.join().unwrap();
        assert_eq!(got, [1, 2]);
    });
}

/// A job completed on one thread while its handle is polled on another: the handle gets
/// the value exactly once and is never left asleep.
#[test]
fn loom_job_handle_gets_the_result() {
    model(|| {
        let (job, handle) = super::job::new(async { 7u32 });
        let runner = run_on_a_thread(job);
        assert_eq!(loom::future::block_on(handle), Ok(7));
        runner.join().unwrap();
    });
}

/// A job cancelled while its handle waits: the handle sees `Cancelled`.
#[test]
fn loom_cancel_reaches_a_waiting_handle() {
    model(|| {
        let (job, handle) = super::job::new(std::future::pending::<()>());
        let canceller = thread::spawn(move || job.cancel(super::JobError::Cancelled));
        assert_eq!(
            loom::future::block_on(handle),
            Err(super::JobError::Cancelled)
        );
        canceller.join().unwrap();
    });
}

/// The handle is dropped while the job completes: whichever goes last frees the cell, and
/// the future and its output are each dropped exactly once (loom reports a leaked `Arc`).
#[test]
fn loom_handle_dropped_while_the_job_completes() {
    model(|| {
        let tracker = Arc::new(());
        let inside = tracker.clone();
        let (job, handle) = super::job::new(async move { Some(inside) });
        let runner = run_on_a_thread(job);
        drop(handle);
        runner.join().unwrap();
        assert_eq!(Arc::strong_count(&tracker), 1);
    });
}

/// The handle registers its waker, then is dropped while the job completes: no wake-up of
/// freed memory, nothing leaked.
#[test]
fn loom_waiting_handle_dropped_while_the_job_completes() {
    model(|| {
        let tracker = Arc::new(());
        let inside = tracker.clone();
        let (job, mut handle) = super::job::new(async move { Some(inside) });
        let runner = run_on_a_thread(job);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let _ = std::pin::Pin::new(&mut handle).poll(&mut cx);
        drop(handle);
        runner.join().unwrap();
        assert_eq!(Arc::strong_count(&tracker), 1);
    });
}

/// The recycler's batch hand-over (`recycle.rs`), which the job models above do not reach
/// (under loom jobs are boxed): one thread frees two batches' worth of blocks, sharing a
/// batch, and exits, handing on the rest; another allocates meanwhile, from its empty list
/// (so from the shared stack, or fresh), and gives its blocks back. Whatever the order of
/// their locks: no block is handed out twice while held, none is lost, and the shared stack
/// ends holding every block not held.
#[test]
fn loom_recycler_batches_change_threads_without_loss_or_duplicates() {
    use super::recycle::{self, Exchange, Local};

    const CLASS: usize = 0;
    let batch = recycle::LOOM_BATCH;
    model(move || {
        let exchange = Arc::new(Exchange::new(loom::sync::Mutex::new(
            [const { Vec::new() }; 4],
        )));
        // Blocks that start out held by the freeing thread.
        let mut seed = Local::new();
        let owned: Vec<usize> = (0..2 * batch)
            .map(|_| recycle::take_from(&exchange, &mut seed, CLASS).as_ptr() as usize)
            .collect();
        let freer = {
            let exchange = exchange.clone();
            let owned = owned.clone();
            thread::spawn(move || {
                let mut local = Local::new();
                for addr in owned {
                    let p = std::ptr::NonNull::new(addr as *mut u8).unwrap();
                    recycle::give_to(&exchange, &mut local, CLASS, p);
                }
                recycle::leave(&exchange, &mut local);
            })
        };
        let mut local = Local::new();
        let taken: Vec<usize> = (0..2)
            .map(|_| recycle::take_from(&exchange, &mut local, CLASS).as_ptr() as usize)
            .collect();
        assert_ne!(taken[0], taken[1], "one block handed out twice");
        freer.join().unwrap();
        for addr in &taken {
            let p = std::ptr::NonNull::new(*addr as *mut u8).unwrap();
            recycle::give_to(&exchange, &mut local, CLASS, p);
        }
        recycle::leave(&exchange, &mut local);
        // Every block is back on the shared stack exactly once: the seed's, and any fresh
        // ones the taker got before a batch was shared.
        let mut back = recycle::drain(&exchange);
        back.sort_unstable();
        let before = back.len();
        back.dedup();
        assert_eq!(back.len(), before, "a block on the stack twice");
        let mut want: Vec<usize> = owned.iter().chain(&taken).copied().collect();
        want.sort_unstable();
        want.dedup();
        assert_eq!(back, want, "blocks lost or invented");
    });
}
