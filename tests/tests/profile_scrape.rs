//! A continuous profiler (Grafana Alloy's or Parca's CPU scrape, simulated: a 5 s CPU
//! profile every 10 s) pulling from the example while the k6 gate runs and takes its own
//! CPU profile: the two share the running profile instead of refusing each other.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::gate::run_gate;
use common::ingest::start_service;

#[test]
#[ignore = "needs k6 and a built ingest binary; scripts/test.sh installs k6, builds ingest and runs ignored tests"]
fn a_continuous_profiler_scraping_alongside_the_gate_breaks_neither() {
    let dir = common::results_dir("profile_scrape");
    let svc = start_service(&dir.join("ingest.log"), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (stop, debug) = (stop.clone(), svc.debug);
        std::thread::spawn(move || {
            // First scrape 7 s in: the gate's own profile (5 s, from a quarter of its 20 s)
            // is running then.
            let mut next = Instant::now() + Duration::from_secs(7);
            let mut got = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                next += Duration::from_secs(10);
                let r = common::get(debug, "/debug/pprof/profile?seconds=5");
                let joined = r.header("x-perfkit-profile-joined").map(str::to_owned);
                got.push((r.status, r.body.get(..2) == Some(&[0x1f, 0x8b][..]), joined));
            }
            got
        })
    };
    let (code, summary) = run_gate(&svc, &dir.join("run"), &["DURATION=20s"]);
    stop.store(true, Ordering::Relaxed);
    let scrapes = scraper.join().unwrap();
    eprintln!("scrapes (status, gzip, joined): {scrapes:?}");

    assert_eq!(
        code, 0,
        "the gate passes: {:#}",
        summary["metrics"]["perfkit_polls"]
    );
    let cpu = std::fs::read(dir.join("run/cpu.pb.gz")).expect("the gate saved its CPU profile");
    assert_eq!(&cpu[..2], &[0x1f, 0x8b], "gzip");
    let svg = std::fs::read_to_string(dir.join("run/cpu.svg")).unwrap();
    assert!(svg.contains("<svg"));
    assert!(scrapes.len() >= 2, "{scrapes:?}");
    for (status, gzip, _) in &scrapes {
        assert_eq!(*status, 200, "every scrape got a profile: {scrapes:?}");
        assert!(gzip, "{scrapes:?}");
    }
    assert!(
        scrapes.iter().any(|s| s.2.is_some()),
        "a scrape arrived during the gate's profile and joined it: {scrapes:?}"
    );
    let http = &summary["metrics"]["perfkit_http_5xx"]["values"]["count"];
    assert_eq!(http.as_f64(), Some(0.0), "no 5xx from the service");
    svc.stop();
}
