//! The run report over real loopback HTTP with the profiles taken in its span (the hottest
//! functions of a CPU profile, the live heap's growth between two heap profiles), the k6
//! phases marked, and its HTML form: one self-contained page, opened in headless Chromium.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::get;
use perfkit::Builder;

perfkit::jemalloc_profiling!();

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Memory the test keeps, so the second heap profile sees it live.
static HELD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[inline(never)]
fn hold_memory_for_the_report(chunks: usize) {
    let mut held = HELD.lock().unwrap();
    for i in 0..chunks {
        held.push(vec![i as u8; 64 * 1024]);
    }
}

#[inline(never)]
fn burn_cpu_for_the_report(stop: &AtomicBool) -> u64 {
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    x
}

/// A span with something to report: a queue burst, a CPU profile of a spinning thread, a
/// heap that grew by 16 MiB between two heap profiles, and two phases. Returns the server,
/// the report's query and where its files go.
fn a_run(results: &str) -> (perfkit::DebugServer, String, PathBuf) {
    let dir = common::results_dir(results);
    let s = Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .start()
        .unwrap();
    let addr = s.local_addr();
    let start = now();
    let (tx, mut rx) = perfkit::queue::Builder::new("r-intake", 100)
        .build::<u32>()
        .unwrap();
    assert_eq!(get(addr, "/debug/pprof/heap?debug=1").status, 200);
    std::thread::sleep(Duration::from_millis(1_200));
    for i in 0..90 {
        tx.try_send(i).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let burner = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || burn_cpu_for_the_report(&stop))
    };
    let cpu = get(addr, "/debug/pprof/profile?seconds=1");
    assert_eq!(cpu.status, 200, "{}", cpu.text());
    stop.store(true, Ordering::Relaxed);
    burner.join().unwrap();
    while rx.try_recv().is_ok() {}
    // Kept open for the rest of the test process: the report's configuration names it.
    std::mem::forget((tx, rx));
    hold_memory_for_the_report(256);
    assert_eq!(get(addr, "/debug/pprof/heap?debug=1").status, 200);
    std::thread::sleep(Duration::from_millis(2_100));
    let query = format!(
        "from={}&to={}&phases=warm-up@{start},load@{}",
        start.saturating_sub(1),
        now(),
        start + 1
    );
    (s, query, dir)
}

#[test]
fn the_report_names_the_profiles_of_its_span_and_its_phases() {
    let (s, query, dir) = a_run("report_html");
    let addr = s.local_addr();
    let r = get(addr, &format!("/debug/perfkit/report?{query}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json();
    std::fs::write(dir.join("report.json"), r.text()).unwrap();

    let phases = report["run"]["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2, "{:#}", report["run"]);
    assert_eq!(phases[0]["name"], "warm-up");
    assert_eq!(phases[1]["name"], "load");

    let cpu = &report["profiles"]["cpu"];
    let named = |list: &serde_json::Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|f| f["function"].as_str().unwrap().to_owned())
            .collect()
    };
    let flat = named(&cpu["top_flat"]);
    assert!(!flat.is_empty() && flat.len() <= 10, "{cpu:#}");
    assert!(
        flat.iter().any(|f| f.contains("burn_cpu_for_the_report")),
        "the spinning function is among the hottest: {cpu:#}"
    );
    assert!(cpu["samples"].as_i64().unwrap() > 0);

    let heap = &report["profiles"]["heap"];
    assert!(heap["profiles"].as_u64().unwrap() >= 2, "{heap:#}");
    let growth = heap["growth_bytes"].as_i64().unwrap();
    // 16 MiB held, estimated from jemalloc's samples.
    assert!(growth > 8 << 20, "live heap growth {growth}: {heap:#}");
    let top = &heap["top_growth"][0];
    assert!(
        top["growth_bytes"].as_i64().unwrap() > 8 << 20
            && top["function"]
                .as_str()
                .unwrap()
                .contains("hold_memory_for_the_report"),
        "the site that kept the memory grew most: {heap:#}"
    );

    // The queue burst is a HIGH finding and the queue's headroom is 1.1×.
    let f = report["findings"].as_array().unwrap();
    assert!(
        f.iter()
            .any(|x| x["name"] == "r-intake" && x["severity"] == "HIGH"),
        "{f:#?}"
    );

    // The HTML form: every moved signal drawn, the phases marked, the k6 marker in place.
    let page = get(addr, &format!("/debug/perfkit/report?{query}&format=html"));
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    std::fs::write(dir.join("report.html"), &html).unwrap();
    let moved = report["signals"].as_array().unwrap().len();
    assert!(moved >= 3, "{:#}", report["signals"]);
    assert_eq!(
        html.matches("<svg").count(),
        moved.min(160),
        "a plot per moved signal"
    );
    for want in [
        "<h2>Findings</h2>",
        "<h2>Timelines</h2>",
        "<h2>Headroom</h2>",
        "<h2>Configuration</h2>",
        "<h2>Profiles</h2>",
        "<code>r-intake</code>",
        "capacity=100",
        "burn_cpu_for_the_report",
        "hold_memory_for_the_report",
        "<b>warm-up</b> at t=",
        "<!--perfkit:k6-->",
    ] {
        assert!(html.contains(want), "{want} missing from the page");
    }
    for external in ["<script", "<link", " src=", "@import", "url("] {
        assert!(
            !html.contains(external),
            "{external}: the page must stand alone"
        );
    }
}

#[test]
fn bad_report_parameters_are_400_with_the_reason() {
    let s = Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .start()
        .unwrap();
    for (q, reason) in [
        ("format=pdf", "format must be json or html"),
        ("phases=bad%20name@1700000000", "a phase name is 1 to 64"),
        ("phases=load@-5", "not a time in seconds"),
        ("phases=load", "phases must be name@unix_seconds"),
        ("phases=load@1e400", "not a time in seconds"),
    ] {
        let r = get(s.local_addr(), &format!("/debug/perfkit/report?{q}"));
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(r.text().contains(reason), "{q}: {}", r.text());
        assert_eq!(r.text().lines().count(), 1, "{q}: one line");
    }
    let many: Vec<String> = (0..33)
        .map(|i| format!("p{i}@{}", 1_700_000_000 + i))
        .collect();
    let r = get(
        s.local_addr(),
        &format!("/debug/perfkit/report?phases={}", many.join(",")),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("at most 32 phases"), "{}", r.text());
}

/// Headless Chromium renders the page: not blank, the plots drawn, nothing on the console;
/// it prints to PDF. The screenshot stays in `target/test-results/report_html_chromium/`.
#[test]
#[ignore = "needs Debian's chromium; scripts/test.sh installs it and runs ignored tests"]
fn chromium_renders_the_report_page() {
    let (s, query, dir) = a_run("report_html_chromium");
    let page = get(
        s.local_addr(),
        &format!("/debug/perfkit/report?{query}&format=html"),
    );
    assert_eq!(page.status, 200);
    let html_path = dir.join("report.html");
    std::fs::write(&html_path, page.text()).unwrap();

    // The console check can fail: a page that logs an error is caught.
    let control = dir.join("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><p>control</p><script>console.error('control-error')</script>",
    )
    .unwrap();
    let c = common::browser::render(&control, &dir.join("control.png"), 400, 300);
    assert!(
        c.console.iter().any(|l| l.contains("control-error")),
        "console messages are not seen: {:?}",
        c.console
    );

    let png = dir.join("report.png");
    let r = common::browser::render(&html_path, &png, 1100, 2400);
    eprintln!(
        "screenshot {} ({}x{}), {:.1}% inked",
        png.display(),
        r.width,
        r.height,
        r.inked() * 100.0
    );
    assert!(r.console.is_empty(), "console: {:?}", r.console);
    assert_eq!((r.width, r.height), (1100, 2400));
    assert!(
        r.inked() > 0.03,
        "a blank page: {:.2}% inked",
        r.inked() * 100.0
    );
    // The plots' lines (rgb 31, 95, 191) are on screen.
    let blue = r.pixels_near([31, 95, 191], 24);
    assert!(blue > 300, "{blue} plot-line pixels");
    // After load the DOM holds every plot, the findings and the profiles.
    let svgs = r.dom.matches("<svg").count();
    assert_eq!(
        svgs,
        page.text().matches("<svg").count(),
        "plots in the DOM"
    );
    assert!(svgs >= 3);
    assert!(r.dom.contains("burn_cpu_for_the_report"));

    // Printed: a PDF.
    let pdf = dir.join("report.pdf");
    let bin = common::tool("CHROMIUM", "chromium", &[]);
    let out = std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("pdf-profile").display()
        ))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!(
            "file://{}",
            html_path.canonicalize().unwrap().display()
        ))
        .output()
        .unwrap();
    let bytes = std::fs::read(&pdf)
        .unwrap_or_else(|e| panic!("no PDF ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        bytes.starts_with(b"%PDF") && bytes.len() > 20_000,
        "{} bytes",
        bytes.len()
    );
}
