//! Synchronisation shim: the concurrency cores import atomics, `Arc` and `Mutex` from here
//! so the same code can be model-checked by loom (`RUSTFLAGS="--cfg loom"`).

#[cfg(loom)]
pub(crate) use loom::sync::Arc;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};

/// Gives way while another thread finishes a short step (a ring slot being released):
/// a spin hint normally, a yield loom can schedule around under loom.
#[cfg(not(loom))]
#[inline]
pub(crate) fn spin() {
    std::hint::spin_loop();
}

#[cfg(loom)]
pub(crate) fn spin() {
    loom::thread::yield_now();
}

/// `UnsafeCell` with loom's closure-based access API, so loom can check every access.
#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `UnsafeCell` with loom's closure-based access API, so loom can check every access.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::sync::{Mutex as FastMutex, MutexGuard as FastGuard};
/// The lock the queue's hot path uses: parking_lot's (adaptive spinning before parking,
/// which wins in producer/consumer ping-pong across threads), loom's under loom. Both are
/// reached through `lock_fast`, which hides their different `lock` signatures.
#[cfg(not(loom))]
pub(crate) use parking_lot::{Mutex as FastMutex, MutexGuard as FastGuard};

// Critical sections under these locks run no user code (values are dropped and wakers woken
// after release), so parking_lot's lack of poisoning loses nothing.
#[cfg(not(loom))]
#[inline]
pub(crate) fn lock_fast<T>(m: &FastMutex<T>) -> FastGuard<'_, T> {
    m.lock()
}

#[cfg(loom)]
pub(crate) fn lock_fast<T>(m: &FastMutex<T>) -> FastGuard<'_, T> {
    m.lock().unwrap()
}

/// Locks a std mutex, ignoring poisoning: used for registries whose every critical section
/// is a single insert, remove or read, so a panic elsewhere cannot leave them inconsistent.
pub(crate) fn lock_unpoisoned<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a future to completion on the current thread (loom's executor under loom).
#[cfg(loom)]
pub(crate) use loom::future::block_on;

/// Runs a future to completion on the current thread, parking it between polls.
#[cfg(not(loom))]
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::Arc as StdArc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: StdArc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &StdArc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(StdArc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
