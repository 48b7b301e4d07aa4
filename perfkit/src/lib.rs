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

pub mod batch;
mod clock;
pub(crate) mod loom;
pub mod metrics;
pub mod pool;
pub mod queue;
pub mod task;

cfg_server! {
    pub mod server;
    pub use server::{Builder, BuildError, DebugServer, init};
}
