//! CPU profiles: the `SIGPROF` sampler's stacks, symbolized into a pprof profile and the
//! folded lines of a flame graph. The last finished profile is kept for
//! `/debug/pprof/profile/last` and the run report.

#[cfg(feature = "server")]
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use super::encode::Profile;
use super::sampler;
use super::symbols::{self, FlamegraphError, Symbols};

/// A finished, symbolized CPU profile.
pub struct CpuProfile {
    pprof: Bytes,
    folded: Vec<(String, i64)>,
    title: String,
    samples: u64,
}

impl CpuProfile {
    /// The profile as gzipped pprof protobuf, as `go tool pprof` reads it.
    pub fn pprof(&self) -> &[u8] {
        &self.pprof
    }

    /// The gzipped pprof bytes, shared.
    #[cfg(feature = "server")]
    pub(crate) fn pprof_bytes(&self) -> Bytes {
        self.pprof.clone()
    }

    /// The flame graph's title.
    #[cfg(feature = "server")]
    pub(crate) fn title(&self) -> &str {
        &self.title
    }

    /// Samples taken.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The profile as an SVG flame graph.
    ///
    /// # Errors
    /// When the flame graph cannot be drawn.
    pub fn flamegraph(&self) -> Result<Vec<u8>, FlamegraphError> {
        symbols::flamegraph(&self.title, "samples", &self.folded)
    }
}

impl std::fmt::Debug for CpuProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuProfile")
            .field("title", &self.title)
            .field("samples", &self.samples)
            .field("pprof_bytes", &self.pprof.len())
            .finish_non_exhaustive()
    }
}

/// A CPU profile taken from code rather than over HTTP, e.g. around a benchmark. It shares
/// the process-wide sampler with `/debug/pprof/profile`: one profile at a time.
///
/// ```no_run
/// # fn work() {}
/// let profiler = perfkit::profile::CpuProfiler::start(99, 10)?;
/// work();
/// let profile = profiler.finish();
/// std::fs::write("cpu.pb.gz", profile.pprof())?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "dropping the profiler stops it and throws its samples away; call finish()"]
pub struct CpuProfiler(sampler::Session);

impl CpuProfiler {
    /// Starts sampling at `frequency_hz` (1..=1000) with room for `expected_seconds` of
    /// samples (later samples are counted as lost).
    ///
    /// # Errors
    /// `ResourceBusy` when another CPU profile is running, `InvalidInput` for a frequency
    /// out of range, `Other` when the signal handler or timer cannot be set up.
    pub fn start(frequency_hz: u32, expected_seconds: u64) -> std::io::Result<CpuProfiler> {
        if !(1..=1000).contains(&frequency_hz) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the frequency must be between 1 and 1000 Hz",
            ));
        }
        sampler::start(frequency_hz, expected_seconds.max(1))
            .map(CpuProfiler)
            .map_err(|e| match e {
                sampler::StartError::Busy => {
                    std::io::Error::new(std::io::ErrorKind::ResourceBusy, e.to_string())
                }
                _ => std::io::Error::other(e.to_string()),
            })
    }

    /// Stops sampling and symbolizes what was collected.
    pub fn finish(self) -> CpuProfile {
        build(self.0.stop())
    }
}

impl std::fmt::Debug for CpuProfiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuProfiler").finish_non_exhaustive()
    }
}

#[cfg(feature = "server")]
static LAST: Mutex<Option<Arc<CpuProfile>>> = Mutex::new(None);

/// The last profile finished through [`finish_kept`], if any.
#[cfg(feature = "server")]
pub(crate) fn last() -> Option<Arc<CpuProfile>> {
    LAST.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(feature = "server")]
pub(crate) use sampler::StartError;

#[cfg(feature = "server")]
impl CpuProfiler {
    /// Starts sampling for the debug server, whose checks of the frequency came first.
    pub(crate) fn start_sampling(frequency: u32, seconds: u64) -> Result<Self, StartError> {
        sampler::start(frequency, seconds).map(CpuProfiler)
    }

    /// Stops sampling; the samples are symbolized later by [`finish_kept`].
    pub(crate) fn stop(self) -> sampler::Samples {
        self.0.stop()
    }
}

/// Symbolizes `samples` and keeps the profile as the last one.
#[cfg(feature = "server")]
pub(crate) fn finish_kept(samples: sampler::Samples) -> Arc<CpuProfile> {
    let completed = Arc::new(build(samples));
    *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&completed));
    completed
}

/// Symbolizes the samples into a pprof profile (and the folded lines of a flame graph).
fn build(s: sampler::Samples) -> CpuProfile {
    let period = 1_000_000_000 / i64::from(s.frequency.max(1));
    let mut p = Profile::new(&[("samples", "count"), ("cpu", "nanoseconds")], period);
    p.set_period(("cpu", "nanoseconds"), period);
    p.set_time(s.start_time, s.duration);
    p.comment(&format!(
        "perfkit CPU profile: {} samples at {} Hz over {:.1}s; {} lost (arena of {} KiB full), {} without callers",
        s.samples,
        s.frequency,
        s.duration.as_secs_f64(),
        s.lost,
        s.arena_bytes / 1024,
        s.leaf_only
    ));
    let stacks: Vec<(Vec<usize>, Vec<i64>)> = s
        .stacks
        .into_iter()
        .map(|(ips, n)| {
            let n = n as i64;
            (ips, vec![n, n * period])
        })
        .collect();
    let mut syms = Symbols::default();
    let named = symbols::add_stacks(&mut p, &mut syms, &stacks, symbols::Addr::Exact, &|_| false);
    let folded = symbols::folded(&named, 0);
    drop(syms);
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let start = unix(s.start_time);
    super::recent::cpu(super::recent::Summary::of(
        &named,
        0,
        start,
        start + s.duration.as_secs_f64(),
    ));
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CpuProfile {
        samples: s.samples,
        pprof: Bytes::from(p.encode_gzip()),
        folded,
        title: format!(
            "CPU: {} samples at {} Hz over {:.1}s (unix time {stamp})",
            s.samples,
            s.frequency,
            s.duration.as_secs_f64()
        ),
    }
}
