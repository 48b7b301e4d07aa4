//! `perfkit::task` and `/debug/pprof/goroutine`: outcomes, the live-task registry, and the
//! dump read by the real `go tool pprof`.

mod common;

use std::process::Command;
use std::time::Duration;

use perfkit::metrics::registry;

fn task_entry(name: &str) -> serde_json::Value {
    common::entry(&registry().snapshot(), "tasks", name)
}

#[test]
fn outcomes_are_counted_and_alive_returns_to_zero() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ok = perfkit::task::spawn("t-outcomes", async { 1 });
        assert_eq!(ok.await.unwrap(), 1);
        let panicked = perfkit::task::spawn("t-outcomes", async { panic!("boom") });
        let err = panicked.await.unwrap_err();
        assert!(err.is_panic(), "the panic still reaches the JoinHandle");
        let pending = perfkit::task::spawn("t-outcomes", std::future::pending::<()>());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(task_entry("t-outcomes")["alive"], 1);
        pending.abort();
        assert!(pending.await.unwrap_err().is_cancelled());
        let blocking = perfkit::task::spawn_blocking("t-outcomes", || 7);
        assert_eq!(blocking.await.unwrap(), 7);
        let blocking_panic =
            perfkit::task::spawn_blocking("t-outcomes", || panic!("blocking boom"));
        assert!(blocking_panic.await.unwrap_err().is_panic());
    });
    let t = task_entry("t-outcomes");
    assert_eq!(t["spawned"], 5);
    assert_eq!(t["finished"]["ok"], 2);
    assert_eq!(t["finished"]["panic"], 2);
    assert_eq!(t["finished"]["cancelled"], 1);
    assert_eq!(t["alive"], 0);
    let text = registry().render();
    assert!(
        text.contains("perfkit_tasks_alive{task=\"t-outcomes\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("perfkit_tasks_finished_total{task=\"t-outcomes\",outcome=\"cancelled\"} 1")
    );
}

#[test]
fn tasks_dropped_with_their_runtime_count_as_cancelled() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..3 {
            perfkit::task::spawn("t-shutdown", std::future::pending::<()>());
        }
        tokio::task::yield_now().await;
    });
    assert_eq!(task_entry("t-shutdown")["alive"], 3);
    drop(rt);
    let t = task_entry("t-shutdown");
    assert_eq!(
        (t["alive"].as_u64(), t["finished"]["cancelled"].as_u64()),
        (Some(0), Some(3))
    );
}

#[test]
fn dump_lists_live_tasks_with_site_and_age_and_snapshot_keeps_recent_max() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let line = line!() + 3;
    let handles: Vec<_> = rt.block_on(async {
        (0..4)
            .map(|_| perfkit::task::spawn("t-dump", std::future::pending::<()>()))
            .collect()
    });
    std::thread::sleep(Duration::from_millis(30));
    let site = format!("{}:{line}", file!());
    let mine: Vec<_> = perfkit::task::dump()
        .into_iter()
        .filter(|t| t.name == "t-dump")
        .collect();
    assert_eq!(mine.len(), 4);
    assert!(
        mine.iter().all(|t| t.site == site && t.age_seconds >= 0.02),
        "{mine:?}"
    );
    assert!(mine.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    assert!(perfkit::task::grouped().contains(&(4, "t-dump", site.clone())));
    assert_eq!(task_entry("t-dump")["alive_max_recent"], 4);
    for h in &handles {
        h.abort();
    }
    drop(handles);
    rt.block_on(tokio::task::yield_now());
    drop(rt);
    let t = task_entry("t-dump");
    assert_eq!(t["alive"], 0);
    assert_eq!(
        t["alive_max_recent"], 4,
        "the peak stays visible for the next polls"
    );
}

#[test]
fn goroutine_endpoint_text_forms_match_the_snapshot() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _handles: Vec<_> = rt.block_on(async {
        let mut v: Vec<_> = (0..3)
            .map(|_| perfkit::task::spawn("t-endpoint-a", std::future::pending::<()>()))
            .collect();
        v.push(perfkit::task::spawn(
            "t-endpoint-b",
            std::future::pending::<()>(),
        ));
        v
    });
    let server = perfkit::Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .start()
        .unwrap();
    let a = server.local_addr();
    let d1 = common::get(a, "/debug/pprof/goroutine?debug=1");
    assert_eq!(d1.status, 200);
    let text = d1.text();
    // Other tests in this process may spawn and finish tasks meanwhile: the answer is
    // checked against itself (the total is the sum of its groups) and against this test's
    // own task names.
    let first = text.lines().next().unwrap();
    let total: u64 = first
        .strip_prefix("tasks profile: total ")
        .unwrap_or_else(|| panic!("{first}"))
        .parse()
        .unwrap();
    let groups: u64 = text
        .lines()
        .filter(|l| l.contains(" @ "))
        .map(|l| l.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, groups, "{text}");
    assert!(total >= 4, "{text}");
    let count_of = |name: &str| -> u64 {
        text.lines()
            .filter(|l| l.contains(" @ ") && l.split(' ').nth(2) == Some(name))
            .map(|l| l.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(
        count_of("t-endpoint-a"),
        task_entry("t-endpoint-a")["alive"].as_u64().unwrap()
    );
    assert_eq!(count_of("t-endpoint-a"), 3);
    assert_eq!(count_of("t-endpoint-b"), 1);
    let d2 = common::get(a, "/debug/pprof/goroutine?debug=2").text();
    assert_eq!(d2.matches("[t-endpoint-a, ").count(), 3, "{d2}");
    assert!(
        d2.contains("spawned at tests/tests/task_tracked.rs:"),
        "{d2}"
    );
    let bad = common::get(a, "/debug/pprof/goroutine?debug=9");
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("expected 0, 1 or 2"));
    let proto = common::get(a, "/debug/pprof/goroutine");
    assert_eq!(proto.status, 200);
    assert_eq!(
        proto.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(&proto.body[..2], &[0x1f, 0x8b], "gzip magic");
    assert!(
        common::get(a, "/debug/pprof/")
            .text()
            .contains("goroutine?debug=1")
    );
}

#[test]
#[ignore = "needs go (Debian golang-go); scripts/test.sh installs it and runs ignored tests"]
fn go_tool_pprof_names_the_tracked_tasks() {
    let go = common::tool("GO", "go", &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _handles: Vec<_> = rt.block_on(async {
        let mut v: Vec<_> = (0..5)
            .map(|_| perfkit::task::spawn("leaky-reader", std::future::pending::<()>()))
            .collect();
        v.extend((0..2).map(|_| perfkit::task::spawn("flusher", std::future::pending::<()>())));
        v
    });
    let server = perfkit::Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .start()
        .unwrap();
    let tmp = std::env::temp_dir().join(format!("perfkit-pprof-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new(go)
        .args(["tool", "pprof", "-top"])
        .arg(format!(
            "http://{}/debug/pprof/goroutine",
            server.local_addr()
        ))
        .env("PPROF_TMPDIR", &tmp)
        .env("HOME", &tmp)
        .output()
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "go tool pprof failed:\n{stdout}\n{stderr}"
    );
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in:\n{stdout}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    eprintln!("go tool pprof -top:\n{stdout}");
    assert_eq!(row("leaky-reader"), "5", "{stdout}");
    assert_eq!(row("flusher"), "2", "{stdout}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Slots of finished tasks are reused and the registry grows past its first chunk: the dump
/// stays exact, with unique ids, through several rounds of spawning and finishing.
#[test]
fn dump_stays_exact_while_slots_are_reused_and_the_registry_grows() {
    const NAME: &str = "t-slot-reuse";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let count = || {
            perfkit::task::dump()
                .into_iter()
                .filter(|t| t.name == NAME)
                .count()
        };
        let mut held = Vec::new();
        let mut open = Vec::new();
        for round in 0..4 {
            let gates: Vec<_> = (0..700)
                .map(|_| {
                    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                    held.push(perfkit::task::spawn(NAME, async move {
                        let _ = rx.await;
                    }));
                    tx
                })
                .collect();
            tokio::task::yield_now().await;
            assert_eq!(count(), 700 * (round + 1) - 350 * round, "round {round}");
            // Finish half of this round's tasks; keep the other half's senders open.
            for (i, tx) in gates.into_iter().enumerate() {
                if i % 2 == 0 {
                    tx.send(()).unwrap();
                } else {
                    open.push(tx);
                }
            }
            while count() > 700 * (round + 1) - 350 * (round + 1) {
                tokio::task::yield_now().await;
            }
        }
        let dump: Vec<_> = perfkit::task::dump()
            .into_iter()
            .filter(|t| t.name == NAME)
            .collect();
        assert_eq!(dump.len(), 4 * 350);
        let mut ids: Vec<u64> = dump.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 4 * 350, "ids are unique");
        for h in &held {
            h.abort();
        }
        for h in held {
            let _ = h.await;
        }
        assert_eq!(count(), 0);
    });
}
