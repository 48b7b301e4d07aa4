//! `/debug/perfkit/timeline` over real loopback HTTP: a figure per second for every
//! primitive, bounded parameters answered with a 400 and the reason.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::get;
use perfkit::Builder;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_queue_burst_is_on_the_timeline_at_its_second() {
    let s = Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .start()
        .unwrap();
    let (tx, mut rx) = perfkit::queue::Builder::new("t-burst", 50)
        .build::<u32>()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    let burst_at = now();
    for i in 0..40 {
        tx.try_send(i).unwrap();
    }
    for _ in 0..40 {
        rx.try_recv().unwrap();
    }
    std::thread::sleep(Duration::from_millis(2_500));
    let r = get(s.local_addr(), "/debug/perfkit/timeline");
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    assert_eq!(t["resolution_seconds"], 1);
    let seconds: Vec<u64> = t["seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert!(seconds.len() >= 3, "{t}");
    assert!(seconds.windows(2).all(|w| w[0] < w[1]), "{seconds:?}");
    let series = |name: &str, signal: &str| -> Vec<Option<f64>> {
        t["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name && s["signal"] == signal)
            .unwrap_or_else(|| panic!("no {name}/{signal} in {t}"))["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(serde_json::Value::as_f64)
            .collect()
    };
    let depth = series("t-burst", "depth_max");
    assert_eq!(depth.len(), seconds.len());
    // The burst is in the second it happened (or the next, if it straddled the tick), and
    // nowhere else: a second before it and the last ones read 0.
    let peaks: Vec<u64> = seconds
        .iter()
        .zip(&depth)
        .filter(|(_, d)| **d == Some(40.0))
        .map(|(s, _)| *s)
        .collect();
    assert!(
        !peaks.is_empty() && peaks.iter().all(|s| *s == burst_at || *s == burst_at + 1),
        "burst at {burst_at}: {:?}",
        seconds.iter().zip(&depth).collect::<Vec<_>>()
    );
    assert_eq!(*depth.last().unwrap(), Some(0.0));
    let saturation = series("t-burst", "saturation_max");
    assert!(saturation.contains(&Some(0.8)), "{saturation:?}");
    let rss = series("process", "resident_memory_bytes");
    assert!(rss.iter().flatten().all(|b| *b > 1e6), "{rss:?}");

    // A range picks its seconds.
    let last = *seconds.last().unwrap();
    let part = get(
        s.local_addr(),
        &format!("/debug/perfkit/timeline?from={}&to={last}", last - 1),
    )
    .json();
    assert_eq!(part["seconds"], serde_json::json!([last - 1, last]));
    let empty = get(s.local_addr(), "/debug/perfkit/timeline?from=0&to=1").json();
    assert_eq!(empty["seconds"], serde_json::json!([]));
    assert_eq!(empty["series"], serde_json::json!([]));
}

#[test]
fn bad_ranges_are_400_with_the_reason() {
    let s = Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .start()
        .unwrap();
    for (query, reason) in [
        (
            "from=abc",
            "from must be a time in seconds since the Unix epoch, got \"abc\"",
        ),
        (
            "to=-5",
            "to must be a time in seconds since the Unix epoch, got \"-5\"",
        ),
        (
            "to=inf",
            "to must be a time in seconds since the Unix epoch, got \"inf\"",
        ),
        (
            "from=",
            "from must be a time in seconds since the Unix epoch, got \"\"",
        ),
        ("from=20&to=10", "from (20) is after to (10)"),
        (
            "since=5",
            "unknown query parameter `since` for /debug/perfkit/timeline; accepted: from, to",
        ),
    ] {
        let r = get(s.local_addr(), &format!("/debug/perfkit/timeline?{query}"));
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert_eq!(r.text(), format!("{reason}\n"), "{query}");
    }
    assert_eq!(
        get(
            s.local_addr(),
            "/debug/perfkit/timeline?from=1.5&to=1700000000"
        )
        .status,
        200
    );
}

/// The report over HTTP: a queue that drops ranks first as CRITICAL, with its evidence and
/// the knob to turn, and the configuration table holds it with its source line.
#[test]
fn the_report_ranks_a_dropping_queue_first() {
    let s = Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .start()
        .unwrap();
    let start = now();
    let (tx, _rx) = perfkit::queue::Builder::new("r-drops", 10)
        .policy(perfkit::queue::Policy::DropNewest)
        .build::<u32>()
        .unwrap();
    let line = line!() - 2; // the `build` call
    std::thread::sleep(Duration::from_millis(1_200));
    for i in 0..25 {
        let _ = tx.try_send(i);
    }
    std::thread::sleep(Duration::from_millis(2_200));
    let r = get(
        s.local_addr(),
        &format!("/debug/perfkit/report?from={start}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = r.json();
    assert_eq!(r["schema_version"], 1);
    let top = &r["findings"][0];
    assert_eq!(top["severity"], "CRITICAL", "{r:#}");
    assert_eq!(top["name"], "r-drops");
    let evidence = top["evidence"].as_str().unwrap();
    assert!(evidence.contains("dropped 15 items"), "{evidence}");
    assert!(evidence.contains("full 15"), "{evidence}");
    assert!(
        top["change"].as_str().unwrap().contains("drop_newest"),
        "{top}"
    );
    let source = format!("{}:{line}", file!());
    assert_eq!(top["source"], source.as_str());
    // The queue was full: saturated, and the bottleneck.
    let b = r["bottleneck"].as_str().unwrap();
    let sat = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == b)
        .unwrap();
    assert_eq!(sat["title"], "`r-drops` queue saturated");
    let row = r["configuration"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "r-drops")
        .unwrap();
    assert_eq!(row["settings"]["capacity"], 10);
    assert_eq!(row["settings"]["policy"], "drop_newest");
    assert_eq!(row["source"], source.as_str());
    assert_eq!(r["headroom"][0]["name"], "r-drops");
    assert_eq!(r["headroom"][0]["peak_use"], 1.0);

    for (query, status) in [
        ("format=pdf", 400),
        ("from=x", 400),
        ("format=json", 200),
        ("format=html", 200),
    ] {
        assert_eq!(
            get(s.local_addr(), &format!("/debug/perfkit/report?{query}")).status,
            status,
            "{query}"
        );
    }
}
