//! The `ingest` example service: see the `perfkit_examples` crate docs.
//!
//! Configuration by environment (see [`perfkit_examples::config`] for every default):
//! `INGEST_ADDR` (default `127.0.0.1:8080`), `INGEST_DB` (default: a fresh temporary file),
//! `INGEST_QUEUE_CAPACITY`, `INGEST_QUEUE_POLICY`, `INGEST_FLUSH_INTERVAL_MS`,
//! `INGEST_MAX_BATCH`, `INGEST_FLUSH_DELAY_MS`, `INGEST_SLOW_AFTER_S`, `INGEST_WORKERS`, `INGEST_WORK_DELAY_US`,
//! `INGEST_ENQUEUE_TIMEOUT_MS`, `INGEST_SHUTDOWN_TIMEOUT_MS`, `INGEST_MAX_CONNECTIONS`,
//! `INGEST_HEADER_TIMEOUT_MS`, `INGEST_REQUEST_TIMEOUT_MS`, `INGEST_LEAK_TASKS`,
//! `INGEST_DATABASE_URL` (PostgreSQL instead of SQLite), `INGEST_DB_POOL`, `INGEST_DB_TIMEOUT_MS`,
//! `INGEST_QUERY_DELAY_MS`, `INGEST_LOCK_HOLD_US`,
//! `PERFKIT_ADDR` / `PERFKIT_TOKEN` (perfkit's debug server), `RUST_LOG` (default `info`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use perfkit_examples::Config;
use tracing_subscriber::EnvFilter;

// jemalloc with its sampling heap profiler as the global allocator: `/debug/pprof/heap`.
perfkit::jemalloc_profiling!();

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => return fail(&err),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ingest-worker")
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&format!("cannot start the tokio runtime: {err}")),
    };
    let result = runtime.block_on(serve(config));
    // A stuck database may still hold blocking threads: do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

async fn serve(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    // perfkit's debug server (`/metrics`, `/debug/pprof/*`, `/debug/perfkit/*`); reads
    // PERFKIT_ADDR and PERFKIT_TOKEN. Stops when the guard drops, after the service.
    let perfkit = perfkit::Builder::from_env()?
        .runtime("main", tokio::runtime::Handle::current())
        .start()?;
    tracing::info!(addr = %perfkit.local_addr(), "perfkit debug server listening");

    perfkit_examples::run(config).await?;
    drop(perfkit);
    Ok(())
}

fn fail(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("ingest: error: {err}");
    ExitCode::FAILURE
}
