//! `/debug/pprof/mutex`: the contention profile of perfkit's instrumented locks and
//! semaphores, in Go's conventions.
//!
//! * no parameters: the profile since start-up, gzipped pprof with two sample types,
//!   `contentions/count` and `delay/nanoseconds`, the period being the sampling rate;
//! * `debug=1`: the same as text, Go's legacy format (`cycles/second` is 1e9: delays are
//!   nanoseconds);
//! * `seconds=N`: what was recorded during the next N seconds (a delta), pprof only, as
//!   Go's `serveDeltaProfile`: N must be a positive whole number no larger than the
//!   server's `profile_max_seconds`, and `debug` must then be 0.
//!
//! The profile itself (stacks, symbols, encoding) is `crate::profile::contention`'s.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};

use super::reply::{Body, Query, Reply, State, text};
use crate::profile::contention::{self, Rendered};
use crate::sync::ContentionProfile;
use super::reply::BadRequest;

/// When a delta profile began, and how long it covers.
type Span = (std::time::SystemTime, Duration);

enum Ask {
    Cumulative { debug: bool },
    Delta(u64),
}

fn parse(q: &Query, max: u64) -> Result<Ask, BadRequest> {
    let debug = match q.get("debug").map(str::trim) {
        None | Some("0") | Some("") => false,
        Some("1") => true,
        Some(other) => return Err(BadRequest::from(format!("invalid debug={other:?}: expected 0 or 1"))),
    };
    Ok(match super::delta::seconds(q, max, debug)? {
        Some(n) => Ask::Delta(n),
        None => Ask::Cumulative { debug },
    })
}

pub(crate) fn serve(state: Arc<State>, q: Query) -> Reply {
    Box::pin(async move {
        let ask = match parse(&q, state.profile_max_seconds) {
            Ok(a) => a,
            Err(reason) => return reason.response(),
        };
        let (profile, debug, span) = match ask {
            Ask::Cumulative { debug } => (crate::sync::contention_snapshot(), debug, None),
            Ask::Delta(n) => {
                let _claim = match super::delta::claim("mutex", n) {
                    Ok(c) => c,
                    Err(busy) => return busy.response(),
                };
                let start = std::time::SystemTime::now();
                let before = crate::sync::contention_snapshot();
                tokio::time::sleep(Duration::from_secs(n)).await;
                let delta = crate::sync::contention_snapshot().since(&before);
                (delta, false, Some((start, Duration::from_secs(n))))
            }
        };
        answer(profile, debug, span).await
    })
}

#[cfg(any(feature = "cpu-profiling", feature = "heap-profiling"))]
async fn answer(profile: ContentionProfile, debug: bool, span: Option<Span>) -> Response<Body> {
    // Symbolizing reads debug information: one such job at a time, off the server thread.
    super::lane::queued("a mutex profile", move || respond(&profile, debug, span)).await
}

#[cfg(not(any(feature = "cpu-profiling", feature = "heap-profiling")))]
async fn answer(profile: ContentionProfile, debug: bool, span: Option<Span>) -> Response<Body> {
    respond(&profile, debug, span)
}

fn respond(profile: &ContentionProfile, debug: bool, span: Option<Span>) -> Response<Body> {
    match contention::render(profile, debug, span) {
        Rendered::Text(s) => text(StatusCode::OK, s),
        Rendered::Pprof(gz) => super::reply::attachment("mutex", Bytes::from(gz)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Query {
        Query::from_pairs(pairs)
    }

    #[test]
    fn parameters_follow_go_and_bad_ones_say_why() {
        assert!(matches!(parse(&q(&[]), 60), Ok(Ask::Cumulative { debug: false })));
        assert!(matches!(parse(&q(&[("debug", "1")]), 60), Ok(Ask::Cumulative { debug: true })));
        assert!(matches!(parse(&q(&[("seconds", "3")]), 60), Ok(Ask::Delta(3))));
        for (pairs, says) in [
            (&[("seconds", "0")][..], "positive"),
            (&[("seconds", "-2")][..], "positive"),
            (&[("seconds", "abc")][..], "positive"),
            (&[("seconds", "61")][..], "maximum of 60"),
            (&[("seconds", "2"), ("debug", "1")][..], "incompatible"),
            (&[("debug", "2")][..], "expected 0 or 1"),
        ] {
            let e = parse(&q(pairs), 60).err().unwrap_or_default();
            assert!(e.contains(says), "{pairs:?}: {e:?}");
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }
}
