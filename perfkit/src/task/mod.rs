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
//! let handle = perfkit::task::spawn("doc-worker", async { 40 + 2 });
//! assert_eq!(handle.await.unwrap(), 42);
//! # });
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::panic::{AssertUnwindSafe, Location};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use serde_json::json;
use tokio::task::JoinHandle;

use crate::metrics::{Counter, OVERFLOW_LABEL, Registry, names};

/// Polls kept for the snapshot's "largest alive count over the last polls".
const RECENT_POLLS: usize = 60;

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
    tokio::task::spawn_blocking(move || {
        let mut guard = guard;
        match std::panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => {
                guard.finish(Outcome::Ok);
                v
            }
            Err(panic) => {
                guard.finish(Outcome::Panic);
                std::panic::resume_unwind(panic)
            }
        }
    })
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
    recent_alive: Mutex<std::collections::VecDeque<u64>>,
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

thread_local! {
    // Recently used groups, compared by the name's address: a spawn takes no lock once its
    // name has been seen on this thread.
    static CACHE: RefCell<Vec<(&'static str, &'static Group)>> = const { RefCell::new(Vec::new()) };
}

const CACHE_SLOTS: usize = 16;

fn group(name: &'static str) -> &'static Group {
    let cached = CACHE.with(|c| {
        c.borrow()
            .iter()
            .find(|(n, _)| std::ptr::eq(*n, name))
            .map(|(_, g)| *g)
    });
    if let Some(g) = cached {
        return g;
    }
    let g = group_slow(name);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() == CACHE_SLOTS {
            c.remove(0);
        }
        c.push((name, g));
    });
    g
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
        recent_alive: Mutex::default(),
    }));
    map.insert(name, g);
    g
}

/// One live task in the registry of live tasks.
#[derive(Clone)]
struct Live {
    name: &'static str,
    site: &'static Location<'static>,
    started: u64,
}

/// Slots per chunk of a shard's cells.
const CHUNK: usize = 256;

/// One shard of the live-task registry.
///
/// Each slot has a cell holding its task's id while the task lives and 0 once it finished.
/// The cells live in leaked chunks with stable addresses, so a finishing task (usually on
/// another thread than the one that spawned it) clears its cell with one store and takes no
/// lock. The spawning thread, which owns the shard's lock almost exclusively, reuses slots
/// from its free list and, when that runs dry, sweeps cleared cells back into it (growing
/// when the sweep finds too few), so the cost stays O(1) per spawn amortised. Memory is
/// bounded by the peak number of live tasks per shard.
#[derive(Default)]
struct Slab {
    /// Name, site and start of the task in each slot handed out and not yet swept back
    /// (`None` for a free slot); its task is alive while the slot's cell is non-zero. Only
    /// touched under the shard's lock.
    meta: Vec<Option<Live>>,
    chunks: Vec<&'static [AtomicU64]>,
    free: Vec<u32>,
    next_seq: u64,
}

impl Slab {
    fn cell(&self, slot: usize) -> &'static AtomicU64 {
        &self.chunks[slot / CHUNK][slot % CHUNK]
    }

    /// A free slot: from the free list, else from finished tasks' slots, else new ones.
    fn take_slot(&mut self) -> usize {
        if let Some(slot) = self.free.pop() {
            return slot as usize;
        }
        let total = self.meta.len();
        for slot in 0..total {
            if self.meta[slot].is_some() && self.cell(slot).load(Ordering::Acquire) == 0 {
                self.meta[slot] = None;
                self.free.push(slot as u32);
            }
        }
        if self.free.len() < total / 4 + 1 {
            // Few finished: grow by half again (at least one chunk), keeping sweeps rare.
            let chunks = (total / 2).div_ceil(CHUNK).max(1);
            for _ in 0..chunks {
                let chunk: Box<[AtomicU64]> = (0..CHUNK).map(|_| AtomicU64::new(0)).collect();
                self.chunks.push(Box::leak(chunk));
            }
            let new_total = self.chunks.len() * CHUNK;
            self.meta.resize(new_total, None);
            self.free.extend((total as u32..new_total as u32).rev());
        }
        self.free.pop().expect("the free list was just refilled") as usize
    }
}

/// Live tasks, sharded by the spawning thread so concurrent spawns rarely share a lock.
struct LiveTasks {
    shards: Box<[parking_lot::Mutex<Slab>]>,
}

fn live() -> &'static LiveTasks {
    static LIVE: OnceLock<LiveTasks> = OnceLock::new();
    LIVE.get_or_init(|| LiveTasks {
        shards: (0..crate::metrics::shard::shard_count())
            .map(|_| parking_lot::Mutex::default())
            .collect(),
    })
}

/// Records a task's start, and its outcome when finished or dropped.
struct TaskGuard {
    cell: &'static AtomicU64,
    group: &'static Group,
    done: bool,
}

impl TaskGuard {
    fn start(name: &'static str, site: &'static Location<'static>) -> TaskGuard {
        let group = group(name);
        group.spawned.inc();
        let shard = crate::metrics::shard::current_shard();
        let entry = Live {
            name,
            site,
            started: crate::clock::raw(),
        };
        let mut slab = live().shards[shard].lock();
        // Ids: shard in the top bits, a per-shard sequence below (from 1, as 0 marks a
        // finished task); unique, and increasing per spawning thread.
        slab.next_seq += 1;
        let id = ((shard as u64) << 48) | slab.next_seq;
        let slot = slab.take_slot();
        slab.meta[slot] = Some(entry);
        let cell = slab.cell(slot);
        cell.store(id, Ordering::Release);
        drop(slab);
        TaskGuard {
            cell,
            group,
            done: false,
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        self.group.finished[outcome as usize].inc();
        self.cell.store(0, Ordering::Release);
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.finish(Outcome::Cancelled);
    }
}

/// The spawned future: records the outcome; panics are counted, then passed on to tokio.
struct Tracked<F> {
    future: F,
    guard: Option<TaskGuard>,
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned (never moved out of `self`); `guard` is
        // not pinned and only reached through `&mut`.
        let this = unsafe { self.get_unchecked_mut() };
        let fut = unsafe { Pin::new_unchecked(&mut this.future) };
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => {
                if let Some(mut g) = this.guard.take() {
                    g.finish(Outcome::Ok);
                }
                Poll::Ready(v)
            }
            Err(panic) => {
                if let Some(mut g) = this.guard.take() {
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
    let mut out: Vec<(u64, Live)> = Vec::new();
    for shard in live().shards.iter() {
        let slab = shard.lock();
        for (slot, meta) in slab.meta.iter().enumerate() {
            let Some(meta) = meta else { continue };
            let id = slab.cell(slot).load(Ordering::Acquire);
            if id != 0 {
                out.push((id, meta.clone()));
            }
        }
    }
    out.sort_unstable_by_key(|(id, t)| (t.started, *id));
    out.into_iter()
        .map(|(id, t)| TaskInfo {
            id,
            name: t.name,
            site: format!("{}:{}", t.site.file(), t.site.line()),
            age_seconds: crate::clock::nanos_between(t.started, now) as f64 * 1e-9,
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
            out.push(&names::TASKS_ALIVE, &[&g.label], g.alive() as f64);
        }
    }

    fn snapshot(&self, out: &mut crate::metrics::Sections) {
        let mut gs: Vec<&'static Group> = lock(&groups().by_name).values().copied().collect();
        gs.sort_unstable_by_key(|g| g.name);
        for g in gs {
            let alive = g.alive();
            let max_recent = {
                let mut recent = lock(&g.recent_alive);
                if recent.len() == RECENT_POLLS {
                    recent.pop_front();
                }
                recent.push_back(alive);
                recent.iter().copied().max().unwrap_or(alive)
            };
            let f = |o: usize| g.finished[o].get();
            out.push(
                "tasks",
                json!({
                    "name": g.name,
                    "label": g.label,
                    "alive": alive,
                    "alive_max_recent": max_recent,
                    "spawned": g.spawned.get(),
                    "finished": { "ok": f(0), "panic": f(1), "cancelled": f(2) },
                }),
            );
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
