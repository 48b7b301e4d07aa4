//! Tracked tasks: `tokio::spawn` with a name, so live background work is counted, listed
//! and dumped like Go's goroutines.
//!
//! [`spawn`] and [`spawn_blocking`] mirror tokio's functions and return tokio's
//! `JoinHandle`. Each task records, under `task="<name>"`:
//! `perfkit_tasks_spawned_total`, `perfkit_tasks_finished_total{outcome}` (`ok`, `panic`,
//! `cancelled`: dropped before completing, e.g. aborted or its runtime shut down) and
//! `perfkit_tasks_alive` (spawned minus finished, read at scrape). Live tasks are listed with
//! their spawn site and age by `/debug/pprof/goroutine` (see [`dump`]), and the snapshot
//! reports per name the alive count, the counters and the largest alive count seen over the
//! last polls, so a k6 threshold can catch a leak.
//!
//! Names are roles (`"flusher"`, `"conn-reader"`), not instances: they are `&'static str`
//! so the label set stays small. Past the registry's cardinality cap they are recorded
//! under `__overflow__`.
//!
//! # Examples
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // tokio's own JoinHandle: await it, abort it, or drop it to detach the task.
//! let handle: tokio::task::JoinHandle<u64> = perfkit::task::spawn("doc-worker", async { 40 + 2 });
//! assert_eq!(handle.await.unwrap(), 42);
//! let sum = perfkit::task::spawn_blocking("doc-checksum", || (1..=10u64).sum::<u64>());
//! assert_eq!(sum.await.unwrap(), 55);
//! # });
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location};
use std::pin::Pin;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use serde_json::json;
use tokio::task::JoinHandle;

use crate::metrics::{Counter, LocalCounter, OVERFLOW_LABEL, Registry, WindowMax, names};

/// Seconds the snapshot's `alive_max_recent` looks back.
const RECENT_SECONDS: u32 = 60;

/// Spawns `future` on the current tokio runtime as a tracked task called `name`.
///
/// # Panics
/// Like `tokio::spawn`, outside a tokio runtime.
#[track_caller]
pub fn spawn<F>(name: &'static str, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let guard = TaskGuard::start(name, Location::caller());
    tokio::spawn(Tracked {
        future,
        guard: Some(guard),
    })
}

/// Runs `f` on tokio's blocking pool as a tracked task called `name`.
///
/// # Panics
/// Like `tokio::task::spawn_blocking`, outside a tokio runtime.
#[track_caller]
pub fn spawn_blocking<F, R>(name: &'static str, f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let guard = TaskGuard::start(name, Location::caller());
    tokio::task::spawn_blocking(
        move || match std::panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => {
                guard.finish(Outcome::Ok);
                v
            }
            Err(panic) => {
                guard.finish(Outcome::Panic);
                std::panic::resume_unwind(panic)
            }
        },
    )
}

#[derive(Clone, Copy)]
enum Outcome {
    Ok = 0,
    Panic = 1,
    Cancelled = 2,
}

/// Per-name counters and the live-task count.
pub(crate) struct Group {
    name: &'static str,
    label: String,
    spawned: Arc<Counter>,
    finished: [Arc<Counter>; 3],
    /// The live count, sampled each second.
    alive_max: WindowMax,
}

impl Group {
    fn alive(&self) -> u64 {
        let finished: u64 = self.finished.iter().map(|c| c.get()).sum();
        self.spawned.get().saturating_sub(finished)
    }
}

/// Every group, by name, for scrapes and dumps.
struct Groups {
    /// Groups live for the rest of the process: there is one per distinct task name in the
    /// code, a small fixed number, and `&'static` keeps reference counting off the spawn path.
    by_name: Mutex<HashMap<&'static str, &'static Group>>,
    registry: &'static Registry,
}

fn groups() -> &'static Groups {
    static GROUPS: OnceLock<Groups> = OnceLock::new();
    GROUPS.get_or_init(|| {
        let registry = crate::metrics::registry();
        let g = Groups {
            by_name: Mutex::default(),
            registry,
        };
        registry.register_owned("tasks".into(), Arc::new(TasksCollector));
        g
    })
}

use crate::loom::lock_unpoisoned as lock;

/// What a thread keeps per task name it spawns under: the group, and its own cell of the
/// group's spawned counter, so a spawn counts with a plain load and store.
struct Cached {
    name: &'static str,
    group: &'static Group,
    spawned: LocalCounter<'static>,
}

const CACHE_SLOTS: usize = 16;

/// What a spawning thread keeps: its recently used names (compared by the name's address)
/// and its part of the live-task table. With both, a spawn takes no lock and pays no atomic
/// read-modify-write once its name has been seen on the thread.
#[derive(Default)]
struct Spawner {
    names: Vec<Cached>,
    slab: Option<Slab>,
}

impl Spawner {
    /// Counts a spawn under `name`; returns its group.
    fn count(&mut self, name: &'static str) -> &'static Group {
        if let Some(e) = self.names.iter().find(|e| std::ptr::eq(e.name, name)) {
            e.spawned.inc();
            return e.group;
        }
        let group = group_slow(name);
        let spawned = group.spawned.local();
        spawned.inc();
        if self.names.len() == CACHE_SLOTS {
            self.names.remove(0);
        }
        self.names.push(Cached {
            name,
            group,
            spawned,
        });
        group
    }
}

impl Drop for Spawner {
    /// The thread is exiting: its slab goes to the next thread that spawns.
    fn drop(&mut self) {
        if let Some(slab) = self.slab.take() {
            slab.disown();
        }
    }
}

thread_local! {
    static SPAWNER: RefCell<Spawner> = RefCell::default();
}

#[cold]
fn group_slow(name: &'static str) -> &'static Group {
    let gs = groups();
    let mut map = lock(&gs.by_name);
    if let Some(g) = map.get(name) {
        return g;
    }
    // Equal names at different addresses share a group.
    let r = gs.registry;
    let (spawned, admitted) = r.counter_admitted(&names::TASKS_SPAWNED_TOTAL, &[name]);
    let label = if admitted {
        name.to_owned()
    } else {
        OVERFLOW_LABEL.to_owned()
    };
    let l = label.as_str();
    let g: &'static Group = Box::leak(Box::new(Group {
        name,
        spawned,
        finished: ["ok", "panic", "cancelled"]
            .map(|o| r.counter(&names::TASKS_FINISHED_TOTAL, &[l, o])),
        label,
        alive_max: WindowMax::new(),
    }));
    map.insert(name, g);
    g
}

/// One slot of the live-task table.
///
/// The thread that owns the slot writes the task's group, site and start, then publishes
/// its id (release); whichever thread finishes the task stores 0. A dump reads the id, the
/// fields, and the id again, and keeps the entry only if the id did not change (ids are
/// never reused, and the owner writes new fields only after it has seen the 0).
///
/// `repr(C)` keeps `id` first: under memcheck (`--cfg perfkit_memcheck`) the fields after it
/// are off limits while the slot is free.
#[repr(C)]
struct Slot {
    id: AtomicU64,
    group: AtomicPtr<Group>,
    site: AtomicPtr<Location<'static>>,
    started: AtomicU64,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            id: AtomicU64::new(0),
            group: AtomicPtr::new(std::ptr::null_mut()),
            site: AtomicPtr::new(std::ptr::null_mut()),
            started: AtomicU64::new(0),
        }
    }

    /// The bytes after `id`: what a free slot does not own.
    fn fields(&self) -> (*const u8, usize) {
        (
            std::ptr::from_ref(&self.group).cast::<u8>(),
            std::mem::size_of::<Slot>() - std::mem::size_of::<AtomicU64>(),
        )
    }

    /// Frees the slot (its fields off limits to memcheck until [`Slab::enter`] takes it).
    #[inline]
    fn release(&self) {
        let (ptr, len) = self.fields();
        crate::memcheck::released(ptr, len);
        self.id.store(0, Ordering::Release);
    }

    /// The live task in this slot, if any, read consistently. The fields are read
    /// speculatively, so under memcheck without its reports: a slot released meanwhile
    /// fails the second read of the id.
    fn read(&self) -> Option<(u64, &'static Group, &'static Location<'static>, u64)> {
        crate::memcheck::unchecked(|| self.read_speculatively())
    }

    fn read_speculatively(&self) -> Option<(u64, &'static Group, &'static Location<'static>, u64)> {
        let id = self.id.load(Ordering::Acquire);
        if id == 0 {
            return None;
        }
        let group = self.group.load(Ordering::Acquire);
        let site = self.site.load(Ordering::Acquire);
        let started = self.started.load(Ordering::Acquire);
        if self.id.load(Ordering::Acquire) != id || group.is_null() || site.is_null() {
            return None;
        }
        // SAFETY: both pointers were made from `&'static` references in `Slab::enter`.
        Some((id, unsafe { &*group }, unsafe { &*site }, started))
    }
}

/// Slots per chunk of the live-task table.
const CHUNK: usize = 256;

/// The live-task table: chunks of slots with stable addresses (leaked), each chunk owned
/// by one spawning thread's [`Slab`]. Spawning takes no lock and finishing is one store.
struct Table {
    /// Every chunk, for dumps; appended to when a slab grows.
    chunks: Mutex<Vec<&'static [Slot]>>,
    /// Slabs of threads that have exited, adopted by the next thread that spawns, so the
    /// table grows with the peaks of live tasks per slab (at least one chunk per thread
    /// spawning at the same time), not with the number of threads that ever spawned. It
    /// never shrinks.
    orphans: Mutex<Vec<Slab>>,
    /// The next block of task ids to hand to a slab.
    ids: AtomicU64,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| Table {
        chunks: Mutex::default(),
        orphans: Mutex::default(),
        // From 1: 0 marks a finished task.
        ids: AtomicU64::new(1),
    })
}

/// Task ids a slab takes at a time, so a spawn takes its id without touching shared state.
const ID_BLOCK: u64 = 1024;

/// One thread's part of the live-task table.
///
/// The owner hands out slots from its free list. When that runs dry, every slot of the slab
/// is live or finished, so a sweep over the slab collects exactly the finished ones (id 0)
/// back into it, growing the slab when it finds too few: O(1) per spawn amortised.
struct Slab {
    /// The slab's next task id and the end of its current block of ids. Ids are unique in
    /// the process (64 bits do not run out), never 0, and increase in spawn order per slab.
    next_id: u64,
    end_id: u64,
    chunks: Vec<&'static [Slot]>,
    free: Vec<&'static Slot>,
}

impl Slab {
    /// An orphaned slab if there is one, else a new one.
    fn adopt() -> Slab {
        let t = table();
        if let Some(slab) = lock(&t.orphans).pop() {
            return slab;
        }
        Slab {
            next_id: 0,
            end_id: 0,
            chunks: Vec::new(),
            free: Vec::new(),
        }
    }

    /// Hands the slab to the next thread that spawns.
    fn disown(self) {
        lock(&table().orphans).push(self);
    }

    /// Records a new live task; returns its slot.
    #[inline]
    fn enter(&mut self, group: &'static Group, site: &'static Location<'static>) -> &'static Slot {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => self.refill(),
        };
        if self.next_id == self.end_id {
            self.next_id = table().ids.fetch_add(ID_BLOCK, Ordering::Relaxed);
            self.end_id = self.next_id + ID_BLOCK;
        }
        let id = self.next_id;
        self.next_id += 1;
        let (ptr, len) = slot.fields();
        crate::memcheck::handed_out(ptr, len);
        slot.group
            .store(std::ptr::from_ref(group).cast_mut(), Ordering::Release);
        slot.site
            .store(std::ptr::from_ref(site).cast_mut(), Ordering::Release);
        slot.started.store(crate::clock::raw(), Ordering::Release);
        slot.id.store(id, Ordering::Release);
        slot
    }

    /// Refills the empty free list from finished tasks' slots, growing by half again (at
    /// least one chunk) when fewer than a quarter came back, so sweeps stay rare; returns
    /// one slot.
    #[cold]
    fn refill(&mut self) -> &'static Slot {
        // Acquire: pairs with the finisher's release of 0; the new fields are then written
        // after it in this thread's order, and published to readers by the id's release.
        self.free.extend(
            self.chunks
                .iter()
                .flat_map(|chunk| chunk.iter())
                .filter(|slot| slot.id.load(Ordering::Acquire) == 0),
        );
        let total = self.chunks.len() * CHUNK;
        if self.free.len() < total / 4 + 1 {
            let chunks = (total / 2).div_ceil(CHUNK).max(1);
            let mut all = lock(&table().chunks);
            for _ in 0..chunks {
                let chunk: Box<[Slot]> = (0..CHUNK).map(|_| Slot::new()).collect();
                let chunk: &'static [Slot] = Box::leak(chunk);
                for slot in chunk {
                    let (ptr, len) = slot.fields();
                    crate::memcheck::released(ptr, len);
                }
                self.chunks.push(chunk);
                all.push(chunk);
                self.free.extend(chunk.iter().rev());
            }
        }
        self.free.pop().expect("the free list was just refilled")
    }
}

/// Records a task's start, and its outcome when finished or dropped.
struct TaskGuard {
    slot: &'static Slot,
    group: &'static Group,
}

impl TaskGuard {
    fn start(name: &'static str, site: &'static Location<'static>) -> TaskGuard {
        let started = SPAWNER.try_with(|s| {
            let s = &mut *s.borrow_mut();
            let group = s.count(name);
            let slot = s.slab.get_or_insert_with(Slab::adopt).enter(group, site);
            TaskGuard { slot, group }
        });
        started.unwrap_or_else(|_| {
            // The thread is being torn down: count on the shared cells, and borrow a slab
            // for this one entry.
            let group = group_slow(name);
            group.spawned.inc();
            let mut slab = Slab::adopt();
            let slot = slab.enter(group, site);
            slab.disown();
            TaskGuard { slot, group }
        })
    }

    #[inline]
    fn finish(self, outcome: Outcome) {
        self.record(outcome);
        std::mem::forget(self);
    }

    #[inline]
    fn record(&self, outcome: Outcome) {
        self.group.finished[outcome as usize].inc();
        self.slot.release();
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.record(Outcome::Cancelled);
    }
}

pin_project_lite::pin_project! {
    /// The spawned future: records the outcome; panics are counted, then passed on to tokio.
    struct Tracked<F> {
        #[pin]
        future: F,
        guard: Option<TaskGuard>,
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let fut = this.future;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => {
                if let Some(g) = this.guard.take() {
                    g.finish(Outcome::Ok);
                }
                Poll::Ready(v)
            }
            Err(panic) => {
                if let Some(g) = this.guard.take() {
                    g.finish(Outcome::Panic);
                }
                std::panic::resume_unwind(panic)
            }
        }
    }
}

/// A live tracked task, as listed by [`dump`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskInfo {
    /// Process-unique id, in spawn order.
    pub id: u64,
    /// The task's name.
    pub name: &'static str,
    /// Where it was spawned (`file:line`).
    pub site: String,
    /// Seconds since it was spawned.
    pub age_seconds: f64,
}

/// Every live tracked task, oldest first.
pub fn dump() -> Vec<TaskInfo> {
    let now = crate::clock::raw();
    let chunks: Vec<&'static [Slot]> = lock(&table().chunks).clone();
    let mut out: Vec<_> = chunks
        .iter()
        .flat_map(|chunk| chunk.iter().filter_map(Slot::read))
        .collect();
    out.sort_unstable_by_key(|&(id, _, _, started)| (started, id));
    out.into_iter()
        .map(|(id, group, site, started)| TaskInfo {
            id,
            name: group.name,
            site: format!("{}:{}", site.file(), site.line()),
            age_seconds: crate::clock::nanos_between(started, now) as f64 / 1e9,
        })
        .collect()
}

/// Live tracked tasks grouped by name and spawn site, largest group first:
/// `(count, name, site)`.
pub fn grouped() -> Vec<(usize, &'static str, String)> {
    let mut counts: HashMap<(&'static str, String), usize> = HashMap::new();
    for t in dump() {
        *counts.entry((t.name, t.site)).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().map(|((n, s), c)| (c, n, s)).collect();
    v.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)).then(a.2.cmp(&b.2)));
    v
}

/// Live tracked tasks in all (spawned minus finished, over every name).
pub fn alive() -> usize {
    lock(&groups().by_name)
        .values()
        .map(|g| g.alive() as usize)
        .sum()
}

struct TasksCollector;

impl crate::metrics::Collector for TasksCollector {
    fn collect(&self, out: &mut crate::metrics::Collection) {
        for g in lock(&groups().by_name).values() {
            let alive = g.alive();
            g.alive_max.observe(alive);
            out.push(&names::TASKS_ALIVE, &[&g.label], alive as f64);
            if let Some(w) = out.window() {
                let max = g.alive_max.max(w).max(alive);
                out.push(&names::TASKS_ALIVE_MAX_10S, &[&g.label], max as f64);
            }
        }
    }

    fn tick(&self, tick: &crate::metrics::Tick) {
        for g in lock(&groups().by_name).values() {
            g.alive_max.tick(tick, g.alive());
        }
    }

    fn snapshot(&self, out: &mut crate::metrics::Sections) {
        let mut gs: Vec<&'static Group> = lock(&groups().by_name).values().copied().collect();
        gs.sort_unstable_by_key(|g| g.name);
        for g in gs {
            let alive = g.alive();
            g.alive_max.observe(alive);
            let max_recent = out
                .over(RECENT_SECONDS)
                .map_or(alive, |w| g.alive_max.max(&w).max(alive));
            let window = out.window().map(|w| {
                json!({
                    "alive_max": g.alive_max.max(w).max(alive),
                })
            });
            let f = |o: usize| g.finished[o].get();
            let entry = json!({
                "name": g.name,
                "label": g.label,
                "alive": alive,
                "alive_max_recent": max_recent,
                "spawned": g.spawned.get(),
                "finished": { "ok": f(0), "panic": f(1), "cancelled": f(2) },
            });
            out.push("tasks", crate::metrics::window::attach(entry, window));
        }
    }

    fn inventory(&self, out: &mut crate::metrics::Sections) {
        let mut sites: HashMap<&'static str, Vec<String>> = HashMap::new();
        for (_, name, site) in grouped() {
            sites.entry(name).or_default().push(site);
        }
        let mut gs: Vec<&'static Group> = lock(&groups().by_name).values().copied().collect();
        gs.sort_unstable_by_key(|g| g.name);
        for g in gs {
            out.push(
                "tasks",
                json!({
                    "name": g.name,
                    "label": g.label,
                    "live_spawn_sites": sites.remove(g.name).unwrap_or_default(),
                }),
            );
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A thread that spawned tasks hands its part of the table on when it exits, so threads
    /// coming and going do not grow the table.
    #[test]
    fn slabs_of_exited_threads_are_adopted() {
        let chunks = || lock(&table().chunks).len();
        let before = chunks();
        for _ in 0..32 {
            std::thread::spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap()
                    .block_on(async { spawn("t-orphan", async { 1 }).await.unwrap() })
            })
            .join()
            .unwrap();
        }
        // Without adoption every thread would have added a chunk of its own; other tests in
        // this process may add a few.
        assert!(chunks() - before < 8, "{before} -> {}", chunks());
        assert!(dump().iter().all(|t| t.name != "t-orphan"));
    }

    /// Run only under valgrind by `scripts/test.sh`, which expects memcheck to report an
    /// invalid read here: proof that a freed slot is guarded.
    #[cfg(perfkit_memcheck)]
    #[test]
    #[ignore = "a deliberate read of a freed slot, for memcheck to catch (scripts/test.sh)"]
    fn memcheck_catches_a_read_of_a_freed_slot() {
        let mut slab = Slab::adopt();
        let slot = slab.enter(group_slow("t-freed"), Location::caller());
        slot.release();
        // The slot's memory is the table's (never freed): wrong by its rules, not UB.
        let started = slot.started.load(Ordering::Relaxed);
        std::hint::black_box(started);
        slab.disown();
    }

    /// A slot is read only when its id holds still across the read.
    #[test]
    fn a_slot_is_read_consistently() {
        static SLOT: Slot = Slot::new();
        assert!(SLOT.read().is_none());
        let group = group_slow("t-slot");
        let site = Location::caller();
        SLOT.group
            .store(std::ptr::from_ref(group).cast_mut(), Ordering::Release);
        SLOT.site
            .store(std::ptr::from_ref(site).cast_mut(), Ordering::Release);
        SLOT.started.store(7, Ordering::Release);
        SLOT.id.store(42, Ordering::Release);
        let (id, g, s, started) = SLOT.read().unwrap();
        assert_eq!(
            (id, g.name, s.line(), started),
            (42, "t-slot", site.line(), 7)
        );
        SLOT.id.store(0, Ordering::Release);
        assert!(SLOT.read().is_none());
    }
}
