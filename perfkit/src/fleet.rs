//! The run report of a fleet: the same report `/debug/perfkit/report` writes for one
//! instance, built for every instance a Prometheus server scrapes, from that server's
//! HTTP API over a time range, plus the findings only a fleet has ("instance 2 saturated its
//! pool first", "saturated on 1 of 3 instances").
//!
//! For each signal the in-process timeline keeps, one `query_range` (step 1 s) reads its
//! Prometheus equivalent for every instance at once, grouped by `instance`: a queue's
//! `perfkit_queue_depth_max_10s / perfkit_queue_capacity`, a route's p99 from its histogram
//! buckets, and so on. Each instance's figures become a timeline, and the
//! report engine the debug server uses turns it, with the instance's inventory (read from
//! its `/debug/perfkit/inventory`, the `instance` label being the debug server's address),
//! into that instance's report. Nothing is computed twice: the fleet findings compare the
//! instance reports.
//!
//! What differs from the in-process report, and why:
//! - **Peaks are 10 s peaks.** Saturations read the `_max_10s` gauges, so a peak between two
//!   scrapes is not missed; a saturated stretch then reads up to 10 s longer than it was.
//!   Its start is exact to the scrape interval.
//! - **Quantiles and rates are over `rate_window`** (default 5 s), not one second. With
//!   scrapes less often than every 2 s, raise it to at least twice the scrape interval.
//! - **Resolution is 1 s**, so a range holds at most 11 000 s (Prometheus's limit on the
//!   points of a range query); longer ranges are refused with [`FleetError::RangeTooLong`].
//!
//! ```no_run
//! # async fn run() -> Result<(), perfkit::fleet::FleetError> {
//! let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
//! let query = perfkit::fleet::FleetQuery::new("http://127.0.0.1:9090", now - 300, now);
//! let report = perfkit::fleet::report(&query).await?;
//! println!("{}", report.json()["findings"]);
//! # Ok(()) }
//! ```
//!
//! The `perfkit-report` command (`cargo install perfkit --features fleet`) does this from a
//! shell and saves the JSON and one HTML page per instance; `docs/fleet.md` has the recipe.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::server::report;

/// Fleet report schema version.
pub const SCHEMA_VERSION: u32 = 1;
/// The longest range a report covers, in seconds: Prometheus answers at most 11 000 points
/// per series, and the report reads one per second.
pub const MAX_RANGE_SECONDS: u64 = 11_000;
/// How long one request to Prometheus or an instance may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a fleet report could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The Prometheus address is not an `http://host:port` URL.
    #[error("the Prometheus address must be http://host[:port][/prefix], got {0:?}")]
    BadUrl(String),
    /// `from` is after `to`, or the range is empty.
    #[error("from ({from}) must be before to ({to})")]
    BadRange {
        /// Start, Unix seconds.
        from: u64,
        /// End, Unix seconds.
        to: u64,
    },
    /// The range is longer than [`MAX_RANGE_SECONDS`].
    #[error("the range is {seconds} s; at most {MAX_RANGE_SECONDS} s at one point per second")]
    RangeTooLong {
        /// Its length.
        seconds: u64,
    },
    /// `rate_window` is not a Prometheus duration such as `5s` or `1m`.
    #[error("rate_window must be a Prometheus duration such as 5s or 1m, got {0:?}")]
    BadWindow(String),
    /// Prometheus could not be reached.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// Prometheus answered with an error.
    #[error("{url} answered {status}: {message}")]
    Prometheus {
        /// What was asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Its error, or the start of its body.
        message: String,
    },
    /// No series matched the selector over the range.
    #[error(
        "no perfkit series matched {{{selector}}} between {from} and {to}: check the selector and that Prometheus scraped the instances then"
    )]
    NoInstances {
        /// The selector.
        selector: String,
        /// Start, Unix seconds.
        from: u64,
        /// End, Unix seconds.
        to: u64,
    },
}

/// What to report on: which Prometheus, which series, when.
#[derive(Debug, Clone)]
pub struct FleetQuery {
    /// The Prometheus server, `http://host:port` (a path prefix is kept, for a server behind
    /// `--web.route-prefix`).
    pub prometheus: String,
    /// Label matchers every series must carry, without braces, e.g. `job="ingest"`; empty
    /// for all.
    pub selector: String,
    /// Start, Unix seconds.
    pub from: u64,
    /// End, Unix seconds.
    pub to: u64,
    /// The window of rates and quantiles, a Prometheus duration (default `5s`).
    pub rate_window: String,
    /// Read each instance's inventory from `http://<instance>/debug/perfkit/inventory`
    /// (default true). Without it the reports have no configuration rows, no `file:line`
    /// and no policies.
    pub inventory: bool,
    /// The bearer token of the instances' debug servers, for the inventory.
    pub token: Option<String>,
}

impl FleetQuery {
    /// A query over `from..=to` of every series Prometheus holds, 5 s rates, inventories read.
    pub fn new(prometheus: impl Into<String>, from: u64, to: u64) -> Self {
        Self {
            prometheus: prometheus.into(),
            selector: String::new(),
            from,
            to,
            rate_window: "5s".into(),
            inventory: true,
            token: None,
        }
    }

    /// Only series carrying these label matchers, e.g. `job="ingest"`.
    pub fn selector(mut self, selector: impl Into<String>) -> Self {
        self.selector = selector.into();
        self
    }
}

/// A fleet report: the JSON document and each instance's timeline (for its HTML page).
#[derive(Debug, Clone)]
pub struct FleetReport {
    json: Value,
    timelines: BTreeMap<String, Value>,
}

impl FleetReport {
    /// The report (schema in `docs/fleet.md`).
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// The instances, in the report's order.
    pub fn instances(&self) -> Vec<String> {
        self.timelines.keys().cloned().collect()
    }

    /// One instance's report as the same self-contained HTML page the debug server serves.
    #[cfg(feature = "report-html")]
    #[cfg_attr(docsrs, doc(cfg(feature = "report-html")))]
    pub fn instance_html(&self, instance: &str) -> Option<String> {
        let timeline = self.timelines.get(instance)?;
        let report = self.json["instances"]
            .as_array()?
            .iter()
            .find(|i| i["instance"] == instance)?;
        Some(crate::server::report_html::render(
            &report["report"],
            timeline,
        ))
    }
}

/// One timeline signal and the PromQL that gives it per instance. `%S` stands for the
/// selector's matchers, `%W` for the rate window; the result must be grouped by `instance`
/// and `labels`.
struct Signal {
    section: &'static str,
    signal: &'static str,
    unit: &'static str,
    /// The labels naming the element, joined with a space (a route is `METHOD route`).
    labels: &'static [&'static str],
    promql: &'static str,
}

macro_rules! signals {
    ($($section:literal $signal:literal $unit:literal [$($label:literal),*] => $promql:expr;)*) => {
        &[$(Signal { section: $section, signal: $signal, unit: $unit, labels: &[$($label),*], promql: $promql }),*]
    };
}

/// Every signal of the in-process timeline that Prometheus has an equivalent for.
const SIGNALS: &[Signal] = signals! {
    "process" "resident_memory_bytes" "bytes" [] => "max by (instance) (process_resident_memory_bytes{%S})";
    "process" "heap_bytes" "bytes" [] => "max by (instance) (perfkit_heap_allocated_bytes{%S})";
    "process" "cpu_seconds_per_second" "ratio" [] => "max by (instance) (rate(process_cpu_seconds_total{%S}[%W]))";
    "process" "threads" "count" [] => "max by (instance) (process_threads{%S})";
    "process" "open_fds" "count" [] => "max by (instance) (process_open_fds{%S})";
    "runtimes" "schedule_delay_p99_seconds" "seconds" ["runtime"] => "histogram_quantile(0.99, sum by (instance, runtime, le) (rate(perfkit_runtime_schedule_delay_seconds_bucket{%S}[%W])))";
    "runtimes" "busy_ratio" "ratio" ["runtime"] => "sum by (instance, runtime) (rate(tokio_runtime_worker_busy_seconds_total{%S}[%W])) / max by (instance, runtime) (tokio_runtime_workers{%S})";
    "runtimes" "alive_tasks_max" "count" ["runtime"] => "max by (instance, runtime) (tokio_runtime_alive_tasks{%S})";
    "queues" "depth_max" "count" ["queue"] => "max by (instance, queue) (perfkit_queue_depth_max_10s{%S})";
    "queues" "saturation_max" "ratio" ["queue"] => "max by (instance, queue) (perfkit_queue_depth_max_10s{%S}) / max by (instance, queue) (perfkit_queue_capacity{%S})";
    "queues" "wait_p99_seconds" "seconds" ["queue"] => "histogram_quantile(0.99, sum by (instance, queue, le) (rate(perfkit_queue_wait_seconds_bucket{%S}[%W])))";
    "queues" "enqueued_per_second" "count" ["queue"] => "sum by (instance, queue) (rate(perfkit_queue_enqueued_total{%S}[%W]))";
    "queues" "dropped_per_second" "count" ["queue"] => "sum by (instance, queue) (rate(perfkit_queue_dropped_total{%S}[%W]))";
    "queues" "rejected_per_second" "count" ["queue"] => "sum by (instance, queue) (rate(perfkit_queue_rejected_total{%S}[%W]))";
    "batchers" "pending_max" "count" ["batcher"] => "max by (instance, batcher) (perfkit_batch_pending_max_10s{%S})";
    "batchers" "batch_size_p50" "count" ["batcher"] => "histogram_quantile(0.5, sum by (instance, batcher, le) (rate(perfkit_batch_size_bucket{%S}[%W])))";
    "batchers" "flush_p99_seconds" "seconds" ["batcher"] => "histogram_quantile(0.99, sum by (instance, batcher, le) (rate(perfkit_batch_flush_seconds_bucket{%S}[%W])))";
    "batchers" "flushed_per_second" "count" ["batcher"] => "sum by (instance, batcher) (rate(perfkit_batch_items_total{%S,outcome=\"flushed\"}[%W]))";
    "batchers" "dead_lettered_per_second" "count" ["batcher"] => "sum by (instance, batcher) (rate(perfkit_batch_items_total{%S,outcome=\"dead_lettered\"}[%W]))";
    "batchers" "dropped_per_second" "count" ["batcher"] => "sum by (instance, batcher) (rate(perfkit_queue_dropped_total{%S,batcher!=\"\",reason=\"flush_failed\"}[%W]))";
    "pools" "busy_ratio" "ratio" ["pool"] => "sum by (instance, pool) (rate(perfkit_pool_busy_seconds_total{%S}[%W])) / max by (instance, pool) (perfkit_pool_workers{%S})";
    "pools" "busy_max" "count" ["pool"] => "max by (instance, pool) (perfkit_pool_busy_max_10s{%S})";
    "pools" "depth" "count" ["pool"] => "max by (instance, pool) (perfkit_queue_depth{%S,pool!=\"\"})";
    "pools" "task_p99_seconds" "seconds" ["pool"] => "histogram_quantile(0.99, sum by (instance, pool, le) (rate(perfkit_pool_task_seconds_bucket{%S}[%W])))";
    "pools" "panics_per_second" "count" ["pool"] => "sum by (instance, pool) (rate(perfkit_pool_tasks_total{%S,outcome=\"panic\"}[%W]))";
    "locks" "wait_p99_seconds" "seconds" ["lock"] => "histogram_quantile(0.99, sum by (instance, lock, le) (rate(perfkit_lock_wait_seconds_bucket{%S}[%W])))";
    "locks" "waiters_max" "count" ["lock"] => "max by (instance, lock) (perfkit_lock_waiters_max_10s{%S})";
    "locks" "contended_ratio" "ratio" ["lock"] => "sum by (instance, lock) (rate(perfkit_lock_acquisitions_total{%S,contended=\"true\"}[%W])) / sum by (instance, lock) (rate(perfkit_lock_acquisitions_total{%S}[%W]))";
    "semaphores" "saturation_max" "ratio" ["semaphore"] => "max by (instance, semaphore) (perfkit_semaphore_in_use_max_10s{%S}) / max by (instance, semaphore) (perfkit_semaphore_permits{%S})";
    "semaphores" "waiters_max" "count" ["semaphore"] => "max by (instance, semaphore) (max_over_time(perfkit_semaphore_waiters{%S}[%W]))";
    "semaphores" "acquire_p99_seconds" "seconds" ["semaphore"] => "histogram_quantile(0.99, sum by (instance, semaphore, le) (rate(perfkit_semaphore_acquire_seconds_bucket{%S}[%W])))";
    "semaphores" "timeouts_per_second" "count" ["semaphore"] => "sum by (instance, semaphore) (rate(perfkit_semaphore_timeouts_total{%S}[%W]))";
    "resources" "saturation_max" "ratio" ["resource"] => "max by (instance, resource) (perfkit_resource_in_use_max_10s{%S}) / max by (instance, resource) (perfkit_resource_max{%S})";
    "resources" "in_use_max" "count" ["resource"] => "max by (instance, resource) (perfkit_resource_in_use_max_10s{%S})";
    "resources" "waiters_max" "count" ["resource"] => "max by (instance, resource) (max_over_time(perfkit_resource_waiters{%S}[%W]))";
    "resources" "acquire_p99_seconds" "seconds" ["resource"] => "histogram_quantile(0.99, sum by (instance, resource, le) (rate(perfkit_resource_acquire_seconds_bucket{%S}[%W])))";
    "resources" "timeouts_per_second" "count" ["resource"] => "sum by (instance, resource) (rate(perfkit_resource_timeouts_total{%S}[%W]))";
    "resources" "errors_per_second" "count" ["resource"] => "sum by (instance, resource) (rate(perfkit_resource_errors_total{%S}[%W]))";
    "tasks" "alive_max" "count" ["task"] => "max by (instance, task) (perfkit_tasks_alive_max_10s{%S})";
    "hot_paths" "p99_seconds" "seconds" ["function"] => "histogram_quantile(0.99, sum by (instance, function, le) (rate(perfkit_hot_path_seconds_bucket{%S}[%W])))";
    "hot_paths" "calls" "count" ["function"] => "sum by (instance, function) (rate(perfkit_hot_path_calls_total{%S}[%W]))";
    "hot_paths" "errors_per_second" "count" ["function"] => "sum by (instance, function) (rate(perfkit_hot_path_calls_total{%S,outcome=~\"err|panic\"}[%W]))";
    "http_routes" "p99_seconds" "seconds" ["method", "route"] => "histogram_quantile(0.99, sum by (instance, method, route, le) (rate(http_server_request_duration_seconds_bucket{%S}[%W])))";
    "http_routes" "requests" "count" ["method", "route"] => "sum by (instance, method, route) (rate(http_server_request_duration_seconds_count{%S}[%W]))";
    "http_routes" "errors_per_second" "count" ["method", "route"] => "sum by (instance, method, route) (rate(http_server_request_duration_seconds_count{%S,status=~\"5..\"}[%W]))";
};

/// The items each queue dropped over the range, by reason: the snapshot's `dropped`, which
/// the report quotes.
const DROPPED_BY_REASON: &str =
    "sum by (instance, queue, reason) (increase(perfkit_queue_dropped_total{%S}[%R]))";

/// `template` with the selector's matchers and the window put in.
fn promql(template: &str, selector: &str, window: &str, range: &str) -> String {
    let q = template.replace("%W", window).replace("%R", range);
    if selector.is_empty() {
        q.replace("{%S,", "{").replace("{%S}", "{}")
    } else {
        q.replace("%S", selector)
    }
}

/// Whether `w` is a Prometheus duration (`5s`, `1m30s`, `500ms`).
fn is_duration(w: &str) -> bool {
    let mut rest = w;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// Percent-encodes a query parameter value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char);
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `http://host:port[/prefix]` split into the authority and the prefix (no trailing `/`).
fn split_url(url: &str) -> Result<(String, String), FleetError> {
    let bad = || FleetError::BadUrl(url.to_owned());
    let uri: Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?.to_string();
    let host = uri.host().unwrap_or("");
    let port = uri.port_u16().unwrap_or(80);
    let addr = if authority.contains(':') && !host.starts_with('[') {
        authority
    } else {
        format!("{host}:{port}")
    };
    Ok((addr, uri.path().trim_end_matches('/').to_owned()))
}

/// GETs `http://{addr}{path}` and returns the body of a 2xx, or the reason.
async fn get(addr: &str, path: &str, token: Option<&str>) -> Result<Bytes, (Option<u16>, String)> {
    let go = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| (None, e.to_string()))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| (None, e.to_string()))?;
        tokio::spawn(conn);
        let mut req = Request::get(path)
            .header(http::header::HOST, addr)
            .header(http::header::ACCEPT, "application/json");
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| (None, e.to_string()))?;
        let res = send
            .send_request(req)
            .await
            .map_err(|e| (None, e.to_string()))?;
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| (Some(status.as_u16()), e.to_string()))?
            .to_bytes();
        if status.is_success() {
            Ok(body)
        } else {
            Err((Some(status.as_u16()), message(status, &body)))
        }
    };
    match tokio::time::timeout(TIMEOUT, go).await {
        Ok(r) => r,
        Err(_) => Err((None, format!("no answer in {} s", TIMEOUT.as_secs()))),
    }
}

/// A Prometheus error's `error` field, or the first line of the body.
fn message(status: StatusCode, body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let line = text
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect::<String>();
            if line.is_empty() {
                status.to_string()
            } else {
                line
            }
        })
}

/// Runs `/api/v1/{kind}?{params}` and returns its `data.result`.
async fn prometheus(
    addr: &str,
    prefix: &str,
    kind: &str,
    params: &str,
) -> Result<Vec<Value>, FleetError> {
    let path = format!("{prefix}/api/v1/{kind}?{params}");
    let url = format!("http://{addr}{path}");
    let body = get(addr, &path, None)
        .await
        .map_err(|(status, reason)| match status {
            Some(status) => FleetError::Prometheus {
                url: url.clone(),
                status,
                message: reason,
            },
            None => FleetError::Unreachable {
                url: url.clone(),
                reason,
            },
        })?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| FleetError::Prometheus {
        url: url.clone(),
        status: 200,
        message: format!("not JSON: {e}"),
    })?;
    if v["status"] != "success" {
        return Err(FleetError::Prometheus {
            url,
            status: 200,
            message: v["error"].to_string(),
        });
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// A sample's value: Prometheus writes numbers as strings, `NaN` and `±Inf` included.
fn sample(v: &Value) -> Option<f64> {
    v.as_str()?.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Builds the fleet report: see the module docs.
pub async fn report(q: &FleetQuery) -> Result<FleetReport, FleetError> {
    let (addr, prefix) = split_url(&q.prometheus)?;
    if q.from >= q.to {
        return Err(FleetError::BadRange {
            from: q.from,
            to: q.to,
        });
    }
    let seconds = q.to - q.from + 1;
    if seconds > MAX_RANGE_SECONDS {
        return Err(FleetError::RangeTooLong { seconds });
    }
    if !is_duration(&q.rate_window) {
        return Err(FleetError::BadWindow(q.rate_window.clone()));
    }
    let range = format!("{}s", seconds);
    let len = seconds as usize;

    // instance -> (section, name, signal) -> (unit, values)
    type Series = BTreeMap<(&'static str, String, &'static str), (&'static str, Vec<Option<f64>>)>;
    let mut by_instance: BTreeMap<String, Series> = BTreeMap::new();
    for s in SIGNALS {
        let expr = promql(s.promql, &q.selector, &q.rate_window, &range);
        let params = format!(
            "query={}&start={}&end={}&step=1",
            encode(&expr),
            q.from,
            q.to
        );
        for r in prometheus(&addr, &prefix, "query_range", &params).await? {
            let Some(instance) = r["metric"]["instance"].as_str() else {
                continue;
            };
            let name = if s.labels.is_empty() {
                "process".to_owned()
            } else {
                s.labels
                    .iter()
                    .map(|l| r["metric"][*l].as_str().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let mut values = vec![None; len];
            for point in r["values"].as_array().into_iter().flatten() {
                let (Some(t), Some(v)) = (point[0].as_f64(), sample(&point[1])) else {
                    continue;
                };
                let i = (t as u64).saturating_sub(q.from) as usize;
                if i < len {
                    values[i] = Some(v);
                }
            }
            if values.iter().any(Option::is_some) {
                by_instance
                    .entry(instance.to_owned())
                    .or_default()
                    .insert((s.section, name, s.signal), (s.unit, values));
            }
        }
    }
    if by_instance.is_empty() {
        return Err(FleetError::NoInstances {
            selector: q.selector.clone(),
            from: q.from,
            to: q.to,
        });
    }

    // The drop reasons over the range, per instance, as the snapshot gives them.
    let expr = promql(DROPPED_BY_REASON, &q.selector, &q.rate_window, &range);
    let params = format!("query={}&time={}", encode(&expr), q.to);
    let mut dropped: BTreeMap<String, BTreeMap<String, serde_json::Map<String, Value>>> =
        BTreeMap::new();
    for r in prometheus(&addr, &prefix, "query", &params).await? {
        let m = &r["metric"];
        let (Some(instance), Some(queue), Some(reason)) = (
            m["instance"].as_str(),
            m["queue"].as_str(),
            m["reason"].as_str(),
        ) else {
            continue;
        };
        let n = sample(&r["value"][1]).unwrap_or(0.0).round().max(0.0) as u64;
        dropped
            .entry(instance.to_owned())
            .or_default()
            .entry(queue.to_owned())
            .or_default()
            .insert(reason.to_owned(), json!(n));
    }

    let grid: Vec<u64> = (q.from..=q.to).collect();
    let mut instances = Vec::new();
    let mut timelines = BTreeMap::new();
    for (instance, series) in by_instance {
        let timeline = json!({
            "schema_version": 1,
            "from": q.from,
            "to": q.to,
            "resolution_seconds": 1,
            "seconds": grid,
            "series": series.into_iter().map(|((section, name, signal), (unit, values))| json!({
                "section": section, "name": name, "signal": signal, "unit": unit, "values": values,
            })).collect::<Vec<_>>(),
        });
        let (inventory, inventory_error) = if q.inventory {
            match get(&instance, "/debug/perfkit/inventory", q.token.as_deref()).await {
                Ok(body) => match serde_json::from_slice::<Value>(&body) {
                    Ok(v) => (v, None),
                    Err(e) => (json!({}), Some(format!("not JSON: {e}"))),
                },
                Err((_, reason)) => (json!({}), Some(reason)),
            }
        } else {
            (json!({}), Some("not read (inventory off)".to_owned()))
        };
        let snapshot = json!({
            "queues": dropped.remove(&instance).unwrap_or_default().into_iter()
                .map(|(name, reasons)| json!({ "name": name, "dropped": reasons }))
                .collect::<Vec<_>>(),
        });
        let mut r = report::build(&timeline, &inventory, &snapshot);
        // The run section describes this process; here the instance is elsewhere.
        r["run"]["binary"] = Value::Null;
        r["run"]["features"] = Value::Null;
        r["run"]["host"] = Value::Null;
        r["run"]["instance"] = json!(instance);
        r["run"]["source"] = json!("prometheus");
        r["profiles"] = json!({ "cpu": null, "heap": null });
        r["run"]["phases"] = json!([]);
        instances.push(json!({
            "instance": instance,
            "inventory_error": inventory_error,
            "report": r,
        }));
        timelines.insert(instance, timeline);
    }
    let fleet = fleet_findings(&instances, q.from);
    let json = json!({
        "schema_version": SCHEMA_VERSION,
        "kind": "fleet",
        "prometheus": q.prometheus,
        "selector": q.selector,
        "from": q.from,
        "to": q.to,
        "rate_window": q.rate_window,
        "instances": instances,
        "first_saturated": fleet.first,
        "findings": fleet.findings,
        "bounds": fleet.bounds,
    });
    Ok(FleetReport { json, timelines })
}

struct Fleet {
    first: Value,
    findings: Vec<Value>,
    bounds: Vec<Value>,
}

/// What kind of bound a section holds, as the findings name it.
fn what(section: &str) -> &'static str {
    match section {
        "queues" => "queue",
        "batchers" => "batcher",
        "pools" => "pool",
        "runtimes" => "runtime",
        "resources" => "connection pool",
        "semaphores" => "semaphore",
        "locks" => "lock",
        _ => "bound",
    }
}

/// The findings only a fleet has, from the instance reports: which instance saturated first
/// (and the order the others followed), which bound saturated on some instances but not all
/// (uneven load or configuration) or on every one (the fleet is at its limit), and where
/// items were lost.
fn fleet_findings(instances: &[Value], from: u64) -> Fleet {
    let n = instances.len();
    let name_of = |i: &Value| i["instance"].as_str().unwrap_or("").to_owned();
    // Each instance's bottleneck: (start, instance, finding).
    let mut firsts: Vec<(u64, String, Value)> = instances
        .iter()
        .filter_map(|i| {
            let r = &i["report"];
            let id = r["bottleneck"].as_str()?;
            let f = r["findings"].as_array()?.iter().find(|f| f["id"] == id)?;
            let t0 = r["run"]["first_second"].as_u64().unwrap_or(from);
            Some((
                t0 + f["started_at_seconds"].as_u64().unwrap_or(0),
                name_of(i),
                f.clone(),
            ))
        })
        .collect();
    firsts.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));

    let mut findings: Vec<(u8, Value)> = Vec::new();
    let first = match firsts.first() {
        Some((at, inst, f)) => {
            let then: Vec<String> = firsts[1..]
                .iter()
                .map(|(t, i, f)| {
                    format!(
                        "{i} at +{} s ({} `{}`)",
                        t - at,
                        what(f["section"].as_str().unwrap_or("")),
                        f["name"].as_str().unwrap_or("")
                    )
                })
                .collect();
            let clean: Vec<String> = instances
                .iter()
                .map(name_of)
                .filter(|i| !firsts.iter().any(|(_, f, _)| f == i))
                .collect();
            let mut evidence = format!(
                "at {} s into the range: {}",
                at - from,
                f["evidence"].as_str().unwrap_or("")
            );
            if !then.is_empty() {
                evidence.push_str(&format!("; then {}", then.join(", ")));
            }
            if !clean.is_empty() {
                evidence.push_str(&format!("; no bound saturated on {}", clean.join(", ")));
            }
            findings.push((
                1,
                json!({
                    "severity": "HIGH",
                    "title": format!(
                        "instance {inst} saturated its {} `{}` first",
                        what(f["section"].as_str().unwrap_or("")),
                        f["name"].as_str().unwrap_or("")
                    ),
                    "evidence": evidence,
                    "instances": firsts.iter().map(|(_, i, _)| i.clone()).collect::<Vec<_>>(),
                    "section": f["section"], "name": f["name"],
                    "source": f["source"], "change": f["change"],
                }),
            ));
            json!({ "instance": inst, "at": at, "finding": f })
        }
        None => Value::Null,
    };

    // Every bound's peak use per instance, from the headroom tables.
    let mut bounds: BTreeMap<(String, String), BTreeMap<String, f64>> = BTreeMap::new();
    for i in instances {
        for h in i["report"]["headroom"].as_array().into_iter().flatten() {
            let (Some(section), Some(name), Some(peak)) = (
                h["section"].as_str(),
                h["name"].as_str(),
                h["peak_use"].as_f64(),
            ) else {
                continue;
            };
            bounds
                .entry((section.to_owned(), name.to_owned()))
                .or_default()
                .insert(name_of(i), peak);
        }
    }
    // Which instances saturated which bound, from their findings.
    let mut saturated: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut lost: Vec<String> = Vec::new();
    for i in instances {
        for f in i["report"]["findings"].as_array().into_iter().flatten() {
            let key = (
                f["section"].as_str().unwrap_or("").to_owned(),
                f["name"].as_str().unwrap_or("").to_owned(),
            );
            let title = f["title"].as_str().unwrap_or("");
            if f["severity"] == "HIGH" && (title.contains("saturated") || title.contains("starved"))
            {
                let list = saturated.entry(key).or_default();
                if !list.contains(&name_of(i)) {
                    list.push(name_of(i));
                }
            } else if f["severity"] == "CRITICAL" {
                lost.push(format!("{}: {title}", name_of(i)));
            }
        }
    }
    for ((section, name), on) in &saturated {
        let label = format!("{} `{name}`", what(section));
        if on.len() == n && n > 1 {
            findings.push((
                1,
                json!({
                    "severity": "HIGH",
                    "title": format!("{label} saturated on every instance"),
                    "evidence": format!("all {n} instances: the fleet as a whole is at this bound's limit"),
                    "instances": on, "section": section, "name": name,
                    "change": "add instances, or raise the bound on every instance",
                }),
            ));
        } else if n > 1 {
            let peaks = bounds.get(&(section.clone(), name.clone()));
            let others: Vec<String> = peaks
                .into_iter()
                .flatten()
                .filter(|(i, _)| !on.contains(i))
                .map(|(i, p)| format!("{i} peaked at {:.0}%", p * 100.0))
                .collect();
            findings.push((
                2,
                json!({
                    "severity": "MEDIUM",
                    "title": format!("{label} saturated on {} of {n} instances", on.len()),
                    "evidence": format!(
                        "saturated on {}{}",
                        on.join(", "),
                        if others.is_empty() { String::new() } else { format!("; {}", others.join(", ")) }
                    ),
                    "instances": on, "section": section, "name": name,
                    "change": "the load or the configuration is uneven: compare the instances' configuration rows and how the load balancer spreads requests",
                }),
            ));
        }
    }
    if !lost.is_empty() {
        findings.push((
            0,
            json!({
                "severity": "CRITICAL",
                "title": format!("items lost on {} instance(s)", {
                    let mut v: Vec<&str> = lost.iter().filter_map(|l| l.split(": ").next()).collect();
                    v.dedup();
                    v.len()
                }),
                "evidence": lost.join("; "),
                "instances": [],
            }),
        ));
    }
    findings.sort_by_key(|(rank, _)| *rank);
    let findings = findings
        .into_iter()
        .enumerate()
        .map(|(k, (_, mut f))| {
            f["id"] = json!(format!("FL{}", k + 1));
            f
        })
        .collect();
    let bounds = bounds
        .into_iter()
        .map(|((section, name), per)| {
            let max = per.values().copied().fold(0.0, f64::max);
            let mean = per.values().sum::<f64>() / per.len().max(1) as f64;
            json!({
                "section": section,
                "name": name,
                "peak_use": per,
                "fleet_max": max,
                "fleet_mean": mean,
                "saturated_on": saturated.get(&(section.clone(), name.clone())).cloned().unwrap_or_default(),
            })
        })
        .collect();
    Fleet {
        first,
        findings,
        bounds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_windows_are_put_in() {
        assert_eq!(
            promql("rate(x{%S,a=\"b\"}[%W]) / y{%S}", "job=\"j\"", "5s", "60s"),
            "rate(x{job=\"j\",a=\"b\"}[5s]) / y{job=\"j\"}"
        );
        assert_eq!(
            promql("rate(x{%S,a=\"b\"}[%W]) / y{%S}", "", "5s", "60s"),
            "rate(x{a=\"b\"}[5s]) / y{}"
        );
        assert_eq!(
            promql("increase(x{%S}[%R])", "", "5s", "60s"),
            "increase(x{}[60s])"
        );
        for ok in ["5s", "1m", "1m30s", "500ms", "2h"] {
            assert!(is_duration(ok), "{ok}");
        }
        for bad in ["", "5", "s", "5 s", "-5s", "5sec", "1.5s"] {
            assert!(!is_duration(bad), "{bad}");
        }
    }

    #[test]
    fn urls_split_into_address_and_prefix() {
        assert_eq!(
            split_url("http://127.0.0.1:9090").unwrap(),
            ("127.0.0.1:9090".into(), "".into())
        );
        assert_eq!(
            split_url("http://prom:9090/prometheus/").unwrap(),
            ("prom:9090".into(), "/prometheus".into())
        );
        assert_eq!(
            split_url("http://prom").unwrap(),
            ("prom:80".into(), "".into())
        );
        for bad in ["https://prom:9090", "prom:9090", "", "ftp://x"] {
            assert!(
                matches!(split_url(bad), Err(FleetError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_k6_helpers_prometheus_signals_are_these_expressions() {
        // `pollPrometheus` in the k6 helper reads the same gauges and histograms from
        // Prometheus in JavaScript; its expressions must stay these, or a k6 threshold and
        // the fleet report would disagree on one figure. Counters differ by design (the
        // helper takes totals and counts their increase between polls).
        let helper = include_str!("../k6/perfkit.js");
        let table = helper
            .split("export const PROMETHEUS_SIGNALS")
            .nth(1)
            .and_then(|t| t.split("]);").next())
            .expect("the helper's PROMETHEUS_SIGNALS table");
        let mut gauges = 0;
        for line in table.lines().filter(|l| l.contains("expr: '")) {
            if line.contains("counter: true") {
                continue;
            }
            let expr = line
                .split("expr: '")
                .nth(1)
                .and_then(|e| e.rsplit_once("' }"))
                .map(|(e, _)| e)
                .unwrap_or_else(|| panic!("an expression in {line}"));
            assert!(
                SIGNALS.iter().any(|s| s.promql == expr),
                "the helper's {expr} is not one of the fleet's signals"
            );
            gauges += 1;
        }
        assert_eq!(gauges, 9, "{table}");
    }

    #[test]
    fn every_signal_is_one_the_timeline_keeps() {
        // The report engine reads these (section, signal) pairs; a typo would drop a signal.
        let timeline = crate::server::timeline::signal_names();
        for s in SIGNALS {
            assert!(
                timeline.contains(&(s.section, s.signal)),
                "{} {}",
                s.section,
                s.signal
            );
            assert!(s.promql.contains("instance"), "{} {}", s.section, s.signal);
        }
        assert_eq!(
            SIGNALS.len(),
            timeline.len(),
            "every timeline signal has a PromQL equivalent"
        );
    }

    fn instance(
        name: &str,
        first_second: u64,
        findings: Value,
        bottleneck: Value,
        headroom: Value,
    ) -> Value {
        json!({ "instance": name, "report": {
            "run": { "first_second": first_second },
            "findings": findings, "bottleneck": bottleneck, "headroom": headroom,
        }})
    }

    #[test]
    fn the_first_instance_to_saturate_is_named_and_the_others_ordered() {
        let sat = |id: &str, section: &str, name: &str, at: u64| json!({ "id": id, "severity": "HIGH", "section": section, "name": name, "title": format!("`{name}` saturated"), "evidence": "was full", "started_at_seconds": at });
        let instances = vec![
            instance(
                "a:1",
                100,
                json!([sat("F1", "resources", "db", 30)]),
                json!("F1"),
                json!([{ "section": "resources", "name": "db", "peak_use": 1.0 }]),
            ),
            instance(
                "b:1",
                100,
                json!([sat("F1", "resources", "db", 12)]),
                json!("F1"),
                json!([{ "section": "resources", "name": "db", "peak_use": 1.0 }]),
            ),
            instance(
                "c:1",
                100,
                json!([]),
                json!(null),
                json!([{ "section": "resources", "name": "db", "peak_use": 0.25 }]),
            ),
        ];
        let f = fleet_findings(&instances, 100);
        assert_eq!(f.first["instance"], "b:1");
        assert_eq!(f.first["at"], 112);
        let top = &f.findings[0];
        assert_eq!(
            top["title"], "instance b:1 saturated its connection pool `db` first",
            "{top}"
        );
        let ev = top["evidence"].as_str().unwrap();
        assert!(
            ev.starts_with("at 12 s into the range: was full; then a:1 at +18 s"),
            "{ev}"
        );
        assert!(ev.ends_with("no bound saturated on c:1"), "{ev}");
        let uneven = &f.findings[1];
        assert_eq!(
            uneven["title"], "connection pool `db` saturated on 2 of 3 instances",
            "{uneven}"
        );
        assert!(
            uneven["evidence"]
                .as_str()
                .unwrap()
                .contains("c:1 peaked at 25%"),
            "{uneven}"
        );
        assert_eq!(f.bounds[0]["fleet_max"], 1.0);
        assert_eq!(f.bounds[0]["saturated_on"], json!(["a:1", "b:1"]));
    }

    #[test]
    fn a_healthy_fleet_has_no_findings() {
        let instances = vec![
            instance(
                "a:1",
                100,
                json!([]),
                json!(null),
                json!([{ "section": "queues", "name": "q", "peak_use": 0.1 }]),
            ),
            instance(
                "b:1",
                100,
                json!([]),
                json!(null),
                json!([{ "section": "queues", "name": "q", "peak_use": 0.3 }]),
            ),
        ];
        let f = fleet_findings(&instances, 100);
        assert!(f.first.is_null());
        assert!(f.findings.is_empty(), "{:?}", f.findings);
        assert!((f.bounds[0]["fleet_mean"].as_f64().unwrap() - 0.2).abs() < 1e-9);
    }
}
