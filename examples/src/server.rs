//! The API's HTTP server: hyper serving the axum router, with what a production service
//! needs and `axum::serve` does not set:
//!
//! * **a connection cap** (`INGEST_MAX_CONNECTIONS`): at the cap the server stops accepting,
//!   and new connections wait in the kernel's listen backlog, holding none of the process's
//!   file descriptors;
//! * **a deadline for request heads** (`INGEST_HEADER_TIMEOUT_MS`): a connection whose next
//!   request head has not fully arrived in time is closed, whether it sent part of one or
//!   nothing since its last answer (hyper restarts the timer for each request), so half-sent
//!   and idle connections do not hold slots;
//! * **a request timeout** (`INGEST_REQUEST_TIMEOUT_MS`, in [`crate::http::router`]);
//! * **a bounded graceful shutdown**: on the stop signal the listener closes at once, open
//!   connections finish their request in flight (idle ones close), and whatever is still
//!   open at the deadline is dropped.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The connection limits of the API server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Longest wait for a request head, on a new or an idle connection.
    pub header_timeout: Duration,
}

/// The stop signal: `Some(deadline)` once the server must stop accepting and have every
/// connection closed by `deadline`.
pub type Stop = watch::Receiver<Option<Instant>>;

/// Serves `router` on `listener` until `stop` carries a deadline, then lets open connections
/// finish until that deadline and drops the rest. Returns how many were still open then.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, mut stop: Stop) -> usize {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut conns = JoinSet::new();
    let mut last_error: Option<std::time::Instant> = None;
    let deadline = loop {
        // At the cap, wait for a slot before accepting: newcomers wait in the backlog.
        let permit = tokio::select! {
            biased;
            d = stopped(&mut stop) => break d,
            p = Arc::clone(&slots).acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            biased;
            d = stopped(&mut stop) => break d,
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: say so now and then, and do not spin.
                if last_error.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "accept failed");
                    last_error = Some(std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop.clone();
        conns.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                log_connection_error(&e);
            }
        });
    };
    drop(listener);
    let still_open = tokio::time::timeout_at(deadline, async {
        while conns.join_next().await.is_some() {}
    })
    .await
    .map_or(conns.len(), |()| 0);
    conns.abort_all();
    still_open
}

/// Resolves with the deadline once the stop signal carries one (or, if its sender is gone,
/// with an immediate deadline).
async fn stopped(stop: &mut Stop) -> Instant {
    match stop.wait_for(Option::is_some).await {
        Ok(d) => d.unwrap_or_else(Instant::now),
        Err(_) => Instant::now(),
    }
}

fn log_connection_error(e: &hyper::Error) {
    // Header timeouts and clients that leave are part of a service's life, not errors.
    tracing::debug!(error = %e, "connection closed");
}
