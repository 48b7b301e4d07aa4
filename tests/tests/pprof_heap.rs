//! Heap profiles from jemalloc: `/debug/pprof/heap` and `/allocs` read by the real
//! `go tool pprof`, the text summary, and jemalloc's figures on `/metrics`.
//!
//! This test binary makes jemalloc with profiling its global allocator, the one line a
//! service adds.

mod common;

use std::process::Command;
use std::sync::Mutex;

perfkit::jemalloc_profiling!();

static HELD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Keeps 64 MiB allocated, in 1 MiB blocks, from its own frame.
#[inline(never)]
fn hold_64_mib_for_the_heap_profile() {
    let mut held = HELD.lock().unwrap();
    if held.is_empty() {
        for i in 0..64u8 {
            held.push(vec![i; 1 << 20]);
        }
    }
}

fn server() -> perfkit::DebugServer {
    hold_64_mib_for_the_heap_profile();
    perfkit::Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .facade(false)
        .start()
        .expect("debug server starts")
}

/// Parses a `go tool pprof` size such as `64MB`, `512kB` or `12B` into bytes.
fn bytes(s: &str) -> f64 {
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("not a size: {s}"));
    n * match unit {
        "B" | "" => 1.0,
        "kB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unit {other} in {s}"),
    }
}

#[test]
#[ignore = "needs go (Debian golang-go); scripts/test.sh installs it and runs ignored tests"]
fn go_tool_pprof_shows_the_allocating_function_on_top_with_its_64_mib() {
    let srv = server();
    let go = common::tool("GO", "go", &[]);
    let tmp = std::env::temp_dir().join(format!("perfkit-heap-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let url = format!("http://{}/debug/pprof/heap", srv.local_addr());
    let out = Command::new(go)
        .args(["tool", "pprof", "-top", &url])
        .env("PPROF_TMPDIR", &tmp)
        .env("HOME", &tmp)
        .output()
        .expect("run go tool pprof");
    let top = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof failed:\n{top}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("go tool pprof -top {url}:\n{top}");
    assert!(top.contains("Type: inuse_space"), "{top}");
    let first = top
        .lines()
        .skip_while(|l| !l.contains("flat%"))
        .nth(1)
        .unwrap_or_else(|| panic!("no rows:\n{top}"));
    let cols: Vec<&str> = first.split_whitespace().collect();
    assert!(
        cols[5..]
            .join(" ")
            .contains("hold_64_mib_for_the_heap_profile"),
        "top flat entry is {first:?}:\n{top}"
    );
    assert!(
        bytes(cols[0]) >= 50.0 * 1024.0 * 1024.0,
        "flat {} < 50 MiB:\n{top}",
        cols[0]
    );
}

#[test]
fn heap_text_summary_allocs_and_jemalloc_figures() {
    let srv = server();
    let addr = srv.local_addr();

    let heap = common::get(addr, "/debug/pprof/heap?gc=1");
    assert_eq!(heap.status, 200, "{}", heap.text());
    assert_eq!(
        heap.header("content-disposition"),
        Some("attachment; filename=\"heap\"")
    );
    assert_eq!(&heap.body[..2], &[0x1f, 0x8b], "gzip");

    let text = common::get(addr, "/debug/pprof/heap?debug=1");
    assert_eq!(text.status, 200, "{}", text.text());
    let body = text.text();
    let first_row = body
        .lines()
        .find(|l| !l.starts_with('#') && !l.starts_with("heap profile"))
        .unwrap();
    assert!(
        first_row.contains("hold_64_mib_for_the_heap_profile"),
        "{body}"
    );
    let live: f64 = first_row
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(live >= 50.0 * 1024.0 * 1024.0, "{body}");

    let allocs = common::get(addr, "/debug/pprof/allocs");
    assert_eq!(allocs.status, 200, "{}", allocs.text());
    let allocs_text = common::get(addr, "/debug/pprof/allocs?debug=1").text();
    assert!(allocs_text.contains("by alloc_space"), "{allocs_text}");
    assert!(
        allocs_text.contains("hold_64_mib_for_the_heap_profile"),
        "{allocs_text}"
    );

    let svg = common::get(addr, "/debug/pprof/heap?format=flamegraph");
    assert_eq!(svg.status, 200);
    assert!(svg.text().contains("hold_64_mib_for_the_heap_profile"));

    let metrics = common::get(addr, "/metrics").text();
    let allocated: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("perfkit_jemalloc_allocated_bytes "))
        .unwrap_or_else(|| panic!("no jemalloc figures:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(allocated >= 64.0 * 1024.0 * 1024.0, "{allocated}");
    for name in [
        "perfkit_jemalloc_active_bytes ",
        "perfkit_jemalloc_resident_bytes ",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    let snap = common::get(addr, "/debug/perfkit/snapshot").json();
    let heap = &snap["heap"];
    assert_eq!(heap["source"], "jemalloc", "{snap}");
    assert!(
        heap["allocated_bytes"].as_u64().unwrap() >= 64 << 20,
        "{heap}"
    );
    assert!(
        heap["jemalloc"]["resident_bytes"].as_u64().unwrap() > 0,
        "{heap}"
    );
    assert!(heap["counting"].is_null(), "{heap}");
}
