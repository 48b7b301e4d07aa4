//! A bounded lock-free multi-producer, multi-consumer ring (Dmitry Vyukov's design, as in
//! crossbeam's `ArrayQueue`), where each slot also carries its item's enqueue time.
//!
//! Every slot has a sequence number. A slot at position `pos` is free for the producer that
//! claims `pos` when its sequence equals `pos`, and full for the consumer that claims `pos`
//! when it equals `pos + 1`; the consumer hands it back to the next lap by storing
//! `pos + len`. Producers claim positions by advancing `tail`, consumers by advancing `head`,
//! each with one compare-and-swap, so there is no lock and no allocation after construction.

use std::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::loom::{AtomicU64, AtomicUsize, Ordering, UnsafeCell};

struct Slot<T> {
    seq: AtomicUsize,
    /// The item's enqueue time (raw clock), written before `seq` publishes the slot.
    at: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

pub(super) struct Ring<T> {
    slots: Box<[Slot<T>]>,
    mask: usize,
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
}

// SAFETY: a slot's value is written only by the producer that claimed its position and read
// only by the consumer that claimed it after the producer's release store of `seq`; values
// move between threads, so `T: Send` is all that is needed.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// A ring with room for at least `min_capacity` items (rounded up to a power of two).
    pub(super) fn new(min_capacity: usize) -> Self {
        let len = min_capacity.max(2).next_power_of_two();
        Ring {
            slots: (0..len)
                .map(|i| Slot {
                    seq: AtomicUsize::new(i),
                    at: AtomicU64::new(0),
                    value: UnsafeCell::new(MaybeUninit::uninit()),
                })
                .collect(),
            mask: len - 1,
            head: CachePadded::new(AtomicUsize::new(0)),
            tail: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// Appends `value`, or hands it back when the slot at the tail is still in use (full,
    /// or a consumer of the previous lap has not finished taking it yet).
    pub(super) fn push(&self, value: T, at: u64) -> Result<(), T> {
        let mut pos = self.tail.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos) as isize;
            if diff == 0 {
                match self.tail.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: winning the CAS for `pos` while `seq == pos` gives this
                        // thread the slot exclusively until the release store below.
                        slot.value.with_mut(|p| unsafe { (*p).write(value) });
                        slot.at.store(at, Ordering::Relaxed);
                        slot.seq.store(pos.wrapping_add(1), Ordering::Release);
                        return Ok(());
                    }
                    Err(now) => pos = now,
                }
            } else if diff < 0 {
                return Err(value);
            } else {
                pos = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Takes the oldest item with its enqueue time, or `None` when the slot at the head holds
    /// nothing published yet.
    pub(super) fn pop(&self) -> Option<(T, u64)> {
        let mut pos = self.head.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[pos & self.mask];
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos.wrapping_add(1)) as isize;
            if diff == 0 {
                match self.head.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the acquire load saw the producer's release of `pos + 1`,
                        // so the value is initialised, and winning the CAS makes this the
                        // only reader; the store below hands the slot to the next lap.
                        let value = slot.value.with_mut(|p| {
                            // SAFETY: `p` points at the slot's value, which nobody else
                            // touches now (as said).
                            let cell = unsafe { &mut *p };
                            // SAFETY: initialised (as said), and read exactly once.
                            unsafe { cell.assume_init_read() }
                        });
                        let at = slot.at.load(Ordering::Relaxed);
                        slot.seq
                            .store(pos.wrapping_add(self.mask + 1), Ordering::Release);
                        return Some((value, at));
                    }
                    Err(now) => pos = now,
                }
            } else if diff < 0 {
                return None;
            } else {
                pos = self.head.load(Ordering::Relaxed);
            }
        }
    }

    /// How many pops have claimed a position so far (wrapping): the head position.
    #[inline]
    pub(super) fn taken(&self) -> usize {
        self.head.load(Ordering::SeqCst)
    }

    /// Items published or being published (best effort: the two loads are not atomic).
    #[cfg_attr(loom, allow(dead_code))]
    pub(super) fn len(&self) -> usize {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        (tail.wrapping_sub(head) as isize).clamp(0, self.mask as isize + 1) as usize
    }

    /// The enqueue time of the item at the head, if one is published (a best-effort read for
    /// the oldest-age gauge: it may miss an item that is being taken right now).
    #[cfg_attr(loom, allow(dead_code))]
    pub(super) fn head_at(&self) -> Option<u64> {
        let pos = self.head.load(Ordering::Acquire);
        let slot = &self.slots[pos & self.mask];
        if slot.seq.load(Ordering::Acquire) != pos.wrapping_add(1) {
            return None;
        }
        let at = slot.at.load(Ordering::Relaxed);
        (slot.seq.load(Ordering::Acquire) == pos.wrapping_add(1)).then_some(at)
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        while self.pop().is_some() {}
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fifo_with_wraparound_and_full() {
        let r = Ring::new(3); // rounds up to 4
        for lap in 0..5u64 {
            for i in 0..4 {
                r.push(lap * 10 + i, i).unwrap();
            }
            assert_eq!(r.push(99, 0), Err(99));
            assert_eq!(r.head_at(), Some(0));
            for i in 0..4 {
                assert_eq!(r.pop(), Some((lap * 10 + i, i)));
            }
            assert_eq!(r.pop(), None);
            assert_eq!(r.head_at(), None);
        }
    }

    #[test]
    fn drop_releases_queued_items() {
        let item = std::sync::Arc::new(());
        let r = Ring::new(4);
        r.push(item.clone(), 0).unwrap();
        r.push(item.clone(), 0).unwrap();
        assert_eq!(std::sync::Arc::strong_count(&item), 3);
        drop(r);
        assert_eq!(std::sync::Arc::strong_count(&item), 1);
    }

    #[test]
    fn threads_lose_and_duplicate_nothing() {
        let r = std::sync::Arc::new(Ring::new(64));
        let per = 50_000u64;
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        let mut v = p * per + i;
                        while let Err(back) = r.push(v, 0) {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut idle = 0;
                    while idle < 1_000_000 {
                        match r.pop() {
                            Some((v, _)) => {
                                got.push(v);
                                idle = 0;
                            }
                            None => {
                                idle += 1;
                                std::thread::yield_now();
                            }
                        }
                        if got.len() as u64 == 2 * per {
                            break;
                        }
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut all: Vec<u64> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..2 * per).collect::<Vec<_>>());
    }
}
