//! Routing and the request-level safety rules (connections are [`super::accept`]'s), and
//! the `/metrics` and `/debug/perfkit/*` endpoints. Handlers speak [`super::reply`].

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::pprof;
use super::reply::{Body, Query, Reply, State, error, json, response, text};

/// A route: its path, the query parameters it accepts, and what answers it.
struct Route {
    path: &'static str,
    params: &'static [&'static str],
    handler: Handler,
}

#[derive(Clone, Copy)]
enum Handler {
    /// Answers at once, on the server thread.
    Now(fn(&State, &Query) -> Response<Body>),
    /// Answers later without holding up other requests.
    Later(fn(Arc<State>, Query) -> Reply),
    /// Reads a setting with `GET`, changes it with `POST` (the `bool`); on the server thread.
    Setting(fn(&State, &Query, bool) -> Response<Body>),
}
use Handler::{Later, Now, Setting};
use super::reply::BadRequest;

const ROUTES: &[Route] = &[
    Route { path: "/metrics", params: &[], handler: Now(metrics) },
    Route { path: "/debug/pprof/", params: &[], handler: Now(pprof::index) },
    Route { path: "/debug/pprof/cmdline", params: &[], handler: Now(pprof::cmdline) },
    Route { path: "/debug/pprof/goroutine", params: &["debug", "seconds"], handler: Later(pprof::goroutine) },
    Route { path: "/debug/pprof/profile", params: &["seconds", "format"], handler: Later(pprof::profile) },
    Route { path: "/debug/pprof/profile/last", params: &["format"], handler: Later(pprof::profile_last) },
    Route { path: "/debug/pprof/heap", params: &["debug", "gc", "format", "seconds"], handler: Later(pprof::heap) },
    Route { path: "/debug/pprof/allocs", params: &["debug", "gc", "format", "seconds"], handler: Later(pprof::allocs) },
    Route { path: "/debug/pprof/mutex", params: &["debug", "seconds"], handler: Later(super::mutex::serve) },
    Route { path: "/debug/perfkit/snapshot", params: &["window"], handler: Now(snapshot) },
    Route { path: "/debug/perfkit/inventory", params: &[], handler: Now(inventory) },
    Route { path: "/debug/perfkit/timeline", params: &["from", "to"], handler: Now(timeline) },
    Route { path: "/debug/perfkit/report", params: &["from", "to", "format", "phases"], handler: Now(report) },
    Route { path: "/debug/perfkit/k6.js", params: &[], handler: Now(k6_js) },
    Route { path: "/debug/perfkit/heap-sampling", params: &["active", "lg_sample"], handler: Setting(pprof::heap_sampling) },
];

pub(crate) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    if let Some(token) = &state.token {
        if !authorized(req.headers().get(header::AUTHORIZATION), token) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"perfkit\""),
            );
            return r;
        }
    }
    let path = req.uri().path();
    if path == "/debug/pprof" {
        let mut r = text(StatusCode::MOVED_PERMANENTLY, "moved to /debug/pprof/\n".into());
        r.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/debug/pprof/"));
        return r;
    }
    let Some(route) = ROUTES.iter().find(|r| r.path == path) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("unknown path {path}; see /debug/pprof/ for the endpoints"),
        );
    };
    let setting = matches!(route.handler, Setting(_));
    let post = setting && req.method() == Method::POST;
    if req.method() != Method::GET && !post {
        let allow = if setting { "GET, POST" } else { "GET" };
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {} not allowed on {path}; use {allow}", req.method()),
        );
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        return r;
    }
    let query = match Query::parse(req.uri().query().unwrap_or(""), route.path, route.params) {
        Ok(q) => q,
        Err(reason) => return reason.response(),
    };
    if route.path == "/metrics" {
        let openmetrics = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(crate::metrics::openmetrics::prefers_openmetrics);
        return metrics_answer(
            accepts_gzip(req.headers().get(header::ACCEPT_ENCODING)),
            openmetrics,
        );
    }
    match route.handler {
        Now(f) => f(&state, &query),
        Later(f) => f(state, query).await,
        Setting(f) => f(&state, &query, post),
    }
}

/// Whether an `Accept-Encoding` value accepts gzip (`gzip` or `x-gzip`, with a q-value
/// above 0 if one is given).
fn accepts_gzip(value: Option<&HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    v.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f64>().ok())
            .unwrap_or(1.0);
        (coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip")) && q > 0.0
    })
}

/// `/metrics`: the Prometheus text, or OpenMetrics when the scraper prefers it (as
/// Prometheus does), gzipped (fastest level) when the scraper accepts it.
fn metrics_answer(gzip: bool, openmetrics: bool) -> Response<Body> {
    use crate::metrics::openmetrics;
    let (text, content_type) = if openmetrics {
        (crate::metrics::render_openmetrics(), openmetrics::CONTENT_TYPE)
    } else {
        (crate::metrics::render(), openmetrics::TEXT_CONTENT_TYPE)
    };
    let compressed = gzip
        .then(|| {
            use std::io::Write as _;
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(text.len() / 4),
                flate2::Compression::fast(),
            );
            gz.write_all(text.as_bytes()).and_then(|()| gz.finish()).ok()
        })
        .flatten();
    let mut r = match compressed {
        Some(body) => {
            let mut r = response(StatusCode::OK, content_type, Bytes::from(body));
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        None => response(StatusCode::OK, content_type, Bytes::from(text)),
    };
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    r
}

/// Compares the `Authorization` header against `Bearer <token>` in constant time for a
/// given token length.
fn authorized(value: Option<&HeaderValue>, token: &[u8]) -> bool {
    let Some(v) = value else { return false };
    let v = v.as_bytes();
    if v.len() < 7 || !v[..7].eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    constant_time_eq(&v[7..], token)
}

/// Equal-length inputs are compared without an early exit, so the time taken does not
/// reveal how long a matching prefix is. Different lengths return early: the token's length
/// is not treated as secret.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Reached only without request headers (the route table's entry); `handle` answers
/// `/metrics` itself, to honour `Accept-Encoding`.
fn metrics(_: &State, _: &Query) -> Response<Body> {
    metrics_answer(false, false)
}

fn snapshot(_: &State, q: &Query) -> Response<Body> {
    let registry = crate::metrics::registry();
    match q.get("window").map(parse_window) {
        None => json(&registry.snapshot()),
        Some(Ok(n)) => json(&registry.snapshot_window(n)),
        Some(Err(reason)) => reason.response(),
    }
}

/// `from` and `to` (Unix seconds) of a timeline or report request: `to` defaults to now,
/// `from` to the timeline's span before it.
fn range(q: &Query) -> Result<(u64, u64), BadRequest> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let epoch = |key: &str, default: u64| match q.get(key) {
        None => Ok(default),
        Some(v) => match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 && !v.starts_with('+') => Ok(x as u64),
            _ => Err(BadRequest::from(format!(
                "{key} must be a time in seconds since the Unix epoch, got {v:?}"
            ))),
        },
    };
    let to = epoch("to", now)?;
    let span = super::timeline::SPAN as u64;
    let from = epoch("from", to.saturating_sub(span - 1))?;
    if from > to {
        return Err(BadRequest::from(format!("from ({from}) is after to ({to})")));
    }
    Ok((from, to))
}

fn timeline(_: &State, q: &Query) -> Response<Body> {
    match range(q) {
        Ok((from, to)) => json(&super::timeline::timeline().json(from, to)),
        Err(reason) => reason.response(),
    }
}

fn report(state: &State, q: &Query) -> Response<Body> {
    let (from, to) = match range(q) {
        Ok(r) => r,
        Err(reason) => return reason.response(),
    };
    let html = match q.get("format").unwrap_or("json") {
        "json" => false,
        "html" => true,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("format must be json or html, got {other:?}"),
            );
        }
    };
    let phases = match q.get("phases").map(parse_phases).transpose() {
        Ok(p) => p.unwrap_or_default(),
        Err(reason) => return reason.response(),
    };
    #[cfg(not(feature = "report-html"))]
    if html {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "the HTML report is not built in: enable perfkit's `report-html` feature (format=json works without it)",
        );
    }
    let registry = crate::metrics::registry();
    let timeline = super::timeline::timeline().json(from, to);
    let mut inventory = registry.inventory();
    if let Some(obj) = inventory.as_object_mut() {
        obj.insert("server".into(), server_settings(state));
    }
    let mut report = super::report::build(&timeline, &inventory, &registry.snapshot());
    let t0 = report["run"]["first_second"].as_u64().unwrap_or(from);
    report["profiles"] = crate::profile::recent::section(from, to, t0);
    report["run"]["phases"] = phases
        .iter()
        .map(|(name, at)| serde_json::json!({ "name": name, "start": at, "start_at_seconds": *at as i64 - t0 as i64 }))
        .collect();
    #[cfg(feature = "report-html")]
    if html {
        let page = super::report_html::render(&report, &timeline);
        return response(StatusCode::OK, "text/html; charset=utf-8", Bytes::from(page));
    }
    json(&report)
}

/// `phases=name@unix_seconds,...`: where the load test's phases started, at most 32, names of
/// letters, digits, `_`, `-` and `.` (1 to 64).
fn parse_phases(v: &str) -> Result<Vec<(String, u64)>, BadRequest> {
    let mut out = Vec::new();
    for part in v.split(',').filter(|p| !p.is_empty()) {
        let Some((name, at)) = part.rsplit_once('@') else {
            return Err(BadRequest::from(format!("phases must be name@unix_seconds,..., got {part:?}")));
        };
        let ok_name = (1..=64).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !ok_name {
            return Err(BadRequest::from(format!(
                "a phase name is 1 to 64 letters, digits, '_', '-' or '.', got {name:?}"
            )));
        }
        let at = match at.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 && !at.starts_with('+') => x as u64,
            _ => return Err(BadRequest::from(format!("phase {name:?} starts at {at:?}, not a time in seconds since the Unix epoch"))),
        };
        out.push((name.to_owned(), at));
    }
    if out.len() > 32 {
        return Err(BadRequest::from(format!("at most 32 phases, got {}", out.len())));
    }
    out.sort_by_key(|p| p.1);
    Ok(out)
}

/// `window=N`: whole seconds, 1..=300.
fn parse_window(v: &str) -> Result<u32, BadRequest> {
    use crate::metrics::MAX_WINDOW_SECONDS as MAX;
    match v.parse::<u32>() {
        Ok(n) if (1..=MAX).contains(&n) && !v.starts_with('+') => Ok(n),
        _ => Err(BadRequest::from(format!(
            "window must be a whole number of seconds from 1 to {MAX}, got {v:?}"
        ))),
    }
}

fn inventory(state: &State, _: &Query) -> Response<Body> {
    let mut inv = crate::metrics::registry().inventory();
    if let Some(obj) = inv.as_object_mut() {
        obj.insert("server".into(), server_settings(state));
    }
    json(&inv)
}

/// The inventory's `server` object.
fn server_settings(state: &State) -> serde_json::Value {
    serde_json::json!({
        "addr": state.local_addr.to_string(),
        "auth": if state.token.is_some() { "bearer" } else { "none" },
        "max_connections": state.max_connections,
        "header_read_timeout_seconds": state.header_read_timeout.as_secs_f64(),
        "profile_max_seconds": state.profile_max_seconds,
        "profile_frequency_hz": state.profile_frequency,
        "mutex_profile_rate": crate::sync::mutex_profile_rate(),
        "cpu_profiling": cfg!(feature = "cpu-profiling"),
        "heap_profiling": cfg!(feature = "heap-profiling"),
        "heap_sampling": pprof::heap_sampling_json(),
    })
}

/// The k6 helper module shipped with this build.
pub(crate) const K6_JS: &str = include_str!("../../k6/perfkit.js");

fn k6_js(_: &State, _: &Query) -> Response<Body> {
    response(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        Bytes::from_static(K6_JS.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_matches_only_equal_inputs() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn authorization_needs_the_bearer_scheme() {
        let ok = HeaderValue::from_static("Bearer s3cret");
        let lower = HeaderValue::from_static("bearer s3cret");
        let basic = HeaderValue::from_static("Basic s3cret");
        assert!(authorized(Some(&ok), b"s3cret"));
        assert!(authorized(Some(&lower), b"s3cret"));
        assert!(!authorized(Some(&basic), b"s3cret"));
        assert!(!authorized(None, b"s3cret"));
    }

    fn query(raw: &str) -> Query {
        let route = ROUTES.iter().find(|r| r.path == "/debug/perfkit/report").unwrap();
        Query::parse(raw, route.path, route.params).unwrap()
    }

    #[cfg(not(feature = "report-html"))]
    #[test]
    fn the_html_report_without_its_feature_is_501_naming_it() {
        let state = State {
            token: None,
            local_addr: "127.0.0.1:0".parse().unwrap(),
            max_connections: 64,
            header_read_timeout: std::time::Duration::from_secs(5),
            profile_max_seconds: 60,
            profile_frequency: 99,
        };
        let r = report(&state, &query("format=html"));
        assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED);
        let body = {
            use http_body_util::BodyExt;
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let bytes = rt.block_on(r.into_body().collect()).unwrap().to_bytes();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        assert!(body.contains("`report-html` feature"), "{body}");
        assert_eq!(report(&state, &query("format=json")).status(), StatusCode::OK);
    }

    #[test]
    fn gzip_is_taken_when_accepted() {
        let h = |v: &'static str| HeaderValue::from_static(v);
        assert!(accepts_gzip(Some(&h("gzip"))));
        assert!(accepts_gzip(Some(&h("identity, gzip;q=0.5"))));
        assert!(accepts_gzip(Some(&h("deflate, X-GZIP"))));
        assert!(!accepts_gzip(Some(&h("gzip;q=0"))));
        assert!(!accepts_gzip(Some(&h("br, deflate"))));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn phases_parse_sorted_and_bounded() {
        assert_eq!(
            parse_phases("stress@200,baseline@100").unwrap(),
            vec![("baseline".to_owned(), 100), ("stress".to_owned(), 200)]
        );
        assert_eq!(parse_phases("").unwrap(), vec![]);
        assert!(parse_phases("a b@1").unwrap_err().contains("phase name"));
        assert!(parse_phases("a@x").unwrap_err().contains("not a time"));
        assert!(parse_phases("a@inf").unwrap_err().contains("not a time"));
        assert!(parse_phases(&"a".repeat(65)).is_err());
        let _ = query("phases=a@1");
    }

    #[test]
    fn query_validation() {
        let route = &ROUTES[0];
        assert!(Query::parse("", route.path, route.params).is_ok());
        let e = Query::parse("x=1", route.path, route.params).unwrap_err();
        assert!(e.contains("unknown query parameter `x`"), "{e}");
    }
}
