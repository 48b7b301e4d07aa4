//! The debug HTTP server: `/metrics`, `/debug/pprof/*` and `/debug/perfkit/*` on a port of
//! its own.
//!
//! The server runs hyper on its own OS thread (`perfkit-debug`) with its own single-threaded
//! tokio runtime, so it answers even when the service's runtime is saturated — which is when
//! someone needs it.
//!
//! # Endpoints
//! | path | answer |
//! |---|---|
//! | `/metrics` | Prometheus text exposition 0.0.4, gzipped when `Accept-Encoding` allows |
//! | `/debug/pprof/` | index page, like Go's net/http/pprof |
//! | `/debug/pprof/cmdline` | the process's arguments, NUL-separated |
//! | `/debug/pprof/goroutine?debug=0\|1\|2` | live tracked tasks ([`crate::task`]): a pprof profile, counts by name and spawn site, or one line per task |
//! | `/debug/pprof/profile?seconds=N` | CPU profile (feature `cpu-profiling`): gzipped pprof, or `&format=flamegraph` for SVG; one at a time |
//! | `/debug/pprof/profile/last` | the most recent completed CPU profile (`format` as above) |
//! | `/debug/pprof/heap`, `/debug/pprof/allocs` | live and cumulative heap profiles from jemalloc (feature `heap-profiling`); `debug=1` for a text summary |
//! | `/debug/perfkit/snapshot?window=N` | JSON: current figures of every primitive (what k6 polls), and with `window` their figures over the last N seconds |
//! | `/debug/perfkit/inventory` | JSON: configuration of every primitive |
//! | `/debug/perfkit/timeline?from=&to=` | JSON: every primitive's figures for each second of the last hour |
//! | `/debug/perfkit/report?from=&to=&format=json\|html&phases=` | the run report: configuration, ranked findings, bottleneck, headroom, timelines, profiles; `html` (feature `report-html`) is one self-contained page |
//! | `/debug/perfkit/k6.js` | the k6 helper module matching this build |
//!
//! Unknown paths get 404, methods other than GET 405, unknown or malformed query parameters
//! 400, each with a one-line text reason. With a token, a request without
//! `Authorization: Bearer <token>` gets 401. Request bodies are never read.
//!
//! # Configuration
//! | setting | env | default |
//! |---|---|---|
//! | [`Builder::addr`] | `PERFKIT_ADDR` | `127.0.0.1:6060` |
//! | [`Builder::token`] | `PERFKIT_TOKEN` | none (required for a non-loopback address) |
//! | [`Builder::max_connections`] | | 512, or a quarter of the file descriptor limit if lower (at least 64) |
//! | [`Builder::header_read_timeout`] | | 5 s |
//! | [`Builder::profile_max_seconds`] | | 60 s |
//! | [`Builder::profile_frequency`] | | 99 Hz |
//! | [`Builder::mutex_profile_rate`] | | 1 in 10 contended acquisitions ([`crate::sync::DEFAULT_MUTEX_PROFILE_RATE`]) |

mod accept;
#[cfg(feature = "cpu-profiling")]
mod cpu;
mod error;
#[cfg(feature = "heap-profiling")]
mod heap;
mod reply;
mod router;
#[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
mod lane;
mod delta;
mod mutex;
pub(crate) mod pprof;
pub(crate) mod report;
#[cfg(feature = "report-html")]
pub(crate) mod report_html;
pub(crate) mod timeline;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use error::BuildError;
#[cfg(feature = "cpu-profiling")]
#[cfg_attr(docsrs, doc(cfg(feature = "cpu-profiling")))]
/// Moved to [`crate::profile::CpuProfile`].
#[cfg(feature = "cpu-profiling")]
#[deprecated(since = "0.1.0", note = "moved to perfkit::profile::CpuProfile")]
pub type CpuProfile = crate::profile::CpuProfile;
/// Moved to [`crate::profile::CpuProfiler`].
#[cfg(feature = "cpu-profiling")]
#[deprecated(since = "0.1.0", note = "moved to perfkit::profile::CpuProfiler")]
pub type CpuProfiler = crate::profile::CpuProfiler;

/// Default debug server address.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 6060);

/// Environment variable overriding the address.
pub const ENV_ADDR: &str = "PERFKIT_ADDR";
/// Environment variable setting the bearer token.
pub const ENV_TOKEN: &str = "PERFKIT_TOKEN";

/// Configures and starts the debug server.
///
/// # Examples
/// ```
/// # fn main() -> Result<(), perfkit::BuildError> {
/// let server = perfkit::Builder::new()
///     .addr("127.0.0.1:0".parse().unwrap())
///     .facade(false)
///     .start()?;
/// println!("debug server on http://{}", server.local_addr());
/// # Ok(()) }
/// ```
#[must_use = "a Builder does nothing until .start() is called"]
pub struct Builder {
    addr: SocketAddr,
    token: Option<String>,
    max_connections: usize,
    header_read_timeout: Duration,
    runtimes: Vec<(String, tokio::runtime::Handle)>,
    facade: bool,
    cardinality_cap: Option<usize>,
    profile_max_seconds: u64,
    profile_frequency: u32,
    mutex_profile_rate: Option<u32>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("runtimes", &self.runtimes.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .field("facade", &self.facade)
            .field("profile_max_seconds", &self.profile_max_seconds)
            .field("profile_frequency", &self.profile_frequency)
            .field("mutex_profile_rate", &self.mutex_profile_rate)
            .finish()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// Defaults only: `127.0.0.1:6060`, no token, 512 connections (fewer when the process's
    /// file descriptor limit is low, see [`Builder::max_connections`]), 5 s header timeout,
    /// the facade recorder installed. The environment is not read.
    pub fn new() -> Self {
        Builder {
            addr: DEFAULT_ADDR,
            token: None,
            max_connections: default_max_connections(),
            header_read_timeout: Duration::from_secs(5),
            runtimes: Vec::new(),
            facade: true,
            cardinality_cap: None,
            profile_max_seconds: 60,
            profile_frequency: 99,
            mutex_profile_rate: None,
        }
    }

    /// Defaults overridden by `PERFKIT_ADDR` and `PERFKIT_TOKEN` (an empty token counts as
    /// unset).
    ///
    /// # Errors
    /// [`BuildError::InvalidAddr`] when `PERFKIT_ADDR` is not a socket address such as
    /// `127.0.0.1:6060` or `[::1]:6060`.
    pub fn from_env() -> Result<Self, BuildError> {
        let mut b = Self::new();
        if let Some(v) = std::env::var_os(ENV_ADDR) {
            let v = v.to_string_lossy().into_owned();
            b.addr = v.trim().parse().map_err(|e: std::net::AddrParseError| {
                BuildError::InvalidAddr {
                    reason: format!("{e} (expected host:port, e.g. 127.0.0.1:6060)"),
                    value: v.clone(),
                }
            })?;
        }
        if let Ok(t) = std::env::var(ENV_TOKEN) {
            if !t.is_empty() {
                b.token = Some(t);
            }
        }
        Ok(b)
    }

    /// The address to listen on. Port 0 picks a free port; see [`DebugServer::local_addr`].
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Requires `Authorization: Bearer <token>` on every request. Required for a
    /// non-loopback address.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Caps the connections open at once. At the cap, a new connection takes the place of
    /// the oldest open connection that is not running a request (one still sending its
    /// head, or an idle keep-alive one), which is closed; only when every open connection is
    /// running a request does the newcomer get a `503`. So clients that open connections
    /// and trickle or withhold their requests cannot keep a whole request from its answer.
    ///
    /// Each open connection holds a file descriptor and a few KiB (hyper's read buffer, at
    /// most 16 KiB for a request head). The default is 512, or a quarter of the process's
    /// soft `RLIMIT_NOFILE` when that is lower (at least 64), so the debug port cannot take
    /// most of the service's descriptors.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// How long a client may take to send a request's headers (default 5 s).
    pub fn header_read_timeout(mut self, d: Duration) -> Self {
        self.header_read_timeout = d;
        self
    }

    /// Registers a tokio runtime's stable metrics under `runtime="<name>"`.
    pub fn runtime(mut self, name: impl Into<String>, handle: tokio::runtime::Handle) -> Self {
        self.runtimes.push((name.into(), handle));
        self
    }

    /// Whether to install perfkit's `metrics` facade recorder (default `true`, needs the
    /// `facade` feature). When another recorder is already installed, perfkit logs a warning
    /// and serves its own metrics only; see `perfkit::metrics::facade` for composing.
    pub fn facade(mut self, install: bool) -> Self {
        self.facade = install;
        self
    }

    /// Sets the global registry's cap on label sets per metric family (default 1 000).
    pub fn cardinality_cap(mut self, cap: usize) -> Self {
        self.cardinality_cap = Some(cap);
        self
    }

    /// The longest CPU profile `/debug/pprof/profile?seconds=N` runs (default 60 s); a longer
    /// request gets a 400. Needs the `cpu-profiling` feature to matter.
    pub fn profile_max_seconds(mut self, seconds: u64) -> Self {
        self.profile_max_seconds = seconds;
        self
    }

    /// How often the CPU profiler samples, per second of CPU time (default 99 Hz, at most
    /// 1 000). Needs the `cpu-profiling` feature to matter.
    pub fn profile_frequency(mut self, hz: u32) -> Self {
        self.profile_frequency = hz;
        self
    }

    /// Sets the contention profile's sampling rate at start-up (`/debug/pprof/mutex`): on
    /// average one contended acquisition of a [`crate::sync`] lock or semaphore in `rate` is
    /// recorded, 0 records none. Without this the rate stays as it is (default 10); it can
    /// change at run time with [`crate::sync::set_mutex_profile_rate`].
    pub fn mutex_profile_rate(mut self, rate: u32) -> Self {
        self.mutex_profile_rate = Some(rate);
        self
    }

    fn validate(&self) -> Result<(), BuildError> {
        if let Some(t) = &self.token {
            if t.is_empty() {
                return Err(BuildError::InvalidToken { reason: "the token is empty" });
            }
            if !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(BuildError::InvalidToken {
                    reason: "the token must be printable ASCII without spaces",
                });
            }
        } else if !self.addr.ip().is_loopback() {
            return Err(BuildError::TokenRequired { addr: self.addr });
        }
        if self.max_connections == 0 {
            return Err(BuildError::InvalidSetting {
                setting: "max_connections",
                reason: "must be at least 1",
            });
        }
        if self.header_read_timeout.is_zero() {
            return Err(BuildError::InvalidSetting {
                setting: "header_read_timeout",
                reason: "must be greater than zero",
            });
        }
        if self.profile_max_seconds == 0 {
            return Err(BuildError::InvalidSetting {
                setting: "profile_max_seconds",
                reason: "must be at least 1",
            });
        }
        if !(1..=1000).contains(&self.profile_frequency) {
            return Err(BuildError::InvalidSetting {
                setting: "profile_frequency",
                reason: "must be between 1 and 1000 Hz",
            });
        }
        if self.cardinality_cap == Some(0) {
            return Err(BuildError::InvalidSetting {
                setting: "cardinality_cap",
                reason: "must be at least 1",
            });
        }
        Ok(())
    }

    /// Validates the settings, binds the socket and starts the server thread.
    ///
    /// # Errors
    /// [`BuildError::TokenRequired`] for a non-loopback address without a token,
    /// [`BuildError::InvalidToken`] / [`BuildError::InvalidSetting`] for bad settings,
    /// [`BuildError::Bind`] when the address cannot be bound, [`BuildError::Spawn`] when the
    /// thread or its runtime cannot start.
    pub fn start(self) -> Result<DebugServer, BuildError> {
        self.validate()?;
        let registry = crate::metrics::registry();
        if let Some(cap) = self.cardinality_cap {
            registry.set_cardinality_cap(cap);
        }
        #[cfg(feature = "heap-profiling")]
        registry.register_owned("jemalloc".into(), Arc::new(crate::profile::heap::JemallocStats));
        for (name, handle) in &self.runtimes {
            registry.register_runtime(name, handle.clone());
        }
        if let Some(rate) = self.mutex_profile_rate {
            crate::sync::set_mutex_profile_rate(rate);
        }
        #[cfg(feature = "facade")]
        if self.facade {
            if let Err(e) = crate::metrics::facade::install() {
                tracing::warn!("perfkit: {e}");
            }
        }

        let listener = std::net::TcpListener::bind(self.addr).map_err(|source| BuildError::Bind {
            addr: self.addr,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| BuildError::Bind { addr: self.addr, source })?;
        deepen_backlog(&listener);
        let local_addr = listener
            .local_addr()
            .map_err(|source| BuildError::Bind { addr: self.addr, source })?;

        let state = Arc::new(reply::State {
            token: self.token.map(String::into_bytes),
            local_addr,
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout,
            profile_max_seconds: self.profile_max_seconds,
            profile_frequency: self.profile_frequency,
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<std::io::Result<()>>(1);
        let thread = std::thread::Builder::new()
            .name("perfkit-debug".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name("perfkit-debug")
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let _ = ready_tx.send(Ok(()));
                            // The window clock: once a second, on this thread, so windows
                            // keep moving when the service's runtime is saturated.
                            let ticker = tokio::spawn(tick_every_second());
                            accept::serve(listener, state, stop_rx).await;
                            ticker.abort();
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                // A profile still being built on the blocking pool is not waited for.
                rt.shutdown_background();
            })
            .map_err(BuildError::Spawn)?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(BuildError::Spawn(e)),
            Err(_) => {
                return Err(BuildError::Spawn(std::io::Error::other(
                    "the debug server thread exited during start-up",
                )));
            }
        }
        tracing::debug!(addr = %local_addr, "perfkit debug server listening");
        Ok(DebugServer {
            local_addr,
            stop: stop_tx,
            thread: Some(thread),
        })
    }
}

/// Ticks the registry's window clock just after each of its second boundaries, so every
/// per-second slot covers its own second.
async fn tick_every_second() {
    let registry = crate::metrics::registry();
    loop {
        let up = registry.uptime();
        let next = Duration::from_secs(up.as_secs() + 1) + Duration::from_millis(2);
        tokio::time::sleep(next.saturating_sub(up)).await;
        registry.tick();
        // The second that just ended, for the timeline.
        timeline::timeline().record(&registry.snapshot_window(1));
    }
}

/// 512, or a quarter of the soft file descriptor limit when that is lower, at least 64.
fn default_max_connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the limits into the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        libc::RLIM_INFINITY
    };
    usize::try_from(soft / 4).unwrap_or(usize::MAX).clamp(64, 512)
}

/// Raises the listen backlog from std's 128 to 1024 (the kernel caps it at `somaxconn`), so
/// a burst of connections (a reconnecting flood) does not drop a legitimate client's SYN,
/// which would cost it a one-second retransmission.
fn deepen_backlog(listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: `listen` on a descriptor we own that is already listening only changes the
    // length of its queue of pending connections.
    let _ = unsafe { libc::listen(listener.as_raw_fd(), 1024) };
}

/// A running debug server. Dropping it stops the server and waits for its thread.
#[must_use = "the debug server stops when this guard is dropped"]
pub struct DebugServer {
    local_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl DebugServer {
    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, lets in-flight requests finish (up to 1 s), and waits
    /// for the server thread to exit. Dropping the guard does the same.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DebugServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

impl std::fmt::Debug for DebugServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Starts the debug server from the environment (`PERFKIT_ADDR`, `PERFKIT_TOKEN`), with the
/// facade recorder installed and, when called inside a tokio runtime, that runtime's metrics
/// registered as `runtime="main"`.
///
/// # Errors
/// See [`Builder::from_env`] and [`Builder::start`].
pub fn init() -> Result<DebugServer, BuildError> {
    let mut b = Builder::from_env()?;
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        b = b.runtime("main", h);
    }
    b.start()
}
