//! The line of senders waiting for room, shared by the queue and the worker pool: FIFO,
//! each waiter known by an id it keeps across polls, so it can refresh its waker, leave the
//! line, or learn that it was already woken.

use std::collections::VecDeque;
use std::task::Waker;

#[derive(Debug, Default)]
pub(crate) struct WaitList {
    list: VecDeque<(u64, Waker)>,
    next: u64,
}

impl WaitList {
    /// Puts the waiter whose id is in `slot` in line (giving it an id on its first wait), or
    /// refreshes its waker if it is still in line. Returns whether it joined the line (it was
    /// not in it), so callers can keep a count of waiters.
    pub(crate) fn register(&mut self, slot: &mut Option<u64>, waker: &Waker) -> bool {
        if let Some(id) = *slot {
            if let Some((_, w)) = self.list.iter_mut().find(|(i, _)| *i == id) {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
                return false;
            }
            // Woken, but found no room again: back in line.
            self.list.push_back((id, waker.clone()));
            return true;
        }
        let id = self.next;
        self.next += 1;
        self.list.push_back((id, waker.clone()));
        *slot = Some(id);
        true
    }

    /// Takes waiter `id` out of line. Returns whether it was still in line; `false` means it
    /// had been woken (popped) already.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        match self.list.iter().position(|(i, _)| *i == id) {
            Some(pos) => {
                self.list.remove(pos);
                true
            }
            None => false,
        }
    }

    /// The waker of the waiter first in line, taking it out of line.
    pub(crate) fn pop(&mut self) -> Option<Waker> {
        self.list.pop_front().map(|(_, w)| w)
    }

    /// Whether nobody is in line.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every waiter's waker, emptying the line.
    pub(crate) fn drain(&mut self) -> Vec<Waker> {
        self.list.drain(..).map(|(_, w)| w).collect()
    }
}
