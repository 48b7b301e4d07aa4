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

use tokio::net::TcpListener;

pub mod config;
pub mod event;
pub mod http;
pub mod pipeline;
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
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(io::Error),
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
    applied_at_start: u64,
    dropped_at_start: u64,
}

impl Service {
    /// Opens the database and binds the HTTP listener.
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        let location = config.db.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&location))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        let applied_at_start = store.events_applied().await?;
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
        tracing::info!(db = %store.path().display(), "database ready");
        let (events, pipeline) = pipeline::start(store.clone(), config)?;
        Ok(Self {
            listener,
            local_addr,
            state: http::AppState::new(store, events).with_leak_tasks(config.leak_tasks),
            pipeline,
            applied_at_start,
            dropped_at_start: pipeline::dropped_events(),
        })
    }

    /// The address the HTTP API listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish and reports
    /// accepted versus applied events.
    pub async fn serve<F>(self, shutdown: F) -> Result<Report, Error>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            listener,
            state,
            pipeline,
            applied_at_start,
            dropped_at_start,
            ..
        } = self;
        let served = axum::serve(listener, http::router(state.clone()))
            .with_graceful_shutdown(shutdown)
            .await;
        // The router (and its state) is gone; dropping the last sender lets the pipeline
        // drain everything accepted into the database before the report is taken.
        let store = state.store().clone();
        let accepted_events = state.accepted_events();
        drop(state);
        let drained = pipeline.drain().await;
        served.map_err(Error::Serve)?;
        let applied_total = store.events_applied().await?;
        let report = Report {
            accepted_events,
            applied_events: applied_total.saturating_sub(applied_at_start),
            dropped_events: pipeline::dropped_events().saturating_sub(dropped_at_start)
                + drained.lost_in_pool(),
        };
        tracing::info!(
            accepted_events = report.accepted_events,
            applied_events = report.applied_events,
            dropped_events = report.dropped_events,
            applied_events_all_runs = applied_total,
            batches = drained.batches.batches,
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
