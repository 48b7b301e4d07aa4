//! `perfkit::queue`: policies, close semantics, cancel safety, blocking use, signals.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use perfkit::metrics::Registry;
use perfkit::queue::{BuildError, Builder, Policy, SendError, SendOutcome, TryRecvError};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn block_policy_waits_for_room_and_try_send_hands_back() {
    let r = Registry::new();
    let (tx, mut rx) = Builder::new("block", 2)
        .registry(&r)
        .build::<u32>()
        .unwrap();
    rt().block_on(async {
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        assert_eq!(tx.try_send(3), Err(SendError::Full(3)));
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(4).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "send must wait while full");
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(waiting.await.unwrap(), Ok(SendOutcome::Enqueued));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(4));
    });
    let text = r.render();
    assert_eq!(
        counter(&text, "perfkit_queue_enqueued_total{queue=\"block\"}"),
        3
    );
    assert_eq!(
        counter(&text, "perfkit_queue_dequeued_total{queue=\"block\"}"),
        3
    );
    assert_eq!(
        counter(&text, "perfkit_queue_rejected_total{queue=\"block\"}"),
        1
    );
}

#[test]
fn reject_policy_hands_the_item_back() {
    let r = Registry::new();
    let (tx, _rx) = Builder::new("reject", 1)
        .policy(Policy::Reject)
        .registry(&r)
        .build::<String>()
        .unwrap();
    rt().block_on(async {
        tx.send("a".into()).await.unwrap();
        let err = tx.send("b".into()).await.unwrap_err();
        assert!(err.is_full());
        assert_eq!(err.to_string(), "queue is full");
        assert_eq!(err.into_inner(), "b");
    });
    assert_eq!(
        counter(
            &r.render(),
            "perfkit_queue_rejected_total{queue=\"reject\"}"
        ),
        1
    );
}

#[test]
fn drop_oldest_evicts_and_counts() {
    let r = Registry::new();
    let (tx, mut rx) = Builder::new("latest", 2)
        .policy(Policy::DropOldest)
        .registry(&r)
        .build::<u32>()
        .unwrap();
    for i in 0..5 {
        let o = tx.try_send(i).unwrap();
        assert_eq!(
            o,
            if i < 2 {
                SendOutcome::Enqueued
            } else {
                SendOutcome::EvictedOldest
            }
        );
    }
    assert_eq!(rx.try_recv(), Ok(3));
    assert_eq!(rx.try_recv(), Ok(4));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    let text = r.render();
    assert_eq!(
        counter(
            &text,
            "perfkit_queue_dropped_total{queue=\"latest\",reason=\"oldest\"}"
        ),
        3
    );
    assert_eq!(
        counter(&text, "perfkit_queue_enqueued_total{queue=\"latest\"}"),
        5
    );
}

#[test]
fn drop_newest_refuses_counts_and_tells_the_sender() {
    let r = Registry::new();
    let (tx, mut rx) = Builder::new("first", 1)
        .policy(Policy::DropNewest)
        .registry(&r)
        .build::<u32>()
        .unwrap();
    assert_eq!(tx.try_send(1), Ok(SendOutcome::Enqueued));
    assert_eq!(rt().block_on(tx.send(2)), Ok(SendOutcome::DroppedNewest));
    assert_eq!(rx.try_recv(), Ok(1));
    let text = r.render();
    assert_eq!(
        counter(
            &text,
            "perfkit_queue_dropped_total{queue=\"first\",reason=\"full\"}"
        ),
        1
    );
    assert_eq!(
        counter(&text, "perfkit_queue_enqueued_total{queue=\"first\"}"),
        1
    );
}

#[test]
fn receiver_drains_after_senders_are_gone() {
    let (tx, mut rx) = Builder::new("drain", 8)
        .registry(&Registry::new())
        .build::<u32>()
        .unwrap();
    let tx2 = tx.clone();
    tx.try_send(1).unwrap();
    tx2.try_send(2).unwrap();
    drop(tx);
    assert_eq!(rx.try_recv(), Ok(1));
    drop(tx2);
    assert_eq!(rx.try_recv(), Ok(2));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
    assert_eq!(rt().block_on(rx.recv()), None);
}

#[test]
fn dropping_the_receiver_fails_senders_and_counts_what_was_left() {
    let r = Registry::new();
    let (tx, rx) = Builder::new("orphan", 4)
        .registry(&r)
        .build::<u32>()
        .unwrap();
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    drop(rx);
    assert!(tx.is_closed());
    assert_eq!(tx.try_send(3), Err(SendError::Closed(3)));
    assert_eq!(
        counter(
            &r.render(),
            "perfkit_queue_dropped_total{queue=\"orphan\",reason=\"closed\"}"
        ),
        2
    );
}

#[test]
fn send_timeout_waits_for_room_at_most_its_time_then_hands_the_item_back() {
    let r = Registry::new();
    let (tx, mut rx) = Builder::new("patient", 1)
        .registry(&r)
        .build::<u32>()
        .unwrap();
    rt().block_on(async {
        tx.send(1).await.unwrap();
        // Nobody makes room: refused after the timeout, the item handed back.
        let started = tokio::time::Instant::now();
        let refused = tx
            .send_timeout(2, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(refused, SendError::Timeout(2));
        assert!(refused.is_timeout() && !refused.is_full());
        assert_eq!(
            refused.to_string(),
            "timed out waiting for room in the queue"
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        // Room comes up in time: sent.
        let tx2 = tx.clone();
        let waiting =
            tokio::spawn(async move { tx2.send_timeout(3, Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(waiting.await.unwrap(), Ok(SendOutcome::Enqueued));
        // With room, even a zero timeout sends.
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(
            tx.send_timeout(4, Duration::ZERO).await,
            Ok(SendOutcome::Enqueued)
        );
        // A timed-out sender does not keep the room a wake-up gave it: the next one gets it.
        let tx3 = tx.clone();
        let next = tokio::spawn(async move { tx3.send(5).await });
        let _ = tx.send_timeout(6, Duration::from_millis(20)).await;
        assert_eq!(rx.recv().await, Some(4));
        assert_eq!(next.await.unwrap(), Ok(SendOutcome::Enqueued));
    });
    let text = r.render();
    assert_eq!(
        counter(&text, "perfkit_queue_rejected_total{queue=\"patient\"}"),
        2
    );
    assert_eq!(
        counter(&text, "perfkit_queue_enqueued_total{queue=\"patient\"}"),
        4
    );
}

#[test]
fn discard_counts_queued_items_as_closed_and_held_ones_as_shutdown() {
    let r = Registry::new();
    let (tx, mut rx) = Builder::new("given-up", 8)
        .registry(&r)
        .build::<u32>()
        .unwrap();
    rt().block_on(async {
        for i in 0..6 {
            tx.send(i).await.unwrap();
        }
        let mut taken = Vec::new();
        assert_eq!(rx.recv_many(&mut taken, 2).await, 2);
        assert_eq!(rx.discard(taken.len()), 6);
        assert!(tx.is_closed());
        assert_eq!(tx.send(9).await, Err(SendError::Closed(9)));
        assert_eq!(rx.recv().await, None);
    });
    let text = r.render();
    let dropped = |reason: &str| {
        counter(
            &text,
            &format!("perfkit_queue_dropped_total{{queue=\"given-up\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!((dropped("closed"), dropped("shutdown")), (4, 2));
    // The identity still holds: the two held items were dequeued first.
    let enqueued = counter(&text, "perfkit_queue_enqueued_total{queue=\"given-up\"}");
    let dequeued = counter(&text, "perfkit_queue_dequeued_total{queue=\"given-up\"}");
    assert_eq!(enqueued, dequeued + dropped("closed"));
}

#[test]
fn close_wakes_waiting_senders_and_keeps_items_receivable() {
    let (tx, mut rx) = Builder::new("close", 1)
        .registry(&Registry::new())
        .build::<u32>()
        .unwrap();
    rt().block_on(async {
        tx.send(1).await.unwrap();
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(2).await });
        tokio::task::yield_now().await;
        rx.close();
        assert_eq!(waiting.await.unwrap(), Err(SendError::Closed(2)));
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, None);
    });
}

#[test]
fn a_cancelled_waiting_sender_passes_its_wakeup_on() {
    let (tx, mut rx) = Builder::new("cancel", 1)
        .registry(&Registry::new())
        .build::<u32>()
        .unwrap();
    rt().block_on(async {
        tx.try_send(0).unwrap();
        let (a, b) = (tx.clone(), tx.clone());
        let first = tokio::spawn(async move { a.send(1).await });
        tokio::task::yield_now().await;
        let second = tokio::spawn(async move { b.send(2).await });
        tokio::task::yield_now().await;
        // Free a slot (waking `first`), then cancel `first` before it runs.
        assert_eq!(rx.try_recv(), Ok(0));
        first.abort();
        let _ = first.await;
        let sent = tokio::time::timeout(Duration::from_secs(5), second).await;
        assert_eq!(
            sent.expect("second sender never woke").unwrap(),
            Ok(SendOutcome::Enqueued)
        );
        assert_eq!(rx.recv().await, Some(2));
    });
}

#[test]
fn blocking_send_and_recv_across_threads() {
    let (tx, mut rx) = Builder::new("threads", 4)
        .registry(&Registry::new())
        .build::<u64>()
        .unwrap();
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..10_000u64 {
                    tx.send_blocking(p * 1_000_000 + i).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut last = [None::<u64>; 2];
    let mut n = 0;
    while let Some(v) = rx.recv_blocking() {
        let p = (v / 1_000_000) as usize;
        assert!(last[p].is_none_or(|l| l < v), "FIFO per producer broken");
        last[p] = Some(v);
        n += 1;
    }
    assert_eq!(n, 20_000);
    for p in producers {
        p.join().unwrap();
    }
}

#[test]
fn recv_many_takes_a_batch_under_one_lock() {
    let (tx, mut rx) = Builder::new("many", 16)
        .registry(&Registry::new())
        .build::<u32>()
        .unwrap();
    for i in 0..10 {
        tx.try_send(i).unwrap();
    }
    let mut buf = Vec::new();
    assert_eq!(rt().block_on(rx.recv_many(&mut buf, 4)), 4);
    assert_eq!(buf, [0, 1, 2, 3]);
    drop(tx);
    assert_eq!(rt().block_on(rx.recv_many(&mut buf, 100)), 6);
    assert_eq!(rt().block_on(rx.recv_many(&mut buf, 100)), 0);
}

#[test]
fn signals_gauges_snapshot_and_inventory() {
    let r = Registry::new();
    let builder = Builder::new("signals", 10).registry(&r);
    let line = line!() + 1; // the location recorded is that of `build`
    let (tx, mut rx) = builder.build::<u32>().unwrap();
    for i in 0..7 {
        tx.try_send(i).unwrap();
    }
    for _ in 0..3 {
        rx.try_recv().unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    let text = r.render();
    assert!(
        text.contains("perfkit_queue_depth{queue=\"signals\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("perfkit_queue_capacity{queue=\"signals\"} 10"),
        "{text}"
    );
    let age: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("perfkit_queue_oldest_age_seconds{queue=\"signals\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.015..5.0).contains(&age), "oldest age {age}");
    assert!(
        text.contains("perfkit_queue_wait_seconds_count{queue=\"signals\"} 3"),
        "{text}"
    );

    let snap = r.snapshot();
    let q = &snap["queues"][0];
    assert_eq!(q["name"], "signals");
    assert_eq!(q["depth"], 4);
    assert_eq!(q["saturation"], 0.4);
    assert_eq!(q["high_water"], 7, "the deepest the queue has been");
    assert_eq!(q["enqueued"], 7);
    assert_eq!(q["dequeued"], 3);
    assert_eq!(q["wait_seconds"]["count"], 3);
    assert!(q["wait_seconds"]["p99"].as_f64().unwrap() >= 0.0);
    // Reading changes nothing another reader sees.
    assert_eq!(r.snapshot()["queues"][0]["high_water"], 7);
    // The peak was a moment ago: in the last second's window. The three waits were
    // recorded before this registry's first tick (its first scrape above): windows start
    // there, so they are its past.
    let w = r.snapshot_window(1);
    let q = &w["queues"][0]["window"];
    assert_eq!(q["depth_max"], 7, "{w}");
    assert_eq!(q["saturation_max"], 0.7);
    assert_eq!(q["wait_seconds"]["count"], 0);
    assert_eq!(w["window"]["seconds"], 1);
    rx.try_recv().unwrap();
    let w = r.snapshot_window(1);
    assert_eq!(w["queues"][0]["window"]["wait_seconds"]["count"], 1, "{w}");

    let inv = r.inventory();
    let q = &inv["queues"][0];
    assert_eq!(q["capacity"], 10);
    assert_eq!(q["policy"], "block");
    assert_eq!(q["warn_at"], serde_json::json!([0.5, 0.8]));
    assert_eq!(q["source"], format!("{}:{line}", file!()));
    drop((tx, rx));
    assert_eq!(
        r.snapshot()["queues"],
        serde_json::json!([]),
        "a dropped queue disappears"
    );
}

#[test]
fn bad_configurations_are_errors() {
    assert!(matches!(
        Builder::new("z", 0).build::<u8>(),
        Err(BuildError::ZeroCapacity { .. })
    ));
    assert!(matches!(
        Builder::new("", 1).build::<u8>(),
        Err(BuildError::EmptyName)
    ));
    let e = Builder::new("t", 4)
        .warn_at(&[0.5, 1.5])
        .build::<u8>()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "queue \"t\": warning threshold 1.5 is not in (0, 1]"
    );
    assert_eq!("drop-oldest".parse::<Policy>(), Ok(Policy::DropOldest));
    let e = "fifo".parse::<Policy>().unwrap_err();
    assert!(
        e.to_string()
            .contains("expected block, reject, drop_oldest or drop_newest")
    );
}

#[test]
#[should_panic(expected = "capacity must be at least 1")]
fn bounded_panics_on_zero_capacity() {
    let _ = perfkit::queue::bounded::<u8>("zero", 0);
}

/// Collects what `tracing` logs, for the warning test.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn warnings_at_thresholds_are_rate_limited() {
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let (tx, mut rx) = Builder::new("warned", 10)
            .registry(&Registry::new())
            .build::<u32>()
            .unwrap();
        for round in 0..2 {
            for i in 0..10 {
                tx.try_send(round * 10 + i).unwrap();
            }
            while rx.try_recv().is_ok() {}
        }
    });
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text.matches("perfkit queue is 50% full").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("perfkit queue is 80% full").count(),
        1,
        "{text}"
    );
    assert!(text.contains("queue=warned"), "{text}");
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        TrySend(u8),
        Recv,
        Close,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..2).prop_map(Op::TrySend),
            4 => Just(Op::Recv),
            1 => Just(Op::Close),
        ]
    }

    fn policy() -> impl Strategy<Value = Policy> {
        prop_oneof![
            Just(Policy::Block),
            Just(Policy::Reject),
            Just(Policy::DropOldest),
            Just(Policy::DropNewest)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// enqueued = dequeued + dropped{oldest} + remaining, exactly, whatever the sequence;
        /// refused items were handed back or counted; each producer's items stay in order.
        #[test]
        fn accounting_is_exact_and_fifo_per_producer(
            policy in policy(),
            cap in 1usize..6,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let r = Registry::new();
            let (tx, mut rx) = Builder::new("prop", cap).policy(policy).registry(&r).build::<(u8, u32)>().unwrap();
            let senders = [tx.clone(), tx];
            let mut seq = [0u32; 2];
            let mut last = [None::<u32>; 2];
            let (mut handed_back, mut received, mut dropped_newest) = (0u64, 0u64, 0u64);
            for op in ops {
                match op {
                    Op::TrySend(p) => {
                        seq[p as usize] += 1;
                        match senders[p as usize].try_send((p, seq[p as usize])) {
                            Ok(SendOutcome::DroppedNewest) => dropped_newest += 1,
                            Ok(_) => {}
                            Err(e) => { let _ = e.into_inner(); handed_back += 1; }
                        }
                    }
                    Op::Recv => if let Ok((p, s)) = rx.try_recv() {
                        prop_assert!(last[p as usize].is_none_or(|l| l < s), "FIFO broken for producer {}", p);
                        last[p as usize] = Some(s);
                        received += 1;
                    },
                    Op::Close => rx.close(),
                }
            }
            let snap = r.snapshot();
            let q = &snap["queues"][0];
            let n = |v: &serde_json::Value| v.as_u64().unwrap();
            let remaining = rx.len() as u64;
            prop_assert_eq!(n(&q["dequeued"]), received);
            prop_assert_eq!(n(&q["enqueued"]), n(&q["dequeued"]) + n(&q["dropped"]["oldest"]) + remaining);
            prop_assert_eq!(n(&q["dropped"]["full"]), dropped_newest);
            prop_assert!(n(&q["rejected"]) <= handed_back);
            prop_assert!(remaining as usize <= cap);
            let attempted: u64 = seq.iter().map(|&s| u64::from(s)).sum();
            prop_assert_eq!(attempted, n(&q["enqueued"]) + dropped_newest + handed_back);
            drop(rx);
            let after = r.snapshot();
            prop_assert_eq!(n(&after["queues"][0]["dropped"]["closed"]), remaining);
        }
    }
}
