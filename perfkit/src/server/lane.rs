//! One expensive answer at a time.
//!
//! Heap and allocation dumps, flame graphs and the symbolization of a CPU profile each parse
//! debug information or build buffers of many megabytes. Run side by side they multiply the
//! process's peak memory (60 concurrent heap flame graphs once took a service from 17 MB to
//! 362 MB), so they take turns in one lane:
//!
//! * [`exclusive`]: a request for such an answer while the same one is being built shares
//!   that build's result; while a different one is being built it gets `409 Conflict` with
//!   what is running and for how long, and `Retry-After: 1`.
//! * [`queued`]: work that must not be refused (a CPU profile whose samples are already
//!   taken) waits for its turn instead.
//!
//! The work runs on the runtime's blocking pool, in a task of its own: a client that goes
//! away does not free the lane before the work is done.

use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;

use super::reply::{Body, error};

/// The turn: held by whoever is building an expensive answer.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// What holds the turn, for sharing and for the 409's reason.
static RUNNING: Mutex<Option<Running>> = Mutex::new(None);

struct Running {
    /// Requests with the same key share the result; `None` for work that is never shared.
    key: Option<String>,
    what: &'static str,
    since: Instant,
    done: watch::Receiver<Option<Answer>>,
}

/// A finished answer, cheap to hand to every request that shared it.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    async fn from_response(r: Response<Body>) -> Answer {
        let (parts, body) = r.into_parts();
        let body = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(never) => match never {},
        };
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    fn response(&self) -> Response<Body> {
        let mut r = Response::new(Full::new(self.body.clone()));
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers.clone();
        r
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<Running>> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Builds the answer called `key` with `work` on the blocking pool, unless an identical
/// build is running (its answer is shared) or a different one is (`409 Conflict`).
pub(crate) async fn exclusive<F>(key: String, what: &'static str, work: F) -> Response<Body>
where
    F: FnOnce() -> Response<Body> + Send + 'static,
{
    let done = {
        let mut running = lock();
        if let Some(r) = running.as_ref().filter(|r| r.key.as_deref() == Some(key.as_str())) {
            r.done.clone()
        } else {
            let Ok(turn) = TURN.try_lock() else {
                return busy(running.as_ref());
            };
            let (tx, rx) = watch::channel(None);
            *running = Some(Running {
                key: Some(key),
                what,
                since: Instant::now(),
                done: rx.clone(),
            });
            drop(running);
            tokio::spawn(async move {
                let answer = run(work).await;
                *lock() = None;
                drop(turn);
                let _ = tx.send(Some(answer));
            });
            rx
        }
    };
    wait(done).await
}

/// Waits for the turn, then builds the answer with `work` on the blocking pool. While it
/// waits and runs, [`exclusive`] requests get `409` naming `what`.
pub(crate) async fn queued<F>(what: &'static str, work: F) -> Response<Body>
where
    F: FnOnce() -> Response<Body> + Send + 'static,
{
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let turn = TURN.lock().await;
        *lock() = Some(Running {
            key: None,
            what,
            since: Instant::now(),
            done: tx.subscribe(),
        });
        let answer = run(work).await;
        *lock() = None;
        drop(turn);
        let _ = tx.send(Some(answer));
    });
    wait(rx).await
}

async fn run<F>(work: F) -> Answer
where
    F: FnOnce() -> Response<Body> + Send + 'static,
{
    let response = match tokio::task::spawn_blocking(work).await {
        Ok(r) => r,
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("building the answer failed: {e}"),
        ),
    };
    Answer::from_response(response).await
}

async fn wait(mut done: watch::Receiver<Option<Answer>>) -> Response<Body> {
    match done.wait_for(Option::is_some).await {
        Ok(a) => a.as_ref().map_or_else(gone, Answer::response),
        Err(_) => gone(),
    }
}

fn gone() -> Response<Body> {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the answer's builder stopped before finishing (the server is shutting down)",
    )
}

fn busy(running: Option<&Running>) -> Response<Body> {
    let reason = match running {
        Some(r) => format!(
            "{} is being built (started {:.1}s ago); expensive profiles are built one at a time, retry shortly",
            r.what,
            r.since.elapsed().as_secs_f64()
        ),
        None => "another expensive profile is being built; expensive profiles are built one at a time, retry shortly".to_owned(),
    };
    let mut r = error(StatusCode::CONFLICT, &reason);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    async fn body(r: Response<Body>) -> (StatusCode, String) {
        let a = Answer::from_response(r).await;
        (a.status, String::from_utf8_lossy(&a.body).into_owned())
    }

    fn slow(runs: &Arc<AtomicUsize>, text: &'static str) -> impl FnOnce() -> Response<Body> + Send + 'static {
        let runs = Arc::clone(runs);
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
            super::super::reply::text(StatusCode::OK, text.to_owned())
        }
    }

    #[test]
    fn identical_requests_share_one_build_and_different_ones_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let runs = Arc::new(AtomicUsize::new(0));
            let same: Vec<_> = (0..10)
                .map(|_| tokio::spawn(exclusive("heap".into(), "a heap profile", slow(&runs, "dump"))))
                .collect();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (status, reason) = body(exclusive("allocs".into(), "an allocation profile", slow(&runs, "x")).await).await;
            assert_eq!(status, StatusCode::CONFLICT);
            assert!(reason.starts_with("a heap profile is being built (started "), "{reason}");
            assert!(reason.ends_with('\n') && reason.lines().count() == 1, "{reason}");
            for h in same {
                assert_eq!(body(h.await.unwrap()).await, (StatusCode::OK, "dump".to_owned()));
            }
            assert_eq!(runs.load(Ordering::SeqCst), 1, "ten identical requests, one build");

            // Work that waits its turn is never refused; requests during it are.
            #[cfg(feature = "cpu-profiling")]
            {
            let waiting = tokio::spawn(queued("a CPU profile", slow(&runs, "cpu")));
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (status, reason) = body(exclusive("heap".into(), "a heap profile", slow(&runs, "y")).await).await;
            assert_eq!(status, StatusCode::CONFLICT, "{reason}");
            assert!(reason.starts_with("a CPU profile is being built"), "{reason}");
            assert_eq!(body(waiting.await.unwrap()).await, (StatusCode::OK, "cpu".to_owned()));
            }
            // The lane is free again.
            assert_eq!(body(exclusive("heap".into(), "a heap profile", slow(&runs, "z")).await).await.1, "z");
        });
    }
}
