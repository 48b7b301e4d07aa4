//! Go's delta profiles (`seconds=N`) on `/debug/pprof/heap`, `/allocs`, `/goroutine` and
//! `/mutex` of the live example under load, read by the real `go tool pprof -seconds 2`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::ingest::{post_events, start_service};

#[test]
#[ignore = "needs go and a built ingest binary; scripts/test.sh installs go, builds ingest and runs ignored tests"]
fn go_tool_pprof_reads_every_delta_profile_of_the_example_under_load() {
    let dir = common::results_dir("pprof_delta");
    // 64 workers holding the user_progress lock: contention for the mutex delta.
    let svc = start_service(
        &dir.join("ingest.log"),
        &[("INGEST_WORKERS", "64"), ("INGEST_LOCK_HOLD_US", "200")],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|t| {
            let (stop, app) = (stop.clone(), svc.app);
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    post_events(app, 50, &format!("u{}", (i + t) % 20));
                    let _ = common::get(app, &format!("/v1/progress/u{}", i % 20));
                    i += 1;
                }
            })
        })
        .collect();

    for (path, kind) in [
        ("heap", "Type: inuse_space"),
        ("allocs", "Type: alloc_space"),
        ("goroutine", "Type: goroutine"),
        ("mutex", "Type: delay"),
    ] {
        let url = format!("{}/debug/pprof/{path}", svc.perfkit_url);
        let mut args = vec!["-top", "-seconds", "2"];
        if path == "mutex" {
            args.push("-sample_index=delay");
        }
        args.push(&url);
        let (ok, top, err) = common::go_pprof(&args, &dir.join(format!("pprof-{path}")));
        eprintln!("go tool pprof -top -seconds 2 {path}:\n{top}\n{err}");
        assert!(ok, "{path}: {top}\n{err}");
        assert!(top.contains(kind), "{path}: {top}");
        assert!(
            top.contains("Duration: 2"),
            "{path}: the delta's span: {top}"
        );
        if path == "mutex" {
            assert!(top.contains("lock \"user_progress\" (mutex)"), "{top}");
        }
        if path == "allocs" {
            // Events were parsed and batched during the two seconds: the example's own code
            // allocated.
            assert!(top.contains("perfkit_examples"), "{top}");
        }
    }

    // One delta of a profile at a time: a second gets 409 with the time left.
    let debug = svc.debug;
    let first = std::thread::spawn(move || common::get(debug, "/debug/pprof/goroutine?seconds=3"));
    std::thread::sleep(Duration::from_millis(700));
    let busy = common::get(svc.debug, "/debug/pprof/goroutine?seconds=3");
    assert_eq!(busy.status, 409, "{}", busy.text());
    assert!(busy.text().contains("s left"), "{}", busy.text());
    let other = common::get(svc.debug, "/debug/pprof/mutex?seconds=1");
    assert_eq!(other.status, 200, "another profile's delta runs alongside");
    assert_eq!(first.join().unwrap().status, 200);

    // Bad parameters: a 400 with one line.
    for (path, says) in [
        ("/debug/pprof/heap?seconds=0", "positive"),
        ("/debug/pprof/allocs?seconds=abc", "positive"),
        ("/debug/pprof/goroutine?seconds=100000", "maximum"),
        ("/debug/pprof/heap?seconds=2&debug=1", "incompatible"),
        ("/debug/pprof/goroutine?seconds=2&debug=2", "incompatible"),
        (
            "/debug/pprof/heap?seconds=2&format=flamegraph",
            "incompatible",
        ),
    ] {
        let r = common::get(svc.debug, path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let t = r.text();
        assert!(
            t.contains(says) && t.trim().lines().count() == 1,
            "{path}: {t}"
        );
    }
    // The index says why there is no threadcreate.
    let index = common::get(svc.debug, "/debug/pprof/").text();
    assert!(
        index.contains("threadcreate") && index.contains("Not served"),
        "{index}"
    );

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    svc.stop();
}
