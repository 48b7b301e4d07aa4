//! `perfkit-report`: the run report of every instance a Prometheus server scrapes, over a
//! time range (see `perfkit::fleet` and `docs/fleet.md`).
//!
//! ```text
//! perfkit-report --prometheus http://127.0.0.1:9090 --selector 'job="ingest"' --from -10m
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use perfkit::fleet::{FleetQuery, report};

const USAGE: &str = "usage: perfkit-report [--prometheus URL] [--selector MATCHERS] [--from TIME] [--to TIME]
                      [--rate-window DURATION] [--no-inventory] [--out DIR]

  --prometheus URL      the Prometheus server (default http://127.0.0.1:9090)
  --selector MATCHERS   label matchers every series must carry, e.g. 'job=\"ingest\"' (default: none)
  --from TIME, --to TIME  the range: Unix seconds, `now`, or now minus a duration (-90s, -10m, -2h);
                        default the last 10 minutes
  --rate-window DURATION  window of rates and quantiles (default 5s; at least twice the scrape interval)
  --no-inventory        do not read each instance's /debug/perfkit/inventory
                        (PERFKIT_TOKEN is sent as its bearer token when set)
  --out DIR             where fleet.json and one HTML page per instance go (default results/fleet)

Exit status: 0 with no finding of severity HIGH or CRITICAL, 1 with one, 2 on bad usage or
when Prometheus cannot answer.";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why the command stopped.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// The arguments are not understood.
    #[error("{0}\n{USAGE}")]
    Usage(String),
    /// `--from` or `--to` is not a time.
    #[error("not a time: {0:?} (Unix seconds, `now`, or now minus a duration: -90s, -10m, -2h)")]
    BadTime(String),
    /// The report could not be built.
    #[error(transparent)]
    Report(#[from] perfkit::fleet::FleetError),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No runtime to run the queries on.
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
}

/// `now`, Unix seconds, or `-<n><s|m|h>`.
fn time(v: &str, now: u64) -> Result<u64, CliError> {
    let bad = || CliError::BadTime(v.to_owned());
    if v == "now" {
        return Ok(now);
    }
    if let Some(rel) = v.strip_prefix('-') {
        let (n, unit) = rel.split_at(rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len()));
        let n: u64 = n.parse().map_err(|_| bad())?;
        let mult = match unit {
            "s" | "" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(bad()),
        };
        return Ok(now.saturating_sub(n * mult));
    }
    v.parse::<u64>().map_err(|_| bad())
}

fn write(path: &std::path::Path, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, bytes).map_err(|source| CliError::Write {
        path: path.to_owned(),
        source,
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("perfkit-report: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, CliError> {
    let now = now();
    let mut q = FleetQuery::new("http://127.0.0.1:9090", now.saturating_sub(600), now);
    q.token = std::env::var("PERFKIT_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let mut out = PathBuf::from("results/fleet");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| CliError::Usage(format!("{name} needs a value")))
        };
        match a.as_str() {
            "--prometheus" => q.prometheus = value("--prometheus")?,
            "--selector" => q.selector = value("--selector")?,
            "--from" => q.from = time(&value("--from")?, now)?,
            "--to" => q.to = time(&value("--to")?, now)?,
            "--rate-window" => q.rate_window = value("--rate-window")?,
            "--no-inventory" => q.inventory = false,
            "--out" => out = PathBuf::from(value("--out")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(CliError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let r = rt.block_on(report(&q))?;
    std::fs::create_dir_all(&out).map_err(|source| CliError::Write {
        path: out.clone(),
        source,
    })?;
    let path = out.join("fleet.json");
    let text = serde_json::to_string_pretty(r.json()).unwrap_or_default();
    write(&path, text.as_bytes())?;
    let json = r.json();
    let instances = r.instances();
    println!(
        "fleet: {} instance(s) from {} to {}: {}",
        instances.len(),
        q.from,
        q.to,
        instances.join(", ")
    );
    println!("fleet: report: {}", path.display());
    #[cfg(feature = "report-html")]
    for i in &instances {
        if let Some(page) = r.instance_html(i) {
            let file = out.join(format!("{}.html", i.replace([':', '/'], "_")));
            write(&file, page.as_bytes())?;
            println!("fleet: {i}: {}", file.display());
        }
    }
    for i in json["instances"].as_array().into_iter().flatten() {
        if let Some(e) = i["inventory_error"].as_str() {
            println!(
                "fleet: {}: no inventory ({e})",
                i["instance"].as_str().unwrap_or("")
            );
        }
    }
    let findings = json["findings"].as_array().cloned().unwrap_or_default();
    if findings.is_empty() {
        println!("fleet: no fleet finding");
    }
    for f in &findings {
        println!(
            "fleet: {} {} {}",
            f["id"].as_str().unwrap_or(""),
            f["severity"].as_str().unwrap_or(""),
            f["title"].as_str().unwrap_or("")
        );
    }
    let serious = json["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| {
            i["report"]["findings"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .chain(findings)
        .any(|f| f["severity"] == "HIGH" || f["severity"] == "CRITICAL");
    Ok(if serious {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::time;

    #[test]
    fn times_are_absolute_now_or_relative() {
        assert_eq!(time("now", 1000).ok(), Some(1000));
        assert_eq!(time("500", 1000).ok(), Some(500));
        assert_eq!(time("-90s", 1000).ok(), Some(910));
        assert_eq!(time("-10m", 1000).ok(), Some(400));
        assert_eq!(time("-1h", 10_000).ok(), Some(6400));
        assert!(time("-5d", 1000).is_err());
        assert!(time("yesterday", 1000).is_err());
    }
}
