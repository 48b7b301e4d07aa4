//! HTTP server metrics as a [`tower`](https://docs.rs/tower) layer, for axum and hyper
//! services.
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{Router, routing::get};
//!
//! async fn progress() -> &'static str {
//!     "{}"
//! }
//!
//! // After the routes: a layer applies to the routes added before it.
//! let app: Router = Router::new()
//!     .route("/v1/progress/{user}", get(progress))
//!     .layer(perfkit::http::MetricsLayer::new()); // with the `axum` feature
//! # let _ = app;
//! # }
//! ```
//!
//! Every request through the layer records, labelled with its **route template** (never the
//! raw path, so `/v1/progress/u1` and `/v1/progress/u2` share `route="/v1/progress/{user}"`):
//!
//! | series | kind | labels |
//! |---|---|---|
//! | `http_server_request_duration_seconds` | histogram | `method`, `route`, `status` |
//! | `http_server_request_size_bytes` | histogram | `method`, `route` |
//! | `http_server_response_size_bytes` | histogram | `method`, `route` |
//! | `http_server_requests_in_flight` | gauge (read at scrape) | `method`, `route` |
//!
//! and the snapshot's `http_routes` section has one entry per method and route with its
//! request and 5xx counts, requests in flight and the duration's p50/p95/p99 across
//! statuses, which the k6 helper turns into per-route Trends.
//!
//! # Route templates
//! In this order:
//! 1. with the `axum` feature, axum's `MatchedPath`, which axum's router sets before the
//!    layers added with `Router::layer` / `route_layer` run (a layer around the whole
//!    `Router` from outside runs before routing and sees none);
//! 2. the templates given to [`MetricsLayer::routes`]: `{name}` matches one path segment,
//!    `{*name}` the rest of the path, anything else literally; the first match wins;
//! 3. otherwise `route="__unmatched__"`: unknown paths, scanners and 404s all share it.
//!
//! # What is measured
//! * duration: from the request entering the layer to the response head being ready; the
//!   time to stream a body after that is not included. A response future dropped before it
//!   finished (the client went away) is recorded with `status="cancelled"`, a service error
//!   with `status="error"`;
//! * request size: the `Content-Length` header, else the body's exact size hint; requests
//!   whose length is unknown (chunked uploads) are not recorded, as the layer does not wrap
//!   the request body (that keeps it usable inside axum's router);
//! * response size: the data bytes the body yields, counted as it streams and recorded when
//!   it ends or is dropped;
//! * in flight: from the request entering the layer until its response body ends or is
//!   dropped.
//!
//! Methods outside the nine standard ones are labelled `_OTHER`. The number of
//! (method, route) pairs is capped by the registry's cardinality cap (default 1 000); pairs
//! past it are recorded under `route="__overflow__"` and counted in
//! `perfkit_metric_overflow_total{metric="http_server_request_duration_seconds"}`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower_layer::Layer;
use tower_service::Service;

use crate::metrics::names::{self, Unit};
use crate::metrics::{
    Collection, Collector, Histogram, OVERFLOW_LABEL, Sections, WindowMax, registry,
};

/// The route label of requests no template matched.
pub const UNMATCHED_ROUTE: &str = "__unmatched__";

/// A tower layer recording HTTP server metrics; see the [module docs](self).
#[derive(Clone)]
pub struct MetricsLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsLayer")
            .field(
                "routes",
                &self
                    .shared
                    .templates
                    .iter()
                    .map(|t| &t.raw)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Default for MetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsLayer {
    /// A layer recording into the global registry, taking route templates from axum's
    /// `MatchedPath` (with the `axum` feature) and from nothing else.
    pub fn new() -> Self {
        Self::build(Vec::new())
    }

    /// Route templates for services without axum's router, e.g. plain hyper:
    /// `MetricsLayer::routes(["/v1/progress/{user}", "/events", "/static/{*path}"])`.
    pub fn routes<I, S>(templates: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::build(
            templates
                .into_iter()
                .map(|t| Template::parse(t.as_ref()))
                .collect(),
        )
    }

    fn build(templates: Vec<Template>) -> Self {
        let shared = Arc::new(Shared {
            templates,
            table: RwLock::default(),
            cap: None,
        });
        let weak: std::sync::Weak<dyn Collector> =
            Arc::downgrade(&(Arc::clone(&shared) as Arc<dyn Collector>));
        registry().register_collector(weak);
        MetricsLayer { shared }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`MetricsLayer`] wraps around another.
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for MetricsService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsService").finish_non_exhaustive()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for MetricsService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body,
    ResB: Body,
{
    type Response = Response<CountedBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let start = Instant::now();
        let series = self
            .shared
            .series(method_label(req.method()), &self.shared.route_of(&req));
        let size = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .or_else(|| req.body().size_hint().exact());
        if let Some(size) = size {
            series.request_size.record(size);
        }
        let in_flight = InFlight::enter(&series);
        ResponseFuture {
            inner: self.inner.call(req),
            state: Some((series, in_flight, start)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`MetricsService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        state: Option<(Arc<RouteSeries>, InFlight, Instant)>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some((series, _in_flight, start)) = this.project().state.take() {
                series.duration("cancelled").record_duration(start.elapsed());
            }
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<CountedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        let Some((series, in_flight, start)) = this.state.take() else {
            panic!("ResponseFuture polled after completion");
        };
        let elapsed = start.elapsed();
        Poll::Ready(match out {
            Ok(resp) => {
                series
                    .duration(resp.status().as_str())
                    .record_duration(elapsed);
                Ok(resp.map(|inner| CountedBody {
                    inner,
                    state: Some((series, in_flight)),
                    bytes: 0,
                }))
            }
            Err(e) => {
                series.duration("error").record_duration(elapsed);
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts the bytes it yields for
    /// `http_server_response_size_bytes`.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        state: Option<(Arc<RouteSeries>, InFlight)>,
        bytes: u64,
    }

    impl<B> PinnedDrop for CountedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some((series, _in_flight)) = this.state.take() {
                series.response_size.record(*this.bytes);
            }
        }
    }
}

impl<B> std::fmt::Debug for CountedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountedBody")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    *this.bytes += bytes::Buf::remaining(data) as u64;
                }
            }
            None | Some(Err(_)) => {
                if let Some((series, _in_flight)) = this.state.take() {
                    series.response_size.record(*this.bytes);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One request in flight on a route; leaving is the drop.
struct InFlight(Arc<RouteSeries>);

impl InFlight {
    fn enter(series: &Arc<RouteSeries>) -> Self {
        let before = series.in_flight.fetch_add(1, Ordering::Relaxed);
        series
            .in_flight_max
            .observe(u64::try_from(before + 1).unwrap_or(0));
        InFlight(Arc::clone(series))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The series of one (method, route) pair.
struct RouteSeries {
    method: &'static str,
    route: String,
    in_flight: AtomicI64,
    /// The largest `in_flight` per second.
    in_flight_max: WindowMax,
    request_size: Arc<Histogram>,
    response_size: Arc<Histogram>,
    /// Every status together, for the snapshot's quantiles.
    all: Histogram,
    by_status: Mutex<Vec<(String, Arc<Histogram>)>>,
}

impl std::fmt::Debug for RouteSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSeries")
            .field("method", &self.method)
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl RouteSeries {
    fn in_flight_now(&self) -> u64 {
        u64::try_from(self.in_flight.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// The duration histogram for `status`, recording into the all-status one too.
    fn duration(&self, status: &str) -> Recorder<'_> {
        let mut by = self.by_status.lock().unwrap_or_else(|p| p.into_inner());
        let h = match by.iter().find(|(s, _)| s == status) {
            Some((_, h)) => Arc::clone(h),
            None => {
                let h = registry().histogram(
                    &names::HTTP_SERVER_REQUEST_DURATION_SECONDS,
                    &[self.method, &self.route, status],
                );
                by.push((status.to_owned(), Arc::clone(&h)));
                h
            }
        };
        Recorder {
            series: self,
            status: h,
        }
    }

    fn errors(&self) -> u64 {
        let by = self.by_status.lock().unwrap_or_else(|p| p.into_inner());
        by.iter()
            .filter(|(s, _)| s.starts_with('5'))
            .map(|(_, h)| h.snapshot().count())
            .sum()
    }
}

struct Recorder<'a> {
    series: &'a RouteSeries,
    status: Arc<Histogram>,
}

impl Recorder<'_> {
    fn record_duration(&self, d: std::time::Duration) {
        self.status.record_duration(d);
        self.series.all.record_duration(d);
    }
}

struct Shared {
    templates: Vec<Template>,
    table: RwLock<HashMap<(&'static str, String), Arc<RouteSeries>>>,
    /// Overrides the registry's cardinality cap (tests).
    cap: Option<usize>,
}

impl Shared {
    fn route_of<B>(&self, req: &Request<B>) -> String {
        #[cfg(feature = "axum")]
        if let Some(m) = req.extensions().get::<axum::extract::MatchedPath>() {
            return m.as_str().to_owned();
        }
        let path = req.uri().path();
        self.templates
            .iter()
            .find(|t| t.matches(path))
            .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |t| t.raw.clone())
    }

    fn series(&self, method: &'static str, route: &str) -> Arc<RouteSeries> {
        {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = table.get(&(method, route.to_owned())) {
                return Arc::clone(s);
            }
        }
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        let cap = self.cap.unwrap_or_else(|| registry().cardinality_cap());
        let route = if table.len() >= cap && !table.contains_key(&(method, route.to_owned())) {
            registry()
                .counter(
                    &names::METRIC_OVERFLOW_TOTAL,
                    &[names::HTTP_SERVER_REQUEST_DURATION_SECONDS.name],
                )
                .inc();
            OVERFLOW_LABEL
        } else {
            route
        };
        Arc::clone(table.entry((method, route.to_owned())).or_insert_with(|| {
            Arc::new(RouteSeries {
                method,
                route: route.to_owned(),
                in_flight: AtomicI64::new(0),
                in_flight_max: WindowMax::new(),
                request_size: registry()
                    .histogram(&names::HTTP_SERVER_REQUEST_SIZE_BYTES, &[method, route]),
                response_size: registry()
                    .histogram(&names::HTTP_SERVER_RESPONSE_SIZE_BYTES, &[method, route]),
                all: Histogram::new(Unit::Seconds),
                by_status: Mutex::default(),
            })
        }))
    }

    fn all(&self) -> Vec<Arc<RouteSeries>> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = table.values().cloned().collect();
        v.sort_by(|a, b| (&a.route, a.method).cmp(&(&b.route, b.method)));
        v
    }
}

impl Collector for Shared {
    fn collect(&self, out: &mut Collection) {
        for s in self.all() {
            let now = s.in_flight_now();
            out.push(
                &names::HTTP_SERVER_REQUESTS_IN_FLIGHT,
                &[s.method, &s.route],
                now as f64,
            );
            if let Some(w) = out.window() {
                out.push(
                    &names::HTTP_SERVER_REQUESTS_IN_FLIGHT_MAX_10S,
                    &[s.method, &s.route],
                    s.in_flight_max.max(w).max(now) as f64,
                );
            }
        }
    }

    fn tick(&self, tick: &crate::metrics::Tick) {
        for s in self.all() {
            s.in_flight_max.tick(tick, s.in_flight_now());
            // The all-status histogram is the layer's own, not the registry's.
            s.all.tick(tick);
        }
    }

    fn snapshot(&self, out: &mut Sections) {
        for s in self.all() {
            let all = s.all.snapshot();
            let now = s.in_flight_now();
            let window = out.window().map(|w| {
                let seconds = s.all.window(w);
                serde_json::json!({
                    "requests": seconds.as_ref().map(|h| h.count()),
                    "in_flight_max": s.in_flight_max.max(w).max(now),
                    "seconds": seconds.map(|h| h.to_json()),
                })
            });
            let entry = serde_json::json!({
                    "name": format!("{} {}", s.method, s.route),
                    "method": s.method,
                    "route": s.route,
                    "requests": all.count(),
                    "errors": s.errors(),
                    "in_flight": now,
                    "seconds": all.to_json(),
                    "request_bytes": s.request_size.snapshot().to_json(),
                    "response_bytes": s.response_size.snapshot().to_json(),
            });
            out.push("http_routes", crate::metrics::window::attach(entry, window));
        }
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

/// A route template: literal segments, `{name}` for one segment, `{*name}` for the rest.
struct Template {
    raw: String,
    segments: Vec<Segment>,
}

enum Segment {
    Literal(String),
    One,
    Rest,
}

impl Template {
    fn parse(raw: &str) -> Template {
        let segments = raw
            .trim_start_matches('/')
            .split('/')
            .map(|s| {
                if s.starts_with("{*") && s.ends_with('}') {
                    Segment::Rest
                } else if s.starts_with('{') && s.ends_with('}') {
                    Segment::One
                } else {
                    Segment::Literal(s.to_owned())
                }
            })
            .collect();
        Template {
            raw: raw.to_owned(),
            segments,
        }
    }

    fn matches(&self, path: &str) -> bool {
        let mut parts = path.trim_start_matches('/').split('/');
        for seg in &self.segments {
            match seg {
                Segment::Rest => return true,
                Segment::One => match parts.next() {
                    Some(p) if !p.is_empty() => {}
                    _ => return false,
                },
                Segment::Literal(l) => {
                    if parts.next() != Some(l.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_segments() {
        let t = Template::parse("/v1/progress/{user}");
        assert!(t.matches("/v1/progress/u1"));
        assert!(!t.matches("/v1/progress/"));
        assert!(!t.matches("/v1/progress/u1/x"));
        assert!(!t.matches("/v1/progres/u1"));
        let r = Template::parse("/static/{*path}");
        assert!(r.matches("/static/a/b/c.js"));
        assert!(!r.matches("/other/a"));
        let root = Template::parse("/");
        assert!(root.matches("/"));
        assert!(!root.matches("/x"));
    }

    #[test]
    fn route_pairs_past_the_cap_share_the_overflow_label() {
        let shared = Shared {
            templates: Vec::new(),
            table: RwLock::default(),
            cap: Some(2),
        };
        let a = shared.series("GET", "/cap-test/a");
        let b = shared.series("GET", "/cap-test/b");
        let c = shared.series("GET", "/cap-test/c");
        let d = shared.series("POST", "/cap-test/d");
        assert_eq!(
            (a.route.as_str(), b.route.as_str()),
            ("/cap-test/a", "/cap-test/b")
        );
        assert_eq!(c.route, OVERFLOW_LABEL);
        assert_eq!(d.route, OVERFLOW_LABEL);
        // Known pairs keep their series; the overflow pair is shared.
        assert!(Arc::ptr_eq(&a, &shared.series("GET", "/cap-test/a")));
        assert!(Arc::ptr_eq(&c, &shared.series("GET", "/cap-test/e")));
        assert_eq!(shared.table.read().unwrap().len(), 4);
    }

    #[test]
    fn methods_outside_the_standard_nine_share_a_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"PURGE").unwrap()),
            "_OTHER"
        );
    }
}
