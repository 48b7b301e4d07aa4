//! Bounded multi-producer, single-consumer queues with an overflow policy, where every item
//! is delivered, handed back, or counted as dropped with a reason.
//!
//! [`bounded`] (or [`Builder`]) returns a `(Sender, Receiver)` pair like `tokio::sync::mpsc`:
//! `Sender` is cheap to clone, sends are async ([`Sender::send`]), non-blocking
//! ([`Sender::try_send`]) or blocking ([`Sender::send_blocking`], for sync code). When every
//! sender is gone, the receiver drains what is left and then gets `None`.
//!
//! # What happens when the queue is full
//! | [`Policy`] | `send().await` | `try_send` | counted in |
//! |---|---|---|---|
//! | `Block` (default) | waits for room (backpressure) | `Err(Full(item))` | `perfkit_queue_rejected_total` (try_send only) |
//! | `Reject` | `Err(Full(item))` | `Err(Full(item))` | `perfkit_queue_rejected_total` |
//! | `DropOldest` | evicts the oldest item, enqueues, `Ok(EvictedOldest)` | same | `perfkit_queue_dropped_total{reason="oldest"}` |
//! | `DropNewest` | drops the new item, `Ok(DroppedNewest)` | same | `perfkit_queue_dropped_total{reason="full"}` |
//!
//! Items still queued when the receiver is dropped are counted as
//! `perfkit_queue_dropped_total{reason="closed"}`. So at any time
//! `enqueued = dequeued + dropped{oldest} + dropped{closed} + depth`, exactly.
//!
//! # Signals
//! `perfkit_queue_depth`, `perfkit_queue_capacity` and `perfkit_queue_oldest_age_seconds`
//! are read from the queue when scraped. `perfkit_queue_enqueued_total`,
//! `perfkit_queue_dequeued_total`, the drop and reject counters and the
//! `perfkit_queue_wait_seconds` histogram (enqueue to dequeue) are recorded as items move,
//! on per-thread cells. A `tracing` warning is logged when the depth rises through 50% and
//! 80% of capacity ([`Builder::warn_at`]), at most once per threshold per 10 s. The snapshot
//! entry adds saturation and the high-water mark since the previous snapshot.
//!
//! # Examples
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let (tx, mut rx) = perfkit::queue::bounded::<u64>("doc-events", 2);
//! tx.send(1).await.unwrap();
//! tx.try_send(2).unwrap();
//! assert!(tx.try_send(3).unwrap_err().is_full()); // Block policy: try_send hands it back
//! drop(tx);
//! assert_eq!(rx.recv().await, Some(1));
//! assert_eq!(rx.recv().await, Some(2));
//! assert_eq!(rx.recv().await, None); // every sender gone, queue drained
//! # });
//! ```

mod error;
pub(crate) mod signals;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

pub use error::{BuildError, ParsePolicyError, SendError, TryRecvError};

use crate::clock;
use crate::loom::{Arc, AtomicU64, FastGuard, FastMutex, Ordering, lock_fast as lock};
use crate::metrics::Registry;
use crate::wait_list::WaitList;
use signals::Signals;

/// What a full queue does with a new item. See the [module docs](self) for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Senders wait for room: backpressure. `try_send` hands the item back.
    #[default]
    Block,
    /// The item is handed back as `Err(Full(item))`.
    Reject,
    /// The oldest queued item is evicted (and counted) to make room.
    DropOldest,
    /// The new item is dropped (and counted); the sender is told so.
    DropNewest,
}

impl Policy {
    /// The policy's name as used in configuration and JSON: `block`, `reject`,
    /// `drop_oldest`, `drop_newest`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Policy::Block => "block",
            Policy::Reject => "reject",
            Policy::DropOldest => "drop_oldest",
            Policy::DropNewest => "drop_newest",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Policy {
    type Err = ParsePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "block" => Ok(Policy::Block),
            "reject" => Ok(Policy::Reject),
            "drop_oldest" => Ok(Policy::DropOldest),
            "drop_newest" => Ok(Policy::DropNewest),
            _ => Err(ParsePolicyError {
                value: s.to_owned(),
            }),
        }
    }
}

/// What became of an item a send accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SendOutcome {
    /// The item is queued.
    Enqueued,
    /// The item is queued; the oldest item was evicted to make room ([`Policy::DropOldest`]).
    EvictedOldest,
    /// The queue was full and the item was dropped ([`Policy::DropNewest`]).
    DroppedNewest,
}

/// Default warning thresholds, as fractions of capacity.
pub const DEFAULT_WARN_AT: &[f64] = &[0.5, 0.8];

/// Configures a queue.
///
/// # Examples
/// ```
/// use perfkit::queue::{Builder, Policy, SendOutcome};
///
/// let (tx, mut rx) = Builder::new("doc-latest", 1)
///     .policy(Policy::DropOldest)
///     .build::<&str>()
///     .unwrap();
/// tx.try_send("old").unwrap();
/// assert_eq!(tx.try_send("new").unwrap(), SendOutcome::EvictedOldest);
/// assert_eq!(rx.try_recv().unwrap(), "new");
/// ```
#[derive(Debug)]
#[must_use = "a Builder does nothing until .build() is called"]
pub struct Builder<'r> {
    name: String,
    capacity: usize,
    policy: Policy,
    warn_at: Vec<f64>,
    registry: Option<&'r Registry>,
    owner: signals::Owner,
}

impl<'r> Builder<'r> {
    /// A queue called `name` (its `queue` label) holding at most `capacity` items, with the
    /// [`Policy::Block`] policy and warnings at 50% and 80%.
    pub fn new(name: impl Into<String>, capacity: usize) -> Self {
        Builder {
            name: name.into(),
            capacity,
            policy: Policy::Block,
            warn_at: DEFAULT_WARN_AT.to_vec(),
            registry: None,
            owner: signals::Owner::None,
        }
    }

    /// Marks the queue as a batcher's intake: its series carry `batcher="<name>"`.
    pub(crate) fn intake_of_batcher(mut self) -> Self {
        self.owner = signals::Owner::Batcher;
        self
    }

    /// What a full queue does with a new item.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Depth thresholds, as fractions of capacity in (0, 1], at which a `tracing` warning is
    /// logged when the depth rises through them (at most once per threshold per 10 s). An
    /// empty slice turns the warnings off.
    pub fn warn_at(mut self, fractions: &[f64]) -> Self {
        self.warn_at = fractions.to_vec();
        self
    }

    /// Records into `registry` instead of the global one (tests, embedding).
    pub fn registry(mut self, registry: &'r Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Builds the queue. The source location of this call is kept for the inventory.
    ///
    /// # Errors
    /// [`BuildError::ZeroCapacity`], [`BuildError::EmptyName`] or
    /// [`BuildError::InvalidThreshold`].
    #[track_caller]
    pub fn build<T: Send + 'static>(self) -> Result<(Sender<T>, Receiver<T>), BuildError> {
        self.build_at(Location::caller())
    }

    /// [`Builder::build`] with the source location given explicitly (for primitives that
    /// build a queue on their caller's behalf).
    pub(crate) fn build_at<T: Send + 'static>(
        self,
        site: &'static Location<'static>,
    ) -> Result<(Sender<T>, Receiver<T>), BuildError> {
        if self.name.is_empty() {
            return Err(BuildError::EmptyName);
        }
        if self.capacity == 0 {
            return Err(BuildError::ZeroCapacity { name: self.name });
        }
        if let Some(bad) = signals::bad_threshold(&self.warn_at) {
            return Err(BuildError::InvalidThreshold {
                name: self.name,
                threshold: bad,
            });
        }
        let registry = self.registry.unwrap_or_else(|| crate::metrics::registry());
        let shared = Arc::new(Shared::new(self, site, registry));
        #[cfg(not(loom))]
        registry.register_collector(
            Arc::downgrade(&shared) as std::sync::Weak<dyn crate::metrics::Collector>
        );
        let (dequeued, wait) = (
            shared.sig.m.dequeued.local_arc(),
            shared.sig.m.wait.local_arc(),
        );
        Ok((
            Sender {
                shared: Arc::clone(&shared),
            },
            Receiver {
                shared,
                first_taken_at: None,
                taken_at: Vec::new(),
                wake: Vec::new(),
                held: VecDeque::new(),
                dequeued,
                wait,
            },
        ))
    }
}

/// A bounded queue called `name` with room for `capacity` items and the [`Policy::Block`]
/// policy. See [`Builder`] for the other settings.
///
/// # Panics
/// If `capacity` is 0 or `name` is empty (use [`Builder::build`] to get an error instead).
#[track_caller]
pub fn bounded<T: Send + 'static>(name: &str, capacity: usize) -> (Sender<T>, Receiver<T>) {
    match Builder::new(name, capacity).build() {
        Ok(pair) => pair,
        Err(e) => panic!("perfkit::queue::bounded: {e}"),
    }
}

struct Entry<T> {
    value: T,
    at: u64,
}

/// The bit of [`Shared::occupancy`] that says senders are waiting for room.
const WAITING: u64 = 1 << 63;

/// The item count in an occupancy word.
fn count(occupancy: u64) -> usize {
    (occupancy & !WAITING) as usize
}

struct State<T> {
    buf: VecDeque<Entry<T>>,
    senders: usize,
    /// No more sends: the receiver closed the queue or was dropped.
    closed: bool,
    rx_waker: Option<Waker>,
    /// Senders waiting for room (Block policy), oldest first.
    send_waiters: WaitList,
}

pub(crate) struct Shared<T> {
    state: FastMutex<State<T>>,
    sig: Signals,
    /// Items accepted and not yet handed out (those in `state.buf` and those the receiver
    /// holds in its own buffer: the queue's depth, which the bound applies to), plus the
    /// [`WAITING`] bit while senders wait for room. Raised by senders under the lock;
    /// lowered by the receiver, without the lock for the items it holds. One word for both,
    /// so a sender that starts waiting and a receiver that frees room never miss each other:
    /// whichever read-modify-write comes second sees the first.
    occupancy: AtomicU64,
    /// Enqueue time of the first item the receiver holds (0: none), for the oldest-age
    /// gauge.
    held_front_at: AtomicU64,
    /// `perfkit_queue_enqueued_total`'s cell for this queue. Sends do not count: every item
    /// a send accepted is now queued or held, handed out, evicted or dropped at close, so
    /// the total is the sum of those, brought up to date before anyone reads it ([`Shared::sync`]).
    enqueued: crate::metrics::SyncedCell,
}

enum Offer<T> {
    Done(SendOutcome),
    Full(T),
    Closed(T),
    Wait(T),
}

impl<T> Shared<T> {
    fn new(b: Builder<'_>, site: &'static Location<'static>, registry: &Registry) -> Self {
        let sig = Signals::new(
            b.name, b.capacity, b.policy, &b.warn_at, site, registry, b.owner,
        );
        Shared {
            enqueued: sig.m.enqueued.synced(),
            state: FastMutex::new(State {
                buf: VecDeque::with_capacity(b.capacity.min(1024)),
                senders: 1,
                closed: false,
                rx_waker: None,
                send_waiters: WaitList::default(),
            }),
            sig,
            occupancy: AtomicU64::new(0),
            held_front_at: AtomicU64::new(0),
        }
    }

    /// Tries to enqueue. With `waiter` (a Block-policy `send`), a full queue registers the
    /// caller's waker and returns `Wait` instead of refusing.
    fn offer(&self, value: T, mut waiter: Option<(&mut Option<u64>, &Waker)>) -> Offer<T> {
        let now = clock::raw();
        let mut st = lock(&self.state);
        if st.closed {
            return Offer::Closed(value);
        }
        let mut evicted = None;
        let cap = self.sig.capacity;
        if self.occupied() >= cap {
            match self.sig.policy {
                Policy::Block => {
                    let Some((slot, waker)) = waiter.as_mut() else {
                        drop(st);
                        self.sig.m.rejected.inc();
                        return Offer::Full(value);
                    };
                    st.send_waiters.register(slot, waker);
                    // Raise the bit and look at the count in one step: either a receiver
                    // freed room before (this sees it and goes on), or it frees room after
                    // (its own step sees the bit, and it wakes the first in line).
                    let seen = self.occupancy.fetch_or(WAITING, Ordering::AcqRel);
                    if count(seen) >= cap {
                        return Offer::Wait(value);
                    }
                }
                Policy::Reject => {
                    drop(st);
                    self.sig.m.rejected.inc();
                    return Offer::Full(value);
                }
                Policy::DropNewest => {
                    drop(st);
                    self.sig.m.dropped_full.inc();
                    drop(value);
                    return Offer::Done(SendOutcome::DroppedNewest);
                }
                // The receiver holds no items under this policy (see `Receiver::held`), so
                // the oldest accepted item is the front of `buf`.
                Policy::DropOldest => evicted = st.buf.pop_front(),
            }
        }
        st.buf.push_back(Entry { value, at: now });
        let len = if evicted.is_some() {
            cap
        } else {
            count(self.occupancy.fetch_add(1, Ordering::AcqRel)) + 1
        };
        if let Some((slot, _)) = waiter.as_mut() {
            // A waiting sender that got in: make sure it is off the waiter list.
            if let Some(id) = slot.take() {
                st.send_waiters.remove(id);
                self.nobody_waits_if_empty(&st);
            }
        }
        let rx = st.rx_waker.take();
        drop(st);
        if let Some(w) = rx {
            w.wake();
        }
        self.sig.reached(len);
        let outcome = match evicted {
            Some(e) => {
                self.sig.m.dropped_oldest.inc();
                drop(e);
                SendOutcome::EvictedOldest
            }
            None => SendOutcome::Enqueued,
        };
        Offer::Done(outcome)
    }

    /// Brings `perfkit_queue_enqueued_total` up to date: accepted = handed out + evicted +
    /// dropped at close + still here. A read racing a receive or an eviction may lag by the
    /// items in flight (never run ahead, and the counter never goes back).
    fn sync(&self) {
        let m = &self.sig.m;
        let total = m.dequeued.get()
            + m.dropped_oldest.get()
            + m.dropped_closed.get()
            + self.occupied() as u64;
        self.enqueued.raise_to(total);
    }

    /// Items accepted and not yet handed out.
    fn occupied(&self) -> usize {
        count(self.occupancy.load(Ordering::Acquire))
    }

    /// The first waiting sender's waker, taking it out of line. Under the lock.
    fn next_waiter(&self, st: &mut State<T>) -> Option<Waker> {
        let w = st.send_waiters.pop();
        self.nobody_waits_if_empty(st);
        w
    }

    /// Takes up to `n` waiting senders out of line under `st` (collecting their wakers in
    /// `wake`, a buffer the caller reuses), releases it and wakes them.
    fn wake_waiters(&self, mut st: FastGuard<'_, State<T>>, wake: &mut Vec<Waker>, n: usize) {
        wake.clear();
        while wake.len() < n {
            match self.next_waiter(&mut st) {
                Some(w) => wake.push(w),
                None => break,
            }
        }
        drop(st);
        for w in wake.drain(..) {
            w.wake();
        }
    }

    /// Clears the [`WAITING`] bit once the line is empty. Under the lock, which every
    /// change to the line holds, so the bit cannot be cleared under a new waiter.
    fn nobody_waits_if_empty(&self, st: &State<T>) {
        if st.send_waiters.is_empty() {
            self.occupancy.fetch_and(!WAITING, Ordering::AcqRel);
        }
    }
}

impl<T> State<T> {
    /// Leaves the receiver's waker for the next send (or the last sender's drop) to wake.
    fn park_receiver(&mut self, waker: &Waker) {
        match &mut self.rx_waker {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
    }
}

/// The sending half. Cheap to clone; the queue closes for the receiver once every sender is
/// dropped.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Sends `value`, waiting for room under [`Policy::Block`]; the other policies never
    /// wait (see the [module docs](self)).
    ///
    /// # Errors
    /// [`SendError::Closed`] when the receiver is gone or closed the queue;
    /// [`SendError::Full`] under [`Policy::Reject`] when full. The value is handed back.
    ///
    /// # Cancel safety
    /// Cancel safe: if the future is dropped before it completes, the value was not
    /// enqueued (it is dropped with the future), and the room it was waiting for passes to
    /// the next waiting sender.
    pub fn send(&self, value: T) -> SendFuture<'_, T> {
        SendFuture {
            shared: &self.shared,
            value: Some(value),
            waiter: None,
        }
    }

    /// [`Sender::send`], waiting for room at most `timeout` (only [`Policy::Block`] waits).
    /// Needs a tokio runtime with its time driver.
    ///
    /// # Errors
    /// As [`Sender::send`], plus [`SendError::Timeout`] when no room came up in time: the
    /// value is handed back and the refusal counted in `perfkit_queue_rejected_total`.
    ///
    /// # Cancel safety
    /// As [`Sender::send`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let (tx, _rx) = perfkit::queue::bounded::<u32>("doc-send-timeout", 1);
    /// tx.send(1).await.unwrap();
    /// let refused = tx.send_timeout(2, Duration::from_millis(10)).await.unwrap_err();
    /// assert!(refused.is_timeout());
    /// assert_eq!(refused.into_inner(), 2);
    /// # });
    /// ```
    #[cfg(not(loom))]
    pub async fn send_timeout(
        &self,
        value: T,
        timeout: std::time::Duration,
    ) -> Result<SendOutcome, SendError<T>> {
        let mut send = self.send(value);
        let mut expired = std::pin::pin!(tokio::time::sleep(timeout));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = Pin::new(&mut send).poll(cx) {
                return Poll::Ready(done);
            }
            if expired.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            send.forget_waiter();
            let value = send.value.take().expect("a pending send holds its value");
            self.shared.sig.m.rejected.inc();
            Poll::Ready(Err(SendError::Timeout(value)))
        })
        .await
    }

    /// Sends without waiting.
    ///
    /// # Errors
    /// [`SendError::Full`] when full under [`Policy::Block`] or [`Policy::Reject`] (counted
    /// as rejected), [`SendError::Closed`] when the receiver is gone or closed the queue.
    pub fn try_send(&self, value: T) -> Result<SendOutcome, SendError<T>> {
        match self.shared.offer(value, None) {
            Offer::Done(o) => Ok(o),
            Offer::Full(v) => Err(SendError::Full(v)),
            Offer::Closed(v) | Offer::Wait(v) => Err(SendError::Closed(v)),
        }
    }

    /// [`Sender::send`] for synchronous code: parks the thread while waiting for room.
    /// Do not call it from async code; it would block the runtime's thread.
    ///
    /// # Errors
    /// As [`Sender::send`].
    pub fn send_blocking(&self, value: T) -> Result<SendOutcome, SendError<T>> {
        crate::loom::block_on(self.send(value))
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.shared.occupied()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue's bound.
    pub fn capacity(&self) -> usize {
        self.shared.sig.capacity
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.shared.sig.name
    }

    /// Whether the receiver is gone or closed the queue.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state).closed
    }
}

impl<T> Sender<T> {
    /// The `queue` label this queue records under (its name, or `__overflow__`).
    pub(crate) fn label(&self) -> &str {
        &self.shared.sig.label
    }

    /// A handle that reads the queue's depth without keeping it open for the receiver.
    pub(crate) fn probe(&self) -> Probe<T> {
        Probe {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Reads a queue's depth; unlike a [`Sender`] it does not count as a sender.
pub(crate) struct Probe<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Probe<T> {
    pub(crate) fn len(&self) -> usize {
        self.shared.occupied()
    }

    /// The queue's largest depth over `window`.
    pub(crate) fn depth_max(&self, window: &crate::metrics::Window) -> usize {
        self.shared.sig.depth_max(window)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        lock(&self.shared.state).senders += 1;
        Sender {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.state);
        st.senders -= 1;
        let rx = if st.senders == 0 {
            st.rx_waker.take()
        } else {
            None
        };
        drop(st);
        if let Some(w) = rx {
            w.wake();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("name", &self.shared.sig.name)
            .field("len", &self.len())
            .field("capacity", &self.shared.sig.capacity)
            .field("policy", &self.shared.sig.policy)
            .finish()
    }
}

/// The future returned by [`Sender::send`].
#[must_use = "futures do nothing unless awaited"]
pub struct SendFuture<'a, T> {
    shared: &'a Shared<T>,
    value: Option<T>,
    waiter: Option<u64>,
}

// The value is only moved in and out, never pinned in place.
impl<T> Unpin for SendFuture<'_, T> {}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<SendOutcome, SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let value = this
            .value
            .take()
            .expect("SendFuture polled after completion");
        let waiter = match this.shared.sig.policy {
            Policy::Block => Some((&mut this.waiter, cx.waker())),
            _ => None,
        };
        match this.shared.offer(value, waiter) {
            Offer::Done(o) => Poll::Ready(Ok(o)),
            Offer::Full(v) => Poll::Ready(Err(SendError::Full(v))),
            Offer::Closed(v) => {
                this.forget_waiter();
                Poll::Ready(Err(SendError::Closed(v)))
            }
            Offer::Wait(v) => {
                this.value = Some(v);
                Poll::Pending
            }
        }
    }
}

impl<T> SendFuture<'_, T> {
    /// Leaves the waiter list. If this sender had already been woken for a free slot it will
    /// not use, the wake-up passes to the next waiter so no room goes unclaimed.
    fn forget_waiter(&mut self) {
        let Some(id) = self.waiter.take() else { return };
        let mut st = lock(&self.shared.state);
        let was_woken = !st.send_waiters.remove(id);
        let next = if was_woken && self.shared.occupied() < self.shared.sig.capacity {
            self.shared.next_waiter(&mut st)
        } else {
            self.shared.nobody_waits_if_empty(&st);
            None
        };
        drop(st);
        if let Some(w) = next {
            w.wake();
        }
    }
}

impl<T> Drop for SendFuture<'_, T> {
    fn drop(&mut self) {
        self.forget_waiter();
    }
}

impl<T> fmt::Debug for SendFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendFuture")
            .field("queue", &self.shared.sig.name)
            .field("waiting", &self.waiter.is_some())
            .finish()
    }
}

/// The receiving half. Dropping it closes the queue; items still queued are counted as
/// dropped with reason `closed`.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// Enqueue time of the first item of the last `recv_many` that returned items.
    first_taken_at: Option<u64>,
    /// Reused by every `recv_many`, so that receiving allocates nothing once these have
    /// grown to the largest batch taken: the enqueue times of the items just taken, and the
    /// senders to wake.
    taken_at: Vec<u64>,
    wake: Vec<Waker>,
    /// Items taken out of the shared buffer in one go (everything it held, by swapping
    /// buffers under one lock) and not yet handed out: `recv` serves them without touching
    /// the lock, so a receiver keeping up with its senders takes the lock once per burst
    /// rather than once per item. They still count in `occupied`, so the bound holds. Never
    /// used under [`Policy::DropOldest`], whose senders evict the oldest item from the shared
    /// buffer.
    held: VecDeque<Entry<T>>,
    /// The dequeue side's counter and wait histogram, on cells of the receiver's own: one
    /// receiver, so recording is plain loads and stores.
    dequeued: crate::metrics::ArcLocalCounter,
    wait: crate::metrics::ArcLocalHistogram,
}

impl<T> Receiver<T> {
    /// Receives the next item, waiting while the queue is empty. `None` once the queue is
    /// closed (every sender dropped, or [`Receiver::close`]) and drained.
    ///
    /// # Cancel safety
    /// Cancel safe: an item is only taken from the queue when the future completes.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next item; see [`Receiver::recv`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(e) = self.held.pop_front() {
            return Poll::Ready(Some(self.hand_out_held(e)));
        }
        let mut st = lock(&self.shared.state);
        if st.buf.is_empty() {
            if st.senders == 0 || st.closed {
                return Poll::Ready(None);
            }
            st.park_receiver(cx.waker());
            return Poll::Pending;
        }
        if self.shared.sig.policy == Policy::DropOldest {
            // One at a time, under the lock: a sender may evict the oldest item any time.
            let e = st.buf.pop_front().expect("not empty");
            self.shared.occupancy.fetch_sub(1, Ordering::AcqRel);
            drop(st);
            self.record(e.at);
            return Poll::Ready(Some(e.value));
        }
        // Take everything queued in one go; the buffers trade places, so nothing is copied
        // or allocated.
        std::mem::swap(&mut st.buf, &mut self.held);
        drop(st);
        let e = self.held.pop_front().expect("not empty");
        Poll::Ready(Some(self.hand_out_held(e)))
    }

    /// Hands out an item the receiver held: frees its room and wakes a waiting sender if
    /// there is one.
    fn hand_out_held(&mut self, e: Entry<T>) -> T {
        let front = self.held.front().map_or(0, |f| f.at);
        self.shared.held_front_at.store(front, Ordering::Relaxed);
        self.freed(1);
        self.record(e.at);
        e.value
    }

    /// Counts one item handed out and records how long it waited since `at`.
    #[inline]
    fn record(&self, at: u64) {
        self.dequeued.add(1);
        self.wait.record(clock::nanos_between(at, clock::raw()));
    }

    /// `n` held items were handed out: their room is free. Wakes as many waiting senders,
    /// taking the lock only when some are waiting.
    fn freed(&mut self, n: usize) {
        // One step that frees the room and tells whether a sender waits (see `offer`).
        let seen = self.shared.occupancy.fetch_sub(n as u64, Ordering::AcqRel);
        if seen & WAITING == 0 {
            return;
        }
        let st = lock(&self.shared.state);
        self.shared.wake_waiters(st, &mut self.wake, n);
    }

    /// Receives up to `limit` items into `buf` under one lock, waiting while the queue is
    /// empty. Returns how many were added; 0 means closed and drained (or `limit` is 0).
    ///
    /// # Cancel safety
    /// Cancel safe, like [`Receiver::recv`].
    pub async fn recv_many(&mut self, buf: &mut Vec<T>, limit: usize) -> usize {
        if limit == 0 {
            return 0;
        }
        std::future::poll_fn(|cx| self.poll_recv_many(cx, buf, limit)).await
    }

    /// Polls for up to `limit` items; see [`Receiver::recv_many`].
    pub fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<T>,
        limit: usize,
    ) -> Poll<usize> {
        if !self.held.is_empty() {
            let n = limit.min(self.held.len());
            buf.reserve(n);
            self.taken_at.clear();
            for e in self.held.drain(..n) {
                self.taken_at.push(e.at);
                buf.push(e.value);
            }
            let front = self.held.front().map_or(0, |f| f.at);
            self.shared.held_front_at.store(front, Ordering::Relaxed);
            self.freed(n);
            self.took(n);
            return Poll::Ready(n);
        }
        let mut st = lock(&self.shared.state);
        let n = limit.min(st.buf.len());
        if n > 0 {
            buf.reserve(n);
            self.taken_at.clear();
            for e in st.buf.drain(..n) {
                self.taken_at.push(e.at);
                buf.push(e.value);
            }
            self.shared.occupancy.fetch_sub(n as u64, Ordering::AcqRel);
            self.shared.wake_waiters(st, &mut self.wake, n);
            self.took(n);
            return Poll::Ready(n);
        }
        if st.senders == 0 || st.closed {
            return Poll::Ready(0);
        }
        st.park_receiver(cx.waker());
        Poll::Pending
    }

    /// Records the `n` items whose enqueue times are in `taken_at` as dequeued now.
    fn took(&mut self, n: usize) {
        debug_assert_eq!(n, self.taken_at.len());
        self.first_taken_at = self.taken_at.first().copied();
        let now = clock::raw();
        self.dequeued.add(n as u64);
        for &at in &self.taken_at {
            self.wait.record(clock::nanos_between(at, now));
        }
    }

    /// Takes the next item if there is one.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when nothing is queued, [`TryRecvError::Closed`] when nothing
    /// is queued and nothing will be.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let waker = futures_noop_waker();
        let mut cx = Context::from_waker(&waker);
        match self.poll_recv(&mut cx) {
            Poll::Ready(Some(v)) => Ok(v),
            Poll::Ready(None) => Err(TryRecvError::Closed),
            Poll::Pending => {
                // Do not leave the no-op waker registered in place of a real one.
                let mut st = lock(&self.shared.state);
                if st.rx_waker.as_ref().is_some_and(|w| w.will_wake(&waker)) {
                    st.rx_waker = None;
                }
                Err(TryRecvError::Empty)
            }
        }
    }

    /// [`Receiver::recv`] for synchronous code: parks the thread while the queue is empty.
    /// Do not call it from async code.
    pub fn recv_blocking(&mut self) -> Option<T> {
        crate::loom::block_on(self.recv())
    }

    /// Closes the queue for senders: sends fail with [`SendError::Closed`] from now on,
    /// waiting senders wake up and fail, and what is already queued can still be received.
    pub fn close(&mut self) {
        let mut st = lock(&self.shared.state);
        st.closed = true;
        let waiters = st.send_waiters.drain();
        self.shared.occupancy.fetch_and(!WAITING, Ordering::AcqRel);
        drop(st);
        for w in waiters {
            w.wake();
        }
    }

    /// Gives up on the queue, e.g. at a shutdown deadline: closes it for senders (as
    /// [`Receiver::close`]), drops every item still queued, counting them as
    /// `perfkit_queue_dropped_total{reason="closed"}` (as dropping the receiver would), and
    /// counts `held` items the consumer took out but will not deliver (and drops itself) as
    /// `reason="shutdown"`. Returns how many were counted in all.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let (tx, mut rx) = perfkit::queue::bounded::<u32>("doc-discard", 8);
    /// for i in 0..5 {
    ///     tx.send(i).await.unwrap();
    /// }
    /// let mut taken = Vec::new();
    /// rx.recv_many(&mut taken, 2).await;
    /// // The consumer must stop now: two items in hand, three still queued.
    /// assert_eq!(rx.discard(taken.len()), 5);
    /// assert!(tx.send(5).await.unwrap_err().is_closed());
    /// # });
    /// ```
    pub fn discard(&mut self, held: usize) -> u64 {
        let mut st = lock(&self.shared.state);
        st.closed = true;
        let mut left = std::mem::take(&mut st.buf);
        left.extend(self.held.drain(..));
        self.shared.occupancy.store(0, Ordering::Release);
        self.shared.held_front_at.store(0, Ordering::Relaxed);
        let waiters = st.send_waiters.drain();
        drop(st);
        let queued = left.len() as u64;
        if queued > 0 {
            self.shared.sig.m.dropped_closed.add(queued);
        }
        if held > 0 {
            self.shared.sig.m.dropped_shutdown.add(held as u64);
        }
        drop(left);
        for w in waiters {
            w.wake();
        }
        queued + held as u64
    }

    /// How long ago the first item of the last non-empty [`Receiver::recv_many`] was
    /// enqueued (zero before any).
    pub(crate) fn first_taken_age(&self) -> std::time::Duration {
        self.first_taken_at.map_or(std::time::Duration::ZERO, |at| {
            std::time::Duration::from_nanos(clock::nanos_between(at, clock::raw()))
        })
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.shared.occupied()
    }

    /// Whether nothing is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue's bound.
    pub fn capacity(&self) -> usize {
        self.shared.sig.capacity
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.shared.sig.name
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.discard(0);
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("name", &self.shared.sig.name)
            .field("len", &self.len())
            .field("capacity", &self.shared.sig.capacity)
            .finish()
    }
}

fn futures_noop_waker() -> Waker {
    Waker::noop().clone()
}

#[cfg(not(loom))]
impl<T: Send> crate::metrics::Collector for Shared<T> {
    fn collect(&self, out: &mut crate::metrics::Collection) {
        self.sync();
        let depth = self.occupied();
        self.sig.collect(out, depth, self.oldest_age_seconds());
    }

    fn snapshot(&self, out: &mut crate::metrics::Sections) {
        self.sync();
        let depth = self.occupied();
        self.sig.snapshot(out, depth, self.oldest_age_seconds());
    }

    fn inventory(&self, out: &mut crate::metrics::Sections) {
        self.sig.inventory(out, std::any::type_name::<T>());
    }

    fn tick(&self, tick: &crate::metrics::Tick) {
        self.sig.tick(tick, self.occupied());
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // The last word: the counter outlives the queue.
        self.sync();
    }
}

impl<T> Shared<T> {
    #[cfg_attr(loom, allow(dead_code))]
    fn oldest_age_seconds(&self) -> f64 {
        // The receiver's held items are older than anything still in the shared buffer.
        let held = self.held_front_at.load(Ordering::Relaxed);
        let oldest = if held != 0 {
            Some(held)
        } else {
            lock(&self.state).buf.front().map(|e| e.at)
        };
        oldest.map_or(0.0, |at| {
            clock::nanos_between(at, clock::raw()) as f64 / 1e9
        })
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
