//! `/debug/pprof/mutex`: the contention profile of perfkit's locks and semaphores, read by
//! the real `go tool pprof`, as text (`debug=1`), as a delta (`seconds=N`), and bad
//! parameters answered with a 400 and a reason.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn server() -> perfkit::DebugServer {
    perfkit::Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .facade(false)
        .profile_max_seconds(10)
        .mutex_profile_rate(1)
        .start()
        .expect("debug server starts")
}

/// Takes the lock in a loop from its own frame, holding it long enough that the other
/// threads doing the same wait for it.
#[inline(never)]
fn contend_on_the_ledger(lock: &perfkit::sync::blocking::Mutex<u64>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let mut g = lock.lock();
        for _ in 0..2_000 {
            *g = std::hint::black_box(g.wrapping_mul(31).wrapping_add(7));
        }
    }
}

fn contenders(
    lock: &Arc<perfkit::sync::blocking::Mutex<u64>>,
) -> (Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = (0..3)
        .map(|_| {
            let (lock, stop) = (Arc::clone(lock), Arc::clone(&stop));
            std::thread::spawn(move || contend_on_the_ledger(&lock, &stop))
        })
        .collect();
    (stop, threads)
}

fn go_pprof(args: &[&str]) -> String {
    let tmp = std::env::temp_dir().join(format!("perfkit-pprof-mutex-{}", std::process::id()));
    let (ok, stdout, stderr) = common::go_pprof(args, &tmp);
    assert!(ok, "go tool pprof {args:?} failed:\n{stdout}\n{stderr}");
    eprintln!("go tool pprof {args:?}:\n{stdout}\n{stderr}");
    stdout + &stderr
}

#[test]
#[ignore = "needs go (Debian golang-go); scripts/test.sh installs it and runs ignored tests"]
fn go_tool_pprof_reads_the_contention_profile_and_names_the_contending_caller() {
    let srv = server();
    let addr = srv.local_addr();
    let ledger = Arc::new(perfkit::sync::blocking::Mutex::new("ledger", 0u64));
    let (stop, threads) = contenders(&ledger);

    // The delta over 3 s, straight from the URL, while the threads contend.
    let url = format!("http://{addr}/debug/pprof/mutex?seconds=3");
    let top = go_pprof(&["-top", "-sample_index=delay", &url]);
    assert!(top.contains("Type: delay"), "{top}");
    assert!(
        top.contains("contend_on_the_ledger"),
        "the waiting caller is named:\n{top}"
    );
    assert!(
        top.contains("lock \"ledger\" (blocking_mutex)"),
        "the lock is named:\n{top}"
    );
    let counts = go_pprof(&[
        "-top",
        "-sample_index=contentions",
        &url.replace("seconds=3", "seconds=1"),
    ]);
    assert!(counts.contains("Type: contentions"), "{counts}");
    assert!(counts.contains("contend_on_the_ledger"), "{counts}");

    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }

    // The cumulative profile as Go's legacy text.
    let text = common::get(addr, "/debug/pprof/mutex?debug=1");
    assert_eq!(text.status, 200);
    let body = text.text();
    assert!(
        body.starts_with("--- mutex:\ncycles/second=1000000000\nsampling period=1\n"),
        "{body}"
    );
    let first = body.lines().nth(3).unwrap_or_default();
    let mut fields = first.split_whitespace();
    let delay: u64 = fields.next().unwrap().parse().unwrap();
    let count: u64 = fields.next().unwrap().parse().unwrap();
    assert!(delay > 0 && count > 0, "{first}");
    assert!(body.contains("contend_on_the_ledger"), "{body}");

    // A delta over a quiet second is empty, but still a profile pprof reads.
    let quiet = go_pprof(&[
        "-top",
        &format!("http://{addr}/debug/pprof/mutex?seconds=1"),
    ]);
    assert!(!quiet.contains("contend_on_the_ledger"), "{quiet}");
    assert!(
        !top.contains(" 0x0\n"),
        "no empty frame at the stack's root:\n{top}"
    );
    srv.shutdown();
}

#[test]
fn bad_parameters_get_a_400_with_a_reason() {
    let srv = server();
    let addr = srv.local_addr();
    for (query, says) in [
        ("seconds=0", "positive"),
        ("seconds=-1", "positive"),
        ("seconds=x", "positive"),
        ("seconds=11", "maximum of 10"),
        ("seconds=1&debug=1", "incompatible"),
        ("debug=7", "expected 0 or 1"),
        ("bogus=1", "bogus"),
    ] {
        let r = common::get(addr, &format!("/debug/pprof/mutex?{query}"));
        assert_eq!(r.status, 400, "{query}");
        let body = r.text();
        assert!(body.contains(says), "{query}: {body}");
        assert_eq!(
            body.trim_end().lines().count(),
            1,
            "{query}: one line: {body}"
        );
    }
    let index = common::get(addr, "/debug/pprof/").text();
    assert!(index.contains("href=\"mutex?debug=1\""), "{index}");
    srv.shutdown();
}

#[test]
fn a_semaphore_wait_shows_in_the_profile_text() {
    let srv = server();
    let addr = srv.local_addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = Arc::new(perfkit::sync::Semaphore::new("profiled_cap", 1));
        let held = s.acquire_owned().await.unwrap();
        let s2 = Arc::clone(&s);
        let waiter = tokio::spawn(async move { s2.acquire().await.map(drop) });
        // Once the waiter waits, hold the permit 30 ms longer.
        while !perfkit::metrics::render()
            .contains("perfkit_semaphore_waiters{semaphore=\"profiled_cap\"} 1")
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(held);
        waiter.await.unwrap().unwrap();
    });
    let body = common::get(addr, "/debug/pprof/mutex?debug=1").text();
    let line = body
        .lines()
        .find(|l| l.contains("lock \"profiled_cap\" (semaphore)"))
        .unwrap_or_else(|| panic!("{body}"));
    assert!(line.starts_with("#\t0x0\t"), "{line}");
    // Under the lock's frame, the waiting caller: the task's async block, not perfkit's
    // or tokio's plumbing.
    let caller = body
        .lines()
        .skip_while(|l| *l != line)
        .nth(1)
        .unwrap_or_default();
    assert!(
        caller.contains("a_semaphore_wait_shows_in_the_profile_text::{{closure}}"),
        "{caller}\n{body}"
    );
    // The stack's header line sits above its frames: delay ≥ the 30 ms hold, count 1.
    let header = body
        .split("\n\n")
        .find(|b| b.contains("profiled_cap"))
        .and_then(|b| b.lines().find(|l| l.contains(" @ ")))
        .unwrap();
    let mut f = header.split_whitespace();
    let delay: u64 = f.next().unwrap().parse().unwrap();
    assert!(delay >= 25_000_000, "{header}");
    assert_eq!(f.next(), Some("1"), "{header}");
    srv.shutdown();
}
