//! A real Prometheus server (Debian's `prometheus`): its own config and storage in a temp
//! dir, 1 s scrapes and rule evaluations, on a free port, stopped on drop.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Percent-encodes a query parameter value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts the server in `dir`, scraping `targets` as job `job` every second with the
    /// rule files `rules` loaded, and waits until it is ready.
    pub fn start(dir: &Path, job: &str, targets: &[SocketAddr], rules: &[&Path]) -> Self {
        let bin = super::tool("PROMETHEUS", "prometheus", &[]);
        let rule_files: String = rules
            .iter()
            .map(|r| format!("  - {}\n", r.display()))
            .collect();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{}scrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
                if rule_files.is_empty() { String::new() } else { format!("rule_files:\n{rule_files}") },
                targets.join(", ")
            ),
        )
        .unwrap();
        let port = super::free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let prom = Prometheus {
            child: Command::new(&bin)
                .arg(format!(
                    "--config.file={}",
                    dir.join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start prometheus"),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(prom.addr).is_err()
            || super::get(prom.addr, "/-/ready").status != 200
        {
            assert!(
                Instant::now() < deadline,
                "prometheus did not get ready: {}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        prom
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        let r = super::get(self.addr, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()
    }

    /// The instant vector `query` evaluates to now.
    pub fn query(&self, query: &str) -> Vec<serde_json::Value> {
        let v = self.get(&format!("/api/v1/query?query={}", encode(query)));
        assert_eq!(v["status"], "success", "{query}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}
