//! The real `ingest` binary under faults: a stuck or slow database, SIGTERM under load, bad
//! configuration, idle and half-sent API connections, and 60 concurrent heap profiles on
//! its debug server. Every stop checks that the log's final line balances: accepted =
//! applied + dropped, exactly.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::ingest::{Service, ingest_bin, start_service};
use common::results_dir as dir;

/// `POST /events` with `n` events on a fresh connection: status, body, and how long it took.
fn post_events(addr: SocketAddr, n: usize, user: &str) -> (u16, String, Duration) {
    let event = format!(r#"{{"user_id":"{user}","stat":"kills","value":1}}"#);
    let body = format!("[{}]", vec![event.as_str(); n].join(","));
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let r = common::read_response(&mut s);
    (r.status, r.text(), started.elapsed())
}

/// Accepted count in a 202's `{"accepted":n,"rejected":m}`.
fn accepted(body: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["accepted"].as_u64().unwrap()
}

#[test]
#[ignore = "needs a built ingest binary; scripts/test.sh builds it and runs ignored tests"]
fn a_stuck_database_never_hangs_a_client_and_shutdown_is_bounded() {
    let d = dir("faults_stuck_db");
    // Every flush waits an hour. Room for events: the queue (100), the pool's queue (256)
    // and its worker's job, the batcher's intake (1 024) and the batch in flush (10).
    let svc = start_service(
        &d.join("ingest.log"),
        &[
            ("INGEST_FLUSH_DELAY_MS", "3600000"),
            ("INGEST_QUEUE_CAPACITY", "100"),
            ("INGEST_MAX_BATCH", "10"),
            ("INGEST_WORKERS", "1"),
            ("INGEST_ENQUEUE_TIMEOUT_MS", "500"),
            ("INGEST_SHUTDOWN_TIMEOUT_MS", "4000"),
        ],
    );
    // Fill the whole path. Requests may wait for room, but never longer than the enqueue
    // timeout (plus time to answer), and say how many of their events got in.
    let mut total = 0;
    let mut refused = None;
    for i in 0..20 {
        let (status, body, took) = post_events(svc.app, 500, &format!("u{i}"));
        assert!(took < Duration::from_secs(3), "request {i} took {took:?}");
        match status {
            202 => total += accepted(&body),
            503 => {
                refused = Some((body, took));
                break;
            }
            other => panic!("status {other}: {body}"),
        }
    }
    let (body, took) = refused.expect("a request was refused once the path was full");
    assert!(
        body.contains("the event queue stayed full for 500 ms (INGEST_ENQUEUE_TIMEOUT_MS)"),
        "{body}"
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "refused after waiting the enqueue timeout: {took:?}"
    );
    assert!(total >= 1_000, "the path held {total} events");
    // The gate sees the refusals: the queue's rejections and the route's 5xx.
    let snap = common::get(svc.debug, "/debug/perfkit/snapshot").json();
    let events = common::entry(&snap, "queues", "events");
    assert!(events["rejected"].as_u64().unwrap() > 0, "{events}");
    let route = common::entry(&snap, "http_routes", "POST /events");
    assert!(route["errors"].as_u64().unwrap() > 0, "{route}");
    // The inventory states the most the path can lose in a crash.
    let inv = common::get(svc.debug, "/debug/perfkit/inventory").json();
    let exposure = inv["crash_exposure"]["items"].as_u64().unwrap();
    assert_eq!(
        exposure,
        100 + (256 + 1) + (1024 + 10),
        "{}",
        inv["crash_exposure"]
    );
    // The forwarder holds one more, between the queue and the pool.
    assert!(
        total <= exposure + 1,
        "{total} accepted, {exposure} at most in memory"
    );

    // SIGTERM with a stuck database: out within the shutdown timeout, every event counted.
    let stopped = svc.stop_within(Duration::from_secs(4));
    assert_eq!(stopped.accepted, total, "{stopped:?}");
    assert_eq!(stopped.applied, 0, "{stopped:?}");
    assert_eq!(stopped.dropped, total, "{stopped:?}");
}

#[test]
#[ignore = "needs a built ingest binary; scripts/test.sh builds it and runs ignored tests"]
fn a_slow_database_flushes_what_it_can_before_the_shutdown_deadline() {
    let d = dir("faults_slow_db");
    // 50 events per flush, 200 ms each: 250 events/s get written.
    let svc = start_service(
        &d.join("ingest.log"),
        &[
            ("INGEST_FLUSH_DELAY_MS", "200"),
            ("INGEST_MAX_BATCH", "50"),
            ("INGEST_SHUTDOWN_TIMEOUT_MS", "3000"),
        ],
    );
    let mut total = 0;
    for i in 0..10 {
        let (status, body, _) = post_events(svc.app, 1000, &format!("u{i}"));
        assert_eq!(status, 202, "{body}");
        total += accepted(&body);
    }
    let stopped = svc.stop_within(Duration::from_secs(3));
    assert_eq!(stopped.accepted, total);
    assert!(
        stopped.applied >= 250,
        "writes went on until the deadline: {stopped:?}"
    );
    assert!(
        stopped.dropped > 0,
        "10 000 events cannot be written in 3 s: {stopped:?}"
    );
    assert!(
        stopped
            .log
            .contains("perfkit batcher shutdown deadline passed"),
        "{}",
        stopped.log
    );
}

#[test]
#[ignore = "needs a built ingest binary; scripts/test.sh builds it and runs ignored tests"]
fn bad_configuration_is_refused_at_start_with_one_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "INGEST_WORKERS",
            "4294967295",
            "expected a whole number from 1 to 1024",
        ),
        (
            "INGEST_WORKERS",
            "0",
            "expected a whole number from 1 to 1024",
        ),
        (
            "INGEST_QUEUE_CAPACITY",
            "10000001",
            "expected a whole number from 1 to 10000000",
        ),
        (
            "INGEST_MAX_BATCH",
            "100001",
            "expected a whole number from 1 to 100000",
        ),
        (
            "INGEST_FLUSH_INTERVAL_MS",
            "0",
            "expected a whole number from 1 to 3600000",
        ),
        (
            "INGEST_FLUSH_DELAY_MS",
            "-1",
            "expected a whole number from 0 to 3600000",
        ),
        (
            "INGEST_WORK_DELAY_US",
            "10000001",
            "expected a whole number from 0 to 10000000",
        ),
        (
            "INGEST_SHUTDOWN_TIMEOUT_MS",
            "99",
            "expected a whole number from 100 to 3600000",
        ),
        (
            "INGEST_MAX_CONNECTIONS",
            "65537",
            "expected a whole number from 1 to 65536",
        ),
        (
            "INGEST_HEADER_TIMEOUT_MS",
            "5",
            "expected a whole number from 100 to 600000",
        ),
        (
            "INGEST_REQUEST_TIMEOUT_MS",
            "1e3",
            "expected a whole number from 100 to 600000",
        ),
        (
            "INGEST_ENQUEUE_TIMEOUT_MS",
            "20000",
            "must be below INGEST_REQUEST_TIMEOUT_MS",
        ),
        (
            "INGEST_QUEUE_POLICY",
            "fifo",
            "expected block, reject, drop_oldest or drop_newest",
        ),
        ("INGEST_LEAK_TASKS", "yes", "expected 1 or 0"),
        ("INGEST_ADDR", "localhost", "expected IP:PORT"),
    ];
    for (var, value, reason) in cases {
        let started = Instant::now();
        let out = Command::new(ingest_bin())
            .env(var, value)
            .env(
                "INGEST_ADDR",
                if *var == "INGEST_ADDR" {
                    value
                } else {
                    "127.0.0.1:0"
                },
            )
            .env("PERFKIT_ADDR", "127.0.0.1:0")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{var}={value}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{var}={value} was not refused at once"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{var}={value}: one line, got {err}");
        assert!(
            lines[0].starts_with(&format!("ingest: error: invalid {var}=\"{value}\": "))
                && lines[0].contains(reason),
            "{var}={value}: {}",
            lines[0]
        );
    }
}

/// Whether the server closed `s` within `within` (EOF or reset), without sending anything.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0))
        || matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

#[test]
#[ignore = "needs a built ingest binary; scripts/test.sh builds it and runs ignored tests"]
fn the_api_closes_idle_and_half_sent_connections_and_caps_open_ones() {
    let d = dir("faults_api_connections");
    let svc: Service = start_service(
        &d.join("ingest.log"),
        &[
            ("INGEST_MAX_CONNECTIONS", "2"),
            ("INGEST_HEADER_TIMEOUT_MS", "700"),
        ],
    );
    // Two connections hold both slots: one silent, one half-way through its head.
    let mut silent = TcpStream::connect(svc.app).unwrap();
    let mut halfway = TcpStream::connect(svc.app).unwrap();
    halfway
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // A third waits in the backlog: its request is not answered while both are held...
    let mut third = TcpStream::connect(svc.app).unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(
        third.read(&mut buf).is_err(),
        "answered past the connection cap"
    );
    // ... the header timeout closes both holders ...
    let started = Instant::now();
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)),
        "the silent connection stays open"
    );
    assert!(
        closed_within(&mut halfway, Duration::from_secs(3)),
        "the half-sent head stays open"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // ... and the third is served.
    third
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let r = common::read_response(&mut third);
    assert_eq!((r.status, r.text()), (200, "ok".to_owned()));
    // An idle keep-alive connection is closed after its answer, too.
    let mut idle = TcpStream::connect(svc.app).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let n = idle.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut idle, Duration::from_secs(3)),
        "the idle connection stays open"
    );
    svc.stop();
}

#[test]
#[ignore = "needs a built ingest binary; scripts/test.sh builds it and runs ignored tests"]
fn sixty_concurrent_heap_flame_graphs_cost_about_one() {
    let d = dir("faults_heap_dumps");
    let svc = start_service(&d.join("ingest.log"), &[]);
    let path = "/debug/pprof/heap?format=flamegraph";
    // One request first: the peak it takes is the baseline.
    let one = common::get(svc.debug, path);
    assert_eq!(one.status, 200, "{}", one.text());
    let after_one = svc.status_bytes("VmHWM");
    let debug = svc.debug;
    let answers: Vec<_> = (0..60)
        .map(|_| std::thread::spawn(move || common::get(debug, path)))
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for a in answers {
        let r = a.join().unwrap();
        if r.status == 200 {
            assert!(r.text().contains("<svg"), "not a flame graph");
        }
        *statuses.entry(r.status).or_insert(0) += 1;
    }
    let after_sixty = svc.status_bytes("VmHWM");
    eprintln!(
        "peak RSS after one heap flame graph {:.1} MiB, after 60 concurrent ones {:.1} MiB; answers {statuses:?}",
        after_one as f64 / 1048576.0,
        after_sixty as f64 / 1048576.0
    );
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 409),
        "shared or refused with the reason: {statuses:?}"
    );
    assert!(
        statuses.get(&200).copied().unwrap_or(0) >= 1,
        "{statuses:?}"
    );
    assert!(
        after_sixty <= after_one + 32 * 1024 * 1024,
        "60 concurrent heap dumps raised the peak by {:.1} MiB",
        (after_sixty - after_one) as f64 / 1048576.0
    );
    svc.stop();
}
