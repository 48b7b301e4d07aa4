//! The real `ingest` example binary as a child process: start it on free ports, stop it with
//! SIGTERM and read its shutdown line, which must account for every accepted event.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Service {
    pub child: Child,
    pub base_url: String,
    pub perfkit_url: String,
    pub app: SocketAddr,
    pub debug: SocketAddr,
    /// The service's stderr, where its log goes.
    pub log: PathBuf,
}

/// The counts `ingest` logs when it stops, and how long it took after SIGTERM.
#[derive(Debug)]
pub struct Stopped {
    pub accepted: u64,
    pub applied: u64,
    pub dropped: u64,
    pub took: Duration,
    pub log: String,
}

impl Service {
    /// SIGTERM, wait for the graceful drain, and read the shutdown line's counts, which
    /// must account for every accepted event: applied to SQLite or counted as dropped.
    pub fn stop(self) -> Stopped {
        self.stop_within(Duration::from_secs(30))
    }

    /// [`Service::stop`], failing if the process takes longer than `limit` to exit.
    pub fn stop_within(mut self, limit: Duration) -> Stopped {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success());
        let signalled = Instant::now();
        let exit = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                signalled.elapsed() < limit,
                "ingest did not stop within {limit:?}:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = signalled.elapsed();
        let log = std::fs::read_to_string(&self.log).unwrap();
        assert!(exit.success(), "ingest exited with {exit}:\n{log}");
        let line = log
            .lines()
            .find(|l| l.contains("ingest stopped"))
            .unwrap_or_else(|| panic!("no shutdown line in:\n{log}"));
        let count = |key: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line}"))
        };
        let stopped = Stopped {
            accepted: count("accepted_events"),
            applied: count("applied_events"),
            dropped: count("dropped_events"),
            took,
            log: log.clone(),
        };
        assert_eq!(
            stopped.accepted,
            stopped.applied + stopped.dropped,
            "accepted = applied + dropped, exactly: {stopped:?}"
        );
        stopped
    }

    /// A line of `/proc/PID/status` in bytes, e.g. `VmHWM` (peak resident) or `VmRSS`.
    pub fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap();
        kib * 1024
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ingest_bin() -> PathBuf {
    let root = super::workspace_root();
    super::tool(
        "INGEST_BIN",
        "perfkit-ingest-not-on-path",
        &[
            root.join("target/release/ingest"),
            root.join("target/debug/ingest"),
        ],
    )
}

/// Starts `ingest` on free ports with `env`, its stdout in `log` and its stderr (the log
/// lines) next to it with the extension `.err`, and waits until both ports answer.
pub fn start_service(log: &Path, env: &[(&str, &str)]) -> Service {
    let (app, dbg) = (super::free_port(), super::free_port());
    let child = Command::new(ingest_bin())
        .envs(env.iter().copied())
        .env("INGEST_ADDR", format!("127.0.0.1:{app}"))
        .env("PERFKIT_ADDR", format!("127.0.0.1:{dbg}"))
        .env_remove("PERFKIT_TOKEN")
        .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
        .stderr(Stdio::from(
            std::fs::File::create(log.with_extension("err")).unwrap(),
        ))
        .spawn()
        .expect("start ingest");
    let svc = Service {
        child,
        base_url: format!("http://127.0.0.1:{app}"),
        perfkit_url: format!("http://127.0.0.1:{dbg}"),
        app: format!("127.0.0.1:{app}").parse().unwrap(),
        debug: format!("127.0.0.1:{dbg}").parse().unwrap(),
        log: log.with_extension("err"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for (addr, path) in [
        (svc.app, "/healthz"),
        (svc.debug, "/debug/perfkit/snapshot"),
    ] {
        loop {
            if TcpStream::connect(addr).is_ok() && super::get(addr, path).status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "service did not come up; see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    svc
}

/// POST a batch of `n` events for `user` to the example's `/events` over a raw socket and
/// read the answer to its end. Failures are ignored: the callers are load loops that run
/// while the service may be stopping.
pub fn post_events(addr: SocketAddr, n: usize, user: &str) {
    let event = format!(r#"{{"user_id":"{user}","stat":"kills","value":1}}"#);
    let body = format!("[{}]", vec![event.as_str(); n].join(","));
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.read_to_end(&mut Vec::new());
}
