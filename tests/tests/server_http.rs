//! The debug server over real loopback HTTP: routing, status codes, auth, limits.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{get, request};
use perfkit::{BuildError, Builder, DebugServer};

fn start() -> DebugServer {
    Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .start()
        .expect("start debug server")
}

#[test]
fn metrics_is_prometheus_text() {
    let s = start();
    let r = get(s.local_addr(), "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = r.text();
    assert!(
        body.contains("# TYPE process_resident_memory_bytes gauge"),
        "{body}"
    );
    assert!(body.contains("process_start_time_seconds "), "{body}");
}

/// Prometheus sends `Accept-Encoding: gzip`: the text comes gzipped, the same families.
#[test]
fn metrics_are_gzipped_when_the_scraper_accepts_it() {
    let s = start();
    let plain = get(s.local_addr(), "/metrics");
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("vary"), Some("Accept, Accept-Encoding"));
    let gz = request(
        s.local_addr(),
        "GET",
        "/metrics",
        &[("Accept-Encoding", "gzip, deflate")],
    );
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("Accept, Accept-Encoding"));
    assert_eq!(
        gz.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_string(&mut text)
        .expect("a gzip body");
    let families = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# TYPE "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(families(&text), families(&plain.text()));
    assert!(
        gz.body.len() * 2 < text.len(),
        "{} of {}",
        gz.body.len(),
        text.len()
    );
    // A q-value of 0 refuses it.
    let refused = request(
        s.local_addr(),
        "GET",
        "/metrics",
        &[("Accept-Encoding", "gzip;q=0")],
    );
    assert_eq!(refused.header("content-encoding"), None);
    assert!(
        refused
            .text()
            .contains("# TYPE process_resident_memory_bytes gauge")
    );
}

#[test]
fn facade_metrics_appear_on_the_same_endpoint() {
    let s = start();
    metrics::describe_counter!("test_facade_jobs_total", "Jobs seen by the test.");
    metrics::counter!("test_facade_jobs_total", "kind" => "demo").increment(7);
    metrics::histogram!("test_facade_latency_seconds").record(0.25);
    let body = get(s.local_addr(), "/metrics").text();
    assert!(
        body.contains("test_facade_jobs_total{kind=\"demo\"} 7"),
        "{body}"
    );
    assert!(
        body.contains("test_facade_latency_seconds_count 1"),
        "{body}"
    );
}

#[test]
fn runtime_metrics_for_registered_runtimes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .runtime("test-rt", rt.handle().clone())
        .start()
        .unwrap();
    let body = get(s.local_addr(), "/metrics").text();
    assert!(
        body.contains("tokio_runtime_workers{runtime=\"test-rt\"} 2"),
        "{body}"
    );
    assert!(
        body.contains("tokio_runtime_worker_busy_seconds_total{runtime=\"test-rt\",worker=\"1\"}")
    );
    assert!(body.contains("tokio_runtime_worker_park_total{runtime=\"test-rt\",worker=\"0\"}"));
    let snap = get(s.local_addr(), "/debug/perfkit/snapshot").json();
    let rts = snap["runtimes"].as_array().unwrap();
    assert!(
        rts.iter()
            .any(|r| r["name"] == "test-rt" && r["workers"] == 2),
        "{snap}"
    );
    // The probe wakes every 100 ms on the runtime and records how late it was.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rt = loop {
        let snap = get(s.local_addr(), "/debug/perfkit/snapshot").json();
        let rt = common::entry(&snap, "runtimes", "test-rt").clone();
        if rt["schedule_delay_seconds"]["count"].as_u64().unwrap() >= 5 || Instant::now() > deadline
        {
            break rt;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let delay = &rt["schedule_delay_seconds"];
    assert!(delay["count"].as_u64().unwrap() >= 5, "{rt}");
    assert!(
        delay["p99"].as_f64().unwrap() < 0.1,
        "an idle runtime is not late: {rt}"
    );
    let buckets = delay["buckets"].as_array().unwrap();
    let in_buckets: u64 = buckets.iter().map(|b| b[1].as_u64().unwrap()).sum();
    assert_eq!(in_buckets, delay["count"].as_u64().unwrap(), "{rt}");
    let body = get(s.local_addr(), "/metrics").text();
    assert!(
        body.contains("perfkit_runtime_schedule_delay_seconds_count{runtime=\"test-rt\"}"),
        "{body}"
    );
    assert_eq!(
        perfkit::task::dump()
            .iter()
            .filter(|t| t.name == "perfkit.runtime.probe")
            .count(),
        1,
        "one probe per registered runtime"
    );
    drop(rt);
}

#[test]
fn snapshot_and_inventory_have_every_section() {
    let s = start();
    for path in ["/debug/perfkit/snapshot", "/debug/perfkit/inventory"] {
        let r = get(s.local_addr(), path);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        let v = r.json();
        assert_eq!(v["schema_version"], 1);
        for section in perfkit::metrics::SECTIONS {
            assert!(v[section].is_array(), "{path} lacks {section}: {v}");
        }
    }
    let snap = get(s.local_addr(), "/debug/perfkit/snapshot").json();
    assert!(snap["process"]["resident_memory_bytes"].as_u64().unwrap() > 0);
    let inv = get(s.local_addr(), "/debug/perfkit/inventory").json();
    assert_eq!(inv["server"]["auth"], "none");
    assert_eq!(inv["server"]["addr"], s.local_addr().to_string());
}

#[test]
fn index_cmdline_and_k6_module() {
    let s = start();
    let idx = get(s.local_addr(), "/debug/pprof/");
    assert_eq!(idx.status, 200);
    assert!(idx.text().contains("href=\"cmdline\""));
    let redirect = get(s.local_addr(), "/debug/pprof");
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), Some("/debug/pprof/"));
    let cmd = get(s.local_addr(), "/debug/pprof/cmdline");
    assert_eq!(cmd.status, 200);
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(cmd.text(), args.join("\0"));
    let k6 = get(s.local_addr(), "/debug/perfkit/k6.js");
    assert_eq!(k6.status, 200);
    let repo_copy = std::fs::read(common::workspace_root().join("perfkit/k6/perfkit.js")).unwrap();
    assert_eq!(
        k6.body, repo_copy,
        "served k6 module differs from perfkit/k6/perfkit.js"
    );
}

#[test]
fn errors_are_one_line_with_the_right_status() {
    let s = start();
    let a = s.local_addr();
    let cases = [
        ("GET", "/nope", 404, "unknown path /nope"),
        ("POST", "/metrics", 405, "method POST not allowed"),
        ("DELETE", "/debug/perfkit/snapshot", 405, "use GET"),
        ("GET", "/metrics?x=1", 400, "unknown query parameter `x`"),
        (
            "GET",
            "/debug/perfkit/snapshot?%zz=1",
            400,
            "malformed query parameter",
        ),
        ("GET", "/metrics?a%=1", 400, "malformed"),
    ];
    for (method, path, status, reason) in cases {
        let r = request(a, method, path, &[]);
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        let text = r.text();
        assert!(text.contains(reason), "{method} {path}: {text}");
        assert_eq!(
            text.lines().count(),
            1,
            "{method} {path}: not one line: {text:?}"
        );
        assert!(text.ends_with('\n'));
    }
    let r = request(a, "POST", "/metrics", &[]);
    assert_eq!(r.header("allow"), Some("GET"));
}

#[test]
fn request_bodies_are_never_read() {
    let s = start();
    // A POST with a body it will never read still gets its 405, without hanging.
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .unwrap();
    let r = common::read_response(&mut c);
    assert_eq!(r.status, 405);
}

#[test]
fn token_is_required_on_every_endpoint() {
    let s = Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .token("s3cret-token")
        .start()
        .unwrap();
    let a = s.local_addr();
    for path in [
        "/metrics",
        "/debug/pprof/",
        "/debug/perfkit/snapshot",
        "/nope",
    ] {
        let r = get(a, path);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"perfkit\"")
        );
        let wrong = request(a, "GET", path, &[("Authorization", "Bearer s3cret-tokeN")]);
        assert_eq!(wrong.status, 401, "{path}");
        let basic = request(a, "GET", path, &[("Authorization", "Basic s3cret-token")]);
        assert_eq!(basic.status, 401, "{path}");
    }
    let ok = request(
        a,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer s3cret-token")],
    );
    assert_eq!(ok.status, 200);
    let missing = request(
        a,
        "GET",
        "/nope",
        &[("Authorization", "Bearer s3cret-token")],
    );
    assert_eq!(missing.status, 404);
    let inv = request(
        a,
        "GET",
        "/debug/perfkit/inventory",
        &[("Authorization", "Bearer s3cret-token")],
    );
    assert_eq!(inv.json()["server"]["auth"], "bearer");
}

#[test]
fn non_loopback_bind_needs_a_token() {
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:6060"] {
        let err = Builder::new()
            .addr(addr.parse().unwrap())
            .start()
            .unwrap_err();
        assert!(
            matches!(err, BuildError::TokenRequired { .. }),
            "{addr}: {err}"
        );
        assert!(err.to_string().contains("without a token"), "{err}");
    }
    // With a token the same bind is allowed (any interface, port 0).
    let s = Builder::new()
        .addr("0.0.0.0:0".parse().unwrap())
        .token("t0ken")
        .start()
        .expect("token allows a non-loopback bind");
    let port = s.local_addr().port();
    let r = get(format!("127.0.0.1:{port}").parse().unwrap(), "/metrics");
    assert_eq!(r.status, 401);
}

#[test]
fn bad_settings_are_build_errors() {
    let e = Builder::new().token("").start().unwrap_err();
    assert!(matches!(e, BuildError::InvalidToken { .. }), "{e}");
    let e = Builder::new().token("has space").start().unwrap_err();
    assert!(matches!(e, BuildError::InvalidToken { .. }), "{e}");
    let e = Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .max_connections(0)
        .start()
        .unwrap_err();
    assert!(
        matches!(
            e,
            BuildError::InvalidSetting {
                setting: "max_connections",
                ..
            }
        ),
        "{e}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let e = Builder::new()
        .addr(taken.local_addr().unwrap())
        .start()
        .unwrap_err();
    assert!(matches!(e, BuildError::Bind { .. }), "{e}");
}

#[test]
fn at_the_cap_the_oldest_connection_not_running_a_request_makes_room() {
    let s = Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .max_connections(2)
        .start()
        .unwrap();
    // Two connections hold both slots: one says nothing, one is half-way through its head.
    let mut silent = TcpStream::connect(s.local_addr()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut halfway = TcpStream::connect(s.local_addr()).unwrap();
    halfway.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // A whole request still gets its answer...
    assert_eq!(get(s.local_addr(), "/metrics").status, 200);
    // ... in the place of the oldest, which was closed.
    silent
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(silent.read(&mut buf), Ok(0) | Err(_)),
        "the oldest idle connection is closed"
    );
    halfway
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let e = halfway.read(&mut buf).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "the younger one stays open: {e}"
    );
}

#[test]
fn when_every_connection_runs_a_request_newcomers_get_503() {
    let s = Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .max_connections(1)
        .start()
        .unwrap();
    let addr = s.local_addr();
    // The only slot runs a 2 s CPU profile.
    let profile = std::thread::spawn(move || get(addr, "/debug/pprof/profile?seconds=2").status);
    std::thread::sleep(Duration::from_millis(300));
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text(),
        "too many debug server connections running requests (cap 1)\n"
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-go-pprof"), Some("1"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(profile.join().unwrap(), 200);
    // The slot is free again.
    assert_eq!(get(addr, "/metrics").status, 200);
}

#[test]
fn slow_headers_time_out() {
    let s = Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .header_read_timeout(Duration::from_millis(300))
        .start()
        .unwrap();
    let mut c = TcpStream::connect(s.local_addr()).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap(); // never finished
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c, &mut buf);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "connection not closed by the header timeout"
    );
}

#[test]
fn shutdown_stops_listening() {
    let s = start();
    let addr = s.local_addr();
    assert_eq!(get(addr, "/metrics").status, 200);
    s.shutdown();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

// Compile-time guarantees: the guard and builder can move across threads.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<DebugServer>();
    send_sync::<Builder>();
    send_sync::<perfkit::metrics::Registry>();
    send_sync::<perfkit::metrics::Histogram>();
    send_sync::<perfkit::metrics::Counter>();
};
