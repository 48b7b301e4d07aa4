//! The HTTP API: `POST /events`, `GET /v1/progress/{user}`, `GET /healthz`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use crate::event::{self, Event, EventError};
use crate::store::{Store, StoreError};
use crate::telemetry;
use perfkit::queue::{SendError, Sender};

/// Largest accepted `POST /events` body, in bytes (1 MiB); larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// State shared by the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    store: Store,
    events: Sender<Event>,
    accepted: Arc<AtomicU64>,
    leak_tasks: bool,
    enqueue_timeout: Duration,
    request_timeout: Duration,
}

impl AppState {
    /// State over `store`, putting accepted events on `events`, with none accepted yet.
    pub fn new(store: Store, events: Sender<Event>) -> Self {
        Self {
            store,
            events,
            accepted: Arc::new(AtomicU64::new(0)),
            leak_tasks: false,
            enqueue_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// How long one `POST /events` may wait for room in the queue, over all its events
    /// (`INGEST_ENQUEUE_TIMEOUT_MS`).
    pub fn with_enqueue_timeout(mut self, timeout: Duration) -> Self {
        self.enqueue_timeout = timeout;
        self
    }

    /// How long any request may take before it is answered 503 (`INGEST_REQUEST_TIMEOUT_MS`).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Leak one tracked task per request (the `INGEST_LEAK_TASKS` debug switch).
    pub fn with_leak_tasks(mut self, leak: bool) -> Self {
        self.leak_tasks = leak;
        self
    }

    /// Events accepted (answered 202) since this state was created.
    pub fn accepted_events(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// The database behind the handlers.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    let leak = state.leak_tasks;
    let request_timeout = state.request_timeout;
    Router::new()
        .route(
            "/events",
            post(post_events).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
        )
        .route("/v1/progress/{user}", get(get_progress))
        .route("/healthz", get(healthz))
        // No request takes longer than this to be answered.
        .layer(axum::middleware::from_fn(
            move |req, next: axum::middleware::Next| answer_within(request_timeout, req, next),
        ))
        // Per-route latency, sizes and requests in flight, labelled by route template
        // (outside the timeout, so timed-out requests are measured too).
        .layer(perfkit::http::MetricsLayer::new())
        .layer(axum::middleware::from_fn(
            move |req, next: axum::middleware::Next| async move {
                if leak {
                    // A background task nobody ever stops: what a forgotten spawn looks like.
                    perfkit::task::spawn("leaked-per-request", std::future::pending::<()>());
                }
                next.run(req).await
            },
        ))
        .with_state(state)
}

/// Runs the rest of the stack for `req`, answering 503 if it takes longer than `timeout`
/// (the work in progress is dropped). The middleware behind `INGEST_REQUEST_TIMEOUT_MS`.
pub async fn answer_within(
    timeout: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => reject(
            "request_timeout",
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the request was not answered within {} ms (INGEST_REQUEST_TIMEOUT_MS)",
                    timeout.as_millis()
                ),
            ),
        )
        .into_response(),
    }
}

/// An error answer: the status and a one-line `{"error": "..."}` body.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        tracing::error!(error = %err, "database operation failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: &self.message,
            }),
        )
            .into_response()
    }
}

#[derive(Serialize)]
struct Accepted {
    accepted: usize,
    rejected: usize,
}

#[derive(Serialize)]
struct Progress {
    user_id: String,
    stats: BTreeMap<String, i64>,
}

fn reject(reason: &'static str, err: ApiError) -> ApiError {
    metrics::counter!(telemetry::REQUESTS_REJECTED_TOTAL, "reason" => reason).increment(1);
    err
}

#[perfkit::hot_path]
async fn post_events(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "unreadable_body"
        };
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("request body larger than {MAX_BODY_BYTES} bytes")
        } else {
            rejection.body_text()
        };
        reject(reason, ApiError::new(status, message))
    })?;
    let events = event::parse_events(&body).map_err(|err: EventError| {
        reject(
            err.label(),
            ApiError::new(StatusCode::BAD_REQUEST, err.to_string()),
        )
    })?;
    let total = events.len();
    let mut accepted = 0usize;
    // Every event waits for room at most until this deadline, all of them together.
    let deadline = tokio::time::Instant::now() + state.enqueue_timeout;
    let mut refusal = None;
    for event in events {
        let patience = deadline.saturating_duration_since(tokio::time::Instant::now());
        match state.events.send_timeout(event, patience).await {
            // Enqueued, or accepted and then counted by perfkit as dropped
            // (drop_newest / drop_oldest): either way the API took responsibility for it.
            // Counted at once, so the shutdown report sees it even if this request is cut
            // short.
            Ok(_) => {
                accepted += 1;
                state.accepted.fetch_add(1, Ordering::Relaxed);
            }
            // The `reject` policy refused it; each refusal is counted by perfkit in
            // perfkit_queue_rejected_total, and the next event may still fit.
            Err(SendError::Full(_)) => {
                refusal.get_or_insert_with(|| {
                    (
                        "queue_full",
                        "the event queue is full; retry later".to_owned(),
                    )
                });
            }
            // `block`: the queue stayed full until the deadline (counted by perfkit in
            // perfkit_queue_rejected_total too). The remaining events get one try each.
            Err(SendError::Timeout(_)) => {
                refusal.get_or_insert_with(|| {
                    (
                        "enqueue_timeout",
                        format!(
                            "the event queue stayed full for {} ms (INGEST_ENQUEUE_TIMEOUT_MS); retry later",
                            state.enqueue_timeout.as_millis()
                        ),
                    )
                });
            }
            Err(_) => {
                refusal = Some(("shutting_down", "the service is shutting down".to_owned()));
                break;
            }
        }
    }
    metrics::counter!(telemetry::EVENTS_ACCEPTED_TOTAL).increment(accepted as u64);
    let rejected = total - accepted;
    match refusal {
        // Nothing got in: tell the client to retry later.
        Some((reason, message)) if accepted == 0 => Err(reject(
            reason,
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message),
        )),
        // A partial refusal still answers 202, with the counts, so accepted events are not
        // sent twice.
        Some((reason, _)) => {
            metrics::counter!(telemetry::REQUESTS_REJECTED_TOTAL, "reason" => reason).increment(1);
            Ok((StatusCode::ACCEPTED, Json(Accepted { accepted, rejected })))
        }
        None => Ok((StatusCode::ACCEPTED, Json(Accepted { accepted, rejected }))),
    }
}

#[perfkit::hot_path]
async fn get_progress(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Json<Progress>, ApiError> {
    if let Err(len) = event::check_id(&user_id) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "user id must be 1 to {} characters, got {len}",
                event::MAX_ID_CHARS
            ),
        ));
    }
    let stats = state.store.progress(user_id.clone()).await?;
    Ok(Json(Progress { user_id, stats }))
}

async fn healthz() -> &'static str {
    "ok"
}
