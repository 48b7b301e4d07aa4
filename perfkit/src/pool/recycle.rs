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
struct Block(NonNull<u8>);

// SAFETY: a block is plain memory with no contents anyone else can reach.
unsafe impl Send for Block {}

type Batches = [Vec<Vec<Block>>; CLASSES.len()];

fn shared() -> &'static Mutex<Batches> {
    static SHARED: Mutex<Batches> = Mutex::new([const { Vec::new() }; CLASSES.len()]);
    &SHARED
}

/// A thread's free lists, one per class.
struct Local([Vec<Block>; CLASSES.len()]);

impl Drop for Local {
    fn drop(&mut self) {
        for (class, list) in self.0.iter_mut().enumerate() {
            while !list.is_empty() {
                share(
                    class,
                    list.drain(list.len().saturating_sub(BATCH)..).collect(),
                );
            }
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = const { RefCell::new(Local([const { Vec::new() }; CLASSES.len()])) };
}

/// Puts a batch on the shared stack, or back to the allocator if the stack is full.
fn share(class: usize, batch: Vec<Block>) {
    let mut shared = crate::loom::lock_unpoisoned(shared());
    if shared[class].len() < SHARED_BATCHES {
        shared[class].push(batch);
    } else {
        drop(shared);
        for block in batch {
            free_block(class, block);
        }
    }
}

fn free_block(class: usize, Block(ptr): Block) {
    // SAFETY: every block was allocated with its class's layout.
    unsafe { std::alloc::dealloc(ptr.as_ptr(), block_layout(class)) };
}

/// A block of class `class`: recycled if one is at hand, else fresh from the allocator.
#[inline]
pub(super) fn alloc(class: usize) -> NonNull<u8> {
    let got = LOCAL.try_with(|local| {
        let mut local = local.borrow_mut();
        let list = &mut local.0[class];
        if list.is_empty() {
            if let Some(batch) = crate::loom::lock_unpoisoned(shared())[class].pop() {
                *list = batch;
            }
        }
        list.pop()
    });
    match got {
        Ok(Some(Block(ptr))) => ptr,
        _ => {
            let layout = block_layout(class);
            // SAFETY: the layout has a non-zero size.
            let ptr = unsafe { std::alloc::alloc(layout) };
            NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
        }
    }
}

/// Gives back a block [`alloc`] returned for `class`.
///
/// # Safety
/// `ptr` came from [`alloc`] with this `class`, and nothing uses it any more.
#[inline]
pub(super) unsafe fn free(class: usize, ptr: NonNull<u8>) {
    let kept = LOCAL.try_with(|local| {
        let mut local = local.borrow_mut();
        let list = &mut local.0[class];
        list.push(Block(ptr));
        if list.len() >= 2 * BATCH {
            share(class, list.drain(BATCH..).collect());
        }
    });
    if kept.is_err() {
        free_block(class, Block(ptr));
    }
}

/// Blocks of `class` the calling thread holds in its free list.
#[cfg(all(test, not(loom)))]
pub(super) fn held_here(class: usize) -> usize {
    LOCAL.with(|l| l.borrow().0[class].len())
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn held(class: usize) -> (usize, usize) {
        let local = LOCAL.with(|l| l.borrow().0[class].len());
        let shared = crate::loom::lock_unpoisoned(shared())[class].len();
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
