//! perfkit makes a tokio service load-testable from the inside.
//!
//! A service adds perfkit, starts the debug server with one line, and from then on answers,
//! on a separate debug port:
//!
//! * `/metrics` — Prometheus text: perfkit's own series, process and tokio runtime figures,
//!   and the service's own `metrics` facade calls;
//! * `/debug/perfkit/snapshot` — JSON with every primitive's current figures, which the
//!   bundled k6 helper (`/debug/perfkit/k6.js`) polls so a load test can **fail the run** when
//!   an internal signal crosses a line;
//! * `/debug/perfkit/inventory` — JSON with every primitive's configuration;
//! * `/debug/pprof/` — an index in Go's net/http/pprof style.
//!
//! The debug server runs on its own OS thread and its own small tokio runtime, so it keeps
//! answering when the service's runtime is saturated.
//!
//! What it reports comes from perfkit's primitives, each named and bounded: [`queue`]s,
//! [`batch`]ers, worker [`pool`]s, tracked [`task`]s, `#[hot_path]` functions, [`sync`]
//! locks and semaphores (contention, and `/debug/pprof/mutex`), and [`resource`]
//! connection pools (deadpool, bb8, sqlx).
//!
//! # Quick start
//! ```no_run
//! # fn main() -> Result<(), perfkit::BuildError> {
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! # rt.block_on(async {
//! // Reads PERFKIT_ADDR (default 127.0.0.1:6060) and PERFKIT_TOKEN from the environment.
//! let _perfkit = perfkit::Builder::from_env()?
//!     .runtime("main", tokio::runtime::Handle::current())
//!     .start()?;
//! // ... run the service; dropping `_perfkit` stops the debug server.
//! # Ok(()) })
//! # }
//! ```
//! or simply `let _perfkit = perfkit::init()?;`.
//!
//! # Safety of the debug plane
//! The server binds to loopback by default. Binding anywhere else requires a bearer token
//! (`PERFKIT_TOKEN`); with a token set, every endpoint requires
//! `Authorization: Bearer <token>`. Request bodies are never read, header reads time out,
//! concurrent connections are capped, and bad query parameters get a 400 with a reason.
//!
//! # Feature flags
//! | feature | default | what it adds |
//! |---|---|---|
//! | `server` | yes | the debug HTTP server ([`server`], [`init`], [`Builder`]) |
//! | `facade` | yes | installs `metrics-exporter-prometheus` as the `metrics` recorder so the service's own metrics appear on `/metrics` ([`metrics::facade`]) |
//! | `macros` | yes | `#[hot_path]` ([`hot_path`]) |
//! | `tracing` | no | `#[hot_path]` also opens a `tracing` span per call (`hot_path`, INFO, fields `function` and `module`) |
//! | `cpu-profiling` | no | CPU profiles (Linux, `SIGPROF` sampling) as pprof or SVG flame graphs: [`profile::CpuProfiler`], and `/debug/pprof/profile` with `server` |
//! | `heap-profiling` | no | heap profiles from jemalloc ([`profile::heap`]; `/debug/pprof/heap` and `/allocs` with `server`), jemalloc figures on `/metrics`, and [`jemalloc_profiling!`] to install it |
//! | `http` | no | [`http::MetricsLayer`], a tower layer recording HTTP server metrics by route template |
//! | `axum` | no | the HTTP layer takes route templates from axum's `MatchedPath` |
//! | `deadpool` | no | [`resource::Resource::deadpool`]: a deadpool pool's figures |
//! | `bb8` | no | [`resource::Resource::bb8`]: a bb8 pool's figures |
//! | `sqlx` | no | [`resource::Resource::sqlx`]: an sqlx pool's figures |
//! | `fleet` | no | [`fleet`]: the run report of every instance a Prometheus server scrapes, and the `perfkit-report` command |
//! | `full` | no | every feature above |
//!
//! Features are additive. Without `server`, the metrics core still records and renders
//! ([`metrics::render`]).
//!
//! # Minimum supported Rust version
//! Rust 1.85 (edition 2024).
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

pub mod alloc;
pub mod batch;
mod clock;
#[cfg(feature = "fleet")]
#[cfg_attr(docsrs, doc(cfg(feature = "fleet")))]
pub mod fleet;
mod hot_path;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
pub(crate) mod loom;
mod memcheck;
pub mod metrics;
pub mod pool;
#[cfg(all(
    not(loom),
    any(
        feature = "server",
        feature = "cpu-profiling",
        feature = "heap-profiling"
    )
))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(
        feature = "server",
        feature = "cpu-profiling",
        feature = "heap-profiling"
    )))
)]
pub mod profile;
pub mod queue;
#[cfg(not(loom))]
pub mod resource;
#[cfg(not(loom))]
pub mod sync;
pub mod task;
mod wait_list;

/// Measures every call of the function it annotates.
///
/// Under `function="<fn name>"` and `module="<module path>"` it records
/// `perfkit_hot_path_seconds` (a histogram of call durations, from entry to return or to
/// the future's completion), `perfkit_hot_path_calls_total{outcome}` and
/// `perfkit_hot_path_in_flight`. Outcomes: `ok`; `err` when the written return type's last
/// path segment is `Result` and the call returned `Err`; `panic` when a panic unwound
/// through the call; `cancelled` when an `async fn`'s future was dropped before it
/// completed. The snapshot's `hot_paths` section has the counts and p50/p95/p99/max.
///
/// It works on free functions, methods with any receiver, associated functions, generic
/// functions, `impl Trait` returns, `async fn` and bodies with `return` and `?`.
/// Arguments: `name = "..."` replaces the `function` label; `crate = "..."` names the
/// path to perfkit when it is re-exported under another name.
///
/// Cost per call: two clock reads and three relaxed adds on the calling thread's own
/// cells; `docs/hot-path.md` has the measured figures and when not to annotate.
///
/// To compile every `#[hot_path]` to the plain function (no clock reads, no series), build
/// with `RUSTFLAGS="--cfg perfkit_hot_path_off"`: the annotations stay in the code and cost
/// nothing.
///
/// # Examples
/// ```
/// #[perfkit::hot_path]
/// fn parse(input: &str) -> Result<u32, std::num::ParseIntError> {
///     let n = input.trim().parse::<u32>()?;
///     Ok(n * 2)
/// }
///
/// #[perfkit::hot_path(name = "load_user")]
/// async fn load(id: u64) -> Option<String> {
///     (id > 0).then(|| format!("user-{id}"))
/// }
///
/// assert_eq!(parse(" 21 "), Ok(42));
/// assert!(parse("x").is_err()); // counted as outcome="err"
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// assert_eq!(load(7).await.as_deref(), Some("user-7"));
/// # });
/// ```
#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
pub use perfkit_macros::hot_path;

/// Runtime support for `#[hot_path]` expansions. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::hot_path::{Guard, Site, call_once, enter_span, instrument, is_err};
    #[cfg(feature = "heap-profiling")]
    pub use tikv_jemallocator::Jemalloc;
}

/// Makes jemalloc, with its sampling heap profiler on, the global allocator, so that
/// `/debug/pprof/heap` and `/debug/pprof/allocs` answer. One line at the crate root of the
/// binary:
///
/// ```ignore
/// perfkit::jemalloc_profiling!();
/// ```
///
/// It declares the `#[global_allocator]` (`tikv_jemallocator::Jemalloc`) and sets
/// jemalloc's start-up configuration to `prof:true,prof_active:true,prof_accum:true,lg_prof_sample:19`:
/// profiling on, one sampled allocation per 512 KiB on average (1.8× the time of plain
/// jemalloc on a loop that only allocates and frees, see `docs/profiling.md`), and cumulative counts kept
/// for `/allocs` (jemalloc then keeps every distinct allocation stack for the life of the
/// process). Give a configuration string to use another one, e.g.
/// `perfkit::jemalloc_profiling!("prof:true,prof_active:true,lg_prof_sample:21")`; the
/// `_RJEM_MALLOC_CONF` environment variable overrides either at start-up.
///
/// Use it once per binary, and not together with another `#[global_allocator]`. The
/// configuration symbol is jemalloc's prefixed `_rjem_malloc_conf`; if a crate in the build
/// enables `tikv-jemalloc-sys`'s `unprefixed_malloc_on_supported_platforms`, set the
/// configuration through `MALLOC_CONF` instead.
#[cfg(feature = "heap-profiling")]
#[cfg_attr(docsrs, doc(cfg(feature = "heap-profiling")))]
#[macro_export]
macro_rules! jemalloc_profiling {
    () => {
        $crate::jemalloc_profiling!("prof:true,prof_active:true,prof_accum:true,lg_prof_sample:19");
    };
    ($conf:literal) => {
        #[global_allocator]
        static PERFKIT_GLOBAL_ALLOCATOR: $crate::__private::Jemalloc = $crate::__private::Jemalloc;

        /// jemalloc reads its configuration from this symbol at start-up.
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static PERFKIT_MALLOC_CONF: &u8 = &::core::concat!($conf, "\0").as_bytes()[0];
    };
}

cfg_server! {
    pub mod server;
    pub use server::{Builder, BuildError, DebugServer, init};
}
