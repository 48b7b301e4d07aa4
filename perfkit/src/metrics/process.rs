//! Process metrics under the standard `process_*` names, read from `/proc` at scrape time.
//!
//! On platforms without `/proc` every figure is `None` and nothing is exported.

use serde::Serialize;

use super::collector::{Collection, Collector, Sections};
use super::names;
use super::window::{Tick, WindowMax};

/// A point-in-time reading of the process's resource use.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds_total: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: Option<u64>,
    /// OS threads.
    pub threads: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Process start time, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

/// Reads the current figures.
pub fn read() -> ProcessStats {
    imp::read()
}

pub(crate) fn collect(out: &mut Collection, s: &ProcessStats) {
    let pairs = [
        (&names::PROCESS_CPU_SECONDS_TOTAL, s.cpu_seconds_total),
        (
            &names::PROCESS_RESIDENT_MEMORY_BYTES,
            s.resident_memory_bytes.map(|v| v as f64),
        ),
        (
            &names::PROCESS_VIRTUAL_MEMORY_BYTES,
            s.virtual_memory_bytes.map(|v| v as f64),
        ),
        (&names::PROCESS_OPEN_FDS, s.open_fds.map(|v| v as f64)),
        (&names::PROCESS_MAX_FDS, s.max_fds.map(|v| v as f64)),
        (&names::PROCESS_THREADS, s.threads.map(|v| v as f64)),
        (&names::PROCESS_START_TIME_SECONDS, s.start_time_seconds),
    ];
    for (def, v) in pairs {
        if let Some(v) = v {
            out.push(def, &[], v);
        }
    }
}

/// The process's own figures as a collector: the `process_*` gauges, the 10 s peak of
/// resident memory, and in the snapshot the `process` object and, over a window, the peaks
/// of resident memory and live heap (`window`). It keeps one second's peak of each in a
/// ring, ticked with every other collector.
#[derive(Debug)]
pub(crate) struct ProcessCollector {
    rss: WindowMax,
    heap: WindowMax,
}

impl ProcessCollector {
    pub(crate) fn new() -> Self {
        ProcessCollector {
            rss: WindowMax::new(),
            heap: WindowMax::new(),
        }
    }
}

impl Collector for ProcessCollector {
    fn collect(&self, out: &mut Collection) {
        let process = read();
        collect(out, &process);
        if let (Some(w), Some(rss)) = (out.window().copied(), process.resident_memory_bytes) {
            let max = self.rss.max(&w).max(rss);
            out.push(
                &names::PROCESS_RESIDENT_MEMORY_MAX_10S_BYTES,
                &[],
                max as f64,
            );
        }
    }

    fn snapshot(&self, out: &mut Sections) {
        let process = read();
        if let Some(w) = out.window().copied() {
            let rss = process
                .resident_memory_bytes
                .map(|now| self.rss.max(&w).max(now));
            let heap = crate::alloc::live_heap_bytes().map(|now| self.heap.max(&w).max(now));
            out.set_top(
                "window",
                serde_json::json!({
                    "seconds": w.seconds(),
                    "resident_memory_bytes_max": rss,
                    "heap_allocated_bytes_max": heap,
                }),
            );
        }
        out.set_top(
            "process",
            serde_json::to_value(&process).unwrap_or(serde_json::Value::Null),
        );
    }

    fn tick(&self, tick: &Tick) {
        if let Some(rss) = read().resident_memory_bytes {
            self.rss.tick(tick, rss);
        }
        if let Some(heap) = crate::alloc::live_heap_bytes() {
            self.heap.tick(tick, heap);
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::sync::OnceLock;

    use super::ProcessStats;

    fn sysconf(name: libc::c_int) -> Option<u64> {
        // SAFETY: sysconf has no preconditions; it returns -1 for unknown names.
        let v = unsafe { libc::sysconf(name) };
        u64::try_from(v).ok().filter(|&v| v > 0)
    }

    fn boot_time() -> Option<u64> {
        static BTIME: OnceLock<Option<u64>> = OnceLock::new();
        *BTIME.get_or_init(|| {
            let stat = std::fs::read_to_string("/proc/stat").ok()?;
            stat.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    pub(super) fn read() -> ProcessStats {
        let mut s = ProcessStats::default();
        let ticks = sysconf(libc::_SC_CLK_TCK);
        let page = sysconf(libc::_SC_PAGESIZE);
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // The command name (field 2) may hold spaces and parentheses: split after the
            // last ')'. Field n (1-based) is then at index n - 3.
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
                if let (Some(ut), Some(st), Some(t)) = (num(14), num(15), ticks) {
                    s.cpu_seconds_total = Some((ut + st) as f64 / t as f64);
                }
                s.threads = num(20);
                if let (Some(start), Some(t), Some(bt)) = (num(22), ticks, boot_time()) {
                    s.start_time_seconds = Some(bt as f64 + start as f64 / t as f64);
                }
                s.virtual_memory_bytes = num(23);
                s.resident_memory_bytes = num(24).zip(page).map(|(p, sz)| p * sz);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            s.open_fds = Some(dir.count() as u64);
        }
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            s.max_fds = Some(lim.rlim_cur);
        }
        s
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::ProcessStats;

    pub(super) fn read() -> ProcessStats {
        ProcessStats::default()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn reads_plausible_figures() {
        let s = super::read();
        assert!(s.resident_memory_bytes.unwrap() > 1 << 20);
        assert!(s.virtual_memory_bytes.unwrap() >= s.resident_memory_bytes.unwrap());
        assert!(s.threads.unwrap() >= 1);
        assert!(s.open_fds.unwrap() >= 3);
        assert!(s.max_fds.unwrap() >= s.open_fds.unwrap());
        assert!(s.cpu_seconds_total.unwrap() >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = s.start_time_seconds.unwrap();
        assert!(start <= now + 1.0 && start > now - 86_400.0 * 365.0);
    }
}
