//! Model checks of the queue's core under every interleaving loom explores:
//! `RUSTFLAGS="--cfg loom" cargo test -p perfkit --lib --release --no-default-features loom`.

use loom::thread;

use super::*;
use crate::metrics::Registry;

#[test]
fn loom_two_producers_one_consumer_lose_and_duplicate_nothing() {
    // Every atomic and lock in the send/receive paths is a branch point; bounding
    // preemptions keeps the search finite while still covering the interleavings that matter
    // (tokio's loom tests do the same).
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(2);
    model.check(|| {
        let registry = Registry::new();
        let (tx, mut rx) = Builder::new("loom", 1)
            .registry(&registry)
            .build::<u32>()
            .unwrap();
        let producers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|v| {
                let tx = tx.clone();
                thread::spawn(move || {
                    loom::future::block_on(tx.send(v)).unwrap();
                })
            })
            .collect();
        drop(tx);
        let mut got = Vec::new();
        while let Some(v) = loom::future::block_on(rx.recv()) {
            assert!(rx.len() <= 1);
            got.push(v);
        }
        for p in producers {
            p.join().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}

#[test]
fn loom_drop_oldest_eviction_racing_a_receive() {
    loom::model(|| {
        let registry = Registry::new();
        let (tx, mut rx) = Builder::new("loom", 1)
            .policy(Policy::DropOldest)
            .registry(&registry)
            .build::<u32>()
            .unwrap();
        tx.try_send(1).unwrap();
        let sender = thread::spawn(move || tx.try_send(2).unwrap());
        let first = rx.try_recv().ok();
        let outcome = sender.join().unwrap();
        let rest = rx.try_recv().ok();
        assert!(rx.is_empty());
        let received: Vec<u32> = first.into_iter().chain(rest).collect();
        // Item 1 was received or evicted (and counted), never both and never neither;
        // item 2 always arrives, exactly once.
        match outcome {
            SendOutcome::EvictedOldest => assert_eq!(received, [2]),
            SendOutcome::Enqueued => assert_eq!(received, [1, 2]),
            SendOutcome::DroppedNewest => panic!("DropOldest never drops the new item"),
        }
    });
}

#[test]
fn loom_close_racing_a_send_loses_nothing() {
    loom::model(|| {
        let registry = Registry::new();
        let (tx, mut rx) = Builder::new("loom", 2)
            .registry(&registry)
            .build::<u32>()
            .unwrap();
        let sender = thread::spawn(move || tx.try_send(7));
        rx.close();
        let received = rx.try_recv().ok();
        match sender.join().unwrap() {
            Ok(SendOutcome::Enqueued) => {
                // Sent before the close, or received after the join below: either way it
                // is still there to be received.
                let later = received.or_else(|| rx.try_recv().ok());
                assert_eq!(later, Some(7));
            }
            Err(SendError::Closed(v)) => {
                assert_eq!(v, 7); // handed back
                assert_eq!(received, None);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    });
}

#[test]
fn loom_held_items_keep_the_bound_and_wake_the_waiting_sender() {
    // The receiver takes the queued item into its own buffer and hands it out without the
    // lock; the second send must wait until it is handed out, and must be woken when it is.
    // (Two items through a queue of one: more would overflow loom's store history for the
    // one occupancy word every step writes.)
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let registry = Registry::new();
        let (tx, mut rx) = Builder::new("loom", 1)
            .registry(&registry)
            .build::<u32>()
            .unwrap();
        let producer = thread::spawn(move || {
            for v in 1..=2 {
                loom::future::block_on(tx.send(v)).unwrap();
            }
        });
        let mut got = Vec::new();
        while let Some(v) = loom::future::block_on(rx.recv()) {
            assert!(rx.len() <= 1, "the bound holds with items held");
            got.push(v);
        }
        producer.join().unwrap();
        assert_eq!(got, [1, 2]);
    });
}
