//! `/debug/pprof/profile` and `/debug/pprof/profile/last`: CPU profiles as gzipped pprof or
//! SVG flame graphs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Response, StatusCode};

use super::http::{Body, Query, State, error};
use super::profile::Profile;
use super::sampler;
use super::symbols::{self, Symbols};

/// Go's default profile length.
pub(crate) const DEFAULT_SECONDS: u64 = 30;

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

    /// Samples taken.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The profile as an SVG flame graph.
    ///
    /// # Errors
    /// When the flame graph cannot be drawn (the reason as text).
    pub fn flamegraph(&self) -> Result<Vec<u8>, String> {
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
/// let profiler = perfkit::server::CpuProfiler::start(99, 10)?;
/// work();
/// let profile = profiler.finish();
/// std::fs::write("cpu.pb.gz", profile.pprof())?;
/// # Ok::<(), std::io::Error>(())
/// ```
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
        sampler::start(frequency_hz, expected_seconds.max(1)).map(CpuProfiler).map_err(|e| match e {
            sampler::StartError::Busy => std::io::Error::new(std::io::ErrorKind::ResourceBusy, e.to_string()),
            sampler::StartError::Setup(_) => std::io::Error::other(e.to_string()),
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

type Completed = CpuProfile;

static LAST: Mutex<Option<Arc<Completed>>> = Mutex::new(None);
/// When the running profile started and how long it was asked to run.
static RUNNING: Mutex<Option<(Instant, Duration)>> = Mutex::new(None);

#[cfg(test)]
pub(crate) static TEST_LOCK: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Pprof,
    Flamegraph,
}

fn format(q: &Query) -> Result<Format, String> {
    match q.get("format") {
        None | Some("pprof" | "proto") => Ok(Format::Pprof),
        Some("flamegraph" | "svg") => Ok(Format::Flamegraph),
        Some(other) => Err(format!("invalid format={other:?}: expected pprof or flamegraph")),
    }
}

/// Go's rules for `seconds`: absent or ≤ 0 means the default; above the maximum is an error.
fn seconds(q: &Query, max: u64) -> Result<u64, String> {
    let Some(raw) = q.get("seconds") else {
        return Ok(DEFAULT_SECONDS.min(max));
    };
    let digits = raw.trim().strip_prefix('-').unwrap_or(raw.trim());
    let n: i64 = raw.trim().parse().map_err(|_| {
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            format!("seconds={} is out of range: this server's maximum is {max}", raw.trim())
        } else {
            format!("invalid seconds={raw:?}: expected a whole number of seconds")
        }
    })?;
    if n <= 0 {
        return Ok(DEFAULT_SECONDS.min(max));
    }
    let n = n as u64;
    if n > max {
        return Err(format!(
            "seconds={n} is above this server's maximum of {max} (Builder::profile_max_seconds)"
        ));
    }
    Ok(n)
}

/// Frees the "running" slot however the request ends, including a client that disconnects.
struct RunningSlot;

impl Drop for RunningSlot {
    fn drop(&mut self) {
        *RUNNING.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

pub(crate) async fn profile(state: Arc<State>, q: Query) -> Response<Body> {
    let fmt = match format(&q) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let secs = match seconds(&q, state.profile_max_seconds) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let slot = {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((since, length)) = *running {
            let ran = since.elapsed();
            return error(
                StatusCode::CONFLICT,
                &format!(
                    "a CPU profile is already running (started {:.1}s ago, {:.1}s left); one runs at a time",
                    ran.as_secs_f64(),
                    length.saturating_sub(ran).as_secs_f64()
                ),
            );
        }
        *running = Some((Instant::now(), Duration::from_secs(secs)));
        RunningSlot
    };
    let session = match sampler::start(state.profile_frequency, secs) {
        Ok(s) => s,
        Err(e @ sampler::StartError::Busy) => return error(StatusCode::CONFLICT, &e.to_string()),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &format!("cannot start the CPU profiler: {e}")),
    };
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let samples = session.stop();
    drop(slot);
    // The samples are taken: symbolizing waits for its turn rather than be refused.
    super::lane::queued("a CPU profile", move || {
        let completed = Arc::new(build(samples));
        *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(&completed));
        render(&completed, fmt)
    })
    .await
}

pub(crate) async fn last(_: Arc<State>, q: Query) -> Response<Body> {
    let fmt = match format(&q) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let last = LAST.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match (last, fmt) {
        (Some(c), Format::Pprof) => render(&c, fmt),
        (Some(c), Format::Flamegraph) => {
            let key = format!("last flamegraph {}", c.title);
            super::lane::exclusive(key, "a CPU profile flame graph", move || render(&c, fmt)).await
        }
        (None, _) => error(
            StatusCode::NOT_FOUND,
            "no CPU profile has completed yet; request /debug/pprof/profile?seconds=N first",
        ),
    }
}

/// The answer in the format asked for; drawing a flame graph is the expensive part.
fn render(c: &Completed, fmt: Format) -> Response<Body> {
    match fmt {
        Format::Pprof => super::pprof::attachment("profile", c.pprof.clone()),
        Format::Flamegraph => match symbols::flamegraph(&c.title, "samples", &c.folded) {
            Ok(svg) => super::http::response(StatusCode::OK, "image/svg+xml", Bytes::from(svg)),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("drawing the flame graph failed: {e}"),
            ),
        },
    }
}

/// Symbolizes the samples into a pprof profile (and the folded lines of a flame graph).
fn build(s: sampler::Samples) -> Completed {
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
    let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let start = unix(s.start_time);
    super::recent::cpu(super::recent::Summary::of(&named, 0, start, start + s.duration.as_secs_f64()));
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Completed {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn q(raw: &[(&str, &str)]) -> Query {
        Query::from_pairs(raw)
    }

    #[test]
    fn seconds_follow_go() {
        assert_eq!(seconds(&q(&[]), 60), Ok(30));
        assert_eq!(seconds(&q(&[("seconds", "0")]), 60), Ok(30));
        assert_eq!(seconds(&q(&[("seconds", "-5")]), 60), Ok(30));
        assert_eq!(seconds(&q(&[("seconds", "5")]), 60), Ok(5));
        assert_eq!(seconds(&q(&[]), 10), Ok(10));
        assert!(seconds(&q(&[("seconds", "abc")]), 60).unwrap_err().contains("whole number"));
        assert_eq!(
            seconds(&q(&[("seconds", "99999999999999999999")]), 60).unwrap_err(),
            "seconds=99999999999999999999 is out of range: this server's maximum is 60"
        );
        assert!(seconds(&q(&[("seconds", "100000")]), 60).unwrap_err().contains("maximum of 60"));
        assert!(format(&q(&[("format", "png")])).is_err());
    }
}
