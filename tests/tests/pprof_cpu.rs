//! CPU profiles over HTTP: `/debug/pprof/profile` read by the real `go tool pprof`, one
//! profile at a time, bad parameters, the debug plane staying responsive, `/profile/last`
//! and the memory a profile costs.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Profiles are one at a time per process; tests that take one queue here.
static PROFILING: Mutex<()> = Mutex::new(());

fn server() -> perfkit::DebugServer {
    perfkit::Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .facade(false)
        .profile_max_seconds(60)
        .start()
        .expect("debug server starts")
}

static SINK: AtomicU64 = AtomicU64::new(0);

/// Burns CPU in its own frame: plain integer operations that compile to inline code even
/// without optimisation, so the samples land here rather than in helpers.
#[inline(never)]
fn burn_cpu_for_the_profile(stop: &AtomicBool) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while !stop.load(Ordering::Relaxed) {
        let mut i = 0u32;
        while i < 100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            i += 1;
        }
        SINK.store(x, Ordering::Relaxed);
    }
}

fn burner() -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    let h = std::thread::spawn(move || burn_cpu_for_the_profile(&s));
    (stop, h)
}

fn go_pprof_top(target: &str) -> String {
    let tmp = std::env::temp_dir().join(format!("perfkit-pprof-{}", std::process::id()));
    let (ok, stdout, stderr) = common::go_pprof(&["-top", target], &tmp);
    assert!(ok, "go tool pprof failed:\n{stdout}\n{stderr}");
    eprintln!("go tool pprof -top {target}:\n{stdout}");
    stdout
}

/// The function names of the first `n` rows of `go tool pprof -top`.
fn top_rows(top: &str, n: usize) -> Vec<String> {
    top.lines()
        .skip_while(|l| !l.contains("flat%"))
        .skip(1)
        .take(n)
        .map(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
#[ignore = "needs go (Debian golang-go); scripts/test.sh installs it and runs ignored tests"]
fn go_tool_pprof_finds_the_burning_function_in_the_top_three() {
    let _one = PROFILING.lock().unwrap_or_else(|p| p.into_inner());
    let srv = server();
    let (stop, h) = burner();
    let top = go_pprof_top(&format!(
        "http://{}/debug/pprof/profile?seconds=2",
        srv.local_addr()
    ));
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    let rows = top_rows(&top, 3);
    assert!(
        rows.iter().any(|r| r.contains("burn_cpu_for_the_profile")),
        "burn_cpu_for_the_profile not in the top 3 flat entries {rows:?}:\n{top}"
    );
    assert!(top.contains("Type: cpu"), "{top}");
    // Every function is named, and pprof's default view keeps the names apart: no hex
    // address (a leaf resolved at the byte before a function's first instruction), no
    // `::poll` (a trait impl's name cut down to its method by pprof).
    let all = top_rows(&top, usize::MAX);
    assert!(!all.is_empty());
    for name in &all {
        assert!(
            !name.starts_with("0x") && !name.starts_with("::"),
            "{name:?} in:\n{top}"
        );
    }
}

#[test]
fn a_second_request_joins_the_running_profile_and_gets_the_same_one() {
    let _one = PROFILING.lock().unwrap_or_else(|p| p.into_inner());
    let srv = server();
    let addr = srv.local_addr();
    let first = std::thread::spawn(move || common::get(addr, "/debug/pprof/profile?seconds=2"));
    std::thread::sleep(Duration::from_millis(500));
    // A continuous profiler's scrape arriving mid-profile, asking for another length.
    let joined = common::get(addr, "/debug/pprof/profile?seconds=5");
    let ok = first.join().unwrap();
    assert_eq!((ok.status, joined.status), (200, 200), "{}", joined.text());
    assert_eq!(
        joined.body, ok.body,
        "both get the profile that was running"
    );
    let how = joined.header("x-perfkit-profile-joined").unwrap_or("");
    assert!(how.ends_with("s of 2s"), "{how}");
    assert!(ok.header("x-perfkit-profile-joined").is_none());
    // Joining in the other form draws the same profile.
    let first = std::thread::spawn(move || common::get(addr, "/debug/pprof/profile?seconds=1"));
    std::thread::sleep(Duration::from_millis(300));
    let svg = common::get(addr, "/debug/pprof/profile?seconds=1&format=flamegraph");
    assert_eq!(first.join().unwrap().status, 200);
    assert_eq!(svg.status, 200, "{}", svg.text());
    assert!(svg.text().contains("<svg"));

    // A profile started from code cannot be joined: a request gets 409 with the reason.
    let code = perfkit::profile::CpuProfiler::start(99, 2).unwrap();
    let busy = common::get(addr, "/debug/pprof/profile?seconds=1");
    drop(code.finish());
    assert_eq!(busy.status, 409, "{}", busy.text());
    assert_eq!(busy.header("x-go-pprof"), Some("1"));
    assert_eq!(busy.text().lines().count(), 1, "{}", busy.text());

    let ok = common::get(addr, "/debug/pprof/profile?seconds=1");
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        ok.header("content-disposition"),
        Some("attachment; filename=\"profile\"")
    );
    assert_eq!(&ok.body[..2], &[0x1f, 0x8b], "gzip");

    // The profile is kept for /profile/last, in both forms.
    let last = common::get(addr, "/debug/pprof/profile/last");
    assert_eq!(last.status, 200);
    assert_eq!(
        last.body, ok.body,
        "the last profile is the one just served"
    );
    let svg = common::get(addr, "/debug/pprof/profile/last?format=flamegraph");
    assert_eq!(svg.status, 200, "{}", svg.text());
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(
        svg.text().contains("<svg"),
        "{}",
        &svg.text()[..200.min(svg.body.len())]
    );

    // After both ended, the next profile may run.
    let again = common::get(addr, "/debug/pprof/profile?seconds=1&format=flamegraph");
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(again.text().contains("<svg"));
}

#[test]
fn bad_parameters_get_400_with_a_reason() {
    let srv = server();
    let addr: SocketAddr = srv.local_addr();
    for (path, needle) in [
        ("/debug/pprof/profile?seconds=abc", "whole number"),
        ("/debug/pprof/profile?seconds=100000", "maximum of 60"),
        ("/debug/pprof/profile?seconds=5&format=png", "format"),
        ("/debug/pprof/profile/last?format=png", "format"),
        ("/debug/pprof/profile?hz=5", "unknown query parameter"),
        ("/debug/pprof/heap?debug=9", "debug"),
        ("/debug/pprof/allocs?debug=9", "debug"),
        ("/debug/pprof/heap?format=png", "format"),
    ] {
        let r = common::get(addr, path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_eq!(r.header("x-go-pprof"), Some("1"), "{path}");
        let body = r.text();
        assert_eq!(body.lines().count(), 1, "{path}: {body}");
        assert!(body.contains(needle), "{path}: {body}");
    }
}

#[test]
fn a_profile_does_not_hold_up_the_rest_of_the_debug_plane() {
    let _one = PROFILING.lock().unwrap_or_else(|p| p.into_inner());
    let srv = server();
    let addr = srv.local_addr();
    let started = Instant::now();
    let profile = std::thread::spawn(move || {
        let r = common::get(addr, "/debug/pprof/profile?seconds=5");
        (r.status, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(200)); // let the profile start first
    let mut answered = Vec::new();
    for _ in 0..50 {
        let r = common::get(addr, "/metrics");
        assert_eq!(r.status, 200);
        answered.push(Instant::now());
    }
    let metrics_done = Instant::now();
    let (status, profile_done) = profile.join().unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics_done < profile_done,
        "50 scrapes took {:?}, the profile ended after {:?}",
        metrics_done - started,
        profile_done - started
    );
    eprintln!(
        "50 /metrics answered within {:?} of a 5 s profile",
        metrics_done.duration_since(started)
    );
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_profile_costs_bounded_memory_and_returns_it() {
    let _one = PROFILING.lock().unwrap_or_else(|p| p.into_inner());
    let srv = server();
    let addr = srv.local_addr();
    // Warm up: the first profile maps the binary's debug information once.
    let (stop, h) = burner();
    assert_eq!(
        common::get(addr, "/debug/pprof/profile?seconds=1").status,
        200
    );
    let before = rss_bytes();
    let during = Arc::new(AtomicU64::new(0));
    let d = Arc::clone(&during);
    let watch_stop = Arc::new(AtomicBool::new(false));
    let ws = Arc::clone(&watch_stop);
    let watcher = std::thread::spawn(move || {
        while !ws.load(Ordering::Relaxed) {
            d.fetch_max(rss_bytes(), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    assert_eq!(
        common::get(addr, "/debug/pprof/profile?seconds=3").status,
        200
    );
    watch_stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    let after = rss_bytes();
    let peak = during.load(Ordering::Relaxed).max(after);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    eprintln!(
        "RSS before {:.1} MiB, peak during {:.1} MiB (+{:.1}), after {:.1} MiB (+{:.1})",
        mib(before),
        mib(peak),
        mib(peak.saturating_sub(before)),
        mib(after),
        mib(after.saturating_sub(before))
    );
    assert!(
        after.saturating_sub(before) < 16 << 20,
        "a profile kept {:.1} MiB",
        mib(after.saturating_sub(before))
    );
}

#[test]
fn heap_without_jemalloc_profiling_says_what_to_enable() {
    // This test binary keeps the system allocator, so jemalloc is linked but not profiling.
    let srv = server();
    for path in ["/debug/pprof/heap", "/debug/pprof/allocs?debug=1"] {
        let r = common::get(srv.local_addr(), path);
        assert_eq!(r.status, 501, "{path}: {}", r.text());
        assert_eq!(r.header("x-go-pprof"), Some("1"));
        assert!(
            r.text().contains("perfkit::jemalloc_profiling!()"),
            "{}",
            r.text()
        );
    }
}
