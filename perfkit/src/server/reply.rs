//! What every endpoint speaks: the server's settings handed to handlers, the validated
//! query, and the answers (text, JSON, HTML, a pprof attachment, a one-line error). A leaf:
//! it imports nothing of the server, and routes and the router depend on it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

/// The debug server's settings, as handlers see them.
pub(crate) struct State {
    pub(crate) token: Option<Vec<u8>>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) profile_max_seconds: u64,
    pub(crate) profile_frequency: u32,
}

pub(crate) type Body = Full<Bytes>;

/// The answer of a handler that waits (a CPU profile) or works off the server thread.
pub(crate) type Reply = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// A request parameter that cannot be taken: the one-line reason its `400` answers with.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadRequest(pub(crate) String);

impl From<String> for BadRequest {
    fn from(reason: String) -> Self {
        BadRequest(reason)
    }
}

impl From<&str> for BadRequest {
    fn from(reason: &str) -> Self {
        BadRequest(reason.to_owned())
    }
}

impl std::ops::Deref for BadRequest {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<&str> for BadRequest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl BadRequest {
    /// The `400` answer.
    pub(crate) fn response(&self) -> Response<Body> {
        error(StatusCode::BAD_REQUEST, &self.0)
    }
}

/// Validated query parameters of one request.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses `raw` for the endpoint at `path`, which accepts the parameters `params`.
    pub(crate) fn parse(raw: &str, path: &str, params: &[&str]) -> Result<Query, BadRequest> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for piece in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            let k = percent_decode(k).ok_or_else(|| BadRequest::from(format!("malformed query parameter name {k:?}")))?;
            let v = percent_decode(v)
                .ok_or_else(|| BadRequest::from(format!("malformed value for query parameter `{k}`")))?;
            if !params.contains(&k.as_str()) {
                let accepted = if params.is_empty() {
                    "none".to_owned()
                } else {
                    params.join(", ")
                };
                return Err(BadRequest::from(format!(
                    "unknown query parameter `{k}` for {}; accepted: {accepted}",
                    path
                )));
            }
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(BadRequest::from(format!("query parameter `{k}` given more than once")));
            }
            pairs.push((k, v));
        }
        Ok(Query { pairs })
    }

    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Query {
        Query {
            pairs: pairs.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect(),
        }
    }

    /// The value of `key`, if given.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Decodes `%XX` escapes and `+` as space; `None` on a bad escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

pub(crate) fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

pub(crate) fn text(status: StatusCode, body: String) -> Response<Body> {
    response(status, "text/plain; charset=utf-8", Bytes::from(body))
}

pub(crate) fn html(body: String) -> Response<Body> {
    response(StatusCode::OK, "text/html; charset=utf-8", Bytes::from(body))
}

/// An error response: a one-line reason. `X-Go-Pprof: 1` makes `go tool pprof` print it.
pub(crate) fn error(status: StatusCode, reason: &str) -> Response<Body> {
    let line: String = reason.lines().next().unwrap_or("").to_owned() + "\n";
    let mut r = text(status, line);
    r.headers_mut()
        .insert("x-go-pprof", HeaderValue::from_static("1"));
    r
}

pub(crate) fn json(value: &serde_json::Value) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => response(StatusCode::OK, "application/json", Bytes::from(body)),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("could not encode JSON: {e}"),
        ),
    }
}

/// A gzipped pprof profile, with Go's headers.
pub(crate) fn attachment(name: &'static str, body: Bytes) -> Response<Body> {
    let mut r = response(StatusCode::OK, "application/octet-stream", body);
    let disposition = format!("attachment; filename=\"{name}\"");
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%ff"), None); // not UTF-8
    }

    #[test]
    fn query_validation() {
        let params = &["seconds"][..];
        assert_eq!(Query::parse("seconds=5", "/p", params).unwrap().get("seconds"), Some("5"));
        assert!(Query::parse("seconds=1&seconds=2", "/p", params).unwrap_err().contains("more than once"));
        assert!(Query::parse("seconds=%G1", "/p", params).unwrap_err().contains("malformed"));
        let e = Query::parse("x=1", "/p", params).unwrap_err();
        assert!(e.contains("unknown query parameter `x` for /p; accepted: seconds"), "{e}");
    }
}
