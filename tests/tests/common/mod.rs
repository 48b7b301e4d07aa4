//! Helpers shared by the integration tests: a minimal HTTP/1.1 client over a raw socket (so
//! tests can send exactly what they mean, malformed requests included) and tool lookup.
#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod gate;
pub mod ingest;
pub mod postgres;
pub mod prometheus;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends `method path` with extra header lines and returns the response.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    read_response(&mut s)
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[])
}

pub fn read_response(s: &mut TcpStream) -> Resp {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut resp = Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    };
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        resp.body = dechunk(&resp.body);
    }
    resp
}

/// The body of a chunked transfer (other servers' answers; perfkit's are not chunked).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || raw.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[(eol + 4 + size).min(raw.len())..];
    }
}

/// The workspace root (the tests crate lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A fresh, empty `target/test-results/<name>` for a test's logs and files.
pub fn results_dir(name: &str) -> PathBuf {
    let dir = workspace_root().join("target/test-results").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Finds an external tool: the env var `var` if set, else `name` on PATH, else the given
/// fallbacks. Panics with instructions when it is missing: a real-client test must not pass
/// without its client.
pub fn tool(var: &str, name: &str, fallbacks: &[PathBuf]) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    for p in fallbacks {
        if p.is_file() {
            return p.clone();
        }
    }
    panic!("{name} not found (set {var} or put it on PATH); `bash scripts/test.sh` installs it");
}

/// A free loopback port (bound then released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The entry called `name` in a snapshot (or inventory) section such as `"queues"`,
/// `"pools"`, `"tasks"` or `"hot_paths"`; panics, showing the snapshot, if there is none.
pub fn entry(snap: &serde_json::Value, section: &str, name: &str) -> serde_json::Value {
    snap[section]
        .as_array()
        .unwrap_or_else(|| panic!("no section {section} in {snap}"))
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {section} entry {name} in {snap}"))
}

/// The alerts of a Prometheus rules file written as perfkit's are (`- alert: Name`, then an
/// `expr:` line ending in its threshold): `(name, line index of expr, expression before the
/// threshold, threshold)`.
pub fn alert_rules(rules: &str) -> Vec<(String, usize, String, String)> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.trim().strip_prefix("- alert: ") else {
            continue;
        };
        let (e, expr) = lines[i + 1..]
            .iter()
            .enumerate()
            .find_map(|(j, l)| l.trim().strip_prefix("expr: ").map(|x| (i + 1 + j, x)))
            .unwrap_or_else(|| panic!("{name}: no expr"));
        let (head, threshold) = expr.rsplit_once(' ').unwrap();
        let head = head
            .trim_end_matches(">=")
            .trim_end_matches('>')
            .trim_end_matches('<')
            .trim_end();
        out.push((name.to_owned(), e, head.to_owned(), threshold.to_owned()));
    }
    out
}

/// The k6 binary: `$K6`, `k6` on PATH, or the workspace's `.venv/bin/k6`.
pub fn k6() -> PathBuf {
    tool("K6", "k6", &[workspace_root().join(".venv/bin/k6")])
}

/// Writes `script` to `dir/script.js`, runs it with k6 and returns k6's exit status and
/// its output (stdout then stderr).
pub fn run_k6_script(dir: &std::path::Path, script: &str) -> (i32, String) {
    let path = dir.join("script.js");
    std::fs::write(&path, script).unwrap();
    let out = std::process::Command::new(k6())
        // No REST API server: k6 runs in parallel tests would race for its port (6565),
        // and the loser logs "Error from API server".
        .args(["run", "--quiet", "--no-usage-report", "--address", ""])
        .arg(&path)
        .output()
        .expect("run k6");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Runs the real `go tool pprof` with `args` (`GO`, else `go` on PATH), its home and temp
/// directory in `home`: whether it succeeded, its stdout and its stderr.
pub fn go_pprof(args: &[&str], home: &std::path::Path) -> (bool, String, String) {
    std::fs::create_dir_all(home).unwrap();
    let out = std::process::Command::new(tool("GO", "go", &[]))
        .args(["tool", "pprof"])
        .args(args)
        .env("HOME", home)
        .env("PPROF_TMPDIR", home)
        .output()
        .expect("run go tool pprof");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A multi-thread tokio runtime with `workers` workers, time and I/O enabled.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// A registry of the test's own that lives as long as the process (primitives borrow it).
pub fn own_registry() -> &'static perfkit::metrics::Registry {
    Box::leak(Box::new(perfkit::metrics::Registry::new()))
}
