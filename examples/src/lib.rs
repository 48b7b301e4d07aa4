//! `ingest`: an example event-ingest service instrumented with perfkit.
//!
//! A small game-challenge backend: clients `POST /events` with stat increments
//! (`{"user_id": "u1", "stat": "kills", "value": 3}`, or an array of up to 1000), and read
//! a user's totals with `GET /v1/progress/{user}`. Totals live in SQLite.
//!
//! The pieces are kept apart so they can be rebuilt independently:
//! [`config`] (environment), [`event`] (the request model and its validation),
//! [`pipeline`] (the write path: the `events` queue and the `db` batcher), [`store`]
//! (SQLite), [`http`] (the axum router), [`telemetry`] (the service's own metrics). [`run`] ties them together; the `ingest` binary adds tracing and perfkit's
//! debug server.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

pub mod config;
pub mod event;
pub mod http;
mod pg;
pub mod pipeline;
pub mod server;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use store::{Store, StoreError};

/// The service failed to start or to run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS reported.
        source: io::Error,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The write path could not be built.
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
}

/// What a service run did, for comparing events accepted with events applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Events accepted by the API (answered 202) during this run.
    pub accepted_events: u64,
    /// Events applied to the database during this run.
    pub applied_events: u64,
    /// Events perfkit counted as dropped on the write path during this run.
    pub dropped_events: u64,
}

impl Report {
    /// Whether every accepted event was applied or counted as dropped.
    pub fn balanced(&self) -> bool {
        self.accepted_events == self.applied_events + self.dropped_events
    }
}

/// A bound, not yet serving, `ingest` service.
#[derive(Debug)]
pub struct Service {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: http::AppState,
    pipeline: pipeline::Pipeline,
    limits: server::Limits,
    shutdown_timeout: Duration,
    dropped_at_start: u64,
}

/// Time kept back from the shutdown timeout for the report, stopping the debug server and
/// the runtime: a quarter of it, at most 2 s.
fn exit_margin(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_secs(2))
}

impl Service {
    /// Opens the database and binds the HTTP listener.
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        let store = Store::open_with(
            &config.db,
            store::PoolOptions {
                size: config.db_pool,
                timeout: config.db_timeout,
                query_delay: config.query_delay,
            },
        )
        .await?;
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: config.addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.addr,
            source,
        })?;
        tracing::info!(db = %store.location(), pool = config.db_pool, "database ready");
        let (events, pipeline) = pipeline::start(store.clone(), config)?;
        Ok(Self {
            listener,
            local_addr,
            state: http::AppState::new(store, events)
                .with_leak_tasks(config.leak_tasks)
                .with_enqueue_timeout(config.enqueue_timeout)
                .with_request_timeout(config.request_timeout),
            pipeline,
            limits: server::Limits {
                max_connections: config.max_connections,
                header_timeout: config.header_timeout,
            },
            shutdown_timeout: config.shutdown_timeout,
            dropped_at_start: pipeline::dropped_events(),
        })
    }

    /// The address the HTTP API listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops within the shutdown timeout
    /// (`INGEST_SHUTDOWN_TIMEOUT_MS`): intake stops at once, requests in flight are
    /// answered, the write path drains until the deadline and what it still holds then is
    /// counted as dropped. Reports accepted versus applied and dropped events.
    pub async fn serve<F>(self, shutdown: F) -> Result<Report, Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            listener,
            state,
            pipeline,
            limits,
            shutdown_timeout,
            dropped_at_start,
            ..
        } = self;
        let (stop, stopping) = tokio::sync::watch::channel(None);
        let server = tokio::spawn(server::serve(
            listener,
            http::router(state.clone()),
            limits,
            stopping,
        ));
        shutdown.await;
        let signalled = tokio::time::Instant::now();
        let deadline = signalled + shutdown_timeout.saturating_sub(exit_margin(shutdown_timeout));
        // The listener closes and requests in flight finish (those waiting for room in the
        // queue are answered as soon as the pipeline closes it, just below).
        let _ = stop.send(Some(deadline));
        let drained = pipeline.shutdown(deadline).await;
        let still_open = server.await.unwrap_or(0);
        if still_open > 0 {
            tracing::warn!(
                connections = still_open,
                "connections still open at the shutdown deadline were closed"
            );
        }
        // Every handler is done: nothing more can be accepted.
        let accepted_events = state.accepted_events();
        let applied_events = state.store().applied();
        drop(state);
        let report = Report {
            accepted_events,
            applied_events,
            dropped_events: (pipeline::dropped_events().saturating_sub(dropped_at_start)
                + drained.lost_in_pool())
            .saturating_sub(drained.applied_after_abandon),
        };
        tracing::info!(
            accepted_events = report.accepted_events,
            applied_events = report.applied_events,
            dropped_events = report.dropped_events,
            discarded_at_deadline = drained.discarded + drained.batches.abandoned,
            batches = drained.batches.batches,
            shutdown_ms = signalled.elapsed().as_millis() as u64,
            "ingest stopped"
        );
        if !report.balanced() {
            tracing::warn!(
                accepted_events = report.accepted_events,
                applied_events = report.applied_events,
                dropped_events = report.dropped_events,
                "accepted events != applied + dropped"
            );
        }
        Ok(report)
    }
}

/// Runs the service with `config` until SIGINT or SIGTERM.
///
/// Describes the service's metrics to the installed `metrics` recorder, so start perfkit
/// (which installs it) first. Prints `ingest listening on http://ADDR` once bound.
pub async fn run(config: Config) -> Result<Report, Error> {
    telemetry::describe();
    let service = Service::bind(&config).await?;
    println!("ingest listening on http://{}", service.local_addr());
    service.serve(shutdown_signal()).await
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received, draining");
}
