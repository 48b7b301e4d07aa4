//! Profiles, independent of the debug server: the `SIGPROF` CPU sampler, jemalloc heap
//! dumps, the contention profile of perfkit's locks, live tracked tasks, symbolization,
//! pprof encoding and flame graphs. The debug server (`server`) only routes HTTP requests
//! here; code can profile without it:
//!
//! ```no_run
//! # #[cfg(feature = "cpu-profiling")]
//! # fn main() -> std::io::Result<()> {
//! # fn work() {}
//! let profiler = perfkit::profile::CpuProfiler::start(99, 10)?;
//! work();
//! let profile = profiler.finish();
//! std::fs::write("cpu.pb.gz", profile.pprof())?;
//! # Ok(()) }
//! # #[cfg(not(feature = "cpu-profiling"))]
//! # fn main() {}
//! ```
//!
//! | module | what | feature |
//! |---|---|---|
//! | `encode` | the pprof protobuf writer (gzipped, as `go tool pprof` reads it) | |
//! | `goroutine` | live tracked tasks as a profile | `server` |
//! | `contention` | the lock and semaphore contention profile | `server` |
//! | `sampler`, `cpu` | the `SIGPROF` sampler and [`CpuProfiler`] | `cpu-profiling` |
//! | `heap` | jemalloc's sampled heap, its dumps and figures | `heap-profiling` |
//! | `symbols` | addresses to functions, files and lines; flame graphs | either |
//! | `objects` | the loaded objects and their executable segments (`dl_iterate_phdr`) | either |
//! | `recent` | the latest profiles' top functions, for the run report | |

#[cfg(feature = "server")]
pub(crate) mod contention;
#[cfg(feature = "cpu-profiling")]
pub(crate) mod cpu;
pub(crate) mod encode;
#[cfg(feature = "server")]
pub(crate) mod goroutine;
#[cfg(feature = "heap-profiling")]
pub(crate) mod heap;
#[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
mod objects;
pub(crate) mod recent;
#[cfg(feature = "cpu-profiling")]
pub(crate) mod sampler;
#[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
pub(crate) mod symbols;

#[cfg(feature = "cpu-profiling")]
#[cfg_attr(docsrs, doc(cfg(feature = "cpu-profiling")))]
pub use cpu::{CpuProfile, CpuProfiler};
#[cfg(feature = "heap-profiling")]
#[cfg_attr(docsrs, doc(cfg(feature = "heap-profiling")))]
pub use heap::{
    HeapError, HeapForm, HeapKind, HeapSampling, MAX_LG_SAMPLE, heap, heap_delta, heap_sampling,
    set_heap_sample_rate, set_heap_sampling,
};
#[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "cpu-profiling", feature = "heap-profiling")))
)]
pub use symbols::FlamegraphError;
