//! The debug server under hostile clients and faults, over real loopback sockets:
//! connections that trickle their request heads a byte a second and reconnect as soon as they
//! are closed must not keep a client with a whole request from its answer, and a process out
//! of file descriptors still answers (503) and recovers when they come back.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use perfkit::Builder;

/// Connections that each send a request head one byte per second, never finishing it, and
/// reconnect at once when the server closes them. Runs on its own thread and runtime until
/// `stop` is set; counts the connections it opened.
fn slow_loris(
    addr: SocketAddr,
    conns: usize,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for _ in 0..conns {
                let stop = Arc::clone(&stop);
                let opened = Arc::clone(&opened);
                tasks.push(tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ";
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        opened.fetch_add(1, Ordering::Relaxed);
                        let (mut rd, mut wr) = s.split();
                        let trickle = async {
                            for &b in head.iter().chain(std::iter::repeat(&b'a')) {
                                if wr.write_all(&[b]).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        };
                        let mut sink = [0u8; 256];
                        // Closed (or answered) by the server: reconnect.
                        tokio::select! {
                            () = trickle => {}
                            _ = rd.read(&mut sink) => {}
                        }
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
    })
}

/// One whole request on a fresh connection; its status and how long the answer took.
fn whole_request(addr: SocketAddr, path: &str) -> (Option<u16>, Duration) {
    let started = Instant::now();
    let status = (|| {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        std::str::from_utf8(raw.get(9..12)?).ok()?.parse().ok()
    })();
    (status, started.elapsed())
}

#[test]
fn trickling_heads_do_not_starve_whole_requests() {
    let server = Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .facade(false)
        .start()
        .unwrap();
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let attack = slow_loris(addr, 300, Arc::clone(&stop), Arc::clone(&opened));
    // Let the attack fill every slot first.
    std::thread::sleep(Duration::from_secs(2));
    let attack_len = Duration::from_secs(30);
    let started = Instant::now();
    let mut results = Vec::new();
    while started.elapsed() < attack_len {
        let path = if results.len() % 2 == 0 {
            "/metrics"
        } else {
            "/debug/perfkit/snapshot"
        };
        results.push(whole_request(addr, path));
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let opened = opened.load(Ordering::Relaxed);
    attack.join().unwrap();
    let n = results.len();
    let fast = results
        .iter()
        .filter(|(status, took)| *status == Some(200) && *took <= Duration::from_millis(100))
        .count();
    let failures: Vec<_> = results.iter().filter(|(s, _)| *s != Some(200)).collect();
    let mut latencies: Vec<Duration> = results.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    eprintln!(
        "{n} requests during the attack: {fast} answered 200 within 100 ms, {} not answered 200, p50 {:?}, p99 {:?}, max {:?}; the attack opened {opened} connections",
        failures.len(),
        latencies[n / 2],
        latencies[(n * 99 / 100).min(n - 1)],
        latencies[n - 1]
    );
    assert!(n >= 300, "too few requests to judge: {n}");
    assert!(
        opened >= 300,
        "the attack never got going: {opened} connections"
    );
    assert!(
        fast * 100 >= n * 99,
        "only {fast} of {n} requests answered 200 within 100 ms; failures: {:?}",
        &failures[..failures.len().min(10)]
    );
}

/// The child side of the file-descriptor test: a debug server in a process whose descriptor
/// limit is low, driven by commands on stdin (`exhaust`, `release`, `exit`).
fn fd_child() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .init();
    let lim = libc::rlimit {
        rlim_cur: 256,
        rlim_max: 256,
    };
    // SAFETY: setrlimit reads the struct it is given.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let server = Builder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .facade(false)
        .start()
        .unwrap();
    println!("addr {}", server.local_addr());
    let mut held = Vec::new();
    for line in std::io::stdin().lock().lines() {
        match line.unwrap().trim() {
            "exhaust" => {
                // Keep taking for a while: a connection the server is still closing frees
                // its descriptor a little later.
                let until = std::time::Instant::now() + Duration::from_millis(300);
                while std::time::Instant::now() < until {
                    while let Ok(f) = std::fs::File::open("/dev/null") {
                        held.push(f);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                println!("exhausted {}", held.len());
            }
            "release" => {
                held.clear();
                println!("released");
            }
            _ => break,
        }
    }
    drop(server);
}

#[test]
fn out_of_file_descriptors_answers_503_and_recovers() {
    if std::env::var_os("PERFKIT_FD_CHILD").is_some() {
        return fd_child();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "out_of_file_descriptors_answers_503_and_recovers",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PERFKIT_FD_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let child = Kill(child);
    let mut said = |want: &str| -> String {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "the child exited before saying {want}"
            );
            // libtest may have put its own `test ... ` before the child's first line.
            if let Some(at) = line.find(want) {
                return line[at..].trim().to_owned();
            }
        }
    };
    let addr: SocketAddr = said("addr ")["addr ".len()..].parse().unwrap();
    assert_eq!(common::get(addr, "/metrics").status, 200);

    writeln!(stdin, "exhaust").unwrap();
    let exhausted = said("exhausted ");
    eprintln!("child: {exhausted}");
    for _ in 0..3 {
        let r = common::get(addr, "/metrics");
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.text(), "the process is out of file descriptors\n");
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.header("x-go-pprof"), Some("1"));
    }

    writeln!(stdin, "release").unwrap();
    said("released");
    let r = common::get(addr, "/metrics");
    assert_eq!(
        r.status,
        200,
        "served again at once when descriptors come back: {}",
        r.text()
    );

    writeln!(stdin, "exit").unwrap();
    drop(stdin);
    let mut log = String::new();
    stderr.read_to_string(&mut log).unwrap();
    drop(child);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("out of file descriptors"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one log line per 10 s, with a count:\n{log}"
    );
    assert!(lines[0].contains("count=1"), "{}", lines[0]);
}
