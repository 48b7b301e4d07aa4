//! The pool's synchronisation core, independent of tokio so loom can check it: priority
//! lanes of lock-free rings under one shared bound, the sleep/wake protocol between
//! submitters and workers, and per-worker busy accounting.
//!
//! # The bound
//! Two running totals, on different cache lines: `reserved` (room claimed by submitters,
//! written only by them) and `taken` (items taken out: the sum of the rings' head
//! positions, since every removal is a pop that advances a head, so workers keep no separate
//! count). The depth is `reserved - taken`. A submitter claims room with a
//! compare-and-swap on `reserved` against a cached copy of `taken` that it refreshes only
//! when the cached figure says "full" (a stale copy only overstates the depth), so in the
//! common case submitters and workers write disjoint lines. After claiming, the submitter
//! pushes into its lane's ring; each ring holds `capacity` items, so a claimed push always
//! finds room once the previous lap's consumer has finished with the slot. The top bit of
//! `reserved` is the closed flag: closing and claiming cannot interleave, and "closed with
//! nothing in flight" is `reserved == CLOSED | taken`.
//!
//! # Sleeping and waking
//! Both waits use the same store-fence-load handshake: the sleeper registers its waker, bumps
//! a count, issues a SeqCst fence and re-checks; the other side changes the state, issues a
//! SeqCst fence and reads the count. One of the two always sees the other, so no wake-up is
//! lost, and the hot path pays one fence and one load when nobody sleeps. (Fences rather
//! than SeqCst operations alone, because that is the form loom can check.)

use std::task::{Context, Poll, Waker};

use crossbeam_utils::CachePadded;

use super::ring::Ring;
use crate::clock;
use crate::loom::{AtomicU64, AtomicUsize, FastMutex, Ordering, fence, lock_fast as lock, spin};
use crate::queue::Policy;
use crate::wait_list::WaitList;

const CLOSED: usize = 1 << (usize::BITS - 1);

/// Why a reservation did not produce a slot.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// Full under `Block`/`Reject` without a waiter.
    Full,
    /// Full under `DropNewest`: the new item is to be dropped.
    DropNewest,
    /// Closed for intake.
    Closed,
    /// Full; the caller's waker is registered and will be woken when room frees up.
    Wait,
}

/// A reserved slot: the caller must [`Core::push`] exactly one item for it.
#[derive(Debug)]
#[must_use]
pub(super) struct Reserved<J> {
    /// Queue depth including this reservation, as an upper bound (see [`Core::exact_depth`]).
    pub(super) depth: usize,
    /// Claims so far, including this one.
    pub(super) claimed: usize,
    /// Items evicted to make room (`DropOldest`), for the caller to cancel and count.
    pub(super) evicted: Vec<J>,
}

/// One worker's busy state, written only by that worker.
#[derive(Default)]
struct Busy {
    /// Raw clock reading when the current job started; 0 while idle.
    since: AtomicU64,
    /// Nanoseconds spent on finished jobs.
    nanos: AtomicU64,
}

/// A worker's private cursor: its index and its turn counters for lane fairness.
#[derive(Debug)]
pub(super) struct Local {
    pub(super) id: usize,
    takes: u32,
    turn: usize,
}

impl Local {
    pub(super) fn new(id: usize) -> Self {
        Local {
            id,
            takes: 0,
            turn: 0,
        }
    }
}

/// The submitters' line: claimed room and their cached copy of `taken`.
struct Claims {
    reserved: AtomicUsize,
    taken_seen: AtomicUsize,
}

pub(super) struct Core<J> {
    lanes: Box<[Ring<J>]>,
    capacity: usize,
    policy: Policy,
    fair_every: u32,
    claims: CachePadded<Claims>,
    /// Mirror of the closed bit, on a line nobody writes until close, so a worker can
    /// check it after every take without pulling the submitters' line away from them.
    closed: CachePadded<AtomicUsize>,
    idle: CachePadded<FastMutex<Vec<(usize, Waker)>>>,
    idle_count: CachePadded<AtomicUsize>,
    senders: CachePadded<FastMutex<WaitList>>,
    send_waiting: CachePadded<AtomicUsize>,
    busy: Box<[CachePadded<Busy>]>,
}

impl<J> Core<J> {
    pub(super) fn new(
        workers: usize,
        capacity: usize,
        lanes: usize,
        policy: Policy,
        fair_every: u32,
    ) -> Self {
        Core {
            lanes: (0..lanes).map(|_| Ring::new(capacity)).collect(),
            capacity,
            policy,
            fair_every: fair_every.max(1),
            claims: CachePadded::new(Claims {
                reserved: AtomicUsize::new(0),
                taken_seen: AtomicUsize::new(0),
            }),
            closed: CachePadded::new(AtomicUsize::new(0)),
            idle: CachePadded::new(FastMutex::new(Vec::with_capacity(workers))),
            idle_count: CachePadded::new(AtomicUsize::new(0)),
            senders: CachePadded::new(FastMutex::new(WaitList::default())),
            send_waiting: CachePadded::new(AtomicUsize::new(0)),
            busy: (0..workers)
                .map(|_| CachePadded::new(Busy::default()))
                .collect(),
        }
    }

    pub(super) fn lanes(&self) -> usize {
        self.lanes.len()
    }

    pub(super) fn workers(&self) -> usize {
        self.busy.len()
    }

    #[cfg_attr(loom, allow(dead_code))]
    pub(super) fn fair_every(&self) -> u32 {
        self.fair_every
    }

    /// Items taken out so far (by workers, evictions and drains): the sum of the rings'
    /// head positions, as every removal is a pop that advances a head.
    #[inline]
    fn taken(&self) -> usize {
        self.lanes
            .iter()
            .fold(0usize, |sum, ring| sum.wrapping_add(ring.taken()))
    }

    /// Reservations made so far (wrapping): every one is an item enqueued.
    pub(super) fn claims(&self) -> usize {
        self.claims.reserved.load(Ordering::SeqCst) & !CLOSED
    }

    /// Items queued plus reservations in flight.
    pub(super) fn depth(&self) -> usize {
        // `taken` first: both only grow and `taken <= reserved` at every instant.
        let taken = self.taken();
        (self.claims.reserved.load(Ordering::SeqCst) & !CLOSED).wrapping_sub(taken)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst) != 0
    }

    /// Whether intake is closed and every claimed item has been taken.
    fn drained(&self) -> bool {
        if self.closed.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let taken = self.taken();
        self.claims.reserved.load(Ordering::SeqCst) == CLOSED | taken
    }

    /// Reserves room for one item. With `waiter` (an async submit under `Block`), a full
    /// pool registers the caller's waker and answers `Wait`; `waiter` holds the caller's
    /// place in line across polls and must be given to [`Core::forget_sender`] when the
    /// caller stops waiting.
    pub(super) fn reserve(
        &self,
        mut waiter: Option<(&mut Option<u64>, &Waker)>,
    ) -> Result<Reserved<J>, Refused> {
        let mut evicted = Vec::new();
        let claims = &*self.claims;
        let mut r = claims.reserved.load(Ordering::SeqCst);
        let mut seen = claims.taken_seen.load(Ordering::Relaxed);
        loop {
            if r & CLOSED != 0 {
                return Err(Refused::Closed);
            }
            let depth = r.wrapping_sub(seen);
            if depth >= self.capacity {
                let fresh = self.taken();
                if fresh != seen {
                    claims.taken_seen.fetch_max(fresh, Ordering::Relaxed);
                    seen = fresh;
                    r = claims.reserved.load(Ordering::SeqCst);
                    continue;
                }
                match self.policy {
                    Policy::Block => {
                        let Some((slot, waker)) = waiter.as_mut() else {
                            return Err(Refused::Full);
                        };
                        self.register_sender(slot, waker);
                        // Handshake with `took`: re-check after registering.
                        fence(Ordering::SeqCst);
                        seen = self.taken();
                        r = claims.reserved.load(Ordering::SeqCst);
                        if r & CLOSED == 0 && r.wrapping_sub(seen) >= self.capacity {
                            return Err(Refused::Wait);
                        }
                        continue;
                    }
                    Policy::Reject => return Err(Refused::Full),
                    Policy::DropNewest => return Err(Refused::DropNewest),
                    Policy::DropOldest => {
                        // Evict from the lowest lane that has something; if every item is
                        // still being pushed, wait for one to land.
                        match self.lanes.iter().find_map(Ring::pop) {
                            Some((job, _)) => evicted.push(job),
                            None => spin(),
                        }
                        r = claims.reserved.load(Ordering::SeqCst);
                        continue;
                    }
                }
            }
            match claims.reserved.compare_exchange_weak(
                r,
                r + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    if let Some((slot, _)) = waiter {
                        self.forget_sender(slot);
                    }
                    return Ok(Reserved {
                        depth: depth + 1,
                        claimed: r + 1,
                        evicted,
                    });
                }
                Err(now) => r = now,
            }
        }
    }

    /// The real depth right after a reservation that brought the claims to `claimed`
    /// (`Reserved::depth` is measured against the submitters' cached copy of `taken`, an
    /// upper bound). Costs a read of the workers' line, so callers ask only when the upper
    /// bound says the figure matters. Refreshes the cached copy too.
    pub(super) fn exact_depth(&self, claimed: usize) -> usize {
        let taken = self.taken();
        self.claims.taken_seen.store(taken, Ordering::Relaxed);
        claimed.wrapping_sub(taken)
    }

    /// Pushes the item a reservation made room for, and wakes a sleeping worker if any.
    pub(super) fn push(&self, lane: usize, mut job: J, at: u64) {
        let ring = &self.lanes[lane];
        // The reservation guarantees room; a slot still being released by a consumer of the
        // previous lap is a matter of a few instructions.
        while let Err(back) = ring.push(job, at) {
            job = back;
            spin();
        }
        fence(Ordering::SeqCst);
        if self.idle_count.load(Ordering::Relaxed) > 0 {
            self.wake_one_worker();
        }
    }

    /// Takes the next job for worker `me`: from the highest non-empty lane, except that
    /// every `fair_every`-th job each worker takes comes from the lower lanes first (the
    /// first non-empty one in a rotation over them), so a lower lane with work gets at least
    /// one of every `fair_every * (lanes - 1)` jobs a worker takes.
    pub(super) fn try_take(&self, me: &mut Local) -> Option<(J, u64)> {
        let got = if self.lanes.len() == 1 {
            self.lanes[0].pop()
        } else {
            self.take_by_priority(me)
        };
        if got.is_some() {
            self.took();
        }
        got
    }

    fn take_by_priority(&self, me: &mut Local) -> Option<(J, u64)> {
        let top = self.lanes.len() - 1;
        let mut got = None;
        if me.takes.wrapping_add(1) % self.fair_every == 0 {
            // A fairness turn: the lower lanes, in rotation, before the usual order.
            for k in 0..top {
                let lane = (me.turn + k) % top;
                if let Some(item) = self.lanes[lane].pop() {
                    me.turn = lane + 1;
                    got = Some(item);
                    break;
                }
            }
        }
        let got = got.or_else(|| self.lanes.iter().rev().find_map(Ring::pop));
        if got.is_some() {
            me.takes = me.takes.wrapping_add(1);
        }
        got
    }

    /// Bookkeeping after a take: frees the slot and wakes a waiting submitter if any. Once
    /// intake is closed, a take may be the one that drains the pool: then every parked
    /// worker is woken to see it and exit.
    fn took(&self) {
        // The ring's head moved with the take; the fence orders that before the loads below.
        fence(Ordering::SeqCst);
        if self.closed.load(Ordering::Relaxed) != 0 {
            self.wake_all_workers();
        }
        if self.send_waiting.load(Ordering::SeqCst) > 0 {
            let next = lock(&self.senders).pop();
            if let Some(w) = next {
                self.send_waiting.fetch_sub(1, Ordering::SeqCst);
                w.wake();
            }
        }
    }

    /// A worker's wait for work: `Ready(Some(job))`, `Pending` with the worker's waker
    /// registered, or `Ready(None)` once the pool is closed and every accepted job is taken.
    pub(super) fn poll_take(&self, me: &mut Local, cx: &mut Context<'_>) -> Poll<Option<(J, u64)>> {
        if let Some(got) = self.try_take(me) {
            return Poll::Ready(Some(got));
        }
        self.park_worker(me.id, cx.waker());
        fence(Ordering::SeqCst);
        if let Some(got) = self.try_take(me) {
            self.unpark_worker(me.id);
            return Poll::Ready(Some(got));
        }
        if self.drained() {
            self.unpark_worker(me.id);
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// Takes whatever is queued, for cancellation at shutdown.
    pub(super) fn drain(&self) -> Vec<(J, u64)> {
        let mut out = Vec::new();
        while let Some(got) = self.lanes.iter().rev().find_map(Ring::pop) {
            out.push(got);
        }
        out
    }

    /// Stops intake: reservations fail from now on. Wakes every waiting submitter (to fail)
    /// and every sleeping worker (to drain and exit).
    pub(super) fn close(&self) {
        self.claims.reserved.fetch_or(CLOSED, Ordering::SeqCst);
        self.closed.store(1, Ordering::SeqCst);
        // Pairs with the fence in `took`: a take that missed the flag is visible to the
        // workers woken below.
        fence(Ordering::SeqCst);
        let senders: Vec<_> = {
            let mut s = lock(&self.senders);
            self.send_waiting.store(0, Ordering::SeqCst);
            s.drain()
        };
        for w in senders {
            w.wake();
        }
        self.wake_all_workers();
    }

    fn wake_all_workers(&self) {
        let workers: Vec<_> = {
            let mut idle = lock(&self.idle);
            self.idle_count.store(0, Ordering::SeqCst);
            idle.drain(..).collect()
        };
        for (_, w) in workers {
            w.wake();
        }
    }

    /// Items queued in each lane, lowest lane first (best effort: reads race with pushes
    /// and takes).
    #[cfg_attr(loom, allow(dead_code))]
    pub(super) fn lane_depths(&self) -> Vec<usize> {
        self.lanes.iter().map(Ring::len).collect()
    }

    /// Enqueue time of the oldest item at the head of a lane (best effort).
    #[cfg_attr(loom, allow(dead_code))]
    pub(super) fn oldest_enqueued_at(&self) -> Option<u64> {
        self.lanes.iter().filter_map(Ring::head_at).min()
    }

    fn park_worker(&self, id: usize, waker: &Waker) {
        let mut idle = lock(&self.idle);
        match idle.iter_mut().find(|(i, _)| *i == id) {
            Some((_, w)) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
            }
            None => {
                idle.push((id, waker.clone()));
                self.idle_count.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn unpark_worker(&self, id: usize) {
        let mut idle = lock(&self.idle);
        if let Some(pos) = idle.iter().position(|(i, _)| *i == id) {
            idle.swap_remove(pos);
            self.idle_count.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn wake_one_worker(&self) {
        // The most recently parked worker: its cache is the warmest.
        let next = {
            let mut idle = lock(&self.idle);
            let next = idle.pop();
            if next.is_some() {
                self.idle_count.fetch_sub(1, Ordering::SeqCst);
            }
            next
        };
        if let Some((_, w)) = next {
            w.wake();
        }
    }

    fn register_sender(&self, slot: &mut Option<u64>, waker: &Waker) {
        if lock(&self.senders).register(slot, waker) {
            self.send_waiting.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Leaves the submitters' line. A submitter that was woken for room it will not use
    /// passes the wake-up on, so no room goes unclaimed.
    pub(super) fn forget_sender(&self, slot: &mut Option<u64>) {
        let Some(id) = slot.take() else { return };
        let mut s = lock(&self.senders);
        if s.remove(id) {
            self.send_waiting.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        if self.depth() < self.capacity {
            if let Some(w) = s.pop() {
                self.send_waiting.fetch_sub(1, Ordering::SeqCst);
                drop(s);
                w.wake();
            }
        }
    }

    /// Marks worker `id` busy from `now` (a raw clock reading); returns it.
    #[inline]
    pub(super) fn begin(&self, id: usize, now: u64) -> u64 {
        let now = now.max(1);
        self.busy[id].since.store(now, Ordering::Relaxed);
        now
    }

    /// Marks worker `id` idle at `now`; returns how long its job took, in nanoseconds.
    #[inline]
    pub(super) fn end(&self, id: usize, started: u64, now: u64) -> u64 {
        let b = &self.busy[id];
        let nanos = clock::nanos_between(started, now);
        // Single writer: a load and a store, no read-modify-write.
        b.nanos
            .store(b.nanos.load(Ordering::Relaxed) + nanos, Ordering::Relaxed);
        b.since.store(0, Ordering::Relaxed);
        nanos
    }

    /// Workers running a job right now: between 0 and the number of workers by construction.
    pub(super) fn busy(&self) -> usize {
        self.busy
            .iter()
            .filter(|b| b.since.load(Ordering::Relaxed) != 0)
            .count()
    }

    /// Busy time so far over all workers, including the elapsed part of running jobs.
    #[cfg_attr(loom, allow(dead_code))]
    pub(super) fn busy_nanos(&self) -> u64 {
        let now = clock::raw();
        self.busy
            .iter()
            .map(|b| {
                let since = b.since.load(Ordering::Relaxed);
                let running = if since == 0 {
                    0
                } else {
                    clock::nanos_between(since, now)
                };
                b.nanos.load(Ordering::Relaxed) + running
            })
            .sum()
    }
}
