//! Memory for small job cells, recycled between the threads that free cells (workers) and
//! the threads that allocate them (submitters).
//!
//! A pool's jobs are allocated on one thread and freed on another, the pattern general
//! allocators handle worst: with glibc's, every allocation then pops a chunk the other
//! thread freed with an atomic compare-and-swap. Here each thread keeps a free list per size
//! class, and whole batches of blocks move between threads through one shared stack under
//! a mutex, so a job's memory costs no atomic operation except one lock per batch.
//!
//! Memory held is bounded: a thread keeps fewer than two batches per class, the shared stack
//! at most [`SHARED_BATCHES`] per class (about 480 KiB over all classes); beyond that, blocks
//! go back to the allocator. A thread's blocks are handed to the shared stack (or freed) when
//! it exits. Cells larger than the largest class, or aligned to more than 16 bytes, are
//! boxed as usual.

use std::alloc::Layout;
use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::Mutex;

/// Block sizes served, smallest first.
const CLASSES: [usize; 4] = [64, 128, 256, 512];
/// The alignment of every block.
const ALIGN: usize = 16;
/// Blocks moved between threads at a time.
const BATCH: usize = 32;
/// Batches the shared stack keeps per class.
const SHARED_BATCHES: usize = 16;

/// The size class serving `layout`, if any.
#[inline]
pub(super) fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() > ALIGN {
        return None;
    }
    CLASSES.iter().position(|&size| layout.size() <= size)
}

fn block_layout(class: usize) -> Layout {
    Layout::from_size_align(CLASSES[class], ALIGN).expect("a valid block layout")
}

/// A block of memory owned by whoever holds it.
pub(super) struct Block(NonNull<u8>);

// SAFETY: a block is plain memory with no contents anyone else can reach.
unsafe impl Send for Block {}

pub(super) type Batches = [Vec<Vec<Block>>; CLASSES.len()];

/// The lock around the shared stack: std's for the process-wide exchange, loom's in the
/// loom models of the hand-over.
pub(super) trait Lock: Sync {
    fn with<R>(&self, f: impl FnOnce(&mut Batches) -> R) -> R;
}

impl Lock for Mutex<Batches> {
    fn with<R>(&self, f: impl FnOnce(&mut Batches) -> R) -> R {
        f(&mut crate::loom::lock_unpoisoned(self))
    }
}

#[cfg(loom)]
impl Lock for loom::sync::Mutex<Batches> {
    fn with<R>(&self, f: impl FnOnce(&mut Batches) -> R) -> R {
        f(&mut self.lock().unwrap())
    }
}

/// Where threads hand whole batches of blocks to each other: the stack, and the rules for
/// a thread's own free list around it.
pub(super) struct Exchange<L>(L);

fn shared() -> &'static Exchange<Mutex<Batches>> {
    static SHARED: Exchange<Mutex<Batches>> =
        Exchange(Mutex::new([const { Vec::new() }; CLASSES.len()]));
    &SHARED
}

/// A thread's free lists, one per class.
pub(super) struct Local([Vec<Block>; CLASSES.len()]);

impl Local {
    pub(super) const fn new() -> Local {
        Local([const { Vec::new() }; CLASSES.len()])
    }
}

impl<L: Lock> Exchange<L> {
    #[cfg(all(loom, test))]
    pub(super) fn new(lock: L) -> Self {
        Exchange(lock)
    }

    /// A block of `class` from `local`, refilled with a shared batch when empty.
    fn take(&self, local: &mut Local, class: usize) -> Option<Block> {
        let list = &mut local.0[class];
        if list.is_empty() {
            if let Some(batch) = self.0.with(|b| b[class].pop()) {
                *list = batch;
            }
        }
        list.pop()
    }

    /// Keeps `block` in `local`, sharing a batch once it holds two.
    fn give(&self, local: &mut Local, class: usize, block: Block) {
        let list = &mut local.0[class];
        list.push(block);
        if list.len() >= 2 * BATCH {
            let batch = list.drain(BATCH..).collect();
            self.share(class, batch);
        }
    }

    /// Puts a batch on the shared stack, or back to the allocator if the stack is full.
    fn share(&self, class: usize, batch: Vec<Block>) {
        let full = self.0.with(|b| {
            if b[class].len() < SHARED_BATCHES {
                b[class].push(batch);
                None
            } else {
                Some(batch)
            }
        });
        for block in full.into_iter().flatten() {
            free_block(class, block);
        }
    }

    /// Hands everything `local` holds on, as when its thread exits.
    fn leave(&self, local: &mut Local) {
        for (class, list) in local.0.iter_mut().enumerate() {
            while !list.is_empty() {
                let batch = list.drain(list.len().saturating_sub(BATCH)..).collect();
                self.share(class, batch);
            }
        }
    }
}

/// The calling thread's free lists, handed on when it exits.
struct ThreadLocal(Local);

impl Drop for ThreadLocal {
    fn drop(&mut self) {
        shared().leave(&mut self.0);
    }
}

thread_local! {
    static LOCAL: RefCell<ThreadLocal> = const { RefCell::new(ThreadLocal(Local::new())) };
}

fn free_block(class: usize, Block(ptr): Block) {
    // Back to the allocator, which may write into it: no longer perfkit's to guard.
    crate::memcheck::handed_out(ptr.as_ptr(), CLASSES[class]);
    // SAFETY: every block was allocated with its class's layout.
    unsafe { std::alloc::dealloc(ptr.as_ptr(), block_layout(class)) };
}

fn fresh(class: usize) -> NonNull<u8> {
    let layout = block_layout(class);
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc(layout) };
    NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
}

/// A block of class `class`: recycled if one is at hand, else fresh from the allocator.
#[inline]
pub(super) fn alloc(class: usize) -> NonNull<u8> {
    match LOCAL.try_with(|local| shared().take(&mut local.borrow_mut().0, class)) {
        Ok(Some(Block(ptr))) => {
            crate::memcheck::handed_out(ptr.as_ptr(), CLASSES[class]);
            ptr
        }
        _ => fresh(class),
    }
}

/// Gives back a block [`alloc`] returned for `class`.
///
/// # Safety
/// `ptr` came from [`alloc`] with this `class`, and nothing uses it any more.
#[inline]
pub(super) unsafe fn free(class: usize, ptr: NonNull<u8>) {
    // Under memcheck (`--cfg perfkit_memcheck`): a block released twice is reported here, and
    // any access to it until `alloc` hands it out again.
    crate::memcheck::must_be_held(ptr.as_ptr(), CLASSES[class]);
    crate::memcheck::released(ptr.as_ptr(), CLASSES[class]);
    let kept = LOCAL.try_with(|local| shared().give(&mut local.borrow_mut().0, class, Block(ptr)));
    if kept.is_err() {
        free_block(class, Block(ptr));
    }
}

/// For the loom models: a block from `exchange` (or fresh), and one given back to it.
#[cfg(all(loom, test))]
pub(super) fn take_from<L: Lock>(
    exchange: &Exchange<L>,
    local: &mut Local,
    class: usize,
) -> NonNull<u8> {
    exchange
        .take(local, class)
        .map_or_else(|| fresh(class), |Block(p)| p)
}

/// See [`take_from`].
#[cfg(all(loom, test))]
pub(super) fn give_to<L: Lock>(
    exchange: &Exchange<L>,
    local: &mut Local,
    class: usize,
    ptr: NonNull<u8>,
) {
    exchange.give(local, class, Block(ptr));
}

/// See [`take_from`]: what a thread does when it exits.
#[cfg(all(loom, test))]
pub(super) fn leave<L: Lock>(exchange: &Exchange<L>, local: &mut Local) {
    exchange.leave(local);
}

/// For the loom models: the blocks the shared stack holds, handed back to the allocator.
#[cfg(all(loom, test))]
pub(super) fn drain<L: Lock>(exchange: &Exchange<L>) -> Vec<usize> {
    let batches: Vec<(usize, Vec<Block>)> = exchange.0.with(|b| {
        b.iter_mut()
            .enumerate()
            .flat_map(|(class, list)| list.drain(..).map(move |batch| (class, batch)))
            .collect()
    });
    let mut out = Vec::new();
    for (class, batch) in batches {
        for block in batch {
            out.push(block.0.as_ptr() as usize);
            free_block(class, block);
        }
    }
    out
}

/// The constants the loom models size their runs by.
#[cfg(all(loom, test))]
pub(super) const LOOM_BATCH: usize = BATCH;

/// Blocks of `class` the calling thread holds in its free list.
#[cfg(all(test, not(loom)))]
pub(super) fn held_here(class: usize) -> usize {
    LOCAL.with(|l| l.borrow().0.0[class].len())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Run only under valgrind by `scripts/test.sh`, which expects memcheck to report an
    /// invalid read here: proof that a released block is guarded.
    #[cfg(perfkit_memcheck)]
    #[test]
    #[ignore = "a deliberate read after release, for memcheck to catch (scripts/test.sh)"]
    fn memcheck_catches_a_read_after_release() {
        let class = 0;
        let p = alloc(class);
        // SAFETY: the block is CLASSES[0] bytes, ours until freed.
        unsafe {
            p.as_ptr().write(7);
            free(class, p);
        }
        // SAFETY: the block is still allocated (on this thread's free list) and its first
        // byte initialized: the read is wrong by perfkit's rules, not undefined behaviour.
        let v = unsafe { std::ptr::read_volatile(p.as_ptr()) };
        assert_eq!(v, 7);
    }

    /// As above: a block released twice.
    #[cfg(perfkit_memcheck)]
    #[test]
    #[ignore = "a deliberate double release, for memcheck to catch (scripts/test.sh)"]
    fn memcheck_catches_a_double_release() {
        let class = 1;
        let p = alloc(class);
        // SAFETY: deliberately wrong by `free`'s contract; the block is only pushed twice
        // on this thread's free list, which the test then drains.
        unsafe {
            free(class, p);
            free(class, p);
        }
        let a = alloc(class);
        let b = alloc(class);
        assert_eq!(a, b, "the same block, handed out twice");
        // Both are leaked: the recycler keeps no record of blocks handed out.
    }

    fn held(class: usize) -> (usize, usize) {
        let local = LOCAL.with(|l| l.borrow().0.0[class].len());
        let shared = shared().0.with(|b| b[class].len());
        (local, shared)
    }

    #[test]
    fn classes_cover_small_layouts_only() {
        assert_eq!(class_of(Layout::new::<[u8; 1]>()), Some(0));
        assert_eq!(class_of(Layout::new::<[u64; 8]>()), Some(0));
        assert_eq!(class_of(Layout::new::<[u64; 9]>()), Some(1));
        assert_eq!(class_of(Layout::new::<[u8; 512]>()), Some(3));
        assert_eq!(class_of(Layout::new::<[u8; 513]>()), None);
        #[repr(align(32))]
        struct Wide;
        assert_eq!(class_of(Layout::new::<Wide>()), None);
    }

    /// Blocks freed on one thread serve allocations on another, a batch at a time, and
    /// what a thread and the shared stack hold stays bounded. (Other tests in the process may
    /// use the same class at the same time, so the checks allow for their blocks.)
    #[test]
    fn blocks_move_between_threads_in_batches_and_stay_bounded() {
        let class = CLASSES.len() - 1;
        let blocks: Vec<usize> = (0..4 * BATCH)
            .map(|_| alloc(class).as_ptr() as usize)
            .collect();
        let freed = blocks.clone();
        std::thread::spawn(move || {
            for addr in freed {
                // SAFETY: each block came from `alloc(class)` and is used by nobody.
                unsafe { free(class, NonNull::new(addr as *mut u8).unwrap()) };
                assert!(held(class).0 < 2 * BATCH);
            }
            // Leaving hands the rest to the shared stack.
        })
        .join()
        .unwrap();
        assert!(
            held(class).1 >= 1,
            "the freeing thread's batches are shared"
        );
        let again: Vec<NonNull<u8>> = (0..4 * BATCH).map(|_| alloc(class)).collect();
        let reused = again
            .iter()
            .filter(|p| blocks.contains(&(p.as_ptr() as usize)))
            .count();
        assert!(reused >= BATCH, "{reused} blocks reused");

        // Far more frees than the caches hold: the surplus goes back to the allocator.
        let many: Vec<_> = (0..(SHARED_BATCHES + 4) * BATCH)
            .map(|_| alloc(class))
            .chain(again)
            .collect();
        for ptr in many {
            // SAFETY: from `alloc(class)`, unused.
            unsafe { free(class, ptr) };
        }
        let (local, shared) = held(class);
        assert!(
            local < 2 * BATCH && shared <= SHARED_BATCHES,
            "{local} {shared}"
        );
    }
}
